// SIGINT/SIGTERM become a stop request that the executor honours at the next
// safe point (sources stop producing, in-flight items drain, stages save).
// A second signal ends the process at once.
#pragma once

namespace flowrun {

void install_stop_signal_handlers();
bool stop_requested();
void request_stop();
void clear_stop_request();

}  // namespace flowrun
