"""cuda_library: compile .cu files with nvcc and wrap them as a cc_library.

Why a genrule: Bazel 4 has no CUDA rules, and rules_cuda cannot be fetched in
this offline build. So each .cu file is one explicit nvcc command whose
position-independent object goes into an ordinary cc_library; everything that
links against it is then plain C++.

Rules of use:
  * nvcc sees only the genrule's inputs (the sandbox hides the rest), so every
    header a .cu file includes, directly or not, must be listed: the library's
    own `hdrs`, plus `nvcc_hdrs` for headers of other targets (their cc_library
    deps cannot hand headers to a genrule). CUDA's own headers come from
    /usr/local/cuda and need no listing.
  * Include paths: `-I.` (the execroot, so "kernels/x.h" resolves) is always
    passed; add `-I<dir>` in `copts` for a dependency that strips its include
    prefix (e.g. "-Iclient/include" for "epx/status.h").
  * Public headers must not need CUDA headers: launchers take raw pointers and
    a `void*` stream, so host code includes them with a plain C++ compiler.
  * Device code is built for Hopper only (sm_90, with no PTX for later JIT).
  * Host code compiles with -Wall -Wextra -Werror, like the C++ build.
  * nvcc and the CUDA headers live outside Bazel's view (/usr/local/cuda), so
    after a toolkit upgrade these objects are not rebuilt on their own.
"""

load("@rules_cc//cc:defs.bzl", "cc_library")

_NVCC = "/usr/local/cuda/bin/nvcc"

# Host code: the warnings of the C++ build (.bazelrc), as errors. nvcc's own
# front-end warnings are not errors yet: client/include/epx/status.h:85 gives
# "#2810-D: ignoring return value type with nodiscard attribute".
_NVCC_FLAGS = [
    "-std=c++17",
    "-O3",
    "-gencode=arch=compute_90,code=sm_90",
    "-Xcompiler",
    "-fPIC",
    "-Xcompiler=-Wall,-Wextra,-Wno-sign-compare,-Wno-missing-field-initializers,-Werror",
    "-I.",
]

def cuda_library(name, srcs, hdrs = [], deps = [], copts = [], nvcc_hdrs = [], **kwargs):
    """A cc_library whose sources are .cu files compiled by nvcc.

    Args:
      name: the cc_library's name.
      srcs: .cu files of this package; each becomes one .pic.o.
      hdrs: public headers (also nvcc inputs).
      deps: cc_library deps for linking and for host includers; @cuda//:cudart
        is always added.
      copts: extra nvcc flags, after the defaults (e.g. "-Iclient/include").
      nvcc_hdrs: headers of other targets that the .cu files include.
      **kwargs: passed to the cc_library (visibility, testonly, ...).
    """
    objs = []
    for src in srcs:
        if not src.endswith(".cu"):
            fail("cuda_library %s: %s is not a .cu file" % (name, src))
        stem = src[:-len(".cu")]
        obj = "_%s_nvcc/%s.pic.o" % (name, stem)
        native.genrule(
            name = "%s_nvcc_%s" % (name, stem.replace("/", "_")),
            srcs = [src] + hdrs + nvcc_hdrs,
            outs = [obj],
            cmd = " ".join([_NVCC] + _NVCC_FLAGS + copts + [
                "-c",
                "$(location %s)" % src,
                "-o",
                "$@",
            ]),
            message = "nvcc %s" % src,
            testonly = kwargs.get("testonly", False),
            visibility = ["//visibility:private"],
        )
        objs.append(obj)

    cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        deps = deps + ["@cuda//:cudart"],
        **kwargs
    )
