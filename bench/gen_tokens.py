#!/usr/bin/env python3
"""Generates the load benchmark's inputs (idempotent): keys, a local JWKS and token files.

    python3 bench/gen_tokens.py OUT_DIR

Tokens are signed here with pyca `cryptography`, independently of the Rust code under
test. Nothing is regenerated when OUT_DIR/manifest.json already describes the same
recipe (RECIPE below); delete OUT_DIR to start over.

Keys (OUT_DIR/keys/*.pem, PKCS#8): bench-rsa (RSA 2048), bench-ec (P-256), bench-ed
(Ed25519), and an attacker key of each kind that is published nowhere.

OUT_DIR/jwks.json: the three public keys, `kid` = key name, with `alg` and `use: sig`.

Token files, one compact JWS per line (header {"alg","typ":"at+jwt","kid"}; claims
{"iss":"https://bench.example","aud":"bench-api","sub":"user-<n>","scope":"read write",
"iat":1700000000,"exp":4102444800,"jti":"<set>-<n>"}; exp = 2100-01-01):

  rs256-one.txt       1 valid RS256 token (the "repeated" scenario)
  rs256-10k.txt       10,000 distinct valid RS256 tokens
  rs256-mix.txt       10,000 RS256 tokens alternating valid / invalid; the invalid ones
                      cycle through four kinds: bad signature (attacker key, real kid),
                      expired (exp 1700003600, correctly signed), wrong audience
                      (correctly signed), malformed (three segments of garbage)
  rs256-100k.txt      100,000 distinct valid RS256 tokens (cache RSS scenario)
  es256-10k.txt, eddsa-10k.txt   10,000 distinct valid tokens each
  probe-valid-<alg>.txt, probe-invalid-<alg>.txt   one token each, used by the
                      pre-flight check only (so that it never warms a scenario's cache)
"""

import base64
import json
import multiprocessing
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

RECIPE = "tokengate-bench-v1"
ISS = "https://bench.example"
AUD = "bench-api"
IAT = 1_700_000_000
EXP = 4_102_444_800  # 2100-01-01T00:00:00Z
EXPIRED = 1_700_003_600

KEYS = {
    "bench-rsa": ("RS256", lambda: rsa.generate_private_key(65537, 2048)),
    "bench-ec": ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
    "bench-ed": ("EdDSA", lambda: ed25519.Ed25519PrivateKey.generate()),
    "attacker-rsa": ("RS256", lambda: rsa.generate_private_key(65537, 2048)),
    "attacker-ec": ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
    "attacker-ed": ("EdDSA", lambda: ed25519.Ed25519PrivateKey.generate()),
}
BY_ALG = {"RS256": "bench-rsa", "ES256": "bench-ec", "EdDSA": "bench-ed"}
ATTACKER = {"RS256": "attacker-rsa", "ES256": "attacker-ec", "EdDSA": "attacker-ed"}

# name -> (alg, count, kind); kind "valid", "mix"
SETS = {
    "rs256-one": ("RS256", 1, "valid"),
    "rs256-10k": ("RS256", 10_000, "valid"),
    "rs256-mix": ("RS256", 10_000, "mix"),
    "rs256-100k": ("RS256", 100_000, "valid"),
    "es256-10k": ("ES256", 10_000, "valid"),
    "eddsa-10k": ("EdDSA", 10_000, "valid"),
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


_keys = {}


def load_keys(out: Path):
    for name in KEYS:
        pem = (out / "keys" / f"{name}.pem").read_bytes()
        _keys[name] = serialization.load_pem_private_key(pem, password=None)


def sign(alg: str, signer: str, kid: str, claims: dict) -> str:
    key = _keys[signer]
    header = {"alg": alg, "typ": "at+jwt", "kid": kid}
    signing_input = f"{b64(compact(header))}.{b64(compact(claims))}".encode()
    if alg == "RS256":
        sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "ES256":
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        sig = key.sign(signing_input)
    return f"{signing_input.decode()}.{b64(sig)}"


def claims(set_name: str, n: int, **over) -> dict:
    c = {"iss": ISS, "aud": AUD, "sub": f"user-{n}", "scope": "read write",
         "iat": IAT, "exp": EXP, "jti": f"{set_name}-{n}"}
    c.update(over)
    return c


def make_token(job) -> str:
    set_name, alg, n, kind = job
    kid = BY_ALG[alg]
    if kind == "valid":
        return sign(alg, kid, kid, claims(set_name, n))
    if kind == "bad_signature":
        return sign(alg, ATTACKER[alg], kid, claims(set_name, n))
    if kind == "expired":
        return sign(alg, kid, kid, claims(set_name, n, exp=EXPIRED))
    if kind == "bad_audience":
        return sign(alg, kid, kid, claims(set_name, n, aud="someone-else"))
    if kind == "malformed":
        return f"{b64(os.urandom(24))}.{b64(os.urandom(90))}.{b64(os.urandom(64))}"
    raise ValueError(kind)


INVALID_KINDS = ["bad_signature", "expired", "bad_audience", "malformed"]


def jobs_for(set_name: str):
    alg, count, kind = SETS[set_name]
    for n in range(count):
        if kind == "valid":
            yield (set_name, alg, n, "valid")
        elif n % 2 == 0:
            yield (set_name, alg, n, "valid")
        else:
            yield (set_name, alg, n, INVALID_KINDS[(n // 2) % len(INVALID_KINDS)])


def public_jwk(name: str) -> dict:
    alg, _ = KEYS[name]
    pub = _keys[name].public_key()
    if alg == "RS256":
        nums = pub.public_numbers()
        size = (nums.n.bit_length() + 7) // 8
        jwk = {"kty": "RSA", "n": b64(nums.n.to_bytes(size, "big")), "e": b64(nums.e.to_bytes(3, "big"))}
    elif alg == "ES256":
        nums = pub.public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "x": b64(nums.x.to_bytes(32, "big")),
               "y": b64(nums.y.to_bytes(32, "big"))}
    else:
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
    jwk.update({"kid": name, "alg": alg, "use": "sig"})
    return jwk


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(sys.argv[1])
    manifest = out / "manifest.json"
    if manifest.exists():
        try:
            if json.loads(manifest.read_text()).get("recipe") == RECIPE:
                print(f"gen_tokens: {out} is up to date")
                return 0
        except ValueError:
            pass
    (out / "keys").mkdir(parents=True, exist_ok=True)
    for name, (_, make) in KEYS.items():
        pem = make().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
        (out / "keys" / f"{name}.pem").write_bytes(pem)
    load_keys(out)
    jwks = {"keys": [public_jwk(n) for n in ("bench-rsa", "bench-ec", "bench-ed")]}
    (out / "jwks.json").write_text(json.dumps(jwks, indent=1) + "\n")
    counts = {}
    with multiprocessing.Pool(initializer=load_keys, initargs=(out,)) as pool:
        for set_name in SETS:
            tokens = pool.map(make_token, jobs_for(set_name), chunksize=500)
            if len(set(tokens)) != len(tokens):
                print(f"gen_tokens: {set_name}: duplicate tokens", file=sys.stderr)
                return 1
            (out / f"{set_name}.txt").write_text("\n".join(tokens) + "\n")
            counts[set_name] = len(tokens)
            print(f"gen_tokens: {set_name}: {len(tokens)} tokens", flush=True)
        for alg in BY_ALG:
            probe = alg.lower()
            (out / f"probe-valid-{probe}.txt").write_text(
                make_token(("probe", alg, 0, "valid")) + "\n")
            (out / f"probe-invalid-{probe}.txt").write_text(
                make_token(("probe", alg, 1, "bad_signature")) + "\n")
    manifest.write_text(json.dumps({"recipe": RECIPE, "sets": counts}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
