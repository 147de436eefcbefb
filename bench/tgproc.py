"""One tokengate for the ad hoc bench scripts (bench/generators.py, bench/fallback_flood.py):
writes the config, starts `tokengate serve` pinned to a core with JSON logs, reads the
listeners' addresses back from their `listening` lines (the config binds port 0) and
waits for `/readyz`."""

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKENGATE = ROOT / "target" / "release" / "tokengate"


def serve(work, name, config, core="0"):
    """Starts tokengate on `config` (its listeners on 127.0.0.1:0); returns the process
    and {listener: "host:port"}. Exits the script when it does not come up in 10 s."""
    path = work / f"{name}.json"
    path.write_text(json.dumps(config))
    log_path = work / f"{name}.log"
    proc = subprocess.Popen(
        ["taskset", "-c", core, str(TOKENGATE), "--log-level", "info", "--log-format", "json",
         "serve", "--config", str(path)],
        stdout=subprocess.DEVNULL, stderr=log_path.open("w"))
    wanted = {n for n, a in config["listeners"].items() if a is not None}
    addrs, deadline = {}, time.time() + 10
    while time.time() < deadline and not wanted <= addrs.keys():
        for line in log_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("message") == "listening":
                addrs[rec["listener"]] = rec["addr"]
        time.sleep(0.05)
    if not wanted <= addrs.keys():
        proc.kill()
        sys.exit(f"tokengate did not report its listeners: {log_path.read_text()}")
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://{addrs['admin']}/readyz", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    return proc, addrs
