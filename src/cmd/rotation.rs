//! `tokengate rotation plan`: "if I apply this key set now, whose tokens break?" (SPEC §9).
//!
//! Compares the keys of the live config with those of a candidate config, key by key —
//! matched by RFC 7638 thumbprint, so a renamed kid or alias is still the same key — with
//! the traffic each live key verified in the window: from running instances' `/keys`
//! (summed over `--admin` URLs) or fleet-wide from Prometheus. Each key gets a verdict:
//!
//! - `kept`: in both, under the same id;
//! - `added`: only in the candidate;
//! - `retire-safe`: leaves (or is revoked), and verified no token in the window;
//! - `retire-in-use`: leaves, and N tokens in the window would be refused;
//! - `revoked-in-use`: revoked by the candidate while still verifying tokens;
//! - `kid-remapped-in-use`: stays, but its kid now names another key, so tokens matched
//!   by that kid would be refused.
//!
//! Exit 0 when no key in use is lost, 1 otherwise, 2 on a config error, an unreachable
//! `--admin`/`--prometheus` or a bad `--window`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Exit, one_shot_app};
use crate::app::EnvLookup;
use crate::config::{Config, parse_duration};
use crate::keys::KeyState;
use crate::keys::inventory::KeyEntry;

/// The command line of `rotation plan`.
#[derive(Debug, Clone)]
pub struct Args {
    /// The config in force.
    pub config: PathBuf,
    /// The config about to be applied.
    pub candidate: PathBuf,
    /// Admin URLs of running instances (their `/keys` counts are summed).
    pub admin: Vec<String>,
    /// A Prometheus that scrapes the fleet.
    pub prometheus: Option<String>,
    /// How far back traffic counts (`24h`).
    pub window: String,
    /// Print JSON instead of a table.
    pub json: bool,
}

/// A key's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Leaves while in use.
    RetireInUse,
    /// Revoked while in use.
    RevokedInUse,
    /// Its kid names another key now, while in use.
    KidRemappedInUse,
    /// Leaves, unused.
    RetireSafe,
    /// Stays.
    Kept,
    /// New.
    Added,
}

/// One row of the plan.
#[derive(Debug, Clone)]
pub struct Row {
    /// Issuer name.
    pub issuer: String,
    /// kid or alias (the candidate's when it is renamed).
    pub key: String,
    /// RFC 7638 thumbprint.
    pub thumbprint: String,
    /// Live state (`-`: not live).
    pub live_state: &'static str,
    /// Candidate state (`-`: gone).
    pub candidate_state: &'static str,
    /// Tokens the live key verified in the window.
    pub tokens: f64,
    /// The verdict.
    pub verdict: Verdict,
}

// === impl Verdict ===

impl Verdict {
    /// The label printed.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Kept => "kept",
            Verdict::Added => "added",
            Verdict::RetireSafe => "retire-safe",
            Verdict::RetireInUse => "retire-in-use",
            Verdict::RevokedInUse => "revoked-in-use",
            Verdict::KidRemappedInUse => "kid-remapped-in-use",
        }
    }

    /// Tokens of this key would be refused.
    pub fn loses_traffic(self) -> bool {
        matches!(
            self,
            Verdict::RetireInUse | Verdict::RevokedInUse | Verdict::KidRemappedInUse
        )
    }
}

/// Runs the command.
pub async fn run(args: Args, env: EnvLookup) -> Exit {
    let window = match parse_duration(&args.window) {
        Ok(w) if w >= Duration::from_secs(1) => w,
        Ok(_) => return usage("--window: at least 1s"),
        Err(reason) => return usage(&format!("--window: {reason}")),
    };
    if args.admin.is_empty() && args.prometheus.is_none() {
        return usage(
            "the plan needs the traffic of the live keys: give --admin URL (one or more \
             running instances) or --prometheus URL (the fleet)",
        );
    }
    if !args.admin.is_empty() && window > Duration::from_secs(86_400) {
        return usage("--window: /keys counts at most 24h; use --prometheus for a longer window");
    }
    let mut configs = Vec::with_capacity(2);
    for path in [&args.config, &args.candidate] {
        match Config::load(path) {
            Ok(c) => configs.push(c),
            Err(e) => return usage(&e.to_string()),
        }
    }
    let candidate_config = configs.pop();
    let live_config = configs.pop();
    let (Some(live_config), Some(candidate_config)) = (live_config, candidate_config) else {
        return usage("two configs expected");
    };
    let (live_app, problems) = one_shot_app(live_config, None, env.clone()).await;
    for p in &problems {
        eprintln!(
            "warning: live {}: {}: {}",
            args.config.display(),
            p.field,
            p.error
        );
    }
    let (candidate_app, problems) = one_shot_app(candidate_config, None, env).await;
    if let Some(p) = problems.first() {
        return usage(&format!(
            "candidate {}: {}: {} (its keys cannot be known)",
            args.candidate.display(),
            p.field,
            p.error
        ));
    }
    let mut live = live_app.inventory();
    let candidate = candidate_app.inventory();
    for e in candidate.iter().filter(|e| e.state == KeyState::Missing) {
        eprintln!(
            "warning: candidate issuer {} names alias {} that its keystore does not hold",
            e.issuer, e.key
        );
    }

    let usage_by_key = match &args.prometheus {
        Some(url) => prometheus_usage(url, window, &live).await,
        None => admin_usage(&args.admin, window)
            .await
            .map(|(tokens, states)| {
                // The running instance knows which key is active (a JWK set's active key
                // is the one of the newest `iat` it has seen); a fresh load does not.
                for e in &mut live {
                    if let Some(state) = states.get(&(e.issuer.clone(), e.thumbprint.clone())) {
                        e.state = *state;
                    }
                }
                tokens
            }),
    };
    let tokens = match usage_by_key {
        Ok(t) => t,
        Err(e) => return usage(&e),
    };
    let rows = plan(&live, &candidate, &tokens);
    let refused = rows
        .iter()
        .filter(|r| r.verdict.loses_traffic())
        .fold(0.0, |sum, r| sum + r.tokens);
    if args.json {
        println!("{}", to_json(&args.window, &rows, refused));
    } else {
        print!("{}", table(&args.window, &rows, refused));
    }
    if rows.iter().any(|r| r.verdict.loses_traffic()) {
        Exit::Failed
    } else {
        Exit::Ok
    }
}

fn usage(message: &str) -> Exit {
    eprintln!("error: {message}");
    Exit::Usage
}

/// Live keys that can verify (not retired, not missing).
fn verifying(e: &KeyEntry) -> bool {
    !matches!(e.state, KeyState::Retired | KeyState::Missing)
}

/// The verdicts, given each live key's tokens in the window by (issuer, thumbprint).
pub fn plan(
    live: &[KeyEntry],
    candidate: &[KeyEntry],
    tokens: &BTreeMap<(String, String), f64>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let present = |list: &[KeyEntry], issuer: &str, thumbprint: &str| -> Option<KeyEntry> {
        list.iter()
            .find(|e| verifying(e) && e.issuer == issuer && e.thumbprint == thumbprint)
            .cloned()
    };
    for l in live.iter().filter(|e| verifying(e)) {
        let used = tokens
            .get(&(l.issuer.clone(), l.thumbprint.clone()))
            .copied()
            .unwrap_or(0.0);
        let in_use = used > 0.0;
        let (verdict, candidate_state, key) = match present(candidate, &l.issuer, &l.thumbprint) {
            Some(c) if c.state == KeyState::Revoked => (
                if in_use {
                    Verdict::RevokedInUse
                } else {
                    Verdict::RetireSafe
                },
                c.state.label(),
                c.key,
            ),
            Some(c) => {
                // The key stays; does its old id now name other material?
                let remapped = c.key != l.key
                    && candidate.iter().any(|o| {
                        verifying(o)
                            && o.issuer == l.issuer
                            && o.key == l.key
                            && o.thumbprint != l.thumbprint
                    });
                let verdict = if remapped && in_use {
                    Verdict::KidRemappedInUse
                } else {
                    Verdict::Kept
                };
                (verdict, c.state.label(), c.key)
            }
            None => (
                if in_use {
                    Verdict::RetireInUse
                } else {
                    Verdict::RetireSafe
                },
                "-",
                l.key.clone(),
            ),
        };
        rows.push(Row {
            issuer: l.issuer.clone(),
            key,
            thumbprint: l.thumbprint.clone(),
            live_state: l.state.label(),
            candidate_state,
            tokens: used,
            verdict,
        });
    }
    for c in candidate.iter().filter(|e| verifying(e)) {
        if present(live, &c.issuer, &c.thumbprint).is_none() {
            rows.push(Row {
                issuer: c.issuer.clone(),
                key: c.key.clone(),
                thumbprint: c.thumbprint.clone(),
                live_state: "-",
                candidate_state: c.state.label(),
                tokens: 0.0,
                verdict: Verdict::Added,
            });
        }
    }
    rows.sort_by(|a, b| (&a.issuer, a.verdict, &a.key).cmp(&(&b.issuer, b.verdict, &b.key)));
    rows
}

/// Tokens per (issuer, thumbprint) from running instances' `/keys`, summed: the 1-hour
/// counts for a window up to an hour, else the 24-hour counts; none for a key whose last
/// use is older than the window (so a key whose traffic stopped is `retire-safe` as soon
/// as the window has passed, whatever the counting granularity).
/// Also the states the instances report, by (issuer, thumbprint) (the first instance's
/// for a key several report).
async fn admin_usage(
    urls: &[String],
    window: Duration,
) -> Result<(BTreeMap<(String, String), f64>, States), String> {
    let field = if window <= Duration::from_secs(3600) {
        "validations_1h"
    } else {
        "validations_24h"
    };
    let client = http_client()?;
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let window_secs = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    let mut out = BTreeMap::new();
    let mut states = BTreeMap::new();
    for base in urls {
        let url = format!("{}/keys", base.trim_end_matches('/'));
        let doc = get_json(&client, &url).await?;
        let keys = doc["keys"]
            .as_array()
            .ok_or_else(|| format!("--admin {url}: not a key inventory"))?;
        for k in keys {
            let (Some(issuer), Some(thumbprint)) = (k["issuer"].as_str(), k["thumbprint"].as_str())
            else {
                continue;
            };
            let recent = k["last_used"]
                .as_str()
                .and_then(super::keys::parse_rfc3339)
                .is_some_and(|t| now.saturating_sub(t) <= window_secs);
            let n = if recent {
                k[field].as_f64().unwrap_or(0.0)
            } else {
                0.0
            };
            let state = match k["state"].as_str() {
                Some("active") => Some(KeyState::Active),
                Some("valid") => Some(KeyState::Valid),
                Some("revoked") => Some(KeyState::Revoked),
                _ => None,
            };
            if let Some(state) = state {
                states
                    .entry((issuer.to_string(), thumbprint.to_string()))
                    .or_insert(state);
            }
            *out.entry((issuer.to_string(), thumbprint.to_string()))
                .or_insert(0.0) += n;
        }
    }
    Ok((out, states))
}

/// Key states by (issuer, thumbprint).
type States = BTreeMap<(String, String), KeyState>;

/// Tokens per (issuer, thumbprint) fleet-wide: Prometheus' increase of the per-key
/// verification counters over the window, attributed to the live keys by (issuer, key).
async fn prometheus_usage(
    base: &str,
    window: Duration,
    live: &[KeyEntry],
) -> Result<BTreeMap<(String, String), f64>, String> {
    let query = format!(
        "sum by (issuer, key) (increase(tokengate_key_verifications_total{{result=\"ok\"}}[{}s]))",
        window.as_secs()
    );
    let client = http_client()?;
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let with_query = reqwest::Url::parse_with_params(&url, &[("query", query.as_str())])
        .map_err(|e| format!("--prometheus {url}: {e}"))?;
    let resp = client
        .get(with_query)
        .send()
        .await
        .map_err(|e| format!("--prometheus {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("--prometheus {url}: HTTP {}", resp.status()));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("--prometheus {url}: {e}"))?;
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("--prometheus {url}: not a query answer: {e}"))?;
    if doc["status"] != "success" {
        return Err(format!("--prometheus {url}: {}", doc["error"]));
    }
    let mut out = BTreeMap::new();
    for sample in doc["data"]["result"].as_array().into_iter().flatten() {
        let (Some(issuer), Some(key)) = (
            sample["metric"]["issuer"].as_str(),
            sample["metric"]["key"].as_str(),
        ) else {
            continue;
        };
        let n: f64 = sample["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        for e in live
            .iter()
            .filter(|e| verifying(e) && e.issuer == issuer && e.key == key)
        {
            *out.entry((e.issuer.clone(), e.thumbprint.clone()))
                .or_insert(0.0) += n;
        }
    }
    Ok(out)
}

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("--admin {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("--admin {url}: HTTP {}", resp.status()));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("--admin {url}: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("--admin {url}: not JSON: {e}"))
}

/// `tokens` as printed: whole numbers as such, Prometheus' extrapolations to 0.1.
fn count(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.1}")
    }
}

fn to_json(window: &str, rows: &[Row], refused: f64) -> Value {
    let keys: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "issuer": r.issuer,
                "key": r.key,
                "thumbprint": r.thumbprint,
                "live_state": r.live_state,
                "candidate_state": r.candidate_state,
                "tokens": r.tokens,
                "verdict": r.verdict.label(),
            })
        })
        .collect();
    json!({ "window": window, "keys": keys, "tokens_refused": refused })
}

fn table(window: &str, rows: &[Row], refused: f64) -> String {
    let tokens_header = format!("TOKENS ({window})");
    let header = [
        "ISSUER",
        "KEY",
        "LIVE",
        "CANDIDATE",
        tokens_header.as_str(),
        "VERDICT",
        "THUMBPRINT",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.issuer.clone(),
                r.key.clone(),
                r.live_state.to_string(),
                r.candidate_state.to_string(),
                count(r.tokens),
                r.verdict.label().to_string(),
                r.thumbprint.clone(),
            ]
        })
        .collect();
    let mut out = crate::keys::inventory::render_table(&header, &cells);
    let lost = rows.iter().filter(|r| r.verdict.loses_traffic()).count();
    if lost == 0 {
        let _ = writeln!(
            out,
            "\nsafe: no key that verified tokens in the last {window} is lost"
        );
    } else {
        let _ = writeln!(
            out,
            "\nNOT SAFE: {lost} key(s) in use would be lost; {} token(s) of the last {window} would be refused",
            count(refused)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(issuer: &str, key: &str, thumbprint: &str, state: KeyState) -> KeyEntry {
        KeyEntry {
            issuer: issuer.into(),
            source: "keystore",
            key: key.into(),
            kty: "RSA",
            crv: None,
            alg: None,
            thumbprint: thumbprint.into(),
            state,
            not_before: None,
            not_after: None,
            first_seen: Some(0),
            last_used: None,
            validations: 0,
            validations_1h: 0,
            validations_24h: 0,
            past_max_age: false,
            validations_kid: 0,
            validations_fallback: 0,
            fetched_at: None,
            retired_at: None,
            usage: "sig",
        }
    }

    fn verdicts(rows: &[Row]) -> Vec<(String, &'static str, f64)> {
        rows.iter()
            .map(|r| (r.key.clone(), r.verdict.label(), r.tokens))
            .collect()
    }

    #[test]
    fn every_verdict_by_thumbprint() {
        use KeyState::{Active, Retired, Revoked, Valid};
        let live = [
            entry("am", "old", "T-old", Active),
            entry("am", "idle", "T-idle", Valid),
            entry("am", "renamed", "T-renamed", Valid),
            entry("am", "remapped", "T-remapped", Valid),
            entry("am", "revoked", "T-revoked", Valid),
            entry("am", "gone-long-ago", "T-retired", Retired),
        ];
        let candidate = [
            // old leaves; idle leaves; renamed stays under a new name; remapped stays
            // under a new name and its old name now means other material; revoked is
            // revoked.
            entry("am", "new-name", "T-renamed", Valid),
            entry("am", "remapped-2", "T-remapped", Valid),
            entry("am", "remapped", "T-other", Valid),
            entry("am", "revoked", "T-revoked", Revoked),
            entry("am", "new", "T-new", Active),
        ];
        let tokens: BTreeMap<(String, String), f64> = [
            ("T-old", 12.0),
            ("T-renamed", 3.0),
            ("T-remapped", 4.0),
            ("T-revoked", 5.0),
            ("T-retired", 99.0),
        ]
        .into_iter()
        .map(|(t, n)| (("am".to_string(), t.to_string()), n))
        .collect();
        let rows = plan(&live, &candidate, &tokens);
        assert_eq!(
            verdicts(&rows),
            [
                ("old".to_string(), "retire-in-use", 12.0),
                ("revoked".to_string(), "revoked-in-use", 5.0),
                ("remapped-2".to_string(), "kid-remapped-in-use", 4.0),
                ("idle".to_string(), "retire-safe", 0.0),
                ("new-name".to_string(), "kept", 3.0),
                ("new".to_string(), "added", 0.0),
                ("remapped".to_string(), "added", 0.0),
            ]
        );
        let text = table("24h", &rows, 21.0);
        assert!(text.contains("NOT SAFE: 3 key(s) in use"), "{text}");
        assert!(text.contains("21 token(s) of the last 24h"), "{text}");
        let doc = to_json("24h", &rows, 21.0);
        assert_eq!(doc["tokens_refused"], 21.0);
        assert_eq!(doc["keys"][0]["verdict"], "retire-in-use");
        assert_eq!(doc["keys"][0]["live_state"], "active");
        assert_eq!(doc["keys"][0]["candidate_state"], "-");
    }

    #[test]
    fn unused_keys_retire_safely() {
        let live = [entry("am", "old", "T-old", KeyState::Valid)];
        let candidate = [entry("am", "new", "T-new", KeyState::Active)];
        let rows = plan(&live, &candidate, &BTreeMap::new());
        assert_eq!(
            verdicts(&rows),
            [
                ("old".to_string(), "retire-safe", 0.0),
                ("new".to_string(), "added", 0.0),
            ]
        );
        assert!(table("1h", &rows, 0.0).contains("safe: no key that verified tokens"));
    }
}
