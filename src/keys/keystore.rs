//! The PKCS#12 keystore key source, after PingGateway's `KeyStoreSecretStore`: it opens a
//! keystore with its store password and publishes the entries an ordered alias mapping
//! names, the first alias active and every alias valid. Entries may be private keys with
//! their certificate chain (the leaf certificate's public key is used), trusted
//! certificates, or HMAC secret keys. The keystore is re-read by content and password, so
//! a rewritten file or a changed password reloads it. An alias the file does not hold
//! (yet) is reported `missing` and the others load: in Kubernetes the ConfigMap naming a
//! new alias and the Secret holding it are updated separately, and a pod that restarts
//! between the two must keep serving. Any other problem (wrong password, an unusable
//! entry, an alias matching two entries, no alias at all in the file) fails the whole
//! reload and the caller keeps the last good keys. Passwords and key bytes never appear
//! in errors, logs or `Debug` output.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use p12_keystore::error::Error as P12Error;
use p12_keystore::secret::{Secret, SecretKeyType};
use p12_keystore::{Certificate, Pkcs12Archive, PrivateKey};

use crate::jwe::DecryptionKey;

use super::files::read_limited;
use super::{KeyMaterial, LoadedKey, SourceError, SourceKeys, SourceKind, Validity};
use crate::config::{PasswordEncoding, PasswordSource};

/// Standard base64 alphabet, padding optional (the SystemAndEnvSecretStore format).
const PASSWORD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An environment lookup (the same type as `crate::app::EnvLookup`).
type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A PKCS#12 keystore with an alias mapping, and the digest of what it last loaded.
pub struct KeystoreSource {
    path: PathBuf,
    password: PasswordSource,
    encoding: PasswordEncoding,
    aliases: Vec<String>,
    env: EnvLookup,
    last_digest: Option<[u8; 32]>,
    /// Loads decryption keys (SPEC §10).
    decrypting: bool,
}

/// A store password. Deliberately neither `Debug` nor `Display`.
struct Password(String);

// === impl KeystoreSource ===

impl KeystoreSource {
    /// A keystore source publishing `aliases` (active first) from the PKCS#12 file at
    /// `path`. `env` looks up environment variables (injected so tests never call
    /// `set_var`).
    pub fn new(
        path: PathBuf,
        password: PasswordSource,
        encoding: PasswordEncoding,
        aliases: Vec<String>,
        env: EnvLookup,
    ) -> Self {
        Self {
            path,
            password,
            encoding,
            aliases,
            env,
            last_digest: None,
            decrypting: false,
        }
    }

    /// The same source for decryption keys (SPEC §10): every secret-key entry (HMAC or
    /// AES) and every private-key entry (with or without a certificate) loads with its
    /// decrypting half; a trusted certificate cannot decrypt and fails the alias.
    #[must_use]
    pub fn for_decryption(mut self) -> Self {
        self.decrypting = true;
        self
    }

    /// The keystore file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the keystore. `Ok(None)`: file and password unchanged since the last
    /// successful load.
    pub fn reload(&mut self) -> Result<Option<SourceKeys>, SourceError> {
        let bytes = read_limited(&self.path)?;
        let password = self.password()?;
        let sum = content_digest(&bytes, &password);
        if self.last_digest == Some(sum) {
            return Ok(None);
        }
        let (keys, missing) = self.load(&bytes, &password)?;
        self.last_digest = Some(sum);
        Ok(Some(SourceKeys {
            kind: SourceKind::Keystore,
            keys,
            missing,
            fetched_at: None,
        }))
    }

    /// The store password, from the environment or a file, decoded.
    fn password(&self) -> Result<Password, SourceError> {
        let (raw, origin) = match &self.password {
            PasswordSource::Env(name) => {
                let value = (self.env)(name).ok_or_else(|| {
                    SourceError::Invalid(format!(
                        "keystore {}: environment variable {name} (password_env) is not set",
                        self.path.display()
                    ))
                })?;
                (value, format!("environment variable {name}"))
            }
            PasswordSource::File(file) => {
                let bytes = read_limited(file)?;
                let origin = format!("password file {}", file.display());
                let mut text = String::from_utf8(bytes).map_err(|_| {
                    SourceError::Invalid(format!(
                        "keystore {}: {origin} is not UTF-8",
                        self.path.display()
                    ))
                })?;
                if text.ends_with('\n') {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                (text, origin)
            }
        };
        match self.encoding {
            PasswordEncoding::Plain => Ok(Password(raw)),
            PasswordEncoding::Base64 => {
                // The decoder's error names the offending byte: never pass it on.
                let bytes = PASSWORD_BASE64.decode(raw.trim()).map_err(|_| {
                    SourceError::Invalid(format!(
                        "keystore {}: {origin} is not base64 (password_encoding is \"base64\")",
                        self.path.display()
                    ))
                })?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    SourceError::Invalid(format!(
                        "keystore {}: the base64 password in {origin} does not decode to UTF-8",
                        self.path.display()
                    ))
                })?;
                Ok(Password(text))
            }
        }
    }

    /// Opens the keystore and resolves every alias of the mapping, in order: the keys it
    /// holds (the first of them active) and the aliases it does not hold. At least one
    /// alias must load.
    fn load(
        &self,
        bytes: &[u8],
        password: &Password,
    ) -> Result<(Vec<LoadedKey>, Vec<String>), SourceError> {
        let archive = Pkcs12Archive::from_pkcs12(bytes, &password.0)
            .map_err(|e| open_error(&self.path, &e))?;
        let entries = java_entries(&archive);
        let mut keys: Vec<LoadedKey> = Vec::with_capacity(self.aliases.len());
        let mut missing = Vec::new();
        for alias in &self.aliases {
            let Some(entry) = find_entry(&entries, alias, &self.path)? else {
                missing.push(alias.clone());
                continue;
            };
            let loaded = if self.decrypting {
                decrypting_entry(entry)
            } else {
                entry_material(entry)
                    .map(|(material, validity)| (material, validity, entry_decryption(entry)))
            };
            let (material, validity, decryption) = loaded.map_err(|reason| {
                SourceError::Invalid(format!(
                    "alias \"{alias}\" in {}: {reason}",
                    self.path.display()
                ))
            })?;
            let decryption = decryption.map(Arc::new);
            keys.push(LoadedKey {
                id: alias.clone(),
                material: Arc::new(material),
                alg: None,
                foreign_alg: None,
                for_verification: true,
                validity,
                active: keys.is_empty(),
                decryption,
            });
        }
        if keys.is_empty() {
            return Err(SourceError::Invalid(format!(
                "none of the aliases {:?} is in {} ({})",
                self.aliases,
                self.path.display(),
                holds(&entries)
            )));
        }
        if !missing.is_empty() {
            tracing::warn!(
                keystore = %self.path.display(),
                missing = ?missing,
                holds = %holds(&entries),
                "aliases of the mapping are not in the keystore (yet): reported as missing; the others load"
            );
        }
        Ok((keys, missing))
    }
}

impl fmt::Debug for KeystoreSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password source is a variable name or a file path, never the password.
        f.debug_struct("KeystoreSource")
            .field("path", &self.path)
            .field("password", &self.password)
            .field("encoding", &self.encoding)
            .field("aliases", &self.aliases)
            .finish_non_exhaustive()
    }
}

/// SHA-256 over the file and the password, so a password change reloads too.
fn content_digest(bytes: &[u8], password: &Password) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&(bytes.len() as u64).to_be_bytes());
    ctx.update(bytes);
    ctx.update(password.0.as_bytes());
    let mut sum = [0u8; 32];
    sum.copy_from_slice(ctx.finish().as_ref());
    sum
}

/// Why the PKCS#12 file did not open. The library's errors never hold the password.
fn open_error(path: &Path, e: &P12Error) -> SourceError {
    let reason = match e {
        P12Error::UnsupportedEncryptionScheme
        | P12Error::UnsupportedMacAlgorithm
        | P12Error::UnsupportedContentType
        | P12Error::UnsupportedCertificateType
        | P12Error::InvalidParameters => "unsupported PKCS#12 protection or content",
        _ => "wrong password or not a PKCS#12 file",
    };
    SourceError::Invalid(format!(
        "cannot open keystore {}: {reason} ({e})",
        path.display()
    ))
}

/// What a keystore holds, for messages: "it has: a, b" or "it has no entries".
fn holds(entries: &[(String, Entry<'_>)]) -> String {
    if entries.is_empty() {
        return "it has no entries".to_string();
    }
    let names: Vec<String> = entries
        .iter()
        .map(|(name, _)| name.escape_debug().to_string())
        .collect();
    format!("it has: {}", names.join(", "))
}

/// One keystore entry as Java's PKCS12 keystore (and so PingGateway) sees it.
enum Entry<'a> {
    /// A private key; its leaf certificate (if the file has it) holds the public key.
    PrivateKey {
        /// The key, PKCS #8.
        key: &'a PrivateKey,
        /// Its leaf certificate.
        leaf: Option<&'a Certificate>,
    },
    /// A trusted certificate.
    TrustedCert(&'a Certificate),
    /// A secret key.
    Secret(&'a Secret),
}

/// The archive's entries with their aliases, in Java's model: every private key (with the
/// certificate of the same `localKeyID` as its leaf), every certificate that carries
/// Java's trusted-certificate attribute, and every secret key. Other certificates (CA
/// certificates of a key's chain) are not entries.
///
/// Unlike `p12_keystore::KeyStore`'s strict import, a trusted certificate that also has a
/// `localKeyID` stays an entry: keytool writes one (`01`) when it rewrites a store that
/// held exactly one private key (e.g. `keytool -delete` of that key).
fn java_entries(archive: &Pkcs12Archive) -> Vec<(String, Entry<'_>)> {
    let mut entries = Vec::new();
    let single_key = archive.keys.len() == 1;
    for key in &archive.keys {
        let leaf = match &key.local_key_id {
            Some(id) => {
                let mut same_id = archive
                    .certs
                    .iter()
                    .filter(|c| c.local_key_id.as_deref().is_some_and(|k| k == id.as_ref()));
                let first = same_id.clone().next();
                same_id.find(|c| !c.trusted).or(first)
            }
            // Java's workaround for files without localKeyIDs: with one private key, the
            // certificates without an ID are its chain (the first is the leaf).
            None if single_key => archive
                .certs
                .iter()
                .find(|c| c.local_key_id.is_none() && !c.trusted),
            None => None,
        };
        let alias = key
            .friendly_name
            .clone()
            .or_else(|| leaf.map(|c| c.cert.subject().to_string()))
            .or_else(|| key.local_key_id.as_ref().map(|id| hex(id.as_ref())))
            .unwrap_or_default();
        entries.push((
            alias,
            Entry::PrivateKey {
                key: &key.key,
                leaf: leaf.map(|c| &c.cert),
            },
        ));
    }
    for cert in archive.certs.iter().filter(|c| c.trusted) {
        let alias = cert
            .friendly_name
            .clone()
            .unwrap_or_else(|| cert.cert.subject().to_string());
        entries.push((alias, Entry::TrustedCert(&cert.cert)));
    }
    for secret in &archive.secrets {
        let alias = secret
            .friendly_name
            .clone()
            .unwrap_or_else(|| hex(secret.key.local_key_id().as_ref()));
        entries.push((alias, Entry::Secret(&secret.key)));
    }
    entries
}

/// Lower-case hex, for entries without a friendly name.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The entry for `alias`: the one whose name is exactly `alias`, else the one whose name
/// equals it ignoring case (keytool lowercases aliases, OpenSSL keeps `-name` as given).
/// Two candidates at the same level are an error rather than a guess.
/// The entry `alias` names: exactly, else the one entry whose alias is equal ignoring
/// case (keytool lower-cases aliases). `None` when the keystore holds no such entry.
fn find_entry<'e, 'a>(
    entries: &'e [(String, Entry<'a>)],
    alias: &str,
    path: &Path,
) -> Result<Option<&'e Entry<'a>>, SourceError> {
    let wanted = alias.to_lowercase();
    let exact: Vec<_> = entries.iter().filter(|(name, _)| name == alias).collect();
    let hits = if exact.is_empty() {
        entries
            .iter()
            .filter(|(name, _)| name.to_lowercase() == wanted)
            .collect()
    } else {
        exact
    };
    match hits.as_slice() {
        [(_, entry)] => Ok(Some(entry)),
        [] => Ok(None),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|(name, _)| name.escape_debug().to_string())
                .collect();
            Err(SourceError::Invalid(format!(
                "alias \"{alias}\" matches {} entries of {} ({})",
                many.len(),
                path.display(),
                names.join(", ")
            )))
        }
    }
}

/// The verifying material of one entry, and its certificate's validity.
fn entry_material(entry: &Entry<'_>) -> Result<(KeyMaterial, Option<Validity>), String> {
    match entry {
        Entry::PrivateKey { leaf: None, .. } => Err(
            "the private key has no certificate in the keystore (its public key is needed)".into(),
        ),
        Entry::PrivateKey {
            leaf: Some(cert), ..
        }
        | Entry::TrustedCert(cert) => {
            let (material, validity) =
                KeyMaterial::from_certificate_der(cert.as_der()).map_err(|e| e.to_string())?;
            Ok((material, Some(validity)))
        }
        Entry::Secret(secret) => match secret.key_type() {
            SecretKeyType::HmacSha1
            | SecretKeyType::HmacSha224
            | SecretKeyType::HmacSha256
            | SecretKeyType::HmacSha384
            | SecretKeyType::HmacSha512 => {
                let material = KeyMaterial::hmac(secret.key()).map_err(|e| e.to_string())?;
                Ok((material, None))
            }
            other => Err(format!(
                "a secret key of type {} is not an HMAC key",
                secret_type_name(other)
            )),
        },
    }
}

/// The decrypting key of one entry (SPEC §10): a secret key as is (`dir`, `A*KW`), a
/// private key (RSA-OAEP, ECDH-ES); `None` for a trusted certificate or a private key of
/// another kind (it still verifies through its certificate).
fn entry_decryption(entry: &Entry<'_>) -> Option<DecryptionKey> {
    match entry {
        Entry::Secret(secret) => Some(DecryptionKey::secret(secret.key())),
        Entry::PrivateKey { key, .. } => {
            DecryptionKey::from_pkcs8(key.as_der()).ok().map(|(k, _)| k)
        }
        Entry::TrustedCert(_) => None,
    }
}

/// A decryption key entry: its public (or, for a secret, HMAC) material for the
/// inventory's thumbprint, its certificate's validity, and the key that decrypts.
fn decrypting_entry(
    entry: &Entry<'_>,
) -> Result<(KeyMaterial, Option<Validity>, Option<DecryptionKey>), String> {
    match entry {
        Entry::Secret(secret) => {
            let material = KeyMaterial::hmac(secret.key()).map_err(|e| e.to_string())?;
            Ok((material, None, Some(DecryptionKey::secret(secret.key()))))
        }
        Entry::PrivateKey { key, leaf } => {
            let (decryption, material) = DecryptionKey::from_pkcs8(key.as_der())?;
            let validity = leaf
                .as_ref()
                .and_then(|c| KeyMaterial::from_certificate_der(c.as_der()).ok())
                .map(|(_, v)| v);
            Ok((material, validity, Some(decryption)))
        }
        Entry::TrustedCert(_) => {
            Err("a trusted certificate holds no private key: it cannot decrypt".into())
        }
    }
}

/// A secret key type's name, for errors.
fn secret_type_name(t: SecretKeyType) -> String {
    match t {
        SecretKeyType::Unknown(oid) => format!("OID {oid}"),
        known => format!("{known:?}"),
    }
}

#[cfg(test)]
mod tests {
    // Every keystore here is a committed fixture of tests/fixtures/keystores/, made once
    // by the real keytool and openssl (make.sh there names the command behind each
    // file); no test runs a tool.

    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use x509_parser::pem::parse_x509_pem;

    use super::*;
    use crate::alg::{Alg, Kty};

    /// The certificate of every RSA fixture entry (`openssl req -x509 -newkey rsa:2048`).
    const CERT: &str = "x509certificate.pem";
    /// The certificate of openssl-ec.p12's entry (`-newkey ec`, P-256).
    const EC_CERT: &str = "ec-x509certificate.pem";
    /// How long the fixture certificates are valid (make.sh: `-days 36500`).
    const CERT_DAYS: i64 = 36_500;

    /// DER of the PBES2 OID (1.2.840.113549.1.5.13).
    const PBES2: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d,
    ];
    /// DER of the AES-256-CBC OID (2.16.840.1.101.3.4.1.42).
    const AES_256_CBC: &[u8] = &[
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a,
    ];
    /// DER of the pbeWithSHAAnd40BitRC2-CBC OID (1.2.840.113549.1.12.1.6).
    const PBE_SHA1_RC2_40: &[u8] = &[
        0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x06,
    ];
    /// DER of the pbeWithSHAAnd3-KeyTripleDES-CBC OID (1.2.840.113549.1.12.1.3).
    const PBE_SHA1_3DES: &[u8] = &[
        0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03,
    ];

    /// A file of tests/fixtures/keystores/ (see make.sh there for what each one is).
    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keystores")
            .join(name)
    }

    /// The bytes of a fixture file.
    fn fixture_bytes(name: &str) -> Vec<u8> {
        std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// True when `file` holds the DER-encoded OID `oid` (tag, length, value): PKCS#12
    /// algorithm identifiers are not encrypted, so this pins which protection a fixture
    /// was made with, without a tool.
    fn has_oid(file: &[u8], oid: &[u8]) -> bool {
        file.windows(oid.len()).any(|w| w == oid)
    }

    /// A unique temporary directory, removed when dropped (also when a test fails).
    struct TempDir(PathBuf);

    impl TempDir {
        /// Creates it, `name` in its name.
        fn new(name: &str) -> Self {
            static SEQ: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "tokengate-keystore-{name}-{}-{nanos}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            Self(dir)
        }

        /// A path inside it.
        fn path(&self, file: &str) -> PathBuf {
            self.0.join(file)
        }

        /// Copies the fixture `name` to `file` inside it (replacing what was there), for a
        /// test that rewrites its keystore; returns the copy's path.
        fn copy_fixture(&self, name: &str, file: &str) -> PathBuf {
            let to = self.path(file);
            std::fs::copy(fixture(name), &to)
                .unwrap_or_else(|e| panic!("copy {name} to {}: {e}", to.display()));
            to
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// An environment lookup that knows exactly `vars`.
    fn env_with(vars: &[(&str, &str)]) -> EnvLookup {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Arc::new(move |name| map.get(name).cloned())
    }

    /// A source whose password is the plain value of `KS_PASSWORD`.
    fn plain_source(path: PathBuf, password: &str, aliases: &[&str]) -> KeystoreSource {
        KeystoreSource::new(
            path,
            PasswordSource::Env("KS_PASSWORD".into()),
            PasswordEncoding::Plain,
            aliases.iter().map(|a| a.to_string()).collect(),
            env_with(&[("KS_PASSWORD", password)]),
        )
    }

    /// A reload that must publish keys.
    fn load(src: &mut KeystoreSource) -> SourceKeys {
        match src.reload() {
            Ok(Some(keys)) => keys,
            Ok(None) => panic!("{}: unexpectedly unchanged", src.path().display()),
            Err(e) => panic!("{}: {e}", src.path().display()),
        }
    }

    /// A reload that must fail; its error text.
    fn load_err(src: &mut KeystoreSource) -> String {
        match src.reload() {
            Ok(k) => panic!("{}: expected an error, got {k:?}", src.path().display()),
            Err(e) => e.to_string(),
        }
    }

    /// The public key and validity of a fixture certificate, parsed from its PEM.
    fn cert_material(name: &str) -> (KeyMaterial, Validity) {
        let pem = fixture_bytes(name);
        let (_, pem) = parse_x509_pem(&pem).unwrap_or_else(|e| panic!("{name}: {e}"));
        KeyMaterial::from_certificate_der(&pem.contents).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// `keys` is the one RSA `signature-key` entry of `CERT`, with its validity.
    fn assert_signature_key(keys: &SourceKeys) {
        assert_eq!(keys.kind, SourceKind::Keystore);
        assert!(keys.fetched_at.is_none());
        assert_eq!(keys.keys.len(), 1);
        let k = &keys.keys[0];
        assert_eq!(k.id, "signature-key");
        assert!(k.active);
        assert!(k.for_verification);
        assert!(k.alg.is_none() && k.foreign_alg.is_none());
        assert_eq!(k.material.kty(), Kty::Rsa);
        assert!(k.material.fits(Alg::RS256));
        let (want, want_validity) = cert_material(CERT);
        assert_eq!(k.material.thumbprint(), want.thumbprint());
        let v = k.validity.expect("no validity");
        assert_eq!(v, want_validity);
        let span = v.not_after - v.not_before;
        assert!(
            (span - CERT_DAYS * 86_400).abs() <= 60,
            "validity spans {span}s"
        );
    }

    /// Case 1: OpenSSL 3 defaults (PBES2 AES-256-CBC, PBKDF2-HMAC-SHA256, HMAC-SHA256 MAC):
    /// a private key with its certificate, as the PingGateway docs create it
    /// (openssl.p12: `openssl pkcs12 -export -name signature-key`).
    #[test]
    fn openssl_private_key_entry_loads_with_certificate_validity() {
        let bytes = fixture_bytes("openssl.p12");
        assert!(
            has_oid(&bytes, PBES2) && has_oid(&bytes, AES_256_CBC),
            "openssl.p12 is not PBES2 with AES-256-CBC"
        );
        let mut src = plain_source(fixture("openssl.p12"), "password", &["signature-key"]);
        assert_signature_key(&load(&mut src));
    }

    /// Case 2: Legacy files: RC2-40 certificates and 3DES keys with a SHA-1 MAC
    /// (`openssl pkcs12 -export -legacy`), and 3DES throughout.
    #[test]
    fn legacy_openssl_files_load() {
        let legacy = fixture_bytes("openssl-legacy.p12");
        assert!(
            has_oid(&legacy, PBE_SHA1_RC2_40),
            "openssl-legacy.p12 is not an RC2 file"
        );
        let mut src = plain_source(
            fixture("openssl-legacy.p12"),
            "password",
            &["signature-key"],
        );
        assert_signature_key(&load(&mut src));

        let des = fixture_bytes("openssl-3des.p12");
        assert!(
            has_oid(&des, PBE_SHA1_3DES)
                && !has_oid(&des, PBE_SHA1_RC2_40)
                && !has_oid(&des, PBES2),
            "openssl-3des.p12 is not 3DES throughout"
        );
        let mut src = plain_source(fixture("openssl-3des.p12"), "password", &["signature-key"]);
        assert_signature_key(&load(&mut src));
    }

    /// An EC P-256 key pair exported by OpenSSL loads as an EC key.
    #[test]
    fn ec_private_key_entry_loads() {
        let mut src = plain_source(fixture("openssl-ec.p12"), "password", &["signature-key"]);
        let keys = load(&mut src);
        assert_eq!(keys.keys[0].material.kty(), Kty::Ec);
        assert!(keys.keys[0].material.fits(Alg::ES256));
        assert_eq!(
            keys.keys[0].material.thumbprint(),
            cert_material(EC_CERT).0.thumbprint()
        );
    }

    /// Case 3: keytool secret keys (`-genseckey -keyalg HmacSHA512 -keysize 512`) load as HMAC
    /// (keytool-hmac.p12, made by that command).
    #[test]
    fn keytool_hmac_secret_key_loads() {
        let mut src = plain_source(fixture("keytool-hmac.p12"), "password", &["symmetric-key"]);
        let keys = load(&mut src);
        assert_eq!(keys.keys.len(), 1);
        let k = &keys.keys[0];
        assert_eq!(k.id, "symmetric-key");
        assert!(k.active);
        assert_eq!(k.material.kty(), Kty::Oct);
        assert!(k.material.fits(Alg::HS512));
        assert!(k.material.fits(Alg::HS256));
        assert!(!k.material.fits(Alg::RS256));
        assert!(k.validity.is_none());
    }

    /// Case 4: A trusted-certificate entry (`keytool -import -trustcacerts`, keytool-trusted.p12)
    /// loads with the certificate's public key and validity.
    #[test]
    fn keytool_trusted_certificate_entry_loads() {
        let mut src = plain_source(
            fixture("keytool-trusted.p12"),
            "password",
            &["verification-key"],
        );
        let keys = load(&mut src);
        assert_eq!(keys.keys.len(), 1);
        let k = &keys.keys[0];
        assert_eq!(k.id, "verification-key");
        assert_eq!(k.material.kty(), Kty::Rsa);
        let (want, validity) = cert_material(CERT);
        assert_eq!(k.material.thumbprint(), want.thumbprint());
        assert_eq!(k.validity, Some(validity));
    }

    /// Case 5: After `keytool -importkeystore` (keytool-trusted-and-key.p12), the mapping
    /// order is the output order (first active), and aliases match ignoring case (the id is
    /// the alias as configured).
    #[test]
    fn mapping_order_and_case_insensitive_aliases() {
        let store = fixture("keytool-trusted-and-key.p12");
        let mut src = plain_source(
            store.clone(),
            "password",
            &["verification-key", "signature-key"],
        );
        let keys = load(&mut src);
        let ids: Vec<&str> = keys.keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["verification-key", "signature-key"]);
        assert!(keys.keys[0].active);
        assert!(!keys.keys[1].active);
        assert!(keys.keys.iter().all(|k| k.for_verification));

        let mut src = plain_source(
            store.clone(),
            "password",
            &["signature-key", "verification-key"],
        );
        let keys = load(&mut src);
        let ids: Vec<&str> = keys.keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["signature-key", "verification-key"]);
        assert!(keys.keys[0].active && !keys.keys[1].active);

        let mut src = plain_source(store, "password", &["SIGNATURE-KEY"]);
        let keys = load(&mut src);
        assert_eq!(keys.keys.len(), 1);
        assert_eq!(keys.keys[0].id, "SIGNATURE-KEY");
        assert!(keys.keys[0].active);
        assert_eq!(
            keys.keys[0].material.thumbprint(),
            cert_material(CERT).0.thumbprint()
        );

        // keytool stores aliases lower-cased: "Symmetric-Key" (keytool -genseckey into the
        // same store, keytool-trusted-key-and-secret.p12) is written as "symmetric-key",
        // and the mapping's spelling still finds it.
        let mut src = plain_source(
            fixture("keytool-trusted-key-and-secret.p12"),
            "password",
            &["Symmetric-Key", "verification-key", "signature-key"],
        );
        let keys = load(&mut src);
        let ids: Vec<&str> = keys.keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["Symmetric-Key", "verification-key", "signature-key"]);
        assert_eq!(keys.keys[0].material.kty(), Kty::Oct);
        assert!(keys.keys[0].active && !keys.keys[1].active && !keys.keys[2].active);
    }

    /// Case 6: An alias deleted from the file is reported missing and the others load
    /// (the first alias that loads is active); a mapping none of whose aliases is in the
    /// file fails the reload with an error naming them and listing what the file has,
    /// never the password.
    #[test]
    fn deleted_alias_is_missing_and_no_alias_at_all_fails_without_echoing_the_password() {
        const PW: &str = "s3cr3t-Pa55";
        let dir = TempDir::new("delete");
        let store = dir.copy_fixture("s3cr3t-trusted-and-key.p12", "trust.p12");
        let mut src = plain_source(store.clone(), PW, &["signature-key", "verification-key"]);
        let keys = load(&mut src);
        assert_eq!(keys.keys.len(), 2);
        assert!(keys.missing.is_empty());
        assert!(keys.keys[0].active && keys.keys[0].id == "signature-key");

        // The same store after `keytool -delete -alias signature-key`.
        dir.copy_fixture("s3cr3t-trusted-after-delete.p12", "trust.p12");
        let keys = load(&mut src);
        let ids: Vec<&str> = keys.keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["verification-key"]);
        assert!(keys.keys[0].active, "the first alias that loads is active");
        assert_eq!(keys.missing, ["signature-key"]);

        // No alias of the mapping in the file: the source fails.
        let mut src = plain_source(store.clone(), PW, &["signature-key", "other-key"]);
        let err = load_err(&mut src);
        assert!(
            err.contains("none of the aliases [\"signature-key\", \"other-key\"] is in"),
            "unexpected error: {err}"
        );
        assert!(err.contains("it has: verification-key"), "{err}");
        assert!(err.contains("trust.p12"), "{err}");
        assert!(!err.contains(PW), "the error echoes the password: {err}");
        // Still failing (the last good digest is kept, nothing half-loaded).
        assert!(src.reload().is_err());
        assert!(!format!("{src:?}").contains(PW));

        // keytool rewrote the trusted certificate with a localKeyID ("01", its
        // one-private-key workaround); it is still a trusted-certificate entry.
        let mut src = plain_source(store, PW, &["verification-key"]);
        let keys = load(&mut src);
        assert_eq!(
            keys.keys[0].material.thumbprint(),
            cert_material(CERT).0.thumbprint()
        );
    }

    /// Case 7: Password encodings and sources: base64 via the environment (padding optional,
    /// whitespace trimmed), plain via a file; a missing variable, bad base64 or a wrong
    /// password fail without echoing the value. A password change reloads.
    #[test]
    fn password_sources_and_encodings() {
        let dir = TempDir::new("password");
        let store = fixture("openssl.p12");
        let aliases = vec!["signature-key".to_string()];
        let env_source = |encoding, value: &str| {
            KeystoreSource::new(
                store.clone(),
                PasswordSource::Env("KEYSTORE_SECRET_ID".into()),
                encoding,
                aliases.clone(),
                env_with(&[("KEYSTORE_SECRET_ID", value)]),
            )
        };

        for value in ["cGFzc3dvcmQ=", "cGFzc3dvcmQ", " cGFzc3dvcmQ=\n"] {
            let mut src = env_source(PasswordEncoding::Base64, value);
            assert_signature_key(&load(&mut src));
        }

        std::fs::write(dir.path("pw.txt"), "password\n").unwrap();
        let mut src = KeystoreSource::new(
            store.clone(),
            PasswordSource::File(dir.path("pw.txt")),
            PasswordEncoding::Plain,
            aliases.clone(),
            env_with(&[]),
        );
        assert_signature_key(&load(&mut src));

        let mut src = KeystoreSource::new(
            store.clone(),
            PasswordSource::Env("KEYSTORE_SECRET_ID".into()),
            PasswordEncoding::Base64,
            aliases.clone(),
            env_with(&[("OTHER", "cGFzc3dvcmQ=")]),
        );
        let err = load_err(&mut src);
        assert!(err.contains("KEYSTORE_SECRET_ID"), "{err}");

        let mut src = env_source(PasswordEncoding::Base64, "n0t*base64%");
        let err = load_err(&mut src);
        assert!(
            err.contains("KEYSTORE_SECRET_ID") && err.contains("base64"),
            "{err}"
        );
        assert!(!err.contains("n0t*base64%"), "{err}");

        const WRONG: &str = "Wr0ng-Pa55word";
        let mut src = env_source(PasswordEncoding::Plain, WRONG);
        let err = load_err(&mut src);
        assert!(err.contains("wrong password"), "{err}");
        assert!(!err.contains(WRONG), "the error echoes the password: {err}");

        // Base64 of the wrong password: neither the encoded nor the decoded value leaks.
        let encoded = base64::engine::general_purpose::STANDARD.encode(WRONG);
        let mut src = env_source(PasswordEncoding::Base64, &encoded);
        let err = load_err(&mut src);
        assert!(!err.contains(WRONG) && !err.contains(&encoded), "{err}");

        // The password is part of the digest: changing it reloads (here: fails), and
        // changing it back to the last good one is "unchanged".
        let current = Arc::new(Mutex::new("password".to_string()));
        let lookup = current.clone();
        let mut src = KeystoreSource::new(
            store.clone(),
            PasswordSource::Env("KS".into()),
            PasswordEncoding::Plain,
            aliases.clone(),
            Arc::new(move |_| Some(crate::keys::lock(&lookup).clone())),
        );
        load(&mut src);
        *crate::keys::lock(&current) = WRONG.to_string();
        assert!(src.reload().is_err());
        *crate::keys::lock(&current) = "password".to_string();
        assert!(matches!(src.reload(), Ok(None)));
    }

    /// Case 8: An unchanged file is not re-parsed; a rewritten one is.
    #[test]
    fn unchanged_file_reloads_as_none() {
        let dir = TempDir::new("unchanged");
        let store = dir.copy_fixture("keytool-trusted.p12", "trust.p12");
        let mut src = plain_source(store, "password", &["verification-key"]);
        load(&mut src);
        assert!(matches!(src.reload(), Ok(None)));
        assert!(matches!(src.reload(), Ok(None)));

        // The same store rewritten by `keytool -importkeystore` of openssl.p12.
        dir.copy_fixture("keytool-trusted-and-key.p12", "trust.p12");
        assert_eq!(load(&mut src).keys.len(), 1);
        assert!(matches!(src.reload(), Ok(None)));
    }

    /// A missing file, a non-PKCS#12 file and a non-HMAC secret key (keytool-aes.p12:
    /// `keytool -genseckey -keyalg AES -keysize 256`) are errors.
    #[test]
    fn unusable_files_and_entries_are_errors() {
        let dir = TempDir::new("unusable");
        let mut src = plain_source(dir.path("missing.p12"), "password", &["a"]);
        assert!(matches!(src.reload(), Err(SourceError::Read { .. })));

        std::fs::write(dir.path("junk.p12"), b"not a keystore").unwrap();
        let mut src = plain_source(dir.path("junk.p12"), "password", &["a"]);
        let err = load_err(&mut src);
        assert!(err.contains("not a PKCS#12 file"), "{err}");

        let mut src = plain_source(fixture("keytool-aes.p12"), "password", &["aes-key"]);
        let err = load_err(&mut src);
        assert!(err.contains("not an HMAC key"), "{err}");
    }
}
