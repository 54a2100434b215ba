# lib.sh — a tiny harness for CLI integration tests (sourced). Each `expect` runs a command and checks
# its exit status and that its stderr+stdout match a pattern. The script ends with `finish`, which
# prints "N passed, N failed" and exits non-zero on any failure.
set -u
CLOISTER=${1:?usage: $0 path/to/cloister}
CLOISTER=$(readlink -f "$CLOISTER")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cloister-it-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK" || exit 1
PASSED=0
FAILED=0
OUT=""

# expect NAME STATUS PATTERN -- COMMAND...   (PATTERN is an extended regex; "" matches anything)
expect() {
  local name=$1 want=$2 pattern=$3
  shift 4
  OUT=$("$@" 2>&1)
  local got=$?
  if [[ $got -ne $want ]]; then
    echo "FAIL $name: exit $got, want $want"; echo "$OUT" | sed 's/^/    /' | head -20
    FAILED=$((FAILED + 1))
  elif [[ -n $pattern ]] && ! grep -Eq -- "$pattern" <<<"$OUT"; then
    echo "FAIL $name: output does not match /$pattern/"; echo "$OUT" | sed 's/^/    /' | head -20
    FAILED=$((FAILED + 1))
  else
    echo "ok   $name"
    PASSED=$((PASSED + 1))
  fi
}

# free_ports [N]  — prints N (default 2) TCP ports on 127.0.0.1 nobody listens on, picked by the kernel
# from its ephemeral range (not at random: a random port may be another test's listener)
free_ports() {
  /usr/bin/python3 -c '
import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])' "${1:-2}"
}

# check NAME COMMAND...  — passes when COMMAND succeeds
check() {
  local name=$1
  shift
  if "$@" >/dev/null 2>&1; then
    echo "ok   $name"; PASSED=$((PASSED + 1))
  else
    echo "FAIL $name: '$*' failed"; FAILED=$((FAILED + 1))
  fi
}

finish() {
  echo "$PASSED passed, $FAILED failed"
  [[ $FAILED -eq 0 ]]
}
