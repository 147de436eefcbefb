#!/usr/bin/env python3
"""Known-kid latency under a flood of made-up kids, with and without the fallback budget
(issue 18, SPEC §9 `fallback.max_verifications_per_second`).

One tokengate `authz_http` (release build, cache on) pinned to core 0 serves two
open-loop bench/loadgen streams pinned to core 1: a flood of forged RS256 tokens whose
`kid` no key has (each a fallback scan: one RSA check against bench-rsa, or none once
the budget is spent) and a probe of distinct valid RS256 tokens with the known kid
`bench-rsa`. The budget is the default (500/s) in runs A and effectively off
(1,000,000/s) in runs B, alternated A B A B; the script prints each run and the medians
of the probe's p50/p99, with the server's CPU per second and the budget counter.

    python3 bench/fallback_flood.py [--flood 30000] [--probe 1000] [--rounds 2] [--duration 10]

Needs target/release/tokengate, bench/loadgen/target/release/loadgen and bench/data
(python3 bench/gen_tokens.py bench/data).
"""

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import tgproc

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
LOADGEN = ROOT / "bench" / "loadgen" / "target" / "release" / "loadgen"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def flood_tokens(path, n):
    """Forged tokens: a made-up kid each, a random 256-byte signature (an attacker need
    not sign anything for tokengate to spend an RSA check on it)."""
    if path.exists() and sum(1 for _ in path.open()) >= n:
        return
    with path.open("w") as f:
        for i in range(n):
            header = {"alg": "RS256", "typ": "at+jwt", "kid": f"made-up-{i}"}
            claims = {"iss": "https://bench.example", "aud": "bench-api", "sub": f"x-{i}",
                      "iat": 1700000000, "exp": 4102444800, "jti": f"flood-{i}"}
            f.write(".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()),
                              b64(os.urandom(256))]) + "\n")


def start(work, budget):
    config = {
        "listeners": {"authz_http": "127.0.0.1:0", "admin": "127.0.0.1:0", "authz_grpc": None},
        "issuers": [{
            "name": "bench", "issuer": "https://bench.example", "audiences": ["bench-api"],
            "algorithms": ["RS256", "ES256", "EdDSA"], "require_typ": ["at+jwt"],
            "key_sources": [{"jwks_file": str(DATA / "jwks.json")}],
        }],
        "fallback": {"max_verifications_per_second": budget},
    }
    return tgproc.serve(work, f"tg-{budget}", config)


def loadgen(url, tokens, rate, duration):
    return subprocess.Popen(
        ["taskset", "-c", "1", str(LOADGEN), "--url", url, "--tokens", str(tokens), "--rate",
         str(rate), "--connections", "16", "--duration", str(duration), "--warmup", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def result(proc):
    out, _ = proc.communicate()
    line = next(l for l in out.splitlines() if l.startswith("BENCH_JSON "))
    return json.loads(line[len("BENCH_JSON "):])


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def exhausted(admin):
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if l.startswith("tokengate_fallback_budget_exhausted_total{"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flood", type=int, default=30000, help="made-up-kid tokens per second")
    ap.add_argument("--probe", type=int, default=1000, help="known-kid tokens per second")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        flood = work / "flood.txt"
        flood_tokens(flood, args.flood * (args.duration + 2))
        runs = {}
        for rnd in range(args.rounds):
            for label, budget in [("A budget 500/s", 500), ("B budget off", 1_000_000)]:
                proc, addrs = start(work, budget)
                url = f"http://{addrs['authz_http']}/orders"
                cpu0, t0 = cpu_seconds(proc.pid), time.time()
                f = loadgen(url, flood, args.flood, args.duration)
                p = loadgen(url, DATA / "rs256-10k.txt", args.probe, args.duration)
                probe, fl = result(p), result(f)
                cpu = (cpu_seconds(proc.pid) - cpu0) / (time.time() - t0)
                cut = exhausted(addrs["admin"])
                proc.kill()
                proc.wait()
                r = {"p50": probe["latency_us"]["p50"], "p99": probe["latency_us"]["p99"],
                     "probe_errors": sum(probe["errors"].values()),
                     "flood_done": fl["requests"], "cpu": cpu, "cut": cut}
                runs.setdefault(label, []).append(r)
                print(f"round {rnd + 1} {label}: known-kid p50 {r['p50']} us, p99 {r['p99']} us, "
                      f"probe errors {r['probe_errors']}; flood answered {r['flood_done']}, "
                      f"server CPU {r['cpu']:.2f} cores, budget cut {r['cut']:.0f}", flush=True)
        print("\nmedians (known-kid probe under the flood):")
        for label, rs in runs.items():
            print(f"  {label}: p50 {statistics.median(r['p50'] for r in rs):.0f} us, "
                  f"p99 {statistics.median(r['p99'] for r in rs):.0f} us, "
                  f"server CPU {statistics.median(r['cpu'] for r in rs):.2f} cores")


if __name__ == "__main__":
    main()
