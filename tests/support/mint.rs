//! Token minting for cases the jwcrypto fixtures do not cover (fresh `exp`, rotation
//! keys made at test time). Signs with the fixtures' private keys through the
//! `jsonwebtoken` crate's signer, and builds hand-made JWS for hostile headers.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use super::fixtures;

/// The current Unix time.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Default claims of the fixture issuer, valid for an hour from now.
pub fn claims() -> Value {
    json!({
        "iss": "https://issuer.example", "aud": "orders-api", "sub": "alice",
        "scope": "orders:read orders:write", "iat": now(), "exp": now() + 3600,
    })
}

/// The encoding key of a fixture private key (`rsa-1`, `ec-p256`, `ed-1`, `hmac-1`, ...).
pub fn key(name: &str) -> EncodingKey {
    let dir = fixtures().join("private");
    if name.starts_with("hmac") {
        let text = std::fs::read_to_string(dir.join(format!("{name}.key")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let secret = URL_SAFE_NO_PAD
            .decode(text.trim())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        return EncodingKey::from_secret(&secret);
    }
    let pem = std::fs::read(dir.join(format!("{name}.key.pem")))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let k = if name.starts_with("ec") || name == "attacker-ec" {
        EncodingKey::from_ec_pem(&pem)
    } else if name.starts_with("ed") {
        EncodingKey::from_ed_pem(&pem)
    } else {
        EncodingKey::from_rsa_pem(&pem)
    };
    k.unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Signs `header` (any JSON object, hostile fields included) and `claims` with `alg`.
pub fn sign_raw(header: &Value, claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).expect("sign");
    format!("{input}.{sig}")
}

/// Signs a token with the usual header (`typ: at+jwt`, optional kid).
pub fn sign(alg: Algorithm, key_name: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": format!("{alg:?}"), "typ": "at+jwt"});
    if let Some(k) = kid {
        header["kid"] = json!(k);
    }
    sign_raw(&header, claims, alg, &key(key_name))
}
