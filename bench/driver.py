#!/usr/bin/env python3
"""The load benchmark's driver; run it through bench/run.sh, which installs and builds
what it needs first. See docs/benchmarks.md for what it measures and why.

    python3 bench/driver.py --tokengate BIN --allow-all BIN --envoy BIN [--loadgen BIN]
                            [--quick | --profile]

Every server runs pinned to core SERVER_CORE (`taskset -c 1`), wrk (and the proxy's
upstream nginx) to CLIENT_CORE (`taskset -c 0`). Each measured run starts its servers
afresh, checks one valid and one invalid request, runs wrk once, reads the servers'
VmRSS, then stops them. The half-saturation runs use bench/loadgen instead of wrk (open
loop, Poisson arrivals, latency from each request's scheduled send time; it busy-polls
the client core). Rounds go through the whole matrix (A B C ... A B C ...), the two
sides of each ratio back to back and in alternating order (A B in odd rounds, B A in
even ones; see `schedule`), and medians over rounds are reported. For every run the CPU used on each core by
processes that are not the benchmark's ("foreign" CPU: other work on this shared
machine) and the load average before and after are recorded; a run with too much
foreign CPU is repeated after waiting for the machine to calm down.

Only processes this driver started are ever signalled (tracked Popen objects).
"""

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / "data"
RESULTS = BENCH / "results"
SERVER_CORE = 1
CLIENT_CORE = 0
CONNS = 32
# --server-priority: in the half-saturation runs, the servers on SERVER_CORE run under
# SCHED_FIFO (chrt -f 5), so that the machine's own kernel threads and other tenants'
# work cannot preempt them (this VM runs DAMON's kdamond, which takes its core for 1-4 ms
# twice a second). Every server of every configuration alike. Only there: a saturated
# SCHED_FIFO server hits the kernel's RT throttling (95 % of each second), which stalls
# it for 50 ms every second.
SERVER_PREFIX = []
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# A run is "noisy" when processes that are not the benchmark's took more than this
# share of the server core, or more than NOISY_CLIENT_CORE of the client core, during the
# wrk run. The client core counts even when wrk needs little of it: wrk then waits for
# the CPU after each wake-up, the servers idle meanwhile, and req/s drops (seen here:
# tokengate at half its core with a fuzzer next to wrk).
NOISY_SERVER_CORE = 0.10
NOISY_CLIENT_CORE = 0.20
MAX_TRIES = 2  # first try + repeats of a noisy run
QUIET_WAIT_S = 20  # longest wait for a quiet machine before one run
QUIET_BUDGET_S = 600  # total waiting allowed in one benchmark
SERVER_MAX_S = 900  # watchdog: no server started here lives longer than this

SCENARIOS = {
    # name: (token file, expected share of 2xx)
    "repeated": ("rs256-one.txt", 1.0),
    "distinct": ("rs256-10k.txt", 1.0),
    "mix50": ("rs256-mix.txt", 0.5),
    "distinct-es256": ("es256-10k.txt", 1.0),
    "distinct-eddsa": ("eddsa-10k.txt", 1.0),
}

# configuration name -> (kind, options, scenarios of the full run)
CONFIGS = {
    "tg-authz_http cache": ("tg_http", {"cache": True}, ["repeated", "distinct", "mix50"]),
    "tg-authz_http nocache": ("tg_http", {"cache": False},
                              ["repeated", "distinct", "mix50", "distinct-es256", "distinct-eddsa"]),
    "tg-proxy cache": ("tg_proxy", {"cache": True}, ["repeated", "distinct", "mix50"]),
    "envoy noauth": ("envoy_noauth", {}, ["repeated"]),
    "envoy jwt_authn nocache": ("envoy_jwt", {"cache": False},
                                ["repeated", "distinct", "mix50", "distinct-es256", "distinct-eddsa"]),
    "envoy jwt_authn cache": ("envoy_jwt", {"cache": True}, ["repeated", "distinct", "mix50"]),
    "envoy+http ext_authz->tg": ("envoy_xa", {"proto": "http", "target": "tg"},
                                 ["repeated", "distinct", "mix50"]),
    "envoy+grpc ext_authz->tg": ("envoy_xa", {"proto": "grpc", "target": "tg"},
                                 ["repeated", "distinct", "mix50"]),
    "envoy+http ext_authz->allow_all": ("envoy_xa", {"proto": "http", "target": "allow"},
                                        ["repeated"]),
    "envoy+grpc ext_authz->allow_all": ("envoy_xa", {"proto": "grpc", "target": "allow"},
                                        ["repeated"]),
}
QUICK_SCENARIOS = {"repeated", "distinct"}

# p99 at half of saturation: these (configuration, scenario) pairs.
HALF = [
    ("tg-authz_http nocache", "distinct"),
    ("envoy jwt_authn nocache", "distinct"),
    ("tg-authz_http cache", "repeated"),
    ("envoy noauth", "repeated"),
    ("envoy+http ext_authz->tg", "repeated"),
    ("envoy+http ext_authz->allow_all", "repeated"),
    ("envoy+grpc ext_authz->tg", "repeated"),
    ("envoy+grpc ext_authz->allow_all", "repeated"),
]
QUICK_HALF = HALF[:2]

# The targets (issue 7's, as the edge issue restated them for the one HTTP stack), from
# the medians: (label, numerator, denominator, target).
RATIOS = [
    ("tg authz_http nocache / envoy jwt_authn nocache, distinct RS256",
     ("tg-authz_http nocache", "distinct"), ("envoy jwt_authn nocache", "distinct"), 1.8),
    ("tg authz_http cache, repeated / envoy noauth",
     ("tg-authz_http cache", "repeated"), ("envoy noauth", "repeated"), 1.0),
    ("envoy+http ext_authz: ->tg / ->allow_all, repeated",
     ("envoy+http ext_authz->tg", "repeated"), ("envoy+http ext_authz->allow_all", "repeated"), 0.85),
    ("envoy+grpc ext_authz: ->tg / ->allow_all, repeated",
     ("envoy+grpc ext_authz->tg", "repeated"), ("envoy+grpc ext_authz->allow_all", "repeated"), 0.85),
    # Informational (no target in the issue).
    ("tg authz_http nocache / envoy jwt_authn nocache, distinct ES256",
     ("tg-authz_http nocache", "distinct-es256"), ("envoy jwt_authn nocache", "distinct-es256"), None),
    ("tg authz_http nocache / envoy jwt_authn nocache, distinct EdDSA",
     ("tg-authz_http nocache", "distinct-eddsa"), ("envoy jwt_authn nocache", "distinct-eddsa"), None),
    ("tg authz_http cache / envoy jwt_authn cache, distinct RS256",
     ("tg-authz_http cache", "distinct"), ("envoy jwt_authn cache", "distinct"), None),
    ("tg authz_http cache / envoy jwt_authn cache, repeated",
     ("tg-authz_http cache", "repeated"), ("envoy jwt_authn cache", "repeated"), None),
    ("envoy+http ext_authz: ->tg distinct / ->allow_all",
     ("envoy+http ext_authz->tg", "distinct"), ("envoy+http ext_authz->allow_all", "repeated"), None),
    ("envoy+grpc ext_authz: ->tg distinct / ->allow_all",
     ("envoy+grpc ext_authz->tg", "distinct"), ("envoy+grpc ext_authz->allow_all", "repeated"), None),
]
RSS_TARGET_MIB = 40.0
READY_TARGET_MS = 100.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ processes


class Procs:
    """Every process this driver started, so that exactly those are stopped."""

    def __init__(self):
        self.live = []
        self.lock = threading.Lock()

    def start(self, name, argv, logfile, core=SERVER_CORE, env=None):
        out = open(logfile, "ab")
        prefix = SERVER_PREFIX if core == SERVER_CORE else []
        p = subprocess.Popen([*prefix, "taskset", "-c", str(core), *map(str, argv)], stdout=out,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        out.close()
        p.bench_name = name
        p.bench_log = logfile
        # Watchdog: whatever happens to the driver's flow, no server outlives this.
        t = threading.Timer(SERVER_MAX_S, self._expire, args=(p,))
        t.daemon = True
        t.start()
        p.bench_timer = t
        with self.lock:
            self.live.append(p)
        return p

    def _expire(self, p):
        if p.poll() is None:
            log(f"watchdog: {p.bench_name} (pid {p.pid}) ran {SERVER_MAX_S}s; killing it")
            p.kill()

    def stop(self, p):
        p.bench_timer.cancel()
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        with self.lock:
            if p in self.live:
                self.live.remove(p)

    def stop_all(self):
        with self.lock:
            live = list(self.live)
        for p in reversed(live):
            try:
                self.stop(p)
            except Exception as e:  # keep stopping the others
                log(f"stop {p.pid}: {e}")


PROCS = Procs()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_generator(name, argv, until=None):
    """Runs a load generator (wrk or bench/loadgen) to its end and reads the BENCH_JSON
    line it prints; its CPU time goes under wrk_cpu_s. With `until`, the generator is
    interrupted (SIGINT, after which it reports as usual) once until() is true, and its
    exit status is not checked."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if until is not None:
        while p.poll() is None:
            time.sleep(0.5)
            try:
                done = until()
            except OSError:
                done = False
            if done:
                p.send_signal(signal.SIGINT)  # timeout(1) passes it on
                break
    stdout, stderr = p.communicate()
    out = subprocess.CompletedProcess(argv, p.returncode, stdout, stderr)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = re.search(r"^BENCH_JSON (.*)$", out.stdout, re.M)
    if (out.returncode != 0 and until is None) or not m:
        raise RuntimeError(f"{name} failed ({out.returncode}): {out.stderr.strip()}\n{out.stdout}")
    res = json.loads(m.group(1))
    res["wrk_cpu_s"] = round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 3)
    return res, out


def http_get(port, path="/", headers=None, timeout=2.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, body
    finally:
        c.close()


def wait_until(check, what, proc_list, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in proc_list:
            if p.poll() is not None:
                raise RuntimeError(f"{p.bench_name} exited ({p.returncode}) while waiting for "
                                   f"{what}; log {p.bench_log}:\n{tail(p.bench_log)}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def tail(path, n=20):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ------------------------------------------------------------------ /proc


def cpu_times():
    """Per-core (busy, total) jiffies."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+)\s+(.*)", line)
            if m:
                v = [int(x) for x in m.group(2).split()]
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                total = sum(v[:8])
                out[int(m.group(1))] = (total - idle, total)
    return out


def proc_cpu(pid) -> float:
    """utime + stime of a process (all its threads), in jiffies."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def vm_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


class Quiet:
    """Waits (within a budget) until the machine is mostly idle."""

    def __init__(self, budget):
        self.budget = budget
        self.waited = 0.0

    def wait(self, max_s=QUIET_WAIT_S, idle_cores=1.7):
        start = time.monotonic()
        while True:
            a = cpu_times()
            time.sleep(1.0)
            b = cpu_times()
            busy = sum((b[c][0] - a[c][0]) for c in b) / max(
                1, sum((b[c][1] - a[c][1]) for c in b)) * len(b)
            spent = time.monotonic() - start
            if len(b) - busy >= idle_cores or spent >= max_s or self.waited + spent >= self.budget:
                self.waited += spent
                return round(busy, 2), round(spent, 1)


# ------------------------------------------------------------------ servers


class Bench:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.jwks = (DATA / "jwks.json").read_text()
        # --client-priority: wrk under SCHED_FIFO, so that other work on the client core
        # cannot delay its wake-ups (off by default: everything runs at normal priority).
        # Never the loadgen: it busy-polls, and SCHED_FIFO would starve its core.
        self.client_prefix = ["chrt", "-f", "10"] if args.client_priority else []

    # --- tokengate

    def tg_config(self, name, cache=True, proxy_upstream=None, ports=None):
        p = ports
        cfg = {
            "listeners": {
                "authz_http": f"127.0.0.1:{p['http']}",
                "authz_grpc": f"127.0.0.1:{p['grpc']}",
                "admin": f"127.0.0.1:{p['admin']}",
                "proxy": f"127.0.0.1:{p['proxy']}" if proxy_upstream else None,
            },
            "issuers": [{
                "name": "bench",
                "issuer": "https://bench.example",
                "audiences": ["bench-api"],
                "algorithms": ["RS256", "ES256", "EdDSA"],
                "require_typ": ["at+jwt", "application/at+jwt"],
                "key_sources": [{"jwks_file": str(DATA / "jwks.json")}],
            }],
            "cache": {"max_entries": 100000 if cache else 0},
        }
        if proxy_upstream:
            cfg["upstream"] = {"url": f"http://127.0.0.1:{proxy_upstream}", "timeout": "5s"}
        path = self.work / f"{name}.json"
        path.write_text(json.dumps(cfg, indent=1))
        return path

    def start_tg(self, tag, cache=True, proxy_upstream=None):
        ports = {k: free_port() for k in ("http", "grpc", "admin", "proxy")}
        cfg = self.tg_config(f"tokengate-{tag}", cache, proxy_upstream, ports)
        p = PROCS.start("tokengate", [self.args.tokengate, "--log-level", "warn", "serve",
                                      "--config", cfg], self.work / f"tokengate-{tag}.log")
        wait_until(lambda: http_get(ports["admin"], "/readyz")[0] == 200, "tokengate /readyz", [p])
        return p, ports

    def start_allow_all(self, tag):
        hp, gp = free_port(), free_port()
        p = PROCS.start("allow_all", [self.args.allow_all, f"127.0.0.1:{hp}", f"127.0.0.1:{gp}"],
                        self.work / f"allow_all-{tag}.log")
        wait_until(lambda: port_open(hp) and port_open(gp), "allow_all ports", [p])
        return p, {"http": hp, "grpc": gp}

    def start_envoy(self, tag, template, **subs):
        listen, admin = free_port(), free_port()
        text = (BENCH / "envoy" / template).read_text()
        subs = {"LISTEN_PORT": listen, "ADMIN_PORT": admin, **subs}
        for k, v in subs.items():
            text = text.replace("${" + k + "}", str(v))
        left = [l for l in text.splitlines() if "${" in l and not l.lstrip().startswith("#")]
        if left:
            raise RuntimeError(f"{template}: placeholders left: {left}")
        cfg = self.work / f"envoy-{tag}.yaml"
        cfg.write_text(text)
        p = PROCS.start("envoy", [self.args.envoy, "-c", cfg, "--concurrency", "1",
                                  "--disable-hot-restart", "--log-level", "warning"],
                        self.work / f"envoy-{tag}.log")
        wait_until(lambda: http_get(admin, "/ready")[0] == 200, "envoy /ready", [p])
        return p, listen

    def start_nginx(self, tag):
        port = free_port()
        prefix = self.work / f"nginx-{tag}"
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(f"""worker_processes 1;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200; }}
  }}
}}
""")
        globals_ = f"daemon off; master_process off; pid {prefix}/nginx.pid;"
        p = PROCS.start("nginx", [self.args.nginx, "-p", prefix, "-c", conf, "-e",
                                  prefix / "logs/error.log", "-g", globals_],
                        self.work / f"nginx-{tag}.log", core=CLIENT_CORE)
        wait_until(lambda: port_open(port), "nginx port", [p])
        return p, port

    def start_config(self, config, tag):
        """Starts one configuration's processes: (url port, server procs, client-core procs)."""
        kind, opt, _ = CONFIGS[config]
        if kind == "tg_http":
            p, ports = self.start_tg(tag, cache=opt["cache"])
            return ports["http"], [p], []
        if kind == "tg_proxy":
            ng, up = self.start_nginx(tag)
            p, ports = self.start_tg(tag, cache=opt["cache"], proxy_upstream=up)
            return ports["proxy"], [p], [ng]
        if kind == "envoy_noauth":
            p, listen = self.start_envoy(tag, "noauth.yaml")
            return listen, [p], []
        if kind == "envoy_jwt":
            cache = "jwt_cache_config: { jwt_cache_size: 16384 }" if opt["cache"] else ""
            p, listen = self.start_envoy(tag, "jwt_authn.yaml", JWKS_JSON=json.dumps(self.jwks),
                                         JWT_CACHE_CONFIG=cache)
            return listen, [p], []
        if kind == "envoy_xa":
            if opt["target"] == "tg":
                a, ports = self.start_tg(tag, cache=True)
            else:
                a, ports = self.start_allow_all(tag)
            template = "ext_authz_http.yaml" if opt["proto"] == "http" else "ext_authz_grpc.yaml"
            p, listen = self.start_envoy(tag, template, AUTHZ_PORT=ports[opt["proto"]])
            return listen, [p, a], []
        raise ValueError(kind)

    def expects_auth(self, config):
        kind, opt, _ = CONFIGS[config]
        return not (kind == "envoy_noauth" or (kind == "envoy_xa" and opt["target"] == "allow"))

    # --- one measured run

    def preflight(self, config, port, alg):
        """One valid and one invalid probe token: the configuration must judge them."""
        valid = (DATA / f"probe-valid-{alg}.txt").read_text().strip()
        invalid = (DATA / f"probe-invalid-{alg}.txt").read_text().strip()
        s1, _ = http_get(port, "/", {"Authorization": f"Bearer {valid}"})
        s2, _ = http_get(port, "/", {"Authorization": f"Bearer {invalid}"})
        want2 = 401 if self.expects_auth(config) else 200
        if s1 != 200 or s2 != want2:
            raise RuntimeError(f"{config}: pre-flight got {s1} (valid, want 200) and {s2} "
                               f"(invalid, want {want2})")
        return [s1, s2]

    def wrk(self, port, token_file, duration, stop_after=None, until=None):
        """One wrk run (bounded by `timeout`). With `until`, wrk is interrupted (SIGINT,
        after which it reports as usual) as soon as until() is true: wrk's main thread
        otherwise sleeps out its whole -d even when the Lua side stopped sending."""
        argv = ["timeout", "-k", "5", str(int(duration) + 30), "taskset", "-c", str(CLIENT_CORE),
                *self.client_prefix, "wrk", "-t1", f"-c{CONNS}", f"-d{int(duration)}s", "--latency", "-s",
                str(BENCH / "tokens.lua"), f"http://127.0.0.1:{port}/", "--", str(token_file)]
        if stop_after:
            argv.append(str(stop_after))
        res, out = run_generator("wrk", argv, until)
        res["text"] = out.stdout.split("BENCH_JSON")[0].rstrip()
        return res

    def loadgen(self, port, token_file, duration, rate):
        """One run of bench/loadgen (bounded by `timeout`): open loop, Poisson arrivals at
        `rate` req/s over CONNS keep-alive connections, 1 s warm-up then `duration`
        measured; latency from each request's scheduled send time. Pinned to CLIENT_CORE
        but never under chrt, even with --client-priority: it busy-polls its core, and
        SCHED_FIFO would starve everything else there. Returns wrk()'s dict shape (its
        CPU under the same key, wrk_cpu_s, so measure() subtracts it from the client
        core's busy time) plus target_rps, late_sends and max_queue."""
        argv = ["timeout", "-k", "5", str(int(duration) + 30), "taskset", "-c", str(CLIENT_CORE),
                str(self.args.loadgen), "--url", f"http://127.0.0.1:{port}/",
                "--tokens", str(token_file), "--rate", f"{rate:.1f}",
                "--connections", str(CONNS), "--duration", str(int(duration))]
        res, out = run_generator("loadgen", argv)
        res["text"] = out.stderr.strip()  # its diagnostics
        return res

    def measure(self, config, scenario, duration, tag=None, rate=None):
        """One run: fresh servers, pre-flight, wrk (or, with `rate`, bench/loadgen at that
        open-loop rate), RSS, CPU accounting, stop."""
        token_name, ok_share = SCENARIOS[scenario]
        alg = {"distinct-es256": "es256", "distinct-eddsa": "eddsa"}.get(scenario, "rs256")
        tag = tag or re.sub(r"[^a-z0-9]+", "-", f"{config}-{scenario}".lower())
        load_before = loadavg()
        port, servers, helpers = self.start_config(config, tag)
        try:
            statuses = self.preflight(config, port, alg)
            cpu_a = cpu_times()
            srv_a = {p.pid: proc_cpu(p.pid) for p in servers}
            hlp_a = {p.pid: proc_cpu(p.pid) for p in helpers}
            t0 = time.monotonic()
            if rate:
                res = self.loadgen(port, DATA / token_name, duration, rate)
            else:
                res = self.wrk(port, DATA / token_name, duration)
            elapsed = time.monotonic() - t0
            cpu_b = cpu_times()
            srv_cpu = sum(proc_cpu(p.pid) - srv_a[p.pid] for p in servers) / TICK
            hlp_cpu = sum(proc_cpu(p.pid) - hlp_a[p.pid] for p in helpers) / TICK
            rss = {f"{p.bench_name}": vm_rss_kib(p.pid) for p in servers}
            for p in servers:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.bench_name} died during the run:\n{tail(p.bench_log)}")
        finally:
            for p in servers + helpers:
                PROCS.stop(p)
        load_after = loadavg()
        busy = {c: (cpu_b[c][0] - cpu_a[c][0]) / TICK for c in cpu_b}
        foreign_srv = max(0.0, busy.get(SERVER_CORE, 0) - srv_cpu) / elapsed
        # The load generator's own CPU (wrk_cpu_s, also for the loadgen, which busy-polls
        # and so takes ~1.0 of the client core by design) is not foreign.
        foreign_cli = max(0.0, busy.get(CLIENT_CORE, 0) - res["wrk_cpu_s"] - hlp_cpu) / elapsed
        foreign_other = sum(v for c, v in busy.items() if c not in (SERVER_CORE, CLIENT_CORE)) / elapsed
        rps = res["requests"] / (res["duration_us"] / 1e6)
        non2xx = res["errors"]["status"]
        ok_measured = 1 - non2xx / max(1, res["requests"])
        lat = res["latency_us"]
        run = {
            "config": config, "scenario": scenario, "tokens": token_name,
            "duration_s": duration,
            "rps": round(rps, 1), "p50_ms": lat["p50"] / 1000, "p90_ms": lat["p90"] / 1000,
            "p99_ms": lat["p99"] / 1000, "p999_ms": lat["p999"] / 1000,
            "max_ms": lat["max"] / 1000, "mean_ms": round(lat["mean"] / 1000, 3),
            "requests": res["requests"], "errors": res["errors"],
            "share_2xx": round(ok_measured, 4), "share_2xx_expected": ok_share,
            "rss_kib": rss, "rss_mib_total": round(sum(v or 0 for v in rss.values()) / 1024, 1),
            "server_core_util": round(srv_cpu / elapsed, 3),
            "client_core_util": round((res["wrk_cpu_s"] + hlp_cpu) / elapsed, 3),
            "foreign_cpu": {"server_core": round(foreign_srv, 3),
                            "client_core": round(foreign_cli, 3),
                            "other_cores": round(foreign_other, 3)},
            "loadavg_before": load_before, "loadavg_after": load_after,
            "preflight": statuses, "wrk_text": res["text"],
            "generator": "loadgen" if rate else "wrk",
        }
        if rate:
            # rps above is the achieved rate.
            measured = max(1, round(rate * res["duration_us"] / 1e6))
            run.update({"target_rps": round(rate, 1), "late_sends": res["late_sends"],
                        "late_share": round(res["late_sends"] / measured, 4),
                        "max_queue": res["max_queue"]})
        run["noisy"] = foreign_srv > NOISY_SERVER_CORE or foreign_cli > NOISY_CLIENT_CORE
        bad = []
        if abs(ok_measured - ok_share) > 0.02 and self.expects_auth(config):
            bad.append(f"2xx share {ok_measured:.3f}, expected {ok_share}")
        if not self.expects_auth(config) and non2xx:
            bad.append(f"{non2xx} non-2xx")
        e = res["errors"]
        if e["connect"] or e["read"] or e["write"] or e["timeout"]:
            bad.append(f"socket errors {e}")
        if rate and rps < 0.9 * rate:
            bad.append(f"achieved {rps:.0f} of {rate:.0f} req/s")
        if rate and helpers:
            bad.append("a helper shares the client core with the busy-polling loadgen")
        run["anomalies"] = bad
        return run


# ------------------------------------------------------------------ phases


def fmt_run(r):
    f = r["foreign_cpu"]
    return (f"{r['config']:<34} {r['scenario']:<15} {r['rps']:>9.0f} req/s  p50 {r['p50_ms']:.2f}"
            f"  p99 {r['p99_ms']:.2f} ms  rss {r['rss_mib_total']:.1f} MiB  srv {r['server_core_util']:.2f}"
            f" cli {r['client_core_util']:.2f}  foreign {f['server_core']:.2f}/{f['client_core']:.2f}"
            f"  load {r['loadavg_before'][0]:.2f}->{r['loadavg_after'][0]:.2f}"
            + (f"  target {r['target_rps']:.0f} late {r['late_sends']} max queue {r['max_queue']}"
               if r.get("target_rps") else "")
            + ("  NOISY" if r["noisy"] else "") + (f"  !! {r['anomalies']}" if r["anomalies"] else ""))


def run_with_retries(bench, quiet, config, scenario, duration, rate=None):
    tries = []
    for attempt in range(MAX_TRIES):
        busy, waited = quiet.wait()
        if waited > 1.5:
            log(f"  (waited {waited:.0f}s for a quiet machine; busy {busy} cores)")
        try:
            r = bench.measure(config, scenario, duration, rate=rate)
        except Exception as e:  # a failed run is recorded, not fatal
            log(f"  FAILED {config} / {scenario}: {e}")
            tries.append({"config": config, "scenario": scenario, "failed": str(e),
                          "noisy": True, "attempt": attempt + 1})
            continue
        r["attempt"] = attempt + 1
        log("  " + fmt_run(r))
        tries.append(r)
        if not r["noisy"]:
            break
    return tries


def median_of(runs, key):
    vals = [r[key] for r in runs]
    return statistics.median(vals) if vals else None


def summarize(runs):
    """Per (config, scenario): medians over the kept runs. Kept = the quiet run of each
    round (or, when every try of a round was noisy, its least noisy one)."""
    by = {}
    for r in runs:
        if "failed" in r or r.get("superseded"):
            continue
        by.setdefault((r["config"], r["scenario"], is_half(r)), {}).setdefault(
            r["round"], []).append(r)
    out = {}
    for key, rounds in by.items():
        kept = []
        for rnd, tries in sorted(rounds.items()):
            quiet = [t for t in tries if not t["noisy"]]
            kept.append(quiet[-1] if quiet else min(tries, key=lambda t: t["foreign_cpu"]["server_core"]))
        out[key] = {
            "config": key[0], "scenario": key[1], "half_saturation": key[2],
            "rounds": len(kept), "noisy_rounds": sum(1 for k in kept if k["noisy"]),
            "rps": median_of(kept, "rps"), "p50_ms": median_of(kept, "p50_ms"),
            "p99_ms": median_of(kept, "p99_ms"), "rss_mib": median_of(kept, "rss_mib_total"),
            "rss_kib_by_process": kept[-1]["rss_kib"],
            "server_core_util": median_of(kept, "server_core_util"),
            # CPU the server process(es) spent per request: unlike req/s, this does not
            # depend on how promptly wrk got its core back.
            "cpu_us_per_req": statistics.median(
                k["server_core_util"] * 1e6 / k["rps"] for k in kept if k["rps"]),
            "client_core_util": median_of(kept, "client_core_util"),
            "foreign_server_core_max": max(k["foreign_cpu"]["server_core"] for k in kept),
            "loadavg": [[k["loadavg_before"][0], k["loadavg_after"][0]] for k in kept],
            "per_round_rps": {k["round"]: k["rps"] for k in kept},
            "per_round_cpu_us": {k["round"]: k["server_core_util"] * 1e6 / k["rps"] for k in kept
                                 if k["rps"]},
            "anomalies": sorted({a for k in kept for a in k["anomalies"]}),
            "generator": kept[-1].get("generator", "wrk"),
            "server_priority": kept[-1].get("server_priority", "normal"),
            "late_share": median_of(kept, "late_share") if all("late_share" in k for k in kept) else None,
            "max_queue": max(k["max_queue"] for k in kept) if all("max_queue" in k for k in kept) else None,
        }
    return out


def is_half(r):
    """A half-saturation run: the loadgen at a target rate, or (older results) wrk paced
    by tokens.lua's delay()."""
    return r.get("target_rps") is not None or r.get("delay_ms", 0) > 0


def schedule(configs, rnd, quick):
    """The (configuration, scenario) runs of round `rnd`, in order. The two sides of
    every ratio in RATIOS run back to back, in alternating order (A B in odd rounds,
    B A in even ones): the host's speed drifts by up to a quarter within minutes (see
    docs/benchmarks.md, "Noise"), and a ratio of two runs minutes apart measured that drift
    as much as the servers. Everything else follows in CONFIGS order."""
    wanted = [(c, s) for c in configs for s in CONFIGS[c][2]
              if not (quick and s not in QUICK_SCENARIOS)]
    order, seen = [], set()
    for _, num, den, _ in RATIOS:
        pair = [side for side in (num, den) if side in wanted and side not in seen]
        if rnd % 2 == 0:
            pair.reverse()
        order += pair
        seen.update(pair)
    return order + [run for run in wanted if run not in seen]


def half_saturation(bench, quiet, summary, rounds, duration, pairs):
    """p99 at half the saturated rate: bench/loadgen sends open-loop Poisson arrivals at
    half the median saturated rate over CONNS connections, each latency counted from the
    request's scheduled send time (coordinated-omission-free, like wrk2). No correction
    run: an open-loop generator holds its rate unless the server saturates, which the
    achieved rate, late_sends and max_queue in the run then show."""
    runs = []
    if bench.args.server_priority:
        SERVER_PREFIX[:] = ["chrt", "-f", "5"]
    for rnd in range(1, rounds + 1):
        for config, scenario in pairs:
            sat = summary.get((config, scenario, False))
            if not sat or not sat["rps"]:
                continue
            target = sat["rps"] / 2
            log(f"half-saturation round {rnd}: {config} / {scenario}: {target:.0f} req/s, "
                f"open loop (Poisson)")
            tries = run_with_retries(bench, quiet, config, scenario, duration, rate=target)
            for t in tries:
                t["round"] = rnd
                t["half_target_rps"] = round(target, 1)
                t["server_priority"] = " ".join(SERVER_PREFIX) or "normal"
            runs += tries
    SERVER_PREFIX.clear()
    return runs


def cache_rss(bench, quiet, token_file, count):
    """tokengate authz_http with the default cache (100,000 entries): RSS idle, then
    after `count` distinct valid tokens have each been verified and cached once."""
    quiet.wait()
    tag = "cache-rss"
    load_before = loadavg()
    p, ports = bench.start_tg(tag, cache=True)
    try:
        time.sleep(0.5)
        idle = vm_rss_kib(p.pid)
        def allowed_so_far():
            _, body = http_get(ports["admin"], "/metrics")
            return sum(int(x) for x in re.findall(
                r'tokengate_decisions_total\{[^}]*decision="allow"[^}]*\} (\d+)', body.decode()))

        res = bench.wrk(ports["http"], token_file, 900, stop_after=count,
                        until=lambda: allowed_so_far() >= count)
        time.sleep(1.0)
        after = vm_rss_kib(p.pid)
        _, body = http_get(ports["admin"], "/metrics")
        misses = re.search(r'tokengate_token_cache_requests_total\{result="miss"\} (\d+)',
                           body.decode())
        allowed = sum(int(x) for x in re.findall(
            r'tokengate_decisions_total\{[^}]*decision="allow"[^}]*\} (\d+)', body.decode()))
    finally:
        PROCS.stop(p)
    out = {
        "tokens": count, "token_file": str(token_file.name), "rss_idle_kib": idle,
        "rss_after_kib": after, "rss_after_mib": round(after / 1024, 1),
        "cache_misses": int(misses.group(1)) if misses else None, "allowed": allowed,
        "requests": res["requests"], "rps": round(res["requests"] / (res["duration_us"] / 1e6), 1),
        "non2xx": res["errors"]["status"],
        "loadavg_before": load_before, "loadavg_after": loadavg(),
    }
    log(f"cache RSS: {out}")
    return out


def time_to_ready(bench, n=5):
    """`tokengate serve` (local JWKS file) from spawn to the first `200` of /readyz,
    polled every millisecond over a raw socket; median of n."""
    times = []
    for i in range(n):
        ports = {k: free_port() for k in ("http", "grpc", "admin", "proxy")}
        cfg = bench.tg_config(f"tokengate-ready-{i}", True, None, ports)
        req = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        t0 = time.perf_counter()
        p = PROCS.start("tokengate", [bench.args.tokengate, "--log-level", "warn", "serve",
                                      "--config", cfg], bench.work / f"tokengate-ready-{i}.log")
        ready = None
        try:
            deadline = t0 + 10
            while time.perf_counter() < deadline and p.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", ports["admin"]), timeout=1) as s:
                        s.sendall(req)
                        if s.recv(64).startswith(b"HTTP/1.1 200"):
                            ready = (time.perf_counter() - t0) * 1000
                            break
                except OSError:
                    pass
                time.sleep(0.001)
        finally:
            PROCS.stop(p)
        times.append(round(ready, 1) if ready is not None else None)
        time.sleep(0.2)
    ok = [t for t in times if t is not None]
    out = {"runs_ms": times, "median_ms": statistics.median(ok) if ok else None}
    log(f"time to ready: {out}")
    return out


def profile(bench, work, duration=8):
    """perf record -g of tokengate authz_http under load (cache off, distinct RS256;
    and cache on, repeated token); writes the top of `perf report` next to the results."""
    reports = {}
    for config, scenario in [("tg-authz_http nocache", "distinct"), ("tg-authz_http cache", "repeated")]:
        tag = re.sub(r"[^a-z0-9]+", "-", f"profile-{config}-{scenario}".lower())
        p, ports = bench.start_tg(tag, cache=CONFIGS[config][1]["cache"])
        data = work / f"{tag}.perf.data"
        try:
            token_file = DATA / SCENARIOS[scenario][0]
            wrk_thread = threading.Thread(target=lambda: bench.wrk(ports["http"], token_file, duration + 4))
            wrk_thread.start()
            time.sleep(2)
            subprocess.run(["timeout", str(duration + 20), "perf", "record", "-g", "-F", "999",
                            "-o", str(data), "-p", str(p.pid), "--", "sleep", str(duration)],
                           capture_output=True, text=True)
            wrk_thread.join(timeout=duration + 60)
        finally:
            PROCS.stop(p)
        rep = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--stdio",
                              "--sort", "symbol", "--percent-limit", "0.7", "-g", "none"],
                             capture_output=True, text=True).stdout
        dso = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--stdio",
                              "--sort", "dso", "-g", "none"], capture_output=True, text=True).stdout
        children = subprocess.run(["perf", "report", "-i", str(data), "--children", "--stdio",
                                   "--sort", "symbol", "--percent-limit", "3", "-g", "none"],
                                  capture_output=True, text=True).stdout
        reports[f"{config} / {scenario}"] = {"self": rep, "dso": dso, "children": children}
    return reports


# ------------------------------------------------------------------ report


def table(summary, ratios, rss, ready, half):
    lines = []
    lines.append("| configuration | scenario | req/s | p50 ms | p99 ms | RSS MiB | server CPU µs/req | server core | client core | rounds (noisy) | load 1m before→after |")
    lines.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    order = list(CONFIGS)
    for key in sorted((k for k in summary if not k[2]),
                      key=lambda k: (order.index(k[0]), list(SCENARIOS).index(k[1]))):
        s = summary[key]
        rss_txt = f"{s['rss_mib']:.1f}"
        procs = s["rss_kib_by_process"]
        if len(procs) > 1:
            rss_txt += " (" + " + ".join(f"{n} {v / 1024:.1f}" for n, v in procs.items() if v) + ")"
        loads = ", ".join(f"{a:.1f}→{b:.1f}" for a, b in s["loadavg"])
        flag = " ⚠ " + "; ".join(s["anomalies"]) if s["anomalies"] else ""
        lines.append(f"| {s['config']} | {s['scenario']}{flag} | {s['rps']:.0f} | {s['p50_ms']:.2f} | "
                     f"{s['p99_ms']:.2f} | {rss_txt} | {s['cpu_us_per_req']:.1f} | {s['server_core_util']:.2f} | "
                     f"{s['client_core_util']:.2f} | {s['rounds']} ({s['noisy_rounds']}) | {loads} |")
    if half:
        lines.append("")
        halves = [k for k in summary if k[2]]
        if all(summary[k].get("generator") == "loadgen" for k in halves):
            fifo = any(summary[k].get("server_priority", "normal") != "normal" for k in halves)
            lines.append("p99 at half of saturation: open-loop Poisson arrivals at half the saturated rate "
                         "(bench/loadgen), latency from the scheduled send time"
                         + ("; every server under SCHED_FIFO (--server-priority)" if fifo else "") + ":")
        else:  # re-rendering older results
            lines.append("p99 at about half of saturation (each connection paced by tokens.lua's delay()):")
        lines.append("")
        lines.append("| configuration | scenario | saturated req/s | target | achieved req/s | p50 ms | p99 ms | p99 saturated ms | late sends | max queue | rounds (noisy) |")
        lines.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        for key in halves:
            s = summary[key]
            sat = summary.get((key[0], key[1], False))
            late = f"{s['late_share'] * 100:.2f}%" if s.get("late_share") is not None else "–"
            maxq = f"{s['max_queue']}" if s.get("max_queue") is not None else "–"
            lines.append(f"| {s['config']} | {s['scenario']} | {sat['rps']:.0f} | {sat['rps'] / 2:.0f} | "
                         f"{s['rps']:.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {sat['p99_ms']:.2f} | "
                         f"{late} | {maxq} | {s['rounds']} ({s['noisy_rounds']}) |")
    lines.append("")
    lines.append("| target | measured (req/s ratio) | by server CPU per request | target | holds (req/s) |")
    lines.append("|---|--:|--:|--:|---|")
    for r in ratios:
        if r["value"] is None:
            continue
        tgt = f"≥ {r['target']:.1f}×" if r["target"] else "–"
        holds = "–" if r["target"] is None else ("yes" if r["value"] >= r["target"] else "NO")
        per = ", ".join(f"{x:.2f}" for x in r["per_round"])
        lines.append(f"| {r['label']} | {r['value']:.2f}× (rounds: {per}) | {r['cpu_value']:.2f}× | {tgt} | {holds} |")
    if rss:
        holds = "yes" if rss["rss_after_mib"] < RSS_TARGET_MIB else "NO"
        if rss["tokens"] != 100_000:
            holds = "– (the target is for 100,000 tokens)"
        lines.append(f"| tokengate RSS after {rss['tokens']:,} distinct tokens cached (idle "
                     f"{rss['rss_idle_kib'] / 1024:.1f} MiB; cache misses {rss['cache_misses']}) | "
                     f"{rss['rss_after_mib']:.1f} MiB | | < {RSS_TARGET_MIB:.0f} MiB | {holds} |")
    if ready and ready["median_ms"] is not None:
        holds = "yes" if ready["median_ms"] < READY_TARGET_MS else "NO"
        lines.append(f"| tokengate serve time-to-ready, local JWKS (median of {len(ready['runs_ms'])}: "
                     f"{', '.join(str(t) for t in ready['runs_ms'])}) | {ready['median_ms']:.1f} ms | | "
                     f"< {READY_TARGET_MS:.0f} ms | {holds} |")
    return "\n".join(lines)


def compute_ratios(summary):
    out = []
    for label, num, den, target in RATIOS:
        a = summary.get((*num, False))
        b = summary.get((*den, False))
        if not a or not b:
            out.append({"label": label, "value": None, "target": target, "per_round": []})
            continue
        # The same round's kept runs of both sides, paired.
        per_round = [a["per_round_rps"][rnd] / b["per_round_rps"][rnd]
                     for rnd in sorted(a["per_round_rps"]) if rnd in b["per_round_rps"]]
        out.append({"label": label, "numerator": list(num), "denominator": list(den),
                    "value": a["rps"] / b["rps"], "target": target, "per_round": per_round,
                    # >1: the numerator spends less server CPU per request.
                    "cpu_value": b["cpu_us_per_req"] / a["cpu_us_per_req"]})
    return out


def machine_info(args):
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    def cmd(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    return {
        "nproc": os.cpu_count(), "cpu_model": cpu, "kernel": platform.release(),
        "mem_total": cmd(["grep", "MemTotal", "/proc/meminfo"]),
        "envoy": cmd([args.envoy, "--version"]),
        "wrk": cmd(["sh", "-c", "wrk -v 2>&1 | head -1"]),
        "nginx": cmd(["sh", "-c", f"{args.nginx} -v 2>&1"]),
        "tokengate_git": cmd(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
        "tokengate_binary_sha256": cmd(["sha256sum", str(args.tokengate)]).split(" ")[0],
        "loadgen_binary_sha256": cmd(["sha256sum", str(args.loadgen)]).split(" ")[0],
        "rustc": cmd(["rustc", "--version"]),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokengate", type=Path)
    ap.add_argument("--allow-all", type=Path)
    ap.add_argument("--envoy", type=Path)
    ap.add_argument("--loadgen", type=Path, default=ROOT / "bench/work/bin/loadgen",
                    help="bench/loadgen's binary (the half-saturation runs)")
    ap.add_argument("--nginx", default="nginx")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--duration", type=int, default=None)
    ap.add_argument("--only", default=None, help="regex: configurations to run")
    ap.add_argument("--client-priority", action="store_true",
                    help="run wrk under SCHED_FIFO (chrt -f 10): a sensitivity check on a busy machine "
                         "(never the loadgen, which busy-polls)")
    ap.add_argument("--server-priority", action="store_true",
                    help="in the half-saturation runs, the servers under SCHED_FIFO (chrt -f 5): "
                         "shields them from this machine's kernel threads and neighbours")
    ap.add_argument("--quiet-budget", type=float, default=QUIET_BUDGET_S,
                    help="most seconds spent, in all, waiting for a quiet machine")
    ap.add_argument("--no-extras", action="store_true",
                    help="skip the cache-RSS and time-to-ready measurements")
    ap.add_argument("--report", type=Path, default=None,
                    help="re-render the table of a raw results file, then exit")
    args = ap.parse_args()
    if args.report:
        data = json.loads(args.report.read_text())
        runs = data["runs"]
        summary = summarize(runs)
        pairs = [(s["config"], s["scenario"]) for s in summary.values() if s["half_saturation"]]
        print(table(summary, compute_ratios(summary), data.get("cache_rss"),
                    data.get("time_to_ready"), pairs))
        return 0

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = BENCH / "work" / stamp
    work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)

    def on_signal(signum, _frame):
        log(f"signal {signum}: stopping the processes started here")
        PROCS.stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    bench = Bench(args, work)
    quiet = Quiet(args.quiet_budget)
    started = time.time()
    meta = machine_info(args)
    meta.update({"started": stamp, "mode": "quick" if args.quick else ("profile" if args.profile else "full"),
                 "client_priority": "SCHED_FIFO 10" if args.client_priority else "normal",
                 "server_priority": "SCHED_FIFO 5 (half-saturation runs)" if args.server_priority else "normal",
                 "server_core": SERVER_CORE, "client_core": CLIENT_CORE, "connections": CONNS,
                 "wrk": meta["wrk"], "loadavg_start": loadavg()})
    try:
        if args.profile:
            reports = profile(bench, work)
            for name, rep in reports.items():
                slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
                for part, text in rep.items():
                    (RESULTS / f"{stamp}-perf-{slug}-{part}.txt").write_text(text)
                print(f"== {name}: perf report (self, by symbol)\n{rep['self'][:6000]}")
            return 0

        rounds = args.rounds or (1 if args.quick else 2)
        duration = args.duration or (3 if args.quick else 10)
        configs = [c for c in CONFIGS if not args.only or re.search(args.only, c)]
        runs = []
        for rnd in range(1, rounds + 1):
            for config, scenario in schedule(configs, rnd, args.quick):
                log(f"round {rnd}/{rounds}: {config} / {scenario} (load {loadavg()[0]:.2f})")
                for t in run_with_retries(bench, quiet, config, scenario, duration):
                    t["round"] = rnd
                    runs.append(t)
        summary = summarize(runs)
        pairs = [p for p in (QUICK_HALF if args.quick else HALF) if p[0] in configs]
        runs += half_saturation(bench, quiet, summary, rounds, duration, pairs)
        summary = summarize(runs)
        if args.only or args.no_extras:
            rss = None
        elif args.quick:
            rss = cache_rss(bench, quiet, DATA / "rs256-10k.txt", 10_000)
        else:
            rss = cache_rss(bench, quiet, DATA / "rs256-100k.txt", 100_000)
        ready = time_to_ready(bench) if not (args.only or args.no_extras) else None
        ratios = compute_ratios(summary)
        meta["loadavg_end"] = loadavg()
        meta["elapsed_s"] = round(time.time() - started)
        meta["quiet_wait_s"] = round(quiet.waited)
        text = table(summary, ratios, rss, ready, pairs)
        result = {
            "meta": meta, "runs": runs,
            "summary": [v for v in summary.values()],
            "ratios": ratios, "cache_rss": rss, "time_to_ready": ready, "table": text,
        }
        suffix = ("-quick" if args.quick else "") + ("-fifo" if args.client_priority else "") + (
            "-srvfifo" if args.server_priority else "") + (
            "-only" if args.only else "")
        out = RESULTS / f"{stamp}{suffix}.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(text)
        print(f"\nraw results: {out.relative_to(ROOT)}; machine: {meta['nproc']} x {meta['cpu_model']};"
              f" {meta['elapsed_s']} s, of which {meta['quiet_wait_s']} s waiting for a quiet machine;"
              f" load {meta['loadavg_start'][0]:.2f} at start, {meta['loadavg_end'][0]:.2f} at end")
        return 0
    finally:
        PROCS.stop_all()


if __name__ == "__main__":
    sys.exit(main())
