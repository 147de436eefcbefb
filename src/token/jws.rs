//! Reads a compact JWS without trusting it: three strict base64url segments, a header that
//! is a JSON object with a known `alg` (never `none`), no `crit` and no `b64: false`,
//! and claims that are a JSON object. Header fields `jku`, `x5u`, `jwk` and `x5c` are
//! never read: keys come only from configured sources. Nothing here touches a key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::alg::{Alg, AlgSet};
use crate::decision::DenyReason;

/// The unverified parts of a compact JWS.
#[derive(Debug)]
pub struct Jws<'t> {
    /// The algorithm named by the header (already checked against the allowlist given).
    pub alg: Alg,
    /// The header's key id.
    pub kid: Option<String>,
    /// The header's `typ`.
    pub typ: Option<String>,
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: what was signed.
    pub signing_input: &'t str,
    /// The payload segment, still base64url (forwarded as is in the claims header).
    pub payload_b64: &'t str,
    /// The decoded signature.
    pub signature: Vec<u8>,
    /// The decoded claims (unverified!).
    pub claims: Map<String, Value>,
}

/// The header members tokengate reads. serde rejects a member given twice, so a header
/// with two `alg` members is malformed rather than "last one wins".
#[derive(Deserialize)]
struct RawHeader {
    alg: Value,
    #[serde(default)]
    kid: Option<Value>,
    #[serde(default)]
    typ: Option<Value>,
    #[serde(default)]
    crit: Option<Value>,
    #[serde(default)]
    b64: Option<Value>,
}

/// Parses `token` and checks its header against `allowed`: any `alg` outside it
/// (including every casing of `none`) is `bad_alg`; everything else wrong is `malformed`.
pub fn parse(token: &str, allowed: AlgSet) -> Result<Jws<'_>, DenyReason> {
    let mut parts = token.splitn(4, '.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DenyReason::Malformed);
    };
    if h.is_empty() || p.is_empty() {
        return Err(DenyReason::Malformed);
    }
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| DenyReason::Malformed)?;
    if !first_non_space_is(&header_bytes, b'{') {
        // An array or a scalar is not a JOSE header (serde would read an array as a struct).
        return Err(DenyReason::Malformed);
    }
    let header: RawHeader =
        serde_json::from_slice(&header_bytes).map_err(|_| DenyReason::Malformed)?;
    // `alg` first: `none` (whose signature is empty) is a bad algorithm, not a shape error.
    let alg = match &header.alg {
        Value::String(name) => match Alg::from_name(name) {
            Some(a) if allowed.contains(a) => a,
            // `none` in any casing, unknown names, and known but not allowed ones.
            _ => return Err(DenyReason::BadAlg),
        },
        _ => return Err(DenyReason::Malformed),
    };
    if s.is_empty() {
        return Err(DenyReason::Malformed);
    }
    let kid = optional_string(header.kid)?;
    let typ = optional_string(header.typ)?;
    if header.crit.is_some() {
        // RFC 7515 §4.1.11: a recipient MUST reject a `crit` it does not understand;
        // tokengate implements no extension, so every `crit` is one it does not.
        return Err(DenyReason::Malformed);
    }
    match header.b64 {
        None | Some(Value::Bool(true)) => {}
        Some(_) => return Err(DenyReason::Malformed),
    }
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| DenyReason::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| DenyReason::Malformed)?;
    if !first_non_space_is(&payload, b'{') {
        return Err(DenyReason::Malformed);
    }
    let claims: Map<String, Value> =
        serde_json::from_slice(&payload).map_err(|_| DenyReason::Malformed)?;
    Ok(Jws {
        alg,
        kid,
        typ,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload_b64: p,
        signature,
        claims,
    })
}

fn optional_string(v: Option<Value>) -> Result<Option<String>, DenyReason> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(DenyReason::Malformed),
    }
}

fn first_non_space_is(bytes: &[u8], want: u8) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn tok(header: &str, payload: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(payload), b64("sig"))
    }

    fn all() -> AlgSet {
        Alg::ALL.into_iter().collect()
    }

    #[test]
    fn reads_a_well_formed_token() {
        let t = tok(
            r#"{"alg":"RS256","kid":"k1","typ":"at+jwt"}"#,
            r#"{"sub":"a"}"#,
        );
        let jws = parse(&t, all()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(jws.alg, Alg::RS256);
        assert_eq!(jws.kid.as_deref(), Some("k1"));
        assert_eq!(jws.typ.as_deref(), Some("at+jwt"));
        assert_eq!(jws.signature, b"sig");
        assert_eq!(jws.claims["sub"], "a");
        assert!(t.starts_with(jws.signing_input));
    }

    #[test]
    fn rejects_none_in_every_casing() {
        for alg in ["none", "None", "NONE", "nOnE"] {
            let t = tok(&format!(r#"{{"alg":"{alg}"}}"#), "{}");
            assert_eq!(parse(&t, all()).err(), Some(DenyReason::BadAlg), "{alg}");
        }
    }

    #[test]
    fn rejects_algorithms_outside_the_allowlist() {
        let t = tok(r#"{"alg":"HS256"}"#, "{}");
        let only_rs: AlgSet = [Alg::RS256].into_iter().collect();
        assert_eq!(parse(&t, only_rs).err(), Some(DenyReason::BadAlg));
        let t = tok(r#"{"alg":"rs256"}"#, "{}");
        assert_eq!(parse(&t, all()).err(), Some(DenyReason::BadAlg));
    }

    #[test]
    fn rejects_malformed_shapes() {
        let good_h = b64(r#"{"alg":"RS256"}"#);
        let good_p = b64("{}");
        let cases = [
            format!("{good_h}.{good_p}"),
            format!("{good_h}.{good_p}.c2ln.x.y"),
            format!("{good_h}.{good_p}."),
            format!("{good_h}..c2ln"),
            format!("{good_h}.{good_p}.c2ln="),
            format!("{good_h}.{good_p}.c2l+"),
            format!("{}.{good_p}.c2ln", b64(r#"["alg","RS256"]"#)),
            format!("{}.{good_p}.c2ln", b64(r#"{"alg":"RS256","alg":"none"}"#)),
            format!("{}.{good_p}.c2ln", b64(r#"{"alg":"RS256","kid":7}"#)),
            format!(
                "{}.{good_p}.c2ln",
                b64(r#"{"alg":"RS256","crit":["x"],"x":1}"#)
            ),
            format!("{}.{good_p}.c2ln", b64(r#"{"alg":"RS256","b64":false}"#)),
            format!("{}.{good_p}.c2ln", b64(r#"{"alg":5}"#)),
            format!("{good_h}.{}.c2ln", b64("[1]")),
            format!("{good_h}.{}.c2ln", b64("not json")),
        ];
        for t in cases {
            assert_eq!(parse(&t, all()).err(), Some(DenyReason::Malformed), "{t}");
        }
    }
}
