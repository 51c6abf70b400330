// Fuzz target: torch.save (.pth) files through the restricted unpickler. The
// reader takes a path, so each input goes to an in-memory file first. Any
// bytes give a state dict or a std::runtime_error naming the file.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "stages/model/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fd = memfd_create("fuzz.pth", 0);
  if (fd < 0) return 0;
  for (size_t done = 0; done < size;) {
    ssize_t n = write(fd, data + done, size - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  try {
    flowrun::stages::StateDict tensors = flowrun::stages::read_torch_state_dict(path);
    for (const auto& [name, tensor] : tensors) (void)tensor.sum();  // the data is really there
  } catch (const std::runtime_error&) {
  }
  close(fd);
  return 0;
}
