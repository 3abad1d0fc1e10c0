#!/usr/bin/env bash
# The main job, until the cluster simulator lands: plan placements for real Mixtral-8x7B routing
# (MMLU, tests/golden) with every algorithm, replay its drift across the 57 MMLU subjects with
# incremental rebalancing, and print what an operator would look at. Ends with one JSON line.
#
#   tools/dev demo [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1
echo "[demo] building eplbctl" >&2
bazel build -c opt //eplb_controller:eplbctl >&2 2>/dev/null || bazel build -c opt //eplb_controller:eplbctl
ctl=bazel-bin/eplb_controller/eplbctl
out="${DEMO_OUT:-out/demo}"
mkdir -p "$out"
trace=tests/golden/mixtral_8x7b_mmlu.json
subjects=tests/golden/mixtral_8x7b_mmlu_by_subject.json

echo "[demo] layout of a DeepSeek-V3 deployment (E=256, R=32, EP16, 1 fused shared expert)" >&2
"$ctl" layout --num-logical 256 --num-redundant 32 --ep-size 16 --num-shared 1 --num-nodes 2 \
  > "$out/layout.json"
python3 - "$out/layout.json" <<'PY' >&2
import json, sys
j = json.load(open(sys.argv[1]))
print("  L=%d routed rows per rank, %d slots; physical 287 -> slot %d; rank 3 shared slot %d" % (
    j["routed_slots_per_rank"], j["num_slots"], j["routed_slot_of_physical"][287],
    j["shared_slot_of_rank"][3][0]))
PY

echo "[demo] placements for Mixtral-8x7B on MMLU (32 layers x 8 experts -> 16 slots, 8 GPUs)" >&2
for algo in deepseek balanced; do
  "$ctl" plan --load "$trace" --num-physical 16 --ep-size 8 --num-nodes 2 --num-groups 2 \
    --algorithm "$algo" --bytes-per-expert 352321536 --out "$out/plan_$algo.json"
done

# Drift: subject by subject, rebalance incrementally from the previous placement.
python3 - "$ctl" "$subjects" "$out" "$quick" <<'PY'
import json, subprocess, sys
ctl, subjects, out, quick = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
steps = json.load(open(subjects))["logical_count"]
if quick:
    steps = steps[:12]
identity = {"physical_to_logical_map": [[p % 8 for p in range(16)] for _ in range(32)]}
cur_path = out + "/current.json"
json.dump(identity, open(cur_path, "w"))

def plan(load_path, algo, current=None):
    args = [ctl, "plan", "--load", load_path, "--num-physical", "16", "--ep-size", "8",
            "--num-nodes", "2", "--num-groups", "2", "--algorithm", algo,
            "--bytes-per-expert", "352321536"]
    if current:
        args += ["--current", current]
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)

def evaluate(load_path, placement_path):
    # Balancedness of a fixed placement under a load: plan with zero moves allowed.
    return plan(load_path, "incremental", placement_path)["stats"]

before, after, moved, bytes_moved, rebalances = [], [], 0, 0, 0
for i, step in enumerate(steps):
    load_path = out + "/step.json"
    json.dump({"logical_count": step}, open(load_path, "w"))
    # Observed balancedness of the placement in force on this step's traffic.
    args = [ctl, "plan", "--load", load_path, "--num-physical", "16", "--ep-size", "8",
            "--algorithm", "incremental", "--current", cur_path, "--max-moves", "0"]
    observed = json.loads(subprocess.run(args, check=True, capture_output=True,
                                         text=True).stdout)["stats"]["balancedness"]
    (before if i == 0 else after).append(observed)
    p = plan(load_path, "incremental", cur_path)
    if p["stats"]["experts_moved"] > 0:
        rebalances += 1
        moved += p["stats"]["experts_moved"]
        bytes_moved += p["stats"]["bytes_moved"]
        json.dump({"physical_to_logical_map": p["physical_to_logical_map"]}, open(cur_path, "w"))
    print("[demo] subject %2d/%d: balancedness in force %.4f, planned %.4f, moved %d" % (
        i + 1, len(steps), observed, p["stats"]["balancedness"], p["stats"]["experts_moved"]),
        file=sys.stderr)
ds = json.load(open(out + "/plan_deepseek.json"))["stats"]
bal = json.load(open(out + "/plan_balanced.json"))["stats"]
summary = {
    "job": "eplbctl plan over Mixtral-8x7B MMLU routing (simulator pending)",
    "balancedness_before": round(before[0], 4),
    "balancedness_after": round(sum(after) / len(after), 4),
    "deepseek_balancedness": round(ds["balancedness"], 4),
    "balanced_balancedness": round(bal["balancedness"], 4),
    "balanced_plan_seconds": round(bal["compute_seconds"], 4),
    "rebalances": rebalances,
    "experts_moved": moved,
    "bytes_moved": bytes_moved,
    "steps": len(steps),
    "plans": out,
}
print(json.dumps(summary))
PY
