#!/usr/bin/env python3
"""The demo's HTML report, rendered by headless Chromium (Debian's `chromium`): the DOM holds
the four charts with the right number of marks, and the screenshot shows them drawn (the
balancedness line's blue and the heatmaps' reds and blues are on the page).

Usage (from Bazel): report_render_test.py tools/report.py
"""
import json
import os
import subprocess
import sys
import tempfile

from PIL import Image

CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"]


def main(argv):
    tmp = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
    env = dict(os.environ, HOME=tmp)
    layers, ranks, experts = 4, 8, 16
    data = {
        "title": "render test", "duration": 20,
        "samples": [{"t": t, "balancedness": 0.4 if t < 5 else 0.9, "version": 1 if t < 5 else 2}
                    for t in range(0, 21)],
        "gpu_before": [[100 * (r + 1) for r in range(ranks)] for _ in range(layers)],
        "gpu_after": [[400 + (r % 2) for r in range(ranks)] for _ in range(layers)],
        "replicas": [[1 + (e == 0) * 8 for e in range(experts)] for _ in range(layers)],
        "summary": {"balancedness_before": 0.4},
    }
    src = os.path.join(tmp, "data.json")
    page = os.path.join(tmp, "report.html")
    json.dump(data, open(src, "w"))
    subprocess.run([sys.executable, argv[1], src, page], check=True)
    dom = subprocess.run(CHROMIUM + ["--user-data-dir=" + os.path.join(tmp, "u1"), "--dump-dom",
                                     "file://" + page], capture_output=True, text=True, env=env,
                         timeout=60).stdout
    for chart in ("balancedness", "heatmap-before", "heatmap-after", "replicas"):
        assert 'id="%s"' % chart in dom, "chart %s not in the rendered DOM" % chart
    assert dom.count('class="cell"') == 2 * layers * ranks + layers * experts, "heatmap cells"
    assert dom.count('class="rollout"') == 1, "one rollout marker"
    assert "<polyline" in dom and 'points=""' not in dom, "balancedness line"
    shot = os.path.join(tmp, "shot.png")
    subprocess.run(CHROMIUM + ["--user-data-dir=" + os.path.join(tmp, "u2"),
                               "--window-size=820,1400", "--screenshot=" + shot,
                               "file://" + page], capture_output=True, env=env, timeout=60)
    img = Image.open(shot).convert("RGB")
    colours = set(img.getdata())
    blue_line = any(abs(r - 0x15) < 30 and abs(g - 0x65) < 30 and abs(b - 0xc0) < 30
                    for r, g, b in colours)
    red_cells = any(r > 200 and g < 120 and b < 80 for r, g, b in colours)
    blue_cells = any(r < 60 and g < 120 and b > 200 for r, g, b in colours)
    assert blue_line, "the balancedness line is not drawn"
    assert red_cells and blue_cells, "heatmap colours are not drawn"
    print("rendered: %d colours" % len(colours))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
