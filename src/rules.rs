//! Route rules (SPEC §12): CEL expressions over `claims`, `request` and `token`, compiled
//! once when the config loads and evaluated per request on valid tokens only, after the
//! scopes. A rule that errors (a missing claim, a type mismatch) or yields anything but
//! `true` fails.
//!
//! The cel crate bounds neither steps nor time, so cost is bounded here:
//! - at load, only the standard operators, the macros (`has`, `all`, `exists`,
//!   `exists_one`, `map`, `filter`) and a short list of functions are accepted, a
//!   comprehension may not hold another one (its cost is then at most the product of
//!   two lists, `a.all(x, x in b)`, which the caps below bound), and the only names are
//!   `claims`, `request`, `token` and the macros' own variables;
//! - at run time the claims fed to rules are capped ([`MAX_CLAIM_NODES`] values,
//!   [`MAX_CLAIM_DEPTH`] levels, strings of [`MAX_CLAIM_STRING_BYTES`]): a token beyond
//!   the caps fails every rule rather than being cut (a cut list could turn
//!   `!('x' in list)` true). Only the claims some rule names are converted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
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
/// Longest string (value or member name) of a claim fed to rules.
pub const MAX_CLAIM_STRING_BYTES: usize = 4096;
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
    /// It names `request` (built per request only when a rule does).
    uses_request: bool,
    /// The headers it reads from `request.headers`.
    headers: NameUse,
    /// The claims it reads.
    claims: NameUse,
    /// It names `token`.
    uses_token: bool,
}

/// The claims of one verified token as rules see them, and the results of the rules
/// that read only the token (kept with the cached principal: such a rule runs once per
/// token, not per request).
#[derive(Debug)]
pub struct RuleClaims {
    values: Option<Box<dyn Val>>,
    /// Heap bytes of `values`, roughly: what the token cache weighs.
    size: usize,
    /// Per memo slot ([`RouteRules`]): 0 not yet run, 1 true, 2 false.
    memo: Box<[AtomicU8]>,
}

/// One route's rules, each with its memo slot when it reads only the token (not
/// `request`).
#[derive(Debug, Clone)]
pub struct RouteRules {
    rules: Vec<(Arc<Rule>, Option<usize>)>,
    /// The headers the rules that read `request` read (those rules never have a slot).
    headers: NameUse,
    /// Some rule reads `request`.
    reads_request: bool,
    /// Some rule reads `token`.
    reads_token: bool,
}

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
        let (mut headers, mut claims) = (NameUse::none(), NameUse::none());
        name_use(program.expression(), Target::Headers, &mut headers)
            .and_then(|()| name_use(program.expression(), Target::Claims, &mut claims))
            .map_err(|(id, why)| {
                let (line, column) = at(id);
                format!("line {line}, column {column}: {why}")
            })?;
        let references = program.references();
        let (uses_request, uses_token) = (
            references.has_variable("request"),
            references.has_variable("token"),
        );
        Ok(Rule {
            source: source.into(),
            program,
            uses_request,
            headers,
            claims,
            uses_token,
        })
    }

    /// The claims the rule reads (only those are converted for rules).
    pub fn claims_read(&self) -> &NameUse {
        &self.claims
    }
}

// === impl RouteRules ===

impl RouteRules {
    /// `rules`, numbering the memo slots of those that read only the token from `next`
    /// on (advancing it).
    pub fn new(rules: &[Arc<Rule>], next: &mut usize) -> Self {
        let mut headers = NameUse::none();
        for r in rules.iter().filter(|r| r.uses_request) {
            headers.merge(&r.headers);
        }
        let rules: Vec<(Arc<Rule>, Option<usize>)> = rules
            .iter()
            .map(|r| {
                let slot = (!r.uses_request).then(|| {
                    *next += 1;
                    *next - 1
                });
                (r.clone(), slot)
            })
            .collect();
        Self {
            reads_request: rules.iter().any(|(r, _)| r.uses_request),
            reads_token: rules.iter().any(|(r, _)| r.uses_token),
            headers,
            rules,
        }
    }

    /// No rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// True only when every rule evaluates to `true` for these claims and this request.
    /// A rule that reads only the token answers from the memo after its first run; the
    /// others share one set of variables, built only when one has to run. A request
    /// whose headers cannot be given to the rules one way only (see [`request_val`])
    /// fails every rule that reads it.
    pub fn all_allow<H: Headers + ?Sized>(
        &self,
        claims: &RuleClaims,
        input: &RuleInput<'_, H>,
    ) -> bool {
        let Some(values) = claims.values.as_deref() else {
            return false;
        };
        let known = |slot: Option<usize>| slot.and_then(|i| claims.memo(i));
        let mut pending = false;
        for (_, slot) in &self.rules {
            match known(*slot) {
                Some(false) => return false,
                Some(true) => {}
                None => pending = true,
            }
        }
        if !pending {
            return true;
        }
        let request = match self.reads_request {
            true => match request_val(input, &self.headers) {
                Some(r) => Some(r),
                None => return false,
            },
            false => None,
        };
        let vars = Vars {
            claims: values,
            request,
            token: self
                .reads_token
                .then(|| string_map([("issuer", input.issuer), ("key", input.key)])),
        };
        let mut cx = Context::with_env(ENV.clone());
        cx.set_variable_resolver(&vars);
        self.rules
            .iter()
            .filter(|(_, slot)| known(*slot).is_none())
            .all(|(r, slot)| {
                let ok = matches!(r.program.execute(&cx), Ok(cel::Value::Bool(true)));
                if let Some(i) = slot {
                    claims.remember(*i, ok);
                }
                ok
            })
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
    /// The claims of a verified token that rules read (`wanted`: see
    /// [`Rule::claims_read`]), or (beyond the caps) a value no rule accepts; room for
    /// `memo_slots` remembered results.
    pub fn of(claims: &ClaimSet<'_>, wanted: &NameUse, memo_slots: usize) -> Self {
        let memo = (0..memo_slots).map(|_| AtomicU8::new(0)).collect();
        let (mut budget, mut bytes) = (MAX_CLAIM_NODES, 0);
        let mut map = HashMap::new();
        for (name, value) in claims.members().filter(|(n, _)| wanted.wants(n)) {
            let Some(v) = claim_val(value, &mut budget, &mut bytes) else {
                return Self {
                    values: None,
                    size: 0,
                    memo,
                };
            };
            bytes += name.len();
            map.insert(CelMapKey::from(name.to_string()), v);
        }
        Self {
            values: Some(Box::new(CelMap::from(map))),
            // A boxed value with its map or list slot is about 64 bytes.
            size: (MAX_CLAIM_NODES - budget) * 64 + bytes,
            memo,
        }
    }

    fn memo(&self, slot: usize) -> Option<bool> {
        match self.memo.get(slot)?.load(Ordering::Relaxed) {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }

    fn remember(&self, slot: usize, result: bool) {
        if let Some(m) = self.memo.get(slot) {
            m.store(if result { 1 } else { 2 }, Ordering::Relaxed);
        }
    }

    /// Rough heap bytes, for the token cache's weight.
    pub fn heap_size(&self) -> usize {
        self.size + self.memo.len()
    }
}

/// The variables of one request's evaluations (`request` and `token` only when a rule
/// names them).
struct Vars<'a> {
    claims: &'a dyn Val,
    request: Option<Box<dyn Val + 'a>>,
    token: Option<Box<dyn Val + 'a>>,
}

impl VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "claims" => Some(CowVal::Borrowed(self.claims)),
            "request" => self.request.as_deref().map(CowVal::Borrowed),
            "token" => self.token.as_deref().map(CowVal::Borrowed),
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

/// A claim value as a rule sees it, spending `budget` (values) and counting string
/// `bytes`; `None` beyond the caps.
fn claim_val(
    value: &ClaimValue<'_>,
    budget: &mut usize,
    bytes: &mut usize,
) -> Option<Box<dyn Val>> {
    *budget = budget.checked_sub(1)?;
    Some(match value {
        ClaimValue::Null => Box::new(CelNull),
        ClaimValue::Bool(b) => Box::new(CelBool::from(*b)),
        ClaimValue::Number(n) => number_val(n),
        ClaimValue::Str(s) if s.len() <= MAX_CLAIM_STRING_BYTES => {
            *bytes += s.len();
            Box::new(CelString::from(s.to_string()))
        }
        ClaimValue::Str(_) => return None,
        ClaimValue::Other(v) => {
            *budget += 1;
            json_val(v, budget, bytes, 1)?
        }
    })
}

fn json_val(
    v: &Value,
    budget: &mut usize,
    bytes: &mut usize,
    depth: usize,
) -> Option<Box<dyn Val>> {
    *budget = budget.checked_sub(1)?;
    if depth > MAX_CLAIM_DEPTH {
        return None;
    }
    Some(match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => number_val(n),
        Value::String(s) if s.len() <= MAX_CLAIM_STRING_BYTES => {
            *bytes += s.len();
            Box::new(CelString::from(s.clone()))
        }
        Value::String(_) => return None,
        Value::Array(list) => {
            let items = list
                .iter()
                .map(|x| json_val(x, budget, bytes, depth + 1))
                .collect::<Option<Vec<_>>>()?;
            Box::new(CelList::from(items))
        }
        Value::Object(members) => {
            let map = members
                .iter()
                .map(|(k, x)| {
                    (k.len() <= MAX_CLAIM_STRING_BYTES).then_some(())?;
                    *bytes += k.len();
                    Some((
                        CelMapKey::from(k.clone()),
                        json_val(x, budget, bytes, depth + 1)?,
                    ))
                })
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

/// The members of a map that rules read: those named by a literal (`claims.groups`,
/// `request.headers['x-tenant']`, `has(request.headers.accept)`), or all of them (the map
/// used any other way: `'x' in claims`, `claims[name]`, `size(request)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameUse {
    /// Only these.
    Names(Vec<String>),
    /// Every member.
    All,
}

/// The map a [`NameUse`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Claims,
    Headers,
}

impl NameUse {
    fn none() -> Self {
        NameUse::Names(Vec::new())
    }

    /// Adds what `other` reads.
    pub fn merge(&mut self, other: &NameUse) {
        match (&mut *self, other) {
            (NameUse::All, _) => {}
            (_, NameUse::All) => *self = NameUse::All,
            (NameUse::Names(mine), NameUse::Names(theirs)) => {
                for n in theirs {
                    if !mine.contains(n) {
                        mine.push(n.clone());
                    }
                }
            }
        }
    }

    fn wants(&self, name: &str) -> bool {
        match self {
            NameUse::All => true,
            NameUse::Names(list) => list.iter().any(|n| n == name),
        }
    }
}

impl Target {
    /// `e` is the map itself.
    fn is(self, e: &IdedExpr) -> bool {
        match self {
            Target::Claims => matches!(&e.expr, Expr::Ident(n) if n == "claims"),
            Target::Headers => matches!(&e.expr, Expr::Select(s) if s.field == "headers"
                && matches!(&s.operand.expr, Expr::Ident(n) if n == "request")),
        }
    }

    /// Adds member `name` to `out`; header names are lower case.
    fn add(self, out: &mut NameUse, id: u64, name: &str) -> Result<(), (u64, String)> {
        if self == Target::Headers && name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err((
                id,
                format!("request.headers has lower-case names: {name:?} would never be found"),
            ));
        }
        out.merge(&NameUse::Names(vec![name.to_string()]));
        Ok(())
    }
}

/// Collects into `out` the members of `target` that `e` reads.
fn name_use(e: &IdedExpr, target: Target, out: &mut NameUse) -> Result<(), (u64, String)> {
    match &e.expr {
        Expr::Call(c) if c.func_name == "_[_]" && c.args.len() == 2 && target.is(&c.args[0]) => {
            if let Expr::Literal(LiteralValue::String(name)) = &c.args[1].expr {
                return target.add(out, c.args[1].id, name.inner());
            }
            *out = NameUse::All;
            name_use(&c.args[1], target, out)
        }
        Expr::Select(s) if target.is(&s.operand) => target.add(out, e.id, &s.field),
        _ if target.is(e) => {
            *out = NameUse::All;
            Ok(())
        }
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                name_use(t, target, out)?;
            }
            c.args.iter().try_for_each(|a| name_use(a, target, out))
        }
        Expr::Select(s) => match &s.operand.expr {
            // `request.method`, `request.path`: no header.
            Expr::Ident(n) if n == "request" && target == Target::Headers => Ok(()),
            _ => name_use(&s.operand, target, out),
        },
        // `request` as a whole holds every header.
        Expr::Ident(n) if n == "request" && target == Target::Headers => {
            *out = NameUse::All;
            Ok(())
        }
        Expr::Comprehension(c) => [
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ]
        .into_iter()
        .try_for_each(|x| name_use(x, target, out)),
        Expr::List(l) => l.elements.iter().try_for_each(|x| name_use(x, target, out)),
        Expr::Map(m) => m.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(me) => {
                name_use(&me.key, target, out)?;
                name_use(&me.value, target, out)
            }
            EntryExpr::StructField(f) => name_use(&f.value, target, out),
        }),
        Expr::Struct(_) | Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Ok(()),
    }
}

/// `request`: `method`, `path` and `headers` (lower-case name → value), with only the
/// headers some rule reads. `None` when a header rules read cannot be given one way
/// only: it appears more than once (the app may read either value), its value is not
/// UTF-8, or (all headers read) there are more than [`MAX_HEADERS`] names.
fn request_val<'a, H: Headers + ?Sized>(
    input: &RuleInput<'a, H>,
    wanted: &NameUse,
) -> Option<Box<dyn Val + 'a>> {
    let mut all: Vec<String> = Vec::new();
    let names: &[String] = match wanted {
        NameUse::Names(list) => list,
        NameUse::All => {
            let mut count = 0;
            input.headers.names(&mut |n| {
                count += 1;
                let n = n.to_ascii_lowercase();
                if !all.contains(&n) {
                    all.push(n);
                }
            });
            if all.len() > MAX_HEADERS || count > MAX_HEADERS {
                return None;
            }
            &all
        }
    };
    let mut headers: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = HashMap::new();
    for name in names {
        let (mut first, mut n): (Option<&'a [u8]>, usize) = (None, 0);
        input.headers.for_each(name, &mut |v| {
            n += 1;
            first.get_or_insert(v);
        });
        match (first, n) {
            (None, _) => {}
            (Some(v), 1) => {
                let v = std::str::from_utf8(v).ok()?;
                headers.insert(CelMapKey::from(name.clone()), Box::new(CelString::from(v)));
            }
            _ => return None,
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
    Some(Box::new(CelMap::from(request)))
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
