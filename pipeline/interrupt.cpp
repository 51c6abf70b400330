#include "pipeline/interrupt.h"

#include <atomic>
#include <csignal>
#include <mutex>
#include <unistd.h>

namespace flowrun {
namespace {
std::atomic<bool> g_stop{false};
std::atomic<bool> g_wanted{false};
std::atomic<bool> g_agreed{false};  // stops wait for the ranks to agree
std::atomic<bool> g_finish{false};  // the stop is the run's end, asked by a stage

StopAgreement& agreement_slot() {
  static StopAgreement agreement;
  return agreement;
}

void on_signal(int signal) {
  if (g_wanted.exchange(true)) _exit(128 + signal);  // second signal: stop now
  if (!g_agreed.load()) g_stop.store(true);
  static const char message[] = "\nflowrun: stopping at the next safe point (signal again to quit now)\n";
  ssize_t ignored = write(STDERR_FILENO, message, sizeof(message) - 1);
  (void)ignored;
}
}  // namespace

void install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

bool stop_requested() { return g_stop.load(std::memory_order_relaxed); }
void request_stop() { g_stop.store(true); }
void clear_stop_request() {
  g_stop.store(false);
  g_wanted.store(false);
  g_finish.store(false);
}

void request_finish() {
  g_finish.store(true);
  g_stop.store(true);
}
bool finish_requested() { return g_finish.load(); }

namespace {
std::mutex g_reason_mutex;
std::string& reason_slot() {
  static std::string reason;
  return reason;
}
}  // namespace

void set_finish_reason(const std::string& reason) {
  std::lock_guard<std::mutex> lock(g_reason_mutex);
  reason_slot() = reason;
}

std::string finish_reason() {
  std::lock_guard<std::mutex> lock(g_reason_mutex);
  return reason_slot();
}

bool stop_wanted() { return g_wanted.load(std::memory_order_relaxed); }

void agree_on_stops(StopAgreement agreement) {
  agreement_slot() = std::move(agreement);
  g_agreed.store(static_cast<bool>(agreement_slot()));
  if (!g_agreed.load() && g_wanted.load()) g_stop.store(true);
}

const StopAgreement& stop_agreement() { return agreement_slot(); }

}  // namespace flowrun
