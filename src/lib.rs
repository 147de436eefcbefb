//! tokengate validates OAuth 2.0 bearer access tokens (JWTs) in front of APIs.
//!
//! It runs as a sidecar in the API's pod (a reverse proxy), or as Envoy's external
//! authorization service (HTTP or gRPC), or as forward-auth for nginx and Traefik. Each
//! request's token is checked by `kid` against keys from a cached JWKS (remote
//! `jwks_uri`, OIDC discovery, or a file), a PKCS#12 keystore alias mapping (the first
//! alias active, all valid) or a PEM file; an unknown `kid` triggers one rate-limited,
//! single-flight refetch, then a fallback over every compatible key. Keys rotate without
//! restart; revoked keys fail at once; every key version has its own metrics and a line
//! in the `/keys` inventory, so operators can see when an old key is safe to retire.
//!
//! It does not issue tokens, decrypt JWE, introspect opaque tokens, or call the
//! authorization server per request.
//!
//! ```text
//!  listener (server/*)          Authorizer::check (authz)
//!  ───────────────────          ─────────────────────────────────────────────────────
//!  HTTP ext_authz ─┐            routes::pick ─ token::extract ─ cache ─┐
//!  gRPC ext_authz ─┼─RequestView─►                                     │ miss
//!  proxy ──────────┘            token::jws (shape, alg) ─ issuer::pick ┘
//!        ▲                        ─ keys (KeyRing: kid │ refetch │ fallback)
//!        │ Decision               ─ verify → VerifiedToken ─ claims → Principal
//!        └────────────────────────── routes (scopes) ─ decision ─ metrics, one log line
//!
//!  key sources (keys/*) ──publish──► IssuerKeys ──ArcSwap<KeyRing>──► requests (no lock)
//! ```
//!
//! Modules: [`config`] (the JSON file, typed), [`token`] (extraction, compact JWS),
//! [`issuer`], [`keys`] (key rings and every key source), [`verify`], [`claims`],
//! [`request`] (the judged request, one reading for every listener), [`routes`], [`cache`], [`decision`] (the one mapping to HTTP, RFC 6750 and gRPC),
//! [`authz`] (the decision path), [`metrics`], [`clock`], [`app`] (wiring), [`server`]
//! (one module per listener) and [`cmd`] (one module per subcommand).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod alg;
pub mod app;
pub mod audit;

pub mod authz;
pub mod binding;
pub mod cache;
pub mod claims;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod decision;
pub mod issuer;
pub mod jwe;
pub mod keys;
pub mod metrics;
pub mod request;
pub mod routes;
pub mod rules;
pub mod server;
pub mod telemetry;
pub mod token;
pub mod verify;
