//! Finds the bearer token: configured headers first (in order), then cookies. The scheme
//! word of a prefix (`Bearer`) matches case-insensitively (RFC 9110 §11.1), followed by
//! one or more spaces; the token itself is one word of visible ASCII. A value that names
//! the scheme but breaks that syntax (`Bearer\t…`, `Bearer:…`) is `malformed`, never "no
//! token". Two copies of a token header are an `invalid_request` (RFC 6750 §2: one
//! method, once).

use crate::config::TokenConfig;
use crate::decision::DenyReason;

/// Read access to a request's headers, whatever the listener's HTTP library.
pub trait Headers {
    /// Calls `f` with every value of header `name` (lower case), in order.
    fn for_each<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s [u8]));
}

/// Headers as a plain list of (lower-case name, value) pairs.
impl Headers for [(String, String)] {
    fn for_each<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s [u8])) {
        for (n, v) in self {
            if n.eq_ignore_ascii_case(name) {
                f(v.as_bytes());
            }
        }
    }
}

/// Finds the token. `Ok(None)`: the request carries none.
pub fn extract<'s, H: Headers + ?Sized>(
    cfg: &TokenConfig,
    headers: &'s H,
) -> Result<Option<&'s str>, DenyReason> {
    for source in &cfg.from_headers {
        let mut found: Option<Credential<'s>> = None;
        let mut duplicate = false;
        headers.for_each(&source.name, &mut |value| {
            let credential = strip_prefix(value, source.prefix.as_bytes());
            if matches!(credential, Credential::Other) {
                return;
            }
            if found.is_some() {
                duplicate = true;
            } else {
                found = Some(credential);
            }
        });
        if duplicate {
            return Err(DenyReason::InvalidRequest);
        }
        match found {
            Some(Credential::Token(rest)) => return token_word(rest, cfg.max_bytes).map(Some),
            Some(Credential::Malformed) => return Err(DenyReason::Malformed),
            Some(Credential::Other) | None => {}
        }
    }
    if !cfg.from_cookies.is_empty() {
        for name in &cfg.from_cookies {
            let mut found: Option<&'s [u8]> = None;
            let mut duplicate = false;
            headers.for_each("cookie", &mut |value| {
                for pair in value.split(|b| *b == b';') {
                    let pair = trim(pair);
                    let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                        continue;
                    };
                    if &pair[..eq] == name.as_bytes() {
                        let mut v = &pair[eq + 1..];
                        if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                            v = &v[1..v.len() - 1];
                        }
                        if found.is_some() {
                            duplicate = true;
                        } else {
                            found = Some(v);
                        }
                    }
                }
            });
            if duplicate {
                return Err(DenyReason::InvalidRequest);
            }
            if let Some(v) = found {
                if v.is_empty() {
                    continue;
                }
                return token_word(v, cfg.max_bytes).map(Some);
            }
        }
    }
    Ok(None)
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
            max_bytes: 64,
        }
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
}
