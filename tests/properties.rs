//! Property tests: arbitrary bytes and arbitrary "almost tokens" never panic the
//! compact-JWS parser, the JWKS parser, the DPoP proof check or the
//! `X-Forwarded-Client-Cert` reader, and are always denied / refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use tokengate::alg::{Alg, AlgSet};
use tokengate::keys::jwks;
use tokengate::token::jws;

fn all() -> AlgSet {
    Alg::ALL.into_iter().collect()
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
}
