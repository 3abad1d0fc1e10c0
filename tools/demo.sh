#!/usr/bin/env bash
# The main job: the real controller binary and one real worker daemon per simulated node (two
# nodes of four ranks, CPU backend, weights in shared memory) on loopback, driven by skewed routing whose hot experts drift. The
# controller rebalances when it pays; the script samples `eplbctl status` as it runs, writes an
# HTML report with the balancedness over time, and ends with one JSON line.
#
#   tools/dev demo [--quick] [--deepseek] [--replay LOAD.json] [--seconds N]
#     --quick     15 s instead of 60 (after the build), no drift
#     --deepseek  DeepSeek-V3 scale: 58 layers, 256 experts + 32 redundant, 32 ranks on 4 nodes,
#                 top-8 (slower steps)
#     --replay    drive the traffic with a recorded load file (SGLang's logical_count,
#                 [T][layers][E]), one step every 2 s, e.g. tests/golden/mixtral_8x7b_mmlu_by_subject.json
set -euo pipefail
cd "$(dirname "$0")/.."
duration=60
drift=20s
shape=(--num_logical 64 --num_redundant 16 --ep_size 8 --num_nodes 2 --num_layers 8 --num_shared 1)
traffic=(--top_k 4 --num_groups 8 --group_locality 0.5 --burst_probability 0.002 --burst_steps 50)
title="controller + 2 worker nodes (8 ranks, 64 + 16 experts, 8 layers)"
nodes=2
timing=(--interval 2s --min_rebalance_interval 4s --window 6s)
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) duration=15; drift=0s ;;
    --seconds) duration="$2"; shift ;;
    --deepseek)
      shape=(--num_logical 256 --num_redundant 32 --ep_size 32 --num_nodes 4 --num_layers 58
             --num_shared 1)
      traffic=(--top_k 8 --tokens_per_step 1024 --step_interval 250ms)
      timing=(--interval 3s --min_rebalance_interval 10s --window 15s)
      nodes=4
      title="DeepSeek-V3 scale: 4 nodes x 8 ranks, 256 + 32 experts, 58 layers, top-8" ;;
    --replay)
      [ -f "${2:-}" ] || { echo "demo: --replay needs a load file, got '${2:-}'" >&2; exit 2; }
      replay="$2"; shift
      read -r e layers < <(python3 -c "
import json, sys
c = json.load(open(sys.argv[1]))['logical_count']
print(len(c[0][0]), len(c[0]))" "$replay")
      r=$(( (e * 5 + 31) / 32 * 8 - e ))  # about 25% redundant, P a multiple of 8
      shape=(--num_logical "$e" --num_redundant "$r" --ep_size 8 --num_nodes 2
             --num_layers "$layers" --num_shared 1)
      traffic=(--top_k 2 --replay "$replay" --replay_step 2s)
      drift=0s
      title="replay of $(basename "$replay"): 2 nodes x 4 ranks, $e + $r experts, $layers layers" ;;
    *) echo "usage: tools/dev demo [--quick] [--deepseek] [--replay LOAD.json] [--seconds N]" >&2
       exit 2 ;;
  esac
  shift
done
echo "[demo] building the controller, the worker daemon and eplbctl" >&2
bazel build -c opt //eplb_controller:eplb_controller //worker:eplb_worker \
  //eplb_controller:eplbctl >/dev/null 2>&1 || bazel build -c opt //eplb_controller:eplb_controller \
  //worker:eplb_worker //eplb_controller:eplbctl
out="${DEMO_OUT:-out/demo}"
rm -rf "$out" && mkdir -p "$out/state"
bazel-bin/eplb_controller/eplb_controller --listen 127.0.0.1:0 --metrics 127.0.0.1:0 \
  --state_dir "$out/state" "${shape[@]}" --bytes_per_expert 4096 "${timing[@]}" \
  --rollout_timeout 5s >"$out/controller.log" 2>&1 &
controller=$!
trap 'kill $controller ${worker:-} 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  grep -q "listening on port" "$out/controller.log" && break
  sleep 0.1
done
port=$(grep -o "listening on port [0-9]*" "$out/controller.log" | awk '{print $4}')
metrics=$(grep -o "metrics on port [0-9]*" "$out/controller.log" | awk '{print $4}')
echo "[demo] controller on 127.0.0.1:$port (metrics :$metrics); $title" >&2
# One worker daemon per simulated node; their expert stores are shared-memory files in one
# directory, so weights move between the daemons' ranks. Same seed: one global token stream.
mkdir -p "$out/fabric"
workers=()
for node in $(seq 0 $((nodes - 1))); do
  bazel-bin/worker/eplb_worker --controller "127.0.0.1:$port" --nodes 1 --first_node "$node" \
    "${shape[@]}" "${traffic[@]}" --row_bytes 4096 --traffic --drift_every "$drift" \
    --fabric_dir "$out/fabric" --duration "$((duration + 30))s" >"$out/worker-$node.log" 2>&1 &
  workers+=($!)
done
worker="${workers[*]}"
python3 - "$port" "$metrics" "$duration" "$out" "$title" <<'PY'
import json, subprocess, sys, time, urllib.request
port, metrics_port, duration, out, title = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
ctl = "bazel-bin/eplb_controller/eplbctl"
samples, t0, last_version = [], time.time(), None
gpu_before, gpu_after, replicas = [], [], []
while time.time() - t0 < duration:
    time.sleep(1)
    r = subprocess.run([ctl, "status", "--controller", "127.0.0.1:" + port, "--json"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        continue
    s = json.loads(r.stdout)
    t = round(time.time() - t0, 1)
    samples.append({"t": t, "balancedness": s["balancedness"], "version": s["version"]})
    if s["version"] == 1 and 0 < s["balancedness"] < 1:
        gpu_before = s["gpu_load"]
    if 0 < s["balancedness"] < 1:
        gpu_after = s["gpu_load"]
    replicas = s["replica_count"]
    if s["version"] != last_version:
        print("[demo] t=%5.1fs  map version %d  observed balancedness %.3f" % (
            t, s["version"], s["balancedness"]), file=sys.stderr)
        last_version = s["version"]
    elif int(t) % 5 == 0:
        print("[demo] t=%5.1fs  observed balancedness %.3f" % (t, s["balancedness"]), file=sys.stderr)
metrics = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % metrics_port, timeout=5).read().decode()
def metric(name):
    for line in metrics.splitlines():
        if line.split(" ")[0] == name:
            return float(line.split(" ")[-1])
    return 0.0
def labelled(name, label):
    for line in metrics.splitlines():
        if line.startswith('%s{%s}' % (name, label)):
            return float(line.split(" ")[-1])
    return 0.0
valid = [x for x in samples if 0 < x["balancedness"] < 1]
first_commit = next((x["t"] for x in valid if x["version"] > 1), None)
before = [x["balancedness"] for x in valid if x["version"] == 1] or [0.0]
tail = [x["balancedness"] for x in valid[-max(1, len(valid) // 4):]] or [0.0]
moved = metric("eplb_controller_experts_moved_total")
report = out + "/report.html"
summary = {
    "balancedness_before": round(sum(before) / len(before), 4),
    "balancedness_after": round(sum(tail) / len(tail), 4),
    "rebalances": int(labelled("eplb_controller_rebalances_total", 'result="committed"')),
    "experts_moved": int(moved),
    "bytes_moved": int(moved) * 4096,  # the CPU backend's rows are 4 KiB
    "workers": int(labelled("eplb_controller_workers", 'state="live"')),
    "map_version": int(metric("eplb_controller_map_version")),
    "nacks": int(metric("eplb_controller_nacks_total")),
    "first_rollout_at_s": first_commit,
    "report": report,
}
data = {"title": "EPLB demo: " + title,
        "duration": duration, "samples": valid, "gpu_before": gpu_before,
        "gpu_after": gpu_after, "replicas": replicas, "summary": summary}
json.dump(data, open(out + "/report.json", "w"))
subprocess.run([sys.executable, "tools/report.py", out + "/report.json", report], check=True)
print(json.dumps(summary))
PY
kill ${workers[*]} 2>/dev/null || true
wait ${workers[*]} 2>/dev/null || true
