#!/usr/bin/env python3
"""policy_identity.py — turns the SIGSTRUCT of the signed enclave into a key server policy identity.

    gramine-sgx-sigstruct-view --output-format json cloister-serve.sig > sigstruct.json
    python3 policy_identity.py --sigstruct sigstruct.json --name model-server \
        --secrets resnet50-key serving-tls-wrap-key --secret-prov serving-tls-wrap-key
        # prints the identity (docs/policy.md)
    python3 policy_identity.py ... --policy ../k8s/policy.json
        # prints that whole policy with the identity of the same name replaced (or added)

Check the result with `cloister keyserver policy check` before deploying it. A debug enclave is refused:
its memory is readable by the host, so no secret may go to it.
"""
import argparse
import json
import re
import sys

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def field(sig, *names):
    for n in names:
        if n in sig:
            return sig[n]
    raise SystemExit(f"policy_identity: the SIGSTRUCT has none of {', '.join(names)}")


def hexval(v, what):
    v = str(v).lower()
    if v.startswith("0x"):
        v = v[2:]
    if not HEX64.match(v):
        raise SystemExit(f"policy_identity: {what} is not 32 bytes of hex: {v!r}")
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sigstruct", required=True, help="JSON from gramine-sgx-sigstruct-view --output-format json")
    ap.add_argument("--name", default="model-server")
    ap.add_argument("--secrets", nargs="+", required=True)
    ap.add_argument("--secret-prov", help="the secret for Gramine's secret_prov client (must be in --secrets)")
    ap.add_argument("--tcb-statuses", nargs="+", default=["UpToDate"])
    ap.add_argument("--policy", help="print this policy with the identity replaced or added")
    a = ap.parse_args()

    with open(a.sigstruct) as f:
        sig = json.load(f)
    if field(sig, "debug_enclave", "debug") not in (False, 0, "false", "False"):
        raise SystemExit("policy_identity: this is a DEBUG enclave (sgx.debug = true): its memory is readable by "
                         "the host; sign a production build (sgx.debug = false)")
    if a.secret_prov and a.secret_prov not in a.secrets:
        raise SystemExit("policy_identity: --secret-prov must be one of --secrets")
    ident = {
        "name": a.name,
        "comment": "cloister serve in Gramine (deploy/gramine), from its SIGSTRUCT",
        "mrenclave": [hexval(field(sig, "mr_enclave", "enclave_hash"), "mr_enclave")],
        "mrsigner": hexval(field(sig, "mr_signer"), "mr_signer"),
        "isv_prod_id": int(field(sig, "isv_prod_id")),
        "min_isv_svn": int(field(sig, "isv_svn")),
        "allow_debug": False,
        "tcb_statuses": a.tcb_statuses,
        "evidence_types": ["sgx-dcap"],
        "secrets": a.secrets,
    }
    if a.secret_prov:
        ident["secret_prov"] = a.secret_prov
    if not a.policy:
        json.dump(ident, sys.stdout, indent=2)
        print()
        return
    with open(a.policy) as f:
        pol = json.load(f)
    ids = [i for i in pol.get("identities", []) if i.get("name") != a.name]
    pol["identities"] = ids + [ident]
    json.dump(pol, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
