#!/usr/bin/env python3
"""Draws bench/curve.sh's points as SVG with the standard library only.

usage: plot_svg.py CURVE.tsv OUT_DIR "caption"
Writes OUT_DIR/scaling-connections.svg and OUT_DIR/scaling-payload.svg (two
panels each: throughput, and p99 latency, both on log scales, ncghl against
the peer) and OUT_DIR/scaling-curve.md (the same numbers as tables).
"""
import csv
import math
import sys
from xml.sax.saxutils import escape

COLOURS = {"ncghl": "#1f6feb", "peer": "#d1242f"}
PANEL_W, PANEL_H = 420, 300
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 70, 20, 40, 50


def load(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def log_ticks(lo, hi):
    """Ticks at 1, 2, 5 x 10^k covering [lo, hi]."""
    ticks = []
    k = math.floor(math.log10(lo))
    while 10 ** k <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10 ** k
            if lo / 1.0001 <= v <= hi * 1.0001:
                ticks.append(v)
        k += 1
    return ticks


def fmt(v):
    if v >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def panel(x0, y0, title, xlabel, ylabel, series, xs_all):
    """One log-log panel; series = {system: [(x, y), ...]}."""
    out = []
    w = PANEL_W - MARGIN_L - MARGIN_R
    h = PANEL_H - MARGIN_T - MARGIN_B
    ys = [y for pts in series.values() for _, y in pts if y and y > 0]
    if not ys:
        ys = [1]
    ylo = 10 ** math.floor(math.log10(min(ys)))
    yhi = 10 ** math.ceil(math.log10(max(ys)))
    if yhi <= ylo:
        yhi = ylo * 10
    xlo, xhi = min(xs_all), max(xs_all)
    if xhi <= xlo:
        xhi = xlo * 2

    def px(x):
        return x0 + MARGIN_L + w * (math.log(x) - math.log(xlo)) / (math.log(xhi) - math.log(xlo))

    def py(y):
        return y0 + MARGIN_T + h - h * (math.log(y) - math.log(ylo)) / (math.log(yhi) - math.log(ylo))

    out.append(f'<text x="{x0 + PANEL_W / 2}" y="{y0 + 22}" text-anchor="middle" font-size="15" '
               f'font-weight="bold">{escape(title)}</text>')
    out.append(f'<rect x="{x0 + MARGIN_L}" y="{y0 + MARGIN_T}" width="{w}" height="{h}" '
               'fill="none" stroke="#444"/>')
    for t in log_ticks(ylo, yhi):
        y = py(t)
        out.append(f'<line x1="{x0 + MARGIN_L}" y1="{y:.1f}" x2="{x0 + MARGIN_L + w}" y2="{y:.1f}" '
                   'stroke="#ddd"/>')
        out.append(f'<text x="{x0 + MARGIN_L - 6}" y="{y + 4:.1f}" text-anchor="end" '
                   f'font-size="11">{fmt(t)}</text>')
    for t in xs_all:
        x = px(t)
        out.append(f'<line x1="{x:.1f}" y1="{y0 + MARGIN_T}" x2="{x:.1f}" y2="{y0 + MARGIN_T + h}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{y0 + MARGIN_T + h + 16}" text-anchor="middle" '
                   f'font-size="11">{fmt(t)}</text>')
    out.append(f'<text x="{x0 + MARGIN_L + w / 2}" y="{y0 + PANEL_H - 8}" text-anchor="middle" '
               f'font-size="12">{escape(xlabel)}</text>')
    cy = y0 + MARGIN_T + h / 2
    out.append(f'<text x="{x0 + 16}" y="{cy}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 {x0 + 16} {cy})">{escape(ylabel)}</text>')
    for system, pts in series.items():
        pts = [(x, y) for x, y in pts if y and y > 0]
        if not pts:
            continue
        c = COLOURS.get(system, "#333")
        path = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for i, (x, y) in enumerate(pts))
        out.append(f'<path d="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{c}">'
                       f'<title>{escape(system)}: {fmt(x)} → {y:g}</title></circle>')
    return out


def figure(rows, series_name, xlabel, title, caption):
    systems = [s for s in ("ncghl", "peer") if any(r["system"] == s for r in rows)]
    sel = [r for r in rows if r["series"] == series_name]
    xs = sorted({num(r["x"]) for r in sel if num(r["x"])})
    thr, p99 = {}, {}
    for s in systems:
        pts = sorted((num(r["x"]), r) for r in sel if r["system"] == s and num(r["x"]))
        thr[s] = [(x, num(r["rps"])) for x, r in pts]
        p99[s] = [(x, num(r["p99"])) for x, r in pts]
    width, height = 2 * PANEL_W, PANEL_H + 70
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="16">{escape(title)}</text>']
    out += panel(0, 24, "throughput", xlabel, "requests/s (log)", thr, xs or [1])
    out += panel(PANEL_W, 24, "p99 latency", xlabel, "ms (log)", p99, xs or [1])
    lx = 80
    for s in systems:
        out.append(f'<rect x="{lx}" y="{height - 26}" width="14" height="4" fill="{COLOURS.get(s, "#333")}"/>')
        out.append(f'<text x="{lx + 20}" y="{height - 20}" font-size="12">{escape(s)}</text>')
        lx += 90
    out.append(f'<text x="{width - 10}" y="{height - 20}" text-anchor="end" font-size="10" '
               f'fill="#666">{escape(caption)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def table(rows, series_name, xname):
    lines = [f"| system | {xname} | wrk -c | body bytes | req/s | p50 ms | p99 ms | wrk errors | answers "
             "| outcome |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["series"] != series_name:
            continue
        lines.append(f"| {r['system']} | {r['x']} | {r['conns']} | {r['body']} | {r['rps']} | {r['p50']} | "
                     f"{r['p99']} | {r['errors']} | {r['statuses']} | {r['outcome']} |")
    return "\n".join(lines)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    rows = load(sys.argv[1])
    out, caption = sys.argv[2], sys.argv[3]
    with open(f"{out}/scaling-connections.svg", "w") as f:
        f.write(figure(rows, "conns", "wrk connections (log)",
                       "Full path (answered after delivery) against connections", caption))
    with open(f"{out}/scaling-payload.svg", "w") as f:
        f.write(figure(rows, "payload", "request body, KiB (log)",
                       "Full path against body size (32 connections)", caption))
    with open(f"{out}/scaling-curve.md", "w") as f:
        f.write("# Scaling curve\n\n"
                "Written by `bench/curve.sh` (do not edit by hand): the full path (answered after "
                "delivery to a fake GHL that answers at once) for ncghl and the peer, each server on "
                "CPU 0, wrk and the fakes on CPU 1, every request a new person (unique e-mail and "
                "phone). Plots: [connections](scaling-connections.svg), "
                "[body size](scaling-payload.svg).\n\n"
                f"Run: {caption}. Taken on a machine shared with other engineers' tests: read the "
                "shape, not the third digit. Each point is the better of its runs (most requests/s). "
                "`wrk errors` are connections wrk gave up on (10 s time-out, or reset).\n\n"
                "## Against connections (body ~260 bytes)\n\n" + table(rows, "conns", "point") +
                "\n\n## Against body size (32 connections)\n\n" + table(rows, "payload", "KiB") + "\n")


if __name__ == "__main__":
    main()
