#!/usr/bin/python3
"""bench/engine/suite/table.py — the engine suite's table (bench/engine/suite/run.sh runs it at the end).

Reads the raw rows run.sh wrote (MODEL, PEER "cloister"/"ort", ROUND, EXIT STATUS, the peer's output line of
key=value figures, its stderr's tail; tab-separated), takes each peer's best figure per metric over the
rounds (lowest latency and load time, highest throughput, largest peak RSS, the error of round 1), and prints
a Markdown table per model with the ratios cloister/ORT and, per ratio, its geometric mean over the models
that have it. A model a peer could not load (or run) is listed with the peer's error and left out of the
geometric means; the table says which. The goals are issue 13's. With $CLOISTER_BENCH_OUT set, every figure
is also appended to engine-suite.jsonl there, in bench/lib.sh's records (kind figure / failure / config),
which bench/report/make_report.py renders.

usage: table.py RAW.tsv [--threads N] [--rounds N] [--ort VERSION] [--cpu TEXT] [--flags TEXT] [--load TEXT]
                [--budget S] [--skip-over S] [--models "a b"] [--out TABLE.md]
"""
import argparse
import datetime
import json
import math
import os
import sys

# (metric, key in the output line, unit, better, how the rounds combine, goal on the ratio)
METRICS = [
    ("batch-1 p50 latency", "b1_p50_ms", "ms", "lower", min, "<= 1.0"),
    ("batch-8 throughput", "b8_ips", "samples/s", "higher", max, ">= 1.0"),
    ("load time", "load_ms", "ms", "lower", min, "<= 1.0"),
    ("peak RSS", "peak_rss_mb", "MB", "lower", max, "<= 1.1"),
]
GEOMEAN_GOALS = {"batch-1 p50 latency": "<= 0.85"}
MODEL_GOALS = {("resnet50", "batch-1 p50 latency"): "<= 0.75", ("resnet50", "batch-8 throughput"): ">= 1.2"}
ERR_GOAL = 1e-4
PEERS = ("cloister", "ort")


def parse_line(line):
    out = {}
    for tok in line.split():
        k, sep, v = tok.partition("=")
        if sep:
            try:
                x = float(v)
                if math.isfinite(x):
                    out[k] = x
            except ValueError:
                pass
    return out


def read_raw(path):
    """{model: {peer: {"runs": [figures...], "failure": (stage, reason) or None}}} in file order"""
    res = {}
    for row in open(path, errors="replace"):
        row = row.rstrip("\n")
        if not row:
            continue
        cells = row.split("\t")
        while len(cells) < 6:
            cells.append("")
        model, peer, rnd, rc, line, errtail = cells[:6]
        p = res.setdefault(model, {q: {"runs": [], "failure": None} for q in PEERS}).setdefault(
            peer, {"runs": [], "failure": None})
        if rc.strip() == "0":
            figs = parse_line(line)
            figs["round"] = int(rnd) if rnd.isdigit() else 0
            p["runs"].append(figs)
        elif "load_error=" in line:
            p["failure"] = ("load", line.split("load_error=", 1)[1].strip())
        else:
            why = errtail.strip() or line.strip() or "no output"
            p["failure"] = ("run", f"exit status {rc}: {why}")
    return res


def best(runs, key, how):
    vals = [r[key] for r in runs if key in r]
    return how(vals) if vals else None


def first_round(runs, key):
    for r in runs:
        if r.get("round") == 1 and key in r:
            return r[key]
    return None


def fmt(v, digits=None):
    if v is None:
        return "—"
    if digits is not None:
        return f"{v:.{digits}f}"
    a = abs(v)
    return f"{v:,.0f}" if a >= 1000 else f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}"


def fmt_err(v):
    return "—" if v is None else f"{v:.1e}"


def geomean(xs):
    xs = [x for x in xs if x is not None and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def goal_met(goal, x):
    if x is None:
        return None
    op, t = goal.split()
    return x <= float(t) if op == "<=" else x >= float(t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("raw")
    for k in ("threads", "rounds", "ort", "cpu", "flags", "load", "budget", "skip_over", "models", "out"):
        ap.add_argument("--" + k.replace("_", "-"), default="")
    a = ap.parse_args()
    res = read_raw(a.raw)
    order = a.models.split() if a.models else list(res)
    order += [m for m in res if m not in order]
    rows, ratios, failures, recs = [], {m[0]: {} for m in METRICS}, [], []
    peer = f"ONNX Runtime {a.ort} (onnxruntime-node)"

    def rec(**kw):
        recs.append(dict(kind="figure", **kw))

    for model in order:
        r = res.get(model) or {q: {"runs": [], "failure": ("run", "not run")} for q in PEERS}
        c, o = r["cloister"], r["ort"]
        for q, name in ((c, "cloister"), (o, "ONNX Runtime")):
            if q["failure"]:
                failures.append((model, name, q["failure"][0], q["failure"][1]))
                recs.append(dict(kind="failure", model=model, who=name, stage=q["failure"][0],
                                 reason=q["failure"][1][:500]))
        ce, oe = first_round(c["runs"], "rel_err"), first_round(o["runs"], "rel_err")
        cells = [model, f"{fmt_err(ce)} / {fmt_err(oe)}"]
        rec(metric="max error vs PyTorch", model=model, value=ce, unit="of the output range", better="lower",
            peer=peer, peer_value=oe, goal=f"<= {ERR_GOAL:g}", goal_on="value",
            note="max abs error / range of PyTorch's output, batch 2")
        for metric, key, unit, better, how, goal in METRICS:
            cv, ov = best(c["runs"], key, how), best(o["runs"], key, how)
            ratio = cv / ov if cv is not None and ov else None
            if ratio is not None:
                ratios[metric][model] = ratio
            cells += [fmt(cv), fmt(ov), fmt(ratio, 2) if ratio is not None else "—"]
            g = MODEL_GOALS.get((model, metric), goal)
            rec(metric=metric, model=model, value=cv, unit=unit, better=better, peer=peer, peer_value=ov,
                ratio_of="cloister/ort", ratio=None if ratio is None else round(ratio, 4), goal=g, goal_on="ratio")
        rows.append(cells)

    head = ["model", "max err / range (cloister / ORT)", "b1 p50 ms", "ORT", "ratio", "b8 samples/s", "ORT",
            "ratio", "load ms", "ORT", "ratio", "peak RSS MB", "ORT", "ratio"]
    out = []
    w = out.append
    w(f"Suite run of {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}: "
      f"{a.threads} threads, best of {a.rounds} alternating rounds per metric (peak RSS: the largest), "
      f"batch 1: up to 20 runs (p50), batch 8: up to 5 (median), at most {a.budget} s of timed runs per phase, "
      f"batch 8 not run for a peer whose batch-1 run took over {a.skip_over} s; peer: onnxruntime-node {a.ort}; "
      f"CPU: {a.cpu}; flags: {a.flags}; load average at the end: {a.load}.\n")
    w("| " + " | ".join(head) + " |")
    w("| --- | --- |" + " ---: |" * (len(head) - 2))
    for cells in rows:
        w("| " + " | ".join(cells) + " |")
    gm_cells = ["**geometric mean**", ""]
    n_models = len(order)
    for metric, *_ in METRICS:
        have = ratios[metric]
        gm = geomean(have.values())
        gm_cells += ["", "", f"**{fmt(gm, 2)}** ({len(have)}/{n_models})" if gm else "—"]
        left = [m for m in order if m not in have]
        g = GEOMEAN_GOALS.get(metric)
        rec(metric=f"geometric mean of the {metric} ratios", value=None if gm is None else round(gm, 4), unit="×",
            better=dict((m[0], m[3]) for m in METRICS)[metric], ratio_of="cloister/ort",
            ratio=None if gm is None else round(gm, 4), peer=peer, peer_value=1.0,
            note=f"over {len(have)} of {n_models} models" + (f"; left out (no figure): {', '.join(left)}" if left
                                                              else ""),
            **({"goal": g, "goal_on": "ratio"} if g else {}))
    w("| " + " | ".join(gm_cells) + " |")
    w("")
    errs = [(m, first_round(res.get(m, {}).get("cloister", {}).get("runs", []), "rel_err")) for m in order]
    within = [m for m, e in errs if e is not None and e <= ERR_GOAL]
    w(f"Accuracy: {len(within)} of {n_models} models within {ERR_GOAL:g} of the output range"
      + (f" (not: {', '.join(m for m, e in errs if m not in within)})" if len(within) < n_models else "") + ".")
    lefts = {metric: [m for m in order if m not in ratios[metric]] for metric, *_ in METRICS}
    if len({tuple(v) for v in lefts.values()}) == 1 and next(iter(lefts.values())):
        w(f"Left out of every geometric mean: {', '.join(next(iter(lefts.values())))} (no figure from a peer).")
    else:
        for metric, left in lefts.items():
            if left:
                w(f"Left out of the geometric mean of {metric}: {', '.join(left)} (no figure from a peer).")
    if failures:
        w("\nFailures (excluded from the geometric means):\n")
        for model, who, stage, why in failures:
            w(f"- {model}: {who} {'did not load' if stage == 'load' else 'failed'}: {why}")
    skipped = [m for m in order if any(r.get("b8_ips") is None and "b1_p50_ms" in r
                                       for r in res.get(m, {}).get("cloister", {}).get("runs", []))]
    if skipped:
        w(f"\nBatch 8 not measured for cloister (a batch-1 run took over {a.skip_over} s): {', '.join(skipped)}.")
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    bench_out = os.environ.get("CLOISTER_BENCH_OUT")
    if bench_out:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        cfg = {"kind": "config", "text": out[0].strip()}
        with open(os.path.join(bench_out, "engine-suite.jsonl"), "a") as f:
            for x in [cfg] + recs:
                x = {k: v for k, v in x.items() if v is not None or k in ("value", "peer_value", "ratio")}
                x.update(bench="engine-suite", time=now)
                f.write(json.dumps(x, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
