// Files written whole or not at all: a process killed (SIGKILL, no chance to
// clean up) at any moment while writing leaves either the previous file or
// the complete new one, never a mix or a truncated file.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "pipeline/atomic_file.h"
#include "test_support.h"

using namespace flowrun;
using test::slurp;

namespace {
}  // namespace

TEST(AtomicFile, KillDashNineDuringAWriteLeavesThePreviousFile) {
  const std::string dir = test::temp_dir();
  const std::string path = dir + "/checkpoint.ckpt";
  const std::string previous(3 << 20, 'p');  // the last good checkpoint
  write_file_atomically(path, previous);
  const std::string next(8 << 20, 'n');
  int interrupted = 0;
  for (int delay_us : {0, 200, 1000, 3000, 10000, 30000}) {
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // Writes slowly, in pieces, so the kill lands mid-write.
      write_file_atomically(path, [&](std::ostream& out) {
        for (size_t at = 0; at < next.size(); at += 1 << 16) {
          out.write(next.data() + at, 1 << 16);
          out.flush();
          usleep(100);
        }
      });
      _exit(0);
    }
    usleep(delay_us);
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    const std::string now = slurp(path);
    if (now != next) {
      EXPECT_EQ(now.size(), previous.size()) << "after a kill at " << delay_us << " us";
      EXPECT_TRUE(now == previous) << "after a kill at " << delay_us << " us";
      ++interrupted;
    }
    write_file_atomically(path, previous);
    // That write also removed the killed writer's half-written temporary.
    for (const auto& entry : std::filesystem::directory_iterator(dir))
      EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << entry.path();
  }
  EXPECT_GT(interrupted, 0);  // at least one kill landed before the rename
}

TEST(AtomicFile, ATemporaryOfALiveWriterIsLeftAlone) {
  const std::string dir = test::temp_dir();
  const std::string path = dir + "/weights.safetensors";
  // PID 1 is always alive: another process writing the same file right now.
  const std::string live = path + ".tmp.1";
  std::ofstream(live) << "half";
  write_file_atomically(path, "new");
  EXPECT_TRUE(std::filesystem::exists(live));
  EXPECT_EQ(slurp(path), "new");
}

TEST(AtomicFile, AFailedWriteLeavesThePreviousFileAndNoTemporary) {
  const std::string dir = test::temp_dir();
  const std::string path = dir + "/metrics.csv";
  write_file_atomically(path, "old\n");
  EXPECT_THROW(write_file_atomically(path, [](std::ostream& out) {
                 out << "half";
                 throw std::runtime_error("stage failed mid-write");
               }),
               std::runtime_error);
  EXPECT_EQ(slurp(path), "old\n");
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) files += entry.is_regular_file();
  EXPECT_EQ(files, 1u);
}
