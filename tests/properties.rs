//! Property tests: arbitrary bytes and arbitrary "almost tokens" never panic the
//! compact-JWS parser or the JWKS parser, and are always denied / refused.

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
}
