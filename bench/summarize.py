#!/usr/bin/env python3
"""Summarize a bench/run output directory: medians over repetitions, herald/nchan
ratios, per scenario; writes DIR/summary.md (also printed) and, when gnuplot is
installed, DIR/transport.svg and DIR/fanout.svg from the result lines.

    python3 bench/summarize.py DIR
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict

SERVERS = ("herald", "nchan")


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=3):
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def ratio(h, n):
    if h is None or n is None or n == 0:
        return "–"
    return f"{h / n:.2f}"


def load(d):
    rows = []
    with open(os.path.join(d, "results.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    return "\n".join(out) + "\n"


def by(rows, *keys):
    g = defaultdict(list)
    for r in rows:
        g[tuple(r[k] for k in keys)].append(r)
    return g


def case_order(rows, sc):
    seen = []
    for r in rows:
        if r["scenario"] == sc and r["case"] not in seen:
            seen.append(r["case"])
    return seen


def servers_in(rows):
    return [s for s in SERVERS if any(r["server"] == s for r in rows)]


def achieved(step):
    """messages/s the publisher really sent in a step (a server that answers
    publishes late holds the open-loop publisher back once its pipelines are full)"""
    return step["published"] / step["step_seconds"]


def saturation(steps, max_p99):
    """steps of one run, in order: (highest step that is clean with p99 <= max_p99
    and follows only such steps, its index, the first step that is not)."""
    steps = sorted(steps, key=lambda r: r["step"])
    best, best_i, fail = None, None, None
    for i, s in enumerate(steps):
        if s["clean"] and s["latency_ms"]["p99"] <= max_p99:
            best, best_i = s, i
        else:
            fail = s
            break
    return best, best_i, fail, steps


def load_range(rs):
    """min–max of the 1-minute load average read before each run"""
    xs = sorted(float(r["load"].split()[0]) for r in rs if r.get("load"))
    return f"{xs[0]:.2f}–{xs[-1]:.2f}" if xs else "–"


def watch_us(step, name, per):
    """CPU µs of a watched process (node 1, Redis) per unit in one step"""
    w = step.get("watch_cpu_s")
    if not w or name not in w or not per:
        return None
    return w[name] * 1e6 / per


def summarize_g(rows, gs, reps, srv, two):
    """scenario g: two nodes sharing one Redis (cases ending in -single: one node)"""
    out = ["\n## (g) Two nodes sharing one Redis (publish on node 1, subscribe on node 2)\n"]
    red = by([r for r in rows if r["scenario"] == "g" and r["phase"] == "redis"], "case", "server")
    g = by(gs, "case", "server")
    cases = case_order(rows, "g")

    out.append("\n### Publish throughput (4 topics, 1 subscriber each on node 2; 4 connections × 64 "
               "pipelined)\n")
    head = ["case", "server", "publishes/s", "lost", "reordered", "errors", "node 1 CPU µs/publish", "node 2 CPU µs/publish",
            "Redis CPU µs/publish (step)", "Redis CPU µs/publish (INFO cpu, whole case)", "Redis commands/publish",
            "client CPU", "load before"]
    body = []
    for c in [c for c in cases if c.startswith("publish")]:
        m = {}
        for s in srv:
            rs = g.get((c, s), [])
            if not rs:
                continue
            m[s] = med([r["publish_per_s"] for r in rs])
            rr = red.get((c, s), [])
            pub = {(r["rep"]): r["published"] for r in rs}
            body.append([c, s, fmt(m[s]), str(sum(max(r["lost"], 0) for r in rs)),
                         str(sum(r["reordered"] for r in rs)), str(sum(r["publish_errors"] for r in rs)),
                         fmt(med([watch_us(r, "node1", r["published"]) for r in rs])),
                         fmt(med([r["server_cpu_us_per_publish"] for r in rs])),
                         fmt(med([watch_us(r, "redis", r["published"]) for r in rs])),
                         fmt(med([x["used_cpu_s"] * 1e6 / pub[x["rep"]] for x in rr if pub.get(x["rep"])])),
                         fmt(med([x["commands"] / pub[x["rep"]] for x in rr if pub.get(x["rep"])])),
                         fmt(med([r["client_cpu_frac"] for r in rs]), 2), load_range(rs)])
        if two and "herald" in m and "nchan" in m:
            body.append([c, "**herald/nchan**", f"**{ratio(m['herald'], m['nchan'])}**"] + [""] * 10)
    out.append(table(head, body))

    out.append("\n### Fan-out across nodes: best lossless step of the ladder\n")
    head = ["case", "server", "lossless best deliveries/s", "its msg/s", "its p50 / p99 ms", "node 2 CPU µs/delivery",
            "node 1 CPU µs/msg", "Redis CPU µs/msg", "p99 ≤ 100 ms: msg/s", "first failing step",
            "no loss, reordering allowed: best deliveries/s (msg/s)", "client CPU", "load before"]
    body = []
    gr = by(gs, "case", "server", "rep")
    for c in [c for c in cases if c.startswith("fan")]:
        ll_med = {}
        for s in srv:
            dps, rate, p50, p99, cpu, n1, rd, sats, fails, ccpu, allrs = [], [], [], [], [], [], [], [], [], [], []
            nl_dps, nl_rate = [], []
            for rep in reps:
                steps = gr.get((c, s, rep))
                if not steps:
                    continue
                allrs += steps
                ll, lli, fail, ordered = saturation(steps, 1000)
                if ll:
                    top = max(ordered[:lli + 1], key=lambda r: r["deliveries_per_s"])
                    dps.append(top["deliveries_per_s"])
                    rate.append(achieved(top))
                    p50.append(top["latency_ms"]["p50"])
                    p99.append(top["latency_ms"]["p99"])
                    cpu.append(top["server_cpu_us_per_delivery"])
                    n1.append(watch_us(top, "node1", top["published"]))
                    rd.append(watch_us(top, "redis", top["published"]))
                    ccpu.append(top["client_cpu_frac"])
                else:
                    dps.append(0)
                best, _, _, _ = saturation(steps, 100)
                sats.append(achieved(best) if best else 0)
                nl = None
                for st in ordered:
                    if st["lost"] > 0 or st["publish_errors"] or st["latency_ms"]["p99"] > 1000:
                        break
                    if nl is None or st["deliveries_per_s"] > nl["deliveries_per_s"]:
                        nl = st
                nl_dps.append(nl["deliveries_per_s"] if nl else 0)
                nl_rate.append(achieved(nl) if nl else 0)
                if fail:
                    why = []
                    if fail["lost"] > 0:
                        why.append(f"lost {fail['lost']:,}")
                    if fail["reordered"]:
                        why.append(f"reordered {fail['reordered']:,}")
                    if fail["duplicates"]:
                        why.append(f"dup {fail['duplicates']:,}")
                    if fail["latency_ms"]["p99"] > 1000:
                        why.append(f"p99 {fail['latency_ms']['p99']:.0f} ms")
                    if fail["disconnects"]:
                        why.append(f"{fail['disconnects']} disc")
                    fails.append(f"{fail['rate']:g}: " + ", ".join(why or ["error"]))
                else:
                    fails.append("none (ladder top)")
            if not allrs:
                continue
            ll_med[s] = med(dps)
            body.append([c, s, fmt(med(dps)), fmt(med(rate)), f"{fmt(med(p50))} / {fmt(med(p99))}", fmt(med(cpu)),
                         fmt(med(n1)), fmt(med(rd)), fmt(med(sats)), "; ".join(fails),
                         f"{fmt(med(nl_dps))} ({fmt(med(nl_rate))})", fmt(med(ccpu), 2), load_range(allrs)])
        if two and ll_med.get("herald") is not None and ll_med.get("nchan") is not None:
            body.append([c, "**herald/nchan**", f"**{ratio(ll_med['herald'], ll_med['nchan'])}**"] + [""] * 10)
    out.append(table(head, body))
    out.append("\nlossless best: as in (b), of the steps before the first one that lost, duplicated or reordered "
               "a message or had p99 > 1 s, the one that delivered the most per second; the ratio row compares "
               "those. The next-to-last column relaxes that to loss, publish errors and p99 > 1 s only.\n")

    out.append("\n### Publish→receive latency at a low rate\n")
    head = ["case", "server", "msg/s", "deliveries", "lost", "p50 ms", "p90 ms", "p99 ms", "max ms",
            "node 2 CPU µs/delivery", "Redis CPU µs/msg", "load before"]
    body = []
    for c in [c for c in cases if c.startswith("lat")]:
        for s in srv:
            rs = g.get((c, s), [])
            if not rs:
                continue
            body.append([c, s, fmt(med([achieved(r) for r in rs])), fmt(med([r["deliveries_received"] for r in rs])),
                         str(sum(max(r["lost"], 0) for r in rs)),
                         fmt(med([r["latency_ms"]["p50"] for r in rs])), fmt(med([r["latency_ms"]["p90"] for r in rs])),
                         fmt(med([r["latency_ms"]["p99"] for r in rs])), fmt(med([r["latency_ms"]["max"] for r in rs])),
                         fmt(med([r["server_cpu_us_per_delivery"] for r in rs])),
                         fmt(med([watch_us(r, "redis", r["published"]) for r in rs])), load_range(rs)])
    out.append(table(head, body))
    out.append("\nNode 1 = where the client publishes, node 2 = where its subscribers are; Redis, node 1 and "
               "node 2 share the server core, the client has the other. \"-single\" cases: one node, memory "
               "store (publish and subscribe on it). CPU per unit: that process's CPU time over the step "
               "(/proc/PID/stat) / messages published (node 1, Redis) or delivered (node 2). \"INFO cpu\": "
               "Redis's used_cpu_sys + used_cpu_user from just after the nodes were up to the end of the case, "
               "over the messages published; commands: total_commands_processed over the same span "
               "(commands run inside scripts included). load before = 1-minute load average before each run, "
               "min–max over the repetitions.\n")
    return "\n".join(out)


def summarize_h(rows, reps, srv, two):
    """scenario h: 45,000 subscribers over three nodes (herald: three processes
    sharing one Redis; nchan: three workers of one nginx)"""
    out = ["\n## (h) Scale demo: subscribers over three nodes sharing one Redis\n"]
    hs = [r for r in rows if r["scenario"] == "h"]
    con = by([r for r in hs if r["phase"] == "connect"], "case", "server")
    st = by([r for r in hs if r["phase"] == "step"], "case", "server", "step")
    nodes = lambda r, key: {k: v for k, v in (r.get(key) or {}).items() if k != "redis"}
    for c in case_order(rows, "h"):
        out.append(f"\n### {c}\n")
        head = ["", *srv] + (["ratio"] if two else [])
        body = []

        def line(name, f, ratio_ok=True, digits=3):
            v = {s: f(s) for s in srv}
            cells = [fmt(v[s], digits) if not isinstance(v[s], str) else v[s] for s in srv]
            num = {s: v[s] if not isinstance(v[s], str) else None for s in srv}
            body.append([name, *cells] + ([ratio(num["herald"], num["nchan"]) if ratio_ok else ""] if two else []))

        cs = {s: con[(c, s)] for s in srv}
        line("subscribed (runs)", lambda s: " / ".join(str(r["subscribed"]) for r in cs[s]), False)
        line("failed subscriptions", lambda s: sum(r["subscribe_failed"] + r["bad_status"] for r in cs[s]), False)
        line("connect rate, subscribers/s", lambda s: med([r["connect_per_s"] for r in cs[s]]))
        line("connect time, s", lambda s: med([r["connect_s"] for r in cs[s]]))
        line("descriptors per node (connections + ~25 others; run 1)",
             lambda s: " / ".join(str(v) for v in nodes(cs[s][0], "watch_fds").values()) if cs[s] else "–", False)
        line("RSS per node after connecting, MB",
             lambda s: med([max(nodes(r, "watch_rss_kb").values()) / 1024 for r in cs[s]]))
        line("RSS of all nodes, MB", lambda s: med([sum(nodes(r, "watch_rss_kb").values()) / 1024 for r in cs[s]]))
        line("PSS of all nodes, MB",
             lambda s: med([sum(nodes(r, "watch_pss_kb").values()) / 1024 for r in cs[s] if r.get("watch_pss_kb")]))
        steps = sorted({k[2] for k in st if k[0] == c})
        for i in steps:
            ss = {s: st[(c, s, i)] for s in srv}
            pub = "/".join(sorted({str(r["published"]) for s in srv for r in ss[s]}))
            tag = f"step {i} ({pub} msg at {ss[srv[0]][0]['rate']:g}/s)"
            line(f"{tag}: lost deliveries (all runs)", lambda s: sum(max(r["lost"], 0) for r in ss[s]), False)
            line(f"{tag}: subscribers short of a message (all runs)",
                 lambda s: sum(r["subs_short"] + r["subs_extra"] for r in ss[s]), False)
            line(f"{tag}: deliveries/s", lambda s: med([r["deliveries_per_s"] for r in ss[s]]))
            for q in ("p50", "p99", "max"):
                line(f"{tag}: latency {q}, ms", lambda s: med([r["latency_ms"][q] for r in ss[s]]))
            line(f"{tag}: CPU of all nodes, s",
                 lambda s: med([sum(nodes(r, "watch_cpu_s").values()) for r in ss[s]]))
        line("load average before (runs)", lambda s: load_range(cs[s]), False)
        out.append(table(head, body))
    out.append("\nnodes: herald's three processes (n1 takes the publishes), nchan's three workers; Redis "
               "not included. deliveries/s = unique deliveries / (last delivery − step start). "
               "PSS splits pages shared between processes (nchan's shared memory zone, which each "
               "worker's RSS counts whole).\n")
    return "\n".join(out)


def main(d):
    rows = load(d)
    out = []
    if os.path.exists(os.path.join(d, "machine.txt")):
        out.append("```\n" + open(os.path.join(d, "machine.txt")).read().rstrip() + "\n```\n")
    reps = sorted({r["rep"] for r in rows})
    out.append(f"Medians over {len(reps)} repetition(s); ratio = herald / nchan.\n")
    srv = servers_in(rows)
    two = len(srv) == 2

    # (a) idle memory
    a = [r for r in rows if r["scenario"] == "a" and r["phase"] == "connect"]
    if a:
        out.append("\n## (a) Idle memory: server RSS per idle subscriber\n")
        g = by(a, "case", "server")
        head = ["case"] + [f"{s} B/sub" for s in srv] + (["ratio"] if two else [])
        head += [f"{s} RSS MB" for s in srv] + [f"{s} connects/s" for s in srv] + ["failed"]
        body = []
        for c in case_order(rows, "a"):
            m = {s: med([r["server_rss_per_sub_bytes"] for r in g[(c, s)]]) for s in srv}
            rss = {s: med([r["server_rss_after_kb"] / 1024 for r in g[(c, s)]]) for s in srv}
            cps = {s: med([r["connect_per_s"] for r in g[(c, s)]]) for s in srv}
            failed = sum(r["subscribe_failed"] + r["bad_status"] for s in srv for r in g[(c, s)])
            line = [c] + [fmt(m[s]) for s in srv] + ([ratio(m["herald"], m["nchan"])] if two else [])
            line += [fmt(rss[s]) for s in srv] + [fmt(cps[s]) for s in srv] + [str(failed)]
            body.append(line)
        out.append(table(head, body))
        out.append("\nB/sub = (server RSS after connecting and settling − RSS before) / subscribers.\n")

    # (b) fan-out saturation
    b = [r for r in rows if r["scenario"] == "b" and r["phase"] == "step"]
    fan_chart = []
    if b:
        out.append("\n## (b) Fan-out: highest clean step (no loss, p99 ≤ 100 ms)\n")
        g = by(b, "case", "server", "rep")
        head = ["case", "server", "saturation msg/s", "deliveries/s", "p50 ms", "p99 ms",
                "CPU µs/delivery", "p99 ms at half", "client CPU", "lossless: best deliveries/s", "its msg/s", "its p99 ms", "first failing step"]
        body = []
        for c in case_order(rows, "b"):
            sat_dps, ll_med = {}, {}
            for s in srv:
                sats, dps, p50, p99, cpu, half, ccpu, fails = [], [], [], [], [], [], [], []
                ll_rate, ll_dps, ll_p99 = [], [], []
                for rep in reps:
                    steps = g.get((c, s, rep))
                    if not steps:
                        continue
                    ll, lli, fail, ordered = saturation(steps, 1000)
                    if ll:
                        # the lossless step that delivered the most per second
                        top = max(ordered[:lli + 1], key=lambda r: r["deliveries_per_s"])
                        ll_rate.append(achieved(top))
                        ll_dps.append(top["deliveries_per_s"])
                        ll_p99.append(top["latency_ms"]["p99"])
                    else:
                        ll_rate.append(0)
                    best, bi, _, ordered = saturation(steps, 100)
                    sats.append(achieved(best) if best else 0)
                    if best:
                        dps.append(best["deliveries_per_s"])
                        p50.append(best["latency_ms"]["p50"])
                        p99.append(best["latency_ms"]["p99"])
                        cpu.append(best["server_cpu_us_per_delivery"])
                        ccpu.append(best["client_cpu_frac"])
                        if bi >= 2:
                            half.append(ordered[bi - 2]["latency_ms"]["p99"])
                    if fail:
                        why = []
                        if fail["lost"] > 0:
                            why.append(f"lost {fail['lost']:,}")
                        if fail["latency_ms"]["p99"] > 100:
                            why.append(f"p99 {fail['latency_ms']['p99']:.0f} ms")
                        if fail["disconnects"]:
                            why.append(f"{fail['disconnects']} disc")
                        fails.append(f"{fail['rate']:g}: " + ", ".join(why or ["error"]))
                    else:
                        fails.append("none (ladder top)")
                    for st in ordered:
                        fan_chart.append((c, s, rep, st["rate"] * st["subscribers"] / st["topics"], st["deliveries_per_s"],
                                          st["latency_ms"]["p99"]))
                sat_dps[s] = med(dps)
                ll_med[s] = med(ll_dps)
                body.append([c, s, fmt(med(sats)), fmt(med(dps)), fmt(med(p50)), fmt(med(p99)), fmt(med(cpu)),
                             fmt(med(half)), fmt(med(ccpu), 2), fmt(med(ll_dps)), fmt(med(ll_rate)), fmt(med(ll_p99)),
                             "; ".join(fails)])
            if two:
                body.append([c, "**herald/nchan**", "", f"**{ratio(sat_dps.get('herald'), sat_dps.get('nchan'))}**",
                             "", "", "", "", "", f"**{ratio(ll_med.get('herald'), ll_med.get('nchan'))}**", "", "", ""])
        out.append(table(head, body))
        out.append("\nsaturation = the highest step (of a ladder stepping by √2; steps of 2 s) with no loss, no "
                   "duplicate, no reordering and p99 ≤ 100 ms, reached without an earlier failing step; shown as "
                   "the publish rate really achieved (msg/s, all topics together), median over repetitions; the "
                   "next columns are medians at that step. \"p99 ms at half\" is the p99 of the step two below "
                   "(half the target rate). client CPU = load generator CPU / wall time (1.0 = its whole core). "
                   "lossless: of the steps before the first one that lost a message or had p99 > 1 s, the one "
                   "that delivered the most per second (unique deliveries / time from the step's start to its "
                   "last delivery); the ratio row compares those. first failing step: target rate of the step "
                   "that ended the ladder and why (\"ladder top\": none did).\n")

    # (c) publish throughput
    cc = [r for r in rows if r["scenario"] == "c" and r["phase"] == "step"]
    if cc:
        out.append("\n## (c) Publish throughput: topics without subscribers\n")
        g = by(cc, "case", "server")
        head = ["case", "server", "publishes/s", "server CPU µs/publish", "errors", "client CPU"]
        body = []
        for c in case_order(rows, "c"):
            m = {}
            for s in srv:
                rs = g[(c, s)]
                m[s] = med([r["publish_per_s"] for r in rs])
                body.append([c, s, fmt(m[s]), fmt(med([r["server_cpu_us_per_publish"] for r in rs])),
                             str(sum(r["publish_errors"] for r in rs)), fmt(med([r["client_cpu_frac"] for r in rs]), 2)])
            if two:
                body.append([c, "**herald/nchan**", f"**{ratio(m['herald'], m['nchan'])}**", "", "", ""])
        out.append(table(head, body))

    # (d) transport comparison
    dd = [r for r in rows if r["scenario"] == "d" and r["phase"] == "step"]
    chart = []
    if dd:
        out.append("\n## (d) Transport comparison: polling, long-polling, SSE or WebSocket?\n")
        g = by(dd, "case", "server")
        head = ["transport", "server", "wire B/delivery", "sub in", "sub out", "pub in+out", "requests/delivery",
                "p50 ms", "p99 ms", "server CPU µs/delivery", "lost", "client CPU"]
        body = []
        for c in case_order(rows, "d"):
            for s in srv:
                rs = g.get((c, s), [])
                if not rs:
                    continue
                pd = lambda k: med([r["per_delivery"][k] for r in rs])
                vals = dict(wire=pd("wire_bytes"), sin=pd("sub_bytes_in"), sout=pd("sub_bytes_out"),
                            pub=med([r["per_delivery"]["pub_bytes_in"] + r["per_delivery"]["pub_bytes_out"] for r in rs]),
                            req=pd("requests"), p50=med([r["latency_ms"]["p50"] for r in rs]),
                            p99=med([r["latency_ms"]["p99"] for r in rs]),
                            cpu=med([r["server_cpu_us_per_delivery"] for r in rs]))
                lost = sum(max(r["lost"], 0) for r in rs)
                body.append([c, s, fmt(vals["wire"]), fmt(vals["sin"]), fmt(vals["sout"]), fmt(vals["pub"]),
                             fmt(vals["req"]), fmt(vals["p50"]), fmt(vals["p99"]), fmt(vals["cpu"]), str(lost),
                             fmt(med([r["client_cpu_frac"] for r in rs]), 2)])
                chart.append((c, s, vals))
        out.append(table(head, body))
        r0 = dd[0]
        out.append(f"\nWorkload: {r0['subscribers']:,} subscribers, {r0['topics']} topic, {r0['rate']:g} msg/s for "
                   f"{r0['step_seconds']:g} s, {r0['size']} B messages. Bytes are counted at the client sockets "
                   "(HTTP/WebSocket payload, not TCP/IP headers) and divided by deliveries; requests = "
                   "subscriber requests + publishes per delivery; server CPU = utime+stime of the serving "
                   "process over the step and its drain.\n")

    # (e) long-poll loss by rate
    e = [r for r in rows if r["scenario"] == "e" and r["phase"] == "step"]
    if e:
        out.append("\n## (e) Long-polling: loss by publish rate (one topic)\n")
        g = by(e, "case", "server", "rate")
        rates = sorted({r["rate"] for r in e})
        head = ["server"] + [f"{x:g} msg/s: lost / p99 ms" for x in rates]
        body = []
        for s in srv:
            line = [s]
            for x in rates:
                rs = [r for c in case_order(rows, "e") for r in g.get((c, s, x), [])]
                if not rs:
                    line.append("–")
                    continue
                lost = [max(r["lost"], 0) for r in rs]
                line.append(f"{sum(lost):,} / {fmt(med([r['latency_ms']['p99'] for r in rs]))}"
                            + (f" ({len(rs)} runs)" if len(rs) != len(reps) else ""))
            body.append(line)
        out.append(table(head, body))
        out.append("\nlost: summed over repetitions; a run stops after its first step with loss.\n")

    # (f) the write floor: no server, N plain write(2) calls per message
    f = [r for r in rows if r["scenario"] == "f" and r["phase"] == "floor"]
    if f:
        out.append("\n## (f) Write floor: one message to N loopback subscribers with no server at all\n")
        g = by(f, "case")
        head = ["case", "subscribers per message", "µs per write(2)", "walk p50 ms", "walk p99 ms",
                "floor delivery p50 / p99 ms"]
        for s in srv:
            head.append(f"{s} fan-out p50 / p99 ms at its lowest rate (case)")
        body = []
        for c in case_order(rows, "f"):
            rs = g[(c,)]
            n = rs[0]["subscribers"]
            line = [c, f"{n:,}", fmt(med([r["us_per_write"] for r in rs])),
                    fmt(med([r["walk_ms"]["p50"] for r in rs])), fmt(med([r["walk_ms"]["p99"] for r in rs])),
                    f"{fmt(med([r['delivery_ms']['p50'] for r in rs]))} / {fmt(med([r['delivery_ms']['p99'] for r in rs]))}"]
            for s in srv:
                # the fan-out case whose messages each go to n subscribers, at its first (lowest) step
                first = [r for r in b if r["server"] == s and r["step"] == 0 and r["transport"] == "sse"
                         and r["size"] == 64 and r["subscribers"] // r["topics"] == n]
                if first:
                    line.append(f"{fmt(med([r['latency_ms']['p50'] for r in first]))} / "
                                f"{fmt(med([r['latency_ms']['p99'] for r in first]))} "
                                f"({first[0]['case']} at {first[0]['rate']:g} msg/s)")
                else:
                    line.append("–")
            body.append(line)
        out.append(table(head, body))
        out.append("\nwrite_floor writes one 90 B message (the size of a 64 B SSE event on the wire) to each of N "
                   "TCP_NODELAY loopback sockets from one core, N write(2) calls in a row, then sleeps; another "
                   "process on the other core reads. walk = first write to last; floor delivery = each write's "
                   "offset from its walk's start, the publish→receive latency a server that costs nothing itself "
                   "would show, at best.\n")

    gs = [r for r in rows if r["scenario"] == "g" and r["phase"] == "step"]
    if gs:
        out.append(summarize_g(rows, gs, reps, srv, two))

    if any(r["scenario"] == "h" for r in rows):
        out.append(summarize_h(rows, reps, srv, two))

    text = "\n".join(out)
    with open(os.path.join(d, "summary.md"), "w") as f:
        f.write(text)
    print(text)
    if chart or fan_chart:
        draw(d, chart, fan_chart, srv)


def draw(d, chart, fan_chart, srv):
    gp = shutil.which("gnuplot")
    if not gp:
        print("(gnuplot not installed: no chart)", file=sys.stderr)
        return
    if chart:
        dat = os.path.join(d, "transport.dat")
        names = []
        for c, s, v in chart:
            if c not in names:
                names.append(c)
        with open(dat, "w") as f:
            f.write("# transport " + " ".join(f"{s}_wire {s}_req {s}_p50 {s}_cpu" for s in srv) + "\n")
            for c in names:
                cols = [c]
                for s in srv:
                    v = next((v for cc, ss, v in chart if cc == c and ss == s), None)
                    cols += [str(v[k]) if v and v[k] is not None else "NaN" for k in ("wire", "req", "p50", "cpu")]
                f.write(" ".join(cols) + "\n")
        ns = len(srv)
        plots = []
        lin = "unset logscale y\nset yrange [0:*]"
        log = "set yrange [*:*]\nset logscale y"
        titles = [("bytes on the wire per delivered message", 0, lin),
                  ("HTTP requests per delivered message", 1, lin),
                  ("publish→receive latency p50 (ms, log)", 2, log),
                  ("server CPU µs per delivered message", 3, lin)]
        for title, k, extra in titles:
            using = ", ".join(
                f"'{dat}' using {2 + i * 4 + k}:xtic(1) title '{s}' lc {i + 1}" for i, s in enumerate(srv))
            plots.append(f"set title '{title}'\n{extra}\nplot {using}\n")
        script = f"""set terminal svg size 1000,720 dynamic font 'sans,12'
set output '{os.path.join(d, 'transport.svg')}'
set multiplot layout 2,2 title 'Transport comparison ({'herald vs nchan' if ns == 2 else srv[0]}): same workload, medians'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set key top left
set grid ytics
set yrange [0:*]
""" + "".join(plots) + "unset multiplot\n"
        with open(os.path.join(d, "transport.gp"), "w") as f:
            f.write(script)
        subprocess.run([gp, os.path.join(d, "transport.gp")], check=False)
    if fan_chart:
        cases = []
        for c, *_ in fan_chart:
            if c not in cases:
                cases.append(c)
        dat = os.path.join(d, "fanout.dat")
        blocks = []
        with open(dat, "w") as f:
            for c in cases:
                for s in srv:
                    pts = defaultdict(list)
                    for cc, ss, rep, offered, dps, p99 in fan_chart:
                        if cc == c and ss == s:
                            pts[offered].append((dps, p99))
                    if not pts:
                        continue
                    f.write(f"# {c} {s}\n")
                    for off in sorted(pts):
                        f.write(f"{off} {med([p[0] for p in pts[off]])} {med([p[1] for p in pts[off]])}\n")
                    f.write("\n\n")
                    blocks.append((c, s))
        # one colour per case, solid for herald and dashed for nchan (gnuplot's
        # default cycle has 8 colours: with 10 series two cases would share one)
        plots = ", ".join(
            f"'{dat}' index {i} using 1:3 with linespoints title '{c} {s}' lw 2 lc {cases.index(c) + 1}"
            f" dt {1 if s == 'herald' else 2} pt {7 if s == 'herald' else 6}"
            for i, (c, s) in enumerate(blocks))
        script = f"""set terminal svg size 900,560 dynamic font 'sans,12'
set output '{os.path.join(d, 'fanout.svg')}'
set title 'Fan-out: p99 vs offered deliveries/s (medians per step; herald solid, nchan dashed)'
set logscale xy
set xlabel 'offered deliveries/s (rate x subscribers)'
set ylabel 'p99 publish-to-receive latency, ms'
set key outside right
set grid
set arrow from graph 0, first 100 to graph 1, first 100 nohead dt 3
plot {plots}
"""
        with open(os.path.join(d, "fanout.gp"), "w") as f:
            f.write(script)
        subprocess.run([gp, os.path.join(d, "fanout.gp")], check=False)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
