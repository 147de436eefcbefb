#!/usr/bin/env python3
"""JWEs (made by jwcrypto) for keys made by keytool and openssl, for tests/jwe.rs.

Usage: jwe_for_keys.py <keystore.p12> <store password> <secret alias> <public key PEM>...

The keystore's secret-key entry (keytool -genseckey, HmacSHA512) is read here on its own,
with pyasn1 and the `cryptography` package (PBES2/PBKDF2/AES-CBC, as keytool writes it),
never through tokengate; its 64 bytes are the `dir` key of A256CBC-HS512 (PingGateway's
JwtSession). Each public key PEM (an RSA or EC key, exported by openssl) gets RSA-OAEP-256
or ECDH-ES+A256KW tokens. Prints {"secret": <dir token>, "public": [<token per PEM>]}.
"""

import base64
import json
import sys

try:
    from jwcrypto import jwe, jwk
except ImportError as e:
    sys.exit(f"{e}: run scripts/install-test-deps.sh")

from p12_secret import secret_key  # noqa: E402 (beside this script)


def encrypt(key, header, plaintext):
    token = jwe.JWE(plaintext.encode(), json.dumps(header))
    token.add_recipient(key)
    return token.serialize(compact=True)


path, password, alias, *pems = sys.argv[1:]
secret = secret_key(path, password, alias)
oct_key = jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(secret).rstrip(b"=").decode())
out = {
    "secret_len": len(secret),
    "secret": encrypt(oct_key, {"alg": "dir", "enc": "A256CBC-HS512"}, '{"sub":"Sam Carter"}'),
    "public": [],
}
for pem in pems:
    key = jwk.JWK.from_pem(open(pem, "rb").read())
    alg = "RSA-OAEP-256" if key["kty"] == "RSA" else "ECDH-ES+A256KW"
    out["public"].append(encrypt(key, {"alg": alg, "enc": "A256GCM"}, f"for {pem}"))
json.dump(out, sys.stdout)
