#!/usr/bin/env python3
"""The worker's C ABI through ctypes, as a Python engine uses it: against the real controller
binary, one worker serving every rank records a skewed load and reports it; the controller
rebalances; the worker's version, map and dispatch tables follow. Bad input gives -1/NULL and a
reason naming the value."""
import ctypes
import re
import subprocess
import sys
import time

E, R, W, LAYERS = 8, 4, 4, 2
P = E + R


def main():
    lib_path, controller_bin = sys.argv[1], sys.argv[2]
    lib = ctypes.CDLL(lib_path)
    c_char_p, c_int, c_int64, c_size_t = ctypes.c_char_p, ctypes.c_int, ctypes.c_int64, ctypes.c_size_t
    i64p, i32p = ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int32)
    lib.eplb_worker_create.restype = ctypes.c_void_p
    lib.eplb_worker_create.argtypes = [c_char_p, c_char_p, c_size_t]
    lib.eplb_worker_destroy.argtypes = [ctypes.c_void_p]
    lib.eplb_worker_record.argtypes = [ctypes.c_void_p, c_int, i64p, c_int64, c_char_p, c_size_t]
    lib.eplb_worker_record_counts.argtypes = [ctypes.c_void_p, c_int, i64p, c_int64, c_char_p,
                                              c_size_t]
    lib.eplb_worker_report.argtypes = [ctypes.c_void_p, c_int64, c_int64, c_char_p, c_size_t]
    lib.eplb_worker_version.restype = ctypes.c_uint64
    lib.eplb_worker_version.argtypes = [ctypes.c_void_p]
    lib.eplb_worker_dispatch_table.argtypes = [ctypes.c_void_p, c_int, c_int, i32p, c_int64,
                                               c_char_p, c_size_t]
    lib.eplb_worker_physical_to_logical.argtypes = [ctypes.c_void_p, c_int, i32p, c_int64,
                                                    c_char_p, c_size_t]
    ALLMIN = ctypes.CFUNCTYPE(c_int, i64p, c_int, ctypes.c_void_p)
    lib.eplb_worker_step_boundary.argtypes = [ctypes.c_void_p, ALLMIN, ctypes.c_void_p, c_char_p,
                                              c_size_t, c_char_p, c_size_t]
    err = ctypes.create_string_buffer(512)

    def expect(cond, what):
        if not cond:
            raise SystemExit("FAILED: " + what)

    # Bad configs: NULL and a reason naming the value.
    for cfg, want in [(b"{", "not a JSON object"),
                      (b'{"worker_id": "w", "ranks": [0], "num_logical": 8, "num_redundant": 4,'
                       b' "ep_size": 4, "colour": 1}', 'unknown config key "colour"'),
                      (b'{"worker_id": "w", "ranks": [9], "num_logical": 8, "num_redundant": 4,'
                       b' "ep_size": 4}', "rank 9 is out of range"),
                      (b'{"worker_id": "w", "ranks": [0], "num_logical": 8, "num_redundant": 3,'
                       b' "ep_size": 4}', "divisible")]:
        h = lib.eplb_worker_create(cfg, err, len(err))
        expect(h is None, "config %r was accepted" % cfg)
        expect(want in err.value.decode(), "error for %r: %r" % (cfg, err.value))

    ctl = subprocess.Popen(
        [controller_bin, "--listen=127.0.0.1:0", "--metrics=", "--num_logical=%d" % E,
         "--num_redundant=%d" % R, "--ep_size=%d" % W, "--num_shared=1",
         "--num_layers=%d" % LAYERS, "--interval=50ms", "--min_rebalance_interval=0s",
         "--trigger_balancedness=0.95", "--min_gain=0.01", "--window=10s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        while port is None:
            line = ctl.stdout.readline()
            if not line:
                raise SystemExit("FAILED: controller exited: " + ctl.stderr.read())
            m = re.match(r"listening on port (\d+)", line)
            port = m.group(1) if m else None
        cfg = ('{"worker_id": "py", "ranks": [0, 1, 2, 3], "num_logical": %d, "num_redundant": %d,'
               ' "ep_size": %d, "num_layers": %d, "row_bytes": 96, "controller": "127.0.0.1:%s"}'
               % (E, R, W, LAYERS, port)).encode()
        w = lib.eplb_worker_create(cfg, err, len(err))
        expect(w, "create: " + err.value.decode())
        v0 = lib.eplb_worker_version(w)
        expect(v0 >= 1, "version after registering: %d" % v0)
        table = (ctypes.c_int32 * E)()
        p2l = (ctypes.c_int32 * P)()
        expect(lib.eplb_worker_physical_to_logical(w, 0, p2l, P, err, len(err)) == 0,
               err.value.decode())
        before = list(p2l)
        # Bad calls: -1 and the value named.
        expect(lib.eplb_worker_dispatch_table(w, 7, 0, table, E, err, len(err)) == -1 and
               b"rank 7" in err.value, "rank 7 accepted: %r" % err.value)
        expect(lib.eplb_worker_dispatch_table(w, 0, 5, table, E, err, len(err)) == -1 and
               b"layer 5" in err.value, "layer 5 accepted: %r" % err.value)
        expect(lib.eplb_worker_dispatch_table(w, 0, 0, table, E - 1, err, len(err)) == -1,
               "short buffer accepted")
        bad_counts = (ctypes.c_int64 * P)(*([1] * (P - 1) + [-3]))
        expect(lib.eplb_worker_record_counts(w, 0, bad_counts, P, err, len(err)) == -1 and
               b"negative" in err.value, "negative count accepted: %r" % err.value)
        # A skewed load: physical ids of logical expert 1 (every replica) dominate.
        hot = [p for p in range(P) if before[p] == 1]
        ids = hot * 400 + list(range(P)) * 10
        buf = (ctypes.c_int64 * len(ids))(*ids)
        deadline = time.time() + 20
        step = 0
        while lib.eplb_worker_version(w) == v0 and time.time() < deadline:
            for layer in range(LAYERS):
                expect(lib.eplb_worker_record(w, layer, buf, len(ids), err, len(err)) == 0,
                       err.value.decode())
            expect(lib.eplb_worker_report(w, step, step, err, len(err)) == 0, err.value.decode())
            step += 1
            time.sleep(0.1)
        v1 = lib.eplb_worker_version(w)
        expect(v1 > v0, "no rebalance reached the worker (version %d)" % v1)
        expect(lib.eplb_worker_physical_to_logical(w, 0, p2l, P, err, len(err)) == 0,
               err.value.decode())
        after = list(p2l)
        expect(after.count(1) > before.count(1),
               "the hot expert did not gain replicas: %s -> %s" % (before, after))
        for rank in range(W):
            expect(lib.eplb_worker_dispatch_table(w, rank, 0, table, E, err, len(err)) == 0,
                   err.value.decode())
            for e in range(E):
                expect(after[table[e]] == e, "rank %d table sends expert %d to physical %d (%d)"
                       % (rank, e, table[e], after[table[e]]))
        # The step boundary with an engine-provided all-reduce (one rank here: identity).
        calls = []

        def all_min(values, n, user):
            calls.append(n)
            return 0
        ran = ctypes.create_string_buffer(16)
        expect(lib.eplb_worker_step_boundary(w, ALLMIN(all_min), None, ran, len(ran), err,
                                             len(err)) == 0, err.value.decode())
        expect(calls == [4] and ran.value == b"", "step boundary: %s %r" % (calls, ran.value))
        lib.eplb_worker_destroy(w)
        print("PASSED: version %d -> %d, expert 1 replicas %d -> %d"
              % (v0, v1, before.count(1), after.count(1)))
    finally:
        ctl.terminate()
        ctl.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
