# bench/lib.sh — sourced by the benchmark scripts that start servers: a scratch directory that is
# removed on exit together with every process whose pid the script adds to `pids`, and free ports.
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
