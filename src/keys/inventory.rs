//! The key inventory: one entry per current or remembered key, as `/keys` and
//! `tokengate keys` show it. This is what tells an operator that an old key is no
//! longer used and may be deprovisioned.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{IssuerKeys, Key, KeyState, SourceKind};

/// One inventory row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// Issuer name.
    pub issuer: String,
    /// `jwks`, `jwks_file`, `keystore`, `pem`.
    pub source: &'static str,
    /// kid or alias.
    pub key: String,
    /// JWK key type.
    pub kty: &'static str,
    /// Curve.
    pub crv: Option<&'static str>,
    /// The key's own `alg`.
    pub alg: Option<&'static str>,
    /// RFC 7638 thumbprint.
    pub thumbprint: String,
    /// State.
    pub state: KeyState,
    /// Certificate notBefore.
    pub not_before: Option<i64>,
    /// Certificate notAfter.
    pub not_after: Option<i64>,
    /// First loaded (None: a missing key, never loaded).
    pub first_seen: Option<i64>,
    /// Last accepted token.
    pub last_used: Option<i64>,
    /// Accepted tokens.
    pub validations: u64,
    /// Accepted tokens in the last hour.
    pub validations_1h: u64,
    /// Accepted tokens in the last 24 hours.
    pub validations_24h: u64,
    /// An active key older than the issuer's `max_key_age` (from its certificate's
    /// `not_before`, else `first_seen`).
    pub past_max_age: bool,
    /// Accepted tokens found by kid.
    pub validations_kid: u64,
    /// Accepted tokens found by fallback.
    pub validations_fallback: u64,
    /// When its JWKS was fetched.
    pub fetched_at: Option<i64>,
    /// When it left its source (retired keys).
    pub retired_at: Option<i64>,
    /// `sig` (verifies tokens) or `enc` (decrypts them, SPEC §10).
    pub usage: &'static str,
}

/// The inventory of one issuer: current keys in ring order, then keys its sources were
/// told to publish but do not hold, then retired keys. `max_key_age`: the issuer's
/// cryptoperiod, if it has one.
pub fn entries(issuer: &IssuerKeys, max_key_age: Option<std::time::Duration>) -> Vec<KeyEntry> {
    let ring = issuer.ring();
    let now = issuer.clock().now();
    let max_age = max_key_age.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    // For a JWK set, "active" is the key that verified the token with the newest `iat`
    // (per source; the first such key in source order on a tie): it moves only when a
    // token issued later verifies under another key.
    let mut newest: Vec<(usize, i64, &str)> = Vec::new();
    for k in &ring.keys {
        if matches!(k.source, SourceKind::Jwks | SourceKind::JwksFile)
            && !k.revoked
            && let Some(t) = k.stats.newest_iat()
        {
            match newest.iter_mut().find(|(s, _, _)| *s == k.source_index) {
                Some(slot) if slot.1 < t => *slot = (k.source_index, t, &k.id),
                Some(_) => {}
                None => newest.push((k.source_index, t, &k.id)),
            }
        }
    }
    let mut out = Vec::with_capacity(ring.keys.len() + ring.retired.len());
    for k in &ring.keys {
        let state = if k.revoked {
            KeyState::Revoked
        } else if k.active
            || newest
                .iter()
                .any(|(s, _, id)| *s == k.source_index && *id == &*k.id)
        {
            KeyState::Active
        } else {
            KeyState::Valid
        };
        let mut e = entry(issuer, k, state, None, now);
        e.past_max_age = state == KeyState::Active
            && max_age.is_some_and(|max| {
                let born = e.not_before.or(e.first_seen).unwrap_or(now);
                now.saturating_sub(born) > max
            });
        out.push(e);
    }
    for (_, kind, id) in &ring.missing {
        out.push(KeyEntry {
            issuer: issuer.name().to_string(),
            source: kind.label(),
            key: id.to_string(),
            kty: "-",
            crv: None,
            alg: None,
            thumbprint: String::new(),
            state: KeyState::Missing,
            not_before: None,
            not_after: None,
            first_seen: None,
            last_used: None,
            validations: 0,
            validations_1h: 0,
            validations_24h: 0,
            past_max_age: false,
            validations_kid: 0,
            validations_fallback: 0,
            fetched_at: None,
            retired_at: None,
            usage: usage(issuer),
        });
    }
    for r in &ring.retired {
        out.push(entry(
            issuer,
            &r.key,
            KeyState::Retired,
            Some(r.retired_at),
            now,
        ));
    }
    out
}

/// The inventory's `use` of a holder's keys.
fn usage(issuer: &IssuerKeys) -> &'static str {
    if issuer.decrypts() { "enc" } else { "sig" }
}

fn entry(
    issuer: &IssuerKeys,
    k: &Key,
    state: KeyState,
    retired_at: Option<i64>,
    now: i64,
) -> KeyEntry {
    let (kid, fallback) = k.stats.validations_by_match();
    let (validations_1h, validations_24h) = k.stats.recent_validations(now);
    KeyEntry {
        usage: usage(issuer),
        issuer: issuer.name().to_string(),
        source: k.source.label(),
        key: k.id.to_string(),
        kty: k.material.kty().name(),
        crv: k.material.crv().map(|c| c.name()),
        alg: k.alg.map(|a| a.name()),
        thumbprint: k.material.thumbprint().to_string(),
        state,
        not_before: k.validity.map(|v| v.not_before),
        not_after: k.validity.map(|v| v.not_after),
        first_seen: Some(k.stats.first_seen),
        last_used: k.stats.last_used(),
        validations: k.stats.validations(),
        validations_1h,
        validations_24h,
        past_max_age: false,
        validations_kid: kid,
        validations_fallback: fallback,
        fetched_at: k
            .fetched_at
            .as_ref()
            .map(|t| t.load(std::sync::atomic::Ordering::Relaxed)),
        retired_at,
    }
}

/// RFC 3339 UTC for a Unix time.
pub fn rfc3339(t: i64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date-time dependency.
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// The `{"keys": [...]}` document of SPEC §6.
pub fn to_json(entries: &[KeyEntry]) -> Value {
    let ts = |t: Option<i64>| t.map(rfc3339);
    let keys: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "issuer": e.issuer,
                "source": e.source,
                "key": e.key,
                "kty": (e.kty != "-").then_some(e.kty),
                "crv": e.crv,
                "alg": e.alg,
                "thumbprint": (!e.thumbprint.is_empty()).then_some(&e.thumbprint),
                "state": e.state.label(),
                "use": e.usage,
                "not_before": ts(e.not_before),
                "not_after": ts(e.not_after),
                "first_seen": ts(e.first_seen),
                "last_used": ts(e.last_used),
                "validations": e.validations,
                "validations_1h": e.validations_1h,
                "validations_24h": e.validations_24h,
                "past_max_age": e.past_max_age,
                "validations_by_match": {"kid": e.validations_kid, "fallback": e.validations_fallback},
                "fetched_at": ts(e.fetched_at),
                "retired_at": ts(e.retired_at),
            })
        })
        .collect();
    json!({ "keys": keys })
}

/// A plain-text table of the inventory, for terminals.
pub fn table(entries: &[KeyEntry]) -> String {
    let header = [
        "ISSUER",
        "SOURCE",
        "KEY",
        "KTY",
        "ALG",
        "STATE",
        "LAST USED",
        "VALIDATIONS",
        "NOT AFTER",
        "THUMBPRINT",
    ];
    let rows: Vec<[String; 10]> = entries
        .iter()
        .map(|e| {
            [
                e.issuer.clone(),
                e.source.to_string(),
                e.key.clone(),
                match e.crv {
                    Some(c) => format!("{}/{c}", e.kty),
                    None => e.kty.to_string(),
                },
                e.alg.unwrap_or("-").to_string(),
                e.state.label().to_string(),
                e.last_used.map_or_else(|| "never".into(), rfc3339),
                e.validations.to_string(),
                e.not_after.map_or_else(|| "-".into(), rfc3339),
                e.thumbprint.clone(),
            ]
        })
        .collect();
    render_table(&header, &rows)
}

/// A plain-text table: columns padded to their widest cell, two spaces apart.
pub fn render_table<R: AsRef<[String]>>(header: &[&str], rows: &[R]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r.as_ref()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (c, w) in cells.zip(widths.iter()) {
            let _ = write!(l, "{c:<w$}  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.as_ref().iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_800), "2100-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
