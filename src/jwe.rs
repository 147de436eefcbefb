//! Compact JWE (RFC 7516) read without trusting it, then decrypted (RFC 7518) with
//! aws-lc-rs primitives (SPEC §10). Only what SPEC §10 allows is ever decrypted:
//!
//! - key management `dir`, `A128KW`, `A256KW`, `RSA-OAEP`, `RSA-OAEP-256`, `ECDH-ES`,
//!   `ECDH-ES+A128KW`, `ECDH-ES+A256KW`; content encryption `A128CBC-HS256`,
//!   `A256CBC-HS512`, `A128GCM`, `A256GCM`;
//! - refused before any key is touched: an `alg` or `enc` outside the caller's allowlists
//!   (`RSA1_5` and `PBES2-*` are never on them: config refuses them) → `bad_alg`; a `zip`
//!   or `crit` member, a header that is not one JSON object, a repeated member, anything
//!   but five strict base64url segments, an `epk` where none belongs or none where one
//!   must be → `malformed`.
//!
//! Every failure of the decryption itself — a key that does not fit, a wrong key, an
//! altered tag, IV, header or ciphertext, bad CBC padding, an `epk` off its curve — is
//! one and the same [`Undecryptable`], so that no answer tells a bad tag from bad
//! padding (no padding oracle). For CBC-HMAC the tag is checked (in constant time)
//! before the ciphertext is decrypted at all.

mod crypto;

use serde_json::Value;

use crate::decision::DenyReason;
use crate::token::jws::{ClaimSet, ClaimValue};
use crate::token::memo::HeaderMemo;

pub use crypto::{DecryptionKey, Undecryptable};

/// A key management algorithm (`alg`) tokengate decrypts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlg {
    /// The shared symmetric key is the content encryption key.
    Dir,
    /// AES-128 key wrap.
    A128Kw,
    /// AES-256 key wrap.
    A256Kw,
    /// RSAES-OAEP with SHA-1 and MGF1-SHA-1.
    RsaOaep,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256.
    RsaOaep256,
    /// ECDH-ES key agreement, the agreed key is the content encryption key.
    EcdhEs,
    /// ECDH-ES, then AES-128 key wrap.
    EcdhEsA128Kw,
    /// ECDH-ES, then AES-256 key wrap.
    EcdhEsA256Kw,
}

/// A content encryption algorithm (`enc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Enc {
    /// AES-128-CBC with HMAC-SHA-256, 32-byte key.
    A128CbcHs256,
    /// AES-256-CBC with HMAC-SHA-512, 64-byte key (PingGateway's JWT sessions).
    A256CbcHs512,
    /// AES-128-GCM.
    A128Gcm,
    /// AES-256-GCM.
    A256Gcm,
}

/// The unverified parts of a compact JWE.
#[derive(Debug)]
pub struct Jwe<'t> {
    /// Key management algorithm.
    pub alg: KeyAlg,
    /// Content encryption algorithm.
    pub enc: Enc,
    /// The header's key id.
    pub kid: Option<String>,
    /// The header's content type (`JWT` for a nested token).
    pub cty: Option<String>,
    /// The ephemeral public key of `ECDH-ES*` (a JWK).
    epk: Option<Value>,
    /// `apu` and `apv` (ECDH-ES party info), decoded.
    apu: Vec<u8>,
    apv: Vec<u8>,
    /// The protected header as received: the additional authenticated data.
    aad: &'t str,
    encrypted_key: Vec<u8>,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
    /// [`Jwe::memoize`] may keep the header (read, not taken from a memo; no `epk`).
    keep: bool,
}

/// What a JWE protected header that passed every check of its own read as (a
/// [`HeaderMemo`] keeps it by the header's segment). `alg` and `enc` are known ones,
/// not yet held against anyone's allowlists.
#[derive(Debug, Clone)]
pub struct Header {
    alg: KeyAlg,
    enc: Enc,
    kid: Option<String>,
    cty: Option<String>,
}

/// Header members a JWE may carry at most once.
const HEADER_MEMBERS: [&str; 10] = [
    "alg", "enc", "kid", "cty", "typ", "epk", "apu", "apv", "zip", "crit",
];

// === impl KeyAlg ===

impl KeyAlg {
    /// Every supported algorithm.
    pub const ALL: [KeyAlg; 8] = [
        KeyAlg::Dir,
        KeyAlg::A128Kw,
        KeyAlg::A256Kw,
        KeyAlg::RsaOaep,
        KeyAlg::RsaOaep256,
        KeyAlg::EcdhEs,
        KeyAlg::EcdhEsA128Kw,
        KeyAlg::EcdhEsA256Kw,
    ];

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlg::Dir => "dir",
            KeyAlg::A128Kw => "A128KW",
            KeyAlg::A256Kw => "A256KW",
            KeyAlg::RsaOaep => "RSA-OAEP",
            KeyAlg::RsaOaep256 => "RSA-OAEP-256",
            KeyAlg::EcdhEs => "ECDH-ES",
            KeyAlg::EcdhEsA128Kw => "ECDH-ES+A128KW",
            KeyAlg::EcdhEsA256Kw => "ECDH-ES+A256KW",
        }
    }

    /// The algorithm of a JOSE name (exact, case-sensitive: RFC 7518 names).
    pub fn from_name(name: &str) -> Option<KeyAlg> {
        KeyAlg::ALL.into_iter().find(|a| a.name() == name)
    }

    /// True for the `ECDH-ES` family, whose header carries an `epk`.
    pub fn is_ecdh(self) -> bool {
        matches!(
            self,
            KeyAlg::EcdhEs | KeyAlg::EcdhEsA128Kw | KeyAlg::EcdhEsA256Kw
        )
    }
}

// === impl Enc ===

impl Enc {
    /// Every supported method.
    pub const ALL: [Enc; 4] = [
        Enc::A128CbcHs256,
        Enc::A256CbcHs512,
        Enc::A128Gcm,
        Enc::A256Gcm,
    ];

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Enc::A128CbcHs256 => "A128CBC-HS256",
            Enc::A256CbcHs512 => "A256CBC-HS512",
            Enc::A128Gcm => "A128GCM",
            Enc::A256Gcm => "A256GCM",
        }
    }

    /// The method of a JOSE name.
    pub fn from_name(name: &str) -> Option<Enc> {
        Enc::ALL.into_iter().find(|e| e.name() == name)
    }

    /// Bytes of the content encryption key.
    pub fn key_len(self) -> usize {
        match self {
            Enc::A128CbcHs256 => 32,
            Enc::A256CbcHs512 => 64,
            Enc::A128Gcm => 16,
            Enc::A256Gcm => 32,
        }
    }
}

/// Parses `token` and checks its header against the allowlists (see the module docs).
pub fn parse<'t>(token: &'t str, algs: &[KeyAlg], encs: &[Enc]) -> Result<Jwe<'t>, DenyReason> {
    parse_with(token, algs, encs, None)
}

/// [`parse`], taking the header from `memo` when its segment is kept there (the same
/// answer, without reading the header again). [`Jwe::memoize`] keeps it there.
pub fn parse_memo<'t>(
    token: &'t str,
    algs: &[KeyAlg],
    encs: &[Enc],
    memo: &HeaderMemo<Header>,
) -> Result<Jwe<'t>, DenyReason> {
    parse_with(token, algs, encs, Some(memo))
}

fn parse_with<'t>(
    token: &'t str,
    algs: &[KeyAlg],
    encs: &[Enc],
    memo: Option<&HeaderMemo<Header>>,
) -> Result<Jwe<'t>, DenyReason> {
    const MALFORMED: DenyReason = DenyReason::Malformed;
    let mut parts = crate::token::segments(token);
    let (Some(h), Some(k), Some(i), Some(c), Some(t), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(MALFORMED);
    };
    if h.is_empty() || i.is_empty() || c.is_empty() || t.is_empty() {
        return Err(MALFORMED);
    }
    let read = match memo.and_then(|m| m.get(h, Header::clone)) {
        // A kept header passed every check of `read_header` but the allowlists (this
        // caller's), which come first there too.
        Some(header) if algs.contains(&header.alg) && encs.contains(&header.enc) => Read {
            header,
            epk: None,
            apu: Vec::new(),
            apv: Vec::new(),
            keep: false,
        },
        Some(_) => return Err(DenyReason::BadAlg),
        None => read_header(h, algs, encs)?,
    };
    let alg = read.header.alg;
    let decode = |s: &str| crate::token::decode(s).ok_or(MALFORMED);
    let encrypted_key = decode(k)?;
    // `dir` and `ECDH-ES` (direct) carry no encrypted key (RFC 7516 §5.1 step 5).
    if matches!(alg, KeyAlg::Dir | KeyAlg::EcdhEs) != encrypted_key.is_empty() {
        return Err(MALFORMED);
    }
    Ok(Jwe {
        alg,
        enc: read.header.enc,
        kid: read.header.kid,
        cty: read.header.cty,
        apu: read.apu,
        apv: read.apv,
        epk: read.epk,
        aad: h,
        encrypted_key,
        iv: decode(i)?,
        ciphertext: decode(c)?,
        tag: decode(t)?,
        keep: read.keep,
    })
}

/// What [`read_header`] read.
struct Read {
    header: Header,
    epk: Option<Value>,
    apu: Vec<u8>,
    apv: Vec<u8>,
    /// A memo may keep the header: it has no `epk`, `apu` or `apv` (an `ECDH-ES`
    /// header changes with every token's ephemeral key).
    keep: bool,
}

/// Reads and checks the protected header segment `h`: every check that depends on the
/// header alone (the allowlists first: a refused `alg` or `enc` is refused whatever else
/// the header says).
fn read_header(h: &str, algs: &[KeyAlg], encs: &[Enc]) -> Result<Read, DenyReason> {
    const MALFORMED: DenyReason = DenyReason::Malformed;
    let header_bytes = crate::token::decode(h).ok_or(MALFORMED)?;
    if header_bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(MALFORMED);
    }
    let header = ClaimSet::from_json(&header_bytes).ok_or(MALFORMED)?;
    let mut seen = 0u16;
    for (name, _) in header.members() {
        if let Some(i) = HEADER_MEMBERS.iter().position(|m| *m == name) {
            if seen & (1 << i) != 0 {
                return Err(MALFORMED);
            }
            seen |= 1 << i;
        }
    }
    let text = |name: &str| match header.get(name) {
        None => Ok(None),
        Some(ClaimValue::Str(s)) => Ok(Some(s)),
        Some(_) => Err(MALFORMED),
    };
    let alg = text("alg")?
        .and_then(|n| KeyAlg::from_name(n))
        .filter(|a| algs.contains(a));
    let enc = text("enc")?
        .and_then(|n| Enc::from_name(n))
        .filter(|e| encs.contains(e));
    let (Some(alg), Some(enc)) = (alg, enc) else {
        return Err(DenyReason::BadAlg);
    };
    if header.contains("zip") || header.get("crit").is_some_and(|c| *c != ClaimValue::Null) {
        return Err(MALFORMED);
    }
    let epk = match header.get("epk") {
        None => None,
        Some(ClaimValue::Other(v @ Value::Object(_))) => Some(v.clone()),
        Some(_) => return Err(MALFORMED),
    };
    if alg.is_ecdh() != epk.is_some() {
        return Err(MALFORMED);
    }
    let party = |name: &str| -> Result<Vec<u8>, DenyReason> {
        match text(name)? {
            None => Ok(Vec::new()),
            Some(s) => crate::token::decode(s).ok_or(MALFORMED),
        }
    };
    let keep = epk.is_none() && !header.contains("apu") && !header.contains("apv");
    Ok(Read {
        header: Header {
            alg,
            enc,
            kid: text("kid")?.map(|s| s.to_string()),
            cty: text("cty")?.map(|s| s.to_string()),
        },
        apu: party("apu")?,
        apv: party("apv")?,
        epk,
        keep,
    })
}

// === impl Jwe ===

impl Jwe<'_> {
    /// Keeps this JWE's protected header in `memo` (call it once the JWE opened: only
    /// JWEs that did take a slot). An `ECDH-ES` header is not kept.
    pub fn memoize(&self, memo: &HeaderMemo<Header>) {
        if self.keep {
            memo.insert(
                self.aad,
                Header {
                    alg: self.alg,
                    enc: self.enc,
                    kid: self.kid.clone(),
                    cty: self.cty.clone(),
                },
            );
        }
    }

    /// Decrypts with `key`: the plaintext, or [`Undecryptable`] for every failure alike.
    /// The content key is wiped when dropped; the plaintext, a token or a session's
    /// claims as a plain token's would be, is not (it is not key material).
    pub fn decrypt(&self, key: &DecryptionKey) -> Result<Vec<u8>, Undecryptable> {
        // `dir` with a GCM method: the key prepared when it was loaded.
        if let (KeyAlg::Dir, Enc::A128Gcm | Enc::A256Gcm, DecryptionKey::Secret(k, Some(gcm))) =
            (self.alg, self.enc, key)
            && k.len() == self.enc.key_len()
        {
            return crypto::open_gcm(self, gcm);
        }
        let cek = crypto::content_key(self, key)?;
        crypto::open(self, &cek)
    }

    /// True when the header says the plaintext is a JWT (`cty` `JWT`, any case, with or
    /// without the `application/` prefix: RFC 7515 §4.1.10).
    pub fn is_nested_jwt(&self) -> bool {
        self.cty.as_deref().is_some_and(|c| {
            let c = c.strip_prefix("application/").unwrap_or(c);
            c.eq_ignore_ascii_case("jwt")
        })
    }
}
