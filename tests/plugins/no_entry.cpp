// A shared library that is not a flowrun plugin: no entry point.
extern "C" int not_a_flowrun_plugin(void) { return 42; }
