//! Reads a compact JWS without trusting it: three strict base64url segments, a header that
//! is a JSON object with a known `alg` (never `none`), no `crit` and no `b64: false`,
//! and claims that are a JSON object. Header fields `jku`, `x5u` and `x5c` are never
//! read, and `jwk` only by DPoP proofs (whose key is the one the token is bound to):
//! an access token's keys come only from configured sources. Nothing here touches a key.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use crate::alg::{Alg, AlgSet};
use crate::decision::DenyReason;
use crate::token::memo::HeaderMemo;

/// The unverified parts of a compact JWS.
#[derive(Debug)]
pub struct Jws<'t> {
    /// The algorithm named by the header (already checked against the allowlist given).
    pub alg: Alg,
    /// The header's key id.
    pub kid: Option<String>,
    /// The header's `typ`.
    pub typ: Option<String>,
    /// The header's `jwk`, only ever read from a DPoP proof (an access token's is
    /// ignored: its keys come only from configured sources).
    pub jwk: Option<Value>,
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: what was signed.
    pub signing_input: &'t str,
    /// The payload segment, still base64url (forwarded as is in the claims header).
    pub payload_b64: &'t str,
    /// The decoded signature.
    pub signature: Vec<u8>,
    /// The decoded payload (unverified!); [`Jws::claims`] reads it.
    payload: Vec<u8>,
    /// [`Jws::memoize`] may keep the header: it was read (not taken from a
    /// [`HeaderMemo`]) and has no `jwk` member (a DPoP proof's changes with its key).
    keep: bool,
}

/// What a JWS header that passed every check of its own read as (a [`HeaderMemo`]
/// keeps it by the header's segment). The `alg` is a known one, not yet held against
/// anyone's allowlist.
#[derive(Debug, Clone)]
pub struct Header {
    alg: Alg,
    kid: Option<String>,
    typ: Option<String>,
}

/// The claims of a token, read once from its decoded payload without copying what can be
/// borrowed: member names and string values point into the payload unless they contain
/// JSON escapes; numbers stay numbers; only arrays and objects become [`Value`]s. A
/// member given twice counts by its last occurrence (RFC 7519 §4 allows either that or
/// a rejection; serde_json's own maps do the same).
#[derive(Debug, Default)]
pub struct ClaimSet<'p> {
    members: Vec<(Cow<'p, str>, ClaimValue<'p>)>,
}

/// One claim (or header member) value.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimValue<'p> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string (borrowed from the payload unless it had escapes).
    Str(Cow<'p, str>),
    /// An array or an object.
    Other(Value),
}

/// The header members tokengate reads; each may appear at most once (a header with two
/// `alg` members is malformed rather than "last one wins").
const HEADER_MEMBERS: [&str; 6] = ["alg", "kid", "typ", "crit", "b64", "jwk"];

/// Parses `token` and checks its header against `allowed`: any `alg` outside it
/// (including every casing of `none`) is `bad_alg`; everything else wrong is `malformed`.
/// The claims are read afterwards, by [`Jws::claims`].
pub fn parse(token: &str, allowed: AlgSet) -> Result<Jws<'_>, DenyReason> {
    parse_with(token, allowed, None)
}

/// [`parse`], taking the header from `memo` when its segment is kept there (the same
/// answer, without reading the header again). [`Jws::memoize`] keeps it there.
pub fn parse_memo<'t>(
    token: &'t str,
    allowed: AlgSet,
    memo: &HeaderMemo<Header>,
) -> Result<Jws<'t>, DenyReason> {
    parse_with(token, allowed, Some(memo))
}

fn parse_with<'t>(
    token: &'t str,
    allowed: AlgSet,
    memo: Option<&HeaderMemo<Header>>,
) -> Result<Jws<'t>, DenyReason> {
    let mut parts = super::segments(token);
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DenyReason::Malformed);
    };
    if h.is_empty() || p.is_empty() {
        return Err(DenyReason::Malformed);
    }
    let (header, jwk, keep) = match memo.and_then(|m| m.get(h, Header::clone)) {
        // A kept header passed every check of `read_header` but the allowlist (this
        // caller's) and the signature segment's (this token's), in the same order.
        Some(header) => {
            if !allowed.contains(header.alg) {
                return Err(DenyReason::BadAlg);
            }
            if s.is_empty() {
                return Err(DenyReason::Malformed);
            }
            (header, None, false)
        }
        None => read_header(h, s, allowed)?,
    };
    let payload = super::decode(p).ok_or(DenyReason::Malformed)?;
    let signature = super::decode(s).ok_or(DenyReason::Malformed)?;
    if !first_non_space_is(&payload, b'{') {
        return Err(DenyReason::Malformed);
    }
    Ok(Jws {
        alg: header.alg,
        kid: header.kid,
        typ: header.typ,
        jwk,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload_b64: p,
        signature,
        payload,
        keep,
    })
}

/// Reads and checks the header segment `h` (`s` is the signature segment: an empty one
/// is `malformed`, after the `alg` checks): the header, its `jwk` (an object), and
/// whether a memo may keep it (it has no `jwk` member at all).
fn read_header(
    h: &str,
    s: &str,
    allowed: AlgSet,
) -> Result<(Header, Option<Value>, bool), DenyReason> {
    let header_bytes = super::decode(h).ok_or(DenyReason::Malformed)?;
    if !first_non_space_is(&header_bytes, b'{') {
        // An array or a scalar is not a JOSE header (serde would read an array as a struct).
        return Err(DenyReason::Malformed);
    }
    let mut header = ClaimSet::from_json(&header_bytes).ok_or(DenyReason::Malformed)?;
    if HEADER_MEMBERS
        .iter()
        .any(|m| header.members.iter().filter(|(k, _)| k == m).count() > 1)
    {
        return Err(DenyReason::Malformed);
    }
    // `alg` first: `none` (whose signature is empty) is a bad algorithm, not a shape error.
    let alg = match header.get("alg") {
        Some(ClaimValue::Str(name)) => match Alg::from_name(name) {
            Some(a) if allowed.contains(a) => a,
            // `none` in any casing, unknown names, and known but not allowed ones.
            _ => return Err(DenyReason::BadAlg),
        },
        _ => return Err(DenyReason::Malformed),
    };
    if s.is_empty() {
        return Err(DenyReason::Malformed);
    }
    let kid = optional_string(header.get("kid"))?;
    let typ = optional_string(header.get("typ"))?;
    // A header with a `jwk` member (a DPoP proof's, whose key changes) is never kept.
    let keep = !header.contains("jwk");
    // Moved out of the header (at most one `jwk` member, checked above), not copied.
    let jwk = match header.members.iter().position(|(k, _)| k == "jwk") {
        Some(i) => match header.members.swap_remove(i).1 {
            ClaimValue::Other(v @ Value::Object(_)) => Some(v),
            _ => None,
        },
        None => None,
    };
    if header.get("crit").is_some_and(|c| *c != ClaimValue::Null) {
        // RFC 7515 §4.1.11: a recipient MUST reject a `crit` it does not understand;
        // tokengate implements no extension, so every `crit` is one it does not.
        return Err(DenyReason::Malformed);
    }
    match header.get("b64") {
        None | Some(ClaimValue::Null | ClaimValue::Bool(true)) => {}
        Some(_) => return Err(DenyReason::Malformed),
    }
    Ok((Header { alg, kid, typ }, jwk, keep))
}

// === impl Jws ===

impl Jws<'_> {
    /// Keeps this token's header in `memo` (call it once the signature verified: only
    /// tokens that did take a slot). A header with a `jwk` member is not kept.
    pub fn memoize(&self, memo: &HeaderMemo<Header>) {
        if !self.keep {
            return;
        }
        let segment = self.signing_input.split('.').next().unwrap_or_default();
        memo.insert(
            segment,
            Header {
                alg: self.alg,
                kid: self.kid.clone(),
                typ: self.typ.clone(),
            },
        );
    }

    /// The claims (unverified until the signature is): `malformed` unless the payload is
    /// one JSON object.
    pub fn claims(&self) -> Result<ClaimSet<'_>, DenyReason> {
        ClaimSet::from_json(&self.payload).ok_or(DenyReason::Malformed)
    }
}

// === impl ClaimSet ===

impl<'p> ClaimSet<'p> {
    /// Reads `json`, a JSON object: its UTF-8 checked once as a whole, then read as text
    /// (read as bytes, serde_json would check every string again on its own).
    pub fn from_json(json: &'p [u8]) -> Option<ClaimSet<'p>> {
        serde_json::from_str(std::str::from_utf8(json).ok()?).ok()
    }

    /// The value of member `name` (its last occurrence).
    pub fn get(&self, name: &str) -> Option<&ClaimValue<'p>> {
        self.members
            .iter()
            .rev()
            .find(|(k, _)| same_name(k, name))
            .map(|(_, v)| v)
    }

    /// Every member, in order (a repeated name repeats).
    pub fn members(&self) -> impl Iterator<Item = (&str, &ClaimValue<'p>)> {
        self.members.iter().map(|(k, v)| (&**k, v))
    }

    /// Whether member `name` is present (even as `null`).
    pub fn contains(&self, name: &str) -> bool {
        self.members.iter().any(|(k, _)| same_name(k, name))
    }
}

/// `a == b`, deciding on the length and the first byte before calling `memcmp`: claim
/// names are short and mostly of the same length (`iss`, `aud`, `exp`, …).
fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().first() == b.as_bytes().first() && a == b
}

impl<'de> Deserialize<'de> for ClaimSet<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ClaimSet<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some((Text(k), v)) = map.next_entry::<Text<'de>, ClaimValue<'de>>()? {
                    members.push((k, v));
                }
                Ok(ClaimSet { members })
            }
        }
        d.deserialize_map(V)
    }
}

// === impl ClaimValue ===

impl ClaimValue<'_> {
    /// The value as JSON text (what a forward header carries for a non-string claim).
    pub fn to_json(&self) -> String {
        match self {
            ClaimValue::Null => "null".to_string(),
            ClaimValue::Bool(b) => b.to_string(),
            ClaimValue::Number(n) => n.to_string(),
            ClaimValue::Str(s) => Value::from(&**s).to_string(),
            ClaimValue::Other(v) => v.to_string(),
        }
    }
}

impl<'de> Deserialize<'de> for ClaimValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ClaimValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(ClaimValue::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(ClaimValue::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
                Ok(ClaimValue::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
                Ok(ClaimValue::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
                Ok(ClaimValue::Number(n.into()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
                Number::from_f64(n)
                    .map(ClaimValue::Number)
                    .ok_or_else(|| E::custom("not a finite number"))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(ClaimValue::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(ClaimValue::Str(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(ClaimValue::Str(Cow::Owned(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Value::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(ClaimValue::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Value::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(ClaimValue::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON string borrowed from the input when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

fn optional_string(v: Option<&ClaimValue<'_>>) -> Result<Option<String>, DenyReason> {
    match v {
        None | Some(ClaimValue::Null) => Ok(None),
        Some(ClaimValue::Str(s)) => Ok(Some(s.to_string())),
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
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

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
    fn a_header_is_kept_once_read_and_never_with_a_jwk() {
        let memo = HeaderMemo::new();
        let plain = tok(r#"{"alg":"RS256","kid":"k1"}"#, r#"{"sub":"a"}"#);
        let h = plain.split('.').next().unwrap_or_default();
        let jws = parse_memo(&plain, all(), &memo).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(memo.get(h, |_| ()).is_none(), "kept before memoize");
        jws.memoize(&memo);
        let kept = memo.get(h, |k| (k.alg, k.kid.clone()));
        assert_eq!(kept, Some((Alg::RS256, Some("k1".to_string()))));
        // Read from the memo: the same token, under this caller's allowlist.
        let again = parse_memo(&plain, all(), &memo).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((again.alg, again.kid.as_deref()), (Alg::RS256, Some("k1")));
        let hs: AlgSet = [Alg::HS256].into_iter().collect();
        assert_eq!(
            parse_memo(&plain, hs, &memo).err(),
            Some(DenyReason::BadAlg)
        );
        for header in [
            r#"{"alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}}"#,
            r#"{"alg":"ES256","jwk":"not an object"}"#,
        ] {
            let t = tok(header, "{}");
            let jws = parse_memo(&t, all(), &memo).unwrap_or_else(|e| panic!("{e:?}"));
            jws.memoize(&memo);
            let h = t.split('.').next().unwrap_or_default();
            assert!(memo.get(h, |_| ()).is_none(), "{header} kept");
        }
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
        let claims = jws.claims().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(claims.get("sub"), Some(&ClaimValue::Str("a".into())));
        assert!(t.starts_with(jws.signing_input));
    }

    #[test]
    fn claims_borrow_strings_and_keep_the_last_duplicate() {
        let t = tok(
            r#"{"alg":"RS256"}"#,
            r#"{"sub":"a","esc":"x\"y","n":1.5,"big":18446744073709551615,"aud":["p","q"],"o":{"k":null},"sub":"b","z":null}"#,
        );
        let jws = parse(&t, all()).unwrap_or_else(|e| panic!("{e:?}"));
        let c = jws.claims().unwrap_or_else(|e| panic!("{e:?}"));
        assert!(matches!(
            c.get("sub"),
            Some(ClaimValue::Str(Cow::Borrowed("b")))
        ));
        assert_eq!(c.get("esc"), Some(&ClaimValue::Str("x\"y".into())));
        assert_eq!(c.get("n").map(ClaimValue::to_json).as_deref(), Some("1.5"));
        assert_eq!(
            c.get("big").map(ClaimValue::to_json).as_deref(),
            Some("18446744073709551615")
        );
        assert_eq!(
            c.get("aud").map(ClaimValue::to_json).as_deref(),
            Some(r#"["p","q"]"#)
        );
        assert_eq!(
            c.get("o").map(ClaimValue::to_json).as_deref(),
            Some(r#"{"k":null}"#)
        );
        assert_eq!(c.get("z"), Some(&ClaimValue::Null));
        assert!(c.contains("z") && !c.contains("missing"));
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
            format!("{good_h}.{}.c2ln", b64(r#"{"a":1,}"#)),
            format!("{good_h}.{}.c2ln", b64(r#"{"a":1} x"#)),
        ];
        for t in cases {
            let r = parse(&t, all()).and_then(|j| j.claims().map(|_| ()));
            assert_eq!(r.err(), Some(DenyReason::Malformed), "{t}");
        }
    }
}
