"""libfabric from a configurable prefix.

Debian's libfabric lives in /usr; AWS EFA hosts bring a newer one in
/opt/amazon/efa (with FI_HMEM for GPUDirect). Select with
    bazel build --config=aws //...     (.bazelrc: EPX_LIBFABRIC_PREFIX=/opt/amazon/efa)
    bazel build --repo_env=EPX_LIBFABRIC_PREFIX=<prefix> //...
The prefix needs include/rdma/ and libfabric.so in lib/x86_64-linux-gnu/,
lib64/ or lib/ (an installed tree, or Debian's libfabric-dev + libfabric1
.debs unpacked with dpkg -x: tools/check-libfabric-prefix.sh does that).
The library also gets include/epx_libfabric_prefix.h, which names the prefix
for the daemon's messages ("built against ... headers at <prefix>").
"""

def _libfabric_impl(ctx):
    prefix = ctx.os.environ.get("EPX_LIBFABRIC_PREFIX", "/usr")
    include = ctx.path(prefix + "/include/rdma")
    if not include.exists:
        fail("EPX_LIBFABRIC_PREFIX=%s: no include/rdma there (is libfabric-dev installed?)" % prefix)
    libdir = None
    for candidate in ["lib/x86_64-linux-gnu", "lib64", "lib"]:
        if ctx.path(prefix + "/" + candidate + "/libfabric.so").exists:
            libdir = prefix + "/" + candidate
            break
    if libdir == None:
        fail("EPX_LIBFABRIC_PREFIX=%s: no libfabric.so under lib/, lib64/ or lib/x86_64-linux-gnu/" % prefix)
    ctx.symlink(include, "include/rdma")
    ctx.file("include/epx_libfabric_prefix.h", "#pragma once\n#define EPX_LIBFABRIC_PREFIX \"%s\"\n" % prefix)
    linkopts = ["-L" + libdir, "-lfabric"]
    if prefix != "/usr":
        linkopts.append("-Wl,-rpath," + libdir)
    ctx.file("WORKSPACE", "workspace(name = \"libfabric\")\n")
    ctx.file("BUILD", """
cc_library(
    name = "libfabric",
    hdrs = glob(["include/rdma/**/*.h"]) + ["include/epx_libfabric_prefix.h"],
    includes = ["include"],
    linkopts = {linkopts},
    visibility = ["//visibility:public"],
)
exports_files(["prefix.txt"])
""".format(linkopts = repr(linkopts)))
    ctx.file("prefix.txt", prefix + "\n")

libfabric_repository = repository_rule(
    implementation = _libfabric_impl,
    environ = ["EPX_LIBFABRIC_PREFIX"],
    local = True,
)
