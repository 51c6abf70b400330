// SIGINT/SIGTERM become a stop request that the executor honours at the next
// safe point (sources stop producing, in-flight items drain, stages save).
// A second signal ends the process at once.
//
// In a job of several processes every rank must stop at the same step (a
// rank that stops early leaves the others waiting in a collective). There
// a signal only marks a stop as wanted on this rank; the ranks agree on it
// — the stage that steps in lockstep with them at every step, and the
// agreement the executor asks at every epoch boundary — and then make it a
// stop request on all of them at once.
#pragma once

#include <functional>
#include <string>

namespace flowrun {

void install_stop_signal_handlers();
// The stop the executor obeys.
bool stop_requested();
void request_stop();
void clear_stop_request();

// A stage ends the run early as complete (a learning-rate range test that
// is done, early stopping): the executor stops as for a stop request, but
// the run counts as finished, not interrupted.
void request_finish();
bool finish_requested();
// Why a stage ended the run early (the summary's stop_reason); set before
// request_finish. Empty when none did.
void set_finish_reason(const std::string& reason);
std::string finish_reason();

// Whether a signal asked this process to stop (agreed on or not yet).
bool stop_wanted();

// Given what this rank wants, whether any rank wants to stop (a collective:
// every rank calls it at the same point).
using StopAgreement = std::function<bool(bool wanted_here)>;
// Makes stops agreed: signals only mark them wanted until `agreement` (or a
// stage) turns them into a request. An empty agreement: stops act at once.
void agree_on_stops(StopAgreement agreement);
// The agreement in force; empty when stops act at once.
const StopAgreement& stop_agreement();

}  // namespace flowrun
