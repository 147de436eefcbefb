//! Public key material, parsed once when a key is loaded: RSA, EC P-256/P-384 and
//! Ed25519 keys as pre-parsed aws-lc-rs keys, HMAC secrets as prepared HMAC keys. The
//! hot path only calls [`KeyMaterial::verify`]; nothing is re-parsed per request.
//! Also the RFC 7638 thumbprint, computed from the canonical JWK members.

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use aws_lc_rs::{digest, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::alg::{Alg, Crv, Kty};

/// Why key material could not be used. Never contains the material itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is of a type or curve tokengate does not verify with.
    #[error("unsupported key: {0}")]
    Unsupported(String),
    /// The key's encoding is broken or the crypto library refused it (e.g. RSA < 2048 bits).
    #[error("invalid key: {0}")]
    Invalid(String),
}

/// A verifying key, pre-parsed.
pub struct KeyMaterial {
    kty: Kty,
    crv: Option<Crv>,
    thumbprint: String,
    verifier: Verifier,
}

enum Verifier {
    /// Indexed by `rsa_slot(alg)`: RS256, RS384, RS512, PS256, PS384, PS512.
    Rsa(Box<[ParsedPublicKey; 6]>),
    Ec(ParsedPublicKey),
    Ed25519(ParsedPublicKey),
    /// HS256, HS384, HS512 keys, and the secret's length (for the minimum-size rule).
    Hmac(Box<[hmac::Key; 3]>, usize),
}

/// A certificate's validity period, in seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before: i64,
    /// notAfter.
    pub not_after: i64,
}

const RSA_ALGS: [&signature::RsaParameters; 6] = [
    &signature::RSA_PKCS1_2048_8192_SHA256,
    &signature::RSA_PKCS1_2048_8192_SHA384,
    &signature::RSA_PKCS1_2048_8192_SHA512,
    &signature::RSA_PSS_2048_8192_SHA256,
    &signature::RSA_PSS_2048_8192_SHA384,
    &signature::RSA_PSS_2048_8192_SHA512,
];

const OID_ED25519: &str = "1.3.101.112";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

// === impl KeyMaterial ===

impl KeyMaterial {
    /// An RSA public key from its big-endian modulus and exponent.
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<Self, KeyError> {
        let n = strip_zeros(n);
        let e = strip_zeros(e);
        if n.is_empty() || e.is_empty() {
            return Err(KeyError::Invalid("empty RSA modulus or exponent".into()));
        }
        // aws-lc checks the size only when verifying; refuse weak keys when loading.
        let bits = n.len() * 8 - n[0].leading_zeros() as usize;
        if !(2048..=8192).contains(&bits) {
            return Err(KeyError::Invalid(format!(
                "RSA key of {bits} bits; RSA keys need 2048 to 8192 bits"
            )));
        }
        let der = rsa_public_key_der(n, e);
        let parse = |alg: &'static signature::RsaParameters| {
            ParsedPublicKey::new(alg as &'static dyn VerificationAlgorithm, &der).map_err(|e| {
                KeyError::Invalid(format!(
                    "RSA key rejected ({e}); RSA keys need 2048 to 8192 bits"
                ))
            })
        };
        let keys = [
            parse(RSA_ALGS[0])?,
            parse(RSA_ALGS[1])?,
            parse(RSA_ALGS[2])?,
            parse(RSA_ALGS[3])?,
            parse(RSA_ALGS[4])?,
            parse(RSA_ALGS[5])?,
        ];
        let thumbprint = thumbprint(&format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(e),
            URL_SAFE_NO_PAD.encode(n)
        ));
        Ok(Self {
            kty: Kty::Rsa,
            crv: None,
            thumbprint,
            verifier: Verifier::Rsa(Box::new(keys)),
        })
    }

    /// An EC public key from its affine coordinates (fixed-length, big-endian).
    pub fn ec(crv: Crv, x: &[u8], y: &[u8]) -> Result<Self, KeyError> {
        let (len, alg): (usize, &'static dyn VerificationAlgorithm) = match crv {
            Crv::P256 => (32, &signature::ECDSA_P256_SHA256_FIXED),
            Crv::P384 => (48, &signature::ECDSA_P384_SHA384_FIXED),
            Crv::Ed25519 => return Err(KeyError::Unsupported("Ed25519 is not an EC curve".into())),
        };
        if x.len() != len || y.len() != len {
            return Err(KeyError::Invalid(format!(
                "{} coordinates must be {len} bytes",
                crv.name()
            )));
        }
        let mut point = Vec::with_capacity(1 + 2 * len);
        point.push(4);
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        let key = ParsedPublicKey::new(alg, &point)
            .map_err(|e| KeyError::Invalid(format!("EC point rejected: {e}")))?;
        let thumbprint = thumbprint(&format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            crv.name(),
            URL_SAFE_NO_PAD.encode(x),
            URL_SAFE_NO_PAD.encode(y)
        ));
        Ok(Self {
            kty: Kty::Ec,
            crv: Some(crv),
            thumbprint,
            verifier: Verifier::Ec(key),
        })
    }

    /// An Ed25519 public key (32 bytes).
    pub fn ed25519(x: &[u8]) -> Result<Self, KeyError> {
        if x.len() != 32 {
            return Err(KeyError::Invalid("Ed25519 keys are 32 bytes".into()));
        }
        let key = ParsedPublicKey::new(&signature::ED25519, x)
            .map_err(|e| KeyError::Invalid(format!("Ed25519 key rejected: {e}")))?;
        let thumbprint = thumbprint(&format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(x)
        ));
        Ok(Self {
            kty: Kty::Okp,
            crv: Some(Crv::Ed25519),
            thumbprint,
            verifier: Verifier::Ed25519(key),
        })
    }

    /// An HMAC secret.
    pub fn hmac(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::Invalid("empty HMAC secret".into()));
        }
        let keys = [
            hmac::Key::new(hmac::HMAC_SHA256, secret),
            hmac::Key::new(hmac::HMAC_SHA384, secret),
            hmac::Key::new(hmac::HMAC_SHA512, secret),
        ];
        let thumbprint = thumbprint(&format!(
            r#"{{"k":"{}","kty":"oct"}}"#,
            URL_SAFE_NO_PAD.encode(secret)
        ));
        Ok(Self {
            kty: Kty::Oct,
            crv: None,
            thumbprint,
            verifier: Verifier::Hmac(Box::new(keys), secret.len()),
        })
    }

    /// A public key from a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let (_, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|_| KeyError::Invalid("not a DER SubjectPublicKeyInfo".into()))?;
        Self::from_spki(&spki)
    }

    fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, KeyError> {
        let oid = spki.algorithm.algorithm.to_id_string();
        if oid == OID_ED25519 {
            return Self::ed25519(&spki.subject_public_key.data);
        }
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => Self::rsa(rsa.modulus, rsa.exponent),
            Ok(PublicKey::EC(point)) => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string());
                let crv = match curve.as_deref() {
                    Some(OID_P256) => Crv::P256,
                    Some(OID_P384) => Crv::P384,
                    other => {
                        return Err(KeyError::Unsupported(format!(
                            "EC curve {} (supported: P-256, P-384)",
                            other.unwrap_or("unnamed")
                        )));
                    }
                };
                let data = point.data();
                let len = if crv == Crv::P256 { 32 } else { 48 };
                if data.len() != 1 + 2 * len || data[0] != 4 {
                    return Err(KeyError::Invalid(
                        "EC point is not an uncompressed point of its curve".into(),
                    ));
                }
                Self::ec(crv, &data[1..1 + len], &data[1 + len..])
            }
            Ok(_) => Err(KeyError::Unsupported(format!("public key algorithm {oid}"))),
            Err(_) => Err(KeyError::Invalid("the public key does not parse".into())),
        }
    }

    /// The public key of a DER X.509 certificate, and the certificate's validity.
    pub fn from_certificate_der(der: &[u8]) -> Result<(Self, Validity), KeyError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|_| KeyError::Invalid("not a DER X.509 certificate".into()))?;
        let key = Self::from_spki(cert.public_key())?;
        let v = cert.validity();
        Ok((
            key,
            Validity {
                not_before: v.not_before.timestamp(),
                not_after: v.not_after.timestamp(),
            },
        ))
    }

    /// The key type.
    pub fn kty(&self) -> Kty {
        self.kty
    }

    /// The curve, for EC and OKP keys.
    pub fn crv(&self) -> Option<Crv> {
        self.crv
    }

    /// The RFC 7638 thumbprint (base64url SHA-256 of the canonical JWK).
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// True when this material can verify `alg` signatures: the key type and curve
    /// fit, and an HMAC secret is at least as long as the hash (RFC 7518 §3.2).
    pub fn fits(&self, alg: Alg) -> bool {
        if alg.kty() != self.kty {
            return false;
        }
        match &self.verifier {
            Verifier::Hmac(_, len) => *len >= alg.min_hmac_key_len(),
            Verifier::Rsa(_) => true,
            Verifier::Ec(_) | Verifier::Ed25519(_) => alg.crv() == self.crv,
        }
    }

    /// Verifies `signature` over `message` with `alg`. False for any failure, including
    /// an `alg` this key does not fit.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        if !self.fits(alg) {
            return false;
        }
        match &self.verifier {
            Verifier::Rsa(keys) => {
                let slot = match alg {
                    Alg::RS256 => 0,
                    Alg::RS384 => 1,
                    Alg::RS512 => 2,
                    Alg::PS256 => 3,
                    Alg::PS384 => 4,
                    Alg::PS512 => 5,
                    _ => return false,
                };
                keys[slot].verify_sig(message, signature).is_ok()
            }
            Verifier::Ec(key) | Verifier::Ed25519(key) => {
                key.verify_sig(message, signature).is_ok()
            }
            Verifier::Hmac(keys, _) => {
                let key = match alg {
                    Alg::HS256 => &keys[0],
                    Alg::HS384 => &keys[1],
                    Alg::HS512 => &keys[2],
                    _ => return false,
                };
                // Constant-time comparison inside.
                hmac::verify(key, message, signature).is_ok()
            }
        }
    }
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material: the thumbprint identifies the key.
        f.debug_struct("KeyMaterial")
            .field("kty", &self.kty)
            .field("crv", &self.crv)
            .field("thumbprint", &self.thumbprint)
            .finish()
    }
}

fn thumbprint(canonical_jwk: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical_jwk.as_bytes()))
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let zeros = b.iter().take_while(|x| **x == 0).count();
    &b[zeros..]
}

/// DER `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017).
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn integer(out: &mut Vec<u8>, v: &[u8]) {
        let pad = v[0] & 0x80 != 0;
        out.push(0x02);
        push_len(out, v.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
    }
    fn push_len(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(&mut body, n);
    integer(&mut body, e);
    let mut out = Vec::with_capacity(body.len() + 8);
    out.push(0x30);
    push_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}
