//! The request that is judged (SPEC §4a): one reading of a request's method, path and
//! spoofable headers for every listener, so that tokengate judges exactly the request the
//! app acts on, or refuses it.
//!
//! - **Method and target.** The listener's own, except on `authz_http` when
//!   `forward_auth.headers` names a family of override headers: then each of that
//!   family's two headers must appear exactly once with a visible-ASCII value, and the
//!   other family is never read.
//! - **Path.** The query is set aside. Refused: a raw `\`, a control, space or non-ASCII
//!   byte, a fragment, a malformed `%` escape, `%00`, an encoded `/`, `\` or `.`, a `;`
//!   parameter on a dot segment, an absolute-form target that does not parse (RFC 9112
//!   §3.2.2). Escaped unreserved characters are decoded (RFC 3986 §6.2.2.2) and dot
//!   segments removed exactly as RFC 3986 §5.2.4 says (empty segments are kept, never
//!   merged before `..` is resolved). The proxy forwards the resolved path; the
//!   ext_authz listeners cannot change what the app gets, so a path whose resolution
//!   differs from itself is refused there.
//! - **Method overrides.** A request carrying `X-HTTP-Method-Override`, `X-HTTP-Method`
//!   or `X-Method-Override` is refused: frameworks that honour them act on another
//!   method than the one judged.
//! - **Spoofed identity headers.** A client header whose name is a forward header's
//!   with `_` for `-` (CGI-style apps read both as the same variable) is named so the
//!   listener removes it.
//! - **HTTP/1.1 framing.** hyper refuses bad `Transfer-Encoding` and `Content-Length`,
//!   oversized heads and slow ones; [`check_host`] adds the `Host` rule.
//!
//! Route prefixes are matched against the resolved path by non-empty segments (so
//! `//admin` is under `/admin`, as an app that merges slashes reads it) and, with
//! `path_case: "insensitive"`, without regard to ASCII case ([`crate::routes`]).

use std::borrow::Cow;
use std::sync::Arc;

use crate::config::{Config, ForwardAuth};
use crate::metrics::Listener;
use crate::token::extract::Headers;

/// What a listener received: the method, the request target (origin or absolute form,
/// query included) and the headers.
#[derive(Debug)]
pub struct RequestView<'a, H: ?Sized> {
    /// The request's method.
    pub method: &'a str,
    /// The request target as received.
    pub target: &'a str,
    /// Its headers.
    pub headers: &'a H,
    /// What the listener knows of the connection beyond the headers.
    pub peer: Peer<'a>,
}

/// What an ext_authz call says about the client's connection (Envoy's
/// `AttributeContext`): empty on the HTTP listeners, which see only headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer<'a> {
    /// The request's scheme (`http`, `https`) as the proxy in front received it.
    pub scheme: Option<&'a str>,
    /// The request's authority (`Host`/`:authority`) as the proxy received it.
    pub authority: Option<&'a str>,
    /// The client's TLS certificate: URL-encoded PEM (`include_peer_certificate`).
    pub certificate: Option<&'a str>,
}

/// The request as judged.
#[derive(Debug)]
pub struct Judged<'a> {
    /// The judged method.
    pub method: &'a str,
    /// The resolved path, without the query.
    pub path: Cow<'a, str>,
    /// Client headers that spoof a forward header under another spelling: they must not
    /// reach the app.
    pub spoofed: Vec<Arc<str>>,
}

/// A resolved request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The path, dot segments removed and escaped unreserved characters decoded.
    pub path: Cow<'a, str>,
    /// The query, without its `?`.
    pub query: Option<&'a str>,
    /// True when `path` is the received path unchanged.
    pub unchanged: bool,
}

/// Headers by which some frameworks replace the request's method.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Why a request cannot be judged. Every refusal is `400 invalid_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A forward-auth override header of the configured family is missing, repeated or
    /// not visible ASCII, or its method is not a method.
    #[error("the forward-auth override headers are missing, repeated or invalid")]
    Override,
    /// The target holds a byte or an escape that readers resolve differently.
    #[error("the request target is ambiguous")]
    Ambiguous,
    /// An absolute-form target that does not parse, or a target of neither form.
    #[error("the request target does not parse")]
    Unparsable,
    /// A method-override header: the app may act on another method.
    #[error("the request carries a method-override header")]
    MethodOverride,
    /// On an ext_authz listener: the path would resolve to another path.
    #[error("the path is not in its resolved form")]
    Unresolved,
    /// No `Host` header, or more than one.
    #[error("a request needs exactly one Host header")]
    Host,
}

/// Builds the judged request of `req`, received on `listener`. `forward_names` are the
/// forward headers' names (lower case).
pub fn judge<'a, H: Headers + ?Sized>(
    config: &Config,
    forward_names: &[Arc<str>],
    listener: Listener,
    req: &RequestView<'a, H>,
) -> Result<Judged<'a>, Refusal> {
    let family = match (listener, config.forward_auth) {
        (Listener::AuthzHttp, ForwardAuth::Nginx) => Some(["x-original-method", "x-original-uri"]),
        (Listener::AuthzHttp, ForwardAuth::Traefik) => {
            Some(["x-forwarded-method", "x-forwarded-uri"])
        }
        _ => None,
    };
    let (method, target) = match family {
        Some([m, u]) => (
            override_value(req.headers, m)?,
            override_value(req.headers, u)?,
        ),
        None => (req.method, req.target),
    };
    if method.is_empty() || !method.bytes().all(crate::token::extract::is_tchar) {
        return Err(Refusal::Override);
    }
    for name in METHOD_OVERRIDES {
        let mut present = false;
        req.headers.for_each(name, &mut |_| present = true);
        if present {
            return Err(Refusal::MethodOverride);
        }
    }
    let resolved = resolve(target)?;
    let strict = matches!(listener, Listener::AuthzHttp | Listener::AuthzGrpc);
    if strict && !resolved.unchanged {
        return Err(Refusal::Unresolved);
    }
    Ok(Judged {
        method,
        path: resolved.path,
        spoofed: spoofed(req.headers, forward_names),
    })
}

/// The one value of override header `name`: present once, visible ASCII.
fn override_value<'a, H: Headers + ?Sized>(headers: &'a H, name: &str) -> Result<&'a str, Refusal> {
    let mut found: Option<&'a [u8]> = None;
    let mut count = 0;
    headers.for_each(name, &mut |v| {
        count += 1;
        found = Some(v);
    });
    match found {
        Some(v) if count == 1 && !v.is_empty() && v.iter().all(|b| (0x21..0x7f).contains(b)) => {
            std::str::from_utf8(v).map_err(|_| Refusal::Override)
        }
        _ => Err(Refusal::Override),
    }
}

/// Names of the client headers that equal a forward header's name once `_` is read as
/// `-` (any case), other than the forward header's own spelling.
fn spoofed<H: Headers + ?Sized>(headers: &H, forward_names: &[Arc<str>]) -> Vec<Arc<str>> {
    let mut out = Vec::new();
    headers.names(&mut |name| {
        if !name.contains('_') {
            return;
        }
        let hit = forward_names.iter().any(|f| {
            f.len() == name.len()
                && f.bytes().zip(name.bytes()).all(|(a, b)| {
                    let b = if b == b'_' { b'-' } else { b };
                    a.eq_ignore_ascii_case(&b)
                })
        });
        if hit && !out.iter().any(|o: &Arc<str>| **o == *name) {
            out.push(Arc::from(name));
        }
    });
    out
}

/// Exactly one `Host` header (RFC 9112 §3.2): the HTTP/1.1 listeners' rule.
pub fn check_host<H: Headers + ?Sized>(headers: &H) -> Result<(), Refusal> {
    let mut count = 0;
    headers.for_each("host", &mut |_| count += 1);
    if count == 1 {
        Ok(())
    } else {
        Err(Refusal::Host)
    }
}

/// Resolves a request target (see the module docs).
pub fn resolve(target: &str) -> Result<Target<'_>, Refusal> {
    if target
        .bytes()
        .any(|b| !(0x21..0x7f).contains(&b) || b == b'\\' || b == b'#')
    {
        return Err(Refusal::Ambiguous);
    }
    let origin = if target.starts_with('/') {
        target
    } else {
        absolute_path(target)?
    };
    let (path, query) = match origin.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (origin, None),
    };
    let decoded = decode_unreserved(path)?;
    let resolved = if has_dot_segment(&decoded) {
        Cow::Owned(remove_dot_segments(&decoded))
    } else {
        decoded
    };
    if resolved
        .split('/')
        .any(|s| s.starts_with(".;") || s.starts_with("..;"))
    {
        return Err(Refusal::Ambiguous);
    }
    let unchanged = *resolved == *path;
    Ok(Target {
        path: resolved,
        query,
        unchanged,
    })
}

/// The path and query of an absolute-form target (RFC 9112 §3.2.2): `http` or `https`,
/// an authority, then an absolute path or nothing (`/`). Parsed by the `http` crate.
fn absolute_path(target: &str) -> Result<&str, Refusal> {
    let uri: http::Uri = target.parse().map_err(|_| Refusal::Unparsable)?;
    let scheme_ok = uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
    if !scheme_ok || uri.authority().is_none_or(|a| a.as_str().is_empty()) {
        return Err(Refusal::Unparsable);
    }
    // The authority ends at the first `/` or `?` after `://`.
    let rest = target
        .split_once("://")
        .map_or("", |(_, r)| r)
        .trim_start_matches(|c| c != '/' && c != '?');
    match rest.as_bytes().first() {
        None => Ok("/"),
        Some(b'/') => Ok(rest),
        // `http://h?q`: the path is empty, read as `/` with no way to keep the query
        // beside it here; refuse rather than invent one.
        _ => Err(Refusal::Unparsable),
    }
}

/// Decodes `%XX` escapes of unreserved characters; refuses malformed escapes, `%00` and
/// the escapes that readers resolve differently (`%2F`, `%5C`, `%2E`).
fn decode_unreserved(path: &str) -> Result<Cow<'_, str>, Refusal> {
    if !path.contains('%') {
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(char::from(bytes[i]));
            i += 1;
            continue;
        }
        let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
            return Err(Refusal::Ambiguous);
        };
        // Two hex digits: the value fits a byte.
        let value = u8::try_from(hi * 16 + lo).map_err(|_| Refusal::Ambiguous)?;
        match value {
            0 | b'/' | b'\\' | b'.' => return Err(Refusal::Ambiguous),
            b if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&path[i..i + 3]),
        }
        i += 3;
    }
    Ok(Cow::Owned(out))
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

/// RFC 3986 §5.2.4, for an absolute path: every `.` segment goes, every `..` segment
/// takes the segment before it along; empty segments stay.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut output = String::with_capacity(path.len());
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest;
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") {
            input = &input[3..];
            pop_segment(&mut output);
        } else if input == "/.." {
            input = "/";
            pop_segment(&mut output);
        } else if input == "." || input == ".." {
            input = "";
        } else {
            // The first segment, with its leading `/`, up to the next `/`.
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |e| e + start);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    output
}

/// Removes the last segment and its preceding `/` from `output`.
fn pop_segment(output: &mut String) {
    let cut = output.rfind('/').unwrap_or(0);
    output.truncate(cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal_config() -> Config {
        let json = r#"{"issuers":[{"name":"am","key_sources":[{"jwks_file":"jwks.json"}]}]}"#;
        Config::parse(std::path::Path::new("/t/config.json"), json.as_bytes()).unwrap()
    }

    #[test]
    fn removes_dot_segments_as_rfc_3986_says() {
        // RFC 3986 §5.2.4's own examples, and the empty-segment case of the edge issue.
        for (input, want) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
            ("/admin//../public", "/admin/public"),
            ("/admin/../public", "/public"),
            ("/../public", "/public"),
            ("/public/.", "/public/"),
            ("/public/..", "/"),
            ("/a/./b/", "/a/b/"),
            ("//x/../y", "//y"),
            ("/a/b/..", "/a/"),
        ] {
            assert_eq!(remove_dot_segments(input), want, "{input}");
        }
    }

    #[test]
    fn resolves_targets_keeping_the_query_and_empty_segments() {
        for (input, path, query, unchanged) in [
            ("/public/x", "/public/x", None, true),
            (
                "/public/x?a=1&b=/../",
                "/public/x",
                Some("a=1&b=/../"),
                true,
            ),
            ("/admin/../public?x", "/public", Some("x"), false),
            ("//admin//x", "//admin//x", None, true),
            ("/%70ublic/%7Ex", "/public/~x", None, false),
            ("/caf%C3%A9", "/caf%C3%A9", None, true),
            ("http://h/public/x?q", "/public/x", Some("q"), true),
            ("HTTPS://h:8443", "/", None, true),
        ] {
            let t = resolve(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(
                (&*t.path, t.query, t.unchanged),
                (path, query, unchanged),
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_targets_that_readers_resolve_differently() {
        for input in [
            "/admin\\..\\public",
            "/a%2F..%2Fb",
            "/a%2f",
            "/a%5Cb",
            "/a%5c",
            "/a/%2E%2E/b",
            "/a/%2e",
            "/a%00b",
            "/public/..;/admin",
            "/public/.;x/admin",
            "/a%zz",
            "/a%4",
            "/admin#/../public",
            "/a b",
            "/a\tb",
            "/adm\u{e9}n",
            "http://h#/public",
            "ftp://h/public",
            "http:///public",
            "public",
            "*",
            "",
        ] {
            assert!(resolve(input).is_err(), "{input:?} was accepted");
        }
    }

    #[test]
    fn strict_listeners_refuse_paths_that_would_resolve_elsewhere() {
        let config = minimal_config();
        let headers: Vec<(String, String)> = vec![("host".into(), "x".into())];
        let view = |target| RequestView {
            method: "GET",
            target,
            headers: &headers[..],
            peer: Default::default(),
        };
        for listener in [Listener::AuthzHttp, Listener::AuthzGrpc] {
            assert_eq!(
                judge(&config, &[], listener, &view("/public/../admin")).map(|j| j.path),
                Err(Refusal::Unresolved)
            );
            assert_eq!(
                judge(&config, &[], listener, &view("/%61dmin")).map(|j| j.path),
                Err(Refusal::Unresolved)
            );
        }
        let proxied = judge(&config, &[], Listener::Proxy, &view("/public/../admin?q"));
        assert_eq!(proxied.map(|j| j.path), Ok(Cow::Borrowed("/admin")));
    }

    #[test]
    fn override_families_need_one_visible_ascii_value_each() {
        let mut config = minimal_config();
        config.forward_auth = ForwardAuth::Nginx;
        let judge_with = |headers: &[(&str, &str)]| {
            let h: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| ((*n).to_string(), (*v).to_string()))
                .collect();
            let view = RequestView {
                method: "GET",
                target: "/_tokengate",
                headers: &h[..],
                peer: Default::default(),
            };
            judge(&config, &[], Listener::AuthzHttp, &view)
                .map(|j| (j.method.to_string(), j.path.into_owned()))
        };
        let ok = [
            ("x-original-method", "DELETE"),
            ("x-original-uri", "/admin/x?y"),
        ];
        assert_eq!(judge_with(&ok), Ok(("DELETE".into(), "/admin/x".into())));
        // The other family is never read.
        let mut other = ok.to_vec();
        other.push(("x-forwarded-uri", "/public"));
        assert_eq!(judge_with(&other), Ok(("DELETE".into(), "/admin/x".into())));
        for bad in [
            vec![("x-original-uri", "/admin/x")],
            vec![("x-original-method", "GET")],
            vec![
                ("x-original-method", "GET"),
                ("x-original-uri", "/admin"),
                ("x-original-uri", "/public"),
            ],
            vec![
                ("x-original-method", "GET"),
                ("x-original-uri", "/adm\u{e9}n"),
            ],
            vec![("x-original-method", "G T"), ("x-original-uri", "/admin")],
            vec![("x-original-method", "GET"), ("x-original-uri", "")],
        ] {
            assert!(judge_with(&bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn names_underscore_spellings_of_forward_headers() {
        let headers: Vec<(String, String)> = vec![
            ("x_auth_subject".into(), "root".into()),
            ("X_Auth_Subject".into(), "root".into()),
            ("x-auth-subject".into(), "root".into()),
            ("x_other".into(), "1".into()),
        ];
        let names: Vec<Arc<str>> = vec![Arc::from("x-auth-subject")];
        let found = spoofed(&headers[..], &names);
        assert_eq!(
            found.iter().map(|s| &**s).collect::<Vec<_>>(),
            vec!["x_auth_subject", "X_Auth_Subject"]
        );
    }

    #[test]
    fn refuses_method_override_headers() {
        let config = minimal_config();
        for name in [
            "X-HTTP-Method-Override",
            "x-http-method",
            "X-Method-Override",
        ] {
            let headers: Vec<(String, String)> = vec![(name.into(), "DELETE".into())];
            let view = RequestView {
                method: "POST",
                target: "/orders",
                headers: &headers[..],
                peer: Default::default(),
            };
            for listener in [Listener::Proxy, Listener::AuthzHttp, Listener::AuthzGrpc] {
                assert_eq!(
                    judge(&config, &[], listener, &view).map(|j| j.path),
                    Err(Refusal::MethodOverride),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn needs_exactly_one_host() {
        let one: Vec<(String, String)> = vec![("host".into(), "a".into())];
        let two: Vec<(String, String)> =
            vec![("host".into(), "a".into()), ("Host".into(), "b".into())];
        let none: Vec<(String, String)> = vec![];
        assert_eq!(check_host(&one[..]), Ok(()));
        assert_eq!(check_host(&two[..]), Err(Refusal::Host));
        assert_eq!(check_host(&none[..]), Err(Refusal::Host));
    }
}
