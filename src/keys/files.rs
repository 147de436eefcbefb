//! Local key files: `jwks_file` (a JWK set, `oct` keys allowed) and `pem_file` (a PEM
//! public key or certificate). Files are re-read by content, so an atomic symlink swap
//! (Kubernetes Secret and ConfigMap volumes) is seen like an in-place write; a file that
//! no longer parses keeps the last good keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::digest;
use x509_parser::pem::Pem;

use super::{KeyMaterial, LoadedKey, SourceError, SourceKeys, SourceKind, jwks};
use crate::jwe::DecryptionKey;

/// Largest key file read.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// A local file source and the digest of what it last loaded.
#[derive(Debug)]
pub struct FileSource {
    /// The file.
    pub path: PathBuf,
    kind: FileKind,
    last_digest: Option<[u8; 32]>,
}

#[derive(Debug, Clone)]
enum FileKind {
    Jwks,
    Pem {
        kid: String,
    },
    /// A private key that decrypts (the `decryption` section, SPEC §10).
    PrivatePem {
        kid: String,
    },
}

// === impl FileSource ===

impl FileSource {
    /// A JWKS file source.
    pub fn jwks(path: PathBuf) -> Self {
        Self {
            path,
            kind: FileKind::Jwks,
            last_digest: None,
        }
    }

    /// A PEM file source whose key is known as `kid`.
    pub fn pem(path: PathBuf, kid: String) -> Self {
        Self {
            path,
            kind: FileKind::Pem { kid },
            last_digest: None,
        }
    }

    /// A PEM file source holding a private key (PKCS #8, RSA or EC) that decrypts JWEs,
    /// known as `kid`.
    pub fn private_pem(path: PathBuf, kid: String) -> Self {
        Self {
            path,
            kind: FileKind::PrivatePem { kid },
            last_digest: None,
        }
    }

    /// The source kind.
    pub fn kind(&self) -> SourceKind {
        match self.kind {
            FileKind::Jwks => SourceKind::JwksFile,
            FileKind::Pem { .. } | FileKind::PrivatePem { .. } => SourceKind::Pem,
        }
    }

    /// Reads the file. `Ok(None)`: unchanged since the last successful load.
    pub fn reload(&mut self) -> Result<Option<SourceKeys>, SourceError> {
        let bytes = read_limited(&self.path)?;
        let d = digest::digest(&digest::SHA256, &bytes);
        let mut sum = [0u8; 32];
        sum.copy_from_slice(d.as_ref());
        if self.last_digest == Some(sum) {
            return Ok(None);
        }
        let keys = match &self.kind {
            FileKind::Jwks => {
                let set = jwks::parse_set(&bytes, true)
                    .map_err(|e| SourceError::Invalid(e.to_string()))?;
                for s in &set.skipped {
                    tracing::warn!(file = %self.path.display(), skipped = %s, "key skipped");
                }
                if set.keys.is_empty() {
                    return Err(SourceError::NoUsableKeys(set.skipped));
                }
                set.keys
            }
            FileKind::Pem { kid } => vec![parse_pem(&bytes, kid)?],
            FileKind::PrivatePem { kid } => vec![parse_private_pem(&bytes, kid)?],
        };
        self.last_digest = Some(sum);
        Ok(Some(SourceKeys {
            missing: Vec::new(),
            kind: self.kind(),
            keys,
            fetched_at: None,
        }))
    }
}

/// Reads a file of at most [`MAX_FILE_BYTES`].
pub fn read_limited(path: &Path) -> Result<Vec<u8>, SourceError> {
    let err = |reason: String| SourceError::Read {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_file() {
        // A FIFO would block the reload forever, /dev/zero would never end.
        return Err(err("not a regular file".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(err(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    // The size can change between the two calls: read at most one byte more than allowed.
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(err(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    Ok(bytes)
}

/// The first `PRIVATE KEY` (PKCS #8) block of a PEM document, as a decryption key with
/// its public half's material. Errors never echo the key.
pub fn parse_private_pem(bytes: &[u8], kid: &str) -> Result<LoadedKey, SourceError> {
    for pem in Pem::iter_from_buffer(bytes) {
        let pem = pem.map_err(|_| SourceError::Invalid("not a PEM document".into()))?;
        if pem.label != "PRIVATE KEY" {
            continue;
        }
        let (key, material) = DecryptionKey::from_pkcs8(&pem.contents)
            .map_err(|reason| SourceError::Invalid(format!("the private key: {reason}")))?;
        return Ok(LoadedKey {
            id: kid.to_string(),
            material: Arc::new(material),
            alg: None,
            foreign_alg: None,
            for_verification: false,
            validity: None,
            active: false,
            decryption: Some(Arc::new(key)),
        });
    }
    Err(SourceError::Invalid(
        "no PRIVATE KEY (PKCS #8) block in the PEM document (convert with `openssl pkcs8 -topk8 -nocrypt`)".into(),
    ))
}

/// The first public key or certificate in a PEM document.
pub fn parse_pem(bytes: &[u8], kid: &str) -> Result<LoadedKey, SourceError> {
    for pem in Pem::iter_from_buffer(bytes) {
        let pem = pem.map_err(|_| SourceError::Invalid("not a PEM document".into()))?;
        let (material, validity) = match pem.label.as_str() {
            "PUBLIC KEY" => (KeyMaterial::from_spki_der(&pem.contents), None),
            "CERTIFICATE" => match KeyMaterial::from_certificate_der(&pem.contents) {
                Ok((m, v)) => (Ok(m), Some(v)),
                Err(e) => (Err(e), None),
            },
            // Never parse (or echo) private keys: a verifier needs the public half only.
            l if l.contains("PRIVATE") => {
                return Err(SourceError::Invalid(
                    "the PEM holds a private key; give the public key or the certificate".into(),
                ));
            }
            _ => continue,
        };
        let material = material.map_err(|e| SourceError::Invalid(e.to_string()))?;
        return Ok(LoadedKey {
            id: kid.to_string(),
            material: Arc::new(material),
            alg: None,
            foreign_alg: None,
            for_verification: true,
            validity,
            active: false,
            decryption: None,
        });
    }
    Err(SourceError::Invalid(
        "no PUBLIC KEY or CERTIFICATE block in the PEM document".into(),
    ))
}
