#!/usr/bin/env python3
"""tests/docs/doc_check.py — the doc check (ctest `docs.commands`): runs the shell command blocks of
README.md and docs/*.md, so what they tell a reader to type stays true.

Usage: doc_check.py --cloister BINARY [--root SOURCE_DIR] [--scratch DIR] [DOC.md ...]

What runs. Fenced blocks labelled ```sh are scripts: every command in them runs, in document order,
in one bash per document, so state carries over within a document as it does for a reader (files,
variables, functions, the working directory). Blocks labelled ```console are transcripts: each `$ `
line is a command, the lines after it its expected standard output (numbers compared to 1e-3).
Blocks with other labels (json, c, text, none) are not commands; an unlabelled block that looks like
commands (a `$ ` prompt, or `cloister`, `make`, `curl`, ... at its start) is an error: label it.

Each document runs in a scratch directory of its own (--scratch/NAME, emptied first), with PATH
starting with a directory holding `cloister` (the binary under test), HOME in the scratch directory,
no CLOISTER_* variables from the caller, and $DOC_ROOT naming the source tree. It runs in network,
mount and PID namespaces of its own (util-linux `unshare`; as root, or in a user namespace where
those are allowed): the fixed ports the documents use (8500, 8501, 4433) cannot collide with anything
else on the machine, /dev/shm is a private tmpfs, and when the document's shell ends every process it
started ends with it (its background jobs get SIGTERM, then the namespace's end kills the rest).
Without namespaces the check is skipped (exit 77), never run against the machine's own ports.

Annotations, HTML comments on the lines just before a block (invisible to readers):
  <!-- doc-check: skip REASON -->      the block is not run; REASON is required and printed
  <!-- doc-check: setup COMMANDS -->   shell commands run before the block (may span lines, may
                                       repeat); they may call `doc_check_wait_port PORT`
  <!-- doc-check: background PORT... --> the block starts servers with its own `&`: after each such
                                       command, wait (up to 30 s) until the next PORT accepts
                                       connections on 127.0.0.1, failing if the command exited
The first failure stops the document and is reported as FILE:LINE, the command, its exit status and
its output. The last line per document gives the counts of blocks run and skipped (with reasons).
"""
import argparse
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time

DOC_TIMEOUT_S = 90  # one document, all of its commands (--doc-timeout)
ANNOTATION = re.compile(r"<!--\s*doc-check:\s*(\w[\w-]*)\s*(.*?)\s*-->", re.S)
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
COMMAND_LIKE = re.compile(r"^(\$ |(sudo|cloister|make|cmake|curl|kubectl|helm|docker|python3|openssl|"
                          r"gramine-[\w-]+)( |$))")
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


class DocError(Exception):
    pass


class Block:
    def __init__(self, doc, line, lang, lines):
        self.doc, self.line, self.lang, self.lines = doc, line, lang, lines  # line: of the first content line
        self.skip = None
        self.setup = []  # (line, text)
        self.ports = []


def parse(path, rel):
    """The document's fenced blocks with their annotations, in order."""
    text = open(path, encoding="utf-8").read()
    lines = text.split("\n")
    blocks, pending = [], []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            indent, lang = m.group(1), m.group(2)
            start = i
            i += 1
            body = []
            while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
                body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
                i += 1
            if i == len(lines):
                raise DocError(f"{rel}:{start + 1}: the block opened here is never closed")
            b = Block(rel, start + 2, lang, body)
            for (aline, kind, arg) in pending:
                if kind == "skip":
                    if not arg:
                        raise DocError(f"{rel}:{aline}: 'doc-check: skip' needs a reason")
                    b.skip = arg
                elif kind == "setup":
                    if not arg:
                        raise DocError(f"{rel}:{aline}: 'doc-check: setup' needs commands")
                    b.setup.append((aline, arg))
                elif kind == "background":
                    if not re.fullmatch(r"\d+(\s+\d+)*", arg):
                        raise DocError(f"{rel}:{aline}: 'doc-check: background' takes port numbers, not '{arg}'")
                    b.ports += [int(p) for p in arg.split()]
            if pending and lang not in ("sh", "console"):
                raise DocError(f"{rel}:{pending[0][0]}: a doc-check annotation before a block that is not "
                               f"```sh or ```console (it is '{lang or 'unlabelled'}')")
            first = next((l for l in body if l.strip()), "")
            if not lang and COMMAND_LIKE.match(first.strip()):
                raise DocError(f"{rel}:{start + 1}: an unlabelled block that looks like commands ('{first.strip()[:60]}'): "
                               "label it ```sh (run, or skipped with a reason) or ```text")
            blocks.append(b)
            pending = []
            i += 1
            continue
        # annotations: one or more comments, possibly spanning lines, then only blank lines to the fence
        if "<!--" in lines[i] and "doc-check" in lines[i]:
            j, chunk = i, lines[i]
            while "-->" not in chunk and j + 1 < len(lines):
                j += 1
                chunk += "\n" + lines[j]
            m = ANNOTATION.search(chunk)
            if not m:
                raise DocError(f"{rel}:{i + 1}: a doc-check comment that does not parse")
            kind = m.group(1)
            if kind not in ("skip", "setup", "background"):
                raise DocError(f"{rel}:{i + 1}: unknown doc-check annotation '{kind}' (skip, setup, background)")
            pending.append((i + 1, kind, m.group(2)))
            i = j + 1
            continue
        if pending and lines[i].strip():
            raise DocError(f"{rel}:{pending[0][0]}: a doc-check annotation not followed by a block")
        i += 1
    if pending:
        raise DocError(f"{rel}:{pending[0][0]}: a doc-check annotation not followed by a block")
    return blocks


def complete(text):
    """Whether bash parses text as whole commands (no open quote, brace, heredoc...)."""
    r = subprocess.run(["bash", "-n", "-c", text], stdin=subprocess.DEVNULL, capture_output=True)
    return r.returncode == 0 and b"here-document" not in r.stderr  # an open heredoc is only a warning


def commands(block):
    """(line, command text, expected output lines or None) per command of the block."""
    out = []
    lines = block.lines
    i = 0
    if block.lang == "console":
        while i < len(lines):
            l = lines[i]
            if not l.startswith("$ "):
                if l.strip() and not out:
                    raise DocError(f"{block.doc}:{block.line + i}: console block output before any `$ ` command")
                if out:
                    out[-1][2].append(l)
                i += 1
                continue
            start, text = i, l[2:]
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
            out.append((block.line + start, text, []))
            i += 1
        return out
    while i < len(lines):
        if not lines[i].strip() or lines[i].lstrip().startswith("#"):
            i += 1
            continue
        start, text = i, lines[i]
        while True:
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
            if complete(text) or i + 1 >= len(lines):
                break
            i += 1
            text += "\n" + lines[i]
        if not complete(text):
            raise DocError(f"{block.doc}:{block.line + start}: the command starting here does not parse as shell")
        out.append((block.line + start, text, None))
        i += 1
    return out


PRELUDE = r"""
set -o pipefail
__dc_state=$1
doc_check_wait_port() { # PORT [PID]: until 127.0.0.1:PORT accepts a connection (30 s)
  local i
  for ((i = 0; i < 300; i++)); do
    if (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    if [[ -n ${2:-} ]] && ! kill -0 "$2" 2>/dev/null; then
      echo "doc-check: the background command exited before port $1 accepted connections" >&2; return 1
    fi
    sleep 0.1
  done
  echo "doc-check: port $1 did not accept connections within 30 s" >&2; return 1
}
__dc_at() { echo "$1" >"$__dc_state/at"; }
__dc_fail() { echo "$1 $2" >"$__dc_state/failed"; __dc_finish; exit 1; }
__dc_finish() { # the document's background jobs: SIGTERM, 5 s to stop, then SIGKILL
  local p q i alive; p=$(jobs -p)
  [[ -n $p ]] || return 0
  kill -TERM $p 2>/dev/null
  for ((i = 0; i < 50; i++)); do
    alive=0
    for q in $p; do kill -0 "$q" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  kill -KILL $p 2>/dev/null
  wait 2>/dev/null
  return 0
}
"""


def script_for(blocks, state):
    parts = [PRELUDE]
    plan = []  # (line, kind, text, expected)
    for b in blocks:
        if b.lang not in ("sh", "console") or b.skip:
            continue
        for (aline, text) in b.setup:
            plan.append((aline, "setup", text, None))
        ports = list(b.ports)
        for (line, text, expected) in commands(b):
            plan.append((line, "command", text, expected))
            if re.search(r"(^|[^&])&\s*(#[^\n]*)?$", text) and b.lang == "sh":
                if ports:
                    plan.append((line, "wait", str(ports.pop(0)), None))
        if ports:
            raise DocError(f"{b.doc}:{b.line - 1}: 'doc-check: background' names more ports than the block "
                           "has commands ending in '&'")
    for (line, kind, text, expected) in plan:
        tag = f"{line}{'s' if kind == 'setup' else 'w' if kind == 'wait' else ''}"
        parts.append(f"__dc_at {tag}")
        if kind == "wait":
            parts.append(f"doc_check_wait_port {text} \"$!\" >\"$__dc_state/err.{tag}\" 2>&1 || __dc_fail {tag} $?")
            continue
        # the command runs in the document's shell itself (braces), its output kept per command
        parts.append("{\n" + text + "\n} >\"$__dc_state/out." + tag + "\" 2>\"$__dc_state/err." + tag + "\" </dev/null")
        parts.append(f"__dc_rc=$?; [[ $__dc_rc -eq 0 ]] || __dc_fail {tag} $__dc_rc")
    parts.append("__dc_finish\necho done >\"$__dc_state/done\"\n")
    return "\n".join(parts) + "\n", plan


def same_output(expected, actual):
    exp = [l.rstrip() for l in expected if l.strip()]
    act = [l.rstrip() for l in actual.split("\n") if l.strip()]
    if len(exp) != len(act):
        return False
    for e, a in zip(exp, act):
        if NUMBER.sub("#", e) != NUMBER.sub("#", a):
            return False
        for x, y in zip(NUMBER.findall(e), NUMBER.findall(a)):
            if abs(float(x) - float(y)) > 1e-3 * max(1.0, abs(float(x))):
                return False
    return True


def isolation():
    """The command prefix that runs a document in namespaces of its own, or None."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return None
    inner = "ip link set lo up && mount -t tmpfs -o mode=1777 tmpfs /dev/shm && exec \"$@\""
    base = ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
    # as root without a user namespace: root in a user namespace may not lock memory beyond ulimit -l
    for cmd in ([base] if os.geteuid() == 0 else []) + [base + ["--map-root-user"]]:
        cmd = cmd + ["bash", "-c", inner, "_"]
        try:
            r = subprocess.run(cmd + ["true"], capture_output=True, timeout=20)
        except subprocess.TimeoutExpired:
            continue
        if r.returncode == 0:
            return cmd
    return None


def tail(path, n=30):
    try:
        lines = open(path, errors="replace").read().rstrip("\n").split("\n")
    except FileNotFoundError:
        return []
    return lines[-n:] if lines != [""] else []


def run_doc(rel, blocks, root, scratch, binary, prefix, timeout):
    work = os.path.join(scratch, re.sub(r"[^A-Za-z0-9.]+", "_", rel))
    shutil.rmtree(work, ignore_errors=True)
    state = os.path.join(work, ".doc-check")
    bindir = os.path.join(work, ".bin")
    os.makedirs(state)
    os.makedirs(bindir)
    os.makedirs(os.path.join(work, ".tmp"))
    os.symlink(os.path.abspath(binary), os.path.join(bindir, "cloister"))
    script, plan = script_for(blocks, state)
    with open(os.path.join(state, "script.sh"), "w") as f:
        f.write(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOISTER_")}
    env.update(PATH=bindir + ":" + env.get("PATH", "/usr/bin:/bin"), HOME=work, DOC_ROOT=root,
               LC_ALL="C.UTF-8", TMPDIR=os.path.join(work, ".tmp"))
    env.pop("EDITOR", None)
    if not plan:
        return None
    p = subprocess.Popen(prefix + ["bash", "--noprofile", "--norc", os.path.join(state, "script.sh"), state],
                         cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=open(os.path.join(state, "log"), "w"),
                         stderr=subprocess.STDOUT, start_new_session=True)
    timed_out = False
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the namespace's processes die with its first one anyway
        except ProcessLookupError:
            pass
        p.wait()
    by_tag = {f"{l}{'s' if k == 'setup' else 'w' if k == 'wait' else ''}": (l, k, t, e) for (l, k, t, e) in plan}

    def describe(tag, how):
        line, kind, text, _ = by_tag.get(tag, (tag, "command", "?", None))
        what = {"setup": "the doc-check setup", "wait": f"waiting for port {text} of the background command",
                "command": "the command"}[kind]
        msg = [f"{rel}:{line}: {what} {how}:"]
        if kind != "wait":
            msg += ["    " + l for l in text.split("\n")]
        if kind == "wait":
            msg.append("    " + by_tag[str(line)][2].replace("\n", "\n    "))
            msg += ["  " + l for l in tail(os.path.join(state, f"err.{tag}"))]
            tag = str(line)  # and what the background command printed
        for name in ("out", "err"):
            t = tail(os.path.join(state, f"{name}.{tag}"))
            if t:
                msg.append(f"  its {'output' if name == 'out' else 'standard error'} (last {len(t)} lines):")
                msg += ["    | " + l for l in t]
        return "\n".join(msg)

    at = "".join(tail(os.path.join(state, "at"), 1)) or "?"
    if timed_out:
        return describe(at, f"did not finish within {timeout:g} s (the whole document's limit)")
    failed = tail(os.path.join(state, "failed"), 1)
    if failed:
        tag, rc = failed[0].split()
        return describe(tag, f"failed (exit status {rc})")
    if not os.path.exists(os.path.join(state, "done")):
        return describe(at, f"ended the document's shell (exit status {p.returncode})") + \
            "\n  the shell's own output:\n" + "\n".join("    | " + l for l in tail(os.path.join(state, "log")))
    for (line, kind, text, expected) in plan:
        if expected is None:
            continue
        actual = open(os.path.join(state, f"out.{line}"), errors="replace").read()
        if not same_output(expected, actual):
            return (f"{rel}:{line}: the command's output differs from the document's:\n    {text}\n"
                    "  the document shows:\n" + "\n".join("    | " + l for l in expected if l.strip()) +
                    "\n  it printed:\n" + "\n".join("    | " + l for l in actual.rstrip("\n").split("\n")))
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cloister", required=True, help="the cloister binary under test")
    ap.add_argument("--root", default=os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..")))
    ap.add_argument("--scratch", default=None, help="where the documents run (default: a doc-check directory here)")
    ap.add_argument("--doc-timeout", type=float, default=DOC_TIMEOUT_S, help="seconds one document may take")
    ap.add_argument("docs", nargs="*", help="documents relative to --root (default: README.md docs/*.md)")
    a = ap.parse_args()
    root = os.path.abspath(a.root)
    scratch = os.path.abspath(a.scratch or "doc-check")
    docs = a.docs or ["README.md"] + sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "docs", "*.md")))
    if not os.access(a.cloister, os.X_OK):
        print(f"doc_check: {a.cloister} is not an executable", file=sys.stderr)
        return 2
    parsed = {}
    errors = []
    for rel in docs:
        try:
            parsed[rel] = parse(os.path.join(root, rel), rel)
            for b in parsed[rel]:
                if b.lang in ("sh", "console") and not b.skip:
                    commands(b)
        except DocError as e:
            errors.append(str(e))
        except OSError as e:
            errors.append(f"{rel}: cannot read: {e.strerror}")
    if errors:
        print("\n".join(errors))
        print(f"doc_check: {len(errors)} document error(s)")
        return 1
    prefix = isolation()
    if prefix is None:
        print("doc_check: SKIPPED: cannot run the documents in namespaces of their own (unshare --net --mount "
              "--pid, as root or in a user namespace); running them would use this machine's ports 8500/8501/4433")
        return 77
    started = time.monotonic()
    failures = 0
    total_run = total_skipped = 0
    for rel in docs:
        blocks = [b for b in parsed[rel] if b.lang in ("sh", "console")]
        if not blocks:
            continue
        run = [b for b in blocks if not b.skip]
        skipped = [b for b in blocks if b.skip]
        t0 = time.monotonic()
        err = run_doc(rel, parsed[rel], root, scratch, a.cloister, prefix, a.doc_timeout) if run else None
        total_run += len(run)
        total_skipped += len(skipped)
        status = "FAILED" if err else "ok"
        print(f"{rel}: {len(run)} run, {len(skipped)} skipped: {status} ({time.monotonic() - t0:.1f} s)")
        for b in skipped:
            print(f"    skipped {rel}:{b.line - 1}: {b.skip}")
        if err:
            failures += 1
            print(err)
    print(f"doc_check: {total_run} blocks run, {total_skipped} skipped, {failures} document(s) failed "
          f"in {time.monotonic() - started:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
