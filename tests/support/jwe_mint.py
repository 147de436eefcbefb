#!/usr/bin/env python3
"""Compact JWEs made by an independent implementation (jwcrypto) for tests/jwe.rs.

Prints one JSON document on stdout:
  {"keys": {"oct16": <jwk>, "oct32": <jwk>, "oct64": <jwk>, "ec": <private jwk>,
            "x25519": <private jwk>, "rsa_pkcs8_pem": "<PEM>"},
   "tokens": [{"alg": .., "enc": .., "key": "<key name>", "token": "..", "plaintext": ".."}]}
with a token for every alg x enc pair of SPEC section 10 (dir with the key of the
method's size). Fresh keys every run.
"""

import json
import sys

try:
    from jwcrypto import jwe, jwk
    from jwcrypto.common import json_encode
except ImportError:
    sys.exit("jwcrypto is missing: run scripts/install-test-deps.sh")

ALGS = ["dir", "A128KW", "A256KW", "RSA-OAEP", "RSA-OAEP-256", "ECDH-ES", "ECDH-ES+A128KW", "ECDH-ES+A256KW"]
ENCS = {"A128CBC-HS256": 32, "A256CBC-HS512": 64, "A128GCM": 16, "A256GCM": 32}

keys = {
    "oct16": jwk.JWK.generate(kty="oct", size=128),
    "oct32": jwk.JWK.generate(kty="oct", size=256),
    "oct64": jwk.JWK.generate(kty="oct", size=512),
    "ec": jwk.JWK.generate(kty="EC", crv="P-256"),
    "x25519": jwk.JWK.generate(kty="OKP", crv="X25519"),
    "rsa": jwk.JWK.generate(kty="RSA", size=2048),
}
# A key of each method's size for dir (A128GCM needs 16 bytes, which oct16 is).
dir_keys = {16: "oct16", 32: "oct32", 64: "oct64"}

tokens = []
for alg in ALGS:
    for enc, size in ENCS.items():
        if alg == "dir":
            names = [dir_keys[size]]
        elif alg == "A128KW":
            names = ["oct16"]
        elif alg == "A256KW":
            names = ["oct32"]
        elif alg.startswith("RSA"):
            names = ["rsa"]
        else:
            names = ["ec", "x25519"]
        for name in names:
            plaintext = f"{alg} {enc} {name}: attack at dawn"
            header = {"alg": alg, "enc": enc, "kid": name}
            token = jwe.JWE(plaintext.encode(), json_encode(header))
            token.add_recipient(keys[name])
            tokens.append({"alg": alg, "enc": enc, "key": name, "token": token.serialize(compact=True), "plaintext": plaintext})

out = {name: json.loads(k.export(private_key=True)) for name, k in keys.items() if name != "rsa"}
out["rsa_pkcs8_pem"] = keys["rsa"].export_to_pem(private_key=True, password=None).decode()
json.dump({"keys": out, "tokens": tokens}, sys.stdout)
