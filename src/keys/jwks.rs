//! JWK sets (RFC 7517) into [`LoadedKey`]s. Each JWK is read on its own: one key of an
//! unsupported type, or a broken one, is skipped with a reason while the others load.
//! Symmetric (`oct`) keys are accepted only where the caller allows them (local files),
//! never from a remote JWKS.

use std::sync::Arc;

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use super::{KeyMaterial, LoadedKey};
use crate::alg::{Alg, Crv};
use crate::jwe::DecryptionKey;

/// Most keys a JWK set may hold; a larger set is refused whole.
pub const MAX_KEYS: usize = 1000;

/// base64url with or without padding: some servers pad, RFC 7517 says they should not.
const B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a whole JWK set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not JSON, or not an object with a `keys` array.
    #[error("not a JWK set: {0}")]
    NotAJwkSet(String),
    /// More than [`MAX_KEYS`] keys.
    #[error("the JWK set has {0} keys, more than the {MAX_KEYS} allowed")]
    TooManyKeys(usize),
}

/// The keys of a set, and why the others were skipped (`"kid: reason"`).
#[derive(Debug, Default)]
pub struct ParsedSet {
    /// Usable keys, in document order.
    pub keys: Vec<LoadedKey>,
    /// One line per skipped key.
    pub skipped: Vec<String>,
}

/// Parses a JWK set document.
pub fn parse_set(bytes: &[u8], allow_oct: bool) -> Result<ParsedSet, JwksError> {
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| JwksError::NotAJwkSet(e.to_string()))?;
    let Some(list) = doc.get("keys").and_then(Value::as_array) else {
        return Err(JwksError::NotAJwkSet(
            "expected an object with a \"keys\" array".into(),
        ));
    };
    if list.len() > MAX_KEYS {
        return Err(JwksError::TooManyKeys(list.len()));
    }
    let mut out = ParsedSet::default();
    for (i, jwk) in list.iter().enumerate() {
        let label = jwk.get("kid").and_then(Value::as_str).map_or_else(
            || format!("keys[{i}]"),
            |k| format!("keys[{i}] (kid {k:?})"),
        );
        match parse_jwk(jwk, allow_oct) {
            Ok(k) => out.keys.push(k),
            Err(reason) => out.skipped.push(format!("{label}: {reason}")),
        }
    }
    Ok(out)
}

/// Parses one JWK.
pub fn parse_jwk(jwk: &Value, allow_oct: bool) -> Result<LoadedKey, String> {
    let Some(obj) = jwk.as_object() else {
        return Err("not a JSON object".into());
    };
    let kty = str_member(obj, "kty")?.ok_or("no kty")?;
    let kid = str_member(obj, "kid")?;
    let usage = str_member(obj, "use")?;
    let key_ops = match obj.get("key_ops") {
        None => None,
        Some(Value::Array(ops)) => Some(
            ops.iter()
                .map(|o| o.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or("key_ops must be an array of strings")?,
        ),
        Some(_) => return Err("key_ops must be an array of strings".into()),
    };
    let alg_name = str_member(obj, "alg")?;
    let (alg, foreign_alg) = match alg_name {
        None => (None, None),
        Some(name) => match Alg::from_name(name) {
            Some(a) => (Some(a), None),
            None => (None, Some(name.to_string())),
        },
    };
    let material = match kty {
        "RSA" => KeyMaterial::rsa(&bytes(obj, "n")?, &bytes(obj, "e")?),
        "EC" => {
            let crv = match str_member(obj, "crv")?.ok_or("EC key without crv")? {
                "P-256" => Crv::P256,
                "P-384" => Crv::P384,
                other => return Err(format!("unsupported curve {other:?} (P-256, P-384)")),
            };
            KeyMaterial::ec(crv, &bytes(obj, "x")?, &bytes(obj, "y")?)
        }
        "OKP" => match str_member(obj, "crv")?.ok_or("OKP key without crv")? {
            "Ed25519" => KeyMaterial::ed25519(&bytes(obj, "x")?),
            other => return Err(format!("unsupported curve {other:?} (Ed25519)")),
        },
        "oct" if allow_oct => KeyMaterial::hmac(&bytes(obj, "k")?),
        "oct" => {
            return Err(
                "symmetric (oct) key in a remote JWKS ignored: HMAC keys are accepted only from local files and keystores"
                    .into(),
            );
        }
        other => return Err(format!("unsupported kty {other:?} (RSA, EC, OKP, oct)")),
    }
    .map_err(|e| e.to_string())?;
    let for_verification = usage.is_none_or(|u| u == "sig")
        && key_ops
            .as_ref()
            .is_none_or(|ops| ops.iter().any(|o| o == "verify"));
    let id = kid.map_or_else(|| material.thumbprint().to_string(), str::to_string);
    // A private or secret JWK (RSA, EC, oct) decrypts too, from local files only
    // (`allow_oct`): a key a remote JWKS would publish with its private part is never
    // taken.
    let private = ["d", "k"].iter().any(|m| obj.contains_key(*m));
    let decryption = (allow_oct && private)
        .then(|| DecryptionKey::from_jwk(jwk).ok().map(Arc::new))
        .flatten();
    Ok(LoadedKey {
        id,
        material: Arc::new(material),
        alg,
        foreign_alg,
        for_verification,
        validity: None,
        active: false,
        decryption,
    })
}

fn str_member<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

fn bytes(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let s = str_member(obj, name)?.ok_or_else(|| format!("missing {name}"))?;
    B64.decode(s)
        .map_err(|_| format!("{name} is not base64url"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_unsupported_keys_and_keeps_good_ones() {
        let doc = br#"{"keys":[
            {"kty":"EC","crv":"P-256","kid":"a",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","crv":"P-521","kid":"b","x":"AA","y":"AA"},
            {"kty":"oct","kid":"c","k":"c2VjcmV0"},
            {"kty":"RSA","kid":"d","n":"AQAB","e":"AQAB"},
            "nonsense"
        ]}"#;
        let set = parse_set(doc, false).unwrap_or_default();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].id, "a");
        assert_eq!(set.skipped.len(), 4, "{:?}", set.skipped);
    }

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 §3.1.
        let jwk: Value = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        let k = parse_jwk(&jwk, false).unwrap();
        assert_eq!(
            k.material.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert_eq!(k.alg, Some(Alg::RS256));
    }

    #[test]
    fn rejects_documents_that_are_not_sets() {
        for doc in [&b"[]"[..], b"{}", b"{\"keys\":{}}", b"garbage"] {
            assert!(parse_set(doc, true).is_err());
        }
    }
}
