# Issue 21, item 16b: each example plugin configured as a user configures it
# (its own folder, the installed SDK, no CMAKE_BUILD_TYPE) builds optimised:
# CMake's default build type, none, would compile it at -O0.
#   cmake -DSOURCE_DIR=... -DWORK_DIR=... -DPREFIX="a|b" -DPLUGINS="example|..." -P plugin_build_type.cmake
string(REPLACE "|" ";" prefix "${PREFIX}")
string(REPLACE "|" ";" plugins "${PLUGINS}")
foreach(plugin IN LISTS plugins)
  set(dir "${WORK_DIR}/${plugin}")
  file(REMOVE_RECURSE "${dir}")
  execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}/plugins/${plugin}" -B "${dir}" -G Ninja
                          "-DCMAKE_PREFIX_PATH=${prefix}"
                  RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "plugins/${plugin}: configuring without a build type failed:\n${err}")
  endif()
  file(STRINGS "${dir}/CMakeCache.txt" type REGEX "^CMAKE_BUILD_TYPE:")
  if(NOT type MATCHES "=(Release|RelWithDebInfo|MinSizeRel)$")
    message(FATAL_ERROR "plugins/${plugin}: no optimised build type by default (${type}): copy the example's "
                        "`if(NOT CMAKE_BUILD_TYPE ...)` lines into its CMakeLists.txt")
  endif()
  # What the compiler is told: an optimisation flag for the plugin's sources.
  file(STRINGS "${dir}/build.ninja" flags REGEX "^  FLAGS = ")
  if(NOT flags MATCHES "-O[123s]")
    message(FATAL_ERROR "plugins/${plugin}: its sources compile without -O (${flags})")
  endif()
  file(REMOVE_RECURSE "${dir}")
  message(STATUS "plugins/${plugin}: ${type}")
endforeach()
