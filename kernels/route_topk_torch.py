#!/usr/bin/env python3
"""The same per-layer routing ops written with PyTorch, timed on the GPU machine for
docs/BENCHMARKS.md: static gather (logical -> physical), scatter-add histogram, slot remap,
concatenation of the shared column (local shared expert; PyTorch has no Waterfill). Median of
CUDA-event timings after warm-up, outside and inside a CUDA graph.

    python3 kernels/route_topk_torch.py
"""
import torch


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def time_us(fn, reps=20, iters=50):
    s = torch.cuda.current_stream()
    for _ in range(10):
        fn()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out = []
    for _ in range(iters):
        a.record(s)
        for _ in range(reps):
            fn()
        b.record(s)
        b.synchronize()
        out.append(a.elapsed_time(b) * 1000.0 / reps)
    return median(out)


def main():
    dev = torch.device("cuda")
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    print("| T | W | stream (us) | graph (us) |\n|---|---|---|---|")
    k, e, sh = 8, 256, 1
    g = torch.Generator(device=dev).manual_seed(1)
    for w in (8, 32, 144, 512):
        p = 512 if w == 512 else 288  # W = 512: R = 256, one expert a rank
        l = p // w
        rank = w // 2
        table = ((torch.arange(e, device=dev) * 7 + 3) % p).to(torch.int32)
        for n in (64, 512, 4096, 65536):
            logical = torch.randint(0, e, (n, k), device=dev, generator=g, dtype=torch.int32)
            weights = torch.rand(n, k, device=dev, generator=g)
            counts = torch.zeros(p, dtype=torch.int64, device=dev)
            ones = torch.ones(n * k, dtype=torch.int64, device=dev)
            shared_col = torch.full((n, 1), rank * (l + sh) + l, dtype=torch.int32, device=dev)
            shared_w = torch.full((n, 1), 0.4, device=dev)

            def step():
                phys = table[logical.long()]
                counts.scatter_add_(0, phys.view(-1).long(), ones)
                slots = phys + torch.div(phys, l, rounding_mode="floor") * sh
                torch.cat([slots, shared_col], dim=1)
                torch.cat([weights, shared_w], dim=1)

            stream_us = time_us(step)
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    step()
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(20):
                    step()
            graph_us = time_us(graph.replay, reps=5) / 20
            print("| %d | %d | %.2f | %.2f |" % (n, w, stream_us, graph_us))


if __name__ == "__main__":
    main()
