//! The configured issuers and how a token picks one: by its (unverified) `iss`, exactly;
//! an issuer without `issuer` takes tokens whatever their `iss`. Only the picked
//! issuer's keys are ever tried.

use std::collections::HashMap;
use std::sync::Arc;

use crate::alg::AlgSet;
use crate::config::{IssuerConfig, KeySourceConfig};
use crate::decision::DenyReason;
use crate::keys::IssuerKeys;
use crate::metrics::IssuerMetrics;
use crate::token::jws::{ClaimSet, ClaimValue};

/// One issuer: its policy and its keys.
#[derive(Debug)]
pub struct Issuer {
    /// Position in the config.
    pub index: usize,
    /// Policy.
    pub config: IssuerConfig,
    /// Keys.
    pub keys: Arc<IssuerKeys>,
    /// Fetch and miss counters.
    pub metrics: IssuerMetrics,
}

/// Every issuer, indexed for picking.
#[derive(Debug)]
pub struct Issuers {
    list: Vec<Issuer>,
    by_iss: HashMap<String, usize>,
    wildcard: Option<usize>,
    algorithms: AlgSet,
}

// === impl Issuer ===

impl Issuer {
    /// The shortest `miss_refetch_interval` of its remote JWKS sources, in seconds (None
    /// without one): how long an unknown-kid denial may be remembered.
    pub fn miss_refetch_secs(&self) -> Option<i64> {
        self.config
            .key_sources
            .iter()
            .filter_map(|s| match s {
                KeySourceConfig::JwksUri { settings, .. }
                | KeySourceConfig::Discovery { settings, .. } => Some(
                    i64::try_from(settings.miss_refetch_interval.as_secs()).unwrap_or(i64::MAX),
                ),
                _ => None,
            })
            .min()
    }
}

// === impl Issuers ===

impl Issuers {
    /// Indexes `list` (in config order).
    pub fn new(list: Vec<Issuer>) -> Self {
        let mut by_iss = HashMap::new();
        let mut wildcard = None;
        let mut algorithms = AlgSet::EMPTY;
        for i in &list {
            algorithms = algorithms.union(i.config.algorithms);
            match &i.config.issuer {
                Some(iss) => {
                    by_iss.insert(iss.clone(), i.index);
                }
                None => wildcard = Some(i.index),
            }
        }
        Self {
            list,
            by_iss,
            wildcard,
            algorithms,
        }
    }

    /// Every algorithm some issuer accepts (checked before the issuer is known).
    pub fn algorithms(&self) -> AlgSet {
        self.algorithms
    }

    /// How many issuers there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True without issuers (a config of sessions only).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// All issuers, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Issuer> {
        self.list.iter()
    }

    /// The issuer at `index`.
    pub fn get(&self, index: usize) -> Option<&Issuer> {
        self.list.get(index)
    }

    /// Picks the issuer for these (unverified) claims.
    pub fn pick(&self, claims: &ClaimSet<'_>) -> Result<&Issuer, DenyReason> {
        let index = match claims.get("iss") {
            Some(ClaimValue::Str(iss)) => self.by_iss.get(&**iss).copied().or(self.wildcard),
            None => self.wildcard,
            Some(_) => return Err(DenyReason::Malformed),
        };
        index
            .and_then(|i| self.list.get(i))
            .ok_or(DenyReason::BadIssuer)
    }
}
