#!/usr/bin/python3
"""bench/report/make_report.py — the benchmark report: REPORT_DIR/report.md and its plots in REPORT_DIR/plots/,
rendered from the machine-readable results the benchmarks wrote (bench/run_all.sh, `make bench`). Only the
figures found in the result files are shown; a benchmark without results shows as "not run" with the reason
known (its status record, or that no result file exists), an unreadable line is listed with its file and line
number, and nothing is estimated or filled in.

usage: make_report.py REPORT_DIR [--results DIR] [--soak SOAK_DIR]
       make_report.py --machine OUT.json [--config TEXT]   (record the machine; bench/run_all.sh does it first)

Result files: RESULTS_DIR/*.jsonl (default REPORT_DIR/results), one JSON object per line, each with "bench"
(the benchmark's id) and "kind":
  figure   metric, value (null: the bench printed none), unit, better ("higher"/"lower"), and optionally model,
           peer + peer_value (the peer measured in the same run), ratio_of + ratio (as the bench printed it),
           goal (e.g. ">= 0.80") + goal_on ("ratio" or "value"), note
  latency  `cloister bench` percentiles: who, model, unit, mean, p50, p90, p99, max, optionally reference +
           reference_value (a peer's p50 drawn with them)
  config   text: how the bench ran
  status   status ("ok", "failed", "skipped"), exit, seconds, reason, command, log, load (bench/run_all.sh)
RESULTS_DIR/machine.json: the machine (--machine). SOAK_DIR: bench/soak/run.sh's output (soak.json from
bench/soak/report.py, samples.csv).
Needs Debian's python3 and python3-matplotlib (scripts/deps.sh bench).
"""
import argparse
import csv
import datetime
import glob
import json
import math
import os
import platform
import re
import subprocess
import sys

# the benchmarks `make bench` runs, in its order: id, title, what is compared
BENCHES = [
    ("seal", "Sealing (bench/seal/bench_seal)", "sealing and unsealing throughput vs `openssl speed -evp aes-256-gcm`"),
    ("keyserver", "Key server under slowloris (bench/keyserver/bench_keyserver)",
     "attested key releases per second under a slowloris load vs the same server unloaded"),
    ("release", "Key server store and releases (bench/keyserver/bench_release)",
     "audit appends, chain verification, attested releases and their locked memory (no peer)"),
    ("release-secrets", "Large releases (bench_release --secrets 8 --secret-size 1048576)",
     "releases of 8 secrets of 1 MiB each and the locked memory they need (no peer)"),
    ("dcap", "DCAP quote verification (bench/attest/bench_dcap)",
     "verifications with cached collateral vs the goal (1 ms) and the floor of two ECDSA checks"),
    ("engine", "Engine vs ONNX Runtime (bench/engine/run.sh)",
     "batch-1 latency and batch-8 throughput per model vs onnxruntime-node, same file, same threads (the goals, "
     "from issue 4, are set for ResNet-50)"),
    ("engine-suite", "Engine suite vs ONNX Runtime (bench/engine/suite/run.sh)",
     "eleven torchvision / torch.nn models (CNNs, segmentation, vision and text transformers): accuracy vs "
     "PyTorch, batch-1 latency, batch-8 throughput, load time and peak RSS per model vs onnxruntime-node on the "
     "same file with the same threads, and the geometric means (the goals are issue 13's)"),
    ("serve-rest", "REST over TLS vs nginx (bench/serve/run.sh)",
     "`cloister serve` REST :predict requests per second vs nginx serving a static body over TLS"),
    ("serve-grpc", "gRPC end to end vs engine only (bench/serve/grpc_latency.sh)",
     "ResNet-50 batch 1 through `cloister serve` (gRPC, mutual TLS) vs `cloister run` on the same input"),
    ("serve-omp", "OpenMP wait policy of `cloister serve` (bench/serve/omp_wait.sh)",
     "ResNet-50 batch 1 over gRPC with the default passive waiting vs libgomp's own default and vs active "
     "spinning, alone and beside busy processes (median of the rounds; no goal)"),
    ("client", "cloister bench vs Python grpcio (bench/client/run.sh)",
     "requests per second of two gRPC clients of the same server"),
]
KINDS = {"figure", "latency", "config", "status", "failure"}
FLAGS = ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
         "amx_tile", "amx_bf16", "amx_int8", "aes", "vaes", "vpclmulqdq", "sha_ni", "hypervisor"]
CLOISTER, PEER = "tab:blue", "tab:orange"


# ------------------------------------------------------------------------------------------- the machine

def _run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(config):
    """What the benchmarks run on, read from /proc, uname, /etc and git at the start of the run."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "configuration": config}
    cpu = {}
    try:
        for line in open("/proc/cpuinfo"):
            k, _, v = line.partition(":")
            k = k.strip()
            if k in ("model name", "flags", "cpu cores", "siblings") and k not in cpu:
                cpu[k] = v.strip()
    except OSError:
        pass
    info["cpu_model"] = cpu.get("model name")
    flags = set(cpu.get("flags", "").split())
    info["isa_flags"] = {f: f in flags for f in FLAGS} if flags else None
    info["logical_cpus"] = os.cpu_count()
    info["usable_cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info["cores_per_socket"] = int(cpu["cpu cores"]) if cpu.get("cpu cores", "").isdigit() else None
    try:
        mem = dict(line.split(":", 1) for line in open("/proc/meminfo"))
        info["memory_gib"] = round(int(mem["MemTotal"].split()[0]) / 1024 / 1024, 1)
    except (OSError, KeyError, ValueError):
        info["memory_gib"] = None
    u = platform.uname()
    info["kernel"] = f"{u.system} {u.release} {u.machine}"
    try:
        info["debian"] = open("/etc/debian_version").read().strip()
    except OSError:
        info["debian"] = None
    try:
        osr = dict(line.rstrip("\n").split("=", 1) for line in open("/etc/os-release") if "=" in line)
        info["os"] = osr.get("PRETTY_NAME", "").strip('"')
    except OSError:
        info["os"] = None
    try:
        info["load_average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        info["load_average"] = None
    info["git_commit"] = _run(["git", "-C", root, "rev-parse", "HEAD"]) or None
    info["git_subject"] = _run(["git", "-C", root, "log", "-1", "--format=%s"])[:120] or None
    info["git_dirty"] = bool(_run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"]))
    info["compiler"] = _run(["cc", "--version"]).split("\n")[0] or None
    pk = _run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "libdnnl-dev", "libssl-dev", "nginx-light",
               "python3-grpcio", "nodejs", "wrk"])
    info["packages"] = pk.split("\n") if pk else []
    ort = os.path.join(root, "bench", "node_modules", "onnxruntime-node", "package.json")
    try:
        info["onnxruntime_node"] = json.load(open(ort)).get("version")
    except (OSError, ValueError):
        info["onnxruntime_node"] = None
    return info


# ------------------------------------------------------------------------------------------- reading

def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_record(rec):
    """None when the record can be used, else why not."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    if not isinstance(rec.get("bench"), str) or not rec["bench"]:
        return "no \"bench\" name"
    kind = rec.get("kind")
    if kind not in KINDS:
        return f"unknown kind {kind!r}"
    if kind == "figure":
        if not isinstance(rec.get("metric"), str) or not isinstance(rec.get("unit"), str):
            return "a figure needs \"metric\" and \"unit\" strings"
        for k in ("value", "peer_value", "ratio"):
            if k in rec and rec[k] is not None and not _num(rec[k]):
                return f"\"{k}\" is not a number"
        if "goal" in rec and not isinstance(rec["goal"], str):
            return "\"goal\" is not a string"
    if kind == "latency":
        if not isinstance(rec.get("who"), str):
            return "a latency record needs \"who\""
        for k in ("mean", "p50", "p90", "p99", "max", "reference_value"):
            if k in rec and rec[k] is not None and not _num(rec[k]):
                return f"\"{k}\" is not a number"
    if kind == "failure":
        for k in ("model", "who", "reason"):
            if not isinstance(rec.get(k), str):
                return f"a failure record needs a \"{k}\" string"
    if kind == "status" and rec.get("status") not in ("ok", "failed", "skipped"):
        return "a status record needs status ok, failed or skipped"
    return None


def load_results(results_dir):
    """(records by bench id in file order, unreadable lines as (file, line, reason, excerpt), files read)"""
    by_bench, bad, files = {}, [], []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.jsonl"))):
        name = os.path.basename(path)
        files.append(name)
        with open(path, errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    bad.append((name, n, f"not JSON ({e.msg})", line.strip()[:80]))
                    continue
                why = check_record(rec)
                if why:
                    bad.append((name, n, why, line.strip()[:80]))
                    continue
                by_bench.setdefault(rec["bench"], []).append(rec)
    return by_bench, bad, files


# ------------------------------------------------------------------------------------------- figures

def fmt(v, unit=""):
    if not _num(v):
        return "no figure"
    a = abs(v)
    s = f"{v:,.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 0.1 else f"{v:.3g}"
    return f"{s} {unit}".strip()


def fmt_ratio(v):
    return f"{v:.3f}" if _num(v) else "no figure"


GOAL_RE = re.compile(r"^\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")


def goal_state(rec):
    """'met', 'not met', 'unknown (...)' or None (no goal)"""
    goal = rec.get("goal")
    if not goal:
        return None
    m = GOAL_RE.match(goal)
    if not m:
        return f"unknown (goal {goal!r} unreadable)"
    on = rec.get("goal_on", "ratio")
    x = rec.get("value") if on == "value" else rec.get("ratio")
    if not _num(x):
        return f"unknown (no {'figure' if on == 'value' else 'ratio'})"
    op, t = m.group(1), float(m.group(2))
    ok = {"<=": x <= t, ">=": x >= t, "<": x < t, ">": x > t}[op]
    return "met" if ok else "not met"


def goal_text(rec):
    if not rec.get("goal"):
        return "no goal set"
    on = rec.get("goal_on", "ratio")
    return f"{rec['goal']} {rec.get('unit', '') if on == 'value' else '(ratio)'}".strip()


def label(rec):
    return rec["metric"] + (f" [{rec['model']}]" if rec.get("model") else "")


def figure_row(rec, bench=None):
    state = goal_state(rec)
    cells = ([f"`{bench}`"] if bench else []) + [
        label(rec) + (f" — {rec['note']}" if rec.get("note") else ""),
        fmt(rec.get("value"), rec.get("unit", "")),
        rec.get("peer") or "no peer",
        fmt(rec.get("peer_value"), rec.get("unit", "")) if rec.get("peer") else "—",
        (f"{fmt_ratio(rec.get('ratio'))} ({rec['ratio_of']})" if rec.get("ratio_of") else "—"),
        goal_text(rec),
        {None: "—", "met": "met", "not met": "**not met**"}.get(state, state),
    ]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


FIG_HEAD = ("| figure | cloister | peer | peer's figure | ratio | goal | goal met? |\n"
            "| --- | ---: | --- | ---: | --- | --- | --- |")
SUM_HEAD = ("| bench | figure | cloister | peer | peer's figure | ratio | goal | goal met? |\n"
            "| --- | --- | ---: | --- | ---: | --- | --- | --- |")


# ------------------------------------------------------------------------------------------- plots

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "axes.axisbelow": True})
    return plt


def _bar_labels(ax, bars, unit_fmt="{:.1f}"):
    for b in bars:
        h = b.get_height()
        if _num(h) and h > 0:
            ax.annotate(unit_fmt.format(h), (b.get_x() + b.get_width() / 2, h), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 1), textcoords="offset points")


def _val_fmt(vals):
    top = max([abs(v) for v in vals if _num(v)] or [0])
    return "{:,.0f}" if top >= 100 else "{:.1f}" if top >= 10 else "{:.2f}"


def _pair_panel(ax, rec, ylabel, title, peer_label=None):
    """two bars: cloister's figure and its peer's, each labelled with its value; a missing figure is written
    as "no figure" where its bar would be (never drawn as 0)"""
    vals = [rec.get("value"), rec.get("peer_value")]
    bars = ax.bar([0, 1], [v if _num(v) else 0 for v in vals], 0.6, color=[CLOISTER, PEER])
    f = _val_fmt(vals)
    for b, v in zip(bars, vals):
        ax.annotate(f.format(v) if _num(v) else "no figure", (b.get_x() + b.get_width() / 2, v if _num(v) else 0),
                    ha="center", va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks([0, 1])
    peer = peer_label or rec.get("peer") or "peer"
    ax.set_xticklabels(["cloister", peer], fontsize=7)
    ax.set_ylabel(ylabel, fontsize=8)
    ratio = f"{rec['ratio_of']} = {fmt_ratio(rec.get('ratio'))}" if rec.get("ratio_of") else ""
    goal = f"\ngoal {rec['goal']}: {goal_state(rec)}" if rec.get("goal") else ""
    ax.set_title(f"{title}\n{ratio}{goal}", fontsize=8)
    ax.margins(y=0.18)


def _save(fig, plots, name):
    os.makedirs(plots, exist_ok=True)
    path = os.path.join(plots, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return "plots/" + name


def figs(recs, metric=None, prefix=None):
    out = [r for r in recs if r["kind"] == "figure"]
    if metric:
        out = [r for r in out if r["metric"] == metric]
    if prefix:
        out = [r for r in out if r["metric"].startswith(prefix)]
    return out


def plot_ratios(by_bench, plots):
    plt = _plt()
    rows = [(b, r) for b, _, _ in BENCHES for r in figs(by_bench.get(b, []))
            if r.get("ratio_of") and _num(r.get("ratio")) and r.get("peer")]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(11, 0.32 * len(rows) + 1.6))
    ys = list(range(len(rows)))[::-1]
    colours = []
    for b, r in rows:
        st = goal_state(r) if r.get("goal_on", "ratio") == "ratio" else None
        colours.append("tab:green" if st == "met" else "tab:red" if st == "not met" else "tab:gray")
    ax.barh(ys, [r["ratio"] for _, r in rows], color=colours, height=0.6)
    for y, (b, r) in zip(ys, rows):
        ax.annotate(f"{r['ratio']:.2f}", (r["ratio"], y), xytext=(3, 0), textcoords="offset points", va="center",
                    fontsize=7)
        m = GOAL_RE.match(r.get("goal") or "")
        if m and r.get("goal_on", "ratio") == "ratio":
            ax.plot([float(m.group(2))] * 2, [y - 0.4, y + 0.4], color="black", lw=2)
    ax.axvline(1.0, color="black", lw=0.8, ls=":")
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{b}: {label(r)} ({r['ratio_of']})" for b, r in rows], fontsize=7)
    ax.set_xlabel("ratio as defined per row (1.0 = parity with the peer)")
    ax.set_title("cloister against its peers, every ratio of the run\n"
                 "green: goal met, red: goal not met, grey: no goal on the ratio; black tick: the goal", fontsize=9)
    return _save(fig, plots, "ratios.png")


def plot_engine(recs, plots):
    lat, ips = figs(recs, "batch-1 p50 latency"), figs(recs, "batch-8 throughput")
    models = []
    for r in lat + ips:
        if r.get("model", "?") not in models:
            models.append(r.get("model", "?"))
    if not models:
        return None
    plt = _plt()
    fig, ax = plt.subplots(2, len(models), figsize=(2.7 * len(models) + 1, 6.4), squeeze=False)
    for j, m in enumerate(models):
        for i, (rs, yl, t) in enumerate(((lat, "ms, batch 1 (lower is better)", "batch-1 p50 latency"),
                                         (ips, "images/s, batch 8 (higher is better)", "batch-8 throughput"))):
            r = next((r for r in rs if r.get("model", "?") == m), None)
            if r:
                _pair_panel(ax[i][j], r, yl, f"{m}: {t}", "ONNX Runtime")
            else:
                ax[i][j].axis("off")
                ax[i][j].text(0.5, 0.5, f"{m}: {t}\nnot measured", ha="center", va="center", fontsize=8)
    fig.suptitle("Engine: cloister vs ONNX Runtime (onnxruntime-node) per model: same ONNX file, same threads, "
                 "best of the rounds", fontsize=10)
    return _save(fig, plots, "engine.png")


def plot_serve(rest, grpc, plots):
    panels = []
    for r in figs(rest, prefix="REST"):
        panels.append((r, "requests/s (higher is better)", "REST :predict (digits) over TLS", "nginx, static"))
    for r in figs(rest, prefix="server CPU"):
        panels.append((r, "server CPU µs per request (lower is better)", "REST: server CPU per request", "nginx"))
    for r in figs(grpc, prefix="batch-1 p50 latency end to end"):
        panels.append((r, "ms, ResNet-50 batch 1 (lower is better)", "gRPC mTLS end to end", "engine only"))
    if not panels:
        return None
    plt = _plt()
    fig, ax = plt.subplots(1, len(panels), figsize=(3.3 * len(panels) + 0.6, 4), squeeze=False)
    for a, (r, yl, t, peer) in zip(ax[0], panels):
        _pair_panel(a, r, yl, t, peer)
    fig.suptitle("Model server against its peers (REST: nginx serving a static body; gRPC: the engine alone)",
                 fontsize=10)
    return _save(fig, plots, "serve.png")


def plot_client(recs, plots):
    rs = figs(recs, prefix="requests/s")
    if not rs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(1, len(rs), figsize=(2.6 * len(rs) + 0.6, 4), squeeze=False)
    for a, r in zip(ax[0], rs):
        _pair_panel(a, r, "requests/s (higher is better)", r["metric"].replace("requests/s, ", ""), "grpcio")
    fig.suptitle("gRPC clients of the same server (digits, mutual TLS): cloister bench vs Python grpcio", fontsize=10)
    return _save(fig, plots, "client.png")


def plot_latency(by_bench, plots):
    lats = [r for b in ("serve-grpc", "client") for r in by_bench.get(b, []) if r["kind"] == "latency"]
    lats += [r for b, recs in by_bench.items() if b not in ("serve-grpc", "client") for r in recs
             if r["kind"] == "latency"]
    lats = [r for r in lats if any(_num(r.get(k)) for k in ("p50", "p90", "p99", "max"))]
    if not lats:
        return None
    models = []
    for r in lats:
        if r.get("model", "?") not in models:
            models.append(r.get("model", "?"))
    plt = _plt()
    per = max(sum(1 for r in lats if r.get("model", "?") == m) + any(
        _num(r.get("reference_value")) for r in lats if r.get("model", "?") == m) for m in models)
    fig, ax = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4 + 0.18 * per), squeeze=False)
    ks = ["p50", "p90", "p99", "max"]
    for a, m in zip(ax[0], models):
        for r in [r for r in lats if r.get("model", "?") == m]:
            xs = [i for i, k in enumerate(ks) if _num(r.get(k))]
            a.plot(xs, [r[ks[i]] for i in xs], marker="o", label=r["who"])
            if _num(r.get("reference_value")):
                a.axhline(r["reference_value"], color=PEER, ls="--", lw=1.2,
                          label=f"{r.get('reference', 'reference')}: {r['reference_value']:.2f} ms")
        a.set_xticks(range(len(ks)))
        a.set_xticklabels(ks)
        a.set_yscale("log")
        from matplotlib.ticker import FuncFormatter
        a.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        a.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
        a.tick_params(axis="y", which="minor", labelsize=7)
        a.set_xlabel("percentile of the measured requests")
        a.set_ylabel(f"latency ({lats[0].get('unit', 'ms')}, log scale)")
        a.set_title(f"cloister bench latency percentiles: {m}", fontsize=9)
        a.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    return _save(fig, plots, "latency.png")


def plot_seal(recs, plots):
    rs = figs(recs)
    if not rs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    vals = [r.get("value") if _num(r.get("value")) else math.nan for r in rs]
    ref = [r["metric"].startswith("ceiling") for r in rs]
    bars = ax.bar(range(len(rs)), vals, 0.6, color=["tab:gray" if x else CLOISTER for x in ref])
    bars[ref.index(False) if False in ref else 0].set_label("cloister")
    if True in ref:
        bars[ref.index(True)].set_label("plain copy, no crypto (the I/O ceiling of file -> file)")
    _bar_labels(ax, bars, "{:,.0f}")
    peer = next((r for r in rs if _num(r.get("peer_value"))), None)
    if peer:
        ax.axhline(peer["peer_value"], color=PEER, ls="--", label=f"{peer['peer']}: {peer['peer_value']:,.0f} MB/s")
        goal = next((r for r in rs if r.get("goal") and _num(r.get("peer_value"))), None)
        m = GOAL_RE.match(goal["goal"]) if goal else None
        if m:
            ax.axhline(goal["peer_value"] * float(m.group(2)), color="tab:red", ls=":",
                       label=f"goal: ratio {goal['goal']} (the streaming paths)")
    ax.set_xticks(range(len(rs)))
    ax.set_xticklabels([r["metric"].replace(": ", ":\n").replace(" -> ", " →\n") for r in rs], fontsize=7)
    ax.set_ylabel("MB/s (higher is better)")
    ax.set_title("Sealing throughput vs OpenSSL's AES-256-GCM on one core", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax.margins(y=0.2)
    return _save(fig, plots, "seal.png")


def plot_soak(rows, summary, plots):
    plt = _plt()
    t = [r[0] for r in rows]
    fig, ax = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    for a, i, yl, col in ((ax[0], 1, "RSS (MiB)", "tab:blue"), (ax[1], 2, "open file descriptors", "tab:orange"),
                          (ax[2], 3, "threads", "tab:green")):
        a.plot(t, [r[i] for r in rows], color=col)
        a.set_ylabel(yl)
        if i > 1:
            from matplotlib.ticker import MaxNLocator
            a.yaxis.set_major_locator(MaxNLocator(integer=True))
        if summary.get("seconds"):
            a.axvline(summary["seconds"], color="gray", ls=":", lw=1)
    ax[2].set_xlabel("seconds since the server was up (dotted: the soak's set duration, where the load stops; then SIGTERM)")
    ok, bad = summary.get("total_ok"), summary.get("total_failed")
    ax[0].set_title("soak: cloister serve under mixed gRPC + REST load"
                    + (f" ({ok:,} requests ok, {bad:,} failed)" if _num(ok) and _num(bad) else ""), fontsize=9)
    return _save(fig, plots, "soak.png")


# ------------------------------------------------------------------------------------------- the report

def _busy(machine):
    """a note when the load average at the start exceeded the usable CPUs, else ''"""
    try:
        load1 = float((machine or {}).get("load_average", "").split()[0])
        cpus = int(machine.get("usable_cpus") or machine.get("logical_cpus"))
    except (ValueError, TypeError, IndexError, AttributeError):
        return ""
    return f"load average {load1:.2f} on {cpus} CPUs" if load1 > cpus else ""


def md_img(path, alt):
    return f"![{alt}]({path})"


def bench_state(bid, recs, results_rel):
    """(state word, explanation) of one benchmark"""
    status = [r for r in recs if r["kind"] == "status"]
    data = [r for r in recs if r["kind"] in ("figure", "latency")]
    st = status[-1] if status else None
    if st and st["status"] == "skipped":
        return "not run", st.get("reason", "skipped (no reason recorded)")
    if st and st["status"] == "failed":
        why = st.get("reason") or f"exit status {st.get('exit')}"
        log = f"; its output: [{st['log']}]({st['log']})" if st.get("log") else ""
        return "failed", f"{why}{log}" + ("; the figures below are those it reported before it failed" if data else
                                          "; it reported no figures")
    if st and not data:
        return "no figures", (f"it exited {st.get('exit')} after {st.get('seconds')} s but reported no figures "
                              f"(see [{st.get('log')}]({st.get('log')}))")
    if not recs:
        return "not run", (f"no results for it in {results_rel}/ (it was not part of this run, or the run stopped "
                           f"before it; `make bench` runs it)")
    if st:
        return "ok", f"ran in {fmt(st.get('seconds'), 's')}, exit 0" + (
            f", load average {st['load']} at its end" if st.get("load") else "") + (
            f"; its output: [{st['log']}]({st['log']})" if st.get("log") else "")
    return "ok", "ran outside bench/run_all.sh (no status recorded)"


def read_soak(soak_dir):
    """(summary dict, samples) or (None, reason)"""
    if not soak_dir:
        return None, "no soak directory given (bench/run_all.sh passes build-asan/soak or $SOAK_OUT)"
    path = os.path.join(soak_dir, "soak.json")
    if not os.path.exists(path):
        return None, f"no soak result in {soak_dir} (`make soak` or bench/soak/run.sh writes one)"
    try:
        summary = json.load(open(path))
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        return None, f"{path} is unreadable ({e})"
    rows = []
    try:
        with open(os.path.join(soak_dir, "samples.csv")) as f:
            for r in csv.DictReader(f):
                try:
                    rows.append((float(r["t"]), int(r["rss_kb"]) / 1024, int(r["fds"]), int(r["threads"])))
                except (ValueError, TypeError, KeyError):
                    pass
    except OSError:
        pass
    return summary, rows


def render(report_dir, results_dir, soak_dir):
    by_bench, bad, files = load_results(results_dir)
    plots = os.path.join(report_dir, "plots")
    results_rel = os.path.relpath(results_dir, report_dir)
    try:
        machine = json.load(open(os.path.join(results_dir, "machine.json")))
    except (OSError, ValueError):
        machine = None
    try:
        _plt()
        have_plt, no_plot = True, ""
    except ImportError:
        have_plt, no_plot = False, "python3-matplotlib is missing (scripts/deps.sh bench installs it)"
    out = []
    w = out.append
    w("# cloister benchmark report\n")
    if machine:
        w(f"Run of {machine.get('date', '?')}, commit `{(machine.get('git_commit') or '?')[:12]}`"
          f"{' (with uncommitted changes)' if machine.get('git_dirty') else ''}"
          f"{': ' + machine['git_subject'] if machine.get('git_subject') else ''}; "
          f"configuration: {machine.get('configuration') or 'not recorded'}.\n")
    else:
        w(f"The machine and time of the run were not recorded ({results_rel}/machine.json is missing or unreadable).\n")
    busy = _busy(machine)
    if busy:
        w(f"**The machine was busy when the run started** ({busy}): other work shared the cores, so the figures "
          "say less than usual about cloister; each bench's load average at its end is shown in its section.\n")
    w("Every figure below was measured in this run and comes from the result files in "
      f"[{results_rel}/]({results_rel}/); each is compared with a peer measured in the same run where the bench "
      "has one. Speed depends on the machine and on what else runs on it: see the load average below.\n")

    # the machine
    w("## Machine\n")
    if machine:
        fl = machine.get("isa_flags")
        flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in fl.items()) if fl else "not recorded"
        rows = [("CPU", machine.get("cpu_model")), ("ISA flags", flags),
                ("CPUs", f"{machine.get('logical_cpus')} logical ({machine.get('usable_cpus')} usable by the run), "
                         f"{machine.get('cores_per_socket')} cores per socket"),
                ("memory", fmt(machine.get("memory_gib"), "GiB")), ("kernel", machine.get("kernel")),
                ("Debian", f"{machine.get('debian')} ({machine.get('os')})"),
                ("load average at the start", machine.get("load_average")),
                ("git commit", machine.get("git_commit")), ("date", machine.get("date")),
                ("compiler", machine.get("compiler")),
                ("peers' packages", ", ".join(machine.get("packages") or []) or "not recorded"),
                ("onnxruntime-node", machine.get("onnxruntime_node") or "not installed")]
        w("| | |\n| --- | --- |")
        for k, v in rows:
            w(f"| {k} | {str(v if v is not None else 'not recorded').replace('|', '/')} |")
        w("")
    else:
        w("Not recorded.\n")

    # summary
    w("## Summary\n")
    ran, not_run = [], []
    for bid, title, _ in BENCHES:
        state, why = bench_state(bid, by_bench.get(bid, []), results_rel)
        (not_run if state == "not run" else ran).append((bid, state, why))
    all_figs = [(b, r) for b, _, _ in BENCHES for r in figs(by_bench.get(b, []))]
    extra = sorted(b for b in by_bench if b not in {x[0] for x in BENCHES})
    all_figs += [(b, r) for b in extra for r in figs(by_bench[b])]
    goals = [goal_state(r) for _, r in all_figs if r.get("goal")]
    w(f"{len(ran)} of {len(BENCHES)} benchmarks ran"
      f"{' (' + ', '.join(f'`{b}` {s}' for b, s, _ in ran if s != 'ok') + ')' if any(s != 'ok' for _, s, _ in ran) else ''}"
      f"; {len(all_figs)} figures; goals: {goals.count('met')} met, {goals.count('not met')} not met"
      f"{', ' + str(len(goals) - goals.count('met') - goals.count('not met')) + ' unknown' if len(goals) > goals.count('met') + goals.count('not met') else ''}.\n")
    if not_run:
        w("Not run:\n")
        for bid, _, why in not_run:
            w(f"- `{bid}`: not run — {why}")
        w("")
    if bad:
        w(f"Unreadable result lines (left out of the report, {len(bad)}):\n")
        for name, n, why, excerpt in bad:
            w(f"- `{results_rel}/{name}:{n}`: {why}: `{excerpt.replace('`', '')}`")
        w("")
    if have_plt:
        p = plot_ratios(by_bench, plots)
        if p:
            w(md_img(p, "ratios of cloister to its peers with their goals") + "\n")
    if all_figs:
        w(SUM_HEAD)
        for b, r in all_figs:
            w(figure_row(r, b))
        w("")

    # per bench
    made = {}
    if have_plt:
        made["seal"] = plot_seal(by_bench.get("seal", []), plots)
        made["engine"] = plot_engine(by_bench.get("engine", []), plots)
        made["serve-rest"] = made["serve-grpc"] = plot_serve(by_bench.get("serve-rest", []),
                                                             by_bench.get("serve-grpc", []), plots)
        made["client"] = plot_client(by_bench.get("client", []), plots)
        made["latency"] = plot_latency(by_bench, plots)
    shown = set()
    for bid, title, what in BENCHES + [(b, b, "results of a benchmark this report does not know") for b in extra]:
        recs = by_bench.get(bid, [])
        state, why = bench_state(bid, recs, results_rel)
        w(f"## {title}\n")
        w(f"{what}. Status: **{state}** — {why}.\n")
        for r in recs:
            if r["kind"] == "config":
                w(f"Settings: {r.get('text', '')}\n")
        fails = [r for r in recs if r["kind"] == "failure"]
        if fails:
            w("Failures (no figures from that peer for that model):\n")
            for r in fails:
                w(f"- {r['model']}: {r['who']} {'did not load' if r.get('stage') == 'load' else 'failed'}: "
                  f"{r['reason'].replace(chr(10), ' ')}")
            w("")
        fs = figs(recs)
        if fs:
            w(FIG_HEAD)
            for r in fs:
                w(figure_row(r))
            w("")
        lats = [r for r in recs if r["kind"] == "latency"]
        if lats:
            w("`cloister bench` latency percentiles:\n")
            w("| who | model | mean | p50 | p90 | p99 | max |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |")
            for r in lats:
                u = r.get("unit", "ms")
                w(f"| {r['who']} | {r.get('model', '')} | " + " | ".join(fmt(r.get(k), u) for k in
                                                                          ("mean", "p50", "p90", "p99", "max")) + " |")
            w("")
        plot = made.get(bid)
        if plot and plot not in shown and (fs or lats):
            shown.add(plot)
            w(md_img(plot, title) + "\n")
        elif not have_plt and (fs or lats):
            w(f"Plot not made: {no_plot}.\n")
        if bid == "client" or (bid == "serve-grpc" and not by_bench.get("client")):
            lp = made.get("latency")
            if lp and lp not in shown:
                shown.add(lp)
                w(md_img(lp, "cloister bench latency percentiles") + "\n")

    # soak
    w("## Soak (bench/soak/run.sh, `make soak`)\n")
    summary, rows = read_soak(soak_dir)
    if summary is None:
        w(f"Not run — {rows}.\n")
    else:
        s = summary
        w(f"Soak of {s.get('date', 'an unrecorded date')} (commit `{(s.get('git_commit') or '?')[:12]}`), "
          f"{fmt(s.get('seconds'), 's')} against `{s.get('build', '?')}`; from "
          f"[{soak_dir}]({os.path.relpath(soak_dir, report_dir)}).\n")
        w("| stream | rounds | ok | failed | errors by status | worst round p99 |\n| --- | ---: | ---: | ---: | --- | ---: |")
        for name, st in (s.get("streams") or {}).items():
            errs = ", ".join(f"{k} {v}" for k, v in sorted((st.get("errors") or {}).items())) or "none"
            w(f"| {name} | {st.get('rounds')} | {st.get('ok')} | {st.get('failed')} | {errs} | "
              f"{fmt(st.get('worst_p99_ms'), 'ms') if st.get('worst_p99_ms') is not None else '—'} |")
        w("")
        checks = [("requests failed", s.get("total_failed"), "0", s.get("total_failed") == 0),
                  ("server RSS growth, 20-30 % of the run to its last 10 %", fmt(s.get("rss_growth_pct"), "%"),
                   "reported, no goal", None),
                  ("server RSS peak", fmt(s.get("rss_peak_mib"), "MiB"), "reported, no goal", None),
                  ("open fds (min-max)", f"{s.get('fds_min')}-{s.get('fds_max')}", "reported, no goal", None),
                  ("threads (min-max)", f"{s.get('threads_min')}-{s.get('threads_max')}", "reported, no goal", None),
                  ("SIGTERM: exit status, seconds", f"{s.get('stop_exit')}, {s.get('stop_seconds')} s",
                   "exit 0 within 30 s", s.get("stop_exit") == 0 and _num(s.get("stop_seconds")) and
                   s["stop_seconds"] <= 30),
                  ("sanitizer reports", s.get("sanitizer"), "none", s.get("sanitizer") == "none")]
        w("| figure | value | goal | goal met? |\n| --- | --- | --- | --- |")
        for k, v, g, ok in checks:
            w(f"| {k} | {v} | {g} | {'—' if ok is None else 'met' if ok else '**not met**'} |")
        w("")
        if rows and have_plt:
            w(md_img(plot_soak(rows, s, plots), "soak: RSS, fds and threads over time") + "\n")
        elif not rows:
            w(f"Plot not made: no samples in {soak_dir}/samples.csv.\n")
        else:
            w(f"Plot not made: {no_plot}.\n")

    w("---\nRendered by bench/report/make_report.py from " + (", ".join(files) if files else "no result files") + ".")
    os.makedirs(report_dir, exist_ok=True)
    with open(os.path.join(report_dir, "report.md"), "w") as f:
        f.write("\n".join(out) + "\n")
    return len(bad)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report_dir", nargs="?")
    ap.add_argument("--results", help="the result files (default REPORT_DIR/results)")
    ap.add_argument("--soak", help="a soak output directory (bench/soak/run.sh)")
    ap.add_argument("--machine", metavar="OUT", help="only record the machine into OUT (JSON)")
    ap.add_argument("--config", default="", help="with --machine: the run's configuration, as text")
    a = ap.parse_args()
    if a.machine:
        with open(a.machine, "w") as f:
            json.dump(machine_info(a.config), f, indent=1)
        return 0
    if not a.report_dir:
        ap.error("REPORT_DIR is needed (or --machine OUT)")
    results = a.results or os.path.join(a.report_dir, "results")
    if not os.path.isdir(results):
        print(f"make_report.py: {results} is not a directory (run `make bench`, which writes it)", file=sys.stderr)
        return 1
    bad = render(a.report_dir, results, a.soak)
    print(f"make_report.py: {os.path.join(a.report_dir, 'report.md')}"
          + (f" ({bad} unreadable result lines listed in it)" if bad else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
