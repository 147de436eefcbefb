#!/usr/bin/env python3
"""Mints DPoP proofs (RFC 9449) for tests/dpop.rs with an independent JOSE
implementation, jwcrypto (installed by scripts/install-test-deps.sh), so the proofs
the Rust code under test checks are never made by the Rust code itself.

A long-running process driven by tests/support/dpop.rs: it reads one JSON object per
line on stdin and writes exactly one JSON object per line on stdout (flushed), until
EOF. A request that fails is answered with {"error": "<message>"}; the process goes on.

Requests:

  {"op": "hello"}
      -> {"ok": true, "jwcrypto": "<version>"}  (the start-up check)

  {"op": "key", "alg": A}   A: ES256 (P-256), ES384 (P-384), EdDSA (Ed25519),
                               RS256 or PS256 (RSA 2048)
      -> {"id": "k<n>", "alg": A, "jwk": <public JWK>, "private_jwk": <JWK with the
          private members>, "jkt": <RFC 7638 SHA-256 thumbprint, base64url>}
      A fresh key, remembered under the new id for later requests.

  {"op": "proof", "key": ID, "claims": {...}, "header": {...}?,
   "jwk": "public" | "private" | "none" | <other key id>?, "sign_with": <key id>?,
   "tamper_signature": bool?}
      -> {"proof": "<compact JWS>"}
      Protected header: {"typ": "dpop+jwt", "alg": <alg of key>, "jwk": <public JWK of
      key>}; "jwk" puts the key's private JWK, no jwk, or another key's public JWK
      there instead; the members of "header" are then merged over it (JSON null removes
      a member). The payload is "claims" verbatim. Signed by jwcrypto with the key (or
      with "sign_with"), with the header's alg when that key can make it, else with the
      signing key's own alg (a header whose alg is absent or does not match the
      signature). "tamper_signature" flips one bit in the middle of the signature.

  {"op": "none", "header": {...}, "claims": {...}}
      -> {"proof": b64url(header) "." b64url(claims) "."}  (built by hand: jwcrypto
      refuses to make an unsigned token)

  {"op": "hs256", "secret": "<utf-8 string>", "header": {...}, "claims": {...}}
      -> {"proof": <compact JWS signed by jwcrypto with HS256 and an oct key of that
      secret (of any length), protected header exactly as given>}

Encrypted tokens and PingGateway JWT sessions (tests/jwe.rs, tests/sessions.rs):

  {"op": "seal", "jwk": <JWK: oct, or a public or private RSA/EC one> | "pem": <public
   key PEM>, "header": {...}, "plaintext": "<utf-8 string>"}
      -> {"jwe": "<compact JWE made by jwcrypto with that protected header>"}

  {"op": "keystore_secret", "path": P, "password": W, "alias": A}
      -> {"jwk": <oct JWK of the secret-key entry A of keystore P (made by keytool
          -genseckey), read by p12_secret.py, never by tokengate>}
"""
import json
import sys

try:
    from importlib.metadata import version as _dist_version

    from jwcrypto import jwa, jwe, jwk, jws
    from jwcrypto.common import base64url_decode, base64url_encode

    IMPORT_ERROR = None
except Exception as e:  # noqa: BLE001 - reported to every request instead
    IMPORT_ERROR = (
        f"jwcrypto is not importable by {sys.executable} ({type(e).__name__}: {e}); "
        "run scripts/install-test-deps.sh"
    )

# How each supported alg's key is generated.
KEY_PARAMS = {
    "ES256": {"kty": "EC", "crv": "P-256"},
    "ES384": {"kty": "EC", "crv": "P-384"},
    "EdDSA": {"kty": "OKP", "crv": "Ed25519"},
    "RS256": {"kty": "RSA", "size": 2048},
    "PS256": {"kty": "RSA", "size": 2048},
}

KEYS = {}  # id -> {"alg": str, "key": jwk.JWK}


def compact(obj):
    """JSON without spaces."""
    return json.dumps(obj, separators=(",", ":"))


def b64(data):
    """base64url without padding of bytes or a str (UTF-8)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64url_encode(data)


def public_jwk(key):
    d = key.export_public(as_dict=True)
    d.pop("kid", None)
    return d


def private_jwk(key):
    d = key.export_private(as_dict=True)
    d.pop("kid", None)
    return d


def algs_of(key):
    """The JWS algs this key can sign with."""
    d = key.export_public(as_dict=True)
    kty, crv = d.get("kty"), d.get("crv")
    if kty == "RSA":
        return {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    if kty == "EC":
        return {"P-256": {"ES256"}, "P-384": {"ES384"}, "P-521": {"ES512"}}.get(crv, set())
    if kty == "OKP":
        return {"Ed25519": {"EdDSA", "Ed25519"}, "Ed448": {"EdDSA", "Ed448"}}.get(crv, set())
    if kty == "oct":
        return {"HS256", "HS384", "HS512"}
    return set()


def stored(key_id, what):
    if not isinstance(key_id, str) or key_id not in KEYS:
        raise ValueError(f"{what}: no key {key_id!r} (make it with op=key first)")
    return KEYS[key_id]


def sign(key, alg, header, payload):
    """Compact JWS of `payload` (bytes) under the protected `header` (dict), signed by
    jwcrypto with `key` and `alg`. The JWS API when it accepts the header (its alg is
    `alg`, no unknown crit); else jwcrypto's JWSCore, which signs any header as is."""
    protected = compact(header)
    if header.get("alg") == alg:
        try:
            token = jws.JWS(payload)
            token.add_signature(key, alg=alg, protected=protected)
            return token.serialize(compact=True)
        except jws.InvalidJWSObject:
            pass  # a header jwcrypto's JWS refuses (e.g. an unknown crit): sign it below
    core = jws.JWSCore(alg, key, protected, payload).sign()
    return f"{core['protected']}.{core['payload'].decode('ascii')}.{core['signature']}"


def tamper(token):
    """`token` with one bit flipped in the middle of its decoded signature."""
    head, payload, sig = token.split(".")
    raw = bytearray(base64url_decode(sig))
    if not raw:
        raise ValueError("no signature to tamper with")
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{base64url_encode(bytes(raw))}"


def merged(header, extra):
    """`header` with the members of `extra` set over it (null removes a member)."""
    if extra is None:
        return header
    if not isinstance(extra, dict):
        raise ValueError("header must be a JSON object")
    for name, value in extra.items():
        if value is None:
            header.pop(name, None)
        else:
            header[name] = value
    return header


def object_field(req, name):
    value = req.get(name)
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object")
    return value


def op_hello(_req):
    return {"ok": True, "jwcrypto": _dist_version("jwcrypto")}


def op_key(req):
    alg = req.get("alg")
    if alg not in KEY_PARAMS:
        raise ValueError(f"unsupported alg {alg!r} (one of {', '.join(KEY_PARAMS)})")
    key = jwk.JWK.generate(**KEY_PARAMS[alg])
    key_id = f"k{len(KEYS) + 1}"
    KEYS[key_id] = {"alg": alg, "key": key}
    return {
        "id": key_id,
        "alg": alg,
        "jwk": public_jwk(key),
        "private_jwk": private_jwk(key),
        "jkt": key.thumbprint(),
    }


def op_proof(req):
    entry = stored(req.get("key"), "key")
    claims = object_field(req, "claims")
    header = {"typ": "dpop+jwt", "alg": entry["alg"]}
    which = req.get("jwk", "public")
    if which == "public":
        header["jwk"] = public_jwk(entry["key"])
    elif which == "private":
        header["jwk"] = private_jwk(entry["key"])
    elif which == "none":
        pass
    else:
        header["jwk"] = public_jwk(stored(which, "jwk")["key"])
    header = merged(header, req.get("header"))
    signer = stored(req["sign_with"], "sign_with") if req.get("sign_with") is not None else entry
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algs_of(signer["key"]):
        alg = signer["alg"]
    token = sign(signer["key"], alg, header, compact(claims).encode("utf-8"))
    if req.get("tamper_signature"):
        token = tamper(token)
    return {"proof": token}


def op_none(req):
    header = object_field(req, "header")
    claims = object_field(req, "claims")
    return {"proof": f"{b64(compact(header))}.{b64(compact(claims))}."}


def op_hs256(req):
    secret = req.get("secret")
    if not isinstance(secret, str):
        raise ValueError("secret must be a string")
    header = object_field(req, "header")
    claims = object_field(req, "claims")
    # jwcrypto refuses HMAC keys shorter than the hash (RFC 7518 3.2) unless told not to;
    # a test's secret may be short (these tokens are meant to be refused anyway).
    jwa.default_enforce_hmac_key_length = False
    key = jwk.JWK(kty="oct", k=b64(secret))
    return {"proof": sign(key, "HS256", header, compact(claims).encode("utf-8"))}


def op_seal(req):
    if isinstance(req.get("pem"), str):
        key = jwk.JWK.from_pem(req["pem"].encode("ascii"))
    else:
        key = jwk.JWK(**object_field(req, "jwk"))
    plaintext = req.get("plaintext")
    if not isinstance(plaintext, str):
        raise ValueError("plaintext must be a string")
    token = jwe.JWE(plaintext.encode("utf-8"), compact(object_field(req, "header")))
    token.add_recipient(key)
    return {"jwe": token.serialize(compact=True)}


def op_keystore_secret(req):
    from p12_secret import secret_key  # beside this script; needs pyasn1

    secret = secret_key(req["path"], req["password"], req["alias"])
    return {"jwk": {"kty": "oct", "k": b64(secret)}}


OPS = {
    "hello": op_hello,
    "key": op_key,
    "proof": op_proof,
    "none": op_none,
    "hs256": op_hs256,
    "seal": op_seal,
    "keystore_secret": op_keystore_secret,
}


def answer(line):
    if IMPORT_ERROR is not None:
        return {"error": IMPORT_ERROR}
    try:
        req = json.loads(line)
        if not isinstance(req, dict):
            raise ValueError("a request must be a JSON object")
        op = req.get("op")
        if op not in OPS:
            raise ValueError(f"unknown op {op!r} (one of {', '.join(OPS)})")
        return OPS[op](req)
    except Exception as e:  # noqa: BLE001 - every failure is an answer, never a crash
        return {"error": f"{type(e).__name__}: {e}"}


def main():
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        sys.stdout.write(json.dumps(answer(line)) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
