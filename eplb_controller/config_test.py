#!/usr/bin/env python3
"""eplb_controller --config: a text-proto ControllerConfig overrides the flags it names (seen
through eplbctl status --json); bad files exit 2 with the file, line and column or the value."""
import json
import os
import re
import subprocess
import sys
import tempfile


def main():
    controller, eplbctl = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp()

    def write(name, text):
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    good = write("good.textproto", """# a comment
listen: "127.0.0.1:0"
metrics: ""
num_logical: 16 num_redundant: 8 ep_size: 4 num_layers: 3
algorithm: "balanced"
layers_per_rollout: 2
max_moves: 7
interval_seconds: 0
""")
    # --num_layers on the command line is overridden by the file; --trigger_balancedness is not
    # in the file, so the flag holds.
    ctl = subprocess.Popen([controller, "--config", good, "--num_layers=9",
                            "--trigger_balancedness=0.8"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ctl.stdout.readline()
        m = re.match(r"listening on port (\d+)", line)
        if not m:
            raise SystemExit("FAILED: controller did not start: %r %s" % (line, ctl.stderr.read()))
        out = subprocess.run([eplbctl, "status", "--controller", "127.0.0.1:" + m.group(1),
                              "--json"], capture_output=True, text=True, check=True).stdout
        st = json.loads(out)
        want = {"algorithm": "balanced", "layers_per_rollout": 2, "max_moves": 7,
                "trigger_balancedness": 0.8}
        for k, v in want.items():
            if st["policy"].get(k) != v:
                raise SystemExit("FAILED: policy %s = %r, want %r (%s)" % (k, st["policy"].get(k),
                                                                          v, st["policy"]))
        if st["layout"] != "E=16 R=8 W=4 S=1 layers=3":
            raise SystemExit("FAILED: layout %r" % st["layout"])
    finally:
        ctl.terminate()
        ctl.wait(timeout=20)

    cases = [
        (write("type.textproto", 'num_logical: "x"\n'), "type.textproto:1:14: Expected integer"),
        (write("field.textproto", "colour: 3\n"), 'no field named "colour"'),
        (write("algo.textproto", 'algorithm: "magic"\n'), 'algorithm "magic" is unknown'),
        (write("layout.textproto", "num_logical: 16 num_redundant: 7 ep_size: 4\n"),
         "not divisible"),
        (os.path.join(tmp, "missing.textproto"), "cannot read --config"),
    ]
    for path, want in cases:
        r = subprocess.run([controller, "--config", path, "--metrics="], capture_output=True,
                           text=True, timeout=20)
        if r.returncode != 2 or want not in r.stderr or r.stdout:
            raise SystemExit("FAILED: %s: rc %d, stderr %r, stdout %r (want %r)"
                             % (path, r.returncode, r.stderr, r.stdout, want))
    print("PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
