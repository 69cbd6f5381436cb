#!/usr/bin/env python3
"""Draws scripts/bench.sh's results as an SVG chart: switchboard beside the Go hub.

    scripts/chart.py                                   # newest target/bench/results-*.jsonl
    scripts/chart.py target/bench/results-STAMP.jsonl  # one run of bench.sh
    scripts/chart.py docs/bench/summary-STAMP.txt      # the table bench.sh printed
    scripts/chart.py ... -o docs/bench/chart.svg       # where the SVG goes (default)

Reads either the JSON lines bench.sh writes (one line per scenario, server and
run: the median and spread are worked out here, as bench.sh's table does) or
the table it prints (summary-STAMP.txt, or the same text pasted from a doc),
for runs whose JSON lines are gone. Six panels, one per headline figure: each
bar is the median of the runs and its whisker the spread (min-max). Python's
standard library only.
"""

import argparse
import glob
import json
import math
import os
import re
import statistics
import sys
from xml.sax.saxutils import escape

SERVERS = ("switchboard", "go")
COLORS = {"switchboard": "#2b6cb0", "go": "#c05621", "switchboard-sse": "#63b3ed"}
LABELS = {"switchboard": "switchboard", "go": "Go hub", "switchboard-sse": "switchboard SSE"}


# ------------------------------------------------------------------ reading

def rss_per_conn(d):
    """As bench.sh: RSS once quiet (else the peak) over the base, per connection held."""
    held = d.get("held") or 0
    rss = d.get("server_rss_hold_kb") or d["server_rss_peak_kb"]
    return (rss - d["server_rss_base_kb"]) / held if held else None


# (scenario, figure) -> how to read it from one JSON line, as bench.sh does.
FROM_JSON = {
    ("fanout100", "delivered"): lambda d: d["saturation_delivered_per_sec"],
    ("fanout1000", "delivered"): lambda d: d["saturation_delivered_per_sec"],
    ("sse1000", "delivered"): lambda d: d["saturation_delivered_per_sec"],
    ("latency", "rate"): lambda d: d["rate_offered"],
    ("latency", "p99"): lambda d: d["latency_ms"]["p99"],
    ("idle5000", "rss_per_conn"): rss_per_conn,
    ("broadcast10k", "p99"): lambda d: d["latency_ms"]["p99"],
    ("broadcast10k", "rss_peak_mb"): lambda d: d["server_rss_peak_kb"] / 1024,
}

# The table's section rows (not indented) name the scenario of the rows under them.
SECTIONS = {
    "saturation rate (msg/s), 100 WS subs": "fanout100",
    "saturation rate (msg/s), 1000 WS subs": "fanout1000",
    "saturation rate (msg/s), 1000 SSE subs": "sse1000",
    "rate (msg/s) = half Go's 1000-sub saturation": "latency",
    "idle connections held (of 5000)": "idle5000",
    "10k WS clients: connected": "broadcast10k",
}
# (scenario, row title) -> figure.
FROM_TABLE = {
    ("fanout100", "delivered events/s at saturation"): "delivered",
    ("fanout1000", "delivered events/s at saturation"): "delivered",
    ("sse1000", "delivered events/s at saturation"): "delivered",
    ("latency", "rate (msg/s) = half Go's 1000-sub saturation"): "rate",
    ("latency", "p99 ms"): "p99",
    ("idle5000", "server RSS per connection, once quiet (kB)"): "rss_per_conn",
    ("idle5000", "server RSS per connection (kB)"): "rss_per_conn",
    ("broadcast10k", "p99 ms"): "p99",
    ("broadcast10k", "server RSS peak (MB)"): "rss_peak_mb",
}


def read_jsonl(path):
    """Figures as {(scenario, figure): {server: (median, min, max, runs)}}."""
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    figures = {}
    for (scenario, figure), get in FROM_JSON.items():
        for server in SERVERS:
            values = []
            for d in rows:
                if d.get("scenario") != scenario or d.get("server") != server:
                    continue
                try:
                    v = get(d)
                except (KeyError, TypeError, ZeroDivisionError):
                    v = None
                if v is not None:
                    values.append(float(v))
            if values:
                figures.setdefault((scenario, figure), {})[server] = (
                    statistics.median(values), min(values), max(values), len(values))
    runs = max((d.get("run", 1) for d in rows), default=0)
    machine = None
    summary = re.sub(r"results-(\w+)\.jsonl$", r"summary-\1.txt", path)
    if summary != path and os.path.exists(summary):
        machine = read_table(summary)[1]
    return figures, machine, runs


CELL = re.compile(r"^([\d.]+)(?: \(([\d.]+)-([\d.]+)\))?$")


def parse_cell(text):
    m = CELL.match(text.strip())
    if not m:
        return None
    med = float(m.group(1))
    lo = float(m.group(2)) if m.group(2) else med
    hi = float(m.group(3)) if m.group(3) else med
    return med, lo, hi


def read_table(path):
    """The same figures from the table bench.sh prints."""
    figures, machine, runs, scenario = {}, None, 0, None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("machine: "):
                machine = line[len("machine: "):].split("; server pinned")[0]
                continue
            m = re.match(r"median of (\d+) run", line)
            if m:
                runs = int(m.group(1))
                continue
            cols = re.split(r"\s{2,}", line.strip())
            if len(cols) < 3:
                continue
            title = cols[0]
            if not line.startswith(" "):
                scenario = SECTIONS.get(title, scenario if title == "figure" else None)
            figure = FROM_TABLE.get((scenario, title))
            if figure is None:
                continue
            for server, text in zip(SERVERS, cols[1:3]):
                cell = parse_cell(text)
                if cell:
                    figures.setdefault((scenario, figure), {})[server] = cell + (runs,)
            ratio = re.match(r"^([\d.]+)x$", cols[3]) if len(cols) > 3 else None
            if ratio:
                figures.setdefault((scenario, figure), {})["ratio"] = float(ratio.group(1))
    return figures, machine, runs


# ------------------------------------------------------------------ drawing

PANELS = [
    # title, subtitle, bars [(scenario, figure, series)], unit, scale, better
    ("Fan-out to 100 subscribers", "WebSocket, delivered events/s at saturation",
     [("fanout100", "delivered", "switchboard"), ("fanout100", "delivered", "go")],
     "M/s", 1e6, "higher"),
    ("Fan-out to 1000 subscribers", "delivered events/s at saturation",
     [("fanout1000", "delivered", "switchboard"), ("fanout1000", "delivered", "go"),
      ("sse1000", "delivered", "switchboard-sse")],
     "M/s", 1e6, "higher"),
    ("Latency, 1000 subscribers", "p99 at {rate} msg/s (half the Go hub's top rate)",
     [("latency", "p99", "switchboard"), ("latency", "p99", "go")],
     "ms", 1, "lower"),
    ("Memory per idle connection", "server RSS per connection, 5000 held",
     [("idle5000", "rss_per_conn", "switchboard"), ("idle5000", "rss_per_conn", "go")],
     "kB", 1, "lower"),
    ("10,000 clients in one room", "p99 latency of a 10 msg/s broadcast",
     [("broadcast10k", "p99", "switchboard"), ("broadcast10k", "p99", "go")],
     "ms", 1, "lower"),
    ("10,000 clients in one room", "server RSS peak",
     [("broadcast10k", "rss_peak_mb", "switchboard"), ("broadcast10k", "rss_peak_mb", "go")],
     "MB", 1, "lower"),
]

PANEL_W, PANEL_H, TOP, LEFT = 300, 250, 92, 20
W = LEFT * 2 + 3 * PANEL_W - 10


def nice_axis(value):
    """A round axis top at or above `value`, and its step: 3 to 5 steps of 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1.0, 0.25
    magnitude = 10 ** math.floor(math.log10(value / 4))
    for mult in (1, 2, 5, 10):
        step = mult * magnitude
        if value / step <= 5:
            break
    return math.ceil(value / step) * step, step


def fmt(v):
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.2f}".rstrip("0").rstrip(".")


def text(x, y, s, size=12, anchor="start", weight="normal", fill="#1a202c"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}">{escape(s)}</text>')


def panel(x0, y0, spec, figures):
    title, subtitle, bars, unit, scale, better = spec
    out = [f'<rect x="{x0}" y="{y0}" width="{PANEL_W - 10}" height="{PANEL_H - 10}" '
           f'fill="#ffffff" stroke="#e2e8f0"/>']
    rate = figures.get(("latency", "rate"), {}).get("switchboard")
    subtitle = subtitle.format(rate=fmt(rate[0]) if rate else "?")
    out.append(text(x0 + 10, y0 + 20, title, 13, weight="bold"))
    out.append(text(x0 + 10, y0 + 36, f"{subtitle}, {unit}", 11, fill="#4a5568"))
    out.append(text(x0 + PANEL_W - 20, y0 + PANEL_H - 20, f"{better} is better", 10, "end", fill="#718096"))
    values = []
    for scenario, figure, series in bars:
        server = "go" if series == "go" else "switchboard"
        cell = figures.get((scenario, figure), {}).get(server)
        values.append((series, None if cell is None else tuple(v / scale for v in cell[:3])))
    highest = max((v[2] for _, v in values if v), default=0)
    top, step = nice_axis(highest * 1.08)
    plot_x, plot_y, plot_w, plot_h = x0 + 48, y0 + 52, PANEL_W - 78, PANEL_H - 110
    ticks = int(round(top / step))
    for i in range(ticks + 1):
        v = i * step
        y = plot_y + plot_h - plot_h * v / top
        out.append(f'<line x1="{plot_x}" y1="{y:.1f}" x2="{plot_x + plot_w}" y2="{y:.1f}" '
                   f'stroke="{"#a0aec0" if i == 0 else "#edf2f7"}"/>')
        out.append(text(plot_x - 6, y + 4, fmt(v), 10, "end", fill="#718096"))
    slot = plot_w / len(values)
    bar_w = min(56, slot * 0.6)
    for i, (series, v) in enumerate(values):
        cx = plot_x + slot * (i + 0.5)
        out.append(text(cx, plot_y + plot_h + 16, LABELS[series], 11, "middle"))
        if v is None:
            out.append(text(cx, plot_y + plot_h - 6, "not run", 10, "middle", fill="#a0aec0"))
            continue
        med, lo, hi = v
        h = plot_h * med / top
        out.append(f'<rect x="{cx - bar_w / 2:.1f}" y="{plot_y + plot_h - h:.1f}" width="{bar_w:.1f}" '
                   f'height="{h:.1f}" fill="{COLORS[series]}"/>')
        if hi > lo:
            y_lo, y_hi = (plot_y + plot_h - plot_h * lo / top, plot_y + plot_h - plot_h * hi / top)
            out.append(f'<line x1="{cx:.1f}" y1="{y_lo:.1f}" x2="{cx:.1f}" y2="{y_hi:.1f}" stroke="#1a202c"/>')
            for yy in (y_lo, y_hi):
                out.append(f'<line x1="{cx - 6:.1f}" y1="{yy:.1f}" x2="{cx + 6:.1f}" y2="{yy:.1f}" stroke="#1a202c"/>')
        label_y = plot_y + plot_h - plot_h * max(med, hi) / top - 5
        out.append(text(cx + (10 if hi > lo else 0), label_y, fmt(med), 11,
                        "start" if hi > lo else "middle", "bold"))
    sb = dict(values).get("switchboard")
    go = dict(values).get("go")
    scenario, figure, _ = bars[0]
    ratio = figures.get((scenario, figure), {}).get("ratio")
    if ratio is None and sb and go and go[0]:
        ratio = sb[0] / go[0]  # from the medians; a table gives its own, from unrounded ones
    if ratio is not None:
        out.append(text(x0 + 10, y0 + PANEL_H - 20, f"switchboard / Go hub: {ratio:.2f}x", 11, fill="#2d3748"))
    return out


def draw(figures, machine, runs, source, stamp):
    rows = (len(PANELS) + 2) // 3
    height = TOP + rows * PANEL_H + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
           f'viewBox="0 0 {W} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
           f'<rect width="{W}" height="{height}" fill="#f7fafc"/>',
           text(LEFT, 28, "switchboard beside the Go hub it follows (gorilla/websocket chat)", 17, weight="bold"),
           text(LEFT, 48, f"scripts/bench.sh{', ' + stamp if stamp else ''}: bars are the median of "
                f"{runs or '?'} runs, whiskers the spread (min-max); 64-byte messages", 12, fill="#4a5568"),
           text(LEFT, 66, f"{machine or 'machine not recorded'}; server pinned to CPU 0, load generator to CPU 1",
                12, fill="#4a5568"),
           text(LEFT, 82, f"drawn by scripts/chart.py from {source}", 11, fill="#718096")]
    x = LEFT
    for series, color in COLORS.items():
        out.append(f'<rect x="{W - 400 + (x - LEFT)}" y="72" width="12" height="12" fill="{color}"/>')
        out.append(text(W - 384 + (x - LEFT), 82, LABELS[series], 11))
        x += 120
    for i, spec in enumerate(PANELS):
        out += panel(LEFT + (i % 3) * PANEL_W, TOP + (i // 3) * PANEL_H, spec, figures)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", nargs="?", help="results-STAMP.jsonl or summary-STAMP.txt "
                        "(default: the newest target/bench/results-*.jsonl)")
    parser.add_argument("-o", "--output", default="docs/bench/chart.svg")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = args.source
    if source is None:
        found = sorted(glob.glob(os.path.join(root, "target", "bench", "results-*.jsonl")))
        if not found:
            sys.exit("chart.py: no target/bench/results-*.jsonl; run scripts/bench.sh, or name a summary table")
        source = found[-1]
    if source.endswith(".jsonl"):
        figures, machine, runs = read_jsonl(source)
    else:
        figures, machine, runs = read_table(source)
    if not figures:
        sys.exit(f"chart.py: no figures found in {source}")
    m = re.search(r"(\d{8}T\d{6}Z)", os.path.basename(source))
    stamp = None
    if m:
        s = m.group(1)
        stamp = f"{s[0:4]}-{s[4:6]}-{s[6:8]} {s[9:11]}:{s[11:13]} UTC"
    full = os.path.abspath(source)
    shown = os.path.relpath(full, root) if full.startswith(root + os.sep) else source
    svg = draw(figures, machine, runs, shown, stamp)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(svg)
    print(f"chart.py: {args.output} from {shown}")


if __name__ == "__main__":
    main()
