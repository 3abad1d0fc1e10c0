#!/usr/bin/env python3
"""The simulator end to end, briefly: the real eplb_controller binary and two eplb_worker
daemons (one per node, weights in shared files) on loopback with skewed traffic. Checks that a rollout commits with zero NACKs, that the observed
balancedness rises above what the identity map gave, that every worker applied the new version,
and that the /metrics of the controller and of the worker show their metric names.

Usage (from Bazel): simulator_test.py EPLB_CONTROLLER EPLB_WORKER EPLBCTL
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

NAMES = ["eplb_controller_balancedness", "eplb_controller_predicted_balancedness",
         "eplb_controller_rebalances_total", "eplb_controller_plan_compute_seconds",
         "eplb_controller_map_version", "eplb_controller_workers",
         "eplb_controller_experts_moved_total", "eplb_controller_load_reports_total",
         "eplb_controller_nacks_total"]
WORKER_NAMES = ["eplb_worker_map_version", "eplb_worker_prepares_total",
                "eplb_worker_commits_total", "eplb_worker_rows_moved_total",
                "eplb_worker_bytes_received_total", "eplb_worker_load_reports_total"]


def main(argv):
    controller_bin, worker_bin, ctl = argv[1:4]
    shape = ["--num_logical", "64", "--num_redundant", "16", "--ep_size", "8", "--num_nodes", "2",
             "--num_layers", "4", "--num_shared", "1"]
    state = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
    controller = subprocess.Popen(
        [controller_bin, "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--state_dir",
         state, "--interval", "2s", "--min_rebalance_interval", "2s", "--window", "3s"] + shape,
        stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        ports = {}
        while len(ports) < 2:
            line = controller.stdout.readline()
            if not line:
                raise SystemExit("controller exited: no ports")
            m = re.match(r"(listening|metrics) on port (\d+)", line)
            if m:
                ports[m.group(1)] = m.group(2)
        addr = "127.0.0.1:" + ports["listening"]
        # One daemon per node; weights move between them through shared files.
        fabric = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
        common = ["--controller", addr, "--nodes", "1", "--traffic", "--drift_every", "0s",
                  "--duration", "30s", "--fabric_dir", fabric] + shape
        worker = subprocess.Popen([worker_bin, "--first_node", "0", "--metrics", "127.0.0.1:0"] +
                                  common, stdout=subprocess.PIPE, text=True)
        worker2 = subprocess.Popen([worker_bin, "--first_node", "1"] + common,
                                   stdout=subprocess.DEVNULL)
        worker_metrics = None
        while worker_metrics is None:
            line = worker.stdout.readline()
            if not line:
                raise SystemExit("worker exited before serving metrics")
            m = re.match(r"metrics on port (\d+)", line)
            if m:
                worker_metrics = m.group(1)
        first, status = None, None
        deadline = time.time() + 25
        while time.time() < deadline:
            time.sleep(0.2)
            r = subprocess.run([ctl, "status", "--controller", addr, "--json"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                continue
            status = json.loads(r.stdout)
            # 1.0 exactly is an idle window (no report yet), not a measurement.
            if first is None and 0 < status["balancedness"] < 1 and status["version"] == 1:
                first = status["balancedness"]
            applied = [w["applied_version"] for w in status["workers"]]
            if status["version"] >= 2 and len(applied) == 2 and min(applied) >= 2:
                time.sleep(4)  # a window of load under the new map
                for _ in range(30):  # skip idle windows (1.0 exactly, right after a switch)
                    status = json.loads(subprocess.run([ctl, "status", "--controller", addr,
                                                        "--json"], capture_output=True,
                                                       text=True).stdout)
                    if 0 < status["balancedness"] < 1:
                        break
                    time.sleep(0.2)
                break
        assert status is not None and status["version"] >= 2, "no rollout committed: %s" % status
        if first is None:  # the rollout beat the first sample: use what the controller measured
            committed = [r for r in status["recent_rebalances"] if r["result"] == "committed"]
            first = committed[0]["balancedness_before"] if committed else None
        assert first is not None, "no balancedness measured under the identity map"
        assert status["balancedness"] > first + 0.1, (
            "balancedness %.3f did not rise above %.3f" % (status["balancedness"], first))
        metrics = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % ports["metrics"],
                                         timeout=5).read().decode()
        for name in NAMES:
            assert name in metrics, "metric %s missing" % name
        assert re.search(r"^eplb_controller_nacks_total 0", metrics, re.M), "NACKs seen"
        assert re.search(r'^eplb_controller_workers\{state="live"\} 2', metrics, re.M)
        wm = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % worker_metrics,
                                    timeout=5).read().decode()
        for name in WORKER_NAMES:
            assert name in wm, "worker metric %s missing" % name
        assert re.search(r'^eplb_worker_commits_total\{worker="node-0"\} [1-9]', wm, re.M), wm
        print("balancedness %.3f -> %.3f, version %d" % (first, status["balancedness"],
                                                         status["version"]))
        return 0
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=10)
            worker2.terminate()
            worker2.wait(timeout=10)
        controller.terminate()
        controller.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
