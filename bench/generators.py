#!/usr/bin/env python3
"""Measures bench/loadgen against oha (a kept open-loop generator, `cargo install oha`) on
the same pair: one tokengate `authz_http` (release build, cache on, one repeated RS256
token) pinned to core 0, the generator pinned to core 1, the same target rates and
connections, the two generators alternated A B A B. Prints medians per generator and
rate: achieved rate, p50, p99 (both measured from the scheduled send time: loadgen by
design, oha with `--latency-correction`).

This answers issue 22's question "does a kept tool place requests accurately enough to
replace loadgen?" for the workload both can run. The workload only loadgen can run (a
different token in every request, for the cache-off figures) is not measured here: oha
sends the same headers with every request.

    python3 bench/generators.py [--rates 4000,8000] [--rounds 4] [--duration 10]

Needs: target/release/tokengate, bench/loadgen/target/release/loadgen, oha on PATH (or
$OHA), bench/data (bench/gen_tokens.py), taskset.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import tgproc

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
TOKENGATE = tgproc.TOKENGATE
LOADGEN = ROOT / "bench" / "loadgen" / "target" / "release" / "loadgen"
CONNECTIONS = 8


def start_tokengate(work):
    config = {
        "listeners": {"authz_http": "127.0.0.1:0", "admin": "127.0.0.1:0", "authz_grpc": None},
        "issuers": [{
            "name": "bench", "issuer": "https://bench.example", "audiences": ["bench-api"],
            "algorithms": ["RS256"], "require_typ": ["at+jwt", "application/at+jwt"],
            "key_sources": [{"jwks_file": str(DATA / "jwks.json")}],
        }],
        "cache": {"max_entries": 100000},
    }
    proc, addrs = tgproc.serve(work, "tokengate", config)
    return proc, addrs["authz_http"]


def run_loadgen(url, tokens, rate, duration):
    out = subprocess.run(
        ["taskset", "-c", "1", str(LOADGEN), "--url", url, "--tokens", str(tokens),
         "--rate", str(rate), "--connections", str(CONNECTIONS),
         "--duration", str(duration), "--warmup", "1"],
        capture_output=True, text=True, check=True)
    line = next(l for l in out.stdout.splitlines() if l.startswith("BENCH_JSON "))
    r = json.loads(line[len("BENCH_JSON "):])
    return {"rps": r["requests"] / (r["duration_us"] / 1e6),
            "p50_us": r["latency_us"]["p50"], "p99_us": r["latency_us"]["p99"],
            "late_sends": r.get("late_sends"), "raw": r}


def run_oha(oha, url, token, rate, duration):
    out = subprocess.run(
        ["taskset", "-c", "1", oha, "--no-tui", "--output-format", "json",
         "-z", f"{duration}s", "-q", str(rate), "--latency-correction",
         "-c", str(CONNECTIONS), "-H", f"authorization: Bearer {token}", url],
        capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    pct = r["latencyPercentiles"]
    return {"rps": r["summary"]["requestsPerSec"], "p50_us": pct["p50"] * 1e6,
            "p99_us": pct["p99"] * 1e6, "late_sends": None, "raw": r["summary"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="4000,8000")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--duration", type=int, default=10)
    args = ap.parse_args()
    oha = os.environ.get("OHA") or shutil.which("oha")
    for need, what in [(TOKENGATE, "cargo build --release"), (LOADGEN, "bench/run.sh builds it"),
                       (DATA / "rs256-one.txt", "python3 bench/gen_tokens.py")]:
        if not Path(need).exists():
            sys.exit(f"missing {need} ({what})")
    if not oha:
        sys.exit("no oha on PATH (cargo install oha --locked) and no $OHA")
    token = (DATA / "rs256-one.txt").read_text().split()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        proc, authz = start_tokengate(work)
        url = f"http://{authz}/orders"
        results = {}
        try:
            for rate in [int(r) for r in args.rates.split(",")]:
                for rnd in range(args.rounds):
                    for gen in ["loadgen", "oha"]:
                        if gen == "loadgen":
                            r = run_loadgen(url, DATA / "rs256-one.txt", rate, args.duration)
                        else:
                            r = run_oha(oha, url, token, rate, args.duration)
                        results.setdefault((gen, rate), []).append(r)
                        late = "" if r["late_sends"] is None else f", late sends {r['late_sends']}"
                        print(f"rate {rate} round {rnd + 1} {gen}: {r['rps']:.0f} req/s, "
                              f"p50 {r['p50_us']:.0f} us, p99 {r['p99_us']:.0f} us{late}",
                              flush=True)
        finally:
            proc.kill()
            proc.wait()
    print("\ngenerator  target  achieved(median)  p50 us(median)  p99 us(median)  p99 range")
    for (gen, rate), rs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        p99s = [r["p99_us"] for r in rs]
        print(f"{gen:9} {rate:7} {statistics.median(r['rps'] for r in rs):17.0f} "
              f"{statistics.median(r['p50_us'] for r in rs):15.0f} "
              f"{statistics.median(p99s):15.0f}  {min(p99s):.0f}-{max(p99s):.0f}")


if __name__ == "__main__":
    main()
