#!/usr/bin/env python3
"""Medians of scenario g's publish cases over bench/run output directories, per revision.

    python3 medians.py base=DIR1,DIR2,... final=DIR3,DIR4,...

Each directory is one `bench/run --only g --cases '^publish' --reps 1` run (herald and nchan).
Prints, per revision: publishes/s of herald through Redis, of nchan through Redis (the same
run), their ratio, CPU per publish of node 1, node 2 and Redis, Redis commands per publish,
and single-node herald (memory engine) publishes/s; medians with min-max.
"""
import json
import os
import statistics
import sys


def rows(d):
    with open(os.path.join(d, "results.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def one_run(d):
    m = {}
    rs = rows(d)
    published = {}
    for r in rs:
        key = (r["case"], r["server"])
        if r.get("phase") == "step":
            n = published[key] = r["published"]
            m[key + ("publishes/s",)] = r["publish_per_s"]
            m[key + ("load (1 min) before",)] = float(str(r.get("load", "nan")).split()[0])
            m[key + ("node 2 CPU us/publish",)] = r["server_cpu_s"] * 1e6 / n
            w = r.get("watch_cpu_s") or {}
            if "node1" in w:
                m[key + ("node 1 CPU us/publish",)] = w["node1"] * 1e6 / n
    for r in rs:
        key = (r["case"], r["server"])
        if r.get("phase") == "redis" and key in published:
            m[key + ("Redis CPU us/publish (INFO cpu)",)] = r["used_cpu_s"] * 1e6 / published[key]
            m[key + ("Redis commands/publish",)] = r["commands"] / published[key]
    h, c = m.get(("publish", "herald", "publishes/s")), m.get(("publish", "nchan", "publishes/s"))
    if h and c:
        m[("publish", "herald / nchan", "publishes/s ratio")] = h / c
    return m


def main():
    revs = [(a.split("=", 1)[0], a.split("=", 1)[1].split(",")) for a in sys.argv[1:]]
    per = {name: [one_run(d) for d in dirs] for name, dirs in revs}
    keys = sorted({k for runs in per.values() for m in runs for k in m})
    print("| case | server | metric | " + " | ".join(f"{n} median (min–max)" for n, _ in revs) + " |")
    print("|---|---|---|" + "---|" * len(revs))
    for k in keys:
        cells = []
        for name, _ in revs:
            v = [m[k] for m in per[name] if k in m and m[k] is not None]
            if not v:
                cells.append("–")
                continue
            fmt = (lambda x: f"{x:,.0f}") if max(v) >= 100 else (lambda x: f"{x:.2f}")
            cells.append(f"{fmt(statistics.median(v))} ({fmt(min(v))}–{fmt(max(v))})")
        print(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(cells) + " |")


main()
