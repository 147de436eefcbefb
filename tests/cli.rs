//! The command line: `verify` (exit codes, key and match kind), `check-config` (errors
//! name file, field and reason), `keys`, and `demo` (its printed curl lines behave as
//! printed).

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{TempDir, bin, fixture_issuer, run, token};

fn fixture_config(dir: &TempDir) -> String {
    let cfg = json!({"issuers": [fixture_issuer()]});
    dir.write("config.json", cfg.to_string())
        .to_string_lossy()
        .into_owned()
}

#[test]
fn verify_accepts_and_denies_fixtures_with_exit_codes() {
    let dir = TempDir::new("cli-verify");
    let cfg = fixture_config(&dir);
    let (code, out, err) = run(&["verify", "--config", &cfg, &token("GOOD_RS256")], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("decision: allow (ok)"), "{out}");
    assert!(
        out.contains("key: rsa-1 (source jwks_file, matched by kid)"),
        "{out}"
    );
    assert!(out.contains("\"sub\": \"alice\""), "{out}");

    let (code, out, _) = run(
        &["verify", "--config", &cfg, "-"],
        Some(&token("NO_KID_ES256")),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("key: ec-p256 (source jwks_file, matched by fallback)"),
        "{out}"
    );

    for (name, reason) in [
        ("EXPIRED", "expired"),
        ("FOREIGN_KNOWN_KID", "bad_signature"),
        ("ALG_NONE", "bad_alg"),
    ] {
        let (code, out, _) = run(&["verify", "--config", &cfg, &token(name)], None);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(
            out.contains(&format!("decision: deny ({reason})")),
            "{name}: {out}"
        );
        assert!(
            !out.contains("claims:"),
            "denied tokens' claims are not printed"
        );
    }
    // `--now` judges at another time: the short-lived fixture is valid in its window.
    let (code, out, _) = run(
        &[
            "verify",
            "--config",
            &cfg,
            "--now",
            "1700000300",
            &token("SHORT_LIVED"),
        ],
        None,
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
fn check_config_names_file_field_and_reason() {
    let dir = TempDir::new("cli-check");
    let cfg = fixture_config(&dir);
    let (code, out, err) = run(&["check-config", "--config", &cfg], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("rsa-1") && out.contains("pem-1") && out.contains("2099-12-31T23:59:59Z"),
        "{out}"
    );

    let cases = [
        (json!({"issuers": []}), "issuers", "at least one issuer"),
        (
            json!({"issuers": [{"name": "a", "key_sources": [{"jwks_file": "x", "refresh": "5m"}]}]}),
            "issuers[0].key_sources[0].refresh",
            "does not apply to a jwks_file source",
        ),
        (
            json!({"issuers": [{"name": "a", "algorithms": ["RS255"], "key_sources": [{"jwks_file": "x"}]}]}),
            "issuers[0].algorithms[0]",
            "valid: RS256",
        ),
        (
            json!({"issuers": [{"name": "a", "leeway": "30 s", "key_sources": [{"jwks_file": "x"}]}]}),
            "issuers[0].leeway",
            "not a duration",
        ),
        (
            json!({"issuers": [{"name": "a", "key_sources": []}]}),
            "issuers[0].key_sources",
            "at least one key source",
        ),
        (
            json!({"issuers": [{"name": "a", "key_sources": [{"jwks_file": "x"}]}, {"name": "b", "key_sources": [{"jwks_file": "y"}]}]}),
            "issuers[1].issuer",
            "at most one issuer may omit",
        ),
        (
            json!({"listeners": {"proxy": "127.0.0.1:8080"}, "issuers": [{"name": "a", "key_sources": [{"jwks_file": "x"}]}]}),
            "listeners.proxy",
            "needs `upstream`",
        ),
        (
            json!({"issuers": [{"name": "a", "key_sources": [{"jwks_file": "x"}]}], "cache": {"max_entrys": 1}}),
            "cache",
            "unknown field `max_entrys`",
        ),
    ];
    for (i, (cfg, field, reason)) in cases.iter().enumerate() {
        let path = dir.write(&format!("bad-{i}.json"), cfg.to_string());
        let (code, _, err) = run(&["check-config", "--config", &path.to_string_lossy()], None);
        assert_eq!(code, 2, "{cfg}: {err}");
        assert!(
            err.contains(&*path.to_string_lossy()),
            "names the file: {err}"
        );
        assert!(err.contains(field), "names the field {field}: {err}");
        assert!(err.contains(reason), "says why ({reason}): {err}");
    }

    // A key source that cannot load: exit 1, naming the source and the file.
    let bad = dir.write(
        "bad-keys.json",
        json!({"issuers": [{"name": "a", "key_sources": [{"jwks_file": "missing.json"}]}]})
            .to_string(),
    );
    let (code, _, err) = run(&["check-config", "--config", &bad.to_string_lossy()], None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("issuers[0].key_sources[0]") && err.contains("missing.json"),
        "{err}"
    );
}

#[test]
fn keys_prints_the_inventory() {
    let dir = TempDir::new("cli-keys");
    let cfg = fixture_config(&dir);
    let (code, out, _) = run(&["keys", "--config", &cfg, "--json"], None);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let keys = doc["keys"].as_array().cloned().unwrap_or_default();
    assert_eq!(keys.len(), 7, "{out}");
    assert_eq!(keys[0]["key"], "rsa-1");
    assert_eq!(keys[0]["thumbprint"].as_str().map(str::len), Some(43));
    let (code, out, _) = run(&["keys", "--config", &cfg], None);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("ISSUER") && out.contains("ec-p384"),
        "{out}"
    );
}

#[test]
fn demo_prints_curl_lines_that_behave_as_printed() {
    let mut child = Command::new(bin())
        .args([
            "demo",
            "--authz-http",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn demo: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_default();
        lines.push(line.clone());
        if line.starts_with("The token is valid") || Instant::now() > deadline {
            break;
        }
    }
    let curls: Vec<&String> = lines.iter().filter(|l| l.starts_with("curl ")).collect();
    assert_eq!(curls.len(), 2, "{lines:#?}");
    let status = |line: &str| {
        let out = Command::new("sh")
            .args(["-c", &format!("{line} -s -o /dev/null -w '%{{http_code}}'")])
            .output()
            .unwrap_or_else(|e| panic!("curl: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(status(curls[0]), "200", "allowed line: {}", curls[0]);
    assert_eq!(status(curls[1]), "401", "denied line: {}", curls[1]);
    let _ = child.kill();
    let _ = child.wait();
}
