// Replays a fuzz target's kept corpus through its LLVMFuzzerTestOneInput,
// built with the normal toolchain: the <name>_regression_test of every fuzz
// target. Arguments are directories (or files); every regular file in them
// is one input. Fails when no input was found, so a corpus that went
// missing is not a silent pass.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_input.h"

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> inputs_under(const fs::path& root) {
  std::vector<fs::path> files;
  if (fs::is_regular_file(root)) return {root};
  std::error_code ec;
  for (const auto& entry : fs::recursive_directory_iterator(root, ec)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

int main(int argc, char** argv) {
  size_t replayed = 0;
  for (int i = 1; i < argc; ++i) {
    for (const fs::path& file : inputs_under(argv[i])) {
      std::ifstream in(file, std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::printf("replay %s (%zu bytes)\n", file.c_str(), bytes.size());
      std::fflush(stdout);  // the last name printed is the input that crashed
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      ++replayed;
    }
  }
  if (replayed == 0) {
    std::fprintf(stderr, "no corpus inputs found under the given paths\n");
    return 1;
  }
  std::printf("replayed %zu inputs\n", replayed);
  // Ends without running static destructors: a target may keep state for
  // the whole process (the handlers target's daemon and its threads), which
  // is never torn down, as under libFuzzer.
  std::fflush(nullptr);
  std::_Exit(0);
}
