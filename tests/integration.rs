//! The one integration-test binary. Each area is a module; each module says what it
//! covers. Tests start the real `tokengate` binary (`CARGO_BIN_EXE_tokengate`) on
//! loopback ports, or drive the library with a fixed clock; tokens come from the
//! jwcrypto-made fixtures in `tests/fixtures` unless a test mints its own. Peers are the
//! real programs: Envoy, nginx, Prometheus, keytool and openssl.

// A test states what it expects with `expect("...")` (clippy's `allow-expect-in-tests`
// covers `#[test]` functions only, not the helpers beside them in this crate).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

/// The deny-reason table: one case per SPEC §7 reason (and the allow paths of every
/// algorithm family), through the library's `Authorizer` with a fixed clock.
mod decisions;

/// `authz_http` of a running `tokengate serve`: statuses, RFC 6750 challenges, forward
/// headers, forward-auth overrides, admin endpoints.
mod http_checks;

/// The command line: `verify`, `check-config`, `keys`, `demo`.
mod cli;

/// Property tests: arbitrary bytes never panic the token or JWKS parsers and are denied.
mod properties;

/// Remote JWKS: rotation by kid, refresh policy, faults, cold start, refetch rate limit.
mod jwks_remote;

/// Rotation drills (PingGateway keystore and symmetric key, JWKS file), reload without
/// restart, revocation, certificate validity.
mod rotation;

/// Listeners end to end: Envoy ext_authz (HTTP, gRPC), nginx auth_request, the proxy,
/// admin, signals.
mod serving;

/// Metrics end to end: every SPEC §7 series after traffic, bounded cardinality, a real
/// Prometheus evaluating the dashboard and the alert rules.
mod observability;

/// Deployment recipes: Dockerfile, kustomize base and overlays, Istio and Envoy configs
/// are valid and consistent.
mod deploy;

/// Hostile input: the attack corpus, floods, slow clients, secrets never logged.
mod hardening;

/// The request the app gets is the request tokengate judged (SPEC §4a): every bypass
/// class of the edge issue against the real binary's `proxy` and `authz_http`.
mod bypass;

/// The same classes end to end through the shipped nginx and Envoy configs, with an
/// echo app behind them.
mod bypass_e2e;

/// Policy beyond scopes and what each check tells the operator (SPEC §12): CEL rules
/// and the decision log.
mod policy;

/// Traces: `tokengate.check` spans at a real OTLP receiver, in the caller's trace, through
/// `authz_http` and behind real Envoy with its tracing on; a collector that is down.
mod traces;

/// Certificate-bound tokens (RFC 8705): a test PKI made by openssl, real Envoy with a TLS
/// listener in front of `authz_grpc` (the peer certificate) and `authz_http`
/// (`x-forwarded-client-cert`), driven by curl; how that header is read, and never
/// believed without `trusted_proxy_headers.x_forwarded_client_cert`.
mod mtls;

/// DPoP (RFC 9449): proofs made by jwcrypto, one refusal per check, nonces shared by a
/// fleet, the proxy listener, a flood of 100,000 proofs against the replay cache.
mod dpop;

/// The JWE decryptor (SPEC §10): RFC 7520 §5 examples, jwcrypto and Node jose tokens for every
/// algorithm × method pair, hostile JWEs (no padding oracle, invalid curves, refusals),
/// nested access tokens through a running tokengate.
mod jwe;

/// Shared JWT sessions (SPEC §10): PingGateway session cookies under a keytool-made key,
/// and the seed's three-instance rotation drill with traffic throughout.
mod sessions;
