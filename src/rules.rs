//! Route rules (SPEC §12): CEL expressions over `claims`, `request` and `token`, compiled
//! once when the config loads and evaluated per request on valid tokens only, after the
//! scopes. A rule that errors (a missing claim, a type mismatch) or yields anything but
//! `true` fails.
//!
//! The cel crate bounds neither steps nor time, so cost is bounded here:
//! - at load, only the standard operators, the macros (`has`, `all`, `exists`,
//!   `exists_one`, `map`, `filter`) and a short list of functions are accepted, a
//!   comprehension may not hold another one (its cost is then linear in one list), and
//!   the only names are `claims`, `request`, `token` and the macros' own variables;
//! - at run time the claims fed to rules are capped ([`MAX_CLAIM_NODES`] values,
//!   [`MAX_CLAIM_DEPTH`] levels): a token beyond the caps fails every rule rather than
//!   being cut (a cut list could turn `!('x' in list)` true).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, Program};
use serde_json::Value;

use crate::token::extract::Headers;
use crate::token::jws::{ClaimSet, ClaimValue};

/// Longest rule source accepted.
pub const MAX_RULE_BYTES: usize = 4096;
/// Values (claims, list elements, object members, at every level) fed to rules at most.
pub const MAX_CLAIM_NODES: usize = 1024;
/// Nesting of claim values fed to rules at most.
pub const MAX_CLAIM_DEPTH: usize = 8;
/// Headers fed to rules at most (the rest are left out of `request.headers`).
const MAX_HEADERS: usize = 128;

/// The variables a rule may name.
const VARIABLES: [&str; 3] = ["claims", "request", "token"];

/// The functions and operators a rule may call: each costs at most linear time in its
/// operands, which the caps bound.
const FUNCTIONS: [&str; 27] = [
    "_?_:_",
    "_&&_",
    "_||_",
    "!_",
    "_-_",
    "_+_",
    "_*_",
    "_/_",
    "_%_",
    "_==_",
    "_!=_",
    "_>=_",
    "_<=_",
    "_>_",
    "_<_",
    "-_",
    "_[_]",
    "@in",
    "@not_strictly_false",
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "string",
    "int",
    "uint",
    "double",
];

/// The one environment: the standard library and macros, without the optional syntax.
static ENV: LazyLock<Arc<Env>> =
    LazyLock::new(|| Arc::new(Env::stdlib().with_optional_support(false)));

/// One compiled rule.
pub struct Rule {
    source: Box<str>,
    program: Program,
}

/// The claims of one verified token as rules see them (kept with the cached principal).
#[derive(Debug)]
pub struct RuleClaims(Option<Box<dyn Val>>);

/// What a rule sees of the request.
pub struct RuleInput<'a, H: Headers + ?Sized> {
    /// The judged method.
    pub method: &'a str,
    /// The judged path, without the query.
    pub path: &'a str,
    /// The request's headers.
    pub headers: &'a H,
    /// The name of the token's issuer.
    pub issuer: &'a str,
    /// The id of the key that verified it.
    pub key: &'a str,
}

// === impl Rule ===

impl Rule {
    /// Compiles `source`; the error gives the position (line and column, from 1) and why.
    pub fn compile(source: &str) -> Result<Rule, String> {
        if source.len() > MAX_RULE_BYTES {
            return Err(format!("longer than {MAX_RULE_BYTES} bytes"));
        }
        let program = ENV.compile(source).map_err(|errors| {
            errors.errors.first().map_or_else(
                || "does not parse".to_string(),
                |e| format!("line {}, column {}: {}", e.pos.0, e.pos.1, e.msg),
            )
        })?;
        let at = |id: u64| {
            let offset = program
                .source_info()
                .offset_for(id)
                .map_or(0, |(start, _)| start as usize);
            position(source, offset)
        };
        let mut bound = Vec::new();
        check(program.expression(), 0, &mut bound).map_err(|(id, why)| {
            let (line, column) = at(id);
            format!("line {line}, column {column}: {why}")
        })?;
        Ok(Rule {
            source: source.into(),
            program,
        })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True only when the rule evaluates to `true` for these claims and this request.
    pub fn allows<H: Headers + ?Sized>(
        &self,
        claims: &RuleClaims,
        input: &RuleInput<'_, H>,
    ) -> bool {
        let Some(claims) = claims.0.as_deref() else {
            return false;
        };
        let vars = Vars {
            claims,
            request: request_val(input),
            token: string_map([("issuer", input.issuer), ("key", input.key)]),
        };
        let mut cx = Context::with_env(ENV.clone());
        cx.set_variable_resolver(&vars);
        matches!(self.program.execute(&cx), Ok(cel::Value::Bool(true)))
    }
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Rule").field(&self.source).finish()
    }
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Rule {}

// === impl RuleClaims ===

impl RuleClaims {
    /// The claims of a verified token, or (beyond the caps) a value no rule accepts.
    pub fn of(claims: &ClaimSet<'_>) -> Self {
        let mut budget = MAX_CLAIM_NODES;
        let mut map = HashMap::new();
        for (name, value) in claims.members() {
            let Some(v) = claim_val(value, &mut budget) else {
                return Self(None);
            };
            map.insert(CelMapKey::from(name.to_string()), v);
        }
        Self(Some(Box::new(CelMap::from(map))))
    }

    /// Rough heap bytes, for the token cache's weight.
    pub fn heap_size(&self) -> usize {
        // Measured shape: a map entry and a boxed value are each a few dozen bytes.
        self.0.as_ref().map_or(0, |_| 256)
    }
}

/// The variables of one evaluation.
struct Vars<'a> {
    claims: &'a dyn Val,
    request: Box<dyn Val + 'a>,
    token: Box<dyn Val + 'a>,
}

impl VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "claims" => Some(CowVal::Borrowed(self.claims)),
            "request" => Some(CowVal::Borrowed(self.request.as_ref())),
            "token" => Some(CowVal::Borrowed(self.token.as_ref())),
            _ => None,
        }
    }
}

/// Accepts the expression only if its cost is bounded (see the module docs); on refusal
/// gives the node's id and why.
fn check(e: &IdedExpr, depth: u32, bound: &mut Vec<String>) -> Result<(), (u64, String)> {
    match &e.expr {
        Expr::Comprehension(c) => {
            if depth >= 1 {
                return Err((
                    e.id,
                    "a macro (all, exists, exists_one, map, filter) inside another one is not \
                     accepted: its cost would multiply"
                        .into(),
                ));
            }
            check(&c.iter_range, depth, bound)?;
            check(&c.accu_init, depth, bound)?;
            let names = 1 + usize::from(c.iter_var2.is_some()) + 1;
            bound.push(c.iter_var.clone());
            bound.extend(c.iter_var2.clone());
            bound.push(c.accu_var.clone());
            let inner = [&c.loop_cond, &c.loop_step, &c.result]
                .into_iter()
                .try_for_each(|x| check(x, depth + 1, bound));
            bound.truncate(bound.len() - names);
            inner
        }
        Expr::Call(c) => {
            if !FUNCTIONS.contains(&c.func_name.as_str()) {
                return Err((
                    e.id,
                    format!(
                        "{:?} is not available in rules; functions: size, contains, startsWith, \
                         endsWith, string, int, uint, double (and the operators and macros)",
                        c.func_name
                    ),
                ));
            }
            if let Some(t) = &c.target {
                check(t, depth, bound)?;
            }
            c.args.iter().try_for_each(|a| check(a, depth, bound))
        }
        Expr::Select(s) => check(&s.operand, depth, bound),
        Expr::List(l) => l.elements.iter().try_for_each(|a| check(a, depth, bound)),
        Expr::Map(m) => m.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(me) => {
                check(&me.key, depth, bound)?;
                check(&me.value, depth, bound)
            }
            EntryExpr::StructField(_) => Err((entry.id, "struct literals are not accepted".into())),
        }),
        Expr::Struct(_) => Err((e.id, "struct literals are not accepted".into())),
        Expr::Ident(name) => {
            if VARIABLES.contains(&name.as_str()) || bound.iter().any(|b| b == name) {
                Ok(())
            } else {
                Err((
                    e.id,
                    format!("unknown name {name:?}; rules see claims, request and token"),
                ))
            }
        }
        Expr::Literal(_) => Ok(()),
        Expr::Unspecified => Err((e.id, "an incomplete expression".into())),
    }
}

/// Line and column (from 1, in characters) of byte `offset` in `source`.
fn position(source: &str, offset: usize) -> (usize, usize) {
    let before = source.get(..offset.min(source.len())).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A claim value as a rule sees it, spending `budget`; `None` beyond the caps.
fn claim_val(value: &ClaimValue<'_>, budget: &mut usize) -> Option<Box<dyn Val>> {
    *budget = budget.checked_sub(1)?;
    Some(match value {
        ClaimValue::Null => Box::new(CelNull),
        ClaimValue::Bool(b) => Box::new(CelBool::from(*b)),
        ClaimValue::Number(n) => number_val(n),
        ClaimValue::Str(s) => Box::new(CelString::from(s.to_string())),
        ClaimValue::Other(v) => {
            *budget += 1;
            json_val(v, budget, 1)?
        }
    })
}

fn json_val(v: &Value, budget: &mut usize, depth: usize) -> Option<Box<dyn Val>> {
    *budget = budget.checked_sub(1)?;
    if depth > MAX_CLAIM_DEPTH {
        return None;
    }
    Some(match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => number_val(n),
        Value::String(s) => Box::new(CelString::from(s.clone())),
        Value::Array(list) => {
            let items = list
                .iter()
                .map(|x| json_val(x, budget, depth + 1))
                .collect::<Option<Vec<_>>>()?;
            Box::new(CelList::from(items))
        }
        Value::Object(members) => {
            let map = members
                .iter()
                .map(|(k, x)| Some((CelMapKey::from(k.clone()), json_val(x, budget, depth + 1)?)))
                .collect::<Option<HashMap<_, _>>>()?;
            Box::new(CelMap::from(map))
        }
    })
}

/// Integers as `int` where they fit (so `claims.level >= 2` and `claims.n + 1` work),
/// else `uint`, else `double`.
fn number_val(n: &serde_json::Number) -> Box<dyn Val> {
    match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => Box::new(CelInt::from(i)),
        (None, Some(u)) => Box::new(CelUInt::from(u)),
        _ => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
    }
}

/// `request`: `method`, `path` and `headers` (lower-case name → first value; values that
/// are not UTF-8 are left out).
fn request_val<'a, H: Headers + ?Sized>(input: &RuleInput<'a, H>) -> Box<dyn Val + 'a> {
    let mut names: Vec<String> = Vec::new();
    input.headers.names(&mut |n| {
        if names.len() < MAX_HEADERS {
            let n = n.to_ascii_lowercase();
            if !names.contains(&n) {
                names.push(n);
            }
        }
    });
    let mut headers: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = HashMap::new();
    for name in names {
        let mut first: Option<&'a [u8]> = None;
        input.headers.for_each(&name, &mut |v| {
            first.get_or_insert(v);
        });
        if let Some(v) = first.and_then(|v| std::str::from_utf8(v).ok()) {
            headers.insert(CelMapKey::from(name), Box::new(CelString::from(v)));
        }
    }
    let mut request: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = HashMap::new();
    request.insert(
        CelMapKey::from("method"),
        Box::new(CelString::from(input.method)),
    );
    request.insert(
        CelMapKey::from("path"),
        Box::new(CelString::from(input.path)),
    );
    request.insert(CelMapKey::from("headers"), Box::new(CelMap::from(headers)));
    Box::new(CelMap::from(request))
}

fn string_map<'a, const N: usize>(pairs: [(&'a str, &'a str); N]) -> Box<dyn Val + 'a> {
    Box::new(CelMap::from(
        pairs
            .into_iter()
            .map(|(k, v)| {
                (
                    CelMapKey::from(k),
                    Box::new(CelString::from(v)) as Box<dyn Val + 'a>,
                )
            })
            .collect::<HashMap<_, _>>(),
    ))
}

#[cfg(test)]
mod tests;
