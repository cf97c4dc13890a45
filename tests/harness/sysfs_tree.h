// SysfsTree (tests only): a directory laid out the way Linux's sysfs shows
// PCI devices, network interfaces and RDMA devices, so topology code can be
// tested against real files, and a daemon started with sysfs_root pointing
// at it sees a GPU host's PCIe tree on a machine without one.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace epx::daemon {

class SysfsTree {
 public:
  SysfsTree() {
    char tmpl[] = "/tmp/epx-sysfs-XXXXXX";
    root_ = ::mkdtemp(tmpl);
  }
  ~SysfsTree() {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  SysfsTree(const SysfsTree&) = delete;
  SysfsTree& operator=(const SysfsTree&) = delete;

  const std::string& root() const { return root_; }

  // A PCI device at `chain` ("pci0000:00/0000:00:01.0/0000:01:00.0": root
  // complex, bridges, device), on NUMA node `numa`.
  void add_pci(const std::string& chain, int numa) {
    const std::string dir = root_ + "/devices/" + chain;
    std::filesystem::create_directories(dir);
    write(dir + "/numa_node", std::to_string(numa));
    const std::string address = chain.substr(chain.rfind('/') + 1);
    std::filesystem::create_directories(root_ + "/bus/pci/devices");
    std::filesystem::create_symlink(dir, root_ + "/bus/pci/devices/" + address);
  }
  // A network interface, on PCI device `chain` (added before) or virtual.
  void add_net(const std::string& name, const std::string& chain, const std::string& operstate) {
    add_class("net", name, chain, "operstate", operstate);
  }
  // An RDMA device (efa, verbs) with port 1 in `state` ("4: ACTIVE").
  void add_infiniband(const std::string& name, const std::string& chain, const std::string& state) {
    add_class("infiniband", name, chain, "ports/1/state", state);
  }
  void set_operstate(const std::string& name, const std::string& operstate) {
    write(root_ + "/class/net/" + name + "/operstate", operstate);
  }

 private:
  void add_class(const std::string& cls, const std::string& name, const std::string& chain,
                 const std::string& state_file, const std::string& state) {
    const std::string dir = chain.empty() ? root_ + "/devices/virtual/" + cls + "/" + name
                                          : root_ + "/devices/" + chain + "/" + cls + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(dir + "/" + state_file).parent_path());
    write(dir + "/" + state_file, state);
    if (!chain.empty()) std::filesystem::create_symlink(root_ + "/devices/" + chain, dir + "/device");
    std::filesystem::create_directories(root_ + "/class/" + cls);
    std::filesystem::create_symlink(dir, root_ + "/class/" + cls + "/" + name);
  }
  static void write(const std::string& path, const std::string& text) { std::ofstream(path) << text << "\n"; }

  std::string root_;
};

}  // namespace epx::daemon
