use super::*;

fn parse(json: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/tokengate/config.json"), json.as_bytes())
}

const MINIMAL: &str = r#"{"issuers":[{"name":"am","key_sources":[{"jwks_file":"jwks.json"}]}]}"#;

#[test]
fn applies_documented_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.listeners.authz_http, DEFAULT_AUTHZ_HTTP.parse().ok());
    assert_eq!(c.listeners.authz_grpc, DEFAULT_AUTHZ_GRPC.parse().ok());
    assert_eq!(c.listeners.admin, DEFAULT_ADMIN.parse().ok());
    assert_eq!(c.listeners.proxy, None, "proxy is on only with an upstream");
    assert_eq!(c.token.max_bytes, DEFAULT_TOKEN_MAX_BYTES);
    assert_eq!(c.cache.max_entries, DEFAULT_CACHE_MAX_ENTRIES);
    assert_eq!(c.cache.max_ttl, DEFAULT_CACHE_MAX_TTL);
    assert_eq!(c.fallback_max_keys, DEFAULT_FALLBACK_MAX_KEYS);
    assert_eq!(c.scan_interval, DEFAULT_SCAN_INTERVAL);
    let i = &c.issuers[0];
    assert_eq!(i.leeway, DEFAULT_LEEWAY);
    assert_eq!(i.required_claims, vec!["exp".to_string()]);
    assert_eq!(i.certificate_validity, CertificateValidity::Iat);
    assert!(
        !i.algorithms.contains(Alg::HS256),
        "HMAC only when asked for"
    );
    assert!(i.algorithms.contains(Alg::RS256) && i.algorithms.contains(Alg::EdDSA));
    assert_eq!(
        i.key_sources[0],
        KeySourceConfig::JwksFile {
            path: PathBuf::from("/etc/tokengate/jwks.json")
        },
        "relative paths are relative to the config file"
    );
}

#[test]
fn proxy_defaults_on_with_upstream_and_null_turns_listeners_off() {
    let c = parse(
        r#"{"upstream":{"url":"http://127.0.0.1:3000/"},"listeners":{"admin":null,"authz_grpc":null},
            "issuers":[{"name":"am","key_sources":[{"jwks_file":"/k.json"}]}]}"#,
    )
    .unwrap();
    assert_eq!(c.listeners.proxy, DEFAULT_PROXY.parse().ok());
    assert_eq!(c.listeners.admin, None);
    assert_eq!(c.listeners.authz_grpc, None);
    assert_eq!(
        c.upstream.map(|u| u.url),
        Some("http://127.0.0.1:3000".to_string())
    );
}

#[test]
fn parses_the_spec_example_remote_and_keystore_sources() {
    let c = parse(
        r#"{"issuers":[{"name":"am","issuer":"https://am.example.com/oauth2","audiences":["orders-api"],
            "algorithms":["RS256","ES256"],"require_typ":["at+jwt"],"leeway":"30s","max_lifetime":"24h",
            "key_sources":[
              {"jwks_uri":"https://am.example.com/jwk","refresh":"5m","miss_refetch_interval":"30s","max_stale":"24h","timeout":"5s","ca_file":"/etc/ca.pem"},
              {"discovery":"https://am.example.com/oauth2"},
              {"keystore":"/secrets/IG_keystore.p12","store_type":"PKCS12","password_env":"KEYSTORE_SECRET_ID","password_encoding":"base64","aliases":["verification-key","verification-key-new"]},
              {"pem_file":"/etc/v.pem","kid":"pem-1"}]}]}"#,
    )
    .unwrap();
    let i = &c.issuers[0];
    assert_eq!(i.max_lifetime, Some(Duration::from_secs(86400)));
    assert!(
        matches!(&i.key_sources[0], KeySourceConfig::JwksUri { settings, .. } if settings.ca_file.is_some() && settings.refresh == Duration::from_secs(300))
    );
    assert!(matches!(
        &i.key_sources[1],
        KeySourceConfig::Discovery { .. }
    ));
    assert!(
        matches!(&i.key_sources[2], KeySourceConfig::Keystore { aliases, encoding: PasswordEncoding::Base64, .. } if aliases.len() == 2)
    );
}

#[test]
fn rejects_bad_configs_naming_the_field() {
    let src = |s: &str| format!(r#"{{"issuers":[{{"name":"am","key_sources":[{s}]}}]}}"#);
    let cases: Vec<(String, &str, &str)> = vec![
        ("{}".into(), "issuers", "missing field"),
        (r#"{"issuers":[],"extra":1}"#.into(), "extra", "unknown field"),
        (src(r#"{"jwks_file":"a","pem_file":"b"}"#), "issuers[0].key_sources[0]", "exactly one of"),
        (src(r#"{}"#), "issuers[0].key_sources[0]", "exactly one of"),
        (src(r#"{"pem_file":"b"}"#), "issuers[0].key_sources[0].kid", "kid"),
        (src(r#"{"keystore":"k.p12","aliases":["a"]}"#), "issuers[0].key_sources[0].password_env", "password"),
        (src(r#"{"keystore":"k.p12","password_env":"P","aliases":[]}"#), "issuers[0].key_sources[0].aliases", "at least one alias"),
        (src(r#"{"keystore":"k.p12","password_env":"P","aliases":["a","A"]}"#), "issuers[0].key_sources[0].aliases[1]", "case-insensitively"),
        (src(r#"{"keystore":"k.p12","password_env":"P","password_encoding":"hex","aliases":["a"]}"#), "issuers[0].key_sources[0].password_encoding", "\"base64\", \"plain\""),
        (src(r#"{"keystore":"k.p12","password_env":"P","store_type":"JKS","aliases":["a"]}"#), "issuers[0].key_sources[0].store_type", "PKCS12"),
        (src(r#"{"jwks_uri":"ftp://x/jwks"}"#), "issuers[0].key_sources[0].jwks_uri", "scheme"),
        (src(r#"{"jwks_uri":"https://x/jwks","timeout":"0s"}"#), "issuers[0].key_sources[0].timeout", "more than 0s"),
        (r#"{"issuers":[{"name":"a b","key_sources":[{"jwks_file":"x"}]}]}"#.into(), "issuers[0].name", "metric label"),
        (r#"{"issuers":[{"name":"a","certificate_validity":"always","key_sources":[{"jwks_file":"x"}]}]}"#.into(), "issuers[0].certificate_validity", "\"iat\", \"now\", \"off\""),
        (r#"{"issuers":[{"name":"a","issuer":"x","key_sources":[{"jwks_file":"x"}]},{"name":"a","issuer":"y","key_sources":[{"jwks_file":"x"}]}]}"#.into(), "issuers[1].name", "used by another issuer"),
        (r#"{"issuers":[{"name":"a","issuer":"x","key_sources":[{"jwks_file":"x"}]},{"name":"b","issuer":"x","key_sources":[{"jwks_file":"x"}]}]}"#.into(), "issuers[1].issuer", "configured twice"),
        (r#"{"listeners":{"admin":"localhost:9464"},"issuers":[{"name":"a","key_sources":[{"jwks_file":"x"}]}]}"#.into(), "listeners.admin", "IP:port"),
        (r#"{"listeners":{"admin":"127.0.0.1:9000","authz_http":"127.0.0.1:9000"},"issuers":[{"name":"a","key_sources":[{"jwks_file":"x"}]}]}"#.into(), "listeners.admin", "already used"),
        (r#"{"routes":[{"path_prefix":"orders"}],"issuers":[{"name":"a","key_sources":[{"jwks_file":"x"}]}]}"#.into(), "routes[0].path_prefix", "start with '/'"),
        (r#"{"routes":[{"allow_anonymous":true,"scopes_all":["x"]}],"issuers":[{"name":"a","key_sources":[{"jwks_file":"x"}]}]}"#.into(), "routes[0].allow_anonymous", "cannot require scopes"),
        (r#"{"token":{"max_bytes":0},"issuers":[{"name":"a","key_sources":[{"jwks_file":"x"}]}]}"#.into(), "token.max_bytes", "between"),
        (r#"{"token":{"from_headers":[{"name":"bad header"}]},"issuers":[{"name":"a","key_sources":[{"jwks_file":"x"}]}]}"#.into(), "token.from_headers[0].name", "header name"),
        (r#"{"cache":{"max_ttl":"soon"},"issuers":[{"name":"a","key_sources":[{"jwks_file":"x"}]}]}"#.into(), "cache.max_ttl", "not a duration"),
        (r#"{"issuers":[{"name":"a","key_sources":[{"jwks_file":"x"}]}],"revoked":{"kid":["x"]}}"#.into(), "revoked", "unknown field `kid`"),
    ];
    for (json, field, reason) in cases {
        match parse(&json) {
            Ok(_) => panic!("accepted: {json}"),
            Err(e) => {
                assert_eq!(e.file, PathBuf::from("/etc/tokengate/config.json"));
                assert!(
                    e.field.starts_with(field),
                    "{json}: field {:?}, want {field}",
                    e.field
                );
                assert!(
                    e.reason.contains(reason),
                    "{json}: reason {:?}, want {reason}",
                    e.reason
                );
                assert!(
                    e.to_string().starts_with("/etc/tokengate/config.json: "),
                    "{e}"
                );
            }
        }
    }
}

#[test]
fn parses_durations() {
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
    for bad in ["", "30", "s", "1 s", "-1s", "1.5s", "1w"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn routes_have_names_and_may_name_their_issuers() {
    let c = parse(
        r#"{"issuers":[{"name":"am","key_sources":[{"jwks_file":"jwks.json"}]}],
            "routes":[{"path_prefix":"/a"},{"path_prefix":"/b","name":"billing.v2","issuers":["am"]}]}"#,
    )
    .unwrap();
    assert_eq!(&*c.routes[0].name, "route-0");
    assert!(c.routes[0].issuers.is_empty());
    assert_eq!(&*c.routes[1].name, "billing.v2");
    assert_eq!(c.routes[1].issuers, vec![Arc::<str>::from("am")]);

    for (routes, field, reason) in [
        (
            r#"[{"issuers":["nobody"]}]"#,
            "routes[0].issuers[0]",
            "no issuer or session is named \"nobody\"",
        ),
        (
            r#"[{"name":"a b"}]"#,
            "routes[0].name",
            "a route name is letters",
        ),
        (
            r#"[{"name":""}]"#,
            "routes[0].name",
            "a route name is letters",
        ),
        (
            r#"[{"name":"x"},{"name":"x"}]"#,
            "routes[1].name",
            "used by another route",
        ),
        (
            r#"[{"name":"route-1"},{}]"#,
            "routes[1].name",
            "used by another route",
        ),
    ] {
        let json = format!(
            r#"{{"issuers":[{{"name":"am","key_sources":[{{"jwks_file":"jwks.json"}}]}}],"routes":{routes}}}"#
        );
        let e = parse(&json).unwrap_err();
        assert_eq!(e.field, field, "{routes}: {e}");
        assert!(e.reason.contains(reason), "{routes}: {e}");
    }
}

#[test]
fn audit_and_telemetry_are_off_by_default_and_checked_when_on() {
    let c = parse(MINIMAL).unwrap();
    assert!(c.audit.is_none() && c.telemetry.is_none());
    let with = |extra: &str| {
        parse(&format!(
            r#"{{"issuers":[{{"name":"am","key_sources":[{{"jwks_file":"jwks.json"}}]}}],{extra}}}"#
        ))
    };
    let c =
        with(r#""audit":{"enabled":true},"telemetry":{"otlp_endpoint":"http://c:4317"}"#).unwrap();
    assert_eq!(
        c.audit,
        Some(AuditConfig {
            sample: 1.0,
            subject_claim: "sub".into()
        })
    );
    let t = c.telemetry.unwrap();
    assert_eq!(
        (t.protocol, t.sample_ratio, t.service_name.as_str()),
        (OtlpProtocol::Grpc, 0.01, "tokengate")
    );
    for (extra, field) in [
        (r#""audit":{"enabled":true,"sample":1.5}"#, "audit.sample"),
        (
            r#""audit":{"enabled":true,"subject_claim":""}"#,
            "audit.subject_claim",
        ),
        (r#""audit":{"enabled":true,"who":"x"}"#, "audit"),
        (
            r#""telemetry":{"otlp_endpoint":"collector:4317"}"#,
            "telemetry.otlp_endpoint",
        ),
        (
            r#""telemetry":{"otlp_endpoint":"http://c:4317","protocol":"http/json"}"#,
            "telemetry.protocol",
        ),
        (
            r#""telemetry":{"otlp_endpoint":"http://c:4317","sample_ratio":-1}"#,
            "telemetry.sample_ratio",
        ),
    ] {
        let e = with(extra).unwrap_err();
        assert!(e.field.starts_with(field), "{extra}: {e}");
    }
}

#[test]
fn a_rule_that_does_not_compile_names_the_file_field_and_position() {
    let e = parse(
        r#"{"issuers":[{"name":"am","key_sources":[{"jwks_file":"jwks.json"}]}],
            "routes":[{"path_prefix":"/a"},
                      {"path_prefix":"/b","rules":["true","claims.groups.exists(g, g == "]}]}"#,
    )
    .unwrap_err();
    assert_eq!(e.file, PathBuf::from("/etc/tokengate/config.json"));
    assert_eq!(e.field, "routes[1].rules[1]");
    assert!(
        e.reason.starts_with("line 1, column 30: Syntax error"),
        "{e}"
    );
    for (rules, field, why) in [
        (
            r#"["claim.sub == 'x'"]"#,
            "routes[0].rules[0]",
            "unknown name",
        ),
        (
            r#"["request.headers['X-A'] == 'x'"]"#,
            "routes[0].rules[0]",
            "lower-case",
        ),
    ] {
        let e = parse(&format!(
            r#"{{"issuers":[{{"name":"am","key_sources":[{{"jwks_file":"jwks.json"}}]}}],
                "routes":[{{"path_prefix":"/a","rules":{rules}}}]}}"#
        ))
        .unwrap_err();
        assert_eq!(e.field, field);
        assert!(e.reason.contains(why), "{e}");
    }
    let e = parse(
        r#"{"issuers":[{"name":"am","key_sources":[{"jwks_file":"jwks.json"}]}],
            "routes":[{"path_prefix":"/a","allow_anonymous":true,"rules":["true"]}]}"#,
    )
    .unwrap_err();
    assert_eq!(e.field, "routes[0].allow_anonymous");
}

#[test]
fn decryption_and_sessions_are_checked_and_defaulted() {
    let ok = parse(
        r#"{"issuers":[{"name":"am","require_encryption":true,"key_sources":[{"jwks_file":"jwks.json"}]}],
            "decryption":{"key_sources":[{"pem_file":"dec.pem","kid":"d1"}]},
            "sessions":[{"name":"ig","cookie":"IG","key_sources":[{"keystore":"s.p12","password_env":"PW","aliases":["symmetric-key"]}]}]}"#,
    )
    .unwrap();
    let d = ok.decryption.as_ref().expect("decryption");
    assert_eq!(d.algorithms, DEFAULT_DECRYPTION_ALGORITHMS.to_vec());
    assert_eq!(d.methods, DEFAULT_DECRYPTION_METHODS.to_vec());
    assert_eq!(&*d.keys.name, "decryption");
    let s = &ok.sessions[0];
    assert_eq!(s.methods, DEFAULT_SESSION_METHODS.to_vec());
    assert_eq!((s.subject_claim.as_str(), s.max_age), ("sub", None));
    assert_eq!(s.leeway, DEFAULT_LEEWAY);
    assert_eq!(ok.token.session_cookies, ["IG"]);
    let holders: Vec<(String, bool)> = ok
        .key_holders()
        .into_iter()
        .map(|(f, _, d)| (f, d))
        .collect();
    assert_eq!(
        holders,
        [
            ("issuers[0]".to_string(), false),
            ("sessions[0]".to_string(), true),
            ("decryption".to_string(), true)
        ]
    );
    // Sessions alone are a config.
    parse(r#"{"issuers":[],"sessions":[{"name":"ig","cookie":"IG","key_sources":[{"jwks_file":"s.json"}]}]}"#)
        .unwrap();

    let src = r#"[{"jwks_file":"k.json"}]"#;
    for (json, field, why) in [
        (
            format!(r#""decryption":{{"key_sources":{src},"algorithms":["dir","RSA1_5"]}}"#),
            "decryption.algorithms[1]",
            "RSA1_5",
        ),
        (
            format!(r#""decryption":{{"key_sources":{src},"algorithms":["PBES2-HS256+A128KW"]}}"#),
            "decryption.algorithms[0]",
            "p2c",
        ),
        (
            format!(r#""decryption":{{"key_sources":{src},"methods":["A192GCM"]}}"#),
            "decryption.methods[0]",
            "unknown method",
        ),
        (
            r#""decryption":{"key_sources":[{"jwks_uri":"https://as.example/jwks"}]}"#.into(),
            "decryption.key_sources[0]",
            "only keystore, jwks_file and pem_file",
        ),
        (
            r#""decryption":{"key_sources":[]}"#.into(),
            "decryption.key_sources",
            "at least one",
        ),
        (
            format!(r#""sessions":[{{"name":"decryption","cookie":"IG","key_sources":{src}}}]"#),
            "sessions[0].name",
            "reserved",
        ),
        (
            format!(r#""sessions":[{{"name":"am","cookie":"IG","key_sources":{src}}}]"#),
            "sessions[0].name",
            "used by an issuer",
        ),
        (
            format!(r#""sessions":[{{"name":"ig","cookie":"I G","key_sources":{src}}}]"#),
            "sessions[0].cookie",
            "not a cookie name",
        ),
        (
            format!(
                r#""token":{{"from_cookies":["IG"]}},"sessions":[{{"name":"ig","cookie":"IG","key_sources":{src}}}]"#
            ),
            "sessions[0].cookie",
            "already a token cookie",
        ),
        (
            format!(
                r#""sessions":[{{"name":"ig","cookie":"IG","max_age":"soon","key_sources":{src}}}]"#
            ),
            "sessions[0].max_age",
            "",
        ),
        (
            format!(
                r#""sessions":[{{"name":"ig","cookie":"IG","methods":["RSA-OAEP"],"key_sources":{src}}}]"#
            ),
            "sessions[0].methods[0]",
            "unknown method",
        ),
    ] {
        let e = parse(&format!(
            r#"{{"issuers":[{{"name":"am","key_sources":[{{"jwks_file":"jwks.json"}}]}}],{json}}}"#
        ))
        .unwrap_err();
        assert_eq!(e.field, field, "{json}: {e}");
        assert!(e.reason.contains(why), "{json}: {e}");
    }
    let e = parse(
        r#"{"issuers":[{"name":"am","require_encryption":true,"key_sources":[{"jwks_file":"jwks.json"}]}]}"#,
    )
    .unwrap_err();
    assert_eq!(e.field, "issuers[0].require_encryption");
    let e =
        parse(r#"{"issuers":[{"name":"decryption","key_sources":[{"jwks_file":"jwks.json"}]}]}"#)
            .unwrap_err();
    assert_eq!(e.field, "issuers[0].name");
}
