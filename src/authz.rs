//! The one decision path. Every listener builds a [`RequestView`] and calls
//! [`Authorizer::check`]; the [`Verdict`] it gets back carries the [`Decision`] to
//! encode, and what the decision was based on (issuer, key, how the key was found).
//! The authorizer counts the decision through a pre-resolved handle, observes its
//! duration and logs one event, identifying the token only by a fingerprint.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use serde_json::Value;
use tracing::Instrument as _;

use crate::audit::{self, AuditLog};
use crate::binding::nonce::NonceKey;
use crate::binding::{self, Binder, Binding, Offered};
use crate::cache::TokenCache;
use crate::claims::{self, Principal};
use crate::clock::Clock;
use crate::config::{Config, Mode, SessionConfig};
use crate::decision::{
    AllowReason, Allowed, Claims, Decision, Denial, DenyReason, DpopChallenge, SHADOW_DENY_HEADER,
};
use crate::issuer::{Issuer, Issuers};
use crate::jwe::{Enc, KeyAlg};
use crate::keys::{Key, KeyRing, MatchKind};
use crate::metrics::{DecisionHandles, Listener, Metrics};
use crate::request;
use crate::request::Peer;
pub use crate::request::RequestView;
use crate::routes::{Route, Routes};
use crate::rules::{RuleClaims, RuleInput};
use crate::telemetry;
use crate::token::extract::{Headers, extract_presented};
use crate::token::jws::{self, ClaimSet, ClaimValue};
use crate::token::memo::HeaderMemo;
use crate::verify::{self, VerifiedToken};

mod encrypted;

/// A decision and what it rests on.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The decision to encode.
    pub decision: Decision,
    /// The issuer that judged the token.
    pub issuer: Option<Arc<str>>,
    /// The key that verified it.
    pub key: Option<Arc<Key>>,
    /// How the key was found.
    pub matched: Option<MatchKind>,
    /// Answered from the verified-token cache.
    pub cached: bool,
    /// First 8 hex digits of the token's SHA-256.
    pub fingerprint: Option<Fingerprint>,
    /// The key that decrypted an encrypted token or a session (SPEC §10), and how it
    /// was found.
    pub decrypted: Option<(Arc<Key>, MatchKind)>,
}

/// Everything a decision depends on that a config reload replaces at once.
pub struct Policy {
    /// The config it was built from.
    pub config: Arc<Config>,
    /// Issuers and their keys.
    pub issuers: Issuers,
    routes: Routes,
    cache: TokenCache,
    /// Per listener; only the listeners the config turns on export series (the offline
    /// `verify` command exports none).
    handles: [Option<DecisionHandles>; 4],
    claim_headers: Vec<(Arc<str>, String)>,
    claims_header: Option<Arc<str>>,
    headers_to_remove: Arc<[Arc<str>]>,
    /// The key DPoP nonces are made and checked with.
    nonces: Arc<NonceKey>,
    /// Every issuer's `dpop_algorithms`: the `algs` of a `DPoP` challenge when no
    /// issuer was picked.
    dpop_algs: Arc<str>,
    /// The keys and allowlists of encrypted access tokens (SPEC §10).
    pub decryption: Option<Decryptor>,
    /// Shared JWT sessions (SPEC §10), in config order; session `i` is counted as the
    /// holder `issuers.len() + i` (decision series, cache entries, principals).
    pub sessions: Vec<Session>,
}

/// The `decryption` section in force: its key holder and allowlists.
#[derive(Debug)]
pub struct Decryptor {
    /// The keys (named `decryption`).
    pub holder: Issuer,
    /// `decryption.algorithms`.
    pub algorithms: Vec<KeyAlg>,
    /// `decryption.methods`.
    pub methods: Vec<Enc>,
}

/// One session in force: its settings and its keys.
#[derive(Debug)]
pub struct Session {
    /// `sessions[i]`.
    pub config: SessionConfig,
    /// Its keys (named after the session).
    pub holder: Issuer,
}

/// The authorizer: the current policy, swapped atomically on reload.
pub struct Authorizer {
    policy: ArcSwap<Policy>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// Fallback signature checks, per process (kept across config reloads).
    budget: verify::FallbackBudget,
    /// The decision log's writer, started by the first policy that turns it on.
    audit: OnceLock<AuditLog>,
    /// Proof-of-possession state (the DPoP replay cache), kept across config reloads.
    binder: Binder,
    /// The headers of tokens that verified, and of JWEs that opened, by their segment:
    /// read once (`token::memo`).
    jws_headers: HeaderMemo<jws::Header>,
    jwe_headers: HeaderMemo<crate::jwe::Header>,
}

/// What a token is judged for: the policy, the route and the request (for its rules).
struct Ask<'a, H: ?Sized> {
    policy: &'a Policy,
    route: Option<&'a Route>,
    /// Shadow mode applies (a scope denial keeps the allow it would have been).
    shadow: bool,
    /// The judged method and path.
    method: &'a str,
    path: &'a str,
    headers: &'a H,
    /// What the request offers to prove a bound token with.
    listener: Listener,
    peer: Peer<'a>,
    dpop_scheme: bool,
    token: &'a str,
}

struct Judged {
    decision: Decision,
    issuer: Option<usize>,
    key: Option<Arc<Key>>,
    matched: Option<MatchKind>,
    cached: bool,
    /// For a valid token refused by the route's scopes: the allow it would get (what
    /// shadow mode forwards).
    valid: Option<Allowed>,
    /// The valid token's subject (kept only while the decision log is on).
    subject: Option<Arc<str>>,
    /// The key that decrypted the token or session, and how it was found.
    decrypted: Option<(Arc<Key>, MatchKind)>,
}

// === impl Policy ===

impl Policy {
    /// Builds the policy of `config` over already-built issuers.
    /// `holders` are the issuers, then each session's keys, then the `decryption` keys
    /// ([`Config::key_holders`]).
    pub fn new(config: Arc<Config>, holders: Vec<Issuer>, metrics: &Metrics) -> Self {
        let mut holders = holders.into_iter();
        let issuers = Issuers::new(holders.by_ref().take(config.issuers.len()).collect());
        let sessions: Vec<Session> = config
            .sessions
            .iter()
            .zip(holders.by_ref())
            .map(|(c, holder)| Session {
                config: c.clone(),
                holder,
            })
            .collect();
        let decryption = config
            .decryption
            .as_ref()
            .zip(holders.next())
            .map(|(d, holder)| Decryptor {
                holder,
                algorithms: d.algorithms.clone(),
                methods: d.methods.clone(),
            });
        // Sessions decide like issuers: their names are `issuer` label values.
        let names: Vec<&str> = issuers
            .iter()
            .map(|i| &*i.config.name)
            .chain(sessions.iter().map(|s| &*s.holder.config.name))
            .collect();
        let reasons: Vec<(&str, &str)> = AllowReason::ALL
            .iter()
            .map(|r| ("allow", r.label()))
            .chain(DenyReason::ALL.iter().map(|r| ("deny", r.label())))
            .collect();
        let handles = [
            Listener::Proxy,
            Listener::AuthzHttp,
            Listener::AuthzGrpc,
            Listener::Cli,
        ]
        .map(|l| {
            let on = match l {
                Listener::Proxy => config.listeners.proxy.is_some(),
                Listener::AuthzHttp => config.listeners.authz_http.is_some(),
                Listener::AuthzGrpc => config.listeners.authz_grpc.is_some(),
                Listener::Cli => false,
            };
            on.then(|| metrics.decision_handles(l, &names, &reasons))
        });
        let claim_headers: Vec<(Arc<str>, String)> = config
            .forward
            .claim_headers
            .iter()
            .map(|(h, c)| (Arc::from(h.as_str()), c.clone()))
            .collect();
        let claims_header: Option<Arc<str>> =
            config.forward.claims_header.as_deref().map(Arc::from);
        let headers_to_remove: Arc<[Arc<str>]> = claim_headers
            .iter()
            .map(|(h, _)| h.clone())
            .chain(claims_header.clone())
            .chain(std::iter::once(Arc::from(SHADOW_DENY_HEADER)))
            .collect();
        let cache = TokenCache::new(
            config.cache.max_entries,
            config.cache.max_ttl,
            metrics.cache(),
        );
        let mut dpop_algs: Vec<&str> = Vec::new();
        for i in &config.issuers {
            for a in i.dpop.algs.split(' ') {
                if !dpop_algs.contains(&a) {
                    dpop_algs.push(a);
                }
            }
        }
        let dpop_algs = Arc::from(dpop_algs.join(" "));
        Self {
            nonces: binding::nonce_key(&config),
            dpop_algs,
            decryption,
            sessions,
            routes: Routes::new(&config.routes, metrics),
            issuers,
            cache,
            handles,
            claim_headers,
            claims_header,
            headers_to_remove,
            config,
        }
    }

    /// Every key holder: the issuers, each session's keys, the `decryption` keys.
    pub fn holders(&self) -> impl Iterator<Item = &Issuer> {
        self.issuers
            .iter()
            .chain(self.sessions.iter().map(|s| &s.holder))
            .chain(self.decryption.iter().map(|d| &d.holder))
    }

    /// The issuer or session that decision slot `index` stands for.
    pub fn holder(&self, index: usize) -> Option<&Issuer> {
        self.issuers.get(index).or_else(|| {
            let n = self.issuers.len();
            index
                .checked_sub(n)
                .and_then(|s| self.sessions.get(s))
                .map(|s| &s.holder)
        })
    }

    /// The ring generation a verdict about a token of holder `index` rests on; for an
    /// encrypted token also on the `decryption` keys. Generations come from one counter
    /// that only grows, so the larger of two changes whenever either does.
    fn generation(&self, index: usize, encrypted: bool) -> u64 {
        let own = self.holder(index).map_or(0, |i| i.keys.generation());
        match (&self.decryption, encrypted) {
            (Some(d), true) => own.max(d.holder.keys.generation()),
            _ => own,
        }
    }

    /// What a principal keeps of its claims for some policies: the decision log's subject
    /// (the `audit.subject_claim`, or a session's `subject_claim`), and the claims the
    /// route rules read.
    fn kept_claims(
        &self,
        claims: &ClaimSet<'_>,
        session_subject: Option<&str>,
    ) -> (Option<Arc<str>>, Option<RuleClaims>) {
        let subject = self.config.audit.as_ref().and_then(|a| {
            match claims.get(session_subject.unwrap_or(&a.subject_claim)) {
                Some(ClaimValue::Str(s)) => Some(Arc::from(&**s)),
                _ => None,
            }
        });
        let rule_claims = self
            .routes
            .claims_read()
            .map(|wanted| RuleClaims::of(claims, wanted, self.routes.memo_slots()));
        (subject, rule_claims)
    }

    /// Header names that allowed requests must not carry from the client.
    pub fn headers_to_remove(&self) -> &Arc<[Arc<str>]> {
        &self.headers_to_remove
    }

    /// The verified-token cache.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// The forward-header values of a token's claims, aligned with `claim_headers`
    /// (computed once per verification and cached with the principal).
    /// Values with control characters are dropped ([`Principal::set_forward`]): a header
    /// value cannot carry them, and dropping beats mangling.
    /// `subject`: the claim that stands for `sub` (a session's `subject_claim`).
    fn forward_values<'c>(
        &'c self,
        claims: &'c ClaimSet<'_>,
        subject: &'c str,
    ) -> impl Iterator<Item = Option<Cow<'c, str>>> {
        self.claim_headers
            .iter()
            .map(move |(_, claim)| {
                let claim = if claim == "sub" {
                    subject
                } else {
                    claim.as_str()
                };
                claims.get(claim)
            })
            .map(|value| match value? {
                ClaimValue::Null => None,
                ClaimValue::Str(s) => Some(Cow::Borrowed(&**s)),
                ClaimValue::Other(Value::Array(list)) if list.iter().all(Value::is_string) => {
                    Some(Cow::Owned(
                        list.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" "),
                    ))
                }
                other => Some(Cow::Owned(other.to_json())),
            })
    }

    /// The headers of an allowed request: cached claim values, and the claims header
    /// straight from the token's own (verified) payload segment.
    fn forward_headers(&self, p: &Principal, payload_b64: &str) -> Vec<(Arc<str>, String)> {
        let mut out = Vec::with_capacity(self.claim_headers.len() + 1);
        for ((name, _), value) in self.claim_headers.iter().zip(p.forward()) {
            if let Some(v) = value {
                out.push((name.clone(), v.to_string()));
            }
        }
        if let Some(h) = &self.claims_header {
            out.push((h.clone(), payload_b64.to_string()));
        }
        out
    }
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("issuers", &self.issuers)
            .finish_non_exhaustive()
    }
}

// === impl Authorizer ===

impl Authorizer {
    /// An authorizer starting with `policy`.
    pub fn new(policy: Policy, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Self {
        let authorizer = Self {
            budget: verify::FallbackBudget::new(policy.config.fallback_rate),
            policy: ArcSwap::from_pointee(policy),
            clock,
            metrics,
            audit: OnceLock::new(),
            binder: Binder::default(),
            jws_headers: HeaderMemo::new(),
            jwe_headers: HeaderMemo::new(),
        };
        authorizer.start_audit();
        authorizer
    }

    /// Swaps in a new policy (config reload); requests in flight finish on the old one.
    pub fn replace(&self, policy: Policy) {
        self.budget.set_rate(policy.config.fallback_rate);
        self.policy.store(Arc::new(policy));
        self.start_audit();
    }

    /// Starts the decision log's writer once a policy turns it on (it then stays, idle
    /// while a later policy turns the log off).
    fn start_audit(&self) {
        if self.policy.load().config.audit.is_none() || self.audit.get().is_some() {
            return;
        }
        match AuditLog::start(self.metrics.audit_dropped.clone()) {
            Ok(log) => {
                let _ = self.audit.set(log);
            }
            Err(e) => tracing::error!(error = %e, "cannot start the decision log's writer"),
        }
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Decides one request.
    pub async fn check<H: Headers + ?Sized + Sync>(
        &self,
        listener: Listener,
        req: &RequestView<'_, H>,
    ) -> Verdict {
        self.check_traced(listener, req, None).await
    }

    /// Decides one request whose trace context came with the ext_authz call itself
    /// (gRPC metadata: `traceparent`, `tracestate`) rather than in its headers.
    pub async fn check_traced<H: Headers + ?Sized + Sync>(
        &self,
        listener: Listener,
        req: &RequestView<'_, H>,
        trace_context: Option<(&str, Option<&str>)>,
    ) -> Verdict {
        let span = telemetry::check_span(listener.label(), req.headers, trace_context);
        self.decide(listener, req, trace_context, &span)
            .instrument(span.clone())
            .await
    }

    async fn decide<H: Headers + ?Sized + Sync>(
        &self,
        listener: Listener,
        req: &RequestView<'_, H>,
        trace_context: Option<(&str, Option<&str>)>,
        span: &tracing::Span,
    ) -> Verdict {
        let started = Instant::now();
        let policy = self.policy.load_full();
        let now = self.clock.now();
        let judged_request =
            request::judge(&policy.config, &policy.headers_to_remove, listener, req);

        let mut fingerprint = None;
        let mut mode = policy.config.mode;
        let mut route_name = None;
        let mut judged = match &judged_request {
            // A request that cannot be read one way only is not judged.
            Err(_) => Judged::deny(DenyReason::InvalidRequest.into(), None),
            Ok(r) => {
                let route = policy
                    .routes
                    .pick(r.method, &r.path, policy.config.path_case);
                if let Some(m) = route.and_then(|r| r.config.mode) {
                    mode = m;
                }
                route_name = route.map(|r| &*r.config.name);
                self.judge_request(&policy, route, r, listener, req, now, &mut fingerprint)
                    .await
            }
        };

        let listener_slot = listener as usize;
        let issuer_slot = judged.issuer.map_or(0, |i| i + 1);
        let reason_slot = match &judged.decision {
            Decision::Allow(a) => a.reason as usize,
            Decision::Deny(d) => AllowReason::ALL.len() + d.reason.index(),
        };
        if let Some(h) = &policy.handles[listener_slot] {
            h.record(issuer_slot, reason_slot, started.elapsed().as_secs_f64());
        }
        let issuer = judged
            .issuer
            .and_then(|i| policy.holder(i))
            .map(|i| i.config.name.clone());
        let decision = if judged.decision.is_allowed() {
            "allow"
        } else {
            "deny"
        };
        tracing::debug!(
            listener = listener.label(),
            decision,
            reason = judged.decision.label(),
            issuer = issuer.as_deref().unwrap_or("-"),
            key = judged.key.as_ref().map(|k| &*k.id).unwrap_or("-"),
            cached = judged.cached,
            token = %fingerprint.map_or_else(|| "-".to_string(), |f| f.to_string()),
            shadow = mode == Mode::Shadow,
            "decision"
        );
        if !span.is_disabled() {
            span.record("tokengate.route", route_name.unwrap_or("-"));
            span.record("tokengate.decision", decision);
            span.record("tokengate.reason", judged.decision.label());
            span.record("tokengate.issuer", issuer.as_deref().unwrap_or("-"));
            span.record("tokengate.key", judged.key.as_ref().map_or("-", |k| &*k.id));
            span.record(
                "tokengate.match",
                judged.matched.map_or("-", MatchKind::label),
            );
            span.record("tokengate.cached", judged.cached);
        }
        if listener != Listener::Cli
            && let (Some(log), Some(audit)) = (self.audit.get(), &policy.config.audit)
            && AuditLog::sampled(audit.sample)
        {
            // The path without its query (which may carry a token or a code).
            let (method, path) = match &judged_request {
                Ok(r) => (r.method, audit::bounded_path(&r.path)),
                Err(_) => {
                    let path = req.target.split_once('?').map_or(req.target, |(p, _)| p);
                    (req.method, audit::bounded_path(path))
                }
            };
            log.write(&audit::Record {
                time: audit::now_rfc3339(),
                target: audit::TARGET,
                listener: listener.label(),
                route: route_name,
                method,
                path: &path,
                decision,
                reason: judged.decision.label(),
                enforced: mode == Mode::Enforce,
                issuer: issuer.as_deref(),
                key: judged.key.as_ref().map(|k| &*k.id),
                matched: judged.matched.map(MatchKind::label),
                subject: judged.subject.as_deref(),
                fingerprint: fingerprint.map(|f| f.to_string()),
                trace_id: telemetry::trace_id(span, req.headers, trace_context).as_deref(),
                latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            });
        }
        // Shadow mode: the denial is counted as what it is (above), then answered as an
        // allow that tells the app why it would have been refused.
        if mode == Mode::Shadow
            && let Decision::Deny(d) = &judged.decision
        {
            let reason = d.reason;
            let mut allowed = judged.valid.take().unwrap_or_else(|| Allowed {
                reason: AllowReason::Anonymous,
                forward_headers: Vec::new(),
                headers_to_remove: policy.headers_to_remove.clone(),
                claims: None,
                shadow_deny: None,
            });
            allowed
                .forward_headers
                .push((Arc::from(SHADOW_DENY_HEADER), reason.label().to_string()));
            allowed.shadow_deny = Some(reason);
            self.metrics.shadow_denial(
                issuer.as_deref().unwrap_or("-"),
                listener.label(),
                reason.label(),
            );
            judged.decision = Decision::Allow(allowed);
        }
        // Spoofed spellings of forward headers go the way of the forward headers.
        if let (Decision::Allow(a), Ok(r)) = (&mut judged.decision, &judged_request)
            && !r.spoofed.is_empty()
        {
            a.headers_to_remove = a
                .headers_to_remove
                .iter()
                .cloned()
                .chain(r.spoofed.iter().cloned())
                .collect();
        }
        Verdict {
            decision: judged.decision,
            issuer,
            key: judged.key,
            matched: judged.matched,
            cached: judged.cached,
            fingerprint,
            decrypted: judged.decrypted,
        }
    }

    /// Judges the credentials of a request that reads one way only.
    #[allow(clippy::too_many_arguments)]
    async fn judge_request<H: Headers + ?Sized + Sync>(
        &self,
        policy: &Policy,
        route: Option<&Route>,
        judged: &request::Judged<'_>,
        listener: Listener,
        req: &RequestView<'_, H>,
        now: i64,
        fingerprint: &mut Option<Fingerprint>,
    ) -> Judged {
        let headers = req.headers;
        match extract_presented(&policy.config.token, headers) {
            Err(reason) => Judged::deny(reason.into(), None),
            Ok(None) => match route {
                Some(r) if r.config.allow_anonymous => Judged {
                    decision: Decision::Allow(Allowed {
                        reason: AllowReason::Anonymous,
                        forward_headers: Vec::new(),
                        headers_to_remove: policy.headers_to_remove.clone(),
                        claims: None,
                        shadow_deny: None,
                    }),
                    issuer: None,
                    key: None,
                    matched: None,
                    cached: false,
                    valid: None,
                    subject: None,
                    decrypted: None,
                },
                _ => Judged::deny(DenyReason::MissingToken.into(), None),
            },
            Ok(Some(presented)) => {
                let token = presented.token;
                // The token's hash keys the cache, identifies the token in logs and is
                // what a DPoP proof's `ath` names; with none of them in use, skip it.
                let hash = (policy.cache.enabled()
                    || presented.dpop
                    || policy.config.audit.is_some()
                    || tracing::enabled!(tracing::Level::DEBUG))
                .then(|| binding::token_hash(token));
                *fingerprint = hash.as_ref().map(Fingerprint::of);
                let shadow = route
                    .and_then(|r| r.config.mode)
                    .unwrap_or(policy.config.mode)
                    == Mode::Shadow;
                let ask = Ask {
                    policy,
                    route,
                    shadow,
                    method: judged.method,
                    path: &judged.path,
                    headers,
                    listener,
                    peer: req.peer,
                    dpop_scheme: presented.dpop,
                    token,
                };
                let mut judged = match presented.session {
                    Some(i) => self.judge_session(&ask, i, token, hash, now),
                    None => self.judge_token(&ask, token, hash, now).await,
                };
                // Every denial of a DPoP-scheme request challenges with `DPoP` (RFC 9449
                // §7.1), naming the algorithms of the token's issuer when it was found.
                if presented.dpop
                    && let Decision::Deny(d) = &mut judged.decision
                    && d.dpop.is_none()
                {
                    let algs = judged
                        .issuer
                        .and_then(|i| policy.issuers.get(i))
                        .map_or(&policy.dpop_algs, |i| &i.config.dpop.algs);
                    d.dpop = Some(Box::new(DpopChallenge {
                        algs: algs.clone(),
                        nonce: None,
                    }));
                }
                judged
            }
        }
    }

    async fn judge_token<H: Headers + ?Sized + Sync>(
        &self,
        ask: &Ask<'_, H>,
        token: &str,
        hash: Option<[u8; 32]>,
        now: i64,
    ) -> Judged {
        let policy = ask.policy;
        // A compact JWE has five segments, a JWS three (SPEC §10).
        let encrypted = crate::token::segments(token).take(6).count() == 5;
        if let Some(hash) = &hash
            && let Some(entry) = policy
                .cache
                .get(hash, |i| policy.generation(i, encrypted), now)
        {
            let mut judged = match &entry.outcome {
                Ok(principal) => Judged::cached(self, ask, principal, hash, token, now),
                Err(reason) => Judged::deny((*reason).into(), entry.issuer),
            };
            judged.cached = true;
            return judged;
        }
        // A denial that rests on the token's bytes (and the issuer's ring at a
        // generation) is remembered, so that a replay costs one hash.
        let remember = |issuer: Option<(usize, u64)>, reason: DenyReason| {
            if let Some(hash) = hash {
                policy.cache.insert_denial(hash, issuer, reason, now, None);
            }
            Judged::deny(reason.into(), issuer.map(|(i, _)| i))
        };
        let refuse = |reason: DenyReason| match reason {
            DenyReason::Malformed => remember(None, reason),
            _ => Judged::deny(reason.into(), None),
        };
        // An encrypted token is opened first; its plaintext is judged as the JWS it must
        // be. The plaintext lives only for this judgement.
        let opened = if encrypted {
            match self.open_token(policy, token) {
                Ok(o) => Some(o),
                Err(reason) => return refuse(reason),
            }
        } else {
            None
        };
        let inner = match &opened {
            Some(o) => match o.jws() {
                Some(jws) => jws,
                None => return Judged::deny(DenyReason::BadDecryption.into(), None),
            },
            None => token,
        };
        let jws = match jws::parse_memo(inner, policy.issuers.algorithms(), &self.jws_headers) {
            Ok(j) => j,
            Err(reason) => return refuse(reason),
        };
        let claims = match jws.claims() {
            Ok(c) => c,
            Err(reason) => return refuse(reason),
        };
        let issuer = match policy.issuers.pick(&claims) {
            Ok(i) => i,
            Err(reason) => return Judged::deny(reason.into(), None),
        };
        let deny = |reason: DenyReason| Judged::deny(reason.into(), Some(issuer.index));
        // An issuer that wants its tokens encrypted refuses them bare (SPEC §10).
        if !issuer.config.algorithms.contains(jws.alg)
            || (issuer.config.require_encryption && opened.is_none())
        {
            return deny(DenyReason::BadAlg);
        }
        // What a verdict on an encrypted token rests on includes the decryption keys.
        let with_opened = |g: u64| opened.as_ref().map_or(g, |o| g.max(o.generation));
        let (verified, generation) = match self.verify(policy, issuer, &jws).await {
            Ok((v, g)) => (v, with_opened(g)),
            Err(Unverified {
                reason,
                generation: Some(g),
                ttl,
            }) if matches!(reason, DenyReason::BadSignature | DenyReason::UnknownKey) => {
                if let Some(hash) = hash {
                    policy.cache.insert_denial(
                        hash,
                        Some((issuer.index, with_opened(g))),
                        reason,
                        now,
                        ttl,
                    );
                }
                return deny(reason);
            }
            Err(u) => return deny(u.reason),
        };
        jws.memoize(&self.jws_headers);
        let mut principal =
            match claims::check(verified, &claims, issuer.index, &issuer.config, now) {
                Ok(p) => p,
                Err(reason) => return deny(reason),
            };
        principal.set_forward(policy.forward_values(&claims, "sub"));
        let (subject, rule_claims) = policy.kept_claims(&claims, None);
        let binding = Binding::of(&claims);
        let decrypted = opened.as_ref().map(|o| (o.key.clone(), o.matched));
        let payload = opened
            .as_ref()
            .filter(|_| policy.claims_header.is_some())
            .map(|_| Box::from(jws.payload_b64));
        if subject.is_some() || rule_claims.is_some() || binding.is_some() || decrypted.is_some() {
            principal.extra = Some(Box::new(claims::Extra {
                subject,
                rule_claims,
                binding,
                decrypted,
                payload,
            }));
        }
        // The token is valid: cache it whatever this request proves (the proof is
        // checked on every request, cached token or not).
        let bound = self.bind(ask, &principal, hash.as_ref(), now);
        if let Err(denial) = bound {
            let judged = Judged::unproven(denial, &principal);
            if let Some(hash) = hash {
                policy.cache.insert(hash, generation, principal, now);
            }
            return judged;
        }
        principal.key.stats.record_use(principal.matched, now);
        if let Some(o) = &opened {
            o.key.stats.record_use(o.matched, now);
            o.key.stats.record_issued(now);
        }
        let issued = claims::numeric_date(&claims, "iat").ok().flatten();
        principal.key.stats.record_issued(issued.unwrap_or(now));
        if let (Some(iat), Ok(Some(exp))) = (issued, claims::numeric_date(&claims, "exp")) {
            issuer.keys.record_lifetime(exp.saturating_sub(iat));
        }
        let judged = Judged::allow_or_scope(ask, &principal, jws.payload_b64);
        if let Some(hash) = hash {
            policy.cache.insert(hash, generation, principal, now);
        }
        judged
    }

    /// Checks what a bound token (or a `DPoP`-scheme request) must prove (SPEC §11).
    fn bind<H: Headers + ?Sized>(
        &self,
        ask: &Ask<'_, H>,
        p: &Principal,
        hash: Option<&[u8; 32]>,
        now: i64,
    ) -> Result<(), Denial> {
        let binding = p.extra.as_ref().and_then(|e| e.binding.as_ref());
        let Some(issuer) = ask.policy.issuers.get(p.issuer) else {
            return Ok(());
        };
        if binding.is_none() && !ask.dpop_scheme && !issuer.config.dpop.required {
            return Ok(());
        }
        let offered = Offered {
            listener: ask.listener,
            method: ask.method,
            path: ask.path,
            headers: ask.headers,
            peer: ask.peer,
            dpop_scheme: ask.dpop_scheme,
            token: ask.token,
            token_hash: hash,
        };
        self.binder.check(
            binding,
            &offered,
            &ask.policy.config,
            &issuer.config,
            &ask.policy.nonces,
            &self.metrics,
            now,
        )
    }

    /// Picks the key and verifies (SPEC §4 step 3): a known kid → that key only; an
    /// unknown kid → one refetch, then the fallback; no kid → the fallback. Returns the
    /// verified token and the ring generation it was verified under; a denial carries
    /// that generation only when no refetch took part (its judgement then rests on the
    /// token and that ring alone).
    async fn verify<'j, 't>(
        &self,
        policy: &Policy,
        issuer: &Issuer,
        jws: &'j jws::Jws<'t>,
    ) -> Result<(VerifiedToken<'j, 't>, u64), Unverified> {
        let max = policy.config.fallback_max_keys;
        let mut ring = issuer.keys.ring();
        if !ring.loaded {
            return Err(DenyReason::KeysUnavailable.into());
        }
        let at = |generation: u64| {
            move |reason| Unverified {
                reason,
                generation: Some(generation),
                ttl: None,
            }
        };
        // A fallback denial rests on the ring it scanned, unless the budget cut the scan
        // short (then it rests on nothing lasting: not cached, and counted).
        let scanned = |miss: verify::NoKey, generation: u64, ttl: Option<i64>| {
            if miss.budget_exhausted {
                issuer.metrics.budget_exhausted.inc();
                return Unverified::from(miss.reason);
            }
            Unverified {
                reason: miss.reason,
                generation: Some(generation),
                ttl,
            }
        };
        let name = &*issuer.config.name;
        let fallback = |ring: &KeyRing| {
            let _span = telemetry::fallback_span(name).entered();
            verify::with_fallback(jws, ring, max, &self.budget)
        };
        let Some(kid) = jws.kid.clone() else {
            return fallback(&ring)
                .map(|v| (v, ring.generation))
                .map_err(|m| scanned(m, ring.generation, None));
        };
        if let Some(indices) = ring.by_kid(&kid) {
            return verify::with_kid(jws, &ring, indices)
                .map(|v| (v, ring.generation))
                .map_err(at(ring.generation));
        }
        let misses = &issuer.metrics.misses;
        // Whether or not this request's refetch ran (rate limit, another fetch in flight),
        // a newer ring may have been published meanwhile: always look again.
        let _ = issuer
            .keys
            .refetch_for_unknown_kid()
            .instrument(telemetry::refetch_span(name))
            .await;
        let fresh = issuer.keys.ring();
        if fresh.generation != ring.generation {
            ring = fresh;
            if let Some(indices) = ring.by_kid(&kid) {
                let r = verify::with_kid(jws, &ring, indices).map(|v| (v, ring.generation));
                misses[if r.is_ok() { 0 } else { 2 }].inc();
                return r.map_err(Unverified::from);
            }
        }
        let r = fallback(&ring).map(|v| (v, ring.generation));
        misses[if r.is_ok() { 1 } else { 2 }].inc();
        // After an unknown-kid refetch, the denial is remembered only until the next
        // refetch may run (`miss_refetch_interval`): a replay within it could not have
        // fetched anyway, one after it fetches again.
        let retry = issuer.miss_refetch_secs();
        r.map_err(|m| scanned(m, ring.generation, retry))
    }
}

/// A token the key step refused, the ring generation the refusal rests on (`None`: it
/// rests on nothing that lasts, such as an exhausted fallback budget), and how long it
/// may be remembered at most (seconds; `None`: the cache's own bound).
#[derive(Debug)]
struct Unverified {
    reason: DenyReason,
    generation: Option<u64>,
    ttl: Option<i64>,
}

impl From<DenyReason> for Unverified {
    fn from(reason: DenyReason) -> Self {
        Self {
            reason,
            generation: None,
            ttl: None,
        }
    }
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

// === impl Judged ===

impl Judged {
    fn deny(denial: Denial, issuer: Option<usize>) -> Self {
        Self {
            decision: Decision::Deny(denial),
            issuer,
            key: None,
            matched: None,
            cached: false,
            valid: None,
            subject: None,
            decrypted: None,
        }
    }

    /// The verdict on a principal found in the cache: its binding is proven again, and
    /// its keys (the verifying one, the decrypting one) count one more use.
    fn cached<H: Headers + ?Sized>(
        authorizer: &Authorizer,
        ask: &Ask<'_, H>,
        p: &Principal,
        hash: &[u8; 32],
        token: &str,
        now: i64,
    ) -> Self {
        if let Err(denial) = authorizer.bind(ask, p, Some(hash), now) {
            return Judged::unproven(denial, p);
        }
        p.key.stats.record_use(p.matched, now);
        let extra = p.extra.as_deref();
        if let Some((key, matched)) = extra.and_then(|e| e.decrypted.as_ref()) {
            key.stats.record_use(*matched, now);
        }
        let payload = extra
            .and_then(|e| e.payload.as_deref())
            .unwrap_or_else(|| payload_segment(token));
        Judged::allow_or_scope(ask, p, payload)
    }

    /// A valid token whose binding the request did not prove.
    fn unproven(denial: Denial, p: &Principal) -> Self {
        Self {
            decision: Decision::Deny(denial),
            issuer: Some(p.issuer),
            key: Some(p.key.clone()),
            matched: Some(p.matched),
            cached: false,
            valid: None,
            subject: p.extra.as_ref().and_then(|e| e.subject.clone()),
            decrypted: decrypted_by(p),
        }
    }

    /// The allow (or the scope denial) of a verified principal.
    fn allow_or_scope<H: Headers + ?Sized>(
        ask: &Ask<'_, H>,
        p: &Principal,
        payload_b64: &str,
    ) -> Self {
        let (policy, route) = (ask.policy, ask.route);
        let subject = p.extra.as_ref().and_then(|e| e.subject.clone());
        // A route that names its issuers refuses a valid token of another one, cached or
        // not (`routes[].issuers`).
        let issuer_ok = route.is_none_or(|r| {
            r.config.issuers.is_empty()
                || policy
                    .holder(p.issuer)
                    .is_some_and(|i| r.config.issuers.contains(&i.config.name))
        });
        if !issuer_ok {
            return Self {
                decision: Decision::Deny(DenyReason::BadIssuer.into()),
                issuer: Some(p.issuer),
                key: Some(p.key.clone()),
                matched: Some(p.matched),
                cached: false,
                valid: None,
                subject,
                decrypted: decrypted_by(p),
            };
        }
        // Scopes, then rules (which see this request, cached token or not).
        let scoped = match route {
            Some(r) if !r.config.allow_anonymous => r.check_scopes(p.scopes()).and_then(|()| {
                if r.config.rules.is_empty() {
                    return Ok(());
                }
                let input = RuleInput {
                    method: ask.method,
                    path: ask.path,
                    headers: ask.headers,
                    issuer: policy.holder(p.issuer).map_or("-", |i| &i.config.name),
                    key: &p.key.id,
                };
                r.check_rules(
                    p.extra.as_ref().and_then(|e| e.rule_claims.as_ref()),
                    &input,
                )
            }),
            _ => Ok(()),
        };
        let allowed = || Allowed {
            reason: AllowReason::Ok,
            forward_headers: policy.forward_headers(p, payload_b64),
            headers_to_remove: policy.headers_to_remove.clone(),
            claims: Some(Claims::new(payload_b64)),
            shadow_deny: None,
        };
        let (decision, valid) = match scoped {
            Ok(()) => (Decision::Allow(allowed()), None),
            // Kept only where shadow mode may forward it.
            Err(denial) => (Decision::Deny(denial), ask.shadow.then(allowed)),
        };
        Self {
            decision,
            issuer: Some(p.issuer),
            key: Some(p.key.clone()),
            matched: Some(p.matched),
            cached: false,
            valid,
            subject,
            decrypted: decrypted_by(p),
        }
    }
}

/// The key that decrypted a principal's token or session, and how it was found.
fn decrypted_by(p: &Principal) -> Option<(Arc<Key>, MatchKind)> {
    p.extra.as_ref().and_then(|e| e.decrypted.clone())
}

/// The payload segment of a compact JWS (verified, when called).
fn payload_segment(token: &str) -> &str {
    let Some(start) = token.find('.') else {
        return "";
    };
    let rest = token.get(start + 1..).unwrap_or_default();
    rest.find('.')
        .and_then(|end| rest.get(..end))
        .unwrap_or(rest)
}

/// The first 4 bytes of a token's SHA-256, shown as 8 hex digits: enough to correlate log
/// lines, never enough to recover the token. Formatted only when printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 4]);

// === impl Fingerprint ===

impl Fingerprint {
    fn of(hash: &[u8; 32]) -> Self {
        Self([hash[0], hash[1], hash[2], hash[3]])
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}
