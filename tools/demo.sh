#!/usr/bin/env bash
# The main job: the real controller binary and a real worker daemon (two simulated nodes of four
# ranks, CPU backend) on loopback, driven by skewed routing whose hot experts drift. The
# controller rebalances when it pays; the script samples `eplbctl status` as it runs, writes an
# HTML report with the balancedness over time, and ends with one JSON line.
#
#   tools/dev demo [--quick]        # about 60 s, or 15 s with --quick (after the build)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=60
drift=20s
if [ "${1:-}" = "--quick" ]; then
  duration=15
  drift=0s  # too short to recover from a drift and still measure the final window
fi
echo "[demo] building the controller, the worker daemon and eplbctl" >&2
bazel build -c opt //eplb_controller:eplb_controller //worker:eplb_worker \
  //eplb_controller:eplbctl >/dev/null 2>&1 || bazel build -c opt //eplb_controller:eplb_controller \
  //worker:eplb_worker //eplb_controller:eplbctl
out="${DEMO_OUT:-out/demo}"
rm -rf "$out" && mkdir -p "$out/state"
shape=(--num_logical 64 --num_redundant 16 --ep_size 8 --num_nodes 2 --num_layers 8 --num_shared 1)
bazel-bin/eplb_controller/eplb_controller --listen 127.0.0.1:0 --metrics 127.0.0.1:0 \
  --state_dir "$out/state" "${shape[@]}" --bytes_per_expert 4096 --interval 2s \
  --min_rebalance_interval 4s --window 6s --rollout_timeout 5s >"$out/controller.log" 2>&1 &
controller=$!
trap 'kill $controller ${worker:-} 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  grep -q "listening on port" "$out/controller.log" && break
  sleep 0.1
done
port=$(grep -o "listening on port [0-9]*" "$out/controller.log" | awk '{print $4}')
metrics=$(grep -o "metrics on port [0-9]*" "$out/controller.log" | awk '{print $4}')
echo "[demo] controller on 127.0.0.1:$port (metrics :$metrics); workers: 2 nodes x 4 ranks" >&2
bazel-bin/worker/eplb_worker --controller "127.0.0.1:$port" --nodes 2 "${shape[@]}" \
  --row_bytes 4096 --traffic --drift_every "$drift" --duration "${duration}s" >"$out/worker.log" 2>&1 &
worker=$!
python3 - "$port" "$metrics" "$duration" "$out" <<'PY'
import json, subprocess, sys, time, urllib.request
port, metrics_port, duration, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ctl = "bazel-bin/eplb_controller/eplbctl"
samples, t0, last_version = [], time.time(), None
while time.time() - t0 < duration:
    time.sleep(1)
    r = subprocess.run([ctl, "status", "--controller", "127.0.0.1:" + port, "--json"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        continue
    s = json.loads(r.stdout)
    t = round(time.time() - t0, 1)
    samples.append({"t": t, "balancedness": s["balancedness"], "version": s["version"]})
    if s["version"] != last_version:
        print("[demo] t=%5.1fs  map version %d  observed balancedness %.3f" % (
            t, s["version"], s["balancedness"]), file=sys.stderr)
        last_version = s["version"]
    elif int(t) % 5 == 0:
        print("[demo] t=%5.1fs  observed balancedness %.3f" % (t, s["balancedness"]), file=sys.stderr)
metrics = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % metrics_port, timeout=5).read().decode()
def metric(name):
    for line in metrics.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            if name.endswith("}") or line.split(" ")[0] == name:
                return float(line.split(" ")[-1])
    return 0.0
def labelled(name, label):
    for line in metrics.splitlines():
        if line.startswith('%s{%s}' % (name, label)):
            return float(line.split(" ")[-1])
    return 0.0
valid = [x for x in samples if x["balancedness"] > 0]
first_commit = next((x["t"] for x in valid if x["version"] > 1), None)
before = [x["balancedness"] for x in valid if x["version"] == 1] or [0.0]
tail = [x["balancedness"] for x in valid[-max(1, len(valid) // 4):]] or [0.0]
moved = metric("eplb_controller_experts_moved_total")
# Report: balancedness over time with rebalance markers, as one self-contained HTML file.
w, h = 760, 300
def X(t): return 40 + (w - 60) * t / max(1, duration)
def Y(b): return h - 30 - (h - 60) * b
points = " ".join("%.1f,%.1f" % (X(x["t"]), Y(x["balancedness"])) for x in valid)
marks, prev = [], 1
for x in valid:
    if x["version"] != prev:
        marks.append('<line x1="%.1f" x2="%.1f" y1="20" y2="%d" stroke="#c33" '
                     'stroke-dasharray="4 3"><title>map v%d</title></line>' % (
                         X(x["t"]), X(x["t"]), h - 30, x["version"]))
        prev = x["version"]
html = """<!doctype html><html><head><meta charset="utf-8"><title>EPLB demo</title></head>
<body style="font-family:sans-serif"><h1>EPLB demo</h1>
<p>Controller + 2 worker nodes (8 ranks, 64 experts + 16 redundant, 8 layers), drifting skewed
routing. Observed balancedness (mean over layers of mean/max GPU load) over time; dashed lines
are committed rollouts.</p>
<svg id="balancedness" width="%d" height="%d" xmlns="http://www.w3.org/2000/svg">
<rect x="40" y="20" width="%d" height="%d" fill="none" stroke="#999"/>
<text x="5" y="%.1f" font-size="11">1.0</text><text x="5" y="%.1f" font-size="11">0.5</text>
<text x="5" y="%.1f" font-size="11">0</text>
%s
<polyline fill="none" stroke="#1565c0" stroke-width="2" points="%s"/>
<text x="%d" y="%d" font-size="11">seconds</text></svg>
<pre>%s</pre></body></html>""" % (w, h, w - 60, h - 50, Y(1.0) + 4, Y(0.5) + 4, Y(0) + 4,
                              "\n".join(marks), points, w - 60, h - 8,
                              json.dumps(samples[-5:], indent=1))
report = out + "/report.html"
open(report, "w").write(html)
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
print(json.dumps(summary))
PY
wait $worker || true
