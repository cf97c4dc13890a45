"""C++ code generation for EPX's protos with Debian's protoc + grpc_cpp_plugin.

Bazel 4 offline has no rules_proto/grpc rules, so one genrule runs protoc over
the given files and a cc_library compiles what it wrote. Import paths are
relative to this package ("epx/v1/local.proto").
"""

def epx_proto_library(name, srcs, services = []):
    """srcs: .proto files (package-relative); services: those with a gRPC service."""
    outs = []
    for src in srcs:
        base = src[:-len(".proto")]
        outs += [base + ".pb.h", base + ".pb.cc"]
        if src in services:
            outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    native.genrule(
        name = name + "_gen",
        srcs = srcs,
        outs = outs,
        cmd = " ".join([
            "/usr/bin/protoc",
            "-I" + native.package_name(),
            "--cpp_out=$(RULEDIR)",
            "--grpc_out=$(RULEDIR)",
            "--plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin",
            "$(SRCS)",
        ]),
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        includes = ["."],
        deps = ["//third_party:grpc"],
        visibility = ["//visibility:public"],
    )
