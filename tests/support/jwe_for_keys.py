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
import hashlib
import json
import sys

try:
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from jwcrypto import jwe, jwk
    from pyasn1.codec.der import decoder
except ImportError as e:
    sys.exit(f"{e}: run scripts/install-test-deps.sh")

SECRET_BAG = "1.2.840.113549.1.12.10.1.5"
FRIENDLY_NAME = "1.2.840.113549.1.9.20"


def der(b):
    return decoder.decode(b)[0]


def secret_key(path, password, alias):
    pfx = der(open(path, "rb").read())
    for content in der(bytes(pfx[1][1])):
        if str(content[0]) != "1.2.840.113549.1.7.1":
            continue
        for bag in der(bytes(content[1])):
            if str(bag[0]) != SECRET_BAG:
                continue
            names = [str(a[1][0]) for a in bag[2] if str(a[0]) == FRIENDLY_NAME] if len(bag) > 2 else []
            if alias not in names:
                continue
            epki = der(bytes(bag[1][1]))
            kdf, enc = epki[0][1][0], epki[0][1][1]
            salt, iterations, length = bytes(kdf[1][0]), int(kdf[1][1]), int(kdf[1][2])
            key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations, length)
            d = Cipher(algorithms.AES(key), modes.CBC(bytes(enc[1]))).decryptor()
            padded = d.update(bytes(epki[1])) + d.finalize()
            unpadder = padding.PKCS7(128).unpadder()
            info = der(unpadder.update(padded) + unpadder.finalize())
            return bytes(info[2])
    sys.exit(f"no secret key {alias!r} in {path}")


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
