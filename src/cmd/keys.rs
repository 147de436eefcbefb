//! `tokengate keys`: the key inventory as a table (or `--json`), from the config's key
//! sources (`--config`) or from a running instance's admin listener (`--admin URL`).

use std::path::PathBuf;

use super::{Exit, load_config, one_shot_app};
use crate::app::EnvLookup;
use crate::keys::KeyState;
use crate::keys::inventory::{self, KeyEntry};

/// Runs the command.
pub async fn run(
    config: Option<PathBuf>,
    admin: Option<String>,
    json: bool,
    env: EnvLookup,
) -> Exit {
    if let Some(url) = admin {
        return from_admin(&url, json).await;
    }
    let config = match load_config(config, &env) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let (app, problems) = one_shot_app(config, None, env).await;
    for p in &problems {
        eprintln!("warning: {}: {}", p.field, p.error);
    }
    let entries = app.inventory();
    if json {
        println!("{}", inventory::to_json(&entries));
    } else {
        print!("{}", inventory::table(&entries));
    }
    Exit::Ok
}

async fn from_admin(url: &str, json: bool) -> Exit {
    let url = format!("{}/keys", url.trim_end_matches('/'));
    let body = match reqwest::get(&url).await {
        Ok(resp) if resp.status().is_success() => resp.text().await.unwrap_or_default(),
        Ok(resp) => {
            eprintln!("error: {url}: HTTP {}", resp.status());
            return Exit::Failed;
        }
        Err(e) => {
            eprintln!("error: {url}: {e}");
            return Exit::Failed;
        }
    };
    if json {
        println!("{body}");
        return Exit::Ok;
    }
    let doc: serde_json::Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {url}: not a key inventory: {e}");
            return Exit::Failed;
        }
    };
    let entries: Vec<KeyEntry> = doc["keys"]
        .as_array()
        .map(|list| list.iter().filter_map(entry_from_json).collect())
        .unwrap_or_default();
    print!("{}", inventory::table(&entries));
    Exit::Ok
}

fn entry_from_json(v: &serde_json::Value) -> Option<KeyEntry> {
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let leak = |x: Option<String>| -> &'static str {
        // Table labels only; the set of values is small and fixed (source, kty, crv, alg).
        match x.as_deref() {
            Some("jwks") => "jwks",
            Some("jwks_file") => "jwks_file",
            Some("keystore") => "keystore",
            Some("pem") => "pem",
            Some("RSA") => "RSA",
            Some("EC") => "EC",
            Some("OKP") => "OKP",
            Some("oct") => "oct",
            Some("P-256") => "P-256",
            Some("P-384") => "P-384",
            Some("Ed25519") => "Ed25519",
            Some(other) => crate::alg::Alg::from_name(other).map_or("?", |a| a.name()),
            None => "-",
        }
    };
    let ts = |k: &str| v[k].as_str().and_then(parse_rfc3339);
    Some(KeyEntry {
        issuer: s("issuer")?,
        source: leak(s("source")),
        key: s("key")?,
        kty: leak(s("kty")),
        crv: s("crv").map(|c| leak(Some(c))),
        alg: s("alg").map(|a| leak(Some(a))),
        thumbprint: s("thumbprint").unwrap_or_default(),
        state: match v["state"].as_str() {
            Some("active") => KeyState::Active,
            Some("retired") => KeyState::Retired,
            Some("revoked") => KeyState::Revoked,
            Some("missing") => KeyState::Missing,
            _ => KeyState::Valid,
        },
        not_before: ts("not_before"),
        not_after: ts("not_after"),
        first_seen: ts("first_seen"),
        last_used: ts("last_used"),
        validations: v["validations"].as_u64().unwrap_or(0),
        validations_1h: v["validations_1h"].as_u64().unwrap_or(0),
        validations_24h: v["validations_24h"].as_u64().unwrap_or(0),
        past_max_age: v["past_max_age"].as_bool().unwrap_or(false),
        validations_kid: v["validations_by_match"]["kid"].as_u64().unwrap_or(0),
        validations_fallback: v["validations_by_match"]["fallback"].as_u64().unwrap_or(0),
        fetched_at: ts("fetched_at"),
        retired_at: ts("retired_at"),
        usage: if v["use"].as_str() == Some("enc") {
            "enc"
        } else {
            "sig"
        },
    })
}

/// Parses the `YYYY-MM-DDTHH:MM:SSZ` form that [`inventory::rfc3339`] writes.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_what_the_inventory_writes() {
        for t in [0, 951_782_400, 1_700_000_000, 4_102_444_800] {
            assert_eq!(
                super::parse_rfc3339(&crate::keys::inventory::rfc3339(t)),
                Some(t)
            );
        }
    }
}
