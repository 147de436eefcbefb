//! The outcome of one check and its single mapping to everything outside: the metric
//! label, the HTTP status, the RFC 6750 `WWW-Authenticate` challenge and the gRPC code.
//! Every listener encodes a [`Decision`] through this table and nowhere else.

use std::sync::Arc;

/// The realm every challenge names.
pub const REALM: &str = "tokengate";

/// Why a request was allowed. The values are the `reason` label of allowed decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllowReason {
    /// A valid token satisfied the route's policy.
    Ok,
    /// The route allows anonymous requests and none carried a token.
    Anonymous,
}

/// Why a request was denied: the closed list of SPEC §7 deny reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No token in any configured header or cookie, on a route that needs one.
    MissingToken,
    /// The request itself is ambiguous: two `Authorization` headers, or a path that
    /// upstreams may resolve differently (`%2F`, `..;`).
    InvalidRequest,
    /// The token is not a well-formed compact JWS with a JSON header and claims, or its
    /// header asks for something tokengate does not do (`crit`, `b64: false`).
    Malformed,
    /// The token is larger than `token.max_bytes`.
    TooLarge,
    /// `alg` is `none`, unknown, not allowed for the issuer, or does not fit the key.
    BadAlg,
    /// No configured issuer matches the token's `iss`.
    BadIssuer,
    /// No key of the issuer could verify the token (unknown kid, no compatible key).
    UnknownKey,
    /// The token names, or was verified only by, a revoked key.
    RevokedKey,
    /// Compatible keys exist but none verified the signature.
    BadSignature,
    /// `exp` is in the past (beyond leeway), or a required `exp` is missing.
    Expired,
    /// `nbf` or `iat` is in the future (beyond leeway).
    NotYetValid,
    /// `exp - iat` is longer than the issuer's `max_lifetime`.
    LifetimeExceeded,
    /// The certificate that verified the token was not valid at the token's `iat` (or now).
    KeyOutOfValidity,
    /// `aud` does not intersect the issuer's audiences.
    BadAudience,
    /// The header `typ` is not one of `require_typ`.
    BadType,
    /// The token is valid but lacks the scopes the route requires.
    InsufficientScope,
    /// The token is valid and has the scopes, but one of the route's rules is not true.
    RuleFailed,
    /// The issuer's keys have never loaded: the token was not judged.
    KeysUnavailable,
    /// A `DPoP`-scheme request without exactly one `DPoP` header, or a proof failing one
    /// of its own checks (RFC 9449 §4.3).
    InvalidDpopProof,
    /// The issuer wants a server nonce in proofs, and this proof's is missing, unknown or
    /// too old: the answer carries a fresh `DPoP-Nonce`.
    UseDpopNonce,
    /// The token is bound to a key or certificate the request did not prove (`cnf.jkt`
    /// sent as `Bearer`, another proof key, another or no client certificate), or is
    /// unbound where the issuer requires DPoP.
    BindingMismatch,
    /// An encrypted token (compact JWE) that no decryption key opens, or whose plaintext
    /// is not the one JWS it must be (SPEC §10).
    BadDecryption,
    /// A session cookie that does not decrypt under its session's keys, or whose
    /// content fails the session's checks (`exp`, `max_age`, subject) (SPEC §10).
    BadSession,
}

/// The HTTP-facing error class of a denial (RFC 6750 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// 401, a challenge without an error code: no credentials were presented.
    NoCredentials,
    /// 400 `invalid_request`.
    InvalidRequest,
    /// 401 `invalid_token`.
    InvalidToken,
    /// 403 `insufficient_scope`.
    InsufficientScope,
    /// 503: nothing was judged, no challenge.
    Unavailable,
    /// 401 `invalid_dpop_proof` (RFC 9449 §7.1).
    InvalidDpopProof,
    /// 401 `use_dpop_nonce` (RFC 9449 §9).
    UseDpopNonce,
}

/// The gRPC status code a denial maps to (google.rpc.Code numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCode {
    /// 3
    InvalidArgument = 3,
    /// 7
    PermissionDenied = 7,
    /// 14
    Unavailable = 14,
    /// 16
    Unauthenticated = 16,
}

/// A denial: the reason, and for `insufficient_scope` the scopes the route wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Why.
    pub reason: DenyReason,
    /// Space-separated scopes the route requires (for `insufficient_scope`).
    pub scope: Option<Arc<str>>,
    /// The request used the `DPoP` scheme, or the token is DPoP-bound: the challenge is
    /// `DPoP` with these parameters (RFC 9449 §7.1) instead of `Bearer`.
    pub dpop: Option<Box<DpopChallenge>>,
}

/// The parameters of a `DPoP` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopChallenge {
    /// The proof algorithms accepted, space-separated (`algs`).
    pub algs: Arc<str>,
    /// A fresh server nonce (`DPoP-Nonce`), with `use_dpop_nonce`.
    pub nonce: Option<String>,
}

/// An allowed request: what to tell the upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowed {
    /// Why it was allowed.
    pub reason: AllowReason,
    /// Headers to set on the upstream request (name in lower case, value).
    pub forward_headers: Vec<(Arc<str>, String)>,
    /// Header names the client may have sent that must be removed before forwarding
    /// (all configured forward-header names, whether or not they are set now, and the
    /// request's spoofed spellings of them).
    pub headers_to_remove: Arc<[Arc<str>]>,
    /// The verified claims (absent for anonymous requests).
    pub claims: Option<Claims>,
    /// Shadow mode (SPEC §9): the request was denied for this reason, and is let through
    /// with [`SHADOW_DENY_HEADER`] set to it.
    pub shadow_deny: Option<DenyReason>,
}

/// The forward header that carries a shadow-mode denial's reason to the app. Like every
/// forward header, a client's copy never reaches the app.
pub const SHADOW_DENY_HEADER: &str = "x-tokengate-shadow-deny";

/// The verified claims, kept as the token's own payload segment (base64url JSON) and
/// decoded only by the listeners that need them as a map (gRPC dynamic metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims(Arc<str>);

/// What the authorizer decided about one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Let it through.
    Allow(Allowed),
    /// Refuse it.
    Deny(Denial),
}

// === impl AllowReason ===

impl AllowReason {
    /// Every allow reason, in label order.
    pub const ALL: [AllowReason; 2] = [AllowReason::Ok, AllowReason::Anonymous];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            AllowReason::Ok => "ok",
            AllowReason::Anonymous => "anonymous",
        }
    }
}

// === impl DenyReason ===

impl DenyReason {
    /// Every deny reason, in SPEC order.
    pub const ALL: [DenyReason; 23] = [
        DenyReason::MissingToken,
        DenyReason::InvalidRequest,
        DenyReason::Malformed,
        DenyReason::TooLarge,
        DenyReason::BadAlg,
        DenyReason::BadIssuer,
        DenyReason::UnknownKey,
        DenyReason::RevokedKey,
        DenyReason::BadSignature,
        DenyReason::Expired,
        DenyReason::NotYetValid,
        DenyReason::LifetimeExceeded,
        DenyReason::KeyOutOfValidity,
        DenyReason::BadAudience,
        DenyReason::BadType,
        DenyReason::InsufficientScope,
        DenyReason::RuleFailed,
        DenyReason::KeysUnavailable,
        DenyReason::InvalidDpopProof,
        DenyReason::UseDpopNonce,
        DenyReason::BindingMismatch,
        DenyReason::BadDecryption,
        DenyReason::BadSession,
    ];

    /// The one mapping table: (label, challenge, description). The descriptions are
    /// fixed strings: they never carry token content, key material or key lists.
    fn row(self) -> (&'static str, Challenge, &'static str) {
        use Challenge::*;
        match self {
            DenyReason::MissingToken => ("missing_token", NoCredentials, ""),
            DenyReason::InvalidRequest => (
                "invalid_request",
                InvalidRequest,
                "the request is ambiguous: more than one token, or a path servers read differently",
            ),
            DenyReason::Malformed => ("malformed", InvalidToken, "the token is malformed"),
            DenyReason::TooLarge => ("too_large", InvalidToken, "the token is too large"),
            DenyReason::BadAlg => (
                "bad_alg",
                InvalidToken,
                "the token's signing algorithm is not accepted",
            ),
            DenyReason::BadIssuer => (
                "bad_issuer",
                InvalidToken,
                "the token's issuer is not trusted",
            ),
            DenyReason::UnknownKey => (
                "unknown_key",
                InvalidToken,
                "the token's signing key is not known",
            ),
            DenyReason::RevokedKey => (
                "revoked_key",
                InvalidToken,
                "the token's signing key has been revoked",
            ),
            DenyReason::BadSignature => (
                "bad_signature",
                InvalidToken,
                "the token's signature is invalid",
            ),
            DenyReason::Expired => ("expired", InvalidToken, "the token has expired"),
            DenyReason::NotYetValid => {
                ("not_yet_valid", InvalidToken, "the token is not yet valid")
            }
            DenyReason::LifetimeExceeded => (
                "lifetime_exceeded",
                InvalidToken,
                "the token's lifetime is longer than allowed",
            ),
            DenyReason::KeyOutOfValidity => (
                "key_out_of_validity",
                InvalidToken,
                "the token was signed outside its key's validity period",
            ),
            DenyReason::BadAudience => (
                "bad_audience",
                InvalidToken,
                "the token is not meant for this audience",
            ),
            DenyReason::BadType => ("bad_type", InvalidToken, "the token's type is not accepted"),
            DenyReason::InsufficientScope => (
                "insufficient_scope",
                InsufficientScope,
                "the token lacks the required scope",
            ),
            // Names no rule: which rule failed is the operator's to know (the decision
            // log and the metric by route), not the client's.
            DenyReason::RuleFailed => (
                "rule_failed",
                InsufficientScope,
                "the request is not allowed by the route's policy",
            ),
            DenyReason::KeysUnavailable => (
                "keys_unavailable",
                Unavailable,
                "the issuer's keys are not available yet",
            ),
            // Names no check: a prober learns nothing from which one failed.
            DenyReason::InvalidDpopProof => (
                "invalid_dpop_proof",
                InvalidDpopProof,
                "the DPoP proof is missing or invalid",
            ),
            DenyReason::UseDpopNonce => (
                "use_dpop_nonce",
                UseDpopNonce,
                "the DPoP proof must carry the nonce in the DPoP-Nonce header",
            ),
            DenyReason::BindingMismatch => (
                "binding_mismatch",
                InvalidToken,
                "the token is bound to a key or certificate the request did not prove",
            ),
            // One description for every way a JWE fails: no padding oracle.
            DenyReason::BadDecryption => (
                "bad_decryption",
                InvalidToken,
                "the encrypted token cannot be decrypted",
            ),
            DenyReason::BadSession => ("bad_session", InvalidToken, "the session is not valid"),
        }
    }

    /// The metric label value (SPEC §7).
    pub fn label(self) -> &'static str {
        self.row().0
    }

    /// The RFC 6750 error class.
    pub fn challenge(self) -> Challenge {
        self.row().1
    }

    /// A short, fixed, human-readable description.
    pub fn description(self) -> &'static str {
        self.row().2
    }

    /// The HTTP status code of the denial.
    pub fn http_status(self) -> u16 {
        match self.challenge() {
            Challenge::NoCredentials
            | Challenge::InvalidToken
            | Challenge::InvalidDpopProof
            | Challenge::UseDpopNonce => 401,
            Challenge::InvalidRequest => 400,
            Challenge::InsufficientScope => 403,
            Challenge::Unavailable => 503,
        }
    }

    /// The gRPC status code of the denial.
    pub fn grpc_code(self) -> GrpcCode {
        match self.challenge() {
            Challenge::NoCredentials
            | Challenge::InvalidToken
            | Challenge::InvalidDpopProof
            | Challenge::UseDpopNonce => GrpcCode::Unauthenticated,
            Challenge::InvalidRequest => GrpcCode::InvalidArgument,
            Challenge::InsufficientScope => GrpcCode::PermissionDenied,
            Challenge::Unavailable => GrpcCode::Unavailable,
        }
    }

    /// The index of this reason in [`DenyReason::ALL`] (for pre-resolved handle tables).
    pub fn index(self) -> usize {
        self as usize
    }
}

// === impl Allowed ===

impl Allowed {
    /// The names an ext_authz answer lists for removal: [`Allowed::headers_to_remove`]
    /// less the ones this allow sets (Envoy removes after it sets, so a name set here
    /// must not be listed; its value overwrites the client's copy anyway).
    pub fn removals(&self) -> impl Iterator<Item = &str> {
        self.headers_to_remove
            .iter()
            .filter(|name| !self.forward_headers.iter().any(|(set, _)| set == *name))
            .map(|name| &**name)
    }
}

// === impl Denial ===

impl Denial {
    /// A denial without a scope hint.
    pub fn new(reason: DenyReason) -> Self {
        Self {
            reason,
            scope: None,
            dpop: None,
        }
    }

    /// This denial answered with a `DPoP` challenge.
    pub fn with_dpop(mut self, algs: &Arc<str>, nonce: Option<String>) -> Self {
        self.dpop = Some(Box::new(DpopChallenge {
            algs: algs.clone(),
            nonce,
        }));
        self
    }

    /// The `WWW-Authenticate` header value, or `None` where no challenge is sent (503).
    /// The scheme is `DPoP` (with `algs`) when [`Denial::dpop`] is set, else `Bearer`.
    pub fn www_authenticate(&self) -> Option<String> {
        let reason = self.reason;
        let challenge = reason.challenge();
        let scheme = if self.dpop.is_some() {
            "DPoP"
        } else {
            "Bearer"
        };
        let code = match challenge {
            Challenge::NoCredentials => {
                let mut value = format!("{scheme} realm=\"{REALM}\"");
                self.push_algs(&mut value);
                return Some(value);
            }
            Challenge::Unavailable => return None,
            Challenge::InvalidRequest => "invalid_request",
            Challenge::InvalidToken => "invalid_token",
            Challenge::InsufficientScope => "insufficient_scope",
            Challenge::InvalidDpopProof => "invalid_dpop_proof",
            Challenge::UseDpopNonce => "use_dpop_nonce",
        };
        let mut value = format!(
            "{scheme} realm=\"{REALM}\", error=\"{code}\", error_description=\"{}\"",
            reason.description()
        );
        if let Some(scope) = &self.scope {
            value.push_str(", scope=\"");
            value.push_str(scope);
            value.push('"');
        }
        self.push_algs(&mut value);
        Some(value)
    }

    fn push_algs(&self, value: &mut String) {
        if let Some(d) = &self.dpop {
            value.push_str(", algs=\"");
            value.push_str(&d.algs);
            value.push('"');
        }
    }

    /// Every header of this denial's answer besides its status, on every listener (HTTP
    /// answers, the proxy's, gRPC's `DeniedHttpResponse`): the challenge, `retry-after`
    /// on 503, `cache-control: no-store` and the JSON body's content type.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(4);
        if let Some(challenge) = self.www_authenticate() {
            out.push(("www-authenticate", challenge));
        }
        if self.reason.http_status() == 503 {
            out.push(("retry-after", "5".to_string()));
        }
        if let Some(nonce) = self.dpop.as_ref().and_then(|d| d.nonce.as_ref()) {
            out.push(("dpop-nonce", nonce.clone()));
        }
        out.push(("cache-control", "no-store".to_string()));
        out.push(("content-type", "application/json".to_string()));
        out
    }

    /// The short JSON body listeners send with a denial.
    pub fn json_body(&self) -> String {
        serde_json::json!({
            "error": self.reason.label(),
            "error_description": self.reason.description(),
        })
        .to_string()
    }
}

impl From<DenyReason> for Denial {
    fn from(reason: DenyReason) -> Self {
        Denial::new(reason)
    }
}

// === impl Claims ===

impl Claims {
    /// Wraps a verified payload segment.
    pub fn new(payload_b64: &str) -> Self {
        Self(payload_b64.into())
    }

    /// The payload segment, base64url (what the claims header carries).
    pub fn payload_b64(&self) -> &str {
        &self.0
    }

    /// The claims as a JSON object (`None` cannot happen for a verified token, whose
    /// payload was decoded and parsed before it was accepted).
    pub fn to_map(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(self.0.as_bytes())
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

// === impl Decision ===

impl Decision {
    /// The `reason` label of this decision.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Allow(a) => a.reason.label(),
            Decision::Deny(d) => d.reason.label(),
        }
    }

    /// True when the request may pass.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// The HTTP status a listener answers with (200 for an allow).
    pub fn http_status(&self) -> u16 {
        match self {
            Decision::Allow(_) => 200,
            Decision::Deny(d) => d.reason.http_status(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_label() {
        let mut labels: Vec<_> = DenyReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), DenyReason::ALL.len());
        for (i, r) in DenyReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "ALL must be in declaration order");
        }
    }

    #[test]
    fn challenges_follow_rfc6750() {
        let missing = Denial::new(DenyReason::MissingToken);
        assert_eq!(
            missing.www_authenticate().as_deref(),
            Some("Bearer realm=\"tokengate\"")
        );
        assert_eq!(DenyReason::MissingToken.http_status(), 401);

        let expired = Denial::new(DenyReason::Expired)
            .www_authenticate()
            .unwrap_or_default();
        assert!(expired.starts_with("Bearer realm=\"tokengate\", error=\"invalid_token\""));

        let scope = Denial {
            reason: DenyReason::InsufficientScope,
            scope: Some("orders:write".into()),
            dpop: None,
        };
        assert_eq!(scope.reason.http_status(), 403);
        assert!(
            scope
                .www_authenticate()
                .unwrap_or_default()
                .ends_with("error=\"insufficient_scope\", error_description=\"the token lacks the required scope\", scope=\"orders:write\"")
        );
        assert_eq!(DenyReason::InvalidRequest.http_status(), 400);
        assert_eq!(DenyReason::KeysUnavailable.http_status(), 503);
        assert!(
            Denial::new(DenyReason::KeysUnavailable)
                .www_authenticate()
                .is_none()
        );
        assert_eq!(
            DenyReason::KeysUnavailable.grpc_code(),
            GrpcCode::Unavailable
        );
        assert_eq!(
            DenyReason::InsufficientScope.grpc_code(),
            GrpcCode::PermissionDenied
        );
    }
}
