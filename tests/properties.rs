//! Property tests: arbitrary bytes and arbitrary "almost tokens" never panic the
//! compact-JWS parser, the JWKS parser, the DPoP proof check or the
//! `X-Forwarded-Client-Cert` reader, and are always denied / refused; arbitrary JWEs, as
//! bearer tokens and as session cookies, are denied by the whole authorizer.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use tokengate::alg::{Alg, AlgSet};
use tokengate::keys::jwks;
use tokengate::token::jws;

fn all() -> AlgSet {
    Alg::ALL.into_iter().collect()
}

/// One app for every case: decryption keys (oct, EC) and a session, their key files in
/// a directory kept for the process.
fn jwe_app() -> &'static (tokio::runtime::Runtime, std::sync::Arc<tokengate::app::App>) {
    use std::sync::{Arc, OnceLock};
    static APP: OnceLock<(tokio::runtime::Runtime, Arc<tokengate::app::App>)> = OnceLock::new();
    APP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tokengate-props-jwe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        // RFC 7520 §5.5's P-256 key (and its RSA key of §5.2) decrypt too.
        let rfc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rfc7520-jwe.json"),
            )
            .expect("rfc7520-jwe.json"),
        )
        .expect("JSON");
        let example = |section: &str, kid: &str| {
            let mut k = rfc["examples"]
                .as_array()
                .and_then(|l| l.iter().find(|e| e["section"] == section))
                .map(|e| e["key"].clone())
                .expect("example");
            k["kid"] = serde_json::json!(kid);
            k
        };
        let keys = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "k32", "k": URL_SAFE_NO_PAD.encode([1u8; 32])},
            {"kty": "oct", "kid": "k16", "k": URL_SAFE_NO_PAD.encode([2u8; 16])},
            example("5.5", "ec"),
            example("5.2", "rsa"),
        ]});
        let session = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "s64", "k": URL_SAFE_NO_PAD.encode([3u8; 64])}
        ]});
        std::fs::write(dir.join("dec.json"), keys.to_string()).expect("write");
        std::fs::write(dir.join("ses.json"), session.to_string()).expect("write");
        let cfg = serde_json::json!({
            "listeners": {"authz_http": null, "authz_grpc": null, "admin": null},
            "issuers": [{"name": "main", "key_sources": [{"jwks_file": dir.join("dec.json").to_string_lossy()}]}],
            "decryption": {"key_sources": [{"jwks_file": dir.join("dec.json").to_string_lossy()}],
                           "algorithms": ["dir", "A128KW", "A256KW", "ECDH-ES", "ECDH-ES+A128KW", "RSA-OAEP"],
                           "methods": ["A128CBC-HS256", "A256CBC-HS512", "A128GCM", "A256GCM"]},
            "sessions": [{"name": "ig", "cookie": "IG",
                          "key_sources": [{"jwks_file": dir.join("ses.json").to_string_lossy()}]}]
        });
        let config = tokengate::config::Config::parse(std::path::Path::new("/virtual/c.json"), cfg.to_string().as_bytes())
            .expect("config");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let app = {
            let _guard = rt.enter();
            tokengate::app::App::new(
                config,
                rt.handle().clone(),
                Arc::new(tokengate::clock::FixedClock::new(1_800_000_000)),
                Arc::new(tokengate::metrics::Metrics::new()),
                Arc::new(|_: &str| None),
            )
        };
        (rt, app)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_are_never_accepted_as_tokens(s in "\\PC{0,300}") {
        // Parsing may succeed only for a well-formed JWS; no signature is ever checked
        // here, so the property is "no panic, and a parse never invents an alg".
        if let Ok(j) = jws::parse(&s, all()) {
            prop_assert!(s.starts_with(j.signing_input));
        }
    }

    #[test]
    fn arbitrary_header_and_payload_bytes_do_not_panic(
        h in proptest::collection::vec(any::<u8>(), 0..200),
        p in proptest::collection::vec(any::<u8>(), 0..200),
        sig in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let t = format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(&h), URL_SAFE_NO_PAD.encode(&p), URL_SAFE_NO_PAD.encode(&sig));
        let _ = jws::parse(&t, all());
    }

    #[test]
    fn json_headers_with_random_members_do_not_panic(
        alg in prop_oneof![Just("RS256".to_string()), Just("none".to_string()), "[A-Za-z0-9]{0,8}"],
        extra in proptest::collection::vec(("[a-z]{1,5}", any::<i64>()), 0..5),
    ) {
        let mut header = serde_json::json!({"alg": alg});
        for (k, v) in extra {
            header[k] = serde_json::json!(v);
        }
        let t = format!("{}.{}.c2ln", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode("{}"));
        let r = jws::parse(&t, all());
        if alg == "none" {
            prop_assert!(r.is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_are_never_a_jwk_set_with_keys(b in proptest::collection::vec(any::<u8>(), 0..500)) {
        if let Ok(set) = jwks::parse_set(&b, true) {
            prop_assert!(set.keys.is_empty());
        }
    }

    #[test]
    fn random_jwks_do_not_panic(
        kty in prop_oneof![Just("RSA"), Just("EC"), Just("OKP"), Just("oct"), Just("x")],
        crv in prop_oneof![Just("P-256"), Just("P-384"), Just("Ed25519"), Just("P-521")],
        n in proptest::collection::vec(any::<u8>(), 0..300),
        x in proptest::collection::vec(any::<u8>(), 0..70),
    ) {
        let doc = serde_json::json!({"keys": [{
            "kty": kty, "crv": crv, "kid": "k",
            "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQAB",
            "x": URL_SAFE_NO_PAD.encode(&x), "y": URL_SAFE_NO_PAD.encode(&x),
            "k": URL_SAFE_NO_PAD.encode(&x),
        }]});
        let _ = jwks::parse_set(doc.to_string().as_bytes(), true);
    }

    #[test]
    fn arbitrary_dpop_proofs_are_refused_without_panic(
        header in proptest::collection::vec(any::<u8>(), 0..300),
        claims in proptest::collection::vec(any::<u8>(), 0..300),
        sig in proptest::collection::vec(any::<u8>(), 0..80),
        raw in "\\PC{0,200}",
        jwk_x in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let cfg = tokengate::config::DpopConfig {
            required: false,
            algorithms: [Alg::ES256, Alg::EdDSA, Alg::RS256].into_iter().collect(),
            max_age: std::time::Duration::from_secs(60),
            nonce: true,
            algs: "ES256 EdDSA RS256".into(),
        };
        let nonces = tokengate::binding::nonce::NonceKey::new(&[1u8; 32]);
        let origin = url::Url::parse("https://api.example/").ok();
        let want = tokengate::binding::dpop::Expected {
            method: "GET",
            path: "/orders",
            origin: origin.as_ref(),
            token_hash: &[0u8; 32],
        };
        // Random bytes as segments; a JSON header with a random-looking `jwk`; any text.
        let typed = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256",
            "jwk": {"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&jwk_x), "y": URL_SAFE_NO_PAD.encode(&jwk_x)}});
        for proof in [
            format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(&header), URL_SAFE_NO_PAD.encode(&claims), URL_SAFE_NO_PAD.encode(&sig)),
            format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(typed.to_string()), URL_SAFE_NO_PAD.encode(&claims), URL_SAFE_NO_PAD.encode(&sig)),
            raw.clone(),
        ] {
            let headers = vec![("dpop".to_string(), proof)];
            let r = tokengate::binding::dpop::check(headers.as_slice(), 8192, &cfg, 30, &nonces, &want, 1_800_000_000);
            prop_assert!(r.is_err());
        }
    }

    #[test]
    fn arbitrary_client_cert_headers_do_not_panic(value in "\\PC{0,300}", quoted in "[a-zA-Z=;,\\\\\" %0-9]{0,120}") {
        for v in [value.clone(), quoted.clone(), format!("Hash={quoted}"), format!("Cert=\"{quoted}\"")] {
            let headers = vec![("x-forwarded-client-cert".to_string(), v)];
            let peer = tokengate::request::Peer::default();
            let _ = tokengate::binding::mtls::certificate_digest(&peer, headers.as_slice(), true);
        }
        let peer = tokengate::request::Peer { certificate: Some(&value), ..Default::default() };
        let none: Vec<(String, String)> = Vec::new();
        prop_assert!(tokengate::binding::mtls::certificate_digest(&peer, none.as_slice(), false).is_none() || value.contains("CERTIFICATE"));
    }

    #[test]
    fn arbitrary_jwes_are_denied_as_tokens_and_as_sessions(
        alg in prop_oneof![Just("dir".to_string()), Just("A128KW".to_string()), Just("A256KW".to_string()), Just("ECDH-ES".to_string()),
                           Just("ECDH-ES+A128KW".to_string()), Just("RSA-OAEP".to_string()), Just("RSA1_5".to_string()), Just("PBES2-HS256+A128KW".to_string()), "[A-Z0-9-]{0,8}"],
        enc in prop_oneof![Just("A128CBC-HS256".to_string()), Just("A256CBC-HS512".to_string()), Just("A128GCM".to_string()), Just("A256GCM".to_string()), "[A-Z0-9-]{0,8}"],
        kid in prop_oneof![Just(None), Just(Some("k32")), Just(Some("k16")), Just(Some("ec")), Just(Some("rsa")), Just(Some("zz"))],
        epk_x in proptest::collection::vec(any::<u8>(), 0..40),
        segments in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 4),
    ) {
        use tokengate::decision::Decision;
        let mut header = serde_json::json!({"alg": &alg, "enc": &enc, "cty": "JWT"});
        if let Some(k) = kid {
            header["kid"] = serde_json::json!(k);
        }
        if alg.starts_with("ECDH") {
            let c = URL_SAFE_NO_PAD.encode(&epk_x);
            header["epk"] = serde_json::json!({"kty": "EC", "crv": "P-256", "x": c, "y": c});
        }
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        for s in &segments {
            token.push('.');
            token.push_str(&URL_SAFE_NO_PAD.encode(s));
        }
        let (rt, app) = jwe_app();
        for (name, value) in [("authorization", format!("Bearer {token}")), ("cookie", format!("IG={token}"))] {
            let headers = vec![(name.to_string(), value)];
            let view = tokengate::authz::RequestView {
                method: "GET",
                target: "/",
                headers: headers.as_slice(),
                peer: Default::default(),
            };
            let v = rt.block_on(app.authorizer().check(tokengate::metrics::Listener::Cli, &view));
            let Decision::Deny(d) = &v.decision else {
                return Err(TestCaseError::fail(format!("allowed: {token}")));
            };
            prop_assert!(
                ["malformed", "bad_alg", "bad_decryption", "bad_session"].contains(&d.reason.label()),
                "{name}: {} for {token}", d.reason.label()
            );
        }
    }

    #[test]
    fn a_kept_jws_header_reads_as_the_header_itself(
        alg in prop_oneof![Just("RS256"), Just("ES256"), Just("HS256"), Just("none"), Just("RS257")],
        kid in prop_oneof![Just(serde_json::json!(null)), Just(serde_json::json!("k1")), Just(serde_json::json!(7)), Just(serde_json::json!("a\"b"))],
        members in proptest::collection::vec(prop_oneof![
            Just(("typ", serde_json::json!("at+jwt"))), Just(("typ", serde_json::json!(1))),
            Just(("crit", serde_json::json!(["exp"]))), Just(("crit", serde_json::json!(null))),
            Just(("b64", serde_json::json!(false))), Just(("b64", serde_json::json!(true))),
            Just(("jwk", serde_json::json!({"kty": "EC"}))), Just(("jwk", serde_json::json!("x"))),
            Just(("x5u", serde_json::json!("https://evil.example"))),
        ], 0..4),
        repeat in any::<bool>(),
        first in proptest::sample::subsequence(Alg::ALL.to_vec(), 0..=Alg::ALL.len()),
        second in proptest::sample::subsequence(Alg::ALL.to_vec(), 0..=Alg::ALL.len()),
        payload in prop_oneof![Just("{\"sub\":\"a\"}".to_string()), Just("[1]".to_string()), "\\PC{0,20}"],
        sig in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        // A header kept after one token read cleanly under one allowlist answers, for any
        // other token with that header under any allowlist, what reading it would.
        let mut header = format!("{{\"alg\":{}", serde_json::json!(alg));
        if !kid.is_null() {
            header.push_str(&format!(",\"kid\":{kid}"));
        }
        for (k, v) in &members {
            header.push_str(&format!(",\"{k}\":{v}"));
        }
        if repeat {
            header.push_str(&format!(",\"alg\":{}", serde_json::json!(alg)));
        }
        header.push('}');
        let h = URL_SAFE_NO_PAD.encode(&header);
        let memo = tokengate::token::memo::HeaderMemo::new();
        let first_token = format!("{h}.{}.c2ln", URL_SAFE_NO_PAD.encode("{}"));
        if let Ok(j) = jws::parse(&first_token, first.into_iter().collect()) {
            j.memoize(&memo);
        }
        let token = format!("{h}.{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(&sig));
        let allowed: AlgSet = second.into_iter().collect();
        let read = |r: Result<jws::Jws<'_>, tokengate::decision::DenyReason>| {
            r.map(|j| (j.alg, j.kid.clone(), j.typ.clone(), j.jwk.clone(), j.signing_input.to_string(), j.signature.clone(), j.claims().map(|c| format!("{c:?}"))))
        };
        prop_assert_eq!(read(jws::parse_memo(&token, allowed, &memo)), read(jws::parse(&token, allowed)), "{}", header);
    }

    #[test]
    fn a_kept_jwe_header_reads_as_the_header_itself(
        alg in prop_oneof![Just("dir"), Just("A128KW"), Just("RSA-OAEP-256"), Just("ECDH-ES"), Just("RSA1_5"), Just("x")],
        enc in prop_oneof![Just("A128GCM"), Just("A256GCM"), Just("A256CBC-HS512"), Just("A1GCM")],
        members in proptest::collection::vec(prop_oneof![
            Just(("kid", serde_json::json!("k32"))), Just(("kid", serde_json::json!(3))),
            Just(("cty", serde_json::json!("JWT"))), Just(("cty", serde_json::json!("json"))),
            Just(("zip", serde_json::json!("DEF"))), Just(("crit", serde_json::json!(["b64"]))),
            Just(("epk", serde_json::json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}))),
            Just(("apu", serde_json::json!("QWxpY2U"))), Just(("apv", serde_json::json!("!!"))),
        ], 0..4),
        repeat in any::<bool>(),
        first_algs in proptest::sample::subsequence(tokengate::jwe::KeyAlg::ALL.to_vec(), 0..=8),
        second_algs in proptest::sample::subsequence(tokengate::jwe::KeyAlg::ALL.to_vec(), 0..=8),
        second_encs in proptest::sample::subsequence(tokengate::jwe::Enc::ALL.to_vec(), 0..=4),
        segments in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 4),
    ) {
        use tokengate::jwe::{self, Enc};
        let mut header = format!("{{\"alg\":\"{alg}\",\"enc\":\"{enc}\"");
        for (k, v) in &members {
            header.push_str(&format!(",\"{k}\":{v}"));
        }
        if repeat {
            header.push_str(&format!(",\"enc\":\"{enc}\""));
        }
        header.push('}');
        let h = URL_SAFE_NO_PAD.encode(&header);
        let memo = tokengate::token::memo::HeaderMemo::new();
        // The first token's encrypted key fits `dir` (none) or any other (some).
        for k in ["", "a2V5"] {
            if let Ok(j) = jwe::parse(&format!("{h}.{k}.aXY.Yw.dA"), &first_algs, &Enc::ALL) {
                j.memoize(&memo);
            }
        }
        let mut token = h.clone();
        for s in &segments {
            token.push('.');
            token.push_str(&URL_SAFE_NO_PAD.encode(s));
        }
        // Every field (`keep` aside: it says where the header came from).
        let read = |r: Result<jwe::Jwe<'_>, tokengate::decision::DenyReason>| {
            r.map(|j| format!("{j:?}").replace("keep: true", "keep: false"))
        };
        prop_assert_eq!(
            read(jwe::parse_memo(&token, &second_algs, &second_encs, &memo)),
            read(jwe::parse(&token, &second_algs, &second_encs)),
            "{}", header
        );
    }
}
