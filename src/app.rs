//! Wiring: builds the key sources, issuers, cache and [`Authorizer`] from a [`Config`],
//! keeps them current (rescans files every `reload.scan_interval`, refreshes on SIGHUP
//! and `POST /refresh`, reloads the config file itself) and answers readiness.
//!
//! Reload rules: a file that fails to load keeps its last good keys (logged, counted);
//! a config file that fails to parse keeps the running config (logged, counted); a valid
//! new config swaps issuers, sources, routes and policies at once. An issuer whose key
//! sources did not change keeps its keys, statistics and fetch state.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;

use crate::authz::{Authorizer, Policy};
use crate::clock::Clock;
use crate::config::{Config, ConfigError, IssuerConfig, KeySourceConfig};
use crate::issuer::Issuer;
use crate::keys::files::FileSource;
use crate::keys::jwks_source::{JwksSource, Location};
use crate::keys::keystore::KeystoreSource;
use crate::keys::{self, IssuerKeys, RevokedSet, SourceError, SourceKeys, SourceKind, inventory};
use crate::metrics::{IssuerMetrics, Metrics};

/// Environment lookup, injected (tests never call `set_var`).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A problem with one key source, as `check-config` reports it.
#[derive(Debug, Clone)]
pub struct SourceProblem {
    /// Issuer name.
    pub issuer: String,
    /// `issuers[i].key_sources[j]`.
    pub field: String,
    /// What went wrong.
    pub error: SourceError,
}

/// How one source came out of a refresh (`POST /refresh`, SIGHUP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// New content loaded.
    Ok,
    /// Read or fetched, unchanged.
    NotModified,
    /// Failed: the last good keys (or config) stay.
    Error,
}

/// One line of a refresh report.
#[derive(Debug, Clone)]
pub struct SourceRefresh {
    /// Issuer name (`-` for the config and the revoked file).
    pub issuer: String,
    /// `jwks`, `jwks_file`, `keystore`, `pem`; `config` or `revoked_file`.
    pub source: &'static str,
    /// Where it is configured (`issuers[0].key_sources[1]`, `revoked.file`, the config
    /// file's path).
    pub field: String,
    /// What happened.
    pub result: Refreshed,
    /// Keys the source publishes now.
    pub keys: usize,
    /// Why it failed.
    pub error: Option<String>,
}

impl Refreshed {
    /// `ok`, `not_modified`, `error`.
    pub fn label(self) -> &'static str {
        match self {
            Refreshed::Ok => "ok",
            Refreshed::NotModified => "not_modified",
            Refreshed::Error => "error",
        }
    }
}

impl RefreshReport {
    /// True when no source failed.
    pub fn ok(&self) -> bool {
        self.sources.iter().all(|s| s.result != Refreshed::Error)
    }
}

/// `/readyz`'s verdict and body.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// 200 or 503.
    pub ready: bool,
    /// Every issuer.
    pub issuers: Vec<IssuerReadiness>,
}

/// One issuer in `/readyz`.
#[derive(Debug, Clone)]
pub struct IssuerReadiness {
    /// Its name.
    pub name: String,
    /// It has keys.
    pub ready: bool,
    /// How many (revoked ones not counted).
    pub keys: usize,
}

/// What one refresh did, source by source.
#[derive(Debug)]
pub struct RefreshReport {
    /// Every source, the config and the revoked file first.
    pub sources: Vec<SourceRefresh>,
    finished: tokio::time::Instant,
}

/// The running application (listeners excluded).
pub struct App {
    authorizer: Arc<Authorizer>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    runtime: tokio::runtime::Handle,
    env: EnvLookup,
    state: Mutex<State>,
    /// When the app was built (the start of `readiness.grace`).
    started: std::time::Instant,
    /// The last refresh's report; held while a refresh runs, so concurrent callers
    /// share it.
    refresh_gate: tokio::sync::Mutex<Option<Arc<RefreshReport>>>,
}

struct State {
    config: Arc<Config>,
    config_digest: Option<[u8; 32]>,
    /// A config that parsed but whose key sources did not load: retried at every scan
    /// (the file it needs may arrive later, e.g. a Secret updated after its ConfigMap),
    /// reported once.
    refused_digest: Option<[u8; 32]>,
    revoked: Arc<RevokedSet>,
    issuers: Vec<IssuerRuntime>,
    initial_problems: Vec<SourceProblem>,
}

/// A key holder: an issuer, the `decryption` keys or a session's (SPEC §10).
struct IssuerRuntime {
    config: IssuerConfig,
    /// Where it is configured: `issuers[0]`, `decryption`, `sessions[1]`.
    field: String,
    keys: Arc<IssuerKeys>,
    metrics: IssuerMetrics,
    locals: Vec<(usize, Local)>,
    remotes: Vec<Arc<JwksSource>>,
}

/// A remote JWKS source and what reports about it say.
struct Remote {
    issuer: String,
    field: String,
    keys: Arc<IssuerKeys>,
    source: Arc<JwksSource>,
}

enum Local {
    File(FileSource),
    Keystore(KeystoreSource),
}

// === impl App ===

impl App {
    /// Builds everything for `config` and loads local sources once. Remote sources are
    /// created but not fetched: call [`App::start_background`] (serve) or
    /// [`App::load_remote_now`] (CLI).
    pub fn new(
        config: Config,
        runtime: tokio::runtime::Handle,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        env: EnvLookup,
    ) -> Arc<App> {
        let config = Arc::new(config);
        let revoked = Arc::new(match keys::revoked::load(&config.revoked) {
            Ok(set) => set,
            Err(e) => {
                tracing::error!(error = %e, "revoked keys could not be loaded; using the config lists only");
                RevokedSet {
                    kids: config.revoked.kids.iter().cloned().collect(),
                    thumbprints: config.revoked.thumbprints.iter().cloned().collect(),
                }
            }
        });
        let config_digest = config.digest;
        let issuers: Vec<IssuerRuntime> = config
            .key_holders()
            .into_iter()
            .map(|(field, ic, decrypts)| {
                build_issuer(
                    ic, field, decrypts, &revoked, &runtime, &clock, &metrics, &env,
                )
            })
            .collect();
        let policy = policy_for(&config, &issuers, &metrics);
        let app = Arc::new(App {
            authorizer: Arc::new(Authorizer::new(policy, clock.clone(), metrics.clone())),
            metrics,
            clock,
            runtime,
            env,
            state: Mutex::new(State {
                config,
                config_digest,
                refused_digest: None,
                revoked,
                issuers,
                initial_problems: Vec::new(),
            }),
            started: std::time::Instant::now(),
            refresh_gate: tokio::sync::Mutex::new(None),
        });
        let problems = problems(&app.reload_locals(true));
        keys::lock(&app.state).initial_problems = problems;
        app
    }

    /// The authorizer every listener calls.
    pub fn authorizer(&self) -> &Arc<Authorizer> {
        &self.authorizer
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        keys::lock(&self.state).config.clone()
    }

    /// Starts the refresh loops of remote sources and the file scan loop.
    pub fn start_background(self: &Arc<Self>) {
        for r in self.remote_sources() {
            r.source.spawn();
        }
        let weak = Arc::downgrade(self);
        self.runtime.spawn(async move {
            loop {
                let Some(app) = weak.upgrade() else { return };
                let interval = app.config().scan_interval;
                drop(app);
                tokio::time::sleep(interval).await;
                let Some(app) = weak.upgrade() else { return };
                // File reads and PKCS#12 decryption block: not on an async worker.
                let _ = tokio::task::spawn_blocking(move || app.rescan()).await;
            }
        });
    }

    /// Fetches every remote source once, now; returns the failures.
    pub async fn load_remote_now(&self) -> Vec<SourceProblem> {
        let mut problems = Vec::new();
        for Remote {
            issuer,
            field,
            source,
            ..
        } in self.remote_sources()
        {
            if let Err(error) = source.load_now().await {
                problems.push(SourceProblem {
                    issuer,
                    field,
                    error,
                });
            }
        }
        problems
    }

    /// The failures of the first load of local sources and the revoked file
    /// (check-config).
    pub fn local_problems(&self) -> Vec<SourceProblem> {
        let st = keys::lock(&self.state);
        let mut out = st.initial_problems.clone();
        if let Some(path) = &st.config.revoked.file
            && let Err(error) = keys::revoked::load(&st.config.revoked)
        {
            out.push(SourceProblem {
                issuer: "-".into(),
                field: format!("revoked.file ({})", path.display()),
                error,
            });
        }
        out
    }

    /// `/readyz` (SPEC §5): ready when every issuer has keys; once `readiness.grace` has
    /// passed since start, as soon as one has (the others answer `keys_unavailable` for
    /// their tokens until their keys load), so one dead identity provider cannot keep a
    /// whole fleet unready.
    pub fn ready(&self) -> bool {
        self.readiness().ready
    }

    /// The readiness verdict and each issuer's state.
    pub fn readiness(&self) -> Readiness {
        let policy = self.authorizer.policy();
        let issuers: Vec<IssuerReadiness> = policy
            .holders()
            .map(|i| {
                let ring = i.keys.ring();
                IssuerReadiness {
                    name: i.config.name.to_string(),
                    ready: ring.loaded,
                    keys: if ring.loaded {
                        ring.keys.iter().filter(|k| !k.revoked).count()
                    } else {
                        0
                    },
                }
            })
            .collect();
        let all = issuers.iter().all(|i| i.ready);
        let any = issuers.iter().any(|i| i.ready);
        let grace_over = self.started.elapsed() >= self.config().readiness_grace;
        Readiness {
            ready: all || (grace_over && any),
            issuers,
        }
    }

    /// The key inventory of every issuer.
    pub fn inventory(&self) -> Vec<inventory::KeyEntry> {
        let policy = self.authorizer.policy();
        policy
            .holders()
            .flat_map(|i| inventory::entries(&i.keys, i.config.max_key_age))
            .collect()
    }

    /// `GET /rotation` (SPEC §9): per issuer, the key that signs (newest `iat`; a
    /// keystore's first loaded alias), the longest token lifetime seen, and per key its
    /// use in the last 24 hours, since when it has been unused, its certificate's end (and
    /// whether that is within 30 days) and whether it is past `max_key_age`.
    pub fn rotation(&self) -> serde_json::Value {
        const EXPIRING: i64 = 30 * 86_400;
        let now = self.clock.now();
        let ts = |t: Option<i64>| t.map(inventory::rfc3339);
        let policy = self.authorizer.policy();
        let issuers: Vec<serde_json::Value> = policy
            .holders()
            .map(|i| {
                let entries = inventory::entries(&i.keys, i.config.max_key_age);
                let signing = entries
                    .iter()
                    .find(|e| e.state == keys::KeyState::Active)
                    .map(|e| e.key.clone());
                let keys: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|e| {
                        let unused_since = e.last_used.or(e.first_seen);
                        serde_json::json!({
                            "key": e.key,
                            "source": e.source,
                            "thumbprint": (!e.thumbprint.is_empty()).then_some(&e.thumbprint),
                            "state": e.state.label(),
                            "last_used": ts(e.last_used),
                            "validations_1h": e.validations_1h,
                            "validations_24h": e.validations_24h,
                            "unused_for_seconds": unused_since.map(|t| now.saturating_sub(t).max(0)),
                            "not_after": ts(e.not_after),
                            "expiring_within_30d": e.not_after.is_some_and(|t| t.saturating_sub(now) < EXPIRING),
                            "past_max_age": e.past_max_age,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "name": i.config.name.as_ref(),
                    "signing_key": signing,
                    "longest_lifetime_seconds": i.keys.longest_lifetime(),
                    "max_key_age_seconds": i.config.max_key_age.map(|d| d.as_secs()),
                    "keys": keys,
                })
            })
            .collect();
        serde_json::json!({ "issuers": issuers })
    }

    /// Refreshes `tokengate_key_info` states and renders `/metrics`.
    pub fn render_metrics(&self) -> String {
        for i in self.authorizer.policy().holders() {
            i.keys.export_key_info();
        }
        self.metrics.render()
    }

    /// SIGHUP and `POST /refresh`: reloads the config and every file and fetches every
    /// remote JWKS now, waits for all of them (each fetch bounded by its source's
    /// `timeout`), and reports each source. When it returns, the next request is judged
    /// with the refreshed keys. A caller that arrives while a refresh runs gets that
    /// refresh's report: a burst of calls never multiplies fetches.
    pub async fn refresh_now(self: &Arc<Self>) -> Arc<RefreshReport> {
        let asked = tokio::time::Instant::now();
        let mut gate = self.refresh_gate.lock().await;
        if let Some(report) = gate.as_ref()
            && report.finished >= asked
        {
            return report.clone();
        }
        let app = self.clone();
        // File reads, PKCS#12 decryption and config rebuilds block: not on an async worker.
        let mut sources = tokio::task::spawn_blocking(move || app.rescan())
            .await
            .unwrap_or_default();
        let remotes = self.remote_sources();
        let mut fetches = tokio::task::JoinSet::new();
        for (n, Remote { source, .. }) in remotes.iter().enumerate() {
            let source = source.clone();
            fetches.spawn(async move { (n, source.fetch_now().await) });
        }
        let mut results: Vec<Option<Result<bool, SourceError>>> = vec![None; remotes.len()];
        while let Some(done) = fetches.join_next().await {
            if let Ok((n, result)) = done
                && let Some(slot) = results.get_mut(n)
            {
                *slot = Some(result);
            }
        }
        for (
            Remote {
                issuer,
                field,
                keys,
                source,
            },
            result,
        ) in remotes.into_iter().zip(results)
        {
            let result =
                result.unwrap_or_else(|| Err(SourceError::Fetch("the fetch task failed".into())));
            sources.push(SourceRefresh {
                issuer,
                source: SourceKind::Jwks.label(),
                field,
                result: match &result {
                    Ok(true) => Refreshed::Ok,
                    Ok(false) => Refreshed::NotModified,
                    Err(_) => Refreshed::Error,
                },
                keys: keys.source_keys(source.index()).map_or(0, |k| k.keys.len()),
                error: result.err().map(|e| e.to_string()),
            });
        }
        let report = Arc::new(RefreshReport {
            sources,
            finished: tokio::time::Instant::now(),
        });
        *gate = Some(report.clone());
        report
    }

    /// The report as `POST /refresh` answers it (SPEC §5).
    pub fn report_json(report: &RefreshReport) -> serde_json::Value {
        let sources: Vec<serde_json::Value> = report
            .sources
            .iter()
            .map(|s| {
                serde_json::json!({
                    "issuer": s.issuer,
                    "source": s.source,
                    "field": s.field,
                    "result": s.result.label(),
                    "keys": s.keys,
                    "error": s.error,
                })
            })
            .collect();
        serde_json::json!({ "sources": sources })
    }

    /// One scan (the periodic one, and the local half of a refresh): the config file,
    /// the revoked file, every local key file, each reported.
    pub fn rescan(&self) -> Vec<SourceRefresh> {
        let mut out = Vec::new();
        let file = self.config().file.display().to_string();
        let line = |source, field: String, (result, error)| SourceRefresh {
            issuer: "-".into(),
            source,
            field,
            result,
            keys: 0,
            error,
        };
        out.push(line("config", file, self.reload_config()));
        if let Some(result) = self.reload_revoked() {
            out.push(line("revoked_file", "revoked.file".into(), result));
        }
        out.extend(self.reload_locals(false).into_iter().map(|(l, _)| l));
        out
    }

    /// Every remote JWKS source, with its issuer and where it is configured.
    fn remote_sources(&self) -> Vec<Remote> {
        let st = keys::lock(&self.state);
        st.issuers
            .iter()
            .flat_map(|ir| {
                ir.remotes.iter().map(move |r| Remote {
                    issuer: ir.config.name.to_string(),
                    field: format!("{}.key_sources[{}]", ir.field, r.index()),
                    keys: ir.keys.clone(),
                    source: r.clone(),
                })
            })
            .collect()
    }

    /// Reloads every local key source: each one's report line, and its error.
    fn reload_locals(&self, first: bool) -> Vec<(SourceRefresh, Option<SourceError>)> {
        let mut out = Vec::new();
        let mut st = keys::lock(&self.state);
        for ir in &mut st.issuers {
            let name = ir.config.name.clone();
            for (index, local) in &mut ir.locals {
                let kind = local.kind();
                let (result, error) = match local.reload() {
                    Ok(None) => {
                        if ir.keys.record_source(*index, kind, true) {
                            // Back to the content it last loaded (a broken file restored):
                            // a successful reload, though nothing changes.
                            tracing::info!(issuer = %name, source = kind.label(), path = %local.path().display(), "key source recovered: its last good content is back");
                            self.metrics.source_reload(&name, kind.label(), true);
                        }
                        (Refreshed::NotModified, None)
                    }
                    Ok(Some(keys)) => {
                        if !first {
                            tracing::info!(issuer = %name, source = kind.label(), path = %local.path().display(), keys = keys.keys.len(), "key source reloaded");
                        }
                        self.metrics.source_reload(&name, kind.label(), true);
                        ir.keys.publish(*index, Some(keys));
                        ir.keys.record_source(*index, kind, true);
                        (Refreshed::Ok, None)
                    }
                    Err(e) => {
                        tracing::error!(issuer = %name, source = kind.label(), error = %e, "key source failed to load; keeping the last good keys");
                        self.metrics.source_reload(&name, kind.label(), false);
                        ir.keys.record_source(*index, kind, false);
                        (Refreshed::Error, Some(e))
                    }
                };
                let line = SourceRefresh {
                    issuer: name.to_string(),
                    source: kind.label(),
                    field: format!("{}.key_sources[{index}]", ir.field),
                    result,
                    keys: ir.keys.source_keys(*index).map_or(0, |k| k.keys.len()),
                    error: error.as_ref().map(ToString::to_string),
                };
                out.push((line, error));
            }
        }
        out
    }

    /// Reloads `revoked.file` (None: not configured).
    fn reload_revoked(&self) -> Option<(Refreshed, Option<String>)> {
        let mut st = keys::lock(&self.state);
        st.config.revoked.file.as_ref()?;
        match keys::revoked::load(&st.config.revoked) {
            Ok(set) if set != *st.revoked => {
                tracing::info!(
                    kids = set.kids.len(),
                    thumbprints = set.thumbprints.len(),
                    "revoked keys changed"
                );
                let set = Arc::new(set);
                for ir in &st.issuers {
                    ir.keys.set_revoked(set.clone());
                }
                st.revoked = set;
                Some((Refreshed::Ok, None))
            }
            Ok(_) => Some((Refreshed::NotModified, None)),
            Err(e) => {
                tracing::error!(error = %e, "revoked file failed to load; keeping the last good list");
                Some((Refreshed::Error, Some(e.to_string())))
            }
        }
    }

    /// Reloads the config file when its content changed.
    fn reload_config(&self) -> (Refreshed, Option<String>) {
        let path = keys::lock(&self.state).config.file.clone();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            // Not counted: a config file mid-replacement is read again at the next scan.
            Err(e) => return (Refreshed::Error, Some(format!("{}: {e}", path.display()))),
        };
        let digest = sha256(&bytes);
        let (retry, broken) = {
            let st = keys::lock(&self.state);
            (
                st.refused_digest == Some(digest),
                st.config_digest == Some(digest) && st.config.digest != Some(digest),
            )
        };
        if !retry && keys::lock(&self.state).config_digest == Some(digest) {
            let error = broken.then(|| {
                "the config file is invalid (logged when it changed); the running config stays"
                    .to_string()
            });
            let result = if broken {
                Refreshed::Error
            } else {
                Refreshed::NotModified
            };
            return (result, error);
        }
        let config = match Config::parse(&path, &bytes) {
            Ok(config) => config,
            Err(e) => {
                // Remember the digest so the same broken file is reported once.
                keys::lock(&self.state).config_digest = Some(digest);
                self.metrics.config_reload(false);
                tracing::error!(error = %e, "config reload failed; the running config stays");
                return (Refreshed::Error, Some(e.to_string()));
            }
        };
        match self.apply_config(config, digest) {
            Ok(()) => {
                keys::lock(&self.state).refused_digest = None;
                self.metrics.config_reload(true);
                (Refreshed::Ok, None)
            }
            Err(e) if retry => {
                tracing::debug!(error = %e, "config still refused; retrying at the next scan");
                (Refreshed::Error, Some(e))
            }
            Err(e) => {
                keys::lock(&self.state).refused_digest = Some(digest);
                self.metrics.config_reload(false);
                tracing::error!(error = %e, "config reload failed; the running config stays (retried at every scan)");
                (Refreshed::Error, Some(e))
            }
        }
    }

    /// Swaps in a new config: issuers whose key sources are unchanged keep everything;
    /// the others are built anew (keeping key statistics and already-fetched remote
    /// keys) and must load every local key source, or the whole reload is refused.
    fn apply_config(&self, config: Config, digest: [u8; 32]) -> Result<(), String> {
        let mut st = keys::lock(&self.state);
        if config.listeners != st.config.listeners {
            tracing::warn!(
                "listener addresses changed in the config: they take effect after a restart"
            );
        }
        let revoked = Arc::new(keys::revoked::load(&config.revoked).map_err(|e| e.to_string())?);

        // Build and load the issuers that change, before touching the running ones.
        let holders = config.key_holders();
        let mut built: Vec<Option<IssuerRuntime>> = Vec::with_capacity(holders.len());
        for (field, ic, decrypts) in &holders {
            let prev = st.issuers.iter().find(|o| o.config.name == ic.name);
            if prev.is_some_and(|p| {
                p.config.key_sources == ic.key_sources && p.keys.decrypts() == *decrypts
            }) {
                built.push(None);
                continue;
            }
            let mut ir = build_issuer(
                ic,
                field.clone(),
                *decrypts,
                &revoked,
                &self.runtime,
                &self.clock,
                &self.metrics,
                &self.env,
            );
            if let Some(prev) = prev {
                // Same issuer, changed sources (e.g. an alias added to a keystore
                // mapping): keep key statistics, and keep serving what unchanged remote
                // sources already fetched until they fetch again.
                ir.keys.inherit(&prev.keys);
                for (j, sc) in ic.key_sources.iter().enumerate() {
                    let remote = matches!(
                        sc,
                        KeySourceConfig::JwksUri { .. } | KeySourceConfig::Discovery { .. }
                    );
                    let before = prev.config.key_sources.iter().position(|o| o == sc);
                    if let (true, Some(k)) = (remote, before)
                        && let Some(keys) = prev.keys.source_keys(k)
                    {
                        ir.keys.publish(j, Some(keys));
                    }
                }
            }
            for (index, local) in &mut ir.locals {
                let kind = local.kind();
                match local.reload() {
                    Ok(Some(keys)) => {
                        self.metrics
                            .source_reload(&ir.config.name, kind.label(), true);
                        ir.keys.publish(*index, Some(keys));
                        ir.keys.record_source(*index, kind, true);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.metrics
                            .source_reload(&ir.config.name, kind.label(), false);
                        return Err(format!("{field}.key_sources[{index}]: {e}"));
                    }
                }
            }
            built.push(Some(ir));
        }

        let mut old: Vec<IssuerRuntime> = std::mem::take(&mut st.issuers);
        let mut issuers = Vec::with_capacity(built.len());
        for ((field, ic, _), b) in holders.into_iter().zip(built) {
            match b {
                Some(ir) => {
                    for r in &ir.remotes {
                        r.spawn();
                    }
                    issuers.push(ir);
                }
                None => {
                    let pos = old
                        .iter()
                        .position(|o| o.config.name == ic.name)
                        .ok_or_else(|| format!("issuer {} vanished during the reload", ic.name))?;
                    let mut ir = old.swap_remove(pos);
                    ir.config = ic.clone();
                    ir.field = field;
                    ir.keys.set_revoked(revoked.clone());
                    issuers.push(ir);
                }
            }
        }
        let config = Arc::new(config);
        if config.telemetry != st.config.telemetry
            && config.telemetry.as_ref() != crate::telemetry::started()
        {
            tracing::warn!(
                "telemetry changed in the config: traces keep the settings they started with until the next restart"
            );
        }
        self.authorizer
            .replace(policy_for(&config, &issuers, &self.metrics));
        tracing::info!(issuers = issuers.len(), "config reloaded");
        st.config = config;
        st.config_digest = Some(digest);
        st.revoked = revoked;
        st.issuers = issuers;
        // `old` holds the issuers that were removed or rebuilt; dropping them stops
        // their refresh loops.
        Ok(())
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

// === impl Local ===

impl Local {
    fn reload(&mut self) -> Result<Option<SourceKeys>, SourceError> {
        match self {
            Local::File(f) => f.reload(),
            Local::Keystore(k) => k.reload(),
        }
    }

    fn kind(&self) -> SourceKind {
        match self {
            Local::File(f) => f.kind(),
            Local::Keystore(_) => SourceKind::Keystore,
        }
    }

    fn path(&self) -> &Path {
        match self {
            Local::File(f) => &f.path,
            Local::Keystore(k) => k.path(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build_issuer(
    ic: &IssuerConfig,
    field: String,
    decrypts: bool,
    revoked: &Arc<RevokedSet>,
    runtime: &tokio::runtime::Handle,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    env: &EnvLookup,
) -> IssuerRuntime {
    let mut keys = IssuerKeys::new(
        ic.name.clone(),
        ic.key_sources.len(),
        revoked.clone(),
        clock.clone(),
        metrics.clone(),
    );
    if decrypts {
        keys = keys.for_decryption();
    }
    let keys = Arc::new(keys);
    let remote = ic.key_sources.iter().any(|s| {
        matches!(
            s,
            KeySourceConfig::JwksUri { .. } | KeySourceConfig::Discovery { .. }
        )
    });
    let issuer_metrics = metrics.issuer(&ic.name, remote);
    let mut locals = Vec::new();
    let mut remotes = Vec::new();
    for (index, sc) in ic.key_sources.iter().enumerate() {
        let remote = |location: Location, settings: &crate::config::RemoteSettings| {
            JwksSource::new(
                keys.clone(),
                index,
                location,
                settings.clone(),
                issuer_metrics.clone(),
                runtime.clone(),
            )
        };
        match sc {
            KeySourceConfig::JwksUri { url, settings } => {
                match remote(Location::Jwks(url.clone()), settings) {
                    Ok(r) => remotes.push(r),
                    Err(e) => {
                        tracing::error!(issuer = %ic.name, error = %e, "JWKS source cannot start")
                    }
                }
            }
            KeySourceConfig::Discovery { url, settings } => {
                match remote(Location::Discovery(url.clone()), settings) {
                    Ok(r) => remotes.push(r),
                    Err(e) => {
                        tracing::error!(issuer = %ic.name, error = %e, "discovery source cannot start")
                    }
                }
            }
            KeySourceConfig::JwksFile { path } => {
                locals.push((index, Local::File(FileSource::jwks(path.clone()))));
            }
            KeySourceConfig::PemFile { path, kid } => {
                let file = if decrypts {
                    FileSource::private_pem(path.clone(), kid.clone())
                } else {
                    FileSource::pem(path.clone(), kid.clone())
                };
                locals.push((index, Local::File(file)));
            }
            KeySourceConfig::Keystore {
                path,
                password,
                encoding,
                aliases,
            } => {
                let source = KeystoreSource::new(
                    path.clone(),
                    password.clone(),
                    *encoding,
                    aliases.clone(),
                    env.clone(),
                );
                let source = if decrypts {
                    source.for_decryption()
                } else {
                    source
                };
                locals.push((index, Local::Keystore(source)));
            }
        }
    }
    IssuerRuntime {
        config: ic.clone(),
        field,
        keys,
        metrics: issuer_metrics,
        locals,
        remotes,
    }
}

/// The policy of `config` over its key holders (issuers, sessions, then the
/// `decryption` keys, as [`Config::key_holders`] orders them).
fn policy_for(config: &Arc<Config>, issuers: &[IssuerRuntime], metrics: &Metrics) -> Policy {
    for ir in issuers.iter().take(config.issuers.len()) {
        let max_age = ir
            .config
            .max_key_age
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        metrics.key_max_age(&ir.config.name, max_age);
    }
    let list = issuers
        .iter()
        .enumerate()
        .map(|(index, ir)| Issuer {
            index,
            config: ir.config.clone(),
            keys: ir.keys.clone(),
            metrics: ir.metrics.clone(),
        })
        .collect();
    Policy::new(config.clone(), list, metrics)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The failures among local source reloads, as `check-config` reports them.
fn problems(results: &[(SourceRefresh, Option<SourceError>)]) -> Vec<SourceProblem> {
    results
        .iter()
        .filter_map(|(line, error)| {
            Some(SourceProblem {
                issuer: line.issuer.clone(),
                field: line.field.clone(),
                error: error.clone()?,
            })
        })
        .collect()
}

/// Loads the config, mapping errors for the command line.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    Config::load(path)
}

/// Where the config file is: the flag, else `TOKENGATE_CONFIG`.
pub fn config_path(flag: Option<PathBuf>, env: &EnvLookup) -> Option<PathBuf> {
    flag.or_else(|| env("TOKENGATE_CONFIG").map(PathBuf::from))
}
