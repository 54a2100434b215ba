#!/usr/bin/env python3
"""mutations.py CLOISTER — checks the checker: each mutation below is a plausible mistake in deploy/
(a debug enclave, a flag the binary does not have, a secret mounted in clear, a probe over plain
HTTP, a NetworkPolicy that lets more pods in, memory budgets the enclave cannot hold, a chart that
lets a typo or another namespace through, ...). Each is applied to a copy of deploy/, and
check_deploy.py must then fail, naming the check that guards against it; for a mutation of the Helm
chart, check_deploy.py (whose object checks run on the real `helm template` output) or check_helm.py.
The unmodified copy must pass both. The real helm and kubectl come from tests/deploy/tools/setup.py.

Ends with `N passed, N failed`; exits 1 on any failure.
"""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
T, MS, KS, NP = ("gramine/cloister-serve.manifest.template", "k8s/model-server.yaml", "k8s/keyserver.yaml",
                 "k8s/networkpolicy.yaml")
HV, HS, HT = "helm/cloister/values.yaml", "helm/cloister/values.schema.json", "helm/cloister/templates/"

# (file under deploy/, text, replacement, substring of the FAIL line expected)
MUTATIONS = [
    (T, "sgx.debug = false", "sgx.debug = true", "sgx.debug = false"),
    (T, 'sgx.remote_attestation = "dcap"', 'sgx.remote_attestation = "none"', "remote_attestation"),
    (T, '"--evidence", "gramine"', '"--evidence", "sim"', "--evidence gramine"),
    (T, '"--keyserver-ca", "/etc', '"--keyserver-cafile", "/etc', "every flag of the enclave's argv"),
    (T, '"--enable_batching",', '"--enable_batching", "yes",', "every flag of the enclave's argv"),
    (T, '"--queue", "32",', '"--queue",', "every flag of the enclave's argv"),
    (T, '  "file:/models/",', '  "file:/models/",\n  "file:/etc/",', "no allowed file outside the models"),
    (T, ', type = "encrypted", key_name = "default" }', " }", "inside an encrypted mount"),
    (T, 'key_name = "default" }', 'key_name = "_sgx_mrenclave" }', "keyed by secret provisioning"),
    (T, '  "file:/etc/cloister/keyserver-ca.pem",\n]', "]", "(--keyserver-ca) is a trusted file"),
    (T, '  "file:/usr{{ arch_libdir }}/libgomp.so.1",\n', "", "every library the binary loads is a trusted file"),
    (T, '  "file:/usr/bin/cloister",\n  #', "  #", "/usr/bin/cloister is a trusted file"),
    (T, "loader.log_level", 'loader.insecure__use_cmdline_argv = true\nloader.log_level', "no insecure__"),
    (T, "sys.enable_sigterm_injection = true", "sys.enable_sigterm_injection = false", "SIGTERM"),
    (T, 'loader.env.OMP_NUM_THREADS = "{{ engine_threads }}"', 'loader.env.OMP_NUM_THREADS = "64"', "OMP_NUM_THREADS"),
    (T, "sgx.max_threads = 48", "sgx.max_threads = 8", "sgx.max_threads"),
    (KS, "            - --dcap-collateral\n            - /etc/cloister/dcap/collateral.json\n", "",
     "verifies the enclaves' real quotes"),
    (T, '  "--rest_api_num_threads", "2",\n', "", "--rest_api_num_threads pinned"),
    (T, '{ path = "/tmp", type = "tmpfs" }', '{ path = "/tmp", uri = "file:/tmp" }', "/tmp is an in-enclave tmpfs"),
    (T, "{{ keyserver }}\"\n\nfs.mounts", "other:4433\"\n\nfs.mounts", "secret_prov asks the same key server"),
    ("gramine/Makefile", "REST_PORT ?= 8501", "REST_PORT ?= 8601", "container ports are the enclave's"),
    ("gramine/Makefile", "-Dworkers=$(WORKERS) \\\n", "", "only variables the Makefile defines"),
    ("gramine/Makefile", "KEYSERVER ?= cloister-keyserver.cloister.svc:4433", "KEYSERVER ?= keys.example:4433",
     "--keyserver is the key server's Service"),
    ("gramine/Makefile", "ISVSVN ?= 1", "ISVSVN ?= 0", "min_isv_svn does not exceed"),
    (MS, "              scheme: HTTPS", "              scheme: HTTP", "startupProbe"),
    (MS, "path: /v1/models/resnet50\n              port: rest\n              scheme: HTTPS\n            periodSeconds: 10",
     "path: /v1/models/resnet50\n              port: grpc\n              scheme: HTTPS\n            periodSeconds: 10",
     "readinessProbe"),
    (MS, "sgx.intel.com/epc: 4Gi", "sgx.intel.com/epc: 2Gi", "EPC request covers"),
    (MS, "              sgx.intel.com/enclave: 1\n", "", "sgx.intel.com/enclave"),
    (MS, "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds"),
    (MS, "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "cloister-serve/serve: non-root"),
    (MS, "workingDir: /app", "workingDir: /app\n          args: [\"--plaintext\"]", "passes no args and no env"),
    (MS, "              mountPath: /models\n              readOnly: true", "              mountPath: /models",
     "models volume is mounted read-only"),
    (MS, "prometheus.io/port: \"8501\"", "prometheus.io/port: \"8500\"", "Prometheus scrape annotations"),
    (MS, "    - name: rest\n      port: 8501\n      targetPort: rest", "    - name: rest\n      port: 8501\n      targetPort: http",
     "every targetPort is a container port"),
    (MS, "  minAvailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: cloister-serve",
     "  minAvailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: cloister-srv", "PodDisruptionBudget"),
    (NP, "    - from:\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: cloister-serve",
     "    - from:\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/part-of: cloister",
     "only the model server pods may reach the key server"),
    (NP, "    - from:\n        - podSelector:", "    - from:\n        - ipBlock:\n            cidr: 10.0.0.0/8\n        - podSelector:",
     "only the model server pods may reach the key server"),
    ("k8s/kustomization.yaml", "  - networkpolicy.yaml\n", "", "lists every manifest file"),
    (KS, "            - --master-key\n", "            - --trust-sim\n            - /sim.pem\n            - --master-key\n",
     "trusts no simulated evidence"),
    (KS, "            - --master-key\n", "            - --masterkey\n", "every key server container flag"),
    (KS, "  selector:\n    app.kubernetes.io/name: cloister-keyserver", "  selector:\n    app.kubernetes.io/name: keysrv",
     "Service cloister-keyserver selects exactly one"),
    (KS, "            - name: master-key\n              mountPath: /etc/cloister/master",
     "            - name: master-key\n              mountPath: /var/lib/cloister/master", "--master-key comes from a referenced Secret"),
    (KS, "          env:\n", "          env:\n            - name: CLOISTER_MASTER_KEY\n              value: \"00\"\n",
     "is not an inline secret"),
    ("k8s/policy.json", '"allow_debug": false', '"allow_debug": true', "no identity accepts sim evidence or debug"),
    ("k8s/policy.json", '"evidence_types": ["sgx-dcap"]', '"evidence_types": ["sgx-dcap", "bogus"]',
     "passes `cloister keyserver policy check`"),
    # memory budgets in the enclave
    (T, '"--memory_budget_mb", "1024"', '"--memory_budget_mb", "4096"', "the memory budgets fit the enclave"),
    (T, '"--max_request_memory_mb", "256"', '"--max_request_memory_mb", "2048"', "is within --memory_budget_mb"),
    (T, '  "--engine_pool_mb", "128",\n', "", "--engine_pool_mb is explicit"),
    # the Helm chart (the real helm renders it)
    (HS, '"serve": {\n      "type": "object",\n      "additionalProperties": false,',
     '"serve": {\n      "type": "object",', "refuses a typo'd key (serve.replica)"),
    (HS, '"maximum": 100', '"maximum": 1000', "refuses a number out of range"),
    (HS, '"enum": ["debug", "info", "warn", "error", "off"]', '"minLength": 1', "refuses a log level"),
    (HT + "model-server.yaml", '{{- include "cloister.checks" . }}\n', "",
     "refuses a namespace the signed enclave does not expect"),
    (HT + "_helpers.tpl", "{{- if gt (int .minReplicas) (int .maxReplicas) }}", "{{- if false }}",
     "refuses minReplicas above maxReplicas"),
    (HV, "keyserver: cloister-keyserver.cloister.svc:4433", "keyserver: cloister-keyserver.other.svc:4433",
     "the KEYSERVER deploy/gramine signs the enclave with"),
    (HT + "model-server.yaml", "              scheme: HTTPS", "              scheme: HTTP", "helm: startupProbe"),
    (HT + "keyserver.yaml", "            - --dcap-collateral\n            - /etc/cloister/dcap/collateral.json\n", "",
     "helm: flags: the key server verifies the enclaves' real quotes"),
    (HT + "networkpolicy.yaml", "    - from:\n        - podSelector:\n            matchLabels:\n"
     "              app.kubernetes.io/name: cloister-serve", "    - from:\n        - podSelector:\n"
     "            matchLabels:\n              app.kubernetes.io/part-of: cloister",
     "helm: only the model server pods may reach the key server"),
    (HV, "    limits:\n      cpu: \"4\"\n      memory: 1Gi\n      sgx.intel.com/epc: 4Gi",
     "    limits:\n      cpu: \"4\"\n      memory: 1Gi\n      sgx.intel.com/epc: 2Gi", "helm: the EPC request covers"),
    (HT + "_helpers.tpl", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false",
     "helm: cloister-serve/serve: non-root"),
    # the docs' commands that create what the pods mount (run by the real kubectl, --dry-run=client)
    ("gramine/README.md", "--from-file=ssl.cfg=/etc/cloister/tls/ssl.cfg", "--from-file=tls.cfg=/etc/cloister/tls/ssl.cfg",
     "Secret cloister-serving-tls-encrypted (mounted at"),
    ("gramine/README.md", "kubectl -n cloister create secret generic cloister-serving-tls-encrypted",
     "kubectl create secret generic cloister-serving-tls-encrypted", "in namespace cloister, with the keys read"),
]


def run(root, cloister, bindir, chart, helm, fast=True):
    """check_deploy.py (rendering the chart only when chart is set; for helm, check_helm.py too) on the
    copy: (rc, stdout). fast: with CHECK_DEPLOY_FAST (a mutation of the docs needs the slow part, their
    kubectl commands)."""
    env = dict(os.environ, CLOISTER_DEPLOY_BIN=bindir, CHECK_HELM_FAST="1", CHECK_DEPLOY_HELM="1" if chart else "0",
               **({"CHECK_DEPLOY_FAST": "1"} if fast else {}))
    here = os.path.join(root, "tests", "deploy")
    r = subprocess.run([sys.executable, os.path.join(here, "check_deploy.py"), cloister],
                       capture_output=True, text=True, env=env, timeout=120)
    rc, out = r.returncode, r.stdout
    if helm:
        r = subprocess.run([sys.executable, os.path.join(here, "check_helm.py"), os.path.join(root, "helm-work")],
                           capture_output=True, text=True, env=env, timeout=300)
        rc, out = rc or r.returncode, out + r.stdout
    return rc, out


def tools():
    r = subprocess.run([sys.executable, os.path.join(HERE, "tools", "setup.py")], capture_output=True, text=True,
                       timeout=900)
    return r.stdout.strip() if r.returncode == 0 else None, r.stderr.strip()


def main():
    cloister = os.path.abspath(sys.argv[1])
    passed = failed = 0
    bindir, why = tools()
    if not bindir:
        print(f"FAIL the real helm and kubectl are installed (tests/deploy/tools/setup.py): {why}")
        print("0 passed, 1 failed")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        for i, m in enumerate([None] + MUTATIONS):
            root = os.path.join(tmp, f"m{i}")
            shutil.copytree(os.path.join(ROOT, "deploy"), os.path.join(root, "deploy"))
            os.makedirs(os.path.join(root, "tests", "deploy"))
            for f in ("check_deploy.py", "check_helm.py"):
                shutil.copy(os.path.join(HERE, f), os.path.join(root, "tests", "deploy"))
            os.makedirs(os.path.join(root, "docs"))
            shutil.copy(os.path.join(ROOT, "docs", "deploy.md"), os.path.join(root, "docs"))
            if m is None:
                rc, out = run(root, cloister, bindir, True, True)
                ok = rc == 0
                print(f"{'ok  ' if ok else 'FAIL'} the unmodified deploy/ passes check_deploy.py and check_helm.py" +
                      ("" if ok else ": " + "; ".join(l for l in out.splitlines() if l.startswith("FAIL"))))
            else:
                f, old, new, expect = m
                path = os.path.join(root, "deploy", f)
                text = open(path).read()
                if old not in text:
                    print(f"FAIL mutation {i} ({f}): the text to mutate is gone: {old!r}")
                    failed += 1
                    continue
                open(path, "w").write(text.replace(old, new))
                # a chart mutation expected to be caught by check_deploy.py's object checks of the helm
                # template output ("helm: ...") needs only that; the others need check_helm.py too
                chart = f.startswith("helm/")
                rc, out = run(root, cloister, bindir, chart, chart and not expect.startswith("helm: "),
                              fast=not f.endswith(".md"))
                fails = [l for l in out.splitlines() if l.startswith("FAIL")]
                ok = rc != 0 and any(expect in l for l in fails)
                print(f"{'ok  ' if ok else 'FAIL'} mutation {i} ({f}: {old.strip()[:40]!r}) is caught by "
                      f"\"{expect}\"" + ("" if ok else f": rc={rc}, failures: {fails}"))
            shutil.rmtree(root)
            passed += ok
            failed += not ok
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
