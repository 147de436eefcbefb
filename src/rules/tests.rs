use super::*;

fn claims(json: &str) -> RuleClaims {
    let set: ClaimSet<'_> = serde_json::from_str(json).expect("claims JSON");
    RuleClaims::of(&set, &NameUse::All, 4)
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// Evaluates `rule` for these claims on `method path` with `hdrs`, issuer `am`, key `k1`.
fn eval(rule: &str, claims_json: &str, method: &str, path: &str, hdrs: &[(&str, &str)]) -> bool {
    let rule = Rule::compile(rule).unwrap_or_else(|e| panic!("{rule}: {e}"));
    let h = headers(hdrs);
    let input = RuleInput {
        method,
        path,
        headers: h.as_slice(),
        issuer: "am",
        key: "k1",
    };
    RouteRules::new(&[Arc::new(rule)], &mut 0).all_allow(&claims(claims_json), &input)
}

const ALICE: &str = r#"{"sub":"alice","groups":["billing","ops"],"acr":"urn:mfa","tenant":"acme",
    "client_id":"web-app","level":3,"profile":{"region":"eu"},"big":18446744073709551615}"#;

#[test]
fn each_variable_is_seen() {
    let get = |rule: &str| {
        eval(
            rule,
            ALICE,
            "POST",
            "/t/acme/invoices",
            &[("X-Tenant", "acme")],
        )
    };
    assert!(get("claims.sub == 'alice'"));
    assert!(get("claims.level >= 2 && claims.level + 1 == 4"));
    assert!(get("claims.profile.region == 'eu'"));
    assert!(get("claims.big > 0u"));
    assert!(get("request.method == 'POST'"));
    assert!(get("request.path.startsWith('/t/acme/')"));
    assert!(get("request.headers['x-tenant'] == 'acme'"));
    assert!(get("token.issuer == 'am' && token.key == 'k1'"));
    assert!(!get("token.issuer == 'other'"));
}

#[test]
fn the_guide_examples_allow_and_deny() {
    // Group membership.
    let group = "has(claims.groups) && 'billing' in claims.groups";
    assert!(eval(group, ALICE, "POST", "/invoices", &[]));
    assert!(!eval(
        group,
        r#"{"groups":["ops"]}"#,
        "POST",
        "/invoices",
        &[]
    ));
    // acr for writes.
    let acr = "request.method in ['GET', 'HEAD'] || claims.acr == 'urn:mfa'";
    assert!(eval(acr, r#"{"acr":"urn:pwd"}"#, "GET", "/x", &[]));
    assert!(!eval(acr, r#"{"acr":"urn:pwd"}"#, "DELETE", "/x", &[]));
    assert!(eval(acr, ALICE, "DELETE", "/x", &[]));
    // Tenant from the path against the claim.
    let tenant = "request.path.startsWith('/tenants/' + claims.tenant + '/')";
    assert!(eval(tenant, ALICE, "GET", "/tenants/acme/orders", &[]));
    assert!(!eval(tenant, ALICE, "GET", "/tenants/acme2/orders", &[]));
    // Client id allowlist.
    let client = "claims.client_id in ['web-app', 'batch']";
    assert!(eval(client, ALICE, "GET", "/", &[]));
    assert!(!eval(
        client,
        r#"{"client_id":"intruder"}"#,
        "GET",
        "/",
        &[]
    ));
    // A header equal to a claim.
    let header = "request.headers['x-tenant'] == claims.tenant";
    assert!(eval(header, ALICE, "GET", "/", &[("x-tenant", "acme")]));
    assert!(!eval(header, ALICE, "GET", "/", &[("x-tenant", "evil")]));
    assert!(!eval(header, ALICE, "GET", "/", &[]), "absent header");
}

#[test]
fn errors_and_non_booleans_are_false() {
    // A missing claim, a type mismatch, a non-boolean result.
    assert!(!eval("'billing' in claims.groups", "{}", "GET", "/", &[]));
    assert!(!eval(
        "!('billing' in claims.groups)",
        "{}",
        "GET",
        "/",
        &[]
    ));
    assert!(!eval("'billing' in claims.sub", ALICE, "GET", "/", &[]));
    assert!(!eval("claims.sub", ALICE, "GET", "/", &[]));
    assert!(!eval("claims.level / 0 == 1", ALICE, "GET", "/", &[]));
    // A header a rule reads that comes twice fails the rules that read the request.
    let twice = [("x-a", "1"), ("X-A", "2"), ("x-b", "3")];
    assert!(!eval(
        "request.headers['x-a'] == '1'",
        "{}",
        "GET",
        "/",
        &twice
    ));
    assert!(
        eval("request.method == 'GET'", "{}", "GET", "/", &twice),
        "a rule that reads no repeated header"
    );
    assert!(
        eval("request.headers['x-b'] == '3'", "{}", "GET", "/", &twice),
        "another header"
    );
    assert!(
        !eval("!('x-c' in request.headers)", "{}", "GET", "/", &twice),
        "all headers"
    );
}

#[test]
fn compile_errors_give_the_position() {
    let err = |src: &str| Rule::compile(src).err().unwrap_or_default();
    let e = err("claims.groups.exists(g, g == ");
    assert!(e.starts_with("line 1, column "), "{e}");
    let e = err("claims.sub == 'a' &&\n  claims.x.matches('a+')");
    assert!(e.starts_with("line 2, column "), "{e}");
    assert!(e.contains("\"matches\" is not available"), "{e}");
    let e = err("claim.sub == 'a'");
    assert_eq!(
        e,
        "line 1, column 1: unknown name \"claim\"; rules see claims, request and token"
    );
    let e = err("claims.groups.all(g, claims.groups.exists(h, h == g))");
    assert!(e.contains("inside another one"), "{e}");
    assert!(err("timestamp('2026-01-01T00:00:00Z') > 0").contains("not available"));
    assert!(err(&"1 == 1 && ".repeat(500)).contains("longer than"));
    assert!(
        err("claims.a.?b").starts_with("line 1"),
        "optional syntax is off"
    );
    // Comprehension variables are names only inside their macro.
    assert!(Rule::compile("claims.groups.exists(g, g == 'x')").is_ok());
    assert!(err("claims.groups.exists(g, g == 'x') || g == 'y'").contains("unknown name \"g\""));
}

#[test]
fn claims_beyond_the_caps_fail_every_rule() {
    let many: Vec<String> = (0..MAX_CLAIM_NODES).map(|i| format!("\"g{i}\"")).collect();
    let big = format!(r#"{{"groups":[{}]}}"#, many.join(","));
    assert!(!eval(
        "true || claims.groups.size() > 0",
        &big,
        "GET",
        "/",
        &[]
    ));
    assert!(!eval("!('admin' in claims.groups)", &big, "GET", "/", &[]));
    let fits = format!(
        r#"{{"groups":[{}]}}"#,
        many[..MAX_CLAIM_NODES - 2].join(",")
    );
    assert!(eval("!('admin' in claims.groups)", &fits, "GET", "/", &[]));
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(20), "]".repeat(20));
    assert!(!eval("true", &deep, "GET", "/", &[]));
    let long = "x".repeat(MAX_CLAIM_STRING_BYTES + 1);
    assert!(!eval(
        "true",
        &format!(r#"{{"sub":"{long}"}}"#),
        "GET",
        "/",
        &[]
    ));
    assert!(!eval(
        "true",
        &format!(r#"{{"p":{{"n":"{long}"}}}}"#),
        "GET",
        "/",
        &[]
    ));
    assert!(!eval(
        "true",
        &format!(r#"{{"p":{{"{long}":1}}}}"#),
        "GET",
        "/",
        &[]
    ));
    let fits = "x".repeat(MAX_CLAIM_STRING_BYTES);
    assert!(eval(
        "size(claims.sub) == 4096",
        &format!(r#"{{"sub":"{fits}"}}"#),
        "GET",
        "/",
        &[]
    ));
}

#[test]
fn only_the_headers_rules_read_are_fed_to_them() {
    let uses = |src: &str| Rule::compile(src).map(|r| r.headers);
    let reads = |src: &str| Rule::compile(src).map(|r| r.claims);
    assert_eq!(
        reads("has(claims.groups) && claims['tenant'] == request.headers['x-tenant']"),
        Ok(NameUse::Names(vec!["groups".into(), "tenant".into()]))
    );
    for all in [
        "'sub' in claims",
        "claims[request.path] == 1",
        "size(claims) > 2",
    ] {
        assert_eq!(reads(all), Ok(NameUse::All), "{all}");
    }
    assert_eq!(
        uses("request.headers['x-tenant'] == claims.tenant && has(request.headers.accept)"),
        Ok(NameUse::Names(vec!["x-tenant".into(), "accept".into()]))
    );
    assert_eq!(uses("request.method == 'GET'"), Ok(NameUse::Names(vec![])));
    for all in [
        "'x-a' in request.headers",
        "request.headers.exists(h, h == 'x-a')",
        "size(request) > 0",
        "request.headers[claims.header] == 'x'",
    ] {
        assert_eq!(uses(all), Ok(NameUse::All), "{all}");
    }
    let e = Rule::compile("request.headers['X-Tenant'] == 'a'")
        .err()
        .unwrap_or_default();
    assert!(e.contains("lower-case names"), "{e}");
    // The same answers with the named headers only and with all of them.
    let hdrs = [("X-Tenant", "acme"), ("Accept", "json"), ("x-other", "1")];
    for rule in [
        "request.headers['x-tenant'] == 'acme'",
        "has(request.headers.accept) && !has(request.headers.missing)",
        "'x-other' in request.headers && request.headers['x-tenant'] == 'acme'",
    ] {
        assert!(eval(rule, "{}", "GET", "/", &hdrs), "{rule}");
    }
}

#[test]
fn rules_that_read_only_the_token_run_once_per_token() {
    let compile = |src: &str| Arc::new(Rule::compile(src).expect("compiles"));
    let mut next = 0;
    let rules = RouteRules::new(
        &[
            compile("'billing' in claims.groups"),
            compile("request.method == 'GET'"),
            compile("token.issuer == 'am'"),
        ],
        &mut next,
    );
    assert_eq!(
        next, 2,
        "the two rules that do not read the request have slots"
    );
    let c = claims(ALICE);
    let h = headers(&[]);
    let input = |method| RuleInput {
        method,
        path: "/",
        headers: h.as_slice(),
        issuer: "am",
        key: "k1",
    };
    assert!(rules.all_allow(&c, &input("GET")));
    assert_eq!((c.memo(0), c.memo(1)), (Some(true), Some(true)));
    assert!(
        !rules.all_allow(&c, &input("POST")),
        "the request rule still runs"
    );
    let ops = claims(r#"{"groups":["ops"]}"#);
    assert!(!rules.all_allow(&ops, &input("GET")));
    assert_eq!(ops.memo(0), Some(false));
    assert!(!rules.all_allow(&ops, &input("GET")), "a remembered false");
}

#[test]
fn headers_that_cannot_be_read_one_way_fail_the_rules_that_read_them() {
    let rules =
        |src: &str| RouteRules::new(&[Arc::new(Rule::compile(src).expect("compiles"))], &mut 0);
    let c = claims("{}");
    let mut map = http::HeaderMap::new();
    map.insert("x-a", http::HeaderValue::from_static("ok"));
    map.insert(
        "x-bin",
        http::HeaderValue::from_bytes(b"\xffname").expect("a header value"),
    );
    let input = RuleInput {
        method: "GET",
        path: "/",
        headers: &map,
        issuer: "am",
        key: "k1",
    };
    assert!(rules("request.headers['x-a'] == 'ok'").all_allow(&c, &input));
    assert!(
        !rules("request.headers['x-bin'] != 'admin'").all_allow(&c, &input),
        "not UTF-8"
    );
    assert!(
        !rules("!('x-bin' in request.headers)").all_allow(&c, &input),
        "not UTF-8, all headers"
    );
    assert!(!rules("size(request.headers) > 0").all_allow(&c, &input));
    let many: Vec<(String, String)> = (0..=MAX_HEADERS)
        .map(|i| (format!("x-h{i}"), "v".to_string()))
        .collect();
    let input = RuleInput {
        method: "GET",
        path: "/",
        headers: many.as_slice(),
        issuer: "am",
        key: "k1",
    };
    assert!(
        !rules("!('x-evil' in request.headers)").all_allow(&c, &input),
        "too many"
    );
    assert!(
        rules("request.headers['x-h1'] == 'v'").all_allow(&c, &input),
        "named headers"
    );
}
