//! The JWE primitives, each one aws-lc-rs call: AES-GCM (`aead`), AES-CBC with PKCS #7
//! padding (`cipher`) after an HMAC-SHA-2 tag checked in constant time, AES key unwrap
//! (`key_wrap`, RFC 3394), RSA-OAEP (`rsa`), ECDH (`agreement`, which refuses a peer
//! point off its curve) and the Concat KDF of RFC 7518 §4.6 (`kdf::sskdf_digest` with
//! SHA-256: NIST SP 800-56A's single-step KDF is that KDF).

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::cipher::{
    AES_128, AES_256, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey,
};
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::key_wrap::{self, AesKek, KeyWrap as _};
use aws_lc_rs::rsa::{
    KeyPair, KeyPairComponents, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
    OaepPrivateDecryptingKey, PrivateDecryptingKey, PublicKeyComponents,
};
use aws_lc_rs::{constant_time, hmac, kdf};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use zeroize::Zeroizing;

use super::{Enc, Jwe, KeyAlg};
use crate::alg::Crv;
use crate::keys::KeyMaterial;

/// A JWE that does not decrypt with a key, for whatever reason. Deliberately without
/// detail: see the module docs of [`super`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the JWE does not decrypt with this key")]
pub struct Undecryptable;

/// A decryption key: its material, never printed.
pub enum DecryptionKey {
    /// A symmetric key: `dir` (when its length is the method's key length), `A128KW`
    /// (16 bytes), `A256KW` (32 bytes); with its AES-GCM key prepared once when it has
    /// a GCM size (`dir` + `A128GCM` / `A256GCM`, the common case, expands no key per
    /// token).
    Secret(Zeroizing<Vec<u8>>, Option<LessSafeKey>),
    /// An RSA private key: `RSA-OAEP`, `RSA-OAEP-256`.
    Rsa(OaepPrivateDecryptingKey),
    /// An EC private key (P-256, P-384, P-521) or X25519: `ECDH-ES*`.
    Ec(PrivateKey),
}

impl std::fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecryptionKey::Secret(k, _) => write!(f, "Secret({} bytes)", k.len()),
            DecryptionKey::Rsa(k) => write!(f, "Rsa({} bits)", k.key_size_bits()),
            DecryptionKey::Ec(k) => write!(f, "Ec({:?})", k.algorithm()),
        }
    }
}

// === impl DecryptionKey ===

impl DecryptionKey {
    /// A symmetric key.
    pub fn secret(bytes: &[u8]) -> Self {
        let gcm = match bytes.len() {
            16 => Some(&aead::AES_128_GCM),
            32 => Some(&aead::AES_256_GCM),
            _ => None,
        }
        .and_then(|alg| UnboundKey::new(alg, bytes).ok())
        .map(LessSafeKey::new);
        DecryptionKey::Secret(Zeroizing::new(bytes.to_vec()), gcm)
    }

    /// An RSA private key from PKCS #8 DER.
    pub fn rsa_pkcs8(der: &[u8]) -> Result<Self, Undecryptable> {
        let key = PrivateDecryptingKey::from_pkcs8(der).map_err(|_| Undecryptable)?;
        OaepPrivateDecryptingKey::new(key)
            .map(DecryptionKey::Rsa)
            .map_err(|_| Undecryptable)
    }

    /// An EC private key from PKCS #8 or SEC 1 DER, on the first curve it parses on.
    pub fn ec_der(der: &[u8]) -> Result<Self, Undecryptable> {
        [
            &agreement::ECDH_P256,
            &agreement::ECDH_P384,
            &agreement::ECDH_P521,
        ]
        .into_iter()
        .find_map(|alg| PrivateKey::from_private_key_der(alg, der).ok())
        .map(DecryptionKey::Ec)
        .ok_or(Undecryptable)
    }

    /// A private key in PKCS #8 DER (a keystore's private-key entry, a `PRIVATE KEY` PEM
    /// block), RSA or EC (P-256, P-384), with the public key's verifying material (for
    /// the key's thumbprint and type in `/keys` and the metrics).
    pub fn from_pkcs8(der: &[u8]) -> Result<(Self, KeyMaterial), String> {
        if let Ok(key) = PrivateDecryptingKey::from_pkcs8(der) {
            let spki = key
                .public_key()
                .as_der()
                .map_err(|_| "the RSA public key does not encode".to_string())?;
            let material = KeyMaterial::from_spki_der(spki.as_ref()).map_err(|e| e.to_string())?;
            let key = OaepPrivateDecryptingKey::new(key)
                .map_err(|_| "the RSA key cannot do OAEP".to_string())?;
            return Ok((DecryptionKey::Rsa(key), material));
        }
        for (alg, crv) in [
            (&agreement::ECDH_P256, Crv::P256),
            (&agreement::ECDH_P384, Crv::P384),
        ] {
            let Ok(key) = PrivateKey::from_private_key_der(alg, der) else {
                continue;
            };
            let public = key
                .compute_public_key()
                .map_err(|_| "the EC public key cannot be computed".to_string())?;
            let point = public.as_ref();
            let half = (point.len().saturating_sub(1)) / 2;
            let material = KeyMaterial::ec(crv, &point[1..1 + half], &point[1 + half..])
                .map_err(|e| e.to_string())?;
            return Ok((DecryptionKey::Ec(key), material));
        }
        Err("not an RSA or EC (P-256, P-384) private key in PKCS #8".into())
    }

    /// A private JWK: `oct` with `k`, `EC` or `OKP` (X25519) with `d`, `RSA` with every
    /// private member (`d`, `p`, `q`, `dp`, `dq`, `qi`; RFC 7518 §6.3.2).
    pub fn from_jwk(jwk: &Value) -> Result<Self, Undecryptable> {
        let member = |name: &str| {
            jwk.get(name)
                .and_then(Value::as_str)
                .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
                .ok_or(Undecryptable)
        };
        match jwk.get("kty").and_then(Value::as_str) {
            Some("oct") => Ok(DecryptionKey::secret(&member("k")?)),
            Some("RSA") => {
                let private = |name: &str| member(name).map(Zeroizing::new);
                let components = KeyPairComponents {
                    public_key: PublicKeyComponents {
                        n: member("n")?,
                        e: member("e")?,
                    },
                    d: private("d")?,
                    p: private("p")?,
                    q: private("q")?,
                    dP: private("dp")?,
                    dQ: private("dq")?,
                    qInv: private("qi")?,
                };
                let pair = KeyPair::from_components(&components).map_err(|_| Undecryptable)?;
                let pkcs8 = pair.as_der().map_err(|_| Undecryptable)?;
                let pkcs8 = Zeroizing::new(pkcs8.as_ref().to_vec());
                Self::rsa_pkcs8(&pkcs8)
            }
            Some("EC" | "OKP") => {
                let (alg, _) = curve(jwk).ok_or(Undecryptable)?;
                let d = Zeroizing::new(member("d")?);
                PrivateKey::from_private_key(alg, &d)
                    .map(DecryptionKey::Ec)
                    .map_err(|_| Undecryptable)
            }
            _ => Err(Undecryptable),
        }
    }

    /// True when this key can serve `alg` with `enc` at all (the cheap check that picks
    /// fallback candidates before any decryption).
    pub fn fits(&self, alg: KeyAlg, enc: Enc) -> bool {
        match (self, alg) {
            (DecryptionKey::Secret(k, _), KeyAlg::Dir) => k.len() == enc.key_len(),
            (DecryptionKey::Secret(k, _), KeyAlg::A128Kw) => k.len() == 16,
            (DecryptionKey::Secret(k, _), KeyAlg::A256Kw) => k.len() == 32,
            (DecryptionKey::Rsa(_), KeyAlg::RsaOaep | KeyAlg::RsaOaep256) => true,
            (DecryptionKey::Ec(_), a) => a.is_ecdh(),
            _ => false,
        }
    }
}

/// The ECDH algorithm of a JWK's curve, and whether it is an octet key pair (X25519: the
/// public key is `x` alone).
fn curve(jwk: &Value) -> Option<(&'static agreement::Algorithm, bool)> {
    match (
        jwk.get("kty").and_then(Value::as_str)?,
        jwk.get("crv").and_then(Value::as_str)?,
    ) {
        ("EC", "P-256") => Some((&agreement::ECDH_P256, false)),
        ("EC", "P-384") => Some((&agreement::ECDH_P384, false)),
        ("EC", "P-521") => Some((&agreement::ECDH_P521, false)),
        ("OKP", "X25519") => Some((&agreement::X25519, true)),
        _ => None,
    }
}

/// The content encryption key of `jwe` under `key` (RFC 7516 §5.2 steps 6-10).
pub(super) fn content_key(
    jwe: &Jwe<'_>,
    key: &DecryptionKey,
) -> Result<Zeroizing<Vec<u8>>, Undecryptable> {
    if !key.fits(jwe.alg, jwe.enc) {
        return Err(Undecryptable);
    }
    let cek = match (jwe.alg, key) {
        (KeyAlg::Dir, DecryptionKey::Secret(k, _)) => Zeroizing::new(k.to_vec()),
        (KeyAlg::A128Kw | KeyAlg::A256Kw, DecryptionKey::Secret(k, _)) => {
            unwrap_key(k, &jwe.encrypted_key)?
        }
        (KeyAlg::RsaOaep | KeyAlg::RsaOaep256, DecryptionKey::Rsa(k)) => {
            let algorithm = if jwe.alg == KeyAlg::RsaOaep {
                &OAEP_SHA1_MGF1SHA1
            } else {
                &OAEP_SHA256_MGF1SHA256
            };
            let mut out = Zeroizing::new(vec![0u8; k.min_output_size()]);
            let len = k
                .decrypt(algorithm, &jwe.encrypted_key, &mut out, None)
                .map_err(|_| Undecryptable)?
                .len();
            out.truncate(len);
            out
        }
        (a, DecryptionKey::Ec(k)) if a.is_ecdh() => {
            let (id, len) = match a {
                KeyAlg::EcdhEs => (jwe.enc.name(), jwe.enc.key_len()),
                KeyAlg::EcdhEsA128Kw => (a.name(), 16),
                _ => (a.name(), 32),
            };
            let agreed = agree(jwe, k, id, len)?;
            if a == KeyAlg::EcdhEs {
                agreed
            } else {
                unwrap_key(&agreed, &jwe.encrypted_key)?
            }
        }
        _ => return Err(Undecryptable),
    };
    // Whatever the key management, the key must be the method's size (RFC 7516 §5.2
    // step 10 leaves the comparison to the method; a wrong size never decrypts).
    if cek.len() == jwe.enc.key_len() {
        Ok(cek)
    } else {
        Err(Undecryptable)
    }
}

/// AES key unwrap (RFC 3394) of `wrapped` under `kek` (16 or 32 bytes).
fn unwrap_key(kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, Undecryptable> {
    let cipher = match kek.len() {
        16 => &key_wrap::AES_128,
        32 => &key_wrap::AES_256,
        _ => return Err(Undecryptable),
    };
    let kek = AesKek::new(cipher, kek).map_err(|_| Undecryptable)?;
    let mut out = Zeroizing::new(vec![0u8; wrapped.len().saturating_sub(8)]);
    let len = kek
        .unwrap(wrapped, &mut out)
        .map_err(|_| Undecryptable)?
        .len();
    out.truncate(len);
    Ok(out)
}

/// ECDH-ES (RFC 7518 §4.6): Z from our key and the header's `epk` (refused unless on
/// our key's curve), then the Concat KDF with `AlgorithmID` `id`, `apu`, `apv` and
/// `keydatalen` `len` bytes.
fn agree(
    jwe: &Jwe<'_>,
    key: &PrivateKey,
    id: &str,
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, Undecryptable> {
    let epk = jwe.epk.as_ref().ok_or(Undecryptable)?;
    let (alg, okp) = curve(epk).ok_or(Undecryptable)?;
    if alg != key.algorithm() {
        return Err(Undecryptable);
    }
    let coord = |name: &str| {
        epk.get(name)
            .and_then(Value::as_str)
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
            .ok_or(Undecryptable)
    };
    let point = if okp {
        coord("x")?
    } else {
        let (x, y) = (coord("x")?, coord("y")?);
        let mut p = Vec::with_capacity(1 + x.len() + y.len());
        p.push(4);
        p.extend_from_slice(&x);
        p.extend_from_slice(&y);
        p
    };
    let peer = UnparsedPublicKey::new(alg, point);
    let mut other_info = Vec::with_capacity(64);
    for field in [id.as_bytes(), &jwe.apu, &jwe.apv] {
        let n = u32::try_from(field.len()).map_err(|_| Undecryptable)?;
        other_info.extend_from_slice(&n.to_be_bytes());
        other_info.extend_from_slice(field);
    }
    let bits = u32::try_from(len * 8).map_err(|_| Undecryptable)?;
    other_info.extend_from_slice(&bits.to_be_bytes());
    let sha256 = kdf::get_sskdf_digest_algorithm(kdf::SskdfDigestAlgorithmId::Sha256)
        .ok_or(Undecryptable)?;
    agreement::agree(key, peer, Undecryptable, |z| {
        let mut out = Zeroizing::new(vec![0u8; len]);
        kdf::sskdf_digest(sha256, z, &other_info, &mut out).map_err(|_| Undecryptable)?;
        Ok(out)
    })
}

/// AES-GCM open with a prepared key: ciphertext ‖ tag in one buffer, opened in place.
pub(super) fn open_gcm(jwe: &Jwe<'_>, key: &LessSafeKey) -> Result<Vec<u8>, Undecryptable> {
    let nonce = Nonce::try_assume_unique_for_key(&jwe.iv).map_err(|_| Undecryptable)?;
    if jwe.tag.len() != 16 {
        return Err(Undecryptable);
    }
    let mut in_out = Vec::with_capacity(jwe.ciphertext.len() + 16);
    in_out.extend_from_slice(&jwe.ciphertext);
    in_out.extend_from_slice(&jwe.tag);
    let len = key
        .open_in_place(nonce, Aad::from(jwe.aad.as_bytes()), &mut in_out)
        .map_err(|_| Undecryptable)?
        .len();
    in_out.truncate(len);
    Ok(in_out)
}

/// Decrypts the content with `cek` (RFC 7518 §5.2.2.2, §5.3).
pub(super) fn open(jwe: &Jwe<'_>, cek: &[u8]) -> Result<Vec<u8>, Undecryptable> {
    let aad = jwe.aad.as_bytes();
    match jwe.enc {
        Enc::A128Gcm | Enc::A256Gcm => {
            let alg = if jwe.enc == Enc::A128Gcm {
                &aead::AES_128_GCM
            } else {
                &aead::AES_256_GCM
            };
            let key = LessSafeKey::new(UnboundKey::new(alg, cek).map_err(|_| Undecryptable)?);
            open_gcm(jwe, &key)
        }
        Enc::A128CbcHs256 | Enc::A256CbcHs512 => {
            let half = cek.len() / 2;
            let (mac_key, enc_key) = cek.split_at(half);
            let (hmac_alg, cipher) = if jwe.enc == Enc::A128CbcHs256 {
                (hmac::HMAC_SHA256, &AES_128)
            } else {
                (hmac::HMAC_SHA512, &AES_256)
            };
            // The tag first, over AAD ‖ IV ‖ ciphertext ‖ AL (the AAD's length in bits,
            // 64-bit big-endian), truncated to half the MAC: before any decryption.
            let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac_alg, mac_key));
            ctx.update(aad);
            ctx.update(&jwe.iv);
            ctx.update(&jwe.ciphertext);
            let al = u64::try_from(aad.len())
                .map_err(|_| Undecryptable)?
                .saturating_mul(8);
            ctx.update(&al.to_be_bytes());
            let mac = ctx.sign();
            let expected = mac.as_ref().get(..half).ok_or(Undecryptable)?;
            if jwe.tag.len() != half
                || constant_time::verify_slices_are_equal(expected, &jwe.tag).is_err()
            {
                return Err(Undecryptable);
            }
            let iv: [u8; 16] = jwe.iv.as_slice().try_into().map_err(|_| Undecryptable)?;
            let key = PaddedBlockDecryptingKey::cbc_pkcs7(
                UnboundCipherKey::new(cipher, enc_key).map_err(|_| Undecryptable)?,
            )
            .map_err(|_| Undecryptable)?;
            let mut in_out = jwe.ciphertext.clone();
            let len = key
                .decrypt(&mut in_out, DecryptionContext::Iv128(FixedLength::from(iv)))
                .map_err(|_| Undecryptable)?
                .len();
            in_out.truncate(len);
            Ok(in_out)
        }
    }
}
