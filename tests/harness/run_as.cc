// run_as UID GID GROUPS PROGRAM [ARGS...]: runs PROGRAM as another user, for
// tests of what one tenant may see of another (needs root).
//
// GROUPS is a comma-separated list of supplementary group ids, or "-" for
// none. PROGRAM is opened before the user changes, so it may lie where that
// user cannot reach (the test's runfiles under root's home).
#include <fcntl.h>
#include <grp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace {

int fail(const std::string& what) {
  std::fprintf(stderr, "run_as: %s: %s\n", what.c_str(), std::strerror(errno));
  return 127;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: run_as UID GID GROUPS PROGRAM [ARGS...]\n");
    return 2;
  }
  const uid_t uid = static_cast<uid_t>(std::strtoul(argv[1], nullptr, 10));
  const gid_t gid = static_cast<gid_t>(std::strtoul(argv[2], nullptr, 10));
  std::vector<gid_t> groups;
  if (std::string(argv[3]) != "-") {
    std::istringstream list(argv[3]);
    std::string g;
    while (std::getline(list, g, ',')) groups.push_back(static_cast<gid_t>(std::strtoul(g.c_str(), nullptr, 10)));
  }
  const int program = ::open(argv[4], O_RDONLY | O_CLOEXEC);
  if (program < 0) return fail(std::string("open ") + argv[4]);
  // Groups first: after setuid the process may no longer change them.
  if (::setgroups(groups.size(), groups.data()) != 0) return fail("setgroups");
  if (::setgid(gid) != 0) return fail("setgid");
  if (::setuid(uid) != 0) return fail("setuid");
  ::fexecve(program, argv + 4, environ);
  return fail(std::string("fexecve ") + argv[4]);
}
