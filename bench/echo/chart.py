#!/usr/bin/env python3
"""SVG chart of the echo benchmark: server CPU time per request, per loop.

Hand-written SVG, no plotting library needed.  One panel per (transport,
message size); inside a panel one group of bars per server mode and one bar
per loop (the median over rounds), with a thin whisker spanning the fastest
and slowest round.  Lower is better.

    python3 bench/echo/chart.py bench/results/echo.json [-o echo.svg]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from xml.sax.saxutils import escape

PANEL_W, PANEL_H = 420, 260          # one panel, axes included
PLOT_LEFT, PLOT_TOP = 56, 34          # plot area offset inside a panel
PLOT_W, PLOT_H = PANEL_W - PLOT_LEFT - 14, PANEL_H - PLOT_TOP - 40
HEADER_H = 92                         # title, subtitle, legend
FIXED_COLOURS = {"asyncio": "#9e9e9e", "uvloop": "#3b75af"}
OTHER_COLOURS = ("#e4572e", "#2e9e5b", "#8e44ad", "#f2a541", "#17becf", "#c0392b")


def loop_colours(loops: list) -> dict:
    others = iter(OTHER_COLOURS * 4)
    return {spec: FIXED_COLOURS.get(spec) or next(others) for spec in loops}


def nice_step(top: float, ticks: int = 4) -> float:
    """A 1/2/2.5/5 x 10^k step so that `ticks` steps cover `top`."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    base = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * base:
            return factor * base
    return 10 * base


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _text(x, y, content, size=11, anchor="middle", weight="normal", extra=""):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" {extra}>{escape(str(content))}</text>')


def _round_spread(report: dict) -> dict:
    """(transport, mode, msize, loop) -> (min, max) CPU us/request over rounds."""
    spread = {}
    for run in report.get("runs", []):
        if "cpu_us_per_req" not in run:
            continue
        key = (run["transport"], run["mode"], run["msize"], run["loop"])
        low, high = spread.get(key, (math.inf, -math.inf))
        spread[key] = (min(low, run["cpu_us_per_req"]), max(high, run["cpu_us_per_req"]))
    return spread


def _panel(x0, y0, transport, msize, cells, loops, colours, spread) -> list:
    modes = [c["mode"] for c in cells]
    values = [s["cpu_us_per_req"] for c in cells for s in c["loops"].values()
              if s["cpu_us_per_req"] is not None]
    highs = [spread.get((transport, c["mode"], msize, spec), (0, 0))[1]
             for c in cells for spec in loops]
    highest = max(values + highs + [0]) * 1.1 or 1.0   # headroom for labels
    step = nice_step(highest)
    top = step * math.ceil(highest / step)
    px, py = x0 + PLOT_LEFT, y0 + PLOT_TOP

    def y_of(value):
        return py + PLOT_H - value / top * PLOT_H

    size = f"{msize // 1024} KiB" if msize % 1024 == 0 else f"{msize} B"
    out = [_text(px + PLOT_W / 2, y0 + 18, f"{transport}, {size} messages", 13, weight="bold")]
    tick = 0.0
    while tick <= top + 1e-9:
        y = y_of(tick)
        out.append(f'<line x1="{px}" y1="{y:.1f}" x2="{px + PLOT_W}" y2="{y:.1f}" '
                   f'stroke="#e0e0e0"/>')
        label = f"{tick:.0f}" if step >= 1 and step == int(step) else f"{tick:g}"
        out.append(_text(px - 6, y + 4, label, 10, anchor="end"))
        tick += step
    out.append(_text(x0 + 14, py + PLOT_H / 2, "server CPU µs / request", 10,
                     extra=f'transform="rotate(-90 {x0 + 14} {py + PLOT_H / 2:.1f})"'))

    group_w = PLOT_W / max(1, len(modes))
    bar_w = min(26.0, group_w * 0.8 / max(1, len(loops)))
    for g, cell in enumerate(cells):
        gx = px + g * group_w + (group_w - bar_w * len(loops)) / 2
        out.append(_text(px + (g + 0.5) * group_w, py + PLOT_H + 16, cell["mode"], 11))
        for b, spec in enumerate(loops):
            out.extend(_bar(gx + b * bar_w, bar_w, cell["loops"].get(spec, {}),
                            spread.get((transport, cell["mode"], msize, spec)),
                            colours[spec], y_of, py + PLOT_H))
    out.append(f'<line x1="{px}" y1="{py + PLOT_H}" x2="{px + PLOT_W}" y2="{py + PLOT_H}" '
               f'stroke="#555"/>')
    return out


def _bar(x, width, stats, spread, colour, y_of, baseline) -> list:
    value = stats.get("cpu_us_per_req")
    cx = x + width / 2
    if value is None:
        return [_text(cx, baseline - 4, "x", 11, extra='fill="#c0392b"')]
    y = y_of(value)
    out = [f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{width - 2:.1f}" '
           f'height="{baseline - y:.1f}" fill="{colour}"><title>{escape(_fmt(value))} µs/request'
           f'</title></rect>']
    if spread and spread[1] > spread[0]:
        out.append(f'<line x1="{cx:.1f}" y1="{y_of(spread[0]):.1f}" x2="{cx:.1f}" '
                   f'y2="{y_of(spread[1]):.1f}" stroke="#222" stroke-width="1"/>')
    label_y = min(y, y_of(spread[1]) if spread else y) - 4
    out.append(_text(cx, label_y, _fmt(value), 9, anchor="start",
                     extra=f'transform="rotate(-90 {cx:.1f} {label_y:.1f})" '
                           'dominant-baseline="middle"'))
    return out


def render_svg(report: dict) -> str:
    loops = report["settings"]["loops"]
    colours = loop_colours(loops)
    spread = _round_spread(report)
    panels = {}
    for cell in report["cells"]:
        panels.setdefault((cell["transport"], cell["msize"]), []).append(cell)
    transports = list(dict.fromkeys(t for t, _ in panels))
    sizes = sorted({s for _, s in panels})
    width = max(720, PANEL_W * len(sizes) + 20)
    height = HEADER_H + PANEL_H * len(transports) + 10

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    out.extend(_header(report, loops, colours, width))
    for row, transport in enumerate(transports):
        for col, msize in enumerate(sizes):
            cells = panels.get((transport, msize))
            if cells:
                out.extend(_panel(10 + col * PANEL_W, HEADER_H + row * PANEL_H,
                                  transport, msize, cells, loops, colours, spread))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _header(report, loops, colours, width) -> list:
    machine, settings = report["machine"], report["settings"]
    rounds = settings["rounds"]
    subtitle = (f"{machine.get('cpu_model', '?')}, {machine.get('nproc', '?')} CPUs, "
                f"Linux {machine.get('kernel', '?')}, Python {machine.get('python', '?')}, "
                f"uvloop {machine.get('uvloop', '-')}; median of {rounds} "
                f"round{'s' if rounds != 1 else ''} x {settings['duration']:g} s, "
                f"{settings['concurrency']} lock-step clients; whiskers: min–max")
    kind = "TLS echo" if settings.get("tls") else "Echo"
    out = [_text(width / 2, 24, f"{kind} server CPU time per request (µs, lower is better)",
                 16, weight="bold"),
           _text(width / 2, 44, subtitle, 11, extra='fill="#555"')]
    x = width / 2 - 110 * len(loops) / 2
    for spec in loops:
        out.append(f'<rect x="{x:.1f}" y="58" width="14" height="14" fill="{colours[spec]}"/>')
        out.append(_text(x + 20, 70, spec, 12, anchor="start"))
        x += 110
    return out


def write_svg(report: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_svg(report))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", help="result file written by run.py")
    parser.add_argument("-o", "--output", help="SVG path (default: JSON path with .svg)")
    args = parser.parse_args(argv)
    with open(args.json) as f:
        report = json.load(f)
    output = args.output or args.json.rsplit(".", 1)[0] + ".svg"
    write_svg(report, output)
    print(f"wrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
