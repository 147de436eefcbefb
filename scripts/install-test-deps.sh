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

if ((${#need_apt[@]})); then
  echo "install-test-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Rust components used by the lint step.
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

for tool in curl openssl keytool python3; do
  have "$tool" || { echo "install-test-deps: $tool is still missing" >&2; exit 1; }
done
echo "install-test-deps: ok"
