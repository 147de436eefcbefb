//! Route policy: the first route whose `path_prefix` and `methods` match decides which
//! scopes are required and whether anonymous requests pass. Routes match the judged
//! request's resolved path ([`crate::request`]) by segments: a prefix matches the path
//! when its non-empty segments begin the path's non-empty segments, so `/public`
//! matches `/public` and `/public/x` but never `/publicity`, and `//admin` is under
//! `/admin` (as every app that merges slashes reads it). A segment's `;` parameters are
//! not part of its name here (`/admin;jsessionid=1/x` is under `/admin`, as servlet
//! containers read it). With `path_case: "insensitive"` segments compare without regard
//! to ASCII case.

use std::sync::Arc;

use prometheus::IntCounter;

use crate::config::{PathCase, RouteConfig};
use crate::decision::{Denial, DenyReason};
use crate::metrics::Metrics;
use crate::rules::{NameUse, RouteRules, RuleClaims, RuleInput};
use crate::token::extract::Headers;

/// The configured routes, in order.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    list: Vec<Route>,
    /// The claims some route's rules read; `None` when no route has rules.
    claims_read: Option<NameUse>,
    /// Results of rules that read only the token, remembered per token.
    memo_slots: usize,
}

/// One route, with its scope hint prepared.
#[derive(Debug, Clone)]
pub struct Route {
    /// The configuration.
    pub config: RouteConfig,
    /// The `scope` value of an `insufficient_scope` challenge.
    scope_hint: Option<Arc<str>>,
    /// `tokengate_rule_denials_total{route}`, for a route with rules.
    rule_denials: Option<IntCounter>,
    /// The rules, with their memo slots.
    rules: RouteRules,
}

// === impl Routes ===

impl Routes {
    /// Prepares the routes, resolving the rule-denial counter of each route with rules.
    pub fn new(list: &[RouteConfig], metrics: &Metrics) -> Self {
        let mut claims_read: Option<NameUse> = None;
        for rule in list.iter().flat_map(|r| &r.rules) {
            claims_read
                .get_or_insert(NameUse::Names(Vec::new()))
                .merge(rule.claims_read());
        }
        let mut memo_slots = 0;
        let list = list
            .iter()
            .map(|r| {
                let mut wanted: Vec<&str> = r.scopes_all.iter().map(String::as_str).collect();
                wanted.extend(r.scopes_any.iter().map(String::as_str));
                Route {
                    config: r.clone(),
                    scope_hint: (!wanted.is_empty()).then(|| wanted.join(" ").into()),
                    rule_denials: (!r.rules.is_empty()).then(|| metrics.rule_denials(&r.name)),
                    rules: RouteRules::new(&r.rules, &mut memo_slots),
                }
            })
            .collect();
        Self {
            claims_read,
            list,
            memo_slots,
        }
    }

    /// How many rule results a verified token remembers ([`RuleClaims::of`]).
    pub fn memo_slots(&self) -> usize {
        self.memo_slots
    }

    /// The claims some route's rules read (verified tokens then keep them for the
    /// rules); `None` when no route has rules.
    pub fn claims_read(&self) -> Option<&NameUse> {
        self.claims_read.as_ref()
    }

    /// The first route matching `method` and the resolved `path`.
    pub fn pick(&self, method: &str, path: &str, case: PathCase) -> Option<&Route> {
        self.list.iter().find(|r| {
            under_prefix(path, &r.config.path_prefix, case)
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
                dpop: None,
            })
        }
    }
}

impl Route {
    /// Runs the route's rules, in order, on a valid token's claims; the first that is
    /// not true refuses the request (`rule_failed`) and is counted.
    pub fn check_rules<H: Headers + ?Sized>(
        &self,
        claims: Option<&RuleClaims>,
        input: &RuleInput<'_, H>,
    ) -> Result<(), Denial> {
        if self.rules.is_empty() {
            return Ok(());
        }
        let passed = claims.is_some_and(|c| self.rules.all_allow(c, input));
        if passed {
            return Ok(());
        }
        if let Some(c) = &self.rule_denials {
            c.inc();
        }
        Err(DenyReason::RuleFailed.into())
    }
}

/// True when `prefix`'s non-empty segments begin `path`'s (without their `;` parameters).
fn under_prefix(path: &str, prefix: &str, case: PathCase) -> bool {
    let mut segments = path
        .split('/')
        .map(|s| s.split_once(';').map_or(s, |(name, _)| name))
        .filter(|s| !s.is_empty());
    prefix.split('/').filter(|s| !s.is_empty()).all(|want| {
        segments.next().is_some_and(|seg| match case {
            PathCase::Sensitive => seg == want,
            PathCase::Insensitive => seg.eq_ignore_ascii_case(want),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        let s = PathCase::Sensitive;
        assert!(under_prefix("/public", "/public", s));
        assert!(under_prefix("/public/", "/public", s));
        assert!(under_prefix("/public/x", "/public", s));
        assert!(under_prefix("//public//x", "/public", s));
        assert!(under_prefix("/public/x", "/public/", s));
        assert!(under_prefix("/anything", "/", s));
        assert!(!under_prefix("/publicity", "/public", s));
        assert!(!under_prefix("/", "/public", s));
        assert!(!under_prefix("/Public/x", "/public", s));
        assert!(under_prefix("/Public/x", "/public", PathCase::Insensitive));
        assert!(!under_prefix("/x/public", "/public", s));
        assert!(under_prefix("/admin;jsessionid=1/x", "/admin", s));
        assert!(under_prefix("/;x/admin", "/admin", s));
    }

    #[test]
    fn first_matching_route_wins() {
        let metrics = Metrics::new();
        let routes = Routes::new(
            &[
                RouteConfig {
                    path_prefix: "/public".into(),
                    methods: vec![],
                    scopes_all: vec![],
                    scopes_any: vec![],
                    allow_anonymous: true,
                    mode: None,
                    name: "public".into(),
                    issuers: vec![],
                    rules: vec![],
                },
                RouteConfig {
                    path_prefix: "/orders".into(),
                    methods: vec!["POST".into()],
                    scopes_all: vec!["orders:write".into()],
                    scopes_any: vec![],
                    allow_anonymous: false,
                    mode: None,
                    name: "orders".into(),
                    issuers: vec![],
                    rules: vec![],
                },
            ],
            &metrics,
        );
        assert!(
            routes
                .pick("GET", "/public/x", PathCase::Sensitive)
                .is_some_and(|r| r.config.allow_anonymous)
        );
        assert!(routes.pick("GET", "/orders", PathCase::Sensitive).is_none());
        let r = routes.pick("post", "/orders/1", PathCase::Sensitive);
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
