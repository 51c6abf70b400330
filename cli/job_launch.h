// The command's side of jobs of several processes: where this process
// stands in one (from the launcher's environment), and `--nproc N`, which
// starts N local ranks itself, as `torchrun --standalone` does.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "pipeline/stage.h"

namespace flowrun {

// This process's place in a job, from torchrun's variables (RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; a hand-written launch
// script sets the same) or, under Slurm's srun, from SLURM_PROCID,
// SLURM_STEP_NUM_TASKS and SLURM_LOCALID (MASTER_ADDR: set it, or the node
// srun was started from). Without them: rank 0 of 1. Throws
// std::invalid_argument naming the variable that is wrong.
JobInfo job_from_environment();

// Starts `ranks` copies of this program (argv without --nproc) as the ranks
// of a job on this machine, meeting on a free loopback port; forwards
// SIGINT and SIGTERM to them; when a rank fails, gives the others
// `grace_s` to stop by themselves, then ends them. Returns the exit code:
// 1 if a rank failed, else 130 if one was interrupted, else 0.
int run_local_ranks(int ranks, const std::vector<std::string>& argv, double grace_s);

}  // namespace flowrun
