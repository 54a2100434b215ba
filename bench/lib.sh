# bench/lib.sh — sourced by the benchmark scripts: a scratch directory that is removed on exit together
# with every process whose pid the script adds to `pids`, free ports, and the machine-readable results
# (bench_emit) that bench/report/make_report.py turns into the report.
# Usage: source "$root/bench/lib.sh"; bench_workdir NAME   (then: cd'ed into $work)

# bench_workdir NAME — creates $work (…/cloister-bench-NAME-XXXXXX), cd's into it, arms the cleanup
bench_workdir() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/cloister-bench-$1-XXXXXX")
  pids=()
  trap bench_cleanup EXIT
  cd "$work"
}

bench_cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}

# port — a free TCP port on 127.0.0.1
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# bench_emit BENCH KEY=TEXT... KEY:=NUMBER... — when $CLOISTER_BENCH_OUT names a directory, appends one
# JSON object (one line) to $CLOISTER_BENCH_OUT/BENCH.jsonl; nothing otherwise. The keys are those of
# bench/bench_out.h (kind defaults to "figure"; metric, model, value, unit, better, peer, peer_value,
# ratio_of, ratio, goal, goal_on, note; kind=config with text=...; kind=latency with who, model, unit and
# mean/p50/p90/p99/max). A NUMBER that is empty or not a number (a figure the script could not read from
# the bench's output) is written as null, which the report shows as "no figure" rather than a guess.
bench_emit() {
  [[ -n ${CLOISTER_BENCH_OUT:-} ]] || return 0
  /usr/bin/python3 - "$@" <<'PY' || echo "bench_emit: could not append a result to $CLOISTER_BENCH_OUT/$1.jsonl" >&2
import datetime, json, math, os, sys
bench = sys.argv[1]
rec = {"kind": "figure"}
for arg in sys.argv[2:]:
    key, sep, val = arg.partition("=")
    if not sep:
        sys.exit(f"bench_emit: '{arg}' is not KEY=TEXT or KEY:=NUMBER")
    if key.endswith(":"):
        try:
            num = float(val)
            rec[key[:-1]] = num if math.isfinite(num) else None
        except ValueError:
            rec[key[:-1]] = None
    else:
        rec[key] = val
rec["bench"] = bench
rec["time"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
with open(os.path.join(os.environ["CLOISTER_BENCH_OUT"], bench + ".jsonl"), "a") as f:
    f.write(json.dumps(rec, sort_keys=True) + "\n")
PY
}

# bench_emit_latency BENCH WHO MODEL "LATENCY LINE" [KEY=VALUE...] — a `cloister bench` latency line
# ("latency ms: mean 0.561  p50 0.554  p90 0.745  p99 0.905  max 1.347") as a kind=latency record
bench_emit_latency() {
  local bench=$1 who=$2 model=$3 line=$4 args=() k
  shift 4
  for k in mean p50 p90 p99 max; do
    args+=("$k:=$(sed -n -E "s/.* $k ([0-9.]+).*/\1/p" <<<"$line")")
  done
  bench_emit "$bench" kind=latency who="$who" model="$model" unit=ms "${args[@]}" "$@"
}
