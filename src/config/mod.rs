//! Configuration, parsed once into types. `raw` mirrors the JSON file; this module turns
//! it into [`Config`]: durations, addresses, URLs and paths resolved, defaults applied,
//! every cross-field rule checked. Every problem is a [`ConfigError`] naming the file,
//! the field path and the reason. Relative paths are relative to the config file.

pub mod raw;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::alg::{Alg, AlgSet};
use crate::jwe::{Enc, KeyAlg};
use crate::rules::Rule;
use raw::{RawConfig, RawDecryption, RawIssuer, RawKeySource, RawSession, RawTelemetry, Setting};

/// `listeners.proxy` when `upstream` is set and the field is absent.
pub const DEFAULT_PROXY: &str = "0.0.0.0:8080";
/// `listeners.authz_http` when absent.
pub const DEFAULT_AUTHZ_HTTP: &str = "0.0.0.0:8181";
/// `listeners.authz_grpc` when absent.
pub const DEFAULT_AUTHZ_GRPC: &str = "0.0.0.0:9191";
/// `listeners.admin` when absent.
pub const DEFAULT_ADMIN: &str = "0.0.0.0:9464";
/// `upstream.timeout` when absent.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// `issuers[].leeway` when absent.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// `token.max_bytes` when absent.
pub const DEFAULT_TOKEN_MAX_BYTES: usize = 8192;
/// `key_sources[].refresh` when absent.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// `key_sources[].miss_refetch_interval` when absent.
pub const DEFAULT_MISS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// `key_sources[].max_stale` when absent.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 3600);
/// `key_sources[].timeout` when absent.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// `cache.max_entries` when absent.
pub const DEFAULT_CACHE_MAX_ENTRIES: u64 = 100_000;
/// `cache.max_ttl` when absent.
pub const DEFAULT_CACHE_MAX_TTL: Duration = Duration::from_secs(300);
/// `fallback.max_keys` when absent.
pub const DEFAULT_FALLBACK_MAX_KEYS: usize = 16;
/// `fallback.max_verifications_per_second` when absent.
pub const DEFAULT_FALLBACK_RATE: u32 = 500;
/// `reload.scan_interval` when absent.
pub const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(10);
/// Rules one route may have.
pub const MAX_ROUTE_RULES: usize = 32;
/// `readiness.grace` when absent.
pub const DEFAULT_READINESS_GRACE: Duration = Duration::from_secs(30);
/// `issuers[].required_claims` when absent.
pub const DEFAULT_REQUIRED_CLAIMS: [&str; 1] = ["exp"];
/// The token header when `token.from_headers` is absent.
pub const DEFAULT_TOKEN_HEADER: (&str, &str) = ("authorization", "Bearer ");
/// Largest accepted `token.max_bytes`; a bigger token than this is never a real one.
pub const MAX_TOKEN_MAX_BYTES: usize = 1 << 20;
/// `issuers[].dpop_max_age` when absent.
pub const DEFAULT_DPOP_MAX_AGE: Duration = Duration::from_secs(60);
/// Longest accepted `issuers[].dpop_max_age`: a proof is a per-request signature, and
/// the replay cache holds every `jti` for this long.
pub const MAX_DPOP_MAX_AGE: Duration = Duration::from_secs(3600);
/// `issuers[].dpop_algorithms` when absent.
pub const DEFAULT_DPOP_ALGORITHMS: [Alg; 4] = [Alg::ES256, Alg::EdDSA, Alg::RS256, Alg::PS256];
/// `decryption.algorithms` when absent.
pub const DEFAULT_DECRYPTION_ALGORITHMS: [KeyAlg; 4] = [
    KeyAlg::Dir,
    KeyAlg::A256Kw,
    KeyAlg::RsaOaep256,
    KeyAlg::EcdhEs,
];
/// `decryption.methods` when absent.
pub const DEFAULT_DECRYPTION_METHODS: [Enc; 2] = [Enc::A256CbcHs512, Enc::A256Gcm];
/// `sessions[].methods` when absent (PingGateway's `JwtSession` default).
pub const DEFAULT_SESSION_METHODS: [Enc; 1] = [Enc::A256CbcHs512];
/// The name top-level decryption keys carry in metrics and `/keys` (no issuer or session
/// may take it).
pub const DECRYPTION_NAME: &str = "decryption";
/// Shortest accepted DPoP nonce secret, in bytes.
pub const MIN_NONCE_SECRET_BYTES: usize = 32;

/// A configuration problem: which file, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {field}: {reason}", file.display())]
pub struct ConfigError {
    /// The file that holds the problem.
    pub file: PathBuf,
    /// The field path, e.g. `issuers[0].key_sources[1].refresh` (`-` for the whole file).
    pub field: String,
    /// What is wrong, and the valid alternatives where there are few.
    pub reason: String,
}

/// The typed configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from (for messages and reloads).
    pub file: PathBuf,
    /// SHA-256 of the bytes it was parsed from (a reload with the same bytes is a no-op).
    pub digest: Option<[u8; 32]>,
    /// Listener addresses; `None` = off.
    pub listeners: Listeners,
    /// The app behind the `proxy` listener.
    pub upstream: Option<Upstream>,
    /// Trusted issuers, in file order.
    pub issuers: Vec<IssuerConfig>,
    /// Route policies, first match wins.
    pub routes: Vec<RouteConfig>,
    /// Where tokens are found.
    pub token: TokenConfig,
    /// What allowed requests carry upstream.
    pub forward: ForwardConfig,
    /// Verified-token cache.
    pub cache: CacheConfig,
    /// Revoked keys.
    pub revoked: RevokedConfig,
    /// Unknown-kid / no-kid fallback.
    pub fallback_max_keys: usize,
    /// Signature checks per second the fallback may spend, per process (SPEC §9).
    pub fallback_rate: u32,
    /// How often files (keys, revocations, this config) are rescanned.
    pub scan_interval: Duration,
    /// After this long from start, `/readyz` is 200 as soon as one issuer has keys.
    pub readiness_grace: Duration,
    /// Whether route prefixes match the path's case (SPEC §4a `path_case`).
    pub path_case: PathCase,
    /// Enforce or shadow, for requests whose route does not say (SPEC §9).
    pub mode: Mode,
    /// Which override headers `authz_http` takes the checked method and URI from.
    pub forward_auth: ForwardAuth,
    /// The decision log (SPEC §12); `None`: off.
    pub audit: Option<AuditConfig>,
    /// OpenTelemetry traces (SPEC §12); `None`: off.
    pub telemetry: Option<TelemetryConfig>,
    /// Which headers set by the proxy in front are believed (SPEC §3, §11).
    pub trusted_proxy_headers: TrustedProxyHeaders,
    /// The secret DPoP nonces are made with, shared by a fleet (`None`: a random one per
    /// process, so only this process accepts its nonces).
    pub dpop_nonce_secret: Option<NonceSecret>,
    /// Keys and allowlists that decrypt encrypted access tokens (SPEC §10); `None`: an
    /// encrypted token is refused (`bad_alg`).
    pub decryption: Option<DecryptionConfig>,
    /// Shared JWT sessions (SPEC §10), in file order.
    pub sessions: Vec<SessionConfig>,
}

/// `decryption`: the keys and allowlists encrypted access tokens are opened with.
#[derive(Debug, Clone)]
pub struct DecryptionConfig {
    /// The key holder (named `decryption`, local key sources only).
    pub keys: IssuerConfig,
    /// Key management algorithms accepted.
    pub algorithms: Vec<KeyAlg>,
    /// Content encryption methods accepted.
    pub methods: Vec<Enc>,
}

/// One `sessions[]` entry: PingGateway `JwtSession` cookies as credentials.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The key holder (named after the session, local key sources only).
    pub keys: IssuerConfig,
    /// The cookie that carries the session.
    pub cookie: String,
    /// Content encryption methods accepted (`dir` always).
    pub methods: Vec<Enc>,
    /// The claim that names the principal (fed to forward headers mapped from `sub`).
    pub subject_claim: String,
    /// Longest age from the session's `iat`.
    pub max_age: Option<Duration>,
    /// Clock skew tolerated on `exp` and `iat`.
    pub leeway: Duration,
}

/// `trusted_proxy_headers`: both off unless turned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrustedProxyHeaders {
    /// `X-Forwarded-Proto` gives the scheme of a DPoP `htu`.
    pub x_forwarded_proto: bool,
    /// `X-Forwarded-Client-Cert` gives the client certificate of a bound token.
    pub x_forwarded_client_cert: bool,
}

/// The bytes of the DPoP nonce secret (`dpop_nonce_secret_env` / `_file`). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct NonceSecret(pub Arc<[u8]>);

impl fmt::Debug for NonceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceSecret(..)")
    }
}

/// An issuer's DPoP settings (SPEC §11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopConfig {
    /// `dpop: "required"`: a token without `cnf.jkt` is refused.
    pub required: bool,
    /// The proof algorithms accepted (asymmetric only).
    pub algorithms: AlgSet,
    /// How old a proof's `iat` (and a nonce) may be.
    pub max_age: Duration,
    /// Whether proofs must carry a nonce tokengate issued.
    pub nonce: bool,
    /// `algorithms` as the challenge's `algs` parameter (space-separated names).
    pub algs: Arc<str>,
}

/// `audit`: one JSON line per (sampled) decision.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// The probability that a decision is logged, in [0, 1].
    pub sample: f64,
    /// The claim that names the subject.
    pub subject_claim: String,
}

/// `telemetry`: where and how `tokengate.check` spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// The collector, e.g. `http://collector:4317`.
    pub otlp_endpoint: String,
    /// OTLP over gRPC or over HTTP with protobuf bodies.
    pub protocol: OtlpProtocol,
    /// The share of checks without a sampled parent that get a span, in [0, 1].
    pub sample_ratio: f64,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

/// `telemetry.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `grpc` (the default; port 4317 by convention).
    Grpc,
    /// `http/protobuf` (port 4318 by convention; `/v1/traces` is appended).
    HttpProtobuf,
}

/// How route prefixes compare with the judged path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathCase {
    /// Byte for byte (the default).
    #[default]
    Sensitive,
    /// ASCII case-insensitively, for apps that route that way.
    Insensitive,
}

/// The family of forward-auth override headers `authz_http` reads (SPEC §4a). Each
/// family's two headers must then appear exactly once; the other family is never read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardAuth {
    /// None: the check request's own method and path (Envoy HTTP ext_authz).
    #[default]
    None,
    /// nginx `auth_request`: `X-Original-Method`, `X-Original-URI`.
    Nginx,
    /// Traefik ForwardAuth: `X-Forwarded-Method`, `X-Forwarded-Uri`.
    Traefik,
}

/// Listener addresses; `None` means off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listeners {
    /// Reverse proxy.
    pub proxy: Option<SocketAddr>,
    /// HTTP ext_authz and forward-auth.
    pub authz_http: Option<SocketAddr>,
    /// gRPC ext_authz.
    pub authz_grpc: Option<SocketAddr>,
    /// Metrics, health, inventory, refresh.
    pub admin: Option<SocketAddr>,
}

/// The app behind the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Base URL (`http://127.0.0.1:3000`).
    pub url: String,
    /// Whole-request timeout.
    pub timeout: Duration,
}

/// When a certificate's validity period is checked against a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateValidity {
    /// The token's `iat` must lie within the certificate's validity.
    Iat,
    /// The current time must lie within the certificate's validity.
    Now,
    /// Not checked.
    Off,
}

/// One trusted issuer.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The label value (`issuer` label).
    pub name: Arc<str>,
    /// The `iss` it matches; `None` = any.
    pub issuer: Option<String>,
    /// Accepted audiences; empty = `aud` not checked.
    pub audiences: Vec<String>,
    /// Accepted algorithms.
    pub algorithms: AlgSet,
    /// Accepted header `typ` values (case-insensitive); empty = not checked.
    pub require_typ: Vec<String>,
    /// Claims that must be present.
    pub required_claims: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf`, `iat`.
    pub leeway: Duration,
    /// Longest accepted `exp - iat`.
    pub max_lifetime: Option<Duration>,
    /// Cryptoperiod: an active key older than this is flagged (SPEC §9).
    pub max_key_age: Option<Duration>,
    /// Certificate validity rule.
    pub certificate_validity: CertificateValidity,
    /// Where its keys come from, in order.
    pub key_sources: Vec<KeySourceConfig>,
    /// DPoP (SPEC §11).
    pub dpop: DpopConfig,
    /// Tokens must arrive encrypted (a nested JWT, SPEC §10); a bare JWS is `bad_alg`.
    pub require_encryption: bool,
}

/// Settings shared by remote JWKS sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSettings {
    /// Periodic refresh interval.
    pub refresh: Duration,
    /// Smallest gap between two unknown-kid refetches.
    pub miss_refetch_interval: Duration,
    /// How long the last good set is served while refreshes fail.
    pub max_stale: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Extra CA bundle (PEM).
    pub ca_file: Option<PathBuf>,
}

/// How a keystore password is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordEncoding {
    /// Base64 of the password (PingGateway's SystemAndEnvSecretStore format).
    Base64,
    /// The password as is.
    Plain,
}

/// Where a keystore password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// An environment variable's name.
    Env(String),
    /// A file's path.
    File(PathBuf),
}

/// One key source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySourceConfig {
    /// A remote JWKS.
    JwksUri {
        /// The JWKS URL.
        url: String,
        /// Refresh settings.
        settings: RemoteSettings,
    },
    /// OIDC / RFC 8414 discovery, then its `jwks_uri`.
    Discovery {
        /// The issuer URL (`/.well-known/openid-configuration` is appended).
        url: String,
        /// Refresh settings.
        settings: RemoteSettings,
    },
    /// A local JWKS file.
    JwksFile {
        /// Its path.
        path: PathBuf,
    },
    /// A PKCS#12 keystore with an alias mapping.
    Keystore {
        /// Its path.
        path: PathBuf,
        /// Password source.
        password: PasswordSource,
        /// Password encoding.
        encoding: PasswordEncoding,
        /// Aliases, active first.
        aliases: Vec<String>,
    },
    /// A PEM public key or certificate.
    PemFile {
        /// Its path.
        path: PathBuf,
        /// The key id it is known by.
        kid: String,
    },
}

/// Whether denials are answered (SPEC §9 `mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Denials are answered (the default).
    #[default]
    Enforce,
    /// Every request is judged as in enforce, but a denial is answered as an allow with
    /// `x-tokengate-shadow-deny: <reason>` and counted.
    Shadow,
}

/// One route policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Path prefix (plain string prefix, as Envoy's `prefix`), matched on the normalised path.
    pub path_prefix: String,
    /// Methods (upper case); empty = any.
    pub methods: Vec<String>,
    /// Every one of these scopes is required.
    pub scopes_all: Vec<String>,
    /// At least one of these scopes is required (when non-empty).
    pub scopes_any: Vec<String>,
    /// Requests without a token pass.
    pub allow_anonymous: bool,
    /// Enforce or shadow; `None`: the top-level `mode`.
    pub mode: Option<Mode>,
    /// The route's name (`route-<index>` by default): letters, digits, `-_.`.
    pub name: Arc<str>,
    /// Only tokens of these issuers (by name) pass; empty: any configured issuer.
    pub issuers: Vec<Arc<str>>,
    /// CEL rules, all of which must be true (SPEC §12).
    pub rules: Vec<Arc<Rule>>,
}

/// A header that may carry the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSource {
    /// Header name, lower case.
    pub name: String,
    /// Prefix before the token (`Bearer `); its scheme word is matched case-insensitively.
    pub prefix: String,
}

/// Where tokens are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// Headers, in order.
    pub from_headers: Vec<HeaderSource>,
    /// Cookie names, in order.
    pub from_cookies: Vec<String>,
    /// The cookies of `sessions[]`, in order (SPEC §10).
    pub session_cookies: Vec<String>,
    /// Largest accepted token.
    pub max_bytes: usize,
}

/// What allowed requests carry upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// (header name in lower case, claim name).
    pub claim_headers: Vec<(String, String)>,
    /// Header carrying all verified claims as base64url JSON.
    pub claims_header: Option<String>,
    /// Remove the token header before proxying.
    pub strip_authorization: bool,
}

/// Verified-token cache settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bound on entries; 0 = off.
    pub max_entries: u64,
    /// Longest time an entry lives.
    pub max_ttl: Duration,
}

/// Revoked keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RevokedConfig {
    /// Revoked key ids (kid or alias).
    pub kids: Vec<String>,
    /// Revoked RFC 7638 thumbprints.
    pub thumbprints: Vec<String>,
    /// A file with more of both, reloaded.
    pub file: Option<PathBuf>,
}

struct Ctx<'a> {
    file: &'a Path,
    dir: PathBuf,
}

// === impl Config ===

impl Config {
    /// Reads and parses a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            field: "-".into(),
            reason: format!("cannot read the file: {e}"),
        })?;
        Config::parse(file, &bytes)
    }

    /// Parses config text that came from `file`.
    pub fn parse(file: &Path, bytes: &[u8]) -> Result<Config, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let reason = e.into_inner().to_string();
            // serde reports a missing field at its parent's path: name the field itself.
            let missing = reason
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next());
            let field = match (path.as_str(), missing) {
                (".", Some(name)) => name.to_string(),
                (".", None) => "-".to_string(),
                (p, Some(name)) => format!("{p}.{name}"),
                (p, None) => p.to_string(),
            };
            ConfigError {
                file: file.to_path_buf(),
                field,
                reason,
            }
        })?;
        let mut config = Config::from_raw(file, raw)?;
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
        let mut sum = [0u8; 32];
        sum.copy_from_slice(d.as_ref());
        config.digest = Some(sum);
        Ok(config)
    }

    /// Turns the raw mirror into the typed config, checking every rule.
    pub fn from_raw(file: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
        let dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let cx = Ctx { file, dir };

        let upstream = match raw.upstream {
            None => None,
            Some(u) => {
                let parsed = reqwest::Url::parse(&u.url)
                    .map_err(|e| cx.err("upstream.url", format!("not a URL: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(cx.err("upstream.url", "the scheme must be http or https"));
                }
                Some(Upstream {
                    url: u.url.trim_end_matches('/').to_string(),
                    timeout: cx.duration_or(
                        "upstream.timeout",
                        u.timeout.as_deref(),
                        DEFAULT_UPSTREAM_TIMEOUT,
                    )?,
                })
            }
        };

        let l = &raw.listeners;
        let listeners = Listeners {
            proxy: match (&l.proxy, upstream.is_some()) {
                (Setting::Set(_), false) => {
                    return Err(cx.err(
                        "listeners.proxy",
                        "the proxy listener needs `upstream` (set upstream.url, or set listeners.proxy to null)",
                    ));
                }
                (s, true) => cx.addr("listeners.proxy", s, DEFAULT_PROXY)?,
                (_, false) => None,
            },
            authz_http: cx.addr("listeners.authz_http", &l.authz_http, DEFAULT_AUTHZ_HTTP)?,
            authz_grpc: cx.addr("listeners.authz_grpc", &l.authz_grpc, DEFAULT_AUTHZ_GRPC)?,
            admin: cx.addr("listeners.admin", &l.admin, DEFAULT_ADMIN)?,
        };
        let mut bound: Vec<(SocketAddr, &str)> = Vec::new();
        for (addr, name) in [
            (listeners.proxy, "proxy"),
            (listeners.authz_http, "authz_http"),
            (listeners.authz_grpc, "authz_grpc"),
            (listeners.admin, "admin"),
        ] {
            let Some(addr) = addr else { continue };
            if let Some((_, other)) = bound.iter().find(|(a, _)| *a == addr && addr.port() != 0) {
                return Err(cx.err(
                    &format!("listeners.{name}"),
                    format!("{addr} is already used by listeners.{other}"),
                ));
            }
            bound.push((addr, name));
        }

        if raw.issuers.is_empty() && raw.sessions.is_empty() {
            return Err(cx.err(
                "issuers",
                "at least one issuer (or one session) is required",
            ));
        }
        let mut issuers = Vec::with_capacity(raw.issuers.len());
        let mut names = BTreeSet::new();
        let mut wildcard: Option<usize> = None;
        let mut iss_values = BTreeSet::new();
        for (i, ri) in raw.issuers.into_iter().enumerate() {
            let issuer = cx.issuer(i, ri)?;
            if !names.insert(issuer.name.clone()) {
                return Err(cx.err(
                    &format!("issuers[{i}].name"),
                    format!("the name {:?} is used by another issuer", issuer.name),
                ));
            }
            match &issuer.issuer {
                None => {
                    if let Some(first) = wildcard {
                        return Err(cx.err(
                            &format!("issuers[{i}].issuer"),
                            format!(
                                "at most one issuer may omit `issuer`, and issuers[{first}] already does"
                            ),
                        ));
                    }
                    wildcard = Some(i);
                }
                Some(iss) => {
                    if !iss_values.insert(iss.clone()) {
                        return Err(cx.err(
                            &format!("issuers[{i}].issuer"),
                            format!("{iss:?} is configured twice"),
                        ));
                    }
                }
            }
            issuers.push(issuer);
        }
        let decryption = match raw.decryption {
            None => None,
            Some(rd) => Some(cx.decryption(rd)?),
        };
        if decryption.is_none()
            && let Some(i) = issuers.iter().position(|i| i.require_encryption)
        {
            return Err(cx.err(
                &format!("issuers[{i}].require_encryption"),
                "needs a `decryption` section with keys that open the tokens",
            ));
        }
        let mut sessions: Vec<SessionConfig> = Vec::with_capacity(raw.sessions.len());
        for (i, rs) in raw.sessions.into_iter().enumerate() {
            let session = cx.session(i, rs)?;
            if !names.insert(session.keys.name.clone()) {
                return Err(cx.err(
                    &format!("sessions[{i}].name"),
                    format!(
                        "the name {:?} is used by an issuer or another session",
                        session.keys.name
                    ),
                ));
            }
            if raw.token.from_cookies.contains(&session.cookie)
                || sessions.iter().any(|s| s.cookie == session.cookie)
            {
                return Err(cx.err(
                    &format!("sessions[{i}].cookie"),
                    format!(
                        "the cookie {:?} is already a token cookie or another session's",
                        session.cookie
                    ),
                ));
            }
            sessions.push(session);
        }

        let mut routes = Vec::with_capacity(raw.routes.len());
        let mut route_names = BTreeSet::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            let field = format!("routes[{i}]");
            let name = r.name.unwrap_or_else(|| format!("route-{i}"));
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(cx.err(
                    &format!("{field}.name"),
                    format!("{name:?}: a route name is letters, digits, '-', '_' and '.'"),
                ));
            }
            if !route_names.insert(name.clone()) {
                return Err(cx.err(
                    &format!("{field}.name"),
                    format!("the name {name:?} is used by another route"),
                ));
            }
            let mut route_issuers = Vec::new();
            for (j, n) in r.issuers.unwrap_or_default().into_iter().enumerate() {
                if !names.iter().any(|known| **known == *n) {
                    return Err(cx.err(
                        &format!("{field}.issuers[{j}]"),
                        format!("no issuer or session is named {n:?}"),
                    ));
                }
                route_issuers.push(Arc::<str>::from(n));
            }
            let path_prefix = r.path_prefix.unwrap_or_else(|| "/".into());
            if !path_prefix.starts_with('/') {
                return Err(cx.err(&format!("{field}.path_prefix"), "must start with '/'"));
            }
            let mut methods = Vec::new();
            for (j, m) in r.methods.unwrap_or_default().into_iter().enumerate() {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(cx.err(
                        &format!("{field}.methods[{j}]"),
                        format!("{m:?} is not an HTTP method"),
                    ));
                }
                methods.push(m.to_ascii_uppercase());
            }
            for (list, name) in [(&r.scopes_all, "scopes_all"), (&r.scopes_any, "scopes_any")] {
                if let Some(j) = list.iter().position(|s| s.is_empty() || s.contains(' ')) {
                    return Err(cx.err(
                        &format!("{field}.{name}[{j}]"),
                        "a scope is one non-empty word without spaces",
                    ));
                }
            }
            if r.allow_anonymous && !(r.scopes_all.is_empty() && r.scopes_any.is_empty()) {
                return Err(cx.err(
                    &format!("{field}.allow_anonymous"),
                    "an anonymous route cannot require scopes (requests without a token would pass where requests with one could not)",
                ));
            }
            if r.allow_anonymous && !r.rules.is_empty() {
                return Err(cx.err(
                    &format!("{field}.allow_anonymous"),
                    "an anonymous route cannot have rules (requests without a token would pass where requests with one could not)",
                ));
            }
            if r.rules.len() > MAX_ROUTE_RULES {
                return Err(cx.err(
                    &format!("{field}.rules"),
                    format!("at most {MAX_ROUTE_RULES} rules per route"),
                ));
            }
            let mut rules = Vec::with_capacity(r.rules.len());
            for (j, source) in r.rules.iter().enumerate() {
                let rule = Rule::compile(source)
                    .map_err(|why| cx.err(&format!("{field}.rules[{j}]"), why))?;
                rules.push(Arc::new(rule));
            }
            let mode = match r.mode.as_deref() {
                None => None,
                Some(m) => Some(cx.mode(&format!("{field}.mode"), m)?),
            };
            routes.push(RouteConfig {
                path_prefix,
                methods,
                scopes_all: r.scopes_all,
                scopes_any: r.scopes_any,
                allow_anonymous: r.allow_anonymous,
                mode,
                name: name.into(),
                issuers: route_issuers,
                rules,
            });
        }

        let from_headers = match raw.token.from_headers {
            None => vec![HeaderSource {
                name: DEFAULT_TOKEN_HEADER.0.into(),
                prefix: DEFAULT_TOKEN_HEADER.1.into(),
            }],
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for (i, h) in list.into_iter().enumerate() {
                    cx.header_name(&format!("token.from_headers[{i}].name"), &h.name)?;
                    out.push(HeaderSource {
                        name: h.name.to_ascii_lowercase(),
                        prefix: h.prefix.unwrap_or_default(),
                    });
                }
                out
            }
        };
        if from_headers.is_empty() && raw.token.from_cookies.is_empty() && sessions.is_empty() {
            return Err(cx.err(
                "token.from_headers",
                "no header and no cookie is configured: tokens could never be found",
            ));
        }
        for (i, c) in raw.token.from_cookies.iter().enumerate() {
            if c.is_empty() || c.bytes().any(|b| b <= b' ' || b"=;,\"".contains(&b)) {
                return Err(cx.err(
                    &format!("token.from_cookies[{i}]"),
                    format!("{c:?} is not a cookie name"),
                ));
            }
        }
        let max_bytes = raw.token.max_bytes.unwrap_or(DEFAULT_TOKEN_MAX_BYTES);
        if max_bytes == 0 || max_bytes > MAX_TOKEN_MAX_BYTES {
            return Err(cx.err(
                "token.max_bytes",
                format!("must be between 1 and {MAX_TOKEN_MAX_BYTES}"),
            ));
        }
        let token = TokenConfig {
            from_headers,
            from_cookies: raw.token.from_cookies,
            session_cookies: sessions.iter().map(|s| s.cookie.clone()).collect(),
            max_bytes,
        };

        let mut claim_headers = Vec::new();
        let default_claims = [("x-auth-subject", "sub"), ("x-auth-scopes", "scope")];
        let pairs: Vec<(String, String)> = match raw.forward.claim_headers {
            Some(map) => map.into_iter().collect(),
            None => default_claims
                .iter()
                .map(|(h, c)| ((*h).into(), (*c).into()))
                .collect(),
        };
        for (header, claim) in pairs {
            let field = format!("forward.claim_headers.{header}");
            cx.header_name(&field, &header)?;
            if claim.is_empty() {
                return Err(cx.err(&field, "the claim name is empty"));
            }
            claim_headers.push((header.to_ascii_lowercase(), claim));
        }
        let claims_header = match raw.forward.claims_header {
            None => None,
            Some(h) => {
                cx.header_name("forward.claims_header", &h)?;
                Some(h.to_ascii_lowercase())
            }
        };
        let forward = ForwardConfig {
            claim_headers,
            claims_header,
            strip_authorization: raw.forward.strip_authorization,
        };

        let cache = CacheConfig {
            max_entries: raw.cache.max_entries.unwrap_or(DEFAULT_CACHE_MAX_ENTRIES),
            max_ttl: cx.duration_or(
                "cache.max_ttl",
                raw.cache.max_ttl.as_deref(),
                DEFAULT_CACHE_MAX_TTL,
            )?,
        };

        let revoked = RevokedConfig {
            kids: raw.revoked.kids,
            thumbprints: raw.revoked.thumbprints,
            file: raw.revoked.file.map(|f| cx.path(&f)),
        };

        let fallback_max_keys = raw.fallback.max_keys.unwrap_or(DEFAULT_FALLBACK_MAX_KEYS);
        if fallback_max_keys > 1024 {
            return Err(cx.err("fallback.max_keys", "must be at most 1024"));
        }
        let fallback_rate = raw
            .fallback
            .max_verifications_per_second
            .unwrap_or(DEFAULT_FALLBACK_RATE);
        if fallback_rate == 0 {
            return Err(cx.err(
                "fallback.max_verifications_per_second",
                "must be at least 1 (set fallback.max_keys to limit the keys tried per token)",
            ));
        }
        let scan_interval = cx.duration_or(
            "reload.scan_interval",
            raw.reload.scan_interval.as_deref(),
            DEFAULT_SCAN_INTERVAL,
        )?;
        if scan_interval < Duration::from_millis(100) {
            return Err(cx.err("reload.scan_interval", "must be at least 100ms"));
        }
        let mode = match raw.mode.as_deref() {
            None => Mode::Enforce,
            Some(m) => cx.mode("mode", m)?,
        };
        let readiness_grace = cx.duration_or(
            "readiness.grace",
            raw.readiness.grace.as_deref(),
            DEFAULT_READINESS_GRACE,
        )?;
        let path_case = match raw.path_case.as_deref() {
            None | Some("sensitive") => PathCase::Sensitive,
            Some("insensitive") => PathCase::Insensitive,
            Some(other) => {
                return Err(cx.err(
                    "path_case",
                    format!("{other:?} is not one of \"sensitive\", \"insensitive\""),
                ));
            }
        };
        let forward_auth = match raw.forward_auth.headers.as_deref() {
            None | Some("none") => ForwardAuth::None,
            Some("nginx") => ForwardAuth::Nginx,
            Some("traefik") => ForwardAuth::Traefik,
            Some(other) => {
                return Err(cx.err(
                    "forward_auth.headers",
                    format!("{other:?} is not one of \"none\", \"nginx\", \"traefik\""),
                ));
            }
        };

        let audit = match raw.audit.enabled {
            None | Some(false) => None,
            Some(true) => {
                let sample = raw.audit.sample.unwrap_or(1.0);
                if !(0.0..=1.0).contains(&sample) {
                    return Err(cx.err("audit.sample", "must be between 0.0 and 1.0"));
                }
                let subject_claim = raw.audit.subject_claim.unwrap_or_else(|| "sub".into());
                if subject_claim.is_empty() {
                    return Err(cx.err("audit.subject_claim", "the claim name is empty"));
                }
                Some(AuditConfig {
                    sample,
                    subject_claim,
                })
            }
        };
        let telemetry = cx.telemetry(raw.telemetry)?;
        let trusted_proxy_headers = TrustedProxyHeaders {
            x_forwarded_proto: raw.trusted_proxy_headers.x_forwarded_proto,
            x_forwarded_client_cert: raw.trusted_proxy_headers.x_forwarded_client_cert,
        };
        let dpop_nonce_secret =
            cx.nonce_secret(raw.dpop_nonce_secret_env, raw.dpop_nonce_secret_file)?;

        Ok(Config {
            file: file.to_path_buf(),
            digest: None,
            listeners,
            upstream,
            issuers,
            routes,
            token,
            forward,
            cache,
            revoked,
            fallback_max_keys,
            fallback_rate,
            scan_interval,
            readiness_grace,
            path_case,
            mode,
            forward_auth,
            audit,
            telemetry,
            trusted_proxy_headers,
            dpop_nonce_secret,
            decryption,
            sessions,
        })
    }

    /// Every key holder in the order the app keeps them: the issuers, then each
    /// session's keys, then the `decryption` keys (so that an issuer or a session is
    /// named by its position in the first part). With each: where it is configured
    /// (`issuers[0]`, `decryption`, `sessions[1]`), and whether its keys decrypt.
    pub fn key_holders(&self) -> Vec<(String, &IssuerConfig, bool)> {
        let issuers = self
            .issuers
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("issuers[{i}]"), c, false));
        let decryption = self
            .decryption
            .iter()
            .map(|d| (DECRYPTION_NAME.to_string(), &d.keys, true));
        let sessions = self
            .sessions
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("sessions[{i}]"), &s.keys, true));
        issuers.chain(sessions).chain(decryption).collect()
    }
}

// === impl IssuerConfig ===

impl IssuerConfig {
    /// The key holder of decryption keys (the `decryption` section, a session): a name
    /// and key sources; nothing it holds verifies a token.
    fn key_holder(name: Arc<str>, key_sources: Vec<KeySourceConfig>) -> Self {
        Self {
            name,
            issuer: None,
            audiences: Vec::new(),
            algorithms: AlgSet::EMPTY,
            require_typ: Vec::new(),
            required_claims: Vec::new(),
            leeway: DEFAULT_LEEWAY,
            max_lifetime: None,
            max_key_age: None,
            certificate_validity: CertificateValidity::Off,
            key_sources,
            dpop: DpopConfig {
                required: false,
                algorithms: AlgSet::EMPTY,
                max_age: DEFAULT_DPOP_MAX_AGE,
                nonce: false,
                algs: Arc::from(""),
            },
            require_encryption: false,
        }
    }
}

// === impl Ctx ===

impl Ctx<'_> {
    /// The `decryption` section.
    fn decryption(&self, rd: RawDecryption) -> Result<DecryptionConfig, ConfigError> {
        let algorithms = match rd.algorithms {
            None => DEFAULT_DECRYPTION_ALGORITHMS.to_vec(),
            Some(list) => self.jwe_names("decryption.algorithms", &list, |n| {
                KeyAlg::from_name(n).ok_or_else(|| {
                    let valid: Vec<_> = KeyAlg::ALL.iter().map(|a| a.name()).collect();
                    refused_jwe_name(n).unwrap_or_else(|| {
                        format!("unknown algorithm {n:?}; valid: {}", valid.join(", "))
                    })
                })
            })?,
        };
        let methods = self.methods(
            "decryption.methods",
            rd.methods,
            &DEFAULT_DECRYPTION_METHODS,
        )?;
        let key_sources = self.decryption_sources("decryption", rd.key_sources)?;
        Ok(DecryptionConfig {
            keys: IssuerConfig::key_holder(Arc::from(DECRYPTION_NAME), key_sources),
            algorithms,
            methods,
        })
    }

    /// One `sessions[]` entry.
    fn session(&self, i: usize, rs: RawSession) -> Result<SessionConfig, ConfigError> {
        let f = |name: &str| format!("sessions[{i}].{name}");
        self.label_name(&f("name"), &rs.name)?;
        if rs.name == DECRYPTION_NAME {
            return Err(self.err(
                &f("name"),
                "\"decryption\" is reserved for the decryption keys",
            ));
        }
        if rs.cookie.is_empty()
            || rs
                .cookie
                .bytes()
                .any(|b| b <= b' ' || b >= 0x7f || b"=;,\"".contains(&b))
        {
            return Err(self.err(
                &f("cookie"),
                format!("{:?} is not a cookie name", rs.cookie),
            ));
        }
        let methods = self.methods(&f("methods"), rs.methods, &DEFAULT_SESSION_METHODS)?;
        let subject_claim = rs.subject_claim.unwrap_or_else(|| "sub".into());
        if subject_claim.is_empty() {
            return Err(self.err(&f("subject_claim"), "the claim name is empty"));
        }
        let max_age = match rs.max_age.as_deref() {
            None => None,
            Some(v) => Some(parse_duration(v).map_err(|r| self.err(&f("max_age"), r))?),
        };
        let leeway = self.duration_or(&f("leeway"), rs.leeway.as_deref(), DEFAULT_LEEWAY)?;
        let key_sources = self.decryption_sources(&format!("sessions[{i}]"), rs.key_sources)?;
        Ok(SessionConfig {
            keys: IssuerConfig::key_holder(Arc::from(rs.name), key_sources),
            cookie: rs.cookie,
            methods,
            subject_claim,
            max_age,
            leeway,
        })
    }

    /// Content encryption methods (`default` when absent).
    fn methods(
        &self,
        field: &str,
        list: Option<Vec<String>>,
        default: &[Enc],
    ) -> Result<Vec<Enc>, ConfigError> {
        match list {
            None => Ok(default.to_vec()),
            Some(list) => self.jwe_names(field, &list, |n| {
                Enc::from_name(n).ok_or_else(|| {
                    let valid: Vec<_> = Enc::ALL.iter().map(|e| e.name()).collect();
                    format!("unknown method {n:?}; valid: {}", valid.join(", "))
                })
            }),
        }
    }

    /// A non-empty list of JWE algorithm names, each known.
    fn jwe_names<T: PartialEq>(
        &self,
        field: &str,
        list: &[String],
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        if list.is_empty() {
            return Err(self.err(field, "must name at least one"));
        }
        let mut out = Vec::with_capacity(list.len());
        for (j, name) in list.iter().enumerate() {
            let v = parse(name).map_err(|why| self.err(&format!("{field}[{j}]"), why))?;
            if !out.contains(&v) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// The key sources of decryption keys: local kinds only (a private key never comes
    /// over the network), at least one.
    fn decryption_sources(
        &self,
        at: &str,
        list: Vec<RawKeySource>,
    ) -> Result<Vec<KeySourceConfig>, ConfigError> {
        if list.is_empty() {
            return Err(self.err(
                &format!("{at}.key_sources"),
                "needs at least one key source (keystore, jwks_file or pem_file)",
            ));
        }
        let mut out = Vec::with_capacity(list.len());
        for (j, rs) in list.into_iter().enumerate() {
            let field = format!("{at}.key_sources[{j}]");
            let source = self.key_source(&field, rs)?;
            if matches!(
                source,
                KeySourceConfig::JwksUri { .. } | KeySourceConfig::Discovery { .. }
            ) {
                return Err(self.err(
                    &field,
                    "decryption keys are private: only keystore, jwks_file and pem_file sources hold them",
                ));
            }
            out.push(source);
        }
        Ok(out)
    }

    /// Reads the DPoP nonce secret from the environment or a file (at most one of them).
    fn nonce_secret(
        &self,
        env: Option<String>,
        file: Option<String>,
    ) -> Result<Option<NonceSecret>, ConfigError> {
        let (field, bytes) = match (env, file) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(self.err(
                    "dpop_nonce_secret_file",
                    "give dpop_nonce_secret_env or dpop_nonce_secret_file, not both",
                ));
            }
            (Some(name), None) => {
                let value = std::env::var_os(&name).ok_or_else(|| {
                    self.err(
                        "dpop_nonce_secret_env",
                        format!("the environment variable {name:?} is not set"),
                    )
                })?;
                ("dpop_nonce_secret_env", value.into_encoded_bytes())
            }
            (None, Some(path)) => {
                let path = self.path(&path);
                let mut bytes = std::fs::read(&path).map_err(|e| {
                    self.err(
                        "dpop_nonce_secret_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                // A file written by `echo` or a Kubernetes Secret ends with a newline.
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                ("dpop_nonce_secret_file", bytes)
            }
        };
        if bytes.len() < MIN_NONCE_SECRET_BYTES {
            return Err(self.err(
                field,
                format!(
                    "the secret has {} bytes; at least {MIN_NONCE_SECRET_BYTES} are needed (e.g. `openssl rand -base64 48`)",
                    bytes.len()
                ),
            ));
        }
        Ok(Some(NonceSecret(bytes.into())))
    }

    /// An issuer's DPoP settings.
    fn dpop(&self, i: usize, ri: &RawIssuer) -> Result<DpopConfig, ConfigError> {
        let f = |name: &str| format!("issuers[{i}].{name}");
        let required = match ri.dpop.as_deref() {
            None | Some("allowed") => false,
            Some("required") => true,
            Some(other) => {
                return Err(self.err(
                    &f("dpop"),
                    format!("{other:?} is not one of \"allowed\", \"required\""),
                ));
            }
        };
        let list: Vec<Alg> = match &ri.dpop_algorithms {
            None => DEFAULT_DPOP_ALGORITHMS.to_vec(),
            Some(names) => {
                if names.is_empty() {
                    return Err(self.err(&f("dpop_algorithms"), "must name at least one algorithm"));
                }
                let mut list = Vec::with_capacity(names.len());
                for (j, name) in names.iter().enumerate() {
                    let field = format!("issuers[{i}].dpop_algorithms[{j}]");
                    match Alg::from_name(name) {
                        Some(a) if a.kty() == crate::alg::Kty::Oct => {
                            return Err(self.err(
                                &field,
                                format!("{name:?} is symmetric: a DPoP proof is signed with the client's private key (RFC 9449 §4.2)"),
                            ));
                        }
                        Some(a) => {
                            if !list.contains(&a) {
                                list.push(a);
                            }
                        }
                        None => {
                            let valid: Vec<_> = Alg::ALL
                                .iter()
                                .filter(|a| a.kty() != crate::alg::Kty::Oct)
                                .map(|a| a.name())
                                .collect();
                            return Err(self.err(
                                &field,
                                format!("unknown algorithm {name:?}; valid: {}", valid.join(", ")),
                            ));
                        }
                    }
                }
                list
            }
        };
        let max_age = self.duration_or(
            &f("dpop_max_age"),
            ri.dpop_max_age.as_deref(),
            DEFAULT_DPOP_MAX_AGE,
        )?;
        if max_age < Duration::from_secs(1) || max_age > MAX_DPOP_MAX_AGE {
            return Err(self.err(&f("dpop_max_age"), "must be between 1s and 1h"));
        }
        let algs = list.iter().map(|a| a.name()).collect::<Vec<_>>().join(" ");
        Ok(DpopConfig {
            required,
            algorithms: list.into_iter().collect(),
            max_age,
            nonce: ri.dpop_nonce,
            algs: algs.into(),
        })
    }

    fn telemetry(&self, raw: RawTelemetry) -> Result<Option<TelemetryConfig>, ConfigError> {
        let protocol = match raw.protocol.as_deref() {
            None | Some("grpc") => OtlpProtocol::Grpc,
            Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some(other) => {
                return Err(self.err(
                    "telemetry.protocol",
                    format!("{other:?} is not one of \"grpc\", \"http/protobuf\""),
                ));
            }
        };
        let sample_ratio = raw.sample_ratio.unwrap_or(0.01);
        if !(0.0..=1.0).contains(&sample_ratio) {
            return Err(self.err("telemetry.sample_ratio", "must be between 0.0 and 1.0"));
        }
        let service_name = raw.service_name.unwrap_or_else(|| "tokengate".into());
        if service_name.is_empty() {
            return Err(self.err("telemetry.service_name", "must not be empty"));
        }
        let Some(endpoint) = raw.otlp_endpoint else {
            return Ok(None);
        };
        let url = endpoint.parse::<http::Uri>().ok().filter(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
        });
        if url.is_none() {
            return Err(self.err(
                "telemetry.otlp_endpoint",
                format!("{endpoint:?} is not an http:// or https:// URL (e.g. \"http://collector:4317\")"),
            ));
        }
        Ok(Some(TelemetryConfig {
            otlp_endpoint: endpoint,
            protocol,
            sample_ratio,
            service_name,
        }))
    }

    fn err(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    fn mode(&self, field: &str, value: &str) -> Result<Mode, ConfigError> {
        match value {
            "enforce" => Ok(Mode::Enforce),
            "shadow" => Ok(Mode::Shadow),
            other => Err(self.err(
                field,
                format!("{other:?} is not one of \"enforce\", \"shadow\""),
            )),
        }
    }

    fn duration_or(
        &self,
        field: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => parse_duration(v).map_err(|r| self.err(field, r)),
        }
    }

    fn addr(
        &self,
        field: &str,
        setting: &Setting,
        default: &str,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        let text = match setting {
            Setting::Off => return Ok(None),
            Setting::Default => default,
            Setting::Set(s) => s.as_str(),
        };
        text.parse().map(Some).map_err(|_| {
            self.err(
                field,
                format!("{text:?} is not an IP:port address (e.g. \"0.0.0.0:8181\", \"[::1]:8181\"), or null to turn it off"),
            )
        })
    }

    fn header_name(&self, field: &str, name: &str) -> Result<(), ConfigError> {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(self.err(field, format!("{name:?} is not a valid HTTP header name")))
        }
    }

    /// An issuer's or a session's name: it becomes the `issuer` label.
    fn label_name(&self, field: &str, name: &str) -> Result<(), ConfigError> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(self.err(
                field,
                "must be a non-empty word of letters, digits, '-', '_' or '.' (it becomes a metric label)",
            ));
        }
        Ok(())
    }

    fn issuer(&self, i: usize, ri: RawIssuer) -> Result<IssuerConfig, ConfigError> {
        let f = |name: &str| format!("issuers[{i}].{name}");
        self.label_name(&f("name"), &ri.name)?;
        if ri.name == "-" || ri.name == DECRYPTION_NAME {
            return Err(self.err(&f("name"), format!("{:?} is reserved", ri.name)));
        }
        if let Some(iss) = &ri.issuer
            && iss.is_empty()
        {
            return Err(self.err(
                &f("issuer"),
                "must not be empty (omit it to accept any iss)",
            ));
        }
        let dpop = self.dpop(i, &ri)?;
        let algorithms: AlgSet = match ri.algorithms {
            None => Alg::DEFAULT_ALLOWED.into_iter().collect(),
            Some(list) => {
                if list.is_empty() {
                    return Err(self.err(&f("algorithms"), "must name at least one algorithm"));
                }
                let mut set = AlgSet::EMPTY;
                for (j, name) in list.iter().enumerate() {
                    match Alg::from_name(name) {
                        Some(a) => set.insert(a),
                        None => {
                            let valid: Vec<_> = Alg::ALL.iter().map(|a| a.name()).collect();
                            return Err(self.err(
                                &format!("issuers[{i}].algorithms[{j}]"),
                                format!("unknown algorithm {name:?}; valid: {}", valid.join(", ")),
                            ));
                        }
                    }
                }
                set
            }
        };
        let leeway = self.duration_or(&f("leeway"), ri.leeway.as_deref(), DEFAULT_LEEWAY)?;
        let max_lifetime = match ri.max_lifetime.as_deref() {
            None => None,
            Some(v) => Some(parse_duration(v).map_err(|r| self.err(&f("max_lifetime"), r))?),
        };
        let max_key_age = match ri.max_key_age.as_deref() {
            None => None,
            Some(v) => Some(parse_duration(v).map_err(|r| self.err(&f("max_key_age"), r))?),
        };
        let certificate_validity = match ri.certificate_validity.as_deref() {
            None | Some("iat") => CertificateValidity::Iat,
            Some("now") => CertificateValidity::Now,
            Some("off") => CertificateValidity::Off,
            Some(other) => {
                return Err(self.err(
                    &f("certificate_validity"),
                    format!("{other:?} is not one of \"iat\", \"now\", \"off\""),
                ));
            }
        };
        if ri.key_sources.is_empty() {
            return Err(self.err(
                &f("key_sources"),
                "an issuer needs at least one key source (jwks_uri, discovery, jwks_file, keystore or pem_file)",
            ));
        }
        let mut key_sources = Vec::with_capacity(ri.key_sources.len());
        for (j, rs) in ri.key_sources.into_iter().enumerate() {
            key_sources.push(self.key_source(&format!("issuers[{i}].key_sources[{j}]"), rs)?);
        }
        if ri.audiences.iter().any(String::is_empty) {
            return Err(self.err(&f("audiences"), "an audience must not be empty"));
        }
        Ok(IssuerConfig {
            require_encryption: ri.require_encryption,
            name: ri.name.into(),
            issuer: ri.issuer,
            audiences: ri.audiences,
            algorithms,
            require_typ: ri.require_typ,
            required_claims: ri
                .required_claims
                .unwrap_or_else(|| DEFAULT_REQUIRED_CLAIMS.map(String::from).to_vec()),
            leeway,
            max_lifetime,
            max_key_age,
            certificate_validity,
            key_sources,
            dpop,
        })
    }

    fn key_source(&self, field: &str, rs: RawKeySource) -> Result<KeySourceConfig, ConfigError> {
        const KINDS: &str = "jwks_uri, discovery, jwks_file, keystore, pem_file";
        let kinds = [
            ("jwks_uri", rs.jwks_uri.is_some()),
            ("discovery", rs.discovery.is_some()),
            ("jwks_file", rs.jwks_file.is_some()),
            ("keystore", rs.keystore.is_some()),
            ("pem_file", rs.pem_file.is_some()),
        ];
        let present: Vec<&str> = kinds.iter().filter(|k| k.1).map(|k| k.0).collect();
        let kind = match present.as_slice() {
            [one] => *one,
            [] => {
                return Err(self.err(field, format!("a key source needs exactly one of {KINDS}")));
            }
            many => {
                return Err(self.err(
                    field,
                    format!(
                        "a key source has exactly one of {KINDS}, this one has {}",
                        many.join(" and ")
                    ),
                ));
            }
        };
        // Fields that belong to other kinds are a mistake worth naming.
        let remote_fields = [
            ("refresh", rs.refresh.is_some()),
            ("miss_refetch_interval", rs.miss_refetch_interval.is_some()),
            ("max_stale", rs.max_stale.is_some()),
            ("timeout", rs.timeout.is_some()),
            ("ca_file", rs.ca_file.is_some()),
        ];
        let keystore_fields = [
            ("store_type", rs.store_type.is_some()),
            ("password_env", rs.password_env.is_some()),
            ("password_file", rs.password_file.is_some()),
            ("password_encoding", rs.password_encoding.is_some()),
            ("aliases", rs.aliases.is_some()),
        ];
        let pem_fields = [("kid", rs.kid.is_some())];
        let allowed: &[&str] = match kind {
            "jwks_uri" | "discovery" => &[
                "refresh",
                "miss_refetch_interval",
                "max_stale",
                "timeout",
                "ca_file",
            ],
            "keystore" => &[
                "store_type",
                "password_env",
                "password_file",
                "password_encoding",
                "aliases",
            ],
            "pem_file" => &["kid"],
            _ => &[],
        };
        for (name, set) in remote_fields
            .iter()
            .chain(keystore_fields.iter())
            .chain(pem_fields.iter())
        {
            if *set && !allowed.contains(name) {
                return Err(self.err(
                    &format!("{field}.{name}"),
                    format!("does not apply to a {kind} source"),
                ));
            }
        }

        let remote = |url: &str| -> Result<RemoteSettings, ConfigError> {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| self.err(&format!("{field}.{kind}"), format!("not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(self.err(
                    &format!("{field}.{kind}"),
                    "the scheme must be https (or http)",
                ));
            }
            let d = |name: &str, v: &Option<String>, def| {
                self.duration_or(&format!("{field}.{name}"), v.as_deref(), def)
            };
            let settings = RemoteSettings {
                refresh: d("refresh", &rs.refresh, DEFAULT_REFRESH)?,
                miss_refetch_interval: d(
                    "miss_refetch_interval",
                    &rs.miss_refetch_interval,
                    DEFAULT_MISS_REFETCH_INTERVAL,
                )?,
                max_stale: d("max_stale", &rs.max_stale, DEFAULT_MAX_STALE)?,
                timeout: d("timeout", &rs.timeout, DEFAULT_FETCH_TIMEOUT)?,
                ca_file: rs.ca_file.as_deref().map(|p| self.path(p)),
            };
            if settings.refresh < Duration::from_secs(1) {
                return Err(self.err(&format!("{field}.refresh"), "must be at least 1s"));
            }
            if settings.timeout.is_zero() {
                return Err(self.err(&format!("{field}.timeout"), "must be more than 0s"));
            }
            Ok(settings)
        };

        Ok(match kind {
            "jwks_uri" => {
                let url = rs.jwks_uri.clone().unwrap_or_default();
                KeySourceConfig::JwksUri {
                    settings: remote(&url)?,
                    url,
                }
            }
            "discovery" => {
                let url = rs.discovery.clone().unwrap_or_default();
                KeySourceConfig::Discovery {
                    settings: remote(&url)?,
                    url,
                }
            }
            "jwks_file" => KeySourceConfig::JwksFile {
                path: self.path(rs.jwks_file.as_deref().unwrap_or_default()),
            },
            "pem_file" => {
                let Some(kid) = rs.kid.filter(|k| !k.is_empty()) else {
                    return Err(self.err(
                        &format!("{field}.kid"),
                        "a pem_file source needs the kid its key is known by",
                    ));
                };
                KeySourceConfig::PemFile {
                    path: self.path(rs.pem_file.as_deref().unwrap_or_default()),
                    kid,
                }
            }
            _ => {
                if let Some(t) = &rs.store_type
                    && !t.eq_ignore_ascii_case("pkcs12")
                {
                    return Err(self.err(
                        &format!("{field}.store_type"),
                        format!("{t:?} is not supported; valid: \"PKCS12\""),
                    ));
                }
                let password = match (rs.password_env, rs.password_file) {
                    (Some(env), None) if !env.is_empty() => PasswordSource::Env(env),
                    (None, Some(file)) if !file.is_empty() => {
                        PasswordSource::File(self.path(&file))
                    }
                    (Some(_), Some(_)) => {
                        return Err(self.err(
                            &format!("{field}.password_file"),
                            "give either password_env or password_file, not both",
                        ));
                    }
                    _ => {
                        return Err(self.err(
                            &format!("{field}.password_env"),
                            "a keystore needs password_env or password_file",
                        ));
                    }
                };
                let encoding = match rs.password_encoding.as_deref() {
                    None | Some("base64") => PasswordEncoding::Base64,
                    Some("plain") => PasswordEncoding::Plain,
                    Some(other) => {
                        return Err(self.err(
                            &format!("{field}.password_encoding"),
                            format!("{other:?} is not one of \"base64\", \"plain\""),
                        ));
                    }
                };
                let aliases = rs.aliases.unwrap_or_default();
                if aliases.is_empty() {
                    return Err(self.err(
                        &format!("{field}.aliases"),
                        "a keystore mapping needs at least one alias (the first is active)",
                    ));
                }
                let mut seen = BTreeSet::new();
                for (k, a) in aliases.iter().enumerate() {
                    if a.is_empty() || !seen.insert(a.to_lowercase()) {
                        return Err(self.err(
                            &format!("{field}.aliases[{k}]"),
                            format!(
                                "{a:?} is empty or repeated (aliases are matched case-insensitively)"
                            ),
                        ));
                    }
                }
                KeySourceConfig::Keystore {
                    path: self.path(rs.keystore.as_deref().unwrap_or_default()),
                    password,
                    encoding,
                    aliases,
                }
            }
        })
    }
}

/// Why a JWE algorithm tokengate knows of is never accepted (`None`: not one of them).
fn refused_jwe_name(name: &str) -> Option<String> {
    if name == "RSA1_5" {
        Some("\"RSA1_5\" is never accepted: RSAES-PKCS1-v1_5 decryption is open to padding-oracle attacks (use RSA-OAEP-256)".into())
    } else if name.starts_with("PBES2-") {
        Some(format!(
            "{name:?} is never accepted: password-based key wrapping lets a token set the work factor (p2c) of every check"
        ))
    } else {
        None
    }
}

/// Parses a duration such as `"30s"`, `"5m"`, `"1h30m"`, `"250ms"`, `"1d"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{text:?} is not a duration; write a number and a unit (ms, s, m, h, d), e.g. \"30s\", \"5m\", \"1h30m\""
        )
    };
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

impl fmt::Display for CertificateValidity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertificateValidity::Iat => "iat",
            CertificateValidity::Now => "now",
            CertificateValidity::Off => "off",
        })
    }
}

#[cfg(test)]
mod tests;
