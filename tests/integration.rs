//! The one integration-test binary. Each area is a module; each module says what it
//! covers. Tests start the real `tokengate` binary (`CARGO_BIN_EXE_tokengate`) on
//! loopback ports, or drive the library with a fixed clock; tokens come from the
//! jwcrypto-made fixtures in `tests/fixtures` unless a test mints its own.

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
