#!/usr/bin/env python3
"""Compare herald revisions across bench/run output directories (scenarios a, b, c).

    python3 bench/compare.py before=DIR1,DIR3,DIR5 after=DIR2,DIR4,DIR6

Each NAME=DIR,... is one revision; each repetition in its directories is one run (e.g. several
`bench/run --reps 1 --no-nchan --herald BIN` runs, alternating the revisions so
that slow changes in the machine's load hit both). Prints, per case, the median
over all of a revision's runs and the ratio of the last revision to the first.
herald's lines only.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summarize import achieved, fmt, med, saturation  # noqa: E402


def runs(dirs):
    """[(dir, rows of herald in one repetition)] for one revision"""
    out = []
    for d in dirs:
        with open(os.path.join(d, "results.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        for rep in sorted({r["rep"] for r in rows}):
            out.append((d, [r for r in rows if r["server"] == "herald" and r["rep"] == rep]))
    return out


def metrics(rows):
    """{(case, metric): value} of one run"""
    m = {}
    steps = {}
    for r in rows:
        if r["scenario"] == "a" and r["phase"] == "connect":
            m[(r["case"], "B/sub")] = r["server_rss_per_sub_bytes"]
            m[(r["case"], "connects/s")] = r["connect_per_s"]
        elif r["scenario"] == "b" and r["phase"] == "step":
            steps.setdefault(r["case"], []).append(r)
        elif r["scenario"] == "c" and r["phase"] == "step":
            m[(r["case"], "publishes/s")] = r["publish_per_s"]
            m[(r["case"], "CPU µs/publish")] = r["server_cpu_us_per_publish"]
    for c, st in steps.items():
        ll, lli, _, ordered = saturation(st, 1000)
        if ll:
            top = max(ordered[:lli + 1], key=lambda r: r["deliveries_per_s"])
            m[(c, "lossless best deliveries/s")] = top["deliveries_per_s"]
            m[(c, "its p99 ms")] = top["latency_ms"]["p99"]
        best, bi, _, ordered = saturation(st, 100)
        m[(c, "p99≤100ms msg/s")] = achieved(best) if best else 0
        # latency at the ladder's lowest rate (where the core has room)
        m[(c, "p50 ms, lowest rate")] = ordered[0]["latency_ms"]["p50"]
        m[(c, "p99 ms, lowest rate")] = ordered[0]["latency_ms"]["p99"]
        m[(c, "CPU µs/delivery, lowest rate")] = ordered[0]["server_cpu_us_per_delivery"]
        if bi is not None and bi >= 2:
            m[(c, "p99 ms at half")] = ordered[bi - 2]["latency_ms"]["p99"]
    return m


def main(args):
    revs = []
    for a in args:
        name, _, dirs = a.partition("=")
        if not dirs:
            sys.exit(__doc__)
        revs.append((name, runs(dirs.split(","))))
    per = {name: [metrics(rows) for _, rows in rr] for name, rr in revs}
    keys = []
    for name, ms in per.items():
        for m in ms:
            for k in m:
                if k not in keys:
                    keys.append(k)
    names = [n for n, _ in revs]
    head = ["case", "metric"] + [f"{n} median (min–max)" for n in names] + [f"{names[-1]} / {names[0]}"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for c, metric in keys:
        cells, meds = [], []
        for n in names:
            xs = [m[(c, metric)] for m in per[n] if (c, metric) in m]
            meds.append(med(xs))
            cells.append(f"{fmt(med(xs))} ({fmt(min(xs))}–{fmt(max(xs))}, n={len(xs)})" if xs else "–")
        r = f"{meds[-1] / meds[0]:.3f}" if meds[0] and meds[-1] is not None else "–"
        print(f"| {c} | {metric} | " + " | ".join(cells) + f" | {r} |")
    for name, rr in revs:
        loads = []
        for _, rows in rr:
            loads += [float(r["load"].split()[0]) for r in rows if r.get("load") and r["phase"] == "connect"]
        if loads:
            print(f"\n{name}: load average (1 min) before its cases: {min(loads):.2f}–{max(loads):.2f}, "
                  f"median {med(loads):.2f}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1:])
