//! Finds the bearer token: configured headers first (in order), then cookies. The scheme
//! word of a prefix (`Bearer`) matches case-insensitively (RFC 9110 §11.1), followed by
//! one or more spaces; the token itself is one word of visible ASCII. A value that names
//! the scheme but breaks that syntax (`Bearer\t…`, `Bearer:…`) is `malformed`, never "no
//! token".
//!
//! One credential, once (RFC 6750 §2, SPEC §4a), else `invalid_request`: more than one
//! `Authorization` field (or field of a configured token header) whatever the schemes,
//! a value that carries a second token scheme after a comma (two fields merged, as
//! Envoy's gRPC attributes merge them), a token in a header and in a cookie at once, a
//! configured cookie named twice, or a `Cookie` header that a lenient parser could read
//! as naming a configured cookie (a `,`-separated pair). Cookies are parsed per RFC 6265
//! §5.2: pairs split at `;`, names and values trimmed.

use crate::config::TokenConfig;
use crate::decision::DenyReason;

/// Read access to a request's headers, whatever the listener's HTTP library.
pub trait Headers {
    /// Calls `f` with every value of header `name` (lower case), in order.
    fn for_each<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s [u8]));
    /// Calls `f` with the name of every header field, in order (repeated names repeat).
    fn names(&self, f: &mut dyn FnMut(&str));
}

/// Headers as a plain list of (name, value) pairs.
impl Headers for [(String, String)] {
    fn for_each<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s [u8])) {
        for (n, v) in self {
            if n.eq_ignore_ascii_case(name) {
                f(v.as_bytes());
            }
        }
    }

    fn names(&self, f: &mut dyn FnMut(&str)) {
        for (n, _) in self {
            f(n);
        }
    }
}

/// Headers of the `http` crate (hyper's): names already lower case.
impl Headers for http::HeaderMap {
    fn for_each<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s [u8])) {
        for v in self.get_all(name) {
            f(v.as_bytes());
        }
    }

    fn names(&self, f: &mut dyn FnMut(&str)) {
        for n in self.keys() {
            f(n.as_str());
        }
    }
}

/// The `Authorization` scheme of a DPoP-bound token (RFC 9449 §7.1), recognised in the
/// `authorization` header beside the configured prefix.
pub const DPOP_PREFIX: &str = "DPoP ";

/// A token and how it was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presented<'s> {
    /// The token.
    pub token: &'s str,
    /// Under the `DPoP` scheme (`Authorization: DPoP <token>`): it comes with a proof.
    pub dpop: bool,
    /// The cookie of `sessions[i]` (`token.session_cookies[i]`) carried it: a shared JWT
    /// session rather than a bearer token (SPEC §10).
    pub session: Option<usize>,
}

/// Finds the token. `Ok(None)`: the request carries none.
pub fn extract<'s, H: Headers + ?Sized>(
    cfg: &TokenConfig,
    headers: &'s H,
) -> Result<Option<&'s str>, DenyReason> {
    extract_presented(cfg, headers).map(|p| p.map(|p| p.token))
}

/// Finds the token and its scheme: the configured prefix, or `DPoP` in `authorization`.
pub fn extract_presented<'s, H: Headers + ?Sized>(
    cfg: &TokenConfig,
    headers: &'s H,
) -> Result<Option<Presented<'s>>, DenyReason> {
    let mut fields = 0;
    headers.for_each("authorization", &mut |_| fields += 1);
    if fields > 1 {
        return Err(DenyReason::InvalidRequest);
    }
    let mut from_header: Option<Presented<'s>> = None;
    for source in &cfg.from_headers {
        let mut values: [Option<&'s [u8]>; 2] = [None; 2];
        let mut count = 0;
        headers.for_each(&source.name, &mut |value| {
            if count < 2 {
                values[count] = Some(value);
            }
            count += 1;
        });
        let [Some(value), None] = values else {
            if count > 1 {
                return Err(DenyReason::InvalidRequest);
            }
            continue;
        };
        if carries_second_credential(value, cfg) {
            return Err(DenyReason::InvalidRequest);
        }
        let mut dpop = false;
        let mut credential = strip_prefix(value, source.prefix.as_bytes());
        if matches!(credential, Credential::Other) && source.name == "authorization" {
            credential = strip_prefix(value, DPOP_PREFIX.as_bytes());
            dpop = true;
        }
        match credential {
            Credential::Other => {}
            Credential::Malformed => return Err(DenyReason::Malformed),
            Credential::Token(rest) => {
                if from_header.is_none() {
                    from_header = Some(Presented {
                        token: token_word(rest, cfg.max_bytes)?,
                        dpop,
                        session: None,
                    });
                }
            }
        }
    }
    let from_cookie = cookie_token(cfg, headers)?;
    match (from_header, from_cookie) {
        (Some(_), Some(_)) => Err(DenyReason::InvalidRequest),
        (Some(p), None) => Ok(Some(p)),
        (None, Some((v, session))) => token_word(v, cfg.max_bytes).map(|token| {
            Some(Presented {
                token,
                dpop: false,
                session,
            })
        }),
        (None, None) => Ok(None),
    }
}

/// A value holding, after a comma, another value of a configured token scheme: two
/// fields merged into one (`Basic x, Bearer y`).
fn carries_second_credential(value: &[u8], cfg: &TokenConfig) -> bool {
    let is_scheme = |part: &[u8], prefix: &str| {
        let scheme = trim_end(prefix.as_bytes());
        !scheme.is_empty()
            && part.len() > scheme.len()
            && part[..scheme.len()].eq_ignore_ascii_case(scheme)
            && !is_tchar(part[scheme.len()])
    };
    // Nearly every value has no comma: one `memchr`, and no piece after the first.
    super::pieces(value, b',').skip(1).any(|part| {
        let part = trim(part);
        is_scheme(part, DPOP_PREFIX) || cfg.from_headers.iter().any(|s| is_scheme(part, &s.prefix))
    })
}

/// A credential cookie's value, and the session it is the cookie of (`None`: a token
/// cookie).
type CookieCredential<'s> = (&'s [u8], Option<usize>);

/// The value of the first configured token cookie present (RFC 6265 §5.2), or of the
/// session cookie present (with its session's index), `None` when none is (an empty
/// value counts as absent). A session cookie beside any other credential cookie is two
/// credentials (`invalid_request`).
fn cookie_token<'s, H: Headers + ?Sized>(
    cfg: &TokenConfig,
    headers: &'s H,
) -> Result<Option<CookieCredential<'s>>, DenyReason> {
    if cfg.from_cookies.is_empty() && cfg.session_cookies.is_empty() {
        return Ok(None);
    }
    let mut cookies = false;
    headers.for_each("cookie", &mut |_| cookies = true);
    if !cookies {
        return Ok(None);
    }
    let names = || cfg.from_cookies.iter().chain(&cfg.session_cookies);
    let mut found: Vec<Option<&'s [u8]>> =
        vec![None; cfg.from_cookies.len() + cfg.session_cookies.len()];
    let mut refused = false;
    headers.for_each("cookie", &mut |value| {
        for pair in super::pieces(value, b';') {
            // A lenient (RFC 2109) reader also splits at `,`: a configured name there
            // would be read by the app and not by us.
            if super::pieces(pair, b',').skip(1).any(|p| {
                let p = trim(p);
                let name = memchr::memchr(b'=', p).map_or(p, |e| trim(&p[..e]));
                names().any(|c| c.as_bytes() == name)
            }) {
                refused = true;
            }
            let Some(eq) = memchr::memchr(b'=', pair) else {
                continue;
            };
            let name = trim(&pair[..eq]);
            let Some(i) = names().position(|c| c.as_bytes() == name) else {
                continue;
            };
            let mut v = trim(&pair[eq + 1..]);
            if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                v = &v[1..v.len() - 1];
            }
            if found[i].is_some() {
                refused = true;
            }
            found[i] = Some(v);
        }
    });
    if refused {
        return Err(DenyReason::InvalidRequest);
    }
    let (tokens, sessions) = found.split_at(cfg.from_cookies.len());
    let token = tokens.iter().flatten().find(|v| !v.is_empty()).copied();
    let mut sessions = sessions
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.filter(|v| !v.is_empty()).map(|v| (v, Some(i))));
    match (sessions.next(), sessions.next(), token) {
        (None, _, token) => Ok(token.map(|v| (v, None))),
        (Some(session), None, None) => Ok(Some(session)),
        _ => Err(DenyReason::InvalidRequest),
    }
}

/// What a header value is, for a token prefix.
#[derive(Clone, Copy)]
enum Credential<'v> {
    /// Another scheme (`Basic …`, `Bearerx …`): not a token header.
    Other,
    /// The prefix's scheme and separator: what follows.
    Token(&'v [u8]),
    /// The prefix's scheme name, then anything but the separator (`Bearer\tx`,
    /// `Bearer:x`, a bare `Bearer`): a token header, malformed. Never "no token": an
    /// anonymous route would pass it on to an upstream whose laxer parser may use it.
    Malformed,
}

/// Matches `value` against `prefix`: its scheme word case-insensitively (RFC 9110
/// §11.1), then, where the prefix ends in a space, one or more spaces (§11.4). A scheme
/// word followed by another token character is another scheme.
fn strip_prefix<'v>(value: &'v [u8], prefix: &[u8]) -> Credential<'v> {
    let scheme = trim_end(prefix);
    if value.len() < scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return Credential::Other;
    }
    let rest = &value[scheme.len()..];
    if scheme.len() == prefix.len() {
        return Credential::Token(rest);
    }
    let spaces = rest.iter().take_while(|b| **b == b' ').count();
    if spaces > 0 {
        return Credential::Token(&rest[spaces..]);
    }
    match rest.first() {
        Some(b) if is_tchar(*b) => Credential::Other,
        _ => Credential::Malformed,
    }
}

/// RFC 9110 §5.6.2 `tchar`: the characters of a token such as a scheme name or a header
/// name.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn token_word(rest: &[u8], max_bytes: usize) -> Result<&str, DenyReason> {
    let rest = trim(rest);
    if rest.len() > max_bytes {
        return Err(DenyReason::TooLarge);
    }
    // A branch-free fold (vectorised) rather than a short-circuiting `all`: tokens are
    // hundreds of bytes and nearly always valid.
    let bad = rest
        .iter()
        .fold(false, |bad, b| bad | !b.is_ascii_graphic());
    if rest.is_empty() || bad {
        return Err(DenyReason::Malformed);
    }
    std::str::from_utf8(rest).map_err(|_| DenyReason::Malformed)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().take_while(|c| **c == b' ' || **c == b'\t').count();
    trim_end(&b[start..])
}

fn trim_end(b: &[u8]) -> &[u8] {
    let end = b.len()
        - b.iter()
            .rev()
            .take_while(|c| **c == b' ' || **c == b'\t')
            .count();
    &b[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HeaderSource;

    fn cfg() -> TokenConfig {
        TokenConfig {
            from_headers: vec![HeaderSource {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            }],
            from_cookies: vec!["session".into()],
            session_cookies: vec!["IG".into(), "other-ig".into()],
            max_bytes: 64,
        }
    }

    #[test]
    fn a_session_cookie_is_a_credential_of_its_own() {
        let got = |pairs: &[(&str, &str)]| {
            let headers = h(pairs);
            extract_presented(&cfg(), headers.as_slice())
                .map(|p| p.map(|p| (p.token.to_string(), p.session)))
        };
        assert_eq!(
            got(&[("cookie", "a=1; IG=s.e.s.s.n")]),
            Ok(Some(("s.e.s.s.n".into(), Some(0))))
        );
        assert_eq!(
            got(&[("cookie", "other-ig=x")]),
            Ok(Some(("x".into(), Some(1))))
        );
        // Beside a bearer token, a token cookie or another session: two credentials.
        for pairs in [
            vec![("authorization", "Bearer a"), ("cookie", "IG=b")],
            vec![("cookie", "session=a; IG=b")],
            vec![("cookie", "IG=a; other-ig=b")],
            vec![("cookie", "IG=a"), ("cookie", "IG=b")],
            vec![("cookie", "x=1, IG=b")],
        ] {
            assert_eq!(got(&pairs), Err(DenyReason::InvalidRequest), "{pairs:?}");
        }
        // An empty session cookie is no credential.
        assert_eq!(got(&[("cookie", "IG=")]), Ok(None));
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn finds_bearer_token_in_any_scheme_casing() {
        for v in [
            "Bearer abc",
            "bearer abc",
            "BEARER abc",
            "Bearer   abc",
            "Bearer abc ",
        ] {
            let headers = h(&[("authorization", v)]);
            assert_eq!(
                extract(&cfg(), headers.as_slice()),
                Ok(Some("abc")),
                "{v:?}"
            );
        }
    }

    #[test]
    fn the_dpop_scheme_is_read_from_authorization_and_said() {
        for v in ["DPoP abc", "dpop abc", "DPOP   abc"] {
            let headers = h(&[("authorization", v)]);
            assert_eq!(
                extract_presented(&cfg(), headers.as_slice()),
                Ok(Some(Presented {
                    token: "abc",
                    dpop: true,
                    session: None,
                })),
                "{v:?}"
            );
        }
        let headers = h(&[("authorization", "Bearer abc")]);
        assert_eq!(
            extract_presented(&cfg(), headers.as_slice()),
            Ok(Some(Presented {
                token: "abc",
                dpop: false,
                session: None,
            }))
        );
        for (v, want) in [
            ("DPoP\tabc", Err(DenyReason::Malformed)),
            ("DPoP", Err(DenyReason::Malformed)),
            ("DPoPabc", Ok(None)),
            ("Bearer a, DPoP b", Err(DenyReason::InvalidRequest)),
            ("DPoP a, Bearer b", Err(DenyReason::InvalidRequest)),
        ] {
            let headers = h(&[("authorization", v)]);
            assert_eq!(extract(&cfg(), headers.as_slice()), want, "{v:?}");
        }
        // A DPoP token and a cookie token at once: two credentials.
        let headers = h(&[("authorization", "DPoP a"), ("cookie", "session=b")]);
        assert_eq!(
            extract(&cfg(), headers.as_slice()),
            Err(DenyReason::InvalidRequest)
        );
    }

    #[test]
    fn other_schemes_are_no_token() {
        for v in ["Basic dXNlcjpwYXNz", "Bearerabc", "Token abc", ""] {
            let headers = h(&[("authorization", v)]);
            assert_eq!(extract(&cfg(), headers.as_slice()), Ok(None), "{v:?}");
        }
    }

    #[test]
    fn a_bearer_value_that_breaks_the_syntax_is_malformed_not_absent() {
        for v in [
            "Bearer\tabc",
            "Bearer:abc",
            "Bearer: abc",
            "Bearer,abc",
            "Bearer",
            "bearer\t",
        ] {
            let headers = h(&[("authorization", v)]);
            assert_eq!(
                extract(&cfg(), headers.as_slice()),
                Err(DenyReason::Malformed),
                "{v:?}"
            );
        }
        let headers = h(&[
            ("authorization", "Bearer a"),
            ("authorization", "Bearer\tb"),
        ]);
        assert_eq!(
            extract(&cfg(), headers.as_slice()),
            Err(DenyReason::InvalidRequest)
        );
    }

    #[test]
    fn rejects_two_authorization_headers() {
        let headers = h(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(
            extract(&cfg(), headers.as_slice()),
            Err(DenyReason::InvalidRequest)
        );
    }

    #[test]
    fn rejects_oversized_and_non_word_tokens() {
        let big = format!("Bearer {}", "a".repeat(65));
        let headers = h(&[("authorization", &big)]);
        assert_eq!(
            extract(&cfg(), headers.as_slice()),
            Err(DenyReason::TooLarge)
        );
        for v in ["Bearer a b", "Bearer ", "Bearer \u{e9}t\u{e9}"] {
            let headers = h(&[("authorization", v)]);
            assert_eq!(
                extract(&cfg(), headers.as_slice()),
                Err(DenyReason::Malformed),
                "{v:?}"
            );
        }
    }

    #[test]
    fn falls_back_to_cookies() {
        let headers = h(&[("cookie", "a=1; session=tok.en.x; b=2")]);
        assert_eq!(extract(&cfg(), headers.as_slice()), Ok(Some("tok.en.x")));
        let headers = h(&[("cookie", "session=one"), ("cookie", "session=two")]);
        assert_eq!(
            extract(&cfg(), headers.as_slice()),
            Err(DenyReason::InvalidRequest)
        );
        let headers = h(&[("cookie", "other=1")]);
        assert_eq!(extract(&cfg(), headers.as_slice()), Ok(None));
    }

    #[test]
    fn trims_cookie_names_and_values_as_rfc_6265_says() {
        let headers = h(&[("cookie", "a=1;session =tok.en.x ; b=2")]);
        assert_eq!(extract(&cfg(), headers.as_slice()), Ok(Some("tok.en.x")));
    }

    #[test]
    fn refuses_two_credentials_whatever_their_form() {
        for pairs in [
            vec![
                ("authorization", "Basic dXNlcjpwYXNz"),
                ("authorization", "Bearer a"),
            ],
            vec![("authorization", "Basic dXNlcjpwYXNz, Bearer a")],
            vec![("authorization", "Bearer a"), ("cookie", "session=b")],
            vec![("cookie", "session=a; session=b")],
            vec![("cookie", "x=1, session=b")],
            vec![("cookie", "x=1,session =b")],
        ] {
            let headers = h(&pairs);
            assert_eq!(
                extract(&cfg(), headers.as_slice()),
                Err(DenyReason::InvalidRequest),
                "{pairs:?}"
            );
        }
    }
}
