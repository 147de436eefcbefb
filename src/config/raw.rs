//! The serde mirror of the JSON config file. Unknown fields are rejected everywhere;
//! nothing here is interpreted — `config::Config::from_raw` does that, once.
//! The fields mirror SPEC §3 one for one and are documented there and in docs/configuration.md.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listeners: RawListeners,
    #[serde(default)]
    pub upstream: Option<RawUpstream>,
    pub issuers: Vec<RawIssuer>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub token: RawToken,
    #[serde(default)]
    pub forward: RawForward,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub revoked: RawRevoked,
    #[serde(default)]
    pub fallback: RawFallback,
    #[serde(default)]
    pub reload: RawReload,
    #[serde(default)]
    pub readiness: RawReadiness,
    #[serde(default)]
    pub path_case: Option<String>,
    #[serde(default)]
    pub forward_auth: RawForwardAuth,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub telemetry: RawTelemetry,
    #[serde(default)]
    pub trusted_proxy_headers: RawTrustedProxyHeaders,
    #[serde(default)]
    pub dpop_nonce_secret_env: Option<String>,
    #[serde(default)]
    pub dpop_nonce_secret_file: Option<String>,
    #[serde(default)]
    pub decryption: Option<RawDecryption>,
    #[serde(default)]
    pub sessions: Vec<RawSession>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDecryption {
    #[serde(default)]
    pub key_sources: Vec<RawKeySource>,
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub name: String,
    pub cookie: String,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub key_sources: Vec<RawKeySource>,
    #[serde(default)]
    pub subject_claim: Option<String>,
    #[serde(default)]
    pub max_age: Option<String>,
    #[serde(default)]
    pub leeway: Option<String>,
}

/// A listener address: absent (default), `null` (off) or an address.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Setting {
    /// The field is not in the file.
    #[default]
    Default,
    /// The field is `null`.
    Off,
    /// The field holds a value.
    Set(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListeners {
    #[serde(default, deserialize_with = "setting")]
    pub proxy: Setting,
    #[serde(default, deserialize_with = "setting")]
    pub authz_http: Setting,
    #[serde(default, deserialize_with = "setting")]
    pub authz_grpc: Setting,
    #[serde(default, deserialize_with = "setting")]
    pub admin: Setting,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: String,
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub name: String,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    #[serde(default)]
    pub require_typ: Vec<String>,
    #[serde(default)]
    pub required_claims: Option<Vec<String>>,
    #[serde(default)]
    pub leeway: Option<String>,
    #[serde(default)]
    pub max_lifetime: Option<String>,
    #[serde(default)]
    pub max_key_age: Option<String>,
    #[serde(default)]
    pub certificate_validity: Option<String>,
    #[serde(default)]
    pub key_sources: Vec<RawKeySource>,
    #[serde(default)]
    pub dpop: Option<String>,
    #[serde(default)]
    pub dpop_algorithms: Option<Vec<String>>,
    #[serde(default)]
    pub dpop_max_age: Option<String>,
    #[serde(default)]
    pub dpop_nonce: bool,
    #[serde(default)]
    pub require_encryption: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeySource {
    // Exactly one of these five names the kind of source.
    pub jwks_uri: Option<String>,
    pub discovery: Option<String>,
    pub jwks_file: Option<String>,
    pub keystore: Option<String>,
    pub pem_file: Option<String>,
    // Remote sources.
    pub refresh: Option<String>,
    pub miss_refetch_interval: Option<String>,
    pub max_stale: Option<String>,
    pub timeout: Option<String>,
    pub ca_file: Option<String>,
    // Keystores.
    pub store_type: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub password_encoding: Option<String>,
    pub aliases: Option<Vec<String>>,
    // PEM files.
    pub kid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub scopes_all: Vec<String>,
    #[serde(default)]
    pub scopes_any: Vec<String>,
    #[serde(default)]
    pub allow_anonymous: bool,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub issuers: Option<Vec<String>>,
    #[serde(default)]
    pub rules: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub from_headers: Option<Vec<RawHeaderSource>>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    pub max_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderSource {
    pub name: String,
    #[serde(default)]
    pub prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    pub claim_headers: Option<BTreeMap<String, String>>,
    pub claims_header: Option<String>,
    #[serde(default)]
    pub strip_authorization: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub max_entries: Option<u64>,
    pub max_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRevoked {
    #[serde(default)]
    pub kids: Vec<String>,
    #[serde(default)]
    pub thumbprints: Vec<String>,
    #[serde(default)]
    pub file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFallback {
    pub max_keys: Option<usize>,
    pub max_verifications_per_second: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwardAuth {
    pub headers: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    pub scan_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReadiness {
    pub grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub enabled: Option<bool>,
    pub sample: Option<f64>,
    pub subject_claim: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
    pub protocol: Option<String>,
    pub sample_ratio: Option<f64>,
    pub service_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrustedProxyHeaders {
    #[serde(default)]
    pub x_forwarded_proto: bool,
    #[serde(default)]
    pub x_forwarded_client_cert: bool,
}

/// The content of a `revoked.file`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRevokedFile {
    #[serde(default)]
    pub kids: Vec<String>,
    #[serde(default)]
    pub thumbprints: Vec<String>,
}

fn setting<'de, D: Deserializer<'de>>(d: D) -> Result<Setting, D::Error> {
    // Called only when the field is present; `null` means "off".
    Ok(match Option::<String>::deserialize(d)? {
        None => Setting::Off,
        Some(s) => Setting::Set(s),
    })
}
