//! Policy beyond scopes and what each check tells the operator (SPEC §12): the decision
//! log (`audit`) and CEL rules, against the real binary.

use serde_json::{Value, json};

use crate::support::{TempDir, Tokengate, fixture_issuer, http, mint, token};

/// The fields of a decision-log line (SPEC §12), and nothing else.
const AUDIT_FIELDS: [&str; 16] = [
    "time",
    "target",
    "listener",
    "route",
    "method",
    "path",
    "decision",
    "reason",
    "enforced",
    "issuer",
    "key",
    "match",
    "subject",
    "fingerprint",
    "trace_id",
    "latency_us",
];

/// The first 8 hex digits of the SHA-256 of `token`.
fn fingerprint(token: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    d.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The line about the request to `path` (each test sends one request per path).
fn line_for<'a>(lines: &'a [Value], path: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["path"] == path)
        .unwrap_or_else(|| panic!("no decision-log line for {path}: {lines:#?}"))
}

/// Allow, deny, anonymous, shadow and an unreadable request each write one JSON line
/// with exactly the SPEC's fields; the subject comes from `audit.subject_claim`.
#[test]
fn the_decision_log_writes_one_json_line_per_decision() {
    let dir = TempDir::new("policy-audit");
    let cfg = json!({
        "issuers": [fixture_issuer()],
        "routes": [
            {"name": "public", "path_prefix": "/public", "allow_anonymous": true},
            {"name": "shadowed", "path_prefix": "/shadow", "mode": "shadow", "scopes_all": ["admin"]},
            {"name": "orders", "path_prefix": "/orders", "scopes_all": ["orders:write"]}
        ],
        "audit": {"enabled": true, "subject_claim": "sub"}
    });
    let tg = Tokengate::start(&dir, cfg);
    tg.wait_ready();
    let good = token("GOOD_RS256");

    assert_eq!(tg.check_token("/orders/1", &good).status, 200);
    assert_eq!(tg.check("GET", "/orders/2", &[]).status, 401);
    assert_eq!(tg.check("GET", "/public/3", &[]).status, 200);
    let shadow = tg.check_token("/shadow/4", &good);
    assert_eq!(shadow.status, 200, "shadow mode lets the denial through");
    // Refused before it is read: logged as received, but never with its query.
    assert_eq!(
        tg.check("POST", "/orders%2f5?access_token=in-the-query", &[])
            .status,
        400
    );
    let expired = token("EXPIRED");
    assert_eq!(tg.check_token("/orders/6", &expired).status, 401);

    let lines = tg.wait_audit_lines(6);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    for l in &lines {
        let mut keys: Vec<&str> = l
            .as_object()
            .expect("a line is an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut want = AUDIT_FIELDS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want, "{l}");
        assert_eq!(l["target"], "tokengate::audit");
        assert_eq!(l["listener"], "authz_http");
        assert!(l["latency_us"].as_u64().is_some(), "{l}");
        let time = l["time"].as_str().unwrap_or_default();
        assert!(
            time.len() == 24 && time.ends_with('Z') && time.starts_with("20"),
            "{time}"
        );
    }

    let allow = line_for(&lines, "/orders/1");
    assert_eq!(allow["route"], "orders");
    assert_eq!(allow["method"], "GET");
    assert_eq!(allow["decision"], "allow");
    assert_eq!(allow["reason"], "ok");
    assert_eq!(allow["enforced"], true);
    assert_eq!(allow["issuer"], "main");
    assert_eq!(allow["key"], "rsa-1");
    assert_eq!(allow["match"], "kid");
    assert_eq!(allow["subject"], "alice");
    assert_eq!(allow["fingerprint"], fingerprint(&good).as_str());

    let deny = line_for(&lines, "/orders/2");
    assert_eq!(
        (&deny["decision"], &deny["reason"], &deny["enforced"]),
        (&json!("deny"), &json!("missing_token"), &json!(true))
    );
    assert_eq!(
        (&deny["issuer"], &deny["subject"], &deny["fingerprint"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );

    let anonymous = line_for(&lines, "/public/3");
    assert_eq!(
        (
            &anonymous["decision"],
            &anonymous["reason"],
            &anonymous["route"]
        ),
        (&json!("allow"), &json!("anonymous"), &json!("public"))
    );

    // The judgement, not the answer: a shadowed denial is logged as the denial it is.
    let shadowed = line_for(&lines, "/shadow/4");
    assert_eq!(
        (
            &shadowed["decision"],
            &shadowed["reason"],
            &shadowed["enforced"]
        ),
        (&json!("deny"), &json!("insufficient_scope"), &json!(false))
    );
    assert_eq!(shadowed["subject"], "alice", "who was refused is known");

    let unreadable = line_for(&lines, "/orders%2f5");
    assert_eq!(
        (
            &unreadable["reason"],
            &unreadable["method"],
            &unreadable["route"]
        ),
        (&json!("invalid_request"), &json!("POST"), &Value::Null)
    );

    let expired_line = line_for(&lines, "/orders/6");
    assert_eq!(expired_line["reason"], "expired");
    assert_eq!(expired_line["issuer"], "main");
    assert_eq!(expired_line["subject"], Value::Null, "not a valid token");
    assert_eq!(expired_line["fingerprint"], fingerprint(&expired).as_str());

    assert!(
        !tg.stdout().contains("in-the-query"),
        "a query reached the decision log"
    );
    // Diagnostic logs stay on stderr; the decision log never goes there.
    assert!(!tg.logs().contains("tokengate::audit"), "{}", tg.logs());
    assert_eq!(
        tg.metrics().value("tokengate_audit_dropped_total", &[]),
        Some(0.0)
    );
}

/// `audit.sample` is the probability that a decision is logged: 0.3 of 400 decisions
/// is 120 on average (standard deviation 9); the bound is ±50. Turned off by a reload,
/// nothing more is written.
#[test]
fn the_decision_log_honours_sample_and_reload() {
    let dir = TempDir::new("policy-audit-sample");
    let mut cfg = json!({
        "issuers": [fixture_issuer()],
        "audit": {"enabled": true, "sample": 0.3},
        "reload": {"scan_interval": "100ms"}
    });
    let tg = Tokengate::start(&dir, cfg.clone());
    tg.wait_ready();
    let good = token("GOOD_RS256");
    let auth = format!("Bearer {good}");
    let get = |path: String| {
        http::request(tg.authz, "GET", &path, &[("authorization", &auth)], b"").map(|r| r.status)
    };
    for i in 0..400 {
        assert_eq!(get(format!("/n/{i}")), Some(200));
    }
    // The writer drains asynchronously: wait until the count stops moving.
    let mut seen = usize::MAX;
    tg.wait_for(
        || {
            let n = tg.audit_lines().len();
            let settled = n == seen;
            seen = n;
            std::thread::sleep(std::time::Duration::from_millis(200));
            settled
        },
        "the decision log to settle",
    );
    assert!(
        (70..=170).contains(&seen),
        "{seen} of 400 decisions logged at sample 0.3"
    );

    cfg["audit"]["enabled"] = json!(false);
    std::fs::write(&tg.config, cfg.to_string()).expect("rewrite config");
    tg.wait_for(
        || {
            tg.metrics()
                .value("tokengate_config_reloads_total", &[("result", "ok")])
                .is_some_and(|v| v >= 1.0)
        },
        "config reload",
    );
    for i in 0..50 {
        assert_eq!(get(format!("/off/{i}")), Some(200));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        tg.audit_lines().len(),
        seen,
        "lines written after audit was turned off"
    );
}

/// The config block of `docs/policy.md` ("Five rules you will want").
fn guide_config() -> Value {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/policy.md"),
    )
    .expect("docs/policy.md");
    let block = text
        .split("<!-- policy-example -->")
        .nth(1)
        .and_then(|rest| rest.split("```json").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("the policy example block");
    serde_json::from_str(block).expect("the policy example is JSON")
}

/// A token of the fixture issuer with these claims added.
fn token_with(extra: Value) -> String {
    let mut claims = mint::claims();
    for (k, v) in extra.as_object().expect("an object") {
        claims[k] = v.clone();
    }
    mint::sign(
        jsonwebtoken::Algorithm::RS256,
        "rsa-1",
        Some("rsa-1"),
        &claims,
    )
}

/// Each rule of the guide's example, run from `docs/policy.md` itself: one request it
/// allows and one it refuses `rule_failed`.
#[test]
fn the_guide_examples_allow_and_deny() {
    let dir = TempDir::new("policy-guide");
    let mut cfg = guide_config();
    cfg["issuers"] = json!([fixture_issuer()]);
    let tg = Tokengate::start(&dir, cfg);
    tg.wait_ready();
    let billing = token_with(json!({"groups": ["billing"]}));
    let ops = token_with(json!({"groups": ["ops"]}));
    let no_groups = token_with(json!({}));
    let mfa = token_with(json!({"acr": "urn:example:mfa"}));
    let pwd = token_with(json!({"acr": "urn:example:pwd"}));
    let acme = token_with(json!({"tenant": "acme"}));
    let ui = token_with(json!({"client_id": "reporting-ui"}));
    let other = token_with(json!({"client_id": "mobile"}));
    let org = token_with(json!({"org": "o-17"}));

    /// Method, path, token, more headers, the status wanted.
    type Case<'a> = (&'a str, &'a str, &'a String, &'a [(&'a str, &'a str)], u16);
    let cases: [Case<'_>; 16] = [
        ("POST", "/invoices", &billing, &[], 200),
        ("POST", "/invoices", &ops, &[], 403),
        ("POST", "/invoices", &no_groups, &[], 403),
        ("GET", "/invoices", &ops, &[], 200),
        ("GET", "/accounts/1", &pwd, &[], 200),
        ("PUT", "/accounts/1", &pwd, &[], 403),
        ("PUT", "/accounts/1", &mfa, &[], 200),
        ("GET", "/tenants/acme/orders", &acme, &[], 200),
        ("GET", "/tenants/acme-corp/orders", &acme, &[], 403),
        ("GET", "/tenants/acme/../evil/x", &acme, &[], 400),
        ("GET", "/reports/q3", &ui, &[], 200),
        ("GET", "/reports/q3", &other, &[], 403),
        ("GET", "/orgs/x", &org, &[("x-org-id", "o-17")], 200),
        ("GET", "/orgs/x", &org, &[("x-org-id", "o-18")], 403),
        ("GET", "/orgs/x", &org, &[], 403),
        ("GET", "/orgs/x", &no_groups, &[], 403),
    ];
    for (method, path, token, extra, want) in cases {
        let auth = format!("Bearer {token}");
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend_from_slice(extra);
        let r = tg.check(method, path, &headers);
        assert_eq!(
            r.status,
            want,
            "{method} {path} {extra:?}: {}",
            r.body_text()
        );
        if want == 403 {
            assert_eq!(r.error(), "rule_failed", "{method} {path}");
        }
    }
    let m = tg.metrics();
    for (route, n) in [
        ("invoices-write", 2.0),
        ("accounts", 1.0),
        ("tenants", 1.0),
        ("reports", 1.0),
        ("orgs", 3.0),
    ] {
        assert_eq!(
            m.value("tokengate_rule_denials_total", &[("route", route)]),
            Some(n),
            "{route}"
        );
    }
}
