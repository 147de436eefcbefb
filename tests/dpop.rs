//! DPoP (RFC 9449, SPEC §11) against the real binary: proofs made by jwcrypto
//! (`tests/support/dpop_mint.py`) for ES256 and EdDSA, the good case and one refusal per
//! check, nonces shared by a fleet, the proxy listener, and a replay-cache flood.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use aws_lc_rs::{hmac, rand, signature};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::support::dpop::{self, Minter, ProofKey};
use crate::support::http::Response;
use crate::support::{Metrics, TempDir, Tokengate, fixture_issuer, mint, upstream};

/// A token of the fixture issuer bound to DPoP key thumbprint `jkt`.
fn bound_token(jkt: &str) -> String {
    let mut c = mint::claims();
    c["cnf"] = json!({ "jkt": jkt });
    mint::sign(Algorithm::RS256, "rsa-1", Some("rsa-1"), &c)
}

/// An unbound token of the fixture issuer.
fn bearer_token() -> String {
    mint::sign(Algorithm::RS256, "rsa-1", Some("rsa-1"), &mint::claims())
}

/// The fixture issuer with these extra issuer fields.
fn issuer_with(extra: Value) -> Value {
    let mut issuer = fixture_issuer();
    if let (Some(i), Value::Object(extra)) = (issuer.as_object_mut(), extra) {
        i.extend(extra);
    }
    issuer
}

/// The nonce secret of the fleet tests.
const FLEET_SECRET: &str = "a-fleet-secret-of-at-least-32-bytes-0123456789";

/// tokengate whose issuer (the fixture one with `issuer` fields merged in) wants DPoP
/// nonces made with `secret`; `extra` is merged into the config's top level.
fn nonce_gate(dir: &TempDir, issuer: Value, extra: Value, secret: &str) -> Tokengate {
    let mut issuer = issuer;
    issuer["dpop_nonce"] = json!(true);
    let mut config = json!({
        "issuers": [issuer_with(issuer)],
        "dpop_nonce_secret_env": "TG_DPOP_NONCE_SECRET"
    });
    if let (Some(c), Value::Object(extra)) = (config.as_object_mut(), extra) {
        c.extend(extra);
    }
    Tokengate::start_env(dir, config, &[("TG_DPOP_NONCE_SECRET", secret)])
}

/// A check on authz_http with the DPoP scheme and these proofs.
fn dpop_check(tg: &Tokengate, method: &str, path: &str, token: &str, proofs: &[&str]) -> Response {
    let auth = format!("DPoP {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend(proofs.iter().map(|p| ("dpop", *p)));
    tg.check(method, path, &headers)
}

/// Asserts a 401 with `reason` and its `DPoP` challenge.
fn assert_refused(r: &Response, reason: &str, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.body_text());
    assert_eq!(r.error(), reason, "{what}");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("DPoP realm=\"tokengate\""),
        "{what}: {challenge}"
    );
    assert!(
        challenge.contains("algs=\"ES256 EdDSA RS256 PS256\""),
        "{what}: {challenge}"
    );
    let code = if reason == "binding_mismatch" {
        "invalid_token"
    } else {
        reason
    };
    assert!(
        challenge.contains(&format!("error=\"{code}\"")),
        "{what}: {challenge}"
    );
}

/// Every check of SPEC §11, one refusal each, for proofs jwcrypto signs with ES256 and
/// with EdDSA; a bound token stays cached while each request's proof is checked.
#[test]
fn jwcrypto_proofs_pass_every_check_and_fail_each_one_alone() {
    let dir = TempDir::new("dpop-checks");
    let tg = Tokengate::start(&dir, json!({ "issuers": [fixture_issuer()] }));
    let mut minter = Minter::start();
    let htu = |path: &str| format!("http://{}{path}", tg.authz);
    for alg in ["ES256", "EdDSA"] {
        let key = minter.key(alg);
        let other = minter.key(alg);
        let token = bound_token(&key.jkt);
        let good = || dpop::claims("GET", &htu("/orders/1"), &token);
        let with = |m: &mut Minter, edit: &dyn Fn(&mut Value)| {
            let mut c = good();
            edit(&mut c);
            m.proof(&key, &c, json!({}))
        };

        // The good case, twice (the token is cached the second time; each proof is new).
        for _ in 0..2 {
            let proof = with(&mut minter, &|_| {});
            let r = dpop_check(&tg, "GET", "/orders/1", &token, &[&proof]);
            assert_eq!(r.status, 200, "{alg}: {}", r.body_text());
        }
        // The htu's query and fragment are not compared (RFC 9449 §4.3 step 9).
        let proof = with(&mut minter, &|c| {
            c["htu"] = json!(htu("/orders/1?page=2#top"));
        });
        let r = dpop_check(&tg, "GET", "/orders/1?page=3", &token, &[&proof]);
        assert_eq!(r.status, 200, "{alg} query: {}", r.body_text());

        let c = good();
        let cases: Vec<(&str, String)> = vec![
            (
                "typ",
                minter.proof(&key, &c, json!({"header": {"typ": "jwt"}})),
            ),
            (
                "typ missing",
                minter.proof(&key, &good(), json!({"header": {"typ": null}})),
            ),
            (
                "alg none",
                minter.raw(json!({"op": "none",
                    "header": {"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk},
                    "claims": good()})),
            ),
            (
                "alg HS256",
                minter.raw(json!({"op": "hs256", "secret": "s3cret",
                    "header": {"typ": "dpop+jwt", "alg": "HS256", "jwk": key.jwk},
                    "claims": good()})),
            ),
            (
                "private jwk",
                minter.proof(&key, &good(), json!({"jwk": "private"})),
            ),
            (
                "no jwk",
                minter.proof(&key, &good(), json!({"jwk": "none"})),
            ),
            (
                "signature",
                minter.proof(&key, &good(), json!({"tamper_signature": true})),
            ),
            (
                "signed by another key",
                minter.proof(&key, &good(), json!({"sign_with": other.id})),
            ),
            ("htm", with(&mut minter, &|c| c["htm"] = json!("POST"))),
            (
                "htu authority",
                with(&mut minter, &|c| {
                    c["htu"] = json!("http://api.example/orders/1");
                }),
            ),
            (
                "htu path",
                with(&mut minter, &|c| c["htu"] = json!(htu("/orders/2"))),
            ),
            (
                "htu scheme",
                with(&mut minter, &|c| {
                    c["htu"] = json!(htu("/orders/1").replace("http://", "https://"));
                }),
            ),
            (
                "iat past",
                with(&mut minter, &|c| c["iat"] = json!(mint::now() - 120)),
            ),
            (
                "iat future",
                with(&mut minter, &|c| c["iat"] = json!(mint::now() + 120)),
            ),
            (
                "ath",
                with(&mut minter, &|c| c["ath"] = json!(dpop::ath("another"))),
            ),
            (
                "ath missing",
                with(&mut minter, &|c| {
                    c.as_object_mut().map(|m| m.remove("ath"));
                }),
            ),
            (
                "jti missing",
                with(&mut minter, &|c| {
                    c.as_object_mut().map(|m| m.remove("jti"));
                }),
            ),
        ];
        for (what, proof) in &cases {
            let r = dpop_check(&tg, "GET", "/orders/1", &token, &[proof]);
            assert_refused(&r, "invalid_dpop_proof", &format!("{alg} {what}"));
        }

        // iat within the leeway ahead is fine.
        let proof = with(&mut minter, &|c| c["iat"] = json!(mint::now() + 10));
        let r = dpop_check(&tg, "GET", "/orders/1", &token, &[&proof]);
        assert_eq!(r.status, 200, "{alg} iat within leeway: {}", r.body_text());

        // A replayed jti.
        let proof = with(&mut minter, &|_| {});
        let first = dpop_check(&tg, "GET", "/orders/1", &token, &[&proof]);
        assert_eq!(first.status, 200, "{alg}: {}", first.body_text());
        let replay = dpop_check(&tg, "GET", "/orders/1", &token, &[&proof]);
        assert_refused(&replay, "invalid_dpop_proof", &format!("{alg} replay"));

        // Two DPoP headers, or none.
        let (a, b) = (with(&mut minter, &|_| {}), with(&mut minter, &|_| {}));
        let r = dpop_check(&tg, "GET", "/orders/1", &token, &[&a, &b]);
        assert_refused(&r, "invalid_dpop_proof", &format!("{alg} two proofs"));
        let r = dpop_check(&tg, "GET", "/orders/1", &token, &[]);
        assert_refused(&r, "invalid_dpop_proof", &format!("{alg} no proof"));

        // A good proof by another key: the token is not bound to it.
        let proof = minter.proof(&other, &good(), json!({}));
        let r = dpop_check(&tg, "GET", "/orders/1", &token, &[&proof]);
        assert_refused(&r, "binding_mismatch", &format!("{alg} thumbprint"));

        // The bound token as a bearer token, with or without a proof beside it.
        let r = tg.check_token("/orders/1", &token);
        assert_refused(&r, "binding_mismatch", &format!("{alg} as Bearer"));
        let proof = with(&mut minter, &|_| {});
        let bearer = format!("Bearer {token}");
        let r = tg.check(
            "GET",
            "/orders/1",
            &[("authorization", &bearer), ("dpop", &proof)],
        );
        assert_refused(
            &r,
            "binding_mismatch",
            &format!("{alg} as Bearer with a proof"),
        );

        // An unbound token under the DPoP scheme proves nothing it asks for.
        let unbound = bearer_token();
        let c = dpop::claims("GET", &htu("/orders/1"), &unbound);
        let proof = minter.proof(&key, &c, json!({}));
        let r = dpop_check(&tg, "GET", "/orders/1", &unbound, &[&proof]);
        assert_refused(&r, "binding_mismatch", &format!("{alg} unbound under DPoP"));
    }
    // An expired bound token under the DPoP scheme: its own reason, the DPoP challenge.
    let key = minter.key("ES256");
    let mut c = mint::claims();
    c["cnf"] = json!({"jkt": key.jkt});
    c["exp"] = json!(mint::now() - 3600);
    c["iat"] = json!(mint::now() - 7200);
    let expired = mint::sign(Algorithm::RS256, "rsa-1", Some("rsa-1"), &c);
    let proof = minter.proof(&key, &dpop::claims("GET", &htu("/x"), &expired), json!({}));
    let r = dpop_check(&tg, "GET", "/x", &expired, &[&proof]);
    assert_eq!(r.error(), "expired");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.starts_with("DPoP realm=\"tokengate\", error=\"invalid_token\"")),
        "{:?}",
        r.header("www-authenticate")
    );
    // Unbound bearer tokens still pass where DPoP is only allowed.
    assert_eq!(tg.check_token("/orders/1", &bearer_token()).status, 200);

    let m = tg.metrics();
    let proofs = |result: &str| {
        m.sum(
            "tokengate_proofs_total",
            &[("issuer", "main"), ("kind", "dpop"), ("result", result)],
        )
    };
    assert!(proofs("ok") >= 10.0, "{}", proofs("ok"));
    assert!(proofs("invalid_dpop_proof") >= 40.0);
    assert!(proofs("binding_mismatch") >= 8.0);
    assert!(
        m.sum(
            "tokengate_decisions_total",
            &[("reason", "invalid_dpop_proof")]
        ) >= 40.0
    );
}

/// `dpop: "required"` refuses unbound tokens; `X-Forwarded-Proto` gives the scheme of
/// `htu` only when trusted.
#[test]
fn required_dpop_and_the_trusted_scheme() {
    let dir = TempDir::new("dpop-required");
    let tg = Tokengate::start(
        &dir,
        json!({
            "issuers": [issuer_with(json!({"dpop": "required", "dpop_algorithms": ["EdDSA"]}))],
            "trusted_proxy_headers": {"x_forwarded_proto": true}
        }),
    );
    let r = tg.check_token("/orders/1", &bearer_token());
    assert_eq!(r.status, 401);
    assert_eq!(r.error(), "binding_mismatch");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.contains("algs=\"EdDSA\"")),
        "{:?}",
        r.header("www-authenticate")
    );

    let mut minter = Minter::start();
    let key = minter.key("EdDSA");
    let token = bound_token(&key.jkt);
    let https = format!("https://{}/orders/1", tg.authz);
    let send = |m: &mut Minter, key: &ProofKey, htu: &str, proto: Option<&str>| {
        let proof = m.proof(key, &dpop::claims("GET", htu, &token), json!({}));
        let auth = format!("DPoP {token}");
        let mut headers = vec![("authorization", auth.as_str()), ("dpop", proof.as_str())];
        if let Some(p) = proto {
            headers.push(("x-forwarded-proto", p));
        }
        tg.check("GET", "/orders/1", &headers)
    };
    assert_eq!(send(&mut minter, &key, &https, Some("https")).status, 200);
    let r = send(&mut minter, &key, &https, None);
    assert_eq!(
        r.error(),
        "invalid_dpop_proof",
        "no header: the scheme is http"
    );
    let r = send(&mut minter, &key, &https, Some("ftp"));
    assert_eq!(r.error(), "invalid_dpop_proof");
    // An ES256 proof where only EdDSA is allowed.
    let es = minter.key("ES256");
    let es_token = bound_token(&es.jkt);
    let proof = minter.proof(&es, &dpop::claims("GET", &https, &es_token), json!({}));
    let auth = format!("DPoP {es_token}");
    let r = tg.check(
        "GET",
        "/orders/1",
        &[
            ("authorization", &auth),
            ("dpop", &proof),
            ("x-forwarded-proto", "https"),
        ],
    );
    assert_eq!(r.error(), "invalid_dpop_proof");

    // The same header is not believed by an instance that does not trust it.
    let dir2 = TempDir::new("dpop-untrusted");
    let plain = Tokengate::start(&dir2, json!({ "issuers": [fixture_issuer()] }));
    let https = format!("https://{}/orders/1", plain.authz);
    let proof = minter.proof(&key, &dpop::claims("GET", &https, &token), json!({}));
    let auth = format!("DPoP {token}");
    let r = plain.check(
        "GET",
        "/orders/1",
        &[
            ("authorization", &auth),
            ("dpop", &proof),
            ("x-forwarded-proto", "https"),
        ],
    );
    assert_eq!(
        r.error(),
        "invalid_dpop_proof",
        "an untrusted scheme header"
    );
}

/// A nonce in the form tokengate issues, made here with the shared secret (so that
/// its issue time can be chosen).
fn nonce_at(secret: &[u8], at: i64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let ts = at.to_be_bytes();
    let mut msg = b"tokengate-dpop-nonce-v1".to_vec();
    msg.extend_from_slice(&ts);
    let tag = hmac::sign(&key, &msg);
    let mut raw = ts.to_vec();
    raw.extend_from_slice(&tag.as_ref()[..16]);
    URL_SAFE_NO_PAD.encode(raw)
}

/// `dpop_nonce`: a proof without a nonce gets `use_dpop_nonce` and a fresh `DPoP-Nonce`,
/// which another instance sharing the secret accepts; an old or foreign nonce is
/// refused the same way.
#[test]
fn nonces_are_shared_by_a_fleet_and_expire() {
    let secret = FLEET_SECRET;
    let thirty = json!({"dpop_max_age": "30s"});
    let (d1, d2) = (TempDir::new("dpop-nonce-a"), TempDir::new("dpop-nonce-b"));
    let a = nonce_gate(&d1, thirty.clone(), json!({}), secret);
    let b = nonce_gate(&d2, thirty, json!({}), secret);
    let d3 = TempDir::new("dpop-nonce-c");
    let other = nonce_gate(
        &d3,
        json!({}),
        json!({}),
        "another-secret-of-at-least-32-bytes-abcdefgh",
    );

    let mut minter = Minter::start();
    let key = minter.key("ES256");
    let token = bound_token(&key.jkt);
    let ask = |m: &mut Minter, tg: &Tokengate, nonce: Option<&str>| {
        let mut c = dpop::claims("GET", &format!("http://{}/orders/1", tg.authz), &token);
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        let proof = m.proof(&key, &c, json!({}));
        dpop_check(tg, "GET", "/orders/1", &token, &[&proof])
    };
    let first = ask(&mut minter, &a, None);
    assert_refused(&first, "use_dpop_nonce", "no nonce");
    let nonce = first
        .header("dpop-nonce")
        .expect("a use_dpop_nonce answer carries DPoP-Nonce")
        .to_string();
    assert_eq!(ask(&mut minter, &a, Some(&nonce)).status, 200);
    assert_eq!(
        ask(&mut minter, &b, Some(&nonce)).status,
        200,
        "another instance with the same secret accepts it"
    );
    let foreign = ask(&mut minter, &other, Some(&nonce));
    assert_refused(&foreign, "use_dpop_nonce", "a nonce of another secret");
    assert!(foreign.header("dpop-nonce").is_some());
    // The same format and secret, issued 31 s ago with dpop_max_age 30s.
    let old = nonce_at(secret.as_bytes(), mint::now() - 31);
    assert_refused(
        &ask(&mut minter, &b, Some(&old)),
        "use_dpop_nonce",
        "old nonce",
    );
    let recent = nonce_at(secret.as_bytes(), mint::now() - 5);
    assert_eq!(ask(&mut minter, &b, Some(&recent)).status, 200);
    assert_refused(
        &ask(&mut minter, &b, Some("not-a-nonce")),
        "use_dpop_nonce",
        "garbage nonce",
    );
}

/// A short secret, or both secret fields, is a config error naming the field.
#[test]
fn a_bad_nonce_secret_is_a_config_error_naming_the_field() {
    let dir = TempDir::new("dpop-secret");
    let short = dir.write("short", "too short\n");
    for (extra, field) in [
        (
            json!({"dpop_nonce_secret_file": short.to_string_lossy()}),
            "dpop_nonce_secret_file",
        ),
        (
            json!({"dpop_nonce_secret_env": "TG_NOT_SET_ANYWHERE"}),
            "dpop_nonce_secret_env",
        ),
        (
            json!({"issuers": [issuer_with(json!({"dpop_algorithms": ["HS256"]}))]}),
            "issuers[0].dpop_algorithms[0]",
        ),
        (
            json!({"issuers": [issuer_with(json!({"dpop_max_age": "2h"}))]}),
            "issuers[0].dpop_max_age",
        ),
    ] {
        let mut config = json!({ "issuers": [fixture_issuer()] });
        if let (Some(c), Value::Object(extra)) = (config.as_object_mut(), extra) {
            c.extend(extra);
        }
        let path = dir.write("config.json", config.to_string());
        let (code, _out, err) =
            crate::support::run(&["check-config", "--config", &path.to_string_lossy()], None);
        assert_ne!(code, 0, "{field}");
        assert!(
            err.contains(&format!("config.json: {field}:")),
            "{field}: {err}"
        );
    }
}

/// The proxy listener checks proofs against the request it forwards, and the app gets
/// the request only when the proof holds.
#[test]
fn the_proxy_listener_checks_proofs_too() {
    let app = upstream::Upstream::start(upstream::Mode::Echo);
    let dir = TempDir::new("dpop-proxy");
    let tg = Tokengate::start(
        &dir,
        json!({
            "listeners": {"proxy": "127.0.0.1:0"},
            "upstream": {"url": app.url()},
            "issuers": [fixture_issuer()]
        }),
    );
    let proxy = tg.addr("proxy");
    let mut minter = Minter::start();
    let key = minter.key("EdDSA");
    let token = bound_token(&key.jkt);
    let auth = format!("DPoP {token}");
    let send = |proof: &str| {
        crate::support::http::request(
            proxy,
            "GET",
            "/orders/1",
            &[("authorization", &auth), ("dpop", proof)],
            b"",
        )
        .expect("the proxy answers")
    };
    let good = minter.proof(
        &key,
        &dpop::claims("GET", &format!("http://{proxy}/orders/1"), &token),
        json!({}),
    );
    assert_eq!(send(&good).status, 200);
    assert_refused(
        &send(&good),
        "invalid_dpop_proof",
        "replay through the proxy",
    );
    let wrong = minter.proof(
        &key,
        &dpop::claims("GET", &format!("http://{proxy}/orders/2"), &token),
        json!({}),
    );
    assert_refused(&send(&wrong), "invalid_dpop_proof", "another path");
}

/// An ES256 key made here (the flood needs 100,000 proofs; jwcrypto signs them one by
/// one far slower): its public JWK's RFC 7638 thumbprint, and a signer.
struct FloodKey {
    pair: signature::EcdsaKeyPair,
    jwk: Value,
    jkt: String,
}

impl FloodKey {
    fn new() -> FloodKey {
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let rng = rand::SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("an ES256 key");
        let pair = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).expect("pkcs8");
        let point = signature::KeyPair::public_key(&pair).as_ref().to_vec();
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..65]),
        );
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let jkt = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            canonical.as_bytes(),
        ));
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y});
        FloodKey { pair, jwk, jkt }
    }

    fn proof(&self, claims: &Value) -> String {
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&rand::SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

/// One kept-alive HTTP/1.1 connection: checks whose answers carry a content length.
struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    fn open(addr: SocketAddr) -> Connection {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Connection {
            reader: BufReader::new(s),
        }
    }

    /// Sends a GET with these headers; returns the status.
    fn get(&mut self, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
        let mut raw = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n");
        for (n, v) in headers {
            raw.push_str(&format!("{n}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        self.reader
            .get_mut()
            .write_all(raw.as_bytes())
            .expect("write");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).expect("header");
            if h == "\r\n" || h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':')
                && n.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().expect("content-length");
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).expect("body");
        status
    }
}

/// The resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// 100,000 proofs with distinct `jti`: each accepted once, every replay refused, the
/// replay cache's memory bounded and the process alive.
#[test]
fn a_flood_of_distinct_proofs_is_accepted_once_each_with_bounded_memory() {
    const PROOFS: usize = 100_000;
    const THREADS: usize = 4;
    let dir = TempDir::new("dpop-flood");
    let tg = Tokengate::start(
        &dir,
        json!({ "issuers": [issuer_with(json!({"dpop_max_age": "10m"}))] }),
    );
    let key = FloodKey::new();
    let token = bound_token(&key.jkt);
    let htu = format!("http://{}/orders", tg.authz);
    let auth = format!("DPoP {token}");
    // Warm up (the token verified and cached), then measure from there.
    let warm = key.proof(&dpop::claims("GET", &htu, &token));
    assert_eq!(
        dpop_check(&tg, "GET", "/orders", &token, &[&warm]).status,
        200
    );
    let before = rss_kib(tg.child.id());
    let proofs: Vec<String> = (0..PROOFS)
        .map(|_| key.proof(&dpop::claims("GET", &htu, &token)))
        .collect();
    let addr = tg.authz;
    let chunks: Vec<&[String]> = proofs.chunks(PROOFS / THREADS).collect();
    let accepted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                let auth = &auth;
                s.spawn(move || {
                    let mut c = Connection::open(addr);
                    chunk
                        .iter()
                        .filter(|p| {
                            c.get(addr, "/orders", &[("authorization", auth), ("dpop", p)]) == 200
                        })
                        .count()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a sender"))
            .sum()
    });
    assert_eq!(accepted, PROOFS, "every distinct proof is accepted once");
    let after = rss_kib(tg.child.id());
    // Replays of a sample (one in a hundred) are all refused.
    let mut c = Connection::open(addr);
    let replayed = proofs
        .iter()
        .step_by(100)
        .filter(|p| c.get(addr, "/orders", &[("authorization", &auth), ("dpop", p)]) == 401)
        .count();
    assert_eq!(replayed, PROOFS / 100, "every replay is refused");
    assert_eq!(
        crate::support::http::get(tg.admin, "/healthz").map(|r| r.status),
        Some(200),
        "alive"
    );
    let grown = after.saturating_sub(before);
    eprintln!(
        "dpop flood: {PROOFS} proofs, RSS {before} KiB -> {after} KiB (+{grown} KiB, {:.1} B per proof)",
        grown as f64 * 1024.0 / PROOFS as f64
    );
    // 100,000 replay keys take a few MiB; the bound leaves room for allocator slack, and
    // fails if entries were kept whole (a proof is ~600 bytes) or never freed.
    assert!(
        grown < 48 * 1024,
        "RSS grew by {grown} KiB for {PROOFS} proofs"
    );
    let m: Metrics = tg.metrics();
    assert_eq!(
        m.sum(
            "tokengate_proofs_total",
            &[("kind", "dpop"), ("result", "ok")]
        ),
        (PROOFS + 1) as f64
    );
}

/// Behind real Envoy, over both ext_authz transports with the shipped configs: the
/// proof reaches tokengate, `htu` is the URI the client used (Envoy's `:authority` and
/// scheme), a replay is refused with the `DPoP` challenge, and the `DPoP-Nonce` of a
/// `use_dpop_nonce` answer reaches the client.
#[test]
fn proofs_through_envoy_on_both_ext_authz_transports() {
    use crate::support::envoy::Envoy;
    let app = upstream::Upstream::start(upstream::Mode::Echo);
    let dir = TempDir::new("dpop-envoy");
    let tg = nonce_gate(
        &dir,
        json!({}),
        json!({"listeners": {"authz_grpc": "127.0.0.1:0"}}),
        FLEET_SECRET,
    );
    let mut minter = Minter::start();
    let key = minter.key("ES256");
    let token = bound_token(&key.jkt);
    let auth = format!("DPoP {token}");
    for (config, port) in [
        ("ext-authz-grpc.yaml", tg.addr("authz_grpc").port()),
        ("ext-authz-http.yaml", tg.authz.port()),
    ] {
        let edir = TempDir::new("dpop-envoy-front");
        let envoy = Envoy::start(&edir, config, app.addr, port);
        let htu = format!("http://{}/orders/1", envoy.listen);
        let mut send = |nonce: Option<&str>, replay: Option<&str>| {
            let proof = replay.map(str::to_string).unwrap_or_else(|| {
                let mut c = dpop::claims("GET", &htu, &token);
                if let Some(n) = nonce {
                    c["nonce"] = json!(n);
                }
                minter.proof(&key, &c, json!({}))
            });
            let r = envoy.request(
                "GET",
                "/orders/1",
                &[("authorization", &auth), ("dpop", &proof)],
            );
            (r, proof)
        };
        let (first, _) = send(None, None);
        assert_refused(&first, "use_dpop_nonce", config);
        let nonce = first
            .header("dpop-nonce")
            .unwrap_or_else(|| panic!("{config}: no DPoP-Nonce reached the client"))
            .to_string();
        let (ok, proof) = send(Some(&nonce), None);
        assert_eq!(ok.status, 200, "{config}: {}", ok.body_text());
        let (replayed, _) = send(None, Some(&proof));
        assert_refused(&replayed, "invalid_dpop_proof", config);
    }
}

/// Behind the shipped nginx `auth_request` config (`forward_auth.headers: "nginx"`): the
/// proof's `htu` names the authority the client used (nginx passes `Host` on), and a
/// `use_dpop_nonce` answer reaches the client with its `DPoP-Nonce` and one challenge.
#[test]
fn proofs_through_nginx_auth_request() {
    use crate::support::envoy::Nginx;
    let app = upstream::Upstream::start(upstream::Mode::Echo);
    let dir = TempDir::new("dpop-nginx");
    let tg = nonce_gate(
        &dir,
        json!({}),
        json!({"forward_auth": {"headers": "nginx"}}),
        FLEET_SECRET,
    );
    let ndir = TempDir::new("dpop-nginx-front");
    let nginx = Nginx::start(&ndir, app.addr, tg.authz);
    let mut minter = Minter::start();
    let key = minter.key("EdDSA");
    let token = bound_token(&key.jkt);
    let auth = format!("DPoP {token}");
    let htu = format!("http://{}/orders/1?x=1", nginx.listen);
    let mut send = |nonce: Option<&str>| {
        let mut c = dpop::claims("GET", &htu, &token);
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        let proof = minter.proof(&key, &c, json!({}));
        nginx.request(
            "GET",
            "/orders/1?x=1",
            &[("authorization", &auth), ("dpop", &proof)],
        )
    };
    let first = send(None);
    assert_eq!(first.status, 401, "{}", first.body_text());
    let challenges: Vec<&str> = first
        .headers
        .iter()
        .filter(|(n, _)| n == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(challenges.len(), 1, "{:?}", first.headers);
    assert!(
        challenges[0].starts_with("DPoP realm=\"tokengate\", error=\"use_dpop_nonce\""),
        "{challenges:?}"
    );
    let nonce = first
        .header("dpop-nonce")
        .expect("nginx passes DPoP-Nonce on")
        .to_string();
    let ok = send(Some(&nonce));
    assert_eq!(ok.status, 200, "{}", ok.body_text());
}
