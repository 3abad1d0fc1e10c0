#!/usr/bin/env python3
"""Writes the demo's self-contained HTML report (inline SVG, no scripts, no network).

    report.py DATA.json OUT.html

DATA.json: {"title": str, "duration": seconds,
            "samples": [{"t": s, "balancedness": b, "version": v}, ...],
            "gpu_before": [[load per rank] per layer], "gpu_after": [[...]],
            "replicas": [[replicas per expert] per layer], "summary": {...}}
Charts (by element id): "balancedness" (line over time, dashed rollout markers),
"heatmap-before" and "heatmap-after" (layers x ranks, GPU load / layer mean), "replicas"
(layers x experts, replicas per expert).
"""
import html
import json
import sys


def line_chart(samples, duration, w=760, h=300):
    span = max([1.0, duration] + [s["t"] for s in samples])

    def x(t):
        return 40 + (w - 60) * t / span

    def y(b):
        return h - 30 - (h - 60) * b

    pts = " ".join("%.1f,%.1f" % (x(s["t"]), y(s["balancedness"])) for s in samples)
    marks, prev = [], None
    for s in samples:
        if prev is not None and s["version"] != prev:
            marks.append('<line class="rollout" x1="%.1f" x2="%.1f" y1="20" y2="%d" stroke="#c62828" '
                         'stroke-dasharray="4 3"><title>map v%d</title></line>' % (
                             x(s["t"]), x(s["t"]), h - 30, s["version"]))
        prev = s["version"]
    ticks = "".join('<text x="5" y="%.1f" font-size="11">%.1f</text>' % (y(b) + 4, b)
                    for b in (0.0, 0.5, 1.0))
    return ('<svg id="balancedness" width="%d" height="%d" xmlns="http://www.w3.org/2000/svg">'
            '<rect x="40" y="20" width="%d" height="%d" fill="none" stroke="#999"/>%s%s'
            '<polyline fill="none" stroke="#1565c0" stroke-width="2" points="%s"/>'
            '<text x="%d" y="%d" font-size="11">seconds</text></svg>' % (
                w, h, w - 60, h - 50, ticks, "".join(marks), pts, w - 60, h - 8))


def heatmap(elem_id, rows, label, cell=18, normalise=True):
    if not rows:
        return '<svg id="%s" width="10" height="10"></svg>' % elem_id
    cols = max(len(r) for r in rows)
    w, h = 60 + cols * cell, 20 + len(rows) * cell
    out = ['<svg id="%s" width="%d" height="%d" xmlns="http://www.w3.org/2000/svg">' % (elem_id, w, h)]
    vmax = max(max(r) for r in rows) or 1
    for i, r in enumerate(rows):
        mean = (sum(r) / len(r)) or 1
        out.append('<text x="2" y="%d" font-size="%d">L%d</text>' % (
            20 + i * cell + cell - 4, min(10, cell - 2), i))
        for j, v in enumerate(r):
            # Load: value / layer mean (1.0 = perfectly balanced, red above); count: value / max.
            f = min(1.0, (v / mean) / 2.0) if normalise else v / vmax
            red, blue = int(255 * f), int(255 * (1 - f))
            out.append('<rect class="cell" x="%d" y="%d" width="%d" height="%d" fill="rgb(%d,80,%d)">'
                       '<title>%s %d: %.1f</title></rect>' % (
                           60 + j * cell, 20 + i * cell, cell - 1, cell - 1, red, blue, label, j, v))
    out.append("</svg>")
    return "".join(out)


def main(argv):
    data = json.load(open(argv[1]))
    body = [
        "<h1>%s</h1>" % html.escape(data.get("title", "EPLB demo")),
        "<h2>Balancedness over time</h2><p>Mean over layers of mean/max GPU load; dashed lines are "
        "committed rollouts.</p>",
        line_chart(data["samples"], data.get("duration", 60)),
        "<h2>GPU load per layer and rank, before the first rollout</h2>"
        "<p>Colour: load / layer mean (blue below, red above).</p>",
        heatmap("heatmap-before", data.get("gpu_before", []), "rank"),
        "<h2>GPU load per layer and rank, at the end</h2>",
        heatmap("heatmap-after", data.get("gpu_after", []), "rank"),
        "<h2>Replicas per expert (committed map)</h2>",
        heatmap("replicas", data.get("replicas", []), "expert", cell=11, normalise=False),
        "<h2>Summary</h2><pre>%s</pre>" % html.escape(json.dumps(data.get("summary", {}), indent=1)),
    ]
    page = ('<!doctype html><html><head><meta charset="utf-8"><title>EPLB demo</title></head>'
            '<body style="font-family:sans-serif">%s</body></html>' % "\n".join(body))
    open(argv[2], "w").write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
