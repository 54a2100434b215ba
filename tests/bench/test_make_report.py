#!/usr/bin/python3
"""tests/bench/test_make_report.py — the benchmark report's renderer (bench/report/make_report.py) on a fixture
of result files (tests/bench/report-fixture: some benches ran, one failed, one was skipped, two have no file,
lines that are not JSON, not an object, or carry a non-number; a soak result). No benchmark runs.

Checks: every valid figure is in the summary table with its peer, ratio, goal and the goal's state computed
from the figures (met / not met / none); a missing figure shows as "no figure" and no number stands in for
it; benches without results are listed as "not run" with their reason; unreadable lines are listed with
file and line number and left out; the plots are real PNGs referenced by the report, and the plot of a bench
that did not run is not made; the soak's figures and curves are included; --machine records this machine.

usage: test_make_report.py (run by ctest as bench.report)
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
renderer = os.path.join(root, "bench", "report", "make_report.py")
fixture = os.path.join(here, "report-fixture")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}")


def row_of(md, bench, figure):
    """the summary table's row for one figure, as its cells"""
    for line in md.splitlines():
        if line.startswith(f"| `{bench}` | {figure}"):
            return [c.strip() for c in line.strip().strip("|").split(" | ")]
    return None


def main():
    tmp = tempfile.mkdtemp(prefix="cloister-report-test-")
    try:
        report = os.path.join(tmp, "report")
        shutil.copytree(os.path.join(fixture, "results"), os.path.join(report, "results"))
        p = subprocess.run([sys.executable, renderer, report, "--soak", os.path.join(fixture, "soak")],
                           capture_output=True, text=True, timeout=120)
        check(p.returncode == 0, f"renderer exit status 0 (got {p.returncode}: {p.stderr.strip()[-500:]})")
        check("4 unreadable result lines" in p.stdout, f"renderer says how many lines it could not read: {p.stdout!r}")
        md = open(os.path.join(report, "report.md")).read()

        # the machine, from machine.json
        check("Fixture CPU 9000" in md and "avx512_vnni yes" in md and "avx512_bf16 no" in md,
              "machine: CPU model and ISA flags from machine.json")
        check("0123456789abcdef0123456789abcdef01234567" in md and "Linux 6.1.0-fixture" in md and "12.8" in md,
              "machine: commit, kernel, Debian version")

        # figures: value, peer, peer's value, ratio, goal and its state as computed from the ratio
        r = row_of(md, "engine", "batch-1 p50 latency [resnet50]")
        check(r and r[2] == "21.8 ms" and r[3] == "ONNX Runtime" and r[4] == "23.5 ms" and r[5].startswith("0.928")
              and r[6] == "<= 0.95 (ratio)" and r[7] == "met", f"engine latency row: {r}")
        r = row_of(md, "engine", "batch-8 throughput [resnet50]")
        check(r and r[5].startswith("1.020") and r[6] == ">= 1.05 (ratio)" and r[7] == "**not met**",
              f"engine throughput row (1.02 against >= 1.05 is not met): {r}")
        r = row_of(md, "seal", "unseal file -> file")
        check(r and r[7] == "**not met**", f"seal unseal row (0.495 against >= 0.80): {r}")
        r = row_of(md, "seal", "open file -> locked memory")
        check(r and r[7] == "met", f"seal open row (1.034 against >= 0.80): {r}")
        r = row_of(md, "dcap", "sgx_quote: one verification, 1 thread")
        check(r and r[6] == "<= 1000 us" and r[7] == "**not met**", f"dcap row: the goal is on the value (1210 us): {r}")
        r = row_of(md, "client", "requests/s, batch 1, 1 connection(s) [digits]")
        check(r and r[6] == "no goal set" and r[7] == "—", f"client row without a goal: {r}")
        # a figure the bench did not print: "no figure", never a number
        r = row_of(md, "engine", "batch-8 throughput [squeezenet1_1]")
        check(r and r[2] == "no figure" and r[4] == "400 img/s" and r[5].startswith("no figure"),
              f"missing figure shown as such: {r}")
        # the summary has exactly the valid figure records of the fixture, none invented
        valid = 0
        for name in os.listdir(os.path.join(fixture, "results")):
            if name.endswith(".jsonl"):
                for line in open(os.path.join(fixture, "results", name)):
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(rec, dict) and rec.get("kind") == "figure" and (
                            rec.get("value") is None or isinstance(rec.get("value"), (int, float))):
                        valid += 1
        rows = [l for l in md.splitlines() if re.match(r"^\| `[a-z-]+` \| ", l)]
        check(len(rows) == valid, f"summary rows = valid figure records ({len(rows)} vs {valid})")
        check("7 of 11 benchmarks ran" in md and "goals: 3 met, 4 not met" in md,
              "summary line counts benches and goals")

        # benches without results: not run, with the reason
        check(re.search(r"- `release`: not run — no results for it in results/", md) is not None,
              "release (no result file) listed as not run with the reason")
        check(re.search(r"- `serve-rest`: not run — no results", md) is not None, "serve-rest listed as not run")
        check('- `release-secrets`: not run — not selected (BENCH_ONLY="seal engine")' in md,
              "skipped bench listed with its recorded reason")
        check("Status: **failed** — exit status 1 after 19.0 s: bench_keyserver: server: cannot bind" in md,
              "failed bench: status and reason")
        rest = md.split("## REST over TLS vs nginx")[1].split("\n## ")[0]
        check("| figure |" not in rest and "req/s" not in rest and ".png" not in rest,
              "no figure, table or plot in the section of a bench that did not run")

        # unreadable lines: file and line, and left out
        for n, why in ((4, "not JSON"), (6, "not a JSON object"), (7, '"value" is not a number')):
            check(f"`results/engine.jsonl:{n}`: {why}" in md, f"engine.jsonl:{n} listed as unreadable ({why})")
        check("`results/engine-suite.jsonl:4`: a failure record needs a \"reason\" string" in md,
              "a failure record without its reason is listed as unreadable")
        suite = md.split("## Engine suite vs ONNX Runtime")[1].split("\n## ")[0]
        check("- gpt_decoder: cloister did not load: node 12 'Foo': unsupported operator 'Foo'" in suite,
              "engine suite: a model cloister could not load is listed with the reason")
        check("| batch-1 p50 latency [vit_b_16] | 612 ms | ONNX Runtime | 300 ms | 2.040 (cloister/ort) | <= 1.0 (ratio)"
              " | **not met** |" in suite, "engine suite: a figure with its ratio and issue 13's goal")
        check("[resnet50] | lots" not in md and "peak RSS [resnet50]" not in md, "the malformed figure is left out")

        # latency percentiles and the soak
        check("| cloister serve, gRPC mTLS | resnet50 | 24.5 ms | 24.3 ms | 25.1 ms | 27.9 ms | 28.4 ms |" in md,
              "gRPC latency percentiles table")
        check("| requests failed | 1 | 0 | **not met** |" in md and "| rest-digits | 3 | 1199 | 1 | UNAVAILABLE 1 |" in md,
              "soak: streams and its checks")

        # plots: real PNGs, referenced; none for what did not run
        plots = os.path.join(report, "plots")
        want = ["ratios.png", "seal.png", "engine.png", "serve.png", "client.png", "latency.png", "soak.png"]
        for name in want:
            path = os.path.join(plots, name)
            ok = os.path.exists(path) and open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n" and \
                os.path.getsize(path) > 10000
            check(ok, f"plot {name} is a PNG of some size")
            check(f"](plots/{name})" in md, f"report shows plots/{name}")
        check(sorted(os.listdir(plots)) == sorted(want), f"only these plots are made: {sorted(os.listdir(plots))}")

        # without a soak result: "not run" with the reason, no soak plot
        shutil.rmtree(plots)
        p = subprocess.run([sys.executable, renderer, report, "--soak", os.path.join(tmp, "nothing")],
                           capture_output=True, text=True, timeout=120)
        md = open(os.path.join(report, "report.md")).read()
        check(p.returncode == 0 and f"Not run — no soak result in {os.path.join(tmp, 'nothing')}" in md
              and not os.path.exists(os.path.join(plots, "soak.png")), "no soak result: not run, no plot")

        # an empty results directory: every bench not run, no plots, no figures
        empty = os.path.join(tmp, "empty")
        os.makedirs(os.path.join(empty, "results"))
        p = subprocess.run([sys.executable, renderer, empty], capture_output=True, text=True, timeout=120)
        md = open(os.path.join(empty, "report.md")).read()
        check(p.returncode == 0 and md.count(": not run — ") == 11 and "0 of 11 benchmarks ran" in md
              and not os.path.exists(os.path.join(empty, "plots")) and "were not recorded" in md,
              "empty results: eleven benches not run, no plots, machine not recorded")

        # --machine: this machine, as JSON
        mj = os.path.join(tmp, "machine.json")
        p = subprocess.run([sys.executable, renderer, "--machine", mj, "--config", "test"], capture_output=True,
                           text=True, timeout=60)
        m = json.load(open(mj)) if p.returncode == 0 else {}
        check(m.get("configuration") == "test" and m.get("logical_cpus") == os.cpu_count()
              and isinstance(m.get("isa_flags"), dict) and "avx2" in m["isa_flags"] and m.get("kernel"),
              f"--machine records this machine: {sorted(m)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_make_report: {'FAILED: ' + str(len(failures)) if failures else 'all checks passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
