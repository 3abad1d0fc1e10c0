"""cuda_library: compile .cu files with nvcc (sm_90 SASS + compute_90 PTX) into a cc_library.

    cuda_library(
        name = "histogram_cuda",
        srcs = ["histogram.cu"],
        hdrs = ["histogram.h"],          # launcher-only header, plain C++
        deps = ["//core:expert_layout"],  # headers visible to nvcc
    )

nvcc runs in a genrule, so the build needs /usr/local/cuda but no GPU. Headers the .cu includes
must come through `hdrs`, `textual_hdrs` or `deps` (their header files are collected as inputs).
No -rdc: each .cu is self-contained and needs no device-link step.
"""

NVCC = "/usr/local/cuda/bin/nvcc"

NVCC_FLAGS = [
    "-std=c++17",
    "-O3",
    "-lineinfo",  # source lines for Nsight Compute; no effect on the code
    "-Xcompiler",
    "-fPIC",
    "-Xcompiler",
    "-Wall",
    "--expt-relaxed-constexpr",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
    "-I.",
    "-I$(GENDIR)",
    "-I/usr/local/cuda/include",
]

def _collect_headers_impl(ctx):
    files = []
    for dep in ctx.attr.deps:
        files.append(dep[CcInfo].compilation_context.headers)
    return [DefaultInfo(files = depset(transitive = files))]

_collect_headers = rule(
    implementation = _collect_headers_impl,
    attrs = {"deps": attr.label_list(providers = [CcInfo])},
)

def cuda_library(name, srcs, hdrs = [], textual_hdrs = [], deps = [], visibility = None, **kwargs):
    dep_headers = name + "_dep_headers"
    _collect_headers(name = dep_headers, deps = deps)
    objs = []
    for src in srcs:
        obj = "_objs_cuda/%s/%s.o" % (name, src[:-len(".cu")])
        native.genrule(
            name = "%s_%s_nvcc" % (name, src.replace("/", "_").replace(".", "_")),
            srcs = [src] + hdrs + textual_hdrs + [":" + dep_headers],
            outs = [obj],
            cmd = "%s %s -c -o $@ $(location %s)" % (NVCC, " ".join(NVCC_FLAGS), src),
            message = "nvcc %s" % src,
        )
        objs.append(obj)
    archive = "lib%s_cuda.a" % name
    native.genrule(
        name = name + "_ar",
        srcs = objs,
        outs = [archive],
        cmd = "ar rcs $@ $(SRCS)",
    )
    native.cc_library(
        name = name,
        srcs = [archive],
        hdrs = hdrs,
        textual_hdrs = textual_hdrs,
        deps = deps + ["@local_cuda//:cudart"],
        linkstatic = True,
        alwayslink = True,
        visibility = visibility,
        **kwargs
    )
