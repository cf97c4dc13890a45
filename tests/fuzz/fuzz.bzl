"""epx_fuzz_target: one libFuzzer target and the test that replays its corpus."""

def epx_fuzz_target(name, srcs, deps = [], size = "small", replay_env = {}):
    """Declares <name>_fuzzer and <name>_regression_test.

    <name>_fuzzer: the libFuzzer binary. It links -fsanitize=fuzzer, which
    only clang has, so it is tagged manual: `bazel build //...` (gcc) skips
    it and tools/fuzz.sh builds it with --config=fuzz.

    <name>_regression_test: the same LLVMFuzzerTestOneInput built with the
    normal toolchain and driven by replay_main.cc over every file of
    corpus/<name>/, so inputs that once crashed stay fixed in tools/test.sh
    even where clang is missing.
    """
    fuzz_deps = deps + ["//tests/fuzz:fuzz_input"]
    native.cc_binary(
        name = name + "_fuzzer",
        testonly = True,
        srcs = srcs,
        linkopts = ["-fsanitize=fuzzer"],
        tags = [
            "fuzz",
            "manual",
        ],
        deps = fuzz_deps,
    )
    native.cc_test(
        name = name + "_regression_test",
        size = size,
        srcs = srcs,
        args = ["tests/fuzz/corpus/" + name],
        data = native.glob(["corpus/" + name + "/*"]),
        env = replay_env,
        deps = fuzz_deps + ["//tests/fuzz:replay_main"],
    )
