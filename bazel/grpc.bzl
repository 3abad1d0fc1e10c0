"""gRPC C++ stubs from a proto_library, with the system protoc and grpc_cpp_plugin.

    proto_library(name = "foo_proto", srcs = ["foo.proto"])
    cc_proto_library(name = "foo_cc_proto", deps = [":foo_proto"])
    cc_grpc_library(name = "foo_cc_grpc", proto = ":foo_proto", cc_proto = ":foo_cc_proto")

The .proto files must live in the package that calls the macro (outputs are declared there).
"""

def _grpc_stubs_impl(ctx):
    info = ctx.attr.proto[ProtoInfo]
    outs = []
    for src in info.direct_sources:
        stem = src.basename[:-len(".proto")]
        outs.append(ctx.actions.declare_file(stem + ".grpc.pb.h"))
        outs.append(ctx.actions.declare_file(stem + ".grpc.pb.cc"))
    args = ctx.actions.args()
    args.add("--plugin=protoc-gen-grpc=" + ctx.executable._plugin.path)
    args.add("--grpc_out=" + ctx.bin_dir.path)
    for path in info.transitive_proto_path.to_list():
        args.add("-I" + path)
    args.add("-I.")
    args.add_all(info.direct_sources)
    ctx.actions.run(
        executable = ctx.executable._protoc,
        arguments = [args],
        inputs = info.transitive_sources,
        tools = [ctx.executable._plugin],
        outputs = outs,
        mnemonic = "GrpcCppStubs",
        progress_message = "Generating gRPC C++ stubs for %s" % ctx.label,
    )
    return [
        DefaultInfo(files = depset(outs)),
        OutputGroupInfo(
            hdrs = depset([f for f in outs if f.extension == "h"]),
            srcs = depset([f for f in outs if f.extension == "cc"]),
        ),
    ]

_grpc_stubs = rule(
    implementation = _grpc_stubs_impl,
    attrs = {
        "proto": attr.label(mandatory = True, providers = [ProtoInfo]),
        "_protoc": attr.label(
            default = "@com_google_protobuf//:protoc",
            executable = True,
            cfg = "exec",
        ),
        "_plugin": attr.label(
            default = "@com_google_protobuf//:grpc_cpp_plugin",
            executable = True,
            cfg = "exec",
        ),
    },
)

def cc_grpc_library(name, proto, cc_proto, visibility = None, **kwargs):
    _grpc_stubs(name = name + "_stubs", proto = proto)
    native.filegroup(name = name + "_hdrs", srcs = [":" + name + "_stubs"], output_group = "hdrs")
    native.filegroup(name = name + "_srcs", srcs = [":" + name + "_stubs"], output_group = "srcs")
    native.cc_library(
        name = name,
        srcs = [":" + name + "_srcs"],
        hdrs = [":" + name + "_hdrs"],
        deps = [
            cc_proto,
            "//third_party/system:grpc++",
        ],
        visibility = visibility,
        **kwargs
    )
