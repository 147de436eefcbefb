//! JWS algorithm identifiers (RFC 7518 §3.1) that tokengate verifies, and the key
//! families they need. `none` is not among them and never will be.

use std::fmt;

/// A JWS `alg` value tokengate can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(clippy::upper_case_acronyms)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
}

/// The key type (`kty`) an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kty {
    /// RSA.
    Rsa,
    /// Elliptic curve (NIST).
    Ec,
    /// Octet key pair (Ed25519).
    Okp,
    /// Symmetric secret (HMAC).
    Oct,
}

/// A curve (`crv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Crv {
    /// NIST P-256.
    P256,
    /// NIST P-384.
    P384,
    /// Ed25519.
    Ed25519,
}

/// A set of algorithms, as a bit set (cheap to copy and test on the hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlgSet(u16);

// === impl Alg ===

impl Alg {
    /// Every supported algorithm.
    pub const ALL: [Alg; 12] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
    ];

    /// The algorithms an issuer accepts when its config names none: every asymmetric
    /// one. HMAC must be asked for explicitly.
    pub const DEFAULT_ALLOWED: [Alg; 9] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The registered name, e.g. `RS256`.
    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    /// Parses a registered name, case-sensitively as RFC 7515 §4.1.1 requires.
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The key type this algorithm needs.
    pub fn kty(self) -> Kty {
        match self {
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => Kty::Rsa,
            Alg::ES256 | Alg::ES384 => Kty::Ec,
            Alg::EdDSA => Kty::Okp,
            Alg::HS256 | Alg::HS384 | Alg::HS512 => Kty::Oct,
        }
    }

    /// The curve this algorithm needs, for EC and OKP keys.
    pub fn crv(self) -> Option<Crv> {
        match self {
            Alg::ES256 => Some(Crv::P256),
            Alg::ES384 => Some(Crv::P384),
            Alg::EdDSA => Some(Crv::Ed25519),
            _ => None,
        }
    }

    /// For HMAC, the minimum key length in bytes (RFC 7518 §3.2: at least the hash size).
    pub fn min_hmac_key_len(self) -> usize {
        match self {
            Alg::HS256 => 32,
            Alg::HS384 => 48,
            Alg::HS512 => 64,
            _ => 0,
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl Kty ===

impl Kty {
    /// The JWK `kty` value.
    pub fn name(self) -> &'static str {
        match self {
            Kty::Rsa => "RSA",
            Kty::Ec => "EC",
            Kty::Okp => "OKP",
            Kty::Oct => "oct",
        }
    }
}

// === impl Crv ===

impl Crv {
    /// The JWK `crv` value.
    pub fn name(self) -> &'static str {
        match self {
            Crv::P256 => "P-256",
            Crv::P384 => "P-384",
            Crv::Ed25519 => "Ed25519",
        }
    }
}

// === impl AlgSet ===

impl AlgSet {
    /// The empty set.
    pub const EMPTY: AlgSet = AlgSet(0);

    /// Adds `alg`.
    pub fn insert(&mut self, alg: Alg) {
        self.0 |= alg.bit();
    }

    /// True when `alg` is in the set.
    pub fn contains(self, alg: Alg) -> bool {
        self.0 & alg.bit() != 0
    }

    /// The union of two sets.
    pub fn union(self, other: AlgSet) -> AlgSet {
        AlgSet(self.0 | other.0)
    }

    /// The members, in `Alg::ALL` order.
    pub fn iter(self) -> impl Iterator<Item = Alg> {
        Alg::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

impl FromIterator<Alg> for AlgSet {
    fn from_iter<I: IntoIterator<Item = Alg>>(iter: I) -> Self {
        let mut set = AlgSet::EMPTY;
        for a in iter {
            set.insert(a);
        }
        set
    }
}
