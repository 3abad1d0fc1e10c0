#!/usr/bin/env python3
"""The end-to-end proof on GPUs: one moe_gpu_rank process per GPU and the real controller.

Four runs on the same GPUs:
  1. planted bug: slots laid out with the logical count (L = E / W); the outputs must differ
     from the reference (the harness must fail loudly);
  2. identity map, no controller, fixed hot experts: the step time of the trivial placement;
  3. steady: the same traffic with the controller, which rebalances once or twice: the step
     time of the balanced placement (compare with 2);
  4. live: the controller rebalances as the hot experts drift; every step of every rank must
     equal the reference bit for bit, the recorded load must equal the router's choices, at
     least --min_commits maps must commit, and every rank must end on the same version with
     every row holding the expert its map says. Rollout stalls are measured here.
Runs 3 and 4 check outputs and load too.
Prints one JSON summary line; exit 0 only if all of it holds. Binaries are taken from the
arguments or from this script's directory (a GPU bundle). Extra arguments (e.g. gtest's) are
ignored.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time


def gpu_count():
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True)
        return len([l for l in out.stdout.splitlines() if l.startswith("GPU ")])
    except (OSError, subprocess.CalledProcessError):
        return 0


def run_ranks(rank_bin, world, tmp, name, extra):
    id_file = os.path.join(tmp, name + ".ncclid")
    procs, outs = [], []
    for r in range(world):
        out = os.path.join(tmp, "%s-%d.json" % (name, r))
        outs.append(out)
        cmd = [rank_bin, "--rank=%d" % r, "--world=%d" % world, "--id_file=" + id_file,
               "--out=" + out] + extra
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True))
    results, errors = [], []
    for r, p in enumerate(procs):
        try:
            _, err = p.communicate(timeout=480)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise SystemExit("%s: rank %d timed out" % (name, r))
        if p.returncode != 0:
            errors.append("rank %d exit %d: %s" % (r, p.returncode, err.strip()[-2000:]))
            continue
        with open(outs[r]) as f:
            results.append(json.loads(f.read()))
    if errors:
        raise SystemExit("%s failed:\n%s" % (name, "\n".join(errors)))
    return results


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("controller_bin", nargs="?", default=os.path.join(here, "eplb_controller"))
    ap.add_argument("rank_bin", nargs="?", default=os.path.join(here, "moe_gpu_rank"))
    ap.add_argument("--world", type=int, default=0, help="ranks (default: every visible GPU)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--drift_every", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--min_commits", type=int, default=10)
    ap.add_argument("--window", default="400ms", help="the controller's load window")
    ap.add_argument("--rank_args", default="", help="more moe_gpu_rank flags, space separated")
    args, _ = ap.parse_known_args()
    world = args.world or gpu_count()
    if world < 2:
        print("SKIPPED: needs >= 2 GPUs, found %d" % world)
        return 0
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    shape = dict(experts=16, redundant=8, layers=4, hidden=1024, inter=512, top_k=4)
    common = ["--%s=%d" % kv for kv in shape.items()] + ["--tokens=%d" % args.tokens]
    common += args.rank_args.split()
    row_bytes = 3 * shape["hidden"] * shape["inter"] * 4
    summary = {"world": world, "shape": shape, "tokens_per_rank": args.tokens}
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        # 1. The planted bug must be caught.
        bug = run_ranks(args.rank_bin, world, tmp, "bug", common + ["--plant_bug", "--steps=2"])
        caught = sum(r["mismatched_tokens"] for r in bug)
        summary["planted_bug_mismatched_tokens"] = caught
        if caught == 0:
            failures.append("the planted logical-count bug went unnoticed")
        # 2. Identity map baseline (the reference runs outside the timed part of a step).
        steps_base = max(40, args.steps // 2)
        base = run_ranks(args.rank_bin, world, tmp, "identity", common + [
            "--steps=%d" % steps_base, "--drift_every=1000000", "--check=false"])
        summary["identity_step_ms_median"] = max(r["step_ms_median"] for r in base)
        # Expert FFN time per step: the slowest rank's (the others wait for it).
        summary["identity_ffn_ms_max_rank"] = max(r["ffn_ms_median"] for r in base)
        summary["identity_ffn_ms_per_rank"] = [r["ffn_ms_median"] for r in base]
        steady = run_live(args, world, tmp, "steady", shape, row_bytes, common + [
            "--steps=%d" % steps_base, "--drift_every=1000000"])
        summary["steady_step_ms_quiet_median"] = max(r["step_ms_quiet_median"] for r in steady)
        summary["steady_commits"] = min(r["commits"] for r in steady)
        summary["steady_ffn_ms_max_rank"] = max(r["ffn_ms_median"] for r in steady)
        summary["steady_ffn_ms_per_rank"] = [r["ffn_ms_median"] for r in steady]
        for r in steady:
            if r["mismatched_tokens"] or r["load_mismatch_steps"]:
                failures.append("steady run: rank %d differs from the reference" % r["rank"])
        # 4. Live rebalancing with drift.
        live = run_live(args, world, tmp, "live", shape, row_bytes, common + [
            "--steps=%d" % args.steps, "--drift_every=%d" % args.drift_every])
    summary_live(summary, live, args, failures)
    summary["failures"] = failures
    print(json.dumps(summary))
    return 1 if failures else 0


def run_live(args, world, tmp, name, shape, row_bytes, rank_flags):
    """Starts the real controller, runs the ranks against it, stops it."""
    ctl = subprocess.Popen(
        [args.controller_bin, "--listen=127.0.0.1:0", "--metrics=",
         "--num_logical=%d" % shape["experts"], "--num_redundant=%d" % shape["redundant"],
         "--ep_size=%d" % world, "--num_shared=1", "--num_nodes=1",
         "--num_layers=%d" % shape["layers"], "--bytes_per_expert=%d" % row_bytes,
         "--interval=50ms", "--min_rebalance_interval=0s", "--trigger_balancedness=0.97",
         "--min_gain=0.01", "--window=%s" % args.window, "--rollout_timeout=30s",
         # One layer per rollout: the ranks' staging holds one layer (L rows).
         "--layers_per_rollout=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.time() + 20
        while port is None and time.time() < deadline:
            line = ctl.stdout.readline()
            if not line:
                break
            m = re.match(r"listening on port (\d+)", line)
            if m:
                port = m.group(1)
        if port is None:
            raise SystemExit("controller did not start: " + ctl.stderr.read())
        return run_ranks(args.rank_bin, world, tmp, name,
                         rank_flags + ["--controller=127.0.0.1:" + port])
    finally:
        ctl.terminate()
        ctl.wait(timeout=20)


def summary_live(summary, live, args, failures):
    mism = sum(r["mismatched_tokens"] for r in live)
    load_bad = sum(r["load_mismatch_steps"] for r in live)
    commits = min(r["commits"] for r in live)
    versions = sorted(set(r["final_version"] for r in live))
    bad_rows = sum(r["inconsistent_rows"] for r in live)
    summary.update({
        "live_steps": args.steps,
        "live_mismatched_tokens": mism,
        "live_max_abs_diff": max(r["max_abs_diff"] for r in live),
        "live_load_mismatch_steps": load_bad,
        "live_commits": commits,
        "live_final_versions": versions,
        "live_inconsistent_rows": bad_rows,
        "live_step_ms_quiet_median": max(r["step_ms_quiet_median"] for r in live),
        "live_prepare_step_ms_median": max(r["prepare_step_ms_median"] for r in live),
        "live_prepare_step_ms_max": max(r["prepare_step_ms_max"] for r in live),
        "live_commit_step_ms_median": max(r["commit_step_ms_median"] for r in live),
        "live_bytes_received_total": sum(r["bytes_received"] for r in live),
        "live_stage_gbps_median_per_rank": [r["stage_gbps_median"] for r in live],
    })
    if mism:
        failures.append("%d tokens differ from the reference" % mism)
    if load_bad:
        failures.append("recorded load differs from the router's choices on %d steps" % load_bad)
    if commits < args.min_commits:
        failures.append("only %d commits (want >= %d)" % (commits, args.min_commits))
    if len(versions) != 1:
        failures.append("ranks ended on different versions %s" % versions)
    if bad_rows:
        failures.append("%d rows disagree with their map" % bad_rows)


if __name__ == "__main__":
    sys.exit(main())
