//! Route policy: the first route whose `path_prefix` and `methods` match decides which
//! scopes are required and whether anonymous requests pass. Paths are normalised before
//! matching (query dropped, percent-encoded unreserved characters decoded, `.`/`..`
//! segments resolved, repeated slashes merged), so `/public/../orders` is `/orders`.
//! A path that common upstreams resolve differently from that reading (an escaped `/` or
//! `\`, which some decode before resolving `..`; a `..;` or `.;` segment, which servlet
//! containers resolve as `..`) is refused (`invalid_request`) rather than matched under
//! one reading while the upstream serves another.

use std::borrow::Cow;
use std::sync::Arc;

use crate::config::RouteConfig;
use crate::decision::{Denial, DenyReason};

/// The configured routes, in order.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    list: Vec<Route>,
}

/// One route, with its scope hint prepared.
#[derive(Debug, Clone)]
pub struct Route {
    /// The configuration.
    pub config: RouteConfig,
    /// The `scope` value of an `insufficient_scope` challenge.
    scope_hint: Option<Arc<str>>,
}

// === impl Routes ===

impl Routes {
    /// Prepares the routes.
    pub fn new(list: &[RouteConfig]) -> Self {
        Self {
            list: list
                .iter()
                .map(|r| {
                    let mut wanted: Vec<&str> = r.scopes_all.iter().map(String::as_str).collect();
                    wanted.extend(r.scopes_any.iter().map(String::as_str));
                    Route {
                        config: r.clone(),
                        scope_hint: (!wanted.is_empty()).then(|| wanted.join(" ").into()),
                    }
                })
                .collect(),
        }
    }

    /// The first route matching `method` and the normalised `path`.
    pub fn pick(&self, method: &str, path: &str) -> Option<&Route> {
        self.list.iter().find(|r| {
            path.starts_with(r.config.path_prefix.as_str())
                && (r.config.methods.is_empty()
                    || r.config
                        .methods
                        .iter()
                        .any(|m| m.eq_ignore_ascii_case(method)))
        })
    }
}

// === impl Route ===

impl Route {
    /// Checks granted `scopes` against the route's requirements.
    pub fn check_scopes(&self, scopes: &str) -> Result<(), Denial> {
        let has = |want: &String| scopes.split(' ').any(|s| s == want.as_str());
        let all = self.config.scopes_all.iter().all(has);
        let any = self.config.scopes_any.is_empty() || self.config.scopes_any.iter().any(has);
        if all && any {
            Ok(())
        } else {
            Err(Denial {
                reason: DenyReason::InsufficientScope,
                scope: self.scope_hint.clone(),
            })
        }
    }
}

/// Normalises a request target's path for matching (see the module docs); `None` for a
/// path whose meaning depends on the server reading it.
pub fn normalize_path(target: &str) -> Option<Cow<'_, str>> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    if is_ambiguous(path) {
        return None;
    }
    let simple = path.starts_with('/')
        && !path.contains("//")
        && !path.contains('%')
        && !path.contains('\\')
        && !path.split('/').any(|s| s == "." || s == "..");
    if simple {
        return Some(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path);
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split(['/', '\\']) {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(decoded.len() + 1);
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() || (decoded.ends_with('/') && !out.is_empty()) {
        s.push('/');
    }
    Some(Cow::Owned(s))
}

/// An escaped `/` or `\` anywhere, or a `.`/`..` segment carrying `;` parameters (also
/// once unreserved escapes are decoded: `%2e%2e;`).
fn is_ambiguous(path: &str) -> bool {
    let escaped_separator = path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && ((w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f'))
                || (w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c')))
    });
    if escaped_separator {
        return true;
    }
    path.contains(';')
        && decode_unreserved(path).split(['/', '\\']).any(|seg| {
            seg.split_once(';')
                .is_some_and(|(name, _)| name == "." || name == "..")
        })
}

/// Decodes `%XX` escapes of unreserved characters (RFC 3986 §2.3) and of `.`; leaves
/// every other escape (notably `%2F`) as it is.
fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok())
                && (v.is_ascii_alphanumeric() || b"-._~".contains(&v))
            {
                out.push(v as char);
                i += 3;
                continue;
            }
        }
        // Non-ASCII bytes only occur inside a valid &str, so push whole chars.
        let ch_len = utf8_len(b[i]);
        out.push_str(&path[i..(i + ch_len).min(b.len())]);
        i += ch_len;
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_paths_before_matching() {
        let cases = [
            ("/orders", "/orders"),
            ("/orders?x=1", "/orders"),
            ("/public/../orders", "/orders"),
            ("/public/%2e%2e/orders", "/orders"),
            ("//orders", "/orders"),
            ("/a/./b/", "/a/b/"),
            ("/../../etc", "/etc"),
            ("", "/"),
            ("/%6Frders", "/orders"),
            ("/public\\..\\orders", "/orders"),
            ("/caf\u{e9}/../x", "/x"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_path(input).as_deref(), Some(want), "{input}");
        }
    }

    #[test]
    fn refuses_paths_that_upstreams_read_differently() {
        for input in [
            "/public/..%2Forders",
            "/public/%2e%2e%2forders",
            "/public/..%5Corders",
            "/a%2Fb",
            "/public/..;/orders",
            "/public/..;jsessionid=1/orders",
            "/public/.;/x",
            "/public/%2e%2e;/orders",
        ] {
            assert_eq!(normalize_path(input), None, "{input}");
        }
        for input in ["/orders;v=1", "/a;b/c", "/x?next=/a%2Fb"] {
            assert!(normalize_path(input).is_some(), "{input}");
        }
    }

    #[test]
    fn first_matching_route_wins() {
        let routes = Routes::new(&[
            RouteConfig {
                path_prefix: "/public".into(),
                methods: vec![],
                scopes_all: vec![],
                scopes_any: vec![],
                allow_anonymous: true,
            },
            RouteConfig {
                path_prefix: "/orders".into(),
                methods: vec!["POST".into()],
                scopes_all: vec!["orders:write".into()],
                scopes_any: vec![],
                allow_anonymous: false,
            },
        ]);
        assert!(
            routes
                .pick("GET", "/public/x")
                .is_some_and(|r| r.config.allow_anonymous)
        );
        assert!(routes.pick("GET", "/orders").is_none());
        let r = routes.pick("post", "/orders/1");
        assert!(r.is_some());
        if let Some(r) = r {
            let denial = r.check_scopes("orders:read").err();
            assert_eq!(
                denial.and_then(|d| d.scope).as_deref(),
                Some("orders:write")
            );
            assert!(r.check_scopes("orders:read orders:write").is_ok());
            assert!(r.check_scopes("").is_err());
        }
    }
}
