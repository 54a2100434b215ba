#!/usr/bin/env python3
"""check_helm.py WORKDIR — checks the Helm chart deploy/helm/cloister without Helm (Debian does not
package it): tests/deploy/helmrender (Go's text/template with the Sprig library Helm uses, and Helm's
include/required/toYaml) renders it, built here from Debian's Go sources into WORKDIR.

  same      with its defaults (and deploy/k8s/policy.json as the policy) the chart renders exactly the
            objects `kubectl kustomize deploy/k8s` makes, bar the Namespace (a chart leaves that to
            `helm install --create-namespace`) and the policy ConfigMap's hash suffix (the chart puts
            the policy's checksum on the key server's pod template instead); so every deploy.check
            check of deploy/k8s holds for the chart's defaults too;
  values    the values reach their places (replicas, autoscaling, images, probe model, resources),
            the release namespace goes on every object, another policy changes the checksum;
  refusals  no policy: rendering fails and says which option to give;
  secrets   no Secret objects and no key material in the chart.

Prints one line per check and ends with `N passed, N failed`; exits 1 on any failure.
"""
import copy
import hashlib
import json
import os
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "deploy", "helm", "cloister")
K8S_DIR = os.path.join(ROOT, "deploy", "k8s")
POLICY = os.path.join(K8S_DIR, "policy.json")

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}" + (f": {detail}" if detail else ""))


def build(work):
    out = os.path.join(work, "helmrender")
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOCACHE=os.path.join(work, "gocache"))
    r = subprocess.run(["go", "build", "-o", out, "./tests/deploy/helmrender"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    check("helmrender builds from Debian's Go sources (golang-go, sprig, ghodss/yaml)", r.returncode == 0,
          r.stderr.strip()[:500])
    return out if r.returncode == 0 else None


def render(tool, ns="cloister", *opts):
    r = subprocess.run([tool, CHART, ns, *opts], capture_output=True, text=True)
    docs = [d for d in yaml.safe_load_all(r.stdout) if d] if r.returncode == 0 else []
    return r, docs


def by_key(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def kustomize_objects():
    """What `kubectl kustomize deploy/k8s` makes, without kubectl: the listed resources in the
    kustomization's namespace plus the generated policy ConfigMap (name without its hash suffix)."""
    kust = yaml.safe_load(open(os.path.join(K8S_DIR, "kustomization.yaml")))
    docs = []
    for f in kust["resources"]:
        for d in yaml.safe_load_all(open(os.path.join(K8S_DIR, f))):
            if d:
                d["metadata"]["namespace"] = kust["namespace"]
                docs.append(d)
    for g in kust.get("configMapGenerator", []):
        data = {f: open(os.path.join(K8S_DIR, f)).read() for f in g["files"]}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": g["name"], "namespace": kust["namespace"]}, "data": data})
    return docs


def normalise(d):
    """A copy comparable across the two: policy JSON parsed, the chart's policy checksum set aside."""
    d = copy.deepcopy(d)
    if d["kind"] == "ConfigMap" and "policy.json" in d.get("data", {}):
        d["data"]["policy.json"] = json.loads(d["data"]["policy.json"])
    if d["kind"] == "Deployment":
        ann = d["spec"]["template"]["metadata"].get("annotations", {})
        ann.pop("checksum/policy", None)
        if not ann:
            d["spec"]["template"]["metadata"].pop("annotations", None)
    return d


def diff(a, b, path=""):
    """The first path where a and b differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'the chart' if k in a else 'deploy/k8s'}"
            r = diff(a[k], b[k], f"{path}.{k}")
            if r:
                return r
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            r = diff(x, y, f"{path}[{i}]")
            if r:
                return r
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def container(docs, name):
    return by_key(docs)[("Deployment", name)]["spec"]["template"]["spec"]["containers"][0]


def main():
    work = sys.argv[1] if len(sys.argv) > 1 else "/tmp/check-helm"
    os.makedirs(work, exist_ok=True)
    tool = build(work)
    if not tool:
        print(f"{passed} passed, {failed} failed")
        return 1
    policy_opt = ["--set-file", f"keyserver.policy={POLICY}"]

    # ---- same objects as deploy/k8s
    r, chart = render(tool, "cloister", *policy_opt)
    check("the chart renders with its defaults and a policy", r.returncode == 0 and chart, r.stderr.strip())
    kust = [d for d in kustomize_objects() if d["kind"] != "Namespace"]
    ck, kk = by_key(chart), by_key(kust)
    check("the chart makes the objects deploy/k8s makes (Namespace aside)", set(ck) == set(kk),
          f"only in the chart: {sorted(set(ck) - set(kk))}; only in deploy/k8s: {sorted(set(kk) - set(ck))}")
    for key in sorted(set(ck) & set(kk)):
        d = diff(normalise(ck[key]), normalise(kk[key]))
        check(f"{key[0]} {key[1]}: the same as deploy/k8s", d is None, d)
    ann = ck.get(("Deployment", "cloister-keyserver"), {}).get("spec", {}).get("template", {}) \
        .get("metadata", {}).get("annotations", {})
    want = hashlib.sha256(open(POLICY).read().encode()).hexdigest()
    check("the key server's pod template carries the policy's sha256 (a new policy restarts it)",
          ann.get("checksum/policy") == want, str(ann))

    # ---- values reach their places
    r, v = render(tool, "prod", *policy_opt, "--set", "serve.replicas=5", "--set", "serve.autoscaling.maxReplicas=12",
                  "--set", "serve.autoscaling.minReplicas=3", "--set", "serve.image=example.org/serve:2",
                  "--set", "keyserver.image=example.org/cloister:2", "--set", "serve.probeModel=digits",
                  "--set", "keyserver.logLevel=debug", "--set", "keyserver.storage=5Gi")
    check("the chart renders with values set", r.returncode == 0 and v, r.stderr.strip())
    if v:
        vk = by_key(v)
        check("every object is in the release namespace", all(d["metadata"].get("namespace") == "prod" for d in v),
              str([d["metadata"]["name"] for d in v if d["metadata"].get("namespace") != "prod"]))
        check("serve.replicas sets the Deployment's replicas", vk[("Deployment", "cloister-serve")]["spec"]["replicas"] == 5)
        hpa = vk[("HorizontalPodAutoscaler", "cloister-serve")]["spec"]
        check("serve.autoscaling sets the HPA's bounds", (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12), str(hpa))
        check("serve.image and keyserver.image set the images",
              (container(v, "cloister-serve")["image"], container(v, "cloister-keyserver")["image"]) ==
              ("example.org/serve:2", "example.org/cloister:2"))
        s = container(v, "cloister-serve")
        paths = {s[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")}
        check("serve.probeModel sets every probe's path", paths == {"/v1/models/digits"}, str(paths))
        k = container(v, "cloister-keyserver")
        check("keyserver.logLevel sets CLOISTER_LOG", k["env"] == [{"name": "CLOISTER_LOG", "value": "debug"}], str(k["env"]))
        pvc = vk[("PersistentVolumeClaim", "cloister-keyserver-db")]["spec"]["resources"]["requests"]["storage"]
        check("keyserver.storage sizes the database volume", pvc == "5Gi", pvc)

    r, pv = render(tool, "cloister", *policy_opt, "--set", "keyserver.pccsUrl=https://pccs.example:8081")
    args = container(pv, "cloister-keyserver")["args"] if pv else []
    want_args = ["--pccs-url", "https://pccs.example:8081", "--collateral-cache", "/var/lib/cloister/collateral"]
    check("keyserver.pccsUrl adds --pccs-url and a collateral cache on the database volume",
          r.returncode == 0 and any(args[i:i + 4] == want_args for i in range(len(args))), str(args))
    check("without keyserver.pccsUrl no PCCS is used", "--pccs-url" not in container(chart, "cloister-keyserver")["args"])

    other = os.path.join(work, "other-policy.json")
    pol = json.load(open(POLICY))
    pol["comment"] = "another policy"
    json.dump(pol, open(other, "w"))
    r, o = render(tool, "cloister", "--set-file", f"keyserver.policy={other}")
    oann = by_key(o).get(("Deployment", "cloister-keyserver"), {}).get("spec", {}).get("template", {}) \
        .get("metadata", {}).get("annotations", {}) if o else {}
    check("another policy changes the checksum", r.returncode == 0 and oann.get("checksum/policy") not in (None, want))

    # ---- refusals
    r, _ = render(tool, "cloister")
    check("without a policy the chart does not render, and says how to give one",
          r.returncode != 0 and "--set-file keyserver.policy=" in r.stderr, r.stderr.strip()[:300])

    # ---- secrets
    check("the chart makes no Secret objects", not [d for d in chart if d["kind"] == "Secret"])
    pem = []
    for dirpath, _, files in os.walk(CHART):
        for f in files:
            if "PRIVATE KEY" in open(os.path.join(dirpath, f), errors="replace").read():
                pem.append(f)
    check("no private key material in the chart", not pem, str(pem))

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
