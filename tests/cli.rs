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

/// The first minute: `tokengate demo` logs one plain line per listener and nothing else
/// at `info`, prints curl lines that behave as printed (200, 401, 400), and ends with
/// what to try next, whose first line works too.
#[test]
fn demo_prints_curl_lines_that_behave_as_printed() {
    let dir = TempDir::new("cli-demo");
    let stderr = dir.path("demo.stderr");
    let mut child = Command::new(bin())
        .args([
            "demo",
            "--authz-http",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .env_remove("TOKENGATE_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_default();
        lines.push(line.clone());
        if line.starts_with("  docs/") || Instant::now() > deadline {
            break;
        }
    }
    let run = |line: &str| {
        let out = Command::new("sh")
            .args(["-c", &format!("{line} -s -w ' %{{http_code}}'")])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status = |line: &str| run(line).rsplit(' ').next().unwrap_or_default().to_string();
    let curls: Vec<&String> = lines.iter().filter(|l| l.starts_with("curl ")).collect();
    assert_eq!(curls.len(), 3, "{lines:#?}");
    assert_eq!(status(curls[0]), "200", "allowed line: {}", curls[0]);
    assert_eq!(status(curls[1]), "401", "denied line: {}", curls[1]);
    assert_eq!(status(curls[2]), "400", "refused line: {}", curls[2]);

    // The instructions end with what to try next; its first line shows the demo key.
    let next = lines
        .iter()
        .position(|l| l == "Try next:")
        .unwrap_or_else(|| panic!("no \"Try next:\" section: {lines:#?}"));
    assert!(
        lines[next + 1..].iter().all(|l| l.starts_with("  ")),
        "the next steps are the last lines: {lines:#?}"
    );
    let keys = lines[next + 1].trim_start();
    let keys = keys.split('#').next().unwrap_or_default().trim();
    let answer = run(keys);
    assert!(
        answer.contains("demo-es256-1") && answer.ends_with(" 200"),
        "{keys}: {answer}"
    );

    // The rotation the demo offers: a new signing key, whose token passes (one refetch);
    // /rotation lists both keys; the plan says the old one is still in use.
    let line_with = |needle: &str| {
        lines
            .iter()
            .find(|l| l.starts_with("  ") && l.contains(needle))
            .map(|l| l.split('#').next().unwrap_or_default().trim().to_string())
            .unwrap_or_else(|| panic!("no line with {needle}: {lines:#?}"))
    };
    let rotated = Command::new("sh")
        .args(["-c", &format!("{} -s", line_with("/demo/rotate"))])
        .output()
        .expect("curl");
    let rotated = String::from_utf8_lossy(&rotated.stdout).into_owned();
    assert!(
        rotated.contains("demo-es256-2 signs from now on"),
        "{rotated}"
    );
    let new_curl = rotated
        .lines()
        .find(|l| l.starts_with("curl -i -H"))
        .unwrap_or_else(|| panic!("no curl line: {rotated}"));
    assert_eq!(status(new_curl), "200", "the new key's token: {new_curl}");
    let rotation = run(&line_with("/rotation"));
    assert!(
        rotation.contains("\"demo-es256-1\"") && rotation.contains("\"demo-es256-2\""),
        "{rotation}"
    );
    let plan = Command::new("sh")
        .args(["-c", &format!("{} --json", line_with("rotation plan"))])
        .output()
        .expect("rotation plan");
    let plan_out = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.status.code(), Some(1), "{plan_out}");
    assert!(
        plan_out.contains("\"verdict\":\"retire-in-use\""),
        "the first key verified a token a moment ago: {plan_out}"
    );

    // No framework noise: at `info`, one line per listener, without colour codes.
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    let log_lines: Vec<&str> = log.lines().collect();
    assert_eq!(log_lines.len(), 2, "stderr at info:\n{log}");
    for (line, listener) in log_lines.iter().zip(["authz_http", "admin"]) {
        assert!(
            line.contains(" INFO ")
                && line.contains(" listening ")
                && line.contains(&format!("listener=\"{listener}\"")),
            "stderr at info:\n{log}"
        );
    }
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );

    // Stopped (SIGTERM), it removes the directory of its live and candidate configs.
    let plan_line = line_with("rotation plan");
    let live = plan_line
        .split_whitespace()
        .skip_while(|w| *w != "--config")
        .nth(1)
        .map(std::path::PathBuf::from)
        .expect("the plan line names the live config");
    assert!(live.exists(), "{}", live.display());
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "the demo exits 0 on SIGTERM");
    assert!(
        !live.parent().is_some_and(|d| d.exists()),
        "the demo left {} behind",
        live.display()
    );
}

/// `rotation plan` refuses bad input with exit 2 and says what is wrong: an invalid
/// candidate (file and field), an unreachable `--admin` (the URL), a malformed `--window`,
/// no traffic source at all.
#[test]
fn rotation_plan_bad_input_is_exit_2_naming_it() {
    let dir = TempDir::new("cli-plan");
    let live = fixture_config(&dir);
    let mut broken = fixture_issuer();
    broken["bogus_field"] = json!(1);
    let candidate = dir.write("candidate.json", json!({"issuers": [broken]}).to_string());
    let candidate = candidate.to_string_lossy().into_owned();
    let down = crate::support::ClosedPort::new();
    let admin = format!("http://{}", down.addr);
    let plan = |args: &[&str]| {
        let mut all = vec!["rotation", "plan", "--config", &live];
        all.extend_from_slice(args);
        run(&all, None)
    };

    let (code, _, err) = plan(&["--candidate", &candidate, "--admin", &admin]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("candidate.json") && err.contains("issuers[0]") && err.contains("bogus_field"),
        "{err}"
    );

    let (code, _, err) = plan(&["--candidate", &live, "--admin", &admin]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&admin),
        "the unreachable admin URL is named: {err}"
    );

    let (code, _, err) = plan(&["--candidate", &live, "--admin", &admin, "--window", "soon"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--window") && err.contains("\"soon\""),
        "{err}"
    );

    let (code, _, err) = plan(&["--candidate", &live]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--admin") && err.contains("--prometheus"),
        "{err}"
    );

    let (code, _, err) = plan(&[
        "--candidate",
        &live,
        "--prometheus",
        &admin,
        "--window",
        "24h",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--prometheus") && err.contains(&admin),
        "{err}"
    );
}
