#!/usr/bin/env python3
"""tests/docs/selftest.py — checks the doc check (ctest `docs.doc_check_self`): doc_check.py run on
small documents written here must report each kind of falsehood with its file, line and command, run
what it should (state carried over, servers waited for), and leave no process behind.

Usage: selftest.py CLOISTER_BINARY SCRATCH_DIR
"""
import os
import shutil
import subprocess
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
FENCE = "```"
failures = []


def check(name, docs, want_rc, want=(), not_want=(), timeout=30):
    root = os.path.join(scratch, name)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    for rel, text in docs.items():
        with open(os.path.join(root, rel), "w") as f:
            f.write(textwrap.dedent(text).replace("~~~", FENCE))
    r = subprocess.run([sys.executable, os.path.join(HERE, "doc_check.py"), "--cloister", binary, "--root", root,
                        "--scratch", os.path.join(root, "run"), "--doc-timeout", str(timeout)] + sorted(docs),
                       capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    if r.returncode == 77:
        print(f"selftest: SKIPPED ({out.strip()})")
        sys.exit(77)
    bad = []
    if r.returncode != want_rc:
        bad.append(f"exit status {r.returncode}, expected {want_rc}")
    bad += [f"missing {w!r}" for w in want if w not in out]
    bad += [f"unexpected {w!r}" for w in not_want if w in out]
    print(f"{'ok  ' if not bad else 'FAIL'} {name}")
    if bad:
        failures.append(name)
        print("     " + "; ".join(bad) + "\n     output:\n" + textwrap.indent(out, "     | "))


def alive_with(marker):
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if marker.encode() in open(f"/proc/{p}/cmdline", "rb").read():
                    pids.append(p)
            except OSError:
                pass
    return pids


binary, scratch = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
os.makedirs(scratch, exist_ok=True)

# state carries over between blocks and the counts are printed; a console transcript's output matches
check("runs_in_order", {"a.md": """\
    # A
    ~~~sh
    x=41; cd "$(mktemp -d)"
    cat > f.txt <<EOF
    hello
    EOF
    ~~~
    ~~~console
    $ echo $((x + 1)) "$(cat f.txt)" 0.50001
    42 hello 0.5
    ~~~
    <!-- doc-check: skip needs a GPU -->
    ~~~sh
    nvidia-smi
    ~~~
    ~~~json
    {"not": "a command"}
    ~~~
    """}, 0, ["a.md: 2 run, 1 skipped: ok", "skipped a.md:13: needs a GPU", "1 skipped, 0 document(s) failed"])

# a failing command: the file, its line, the command, its status and its standard error
check("failing_command", {"b.md": """\
    text
    ~~~sh
    true
    ls \\
      /nonexistent-doc-check   # the second command fails
    echo never
    ~~~
    """}, 1, ["b.md:4: the command failed (exit status 2):", "ls \\", "/nonexistent-doc-check",
              "No such file or directory"], ["never"])

# a transcript whose output is not what the document shows
check("console_mismatch", {"c.md": """\
    ~~~console
    $ echo 3 '"3"' 0.99
    3 "3" (0.999920)
    ~~~
    """}, 1, ["c.md:2: the command's output differs from the document's", "it printed:"])

# a failing setup is reported at its annotation
check("failing_setup", {"d.md": """\
    <!-- doc-check: setup false -->
    ~~~sh
    true
    ~~~
    """}, 1, ["d.md:1: the doc-check setup failed (exit status 1)"])

# annotations and labels that are wrong are errors before anything runs
check("skip_without_reason", {"e.md": "<!-- doc-check: skip -->\n~~~sh\ntrue\n~~~\n"}, 1,
      ["e.md:1: 'doc-check: skip' needs a reason"])
check("unknown_annotation", {"e.md": "<!-- doc-check: sikp typo -->\n~~~sh\ntrue\n~~~\n"}, 1,
      ["e.md:1: unknown doc-check annotation 'sikp'"])
check("stale_annotation", {"e.md": "<!-- doc-check: skip was here -->\nprose\n~~~sh\ntrue\n~~~\n"}, 1,
      ["e.md:1: a doc-check annotation not followed by a block"])
check("unlabelled_commands", {"e.md": "~~~\ncloister keygen --out k\n~~~\n"}, 1,
      ["e.md:1: an unlabelled block that looks like commands"])
check("unclosed", {"e.md": "~~~sh\nif true; then\n  echo\n~~~\n"}, 1,
      ["e.md:2: the command starting here does not parse as shell"])

# a background server is waited for, used, and ended with the document; the next document has
# the same port free (its own network namespace)
server = "python3 -m http.server --bind 127.0.0.1 8500 >/dev/null 2>&1 &"
check("background", {"f.md": f"""\
    <!-- doc-check: background 8500 -->
    ~~~sh
    {server}
    python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:8500/")'
    exec -a doc-check-selftest-marker sleep 300 &
    ~~~
    """, "g.md": f"""\
    <!-- doc-check: background 8500 -->
    ~~~sh
    {server}
    ~~~
    """}, 0, ["f.md: 1 run, 0 skipped: ok", "g.md: 1 run, 0 skipped: ok"])
if alive_with("doc-check-selftest-marker"):
    failures.append("background cleanup")
    print("FAIL background cleanup: a process the document started is still running")
else:
    print("ok   background cleanup")

# a background command that dies is reported, not waited for to the end
check("background_dies", {"h.md": """\
    <!-- doc-check: background 8500 -->
    ~~~sh
    sh -c 'echo cannot start >&2; exit 3' &
    ~~~
    """}, 1, ["h.md:3: waiting for port 8500 of the background command failed",
              "exited before port 8500 accepted connections",
              "cannot start"])

# a document that hangs is stopped at its limit, naming the command, and its processes end
check("timeout", {"i.md": """\
    ~~~sh
    exec -a doc-check-selftest-marker sleep 300 &
    sleep 300
    ~~~
    """}, 1, ["i.md:3: the command did not finish within 2 s", "sleep 300"], timeout=2)
if alive_with("doc-check-selftest-marker"):
    failures.append("timeout cleanup")
    print("FAIL timeout cleanup: a process of the timed-out document is still running")
else:
    print("ok   timeout cleanup")

print(f"selftest: {len(failures)} failed" + (f": {', '.join(failures)}" if failures else ""))
sys.exit(1 if failures else 0)
