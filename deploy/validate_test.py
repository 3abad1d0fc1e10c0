#!/usr/bin/env python3
"""Validates deploy/: every manifest parses; containers and systemd units run only our binaries,
with flags those binaries accept and images that deploy/docker builds; probes and services name
ports that exist; the Grafana dashboard and alert rules use only metrics the controller exports;
promtool accepts the Prometheus config and rules.

Usage (from Bazel): validate_test.py EPLB_CONTROLLER EPLB_WORKER
"""
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
FAILURES = []


def fail(msg):
    FAILURES.append(msg)
    print("FAIL: " + msg)


def flags_of(binary):
    out = subprocess.run([binary, "--helpfull"], capture_output=True, text=True).stdout
    return set(re.findall(r"--([a-z_0-9]+)", out))


def check_flags(where, binary_name, args, known):
    if binary_name not in known:
        fail("%s runs %s, which is not one of our binaries %s" % (where, binary_name, sorted(known)))
        return
    for a in args:
        m = re.match(r"--([a-z_0-9]+)", a)
        if m and m.group(1) not in known[binary_name]:
            fail("%s passes --%s, which %s does not accept" % (where, m.group(1), binary_name))


def check_config(where, controller, text):
    with tempfile.NamedTemporaryFile("w", suffix=".textproto", delete=False) as f:
        f.write(text)
    r = subprocess.run([controller, "--config", f.name, "--check_config"], capture_output=True,
                       text=True)
    os.unlink(f.name)
    if r.returncode != 0 or not r.stdout.startswith("config ok"):
        fail("%s: eplb_controller --check_config says %s" % (where, r.stderr.strip()))


def main(argv):
    known = {"eplb_controller": flags_of(argv[1]), "eplb_worker": flags_of(argv[2])}
    for name, flags in known.items():
        if "num_logical" not in flags:
            fail("could not read the flags of %s" % name)
    images = {"eplb/" + os.path.basename(p)[: -len(".Dockerfile")]
              for p in glob.glob(os.path.join(HERE, "docker", "*.Dockerfile"))}
    # Kubernetes.
    for path in glob.glob(os.path.join(HERE, "kubernetes", "*.yaml")):
        docs = [d for d in yaml.safe_load_all(open(path)) if d]
        if not docs:
            fail("%s is empty" % path)
        service_targets = []
        container_ports = set()
        for d in docs:
            for key in ("apiVersion", "kind", "metadata"):
                if key not in d:
                    fail("%s: a document has no %s" % (path, key))
            # Controller configs in ConfigMaps must pass the controller's own check.
            if d.get("kind") == "ConfigMap":
                for key, text in (d.get("data") or {}).items():
                    if key.endswith(".textproto"):
                        check_config("%s %s" % (os.path.basename(path), key), argv[1], text)
            spec = d.get("spec", {})
            if d.get("kind") == "Service":
                service_targets += [p.get("targetPort") for p in spec.get("ports", [])]
            pod = spec.get("template", {}).get("spec", {})
            for c in pod.get("containers", []):
                where = "%s container %s" % (os.path.basename(path), c.get("name"))
                image = c.get("image", "").split(":")[0]
                if image not in images:
                    fail("%s uses image %s; deploy/docker builds %s" % (where, image, sorted(images)))
                binary = os.path.basename((c.get("command") or [""])[0])
                check_flags(where, binary, c.get("args", []), known)
                names = {p.get("name") for p in c.get("ports", [])}
                container_ports |= names
                for probe in ("readinessProbe", "livenessProbe"):
                    port = c.get(probe, {}).get("httpGet", {}).get("port")
                    if port is not None and port not in names:
                        fail("%s %s uses port %s; the container has %s" % (where, probe, port, names))
        for t in service_targets:
            if isinstance(t, str) and t not in container_ports:
                fail("%s: service targetPort %s is no container port" % (path, t))
    # systemd.
    for path in glob.glob(os.path.join(HERE, "systemd", "*.service")):
        text = open(path).read().replace("\\\n", " ")
        m = re.search(r"^ExecStart=(\S+)(.*)$", text, re.M)
        if not m:
            fail("%s has no ExecStart" % path)
            continue
        check_flags(os.path.basename(path), os.path.basename(m.group(1)), m.group(2).split(), known)
    # Metrics used by rules and the dashboard must exist.
    exported = {"eplb_controller_balancedness", "eplb_controller_predicted_balancedness",
                "eplb_controller_rebalances_total", "eplb_controller_plan_compute_seconds_bucket",
                "eplb_controller_map_version", "eplb_controller_workers",
                "eplb_controller_experts_moved_total", "eplb_controller_load_reports_total",
                "eplb_controller_nacks_total"}
    dash = json.load(open(os.path.join(HERE, "grafana", "eplb-dashboard.json")))
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load(open(os.path.join(HERE, "prometheus", "rules.yml")))
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    for e in exprs:
        for name in re.findall(r"eplb_[a-z_]+", e):
            if name not in exported:
                fail("expression uses %s, which the controller does not export: %s" % (name, e))
    # promtool.
    for args in (["check", "config", os.path.join(HERE, "prometheus", "prometheus.yml")],
                 ["check", "rules", os.path.join(HERE, "prometheus", "rules.yml")]):
        r = subprocess.run(["promtool"] + args, capture_output=True, text=True)
        if r.returncode != 0:
            fail("promtool %s: %s%s" % (" ".join(args), r.stdout, r.stderr))
    print("%d problems" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
