//! Certificate-bound access tokens (RFC 8705) with the real `tokengate` binary on loopback,
//! a test PKI made by `openssl` and the real `curl` as the TLS client (`support::mtls`),
//! and a real Envoy 1.40 running the shipped `deploy/envoy/ext-authz-grpc.yaml` and
//! `deploy/envoy/ext-authz-http.yaml` with the TLS listener their headers show:
//!
//! - over `authz_grpc`, the certificate Envoy verified comes in the CheckRequest
//!   (`include_peer_certificate`): a token bound to client-a (`cnf.x5t#S256`) passes with
//!   client-a's certificate only; an unbound token passes with any;
//! - over `authz_http`, it comes in the `x-forwarded-client-cert` Envoy sets
//!   (`SANITIZE_SET`), believed only with `trusted_proxy_headers.x_forwarded_client_cert`;
//!   a client's own copy never gets through Envoy;
//! - straight to `authz_http`, how that header is read: `Hash`, `Cert` or both, in exactly
//!   one element of one header, and never without the trust flag.
//!
//! A refusal is `binding_mismatch`: 401 with an `invalid_token` challenge and the reason in
//! the JSON body, counted in `tokengate_proofs_total{kind="mtls"}` and
//! `tokengate_decisions_total`.

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::support::envoy::Envoy;
use crate::support::mtls::{self, Pki};
use crate::support::upstream::{Mode, Upstream, header_values};
use crate::support::{ANY_PORT, TempDir, Tokengate, fixture_issuer, http, mint};

/// The request header Envoy sets (and tokengate may read) for the client certificate.
const XFCC: &str = "x-forwarded-client-cert";

/// Starts tokengate with `authz_http` and `admin`, plus `authz_grpc` when `grpc`, the
/// fixture issuer, and `trusted_proxy_headers.x_forwarded_client_cert` as `trust_xfcc`;
/// waits until it is ready.
fn start(dir: &TempDir, grpc: bool, trust_xfcc: bool) -> Tokengate {
    let config = json!({
        "listeners": {
            "authz_http": ANY_PORT,
            "admin": ANY_PORT,
            "authz_grpc": grpc.then_some(ANY_PORT),
        },
        "issuers": [fixture_issuer()],
        "trusted_proxy_headers": {"x_forwarded_client_cert": trust_xfcc},
    });
    let tg = Tokengate::start(dir, config);
    tg.wait_ready();
    tg
}

/// `Bearer <token>`: a fresh token of the fixture issuer, bound to the certificate of
/// client `bound_to` (`cnf.x5t#S256`, computed by openssl) when given.
fn bearer(pki: &Pki, bound_to: Option<&str>) -> String {
    let mut claims = mint::claims();
    if let Some(name) = bound_to {
        claims["cnf"] = json!({"x5t#S256": pki.x5t_s256(name)});
    }
    let token = mint::sign(Algorithm::RS256, "rsa-1", Some("rsa-1"), &claims);
    format!("Bearer {token}")
}

/// The upstream's echo of the request it got, from a body that came through Envoy.
fn echo(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not an upstream echo ({e}): {body}"))
}

/// Asserts that an answer is the `binding_mismatch` refusal: 401, a `WWW-Authenticate`
/// challenge of realm `tokengate` with `error="invalid_token"`, the reason in the JSON
/// body.
fn assert_binding_mismatch(what: &str, status: u16, headers: &[(String, String)], body: &str) {
    assert_eq!(status, 401, "{what}: {body}");
    let challenge = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("www-authenticate"))
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"tokengate\"")
            && challenge.contains("error=\"invalid_token\""),
        "{what}: WWW-Authenticate {challenge:?}"
    );
    let reason: Value = serde_json::from_str(body).unwrap_or_default();
    assert_eq!(reason["error"], "binding_mismatch", "{what}: {body}");
}

/// [`assert_binding_mismatch`] for an answer of `authz_http` itself.
fn assert_refused(what: &str, r: &http::Response) {
    assert_binding_mismatch(what, r.status, &r.headers, &r.body_text());
}

/// `tokengate_proofs_total{kind="mtls",result}`, over issuers.
fn mtls_proofs(tg: &Tokengate, result: &str) -> f64 {
    tg.metrics().sum(
        "tokengate_proofs_total",
        &[("kind", "mtls"), ("result", result)],
    )
}

/// `tokengate_decisions_total{listener,decision="deny",reason="binding_mismatch"}`.
fn binding_denials(tg: &Tokengate, listener: &str) -> f64 {
    tg.metrics().sum(
        "tokengate_decisions_total",
        &[
            ("listener", listener),
            ("decision", "deny"),
            ("reason", "binding_mismatch"),
        ],
    )
}

/// Through the Envoy TLS front on `port`, a request with `auth` (a token bound to
/// client-a) reaches the app with client-a's certificate, and only then: client-b's
/// certificate and none are refused `binding_mismatch`. The app gets the one XFCC element
/// Envoy set.
fn assert_only_client_a_passes(port: u16, pki: &Pki, auth: &[(&str, &str)]) {
    let (status, _, body) =
        mtls::tls_request(port, pki, Some("client-a"), "GET", "/orders/1", auth);
    assert_eq!(status, 200, "client-a's certificate: {body}");
    let e = echo(&body);
    assert_eq!(e["path"], "/orders/1");
    assert_eq!(
        header_values(&e, XFCC),
        [pki.xfcc_element("client-a")],
        "the app gets the one element Envoy set"
    );
    let (status, headers, body) =
        mtls::tls_request(port, pki, Some("client-b"), "GET", "/orders/1", auth);
    assert_binding_mismatch("client-b's certificate", status, &headers, &body);
    let (status, headers, body) = mtls::tls_request(port, pki, None, "GET", "/orders/1", auth);
    assert_binding_mismatch("no certificate", status, &headers, &body);
}

/// Over `authz_grpc` behind the shipped gRPC bootstrap with a TLS listener that asks for
/// (but does not require) a client certificate: Envoy hands tokengate the certificate it
/// verified (`include_peer_certificate`), so a token bound to client-a reaches the app
/// with client-a's certificate, and is refused (`binding_mismatch`: 401, `invalid_token`)
/// with client-b's right after that allow, and with none; an unbound token passes with
/// client-b's. The `x-forwarded-client-cert` tokengate also gets is not what decided
/// (the trust flag is off). The proofs and the denials are counted, on `authz_grpc` only.
#[test]
fn grpc_check_binds_a_token_to_the_peer_certificate() {
    let dir = TempDir::new("mtls-grpc");
    let pki = Pki::make(&dir.path("pki"));
    let upstream = Upstream::start(Mode::Echo);
    let tg = start(&dir, true, false);
    let grpc = tg.addr("authz_grpc");
    let envoy = Envoy::start_with(
        &dir,
        "ext-authz-grpc.yaml",
        upstream.addr,
        grpc.port(),
        |doc| mtls::tls_front(doc, &pki, false),
    );
    let port = envoy.listen.port();
    let bound = bearer(&pki, Some("client-a"));
    let auth = [("authorization", bound.as_str())];

    assert_only_client_a_passes(port, &pki, &auth);

    // Binding applies to bound tokens only.
    let unbound = bearer(&pki, None);
    let (status, _, body) = mtls::tls_request(
        port,
        &pki,
        Some("client-b"),
        "GET",
        "/orders/2",
        &[("authorization", &unbound)],
    );
    assert_eq!(status, 200, "an unbound token: {body}");
    assert_eq!(echo(&body)["path"], "/orders/2");

    assert!(mtls_proofs(&tg, "ok") >= 1.0, "{:?}", tg.metrics());
    assert!(
        mtls_proofs(&tg, "binding_mismatch") >= 2.0,
        "{:?}",
        tg.metrics()
    );
    assert!(binding_denials(&tg, "authz_grpc") >= 2.0);
    assert_eq!(binding_denials(&tg, "authz_http"), 0.0);
}

/// Over `authz_http` behind the shipped HTTP bootstrap with a TLS listener that asks for
/// (but does not require) a client certificate, tokengate trusting
/// `x-forwarded-client-cert`: the app gets exactly the one element Envoy set (`Hash` and
/// `Cert` of client-a's certificate, as openssl computes them); a token bound to client-a
/// passes with client-a's certificate and is refused with client-b's or none. A client's
/// own header naming client-a's certificate is replaced by client-b's (with client-b's
/// certificate) or removed (with none) before the check (`SANITIZE_SET`), so it gets a
/// bound token nowhere, and the app never sees it.
#[test]
fn xfcc_set_by_envoy_binds_a_token_to_the_client_certificate() {
    let dir = TempDir::new("mtls-xfcc-envoy");
    let pki = Pki::make(&dir.path("pki"));
    let upstream = Upstream::start(Mode::Echo);
    let tg = start(&dir, false, true);
    let envoy = Envoy::start_with(
        &dir,
        "ext-authz-http.yaml",
        upstream.addr,
        tg.authz.port(),
        |doc| mtls::tls_front(doc, &pki, false),
    );
    let port = envoy.listen.port();
    let bound = bearer(&pki, Some("client-a"));
    let unbound = bearer(&pki, None);
    let forged_hash = format!("Hash={}", pki.xfcc_hash("client-a"));
    let forged_element = pki.xfcc_element("client-a");

    let auth = [("authorization", bound.as_str())];
    assert_only_client_a_passes(port, &pki, &auth);

    // A forged header naming client-a's certificate.
    let with_hash = [
        ("authorization", bound.as_str()),
        (XFCC, forged_hash.as_str()),
    ];
    let (status, headers, body) =
        mtls::tls_request(port, &pki, Some("client-b"), "GET", "/orders/1", &with_hash);
    assert_binding_mismatch(
        "client-b's certificate, forged Hash",
        status,
        &headers,
        &body,
    );
    let with_element = [
        ("authorization", bound.as_str()),
        (XFCC, forged_element.as_str()),
    ];
    let (status, headers, body) =
        mtls::tls_request(port, &pki, None, "GET", "/orders/1", &with_element);
    assert_binding_mismatch("no certificate, forged element", status, &headers, &body);

    // What became of the forged header, seen by the app behind an unbound token.
    let (status, _, body) = mtls::tls_request(
        port,
        &pki,
        Some("client-b"),
        "GET",
        "/orders/2",
        &[("authorization", &unbound), (XFCC, &forged_hash)],
    );
    assert_eq!(status, 200, "an unbound token: {body}");
    assert_eq!(
        header_values(&echo(&body), XFCC),
        [pki.xfcc_element("client-b")],
        "replaced by the element of the certificate Envoy verified"
    );
    let (status, _, body) = mtls::tls_request(
        port,
        &pki,
        None,
        "GET",
        "/orders/3",
        &[("authorization", &unbound), (XFCC, &forged_element)],
    );
    assert_eq!(
        status, 200,
        "an unbound token without a certificate: {body}"
    );
    assert_eq!(
        header_values(&echo(&body), XFCC),
        Vec::<String>::new(),
        "removed: no certificate was verified"
    );

    assert!(mtls_proofs(&tg, "ok") >= 1.0, "{:?}", tg.metrics());
    assert!(
        mtls_proofs(&tg, "binding_mismatch") >= 4.0,
        "{:?}",
        tg.metrics()
    );
    assert!(binding_denials(&tg, "authz_http") >= 4.0);
}

/// Straight to `authz_http` with `trusted_proxy_headers.x_forwarded_client_cert` off (the
/// default): an `x-forwarded-client-cert` naming client-a's certificate exactly as Envoy
/// would (`Hash` and `Cert`), or by its `Hash` alone, is not believed, so a token bound
/// to client-a is refused (`binding_mismatch`); an unbound token with that header passes.
#[test]
fn xfcc_is_not_believed_without_the_trust_flag() {
    let dir = TempDir::new("mtls-xfcc-untrusted");
    let pki = Pki::make(&dir.path("pki"));
    let tg = start(&dir, false, false);
    let bound = bearer(&pki, Some("client-a"));
    let element = pki.xfcc_element("client-a");
    let hash = format!("Hash={}", pki.xfcc_hash("client-a"));

    for (what, value) in [("Hash and Cert", &element), ("Hash alone", &hash)] {
        let r = tg.check(
            "GET",
            "/orders/1",
            &[("authorization", &bound), (XFCC, value)],
        );
        assert_refused(what, &r);
    }
    let unbound = bearer(&pki, None);
    let r = tg.check(
        "GET",
        "/orders/1",
        &[("authorization", &unbound), (XFCC, &element)],
    );
    assert_eq!(r.status, 200, "an unbound token: {}", r.body_text());

    assert_eq!(mtls_proofs(&tg, "ok"), 0.0, "{:?}", tg.metrics());
    assert!(
        mtls_proofs(&tg, "binding_mismatch") >= 2.0,
        "{:?}",
        tg.metrics()
    );
    assert!(binding_denials(&tg, "authz_http") >= 2.0);
}

/// Straight to `authz_http` with `trusted_proxy_headers.x_forwarded_client_cert` on: a
/// token bound to client-a passes with one header of one element that names client-a's
/// certificate by `Hash` and `Cert` (as Envoy sets it), by `Cert` alone, by `Hash` alone,
/// or by `Hash` beside the other fields Envoy can set (`By`, `Subject`, `URI`). Refused
/// (`binding_mismatch`): client-b's `Hash` or `Cert`, a `Hash` that is not the `Cert`'s
/// (either way round), two elements (even both client-a's), two headers, no header.
#[test]
fn xfcc_hash_and_cert_are_read_with_the_trust_flag() {
    let dir = TempDir::new("mtls-xfcc-trusted");
    let pki = Pki::make(&dir.path("pki"));
    let tg = start(&dir, false, true);
    let bound = bearer(&pki, Some("client-a"));
    let (a_hash, a_cert) = (pki.xfcc_hash("client-a"), pki.xfcc_cert("client-a"));
    let (b_hash, b_cert) = (pki.xfcc_hash("client-b"), pki.xfcc_cert("client-b"));

    let allowed = [
        ("Hash and Cert", format!("Hash={a_hash};Cert=\"{a_cert}\"")),
        ("Cert alone", format!("Cert=\"{a_cert}\"")),
        ("Hash alone", format!("Hash={a_hash}")),
        (
            "Hash among other fields",
            format!(
                "By=spiffe://tokengate.test/envoy;Hash={a_hash};Subject=\"CN=client-a\";\
                 URI=spiffe://tokengate.test/client-a"
            ),
        ),
    ];
    for (what, value) in &allowed {
        let r = tg.check(
            "GET",
            "/orders/1",
            &[("authorization", &bound), (XFCC, value)],
        );
        assert_eq!(r.status, 200, "{what}: {value}\n{}", r.body_text());
    }

    let refused = [
        ("client-b's Hash", format!("Hash={b_hash}")),
        ("client-b's Cert", format!("Cert=\"{b_cert}\"")),
        (
            "client-a's Hash, client-b's Cert",
            format!("Hash={a_hash};Cert=\"{b_cert}\""),
        ),
        (
            "client-b's Hash, client-a's Cert",
            format!("Hash={b_hash};Cert=\"{a_cert}\""),
        ),
        ("two elements", format!("Hash={a_hash},Hash={a_hash}")),
    ];
    for (what, value) in &refused {
        let r = tg.check(
            "GET",
            "/orders/1",
            &[("authorization", &bound), (XFCC, value)],
        );
        assert_refused(what, &r);
    }
    let one = format!("Hash={a_hash}");
    let r = tg.check(
        "GET",
        "/orders/1",
        &[("authorization", &bound), (XFCC, &one), (XFCC, &one)],
    );
    assert_refused("two headers", &r);
    let r = tg.check("GET", "/orders/1", &[("authorization", &bound)]);
    assert_refused("no header", &r);

    let denied = refused.len() + 2;
    assert!(
        mtls_proofs(&tg, "ok") >= allowed.len() as f64,
        "{:?}",
        tg.metrics()
    );
    assert!(
        mtls_proofs(&tg, "binding_mismatch") >= denied as f64,
        "{:?}",
        tg.metrics()
    );
    assert!(binding_denials(&tg, "authz_http") >= denied as f64);
}
