#!/usr/bin/env bash
# Regenerates the PKCS#12 seeds of the keystore_load fuzz target with OpenSSL and
# keytool (fresh random keys each run). Every store uses the password
# tokengate_fuzz::KEYSTORE_PASSWORD and, where it can, the aliases the target maps:
# signature-key (private key + certificate), verification-key (trusted certificate),
# hmac-key (HMAC secret key).
#   full.p12      all three entries (openssl export, then keytool imports)
#   ec.p12        the same with an EC P-256 key and an Ed25519 trusted certificate
#   legacy.p12    signature-key only, OpenSSL -legacy (RC2/3DES, SHA-1 MAC)
#   nomac.p12     signature-key only, unencrypted and without MAC: mutations reach the
#                 certificate and key parsers instead of failing the MAC check
set -euo pipefail
PASS='fuzz-Keystore-Pa55'
out="$(cd "$(dirname "$0")" && pwd)/keystore_load"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
subj() { echo "/CN=$1"; }
openssl req -x509 -newkey rsa:2048 -nodes -subj "$(subj sig)" -keyout k.key -out cert.pem -days 365 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -subj "$(subj ver)" -keyout v.key -out v.pem -days 365 2>/dev/null
openssl pkcs12 -export -in cert.pem -inkey k.key -name signature-key -passout "pass:$PASS" -out full.p12
keytool -importcert -noprompt -alias verification-key -file v.pem -keystore full.p12 -storetype PKCS12 -storepass "$PASS" >/dev/null 2>&1
keytool -genseckey -alias hmac-key -keyalg HmacSHA256 -keysize 512 -keystore full.p12 -storetype PKCS12 -storepass "$PASS" -keypass "$PASS" >/dev/null 2>&1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$(subj ec)" -keyout e.key -out e.pem -days 365 2>/dev/null
openssl req -x509 -newkey ed25519 -nodes -subj "$(subj ed)" -keyout d.key -out d.pem -days 365 2>/dev/null
openssl pkcs12 -export -in e.pem -inkey e.key -name signature-key -passout "pass:$PASS" -out ec.p12
keytool -importcert -noprompt -alias verification-key -file d.pem -keystore ec.p12 -storetype PKCS12 -storepass "$PASS" >/dev/null 2>&1
keytool -genseckey -alias hmac-key -keyalg HmacSHA384 -keysize 384 -keystore ec.p12 -storetype PKCS12 -storepass "$PASS" -keypass "$PASS" >/dev/null 2>&1
openssl pkcs12 -export -legacy -in cert.pem -inkey k.key -name signature-key -passout "pass:$PASS" -out legacy.p12
openssl pkcs12 -export -in cert.pem -inkey k.key -name signature-key -passout "pass:$PASS" \
  -keypbe NONE -certpbe NONE -nomac -out nomac.p12
chmod 644 full.p12 ec.p12 legacy.p12 nomac.p12
cp full.p12 ec.p12 legacy.p12 nomac.p12 "$out/"
ls -l "$out"/*.p12
