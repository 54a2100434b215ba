#!/usr/bin/python3
"""bench/soak/report.py — the soak's report (bench/soak/run.sh): requests and errors by status per load
stream (from the `cloister bench` rounds in STREAM.log), the server's RSS, fd and thread curves
(samples.csv: t, rss_kb, fds, threads) summed up, and soak.png with the three curves. The same figures go
to soak.json for the benchmark report (bench/report/make_report.py).

usage: report.py OUT_DIR SECONDS SERVER_EXIT_CODE STOP_SECONDS SANITIZER_LOGS [BUILD_DIR]
"""
import csv
import datetime
import json
import os
import re
import subprocess
import sys

out, seconds, rc, stop_s, sanitizer = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
streams = ["grpc-digits", "rest-digits", "grpc-r18", "rest-r18"]
commit = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse", "HEAD"],
                        capture_output=True, text=True).stdout.strip()
summary = {"seconds": seconds, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
           "git_commit": commit or None, "build": sys.argv[6] if len(sys.argv) > 6 else None, "streams": {},
           "stop_exit": rc, "stop_seconds": float(stop_s), "sanitizer": sanitizer}

print(f"soak: {seconds:.0f} s, four load streams over mutual TLS against one attested server")
total_ok = total_failed = 0
errors_all = {}
for s in streams:
    path = os.path.join(out, s + ".log")
    ok = failed = rounds = not_sent = 0
    errors = {}
    lat = []
    for line in open(path, errors="replace") if os.path.exists(path) else []:
        m = re.match(r"requests: (\d+) ok, (\d+) failed", line)
        if m:
            rounds += 1
            ok += int(m.group(1))
            failed += int(m.group(2))
        m = re.match(r"errors: \d+(.*)", line)
        if m:
            for code, n in re.findall(r"([A-Z_]+) (\d+)", m.group(1)):
                errors[code] = errors.get(code, 0) + int(n)
        m = re.match(r"latency ms: mean ([0-9.]+)\s+p50 ([0-9.]+)\s+p90 ([0-9.]+)\s+p99 ([0-9.]+)", line)
        if m:
            lat.append(float(m.group(4)))
        m = re.match(r"not sent: (\d+)", line)
        if m:
            not_sent += int(m.group(1))
    total_ok += ok
    total_failed += failed
    for k, v in errors.items():
        errors_all[k] = errors_all.get(k, 0) + v
    errs = ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none"
    p99 = f", worst round p99 {max(lat):.1f} ms" if lat else ""
    summary["streams"][s] = {"rounds": rounds, "ok": ok, "failed": failed, "errors": errors, "not_sent": not_sent,
                             "worst_p99_ms": max(lat) if lat else None}
    print(f"  {s:12s} {rounds:4d} rounds, {ok:8d} ok, {failed:6d} failed (errors: {errs}"
          f"{f'; not sent {not_sent}' if not_sent else ''}){p99}")
summary.update(total_ok=total_ok, total_failed=total_failed, errors=errors_all)
print(f"  total        {total_ok} ok, {total_failed} failed"
      f" ({', '.join(f'{k} {v}' for k, v in sorted(errors_all.items())) or 'no errors'})")

rows = []
with open(os.path.join(out, "samples.csv")) as f:
    for r in csv.DictReader(f):
        try:
            rows.append((float(r["t"]), int(r["rss_kb"]) / 1024, int(r["fds"]), int(r["threads"])))
        except (ValueError, TypeError):
            pass
if rows:
    t = [r[0] for r in rows]
    rss = [r[1] for r in rows]
    fds = [r[2] for r in rows]
    thr = [r[3] for r in rows]
    # under load only (the samples after SIGTERM show the stop), medians of two windows: 20-30 % of the
    # run and its last 10 %, so one sample does not make the trend
    def median(lo, hi):
        v = sorted(r for x, r in zip(t, rss) if lo <= x < hi)
        return v[len(v) // 2] if v else rss[-1]
    early, late = median(0.2 * seconds, 0.3 * seconds), median(0.9 * seconds, seconds)
    grow = (late - early) / early * 100 if early else 0
    print(f"server RSS: {rss[0]:.0f} MiB at start, {early:.0f} at 20-30 % of the run, {late:.0f} in its last 10 % "
          f"({grow:+.1f} %), peak {max(rss):.0f} (medians of the samples under load)")
    print(f"open fds: {min(fds)}-{max(fds)} (last {fds[-1]}); threads: {min(thr)}-{max(thr)} (last {thr[-1]})")
    summary.update(rss_start_mib=rss[0], rss_early_mib=early, rss_late_mib=late, rss_growth_pct=grow,
                   rss_peak_mib=max(rss), fds_min=min(fds), fds_max=max(fds), threads_min=min(thr), threads_max=max(thr))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
        ax[0].plot(t, rss)
        ax[0].set_ylabel("RSS (MiB)")
        ax[1].plot(t, fds, color="tab:orange")
        ax[1].set_ylabel("open fds")
        ax[2].plot(t, thr, color="tab:green")
        ax[2].set_ylabel("threads")
        ax[2].set_xlabel("seconds")
        ax[0].set_title(f"cloister serve soak: {total_ok} requests ok, {total_failed} failed")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "soak.png"), dpi=90)
        print(f"plot: {os.path.join(out, 'soak.png')}")
    except ImportError:
        print("plot: not made (python3-matplotlib is missing: scripts/deps.sh bench installs it)")
else:
    print("server RSS: no samples")
print(f"stop: SIGTERM -> exit {rc} in {stop_s} s; sanitizer reports: {sanitizer}")
with open(os.path.join(out, "soak.json"), "w") as f:
    json.dump(summary, f, indent=1)
