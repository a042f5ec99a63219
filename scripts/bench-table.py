#!/usr/bin/env python3
"""The side-by-side table of scripts/bench-server.sh, as Markdown, from its JSON files.

    python3 scripts/bench-table.py /tmp/coupon-bench naive after-gate after-store after-log

Every figure is beside its ceiling from the same run: rates as a ratio to redis-benchmark
driving admit.lua (the gate's own ceiling), server CPU per issued coupon as a ratio to the
CPU of one /healthz request, after-log's latency as a difference to the bare producer's.
"""

import json
import os
import sys

out, modes = sys.argv[1], sys.argv[2:]


def load(name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) else None


def ms(v):
    return f"{v:.2f} ms"


ceil = load("ceilings.json")
healthz_us = ceil["healthz_cpu_s"] * 1e6 / ceil["healthz_requests"]
redis = ceil["redis"]
label = {
    "naive": "naive: axum + one `EVALSHA` (no log, no store)",
    "after-gate": "`after-gate`",
    "after-store": "`after-store`",
    "after-log": "`after-log`",
}

# The steps this run took, lowest first (the files step-MODE-RATE.json).
STEPS = sorted({int(n.rsplit("-", 1)[1][: -len(".json")]) for n in os.listdir(out) if n.startswith("step-")})
SUFFIXES = {"campaign": "events keyed by campaign"}


def describe(mode):
    """A stack's name: its ack mode's label and what each `:suffix` changed."""
    ack, *suffixes = mode.split(":")
    return ", ".join([label.get(ack, ack)] + [SUFFIXES.get(s, s) for s in suffixes])


print(f"Gate: Redis {ceil['gate']}; ceilings of this run: `wrk` /healthz {ceil['wrk']:,.0f} req/s at "
      f"{healthz_us:.1f} µs of server CPU per request; `redis-benchmark -c 50 EVALSHA admit.lua` on the "
      f"campaign's node {redis:,.0f} req/s.")
print()
print("| | seed 2,800/s: p50 / p95 / p99 | errors | highest step with p99 < 10 ms (× admit.lua ceiling) "
      "| closed loop, 256 workers (× admit.lua ceiling) | closed loop p99 | server CPU per issued coupon (× /healthz request) |")
print("| --- | --- | ---: | --- | --- | ---: | --- |")
for mode in modes:
    seed, closed, cpu = load(f"seed-{mode}.json"), load(f"max-{mode}.json"), load(f"cpu-{mode}.json")
    best = int(open(os.path.join(out, f"best-{mode}")).read().strip() or 0)
    cells = [describe(mode)]
    if seed:
        lat = seed["latency_ms"]
        a = seed["answers"]
        errors = seed["requests"] - a.get("issued", 0) - a.get("sold_out", 0) - a.get("already_issued", 0)
        ok = "" if seed["consistency"]["ok"] else " (consistency FAILED)"
        cells += [f"{lat['p50']:.2f} / {lat['p95']:.2f} / {lat['p99']:.2f} ms{ok}", str(errors)]
    else:
        cells += ["", ""]
    first = load(f"step-{mode}-{STEPS[0]}.json") if STEPS else None
    if best:
        cells.append(f"{best:,}/s ({best / redis:.3f})")
    elif first:
        cells.append(f"none: {STEPS[0]:,}/s had p99 {ms(first['latency_ms']['p99'])}")
    else:
        cells.append("not run")
    if closed and cpu:
        issued = closed["answers"].get("issued", 0)
        us = cpu["server_cpu_s"] * 1e6 / max(1, issued)
        refused = ", ".join(f"{n:,} `{code}`" for code, n in sorted(closed["answers"].items()) if code != "issued")
        cells += [f"{closed['achieved_rate']:,.0f}/s ({closed['achieved_rate'] / redis:.2f})"
                  + (f"; also answered {refused}" if refused else ""),
                  ms(closed["latency_ms"]["p99"]), f"{us:.1f} µs ({us / healthz_us:.1f})"]
    else:
        cells += ["", "", ""]
    print("| " + " | ".join(cells) + " |")

floor = load("floor-2800.json")
unders = [(mode, load(f"floor-under-load-{mode}.json")) for mode in modes]
under = next((f for mode, f in unders if mode == "after-log" and f), None)
rows = [("bare producer, 2,800/s, stack idle", floor)]
rows.append(("bare producer, 2,800/s, in its own process beside the naive design's seed", load("floor-beside-naive.json")))
rows.append(("bare producer, 2,800/s, in its own process beside the seed of `after-gate` (which publishes as much)",
             load("floor-beside-after-gate.json")))
rows += [(f"bare producer, 200/s, beside the seed of {describe(m)}", f) for m, f in unders if f]
for name, f in rows:
    if f:
        lat = f["latency_ms"]
        print(f"| {name} | {lat['p50']:.2f} / {lat['p95']:.2f} / {lat['p99']:.2f} ms | {f['errors']} | | | | |")

breakdowns = [(mode, load(f"breakdown-{mode}.json")) for mode in modes]
if any(b for _, b in breakdowns):
    print()
    print("Inside the server during the seed (its own histograms, p50 / p95 / p99; `publish` is one event "
          "from send to the broker's acknowledgement, which `after-log` answers after and `after-gate` "
          "runs in the background at the same rate):")
    print()
    print("| | load tool | server, arrival to answer | gate admission | log publish |")
    print("| --- | --- | --- | --- | --- |")
    for mode, b in breakdowns:
        seed = load(f"seed-{mode}.json")
        if not b or not seed:
            continue
        lat = seed["latency_ms"]
        cells = [describe(mode),
                 f"{lat['p50']:.2f} / {lat['p95']:.2f} / {lat['p99']:.2f} ms"]
        for part in ("handler", "gate", "publish"):
            v = b.get(part)
            cells.append(f"{v['p50']:.2f} / {v['p95']:.2f} / {v['p99']:.2f} ms" if v else "")
        print("| " + " | ".join(cells) + " |")

print()
print("Goals (issue 15):")
seed = load("seed-after-log.json")
if seed:
    p95 = seed["latency_ms"]["p95"]
    print(f"- `after-log` seed p95 < 5 ms: {ms(p95)}, {'met' if p95 < 5 else 'not met'}"
          + (f"; the bare producer's p95 at the same rate, idle: {ms(floor['latency_ms']['p95'])}" if floor else "")
          + (f"; beside the seed: {ms(under['latency_ms']['p95'])}" if under else "") + ".")
beside, gate_parts = load("floor-beside-after-gate.json"), load("breakdown-after-gate.json")
if beside and gate_parts and gate_parts.get("publish"):
    p, f = gate_parts["publish"], beside["latency_ms"]
    print(f"- What the issuer adds to the broker's latency: during `after-gate`'s seed, the server's own publishes "
          f"measured p50 / p95 / p99 {p['p50']:.2f} / {p['p95']:.2f} / {p['p99']:.2f} ms and a bare producer at the "
          f"same rate beside it {f['p50']:.2f} / {f['p95']:.2f} / {f['p99']:.2f} ms: the issuer's p95 is "
          f"{p['p95'] / f['p95']:.2f} × the bare producer's.")
steps = sorted(int(n[len("floor-"):-len(".json")]) for n in os.listdir(out)
               if n.startswith("floor-") and n[len("floor-"):-len(".json")].isdigit() and n != "floor-2800.json"
               and os.path.exists(os.path.join(out, f"step-after-log-{n[len('floor-'):-len('.json')]}.json")))
for rate in steps:
    step, f = load(f"step-after-log-{rate}.json"), load(f"floor-{rate}.json")
    gap = step["latency_ms"]["p99"] - f["latency_ms"]["p99"]
    print(f"- {rate:,}/s: `after-log` p99 {ms(step['latency_ms']['p99'])} - bare producer p99 "
          f"{ms(f['latency_ms']['p99'])} = {gap:.2f} ms ({'met' if gap <= 1 else 'not met'}; goal <= 1 ms).")
