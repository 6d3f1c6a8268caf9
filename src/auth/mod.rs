//! Virtual API keys: who may call which model, how often, and for how much.
//!
//! Every route needs `Authorization: Bearer <key>` except [`PUBLIC_PATHS`]; `/admin/*`
//! needs the admin key. A client key's requests are limited per minute (RPM, TPM, with
//! [`gcra::Gcra`]) and by spend per UTC day and month, tallied from the ledger's costs.

pub mod cli;
pub mod gcra;
pub mod keys;
pub mod spend;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};

use crate::api::error::{ApiError, QuotaPeriod, RateLimitKind};
use crate::config::{AuthSettings, Secret};
use crate::ledger::{now_ms, Ledger, Record};
pub use keys::{KeyError, KeyInfo, KeySpec, KeyStore};
use spend::SpendTally;

/// The only routes served without a key: probes from load balancers and orchestrators.
pub const PUBLIC_PATHS: [&str; 2] = ["/health", "/ready"];
/// Routes under this prefix need the admin key.
pub const ADMIN_PREFIX: &str = "/admin/";
/// Rate limits are per minute, like OpenAI's.
const LIMIT_PERIOD: Duration = Duration::from_secs(60);
/// The usual rule of thumb for English text with BPE tokenizers; used only to charge TPM up
/// front, and corrected by the actual usage when the answer arrives.
pub const CHARS_PER_TOKEN: u64 = 4;

/// Which credential a path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Admin,
    Client,
}

pub fn access(path: &str) -> Access {
    if PUBLIC_PATHS.contains(&path) {
        Access::Public
    } else if path.starts_with(ADMIN_PREFIX) {
        Access::Admin
    } else {
        Access::Client
    }
}

/// A request the credentials check turned away, with the key when it was a valid one
/// (refused for its rate limit or budget), so the refusal's ledger record names it.
#[derive(Debug)]
pub struct Refusal {
    pub error: ApiError,
    pub key: Option<Arc<KeyInfo>>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal { error, key: None }
    }
}

/// The client key a request was made with; handlers find it in the request's extensions.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key: Arc<KeyInfo>,
}

#[derive(Debug, Default)]
struct KeyLimiters {
    rpm: Option<Arc<gcra::Gcra>>,
    tpm: Option<Arc<gcra::Gcra>>,
}

pub struct Auth {
    pub store: KeyStore,
    admin_key_hash: Option<String>,
    pub spend: SpendTally,
    limiters: Mutex<HashMap<String, Arc<KeyLimiters>>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

/// `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Auth {
    /// Opens the keys database and seeds this month's spend from the ledger.
    pub fn open(settings: &AuthSettings, ledger: Option<&Ledger>) -> Result<Auth, KeyError> {
        let auth = Auth {
            store: KeyStore::open(&settings.keys_db)?,
            admin_key_hash: settings.admin_key.as_ref().map(|k: &Secret| keys::hash_secret(k.expose())),
            spend: SpendTally::default(),
            limiters: Mutex::new(HashMap::new()),
        };
        if let Some(ledger) = ledger {
            let now = now_ms();
            let mut seeded = 0usize;
            let records = ledger.scan(spend::month_start_ms(now)).filter_map(|r| match r {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "Skipping an unreadable ledger record while seeding spend.");
                    None
                }
            });
            for r in records {
                seeded += 1;
                auth.spend.seed(std::iter::once(&r), now);
            }
            tracing::info!(records = seeded, "Spend per key seeded from the ledger.");
        }
        Ok(auth)
    }

    /// Checks the credential `path` needs. Client keys also pass their RPM limit and
    /// budgets here, so every endpoint is limited alike.
    pub fn authenticate(&self, path: &str, headers: &HeaderMap) -> Result<Option<Principal>, Refusal> {
        let access = access(path);
        if access == Access::Public {
            return Ok(None);
        }
        let token = bearer(headers).ok_or(ApiError::MissingApiKey)?;
        if access == Access::Admin {
            // Comparing digests, not secrets: timing reveals nothing about the key.
            return match &self.admin_key_hash {
                Some(h) if *h == keys::hash_secret(token) => Ok(None),
                _ => Err(ApiError::AdminKeyRequired.into()),
            };
        }
        let key = match self.store.lookup(token) {
            Ok(Some(k)) if !k.is_revoked() => k,
            Ok(Some(_)) => return Err(ApiError::RevokedApiKey.into()),
            Ok(None) => return Err(ApiError::InvalidApiKey.into()),
            Err(e) => {
                tracing::error!(error = %e, "Keys database lookup failed.");
                return Err(ApiError::Keys(e.to_string()).into());
            }
        };
        let key = Arc::new(key);
        match self.check_limits(&key) {
            Ok(()) => Ok(Some(Principal { key })),
            Err(error) => Err(Refusal { error, key: Some(key) }),
        }
    }

    /// RPM and budgets: what a valid key can still be refused for.
    fn check_limits(&self, key: &KeyInfo) -> Result<(), ApiError> {
        if let Some(rpm) = &self.limiters_of(key).rpm {
            rpm.check(1, Instant::now()).map_err(|wait| ApiError::RateLimited {
                kind: RateLimitKind::Requests,
                limit: rpm.capacity(),
                retry_after_secs: retry_secs(wait),
            })?;
        }
        self.check_budget(key, now_ms())
    }

    fn check_budget(&self, key: &KeyInfo, now: u64) -> Result<(), ApiError> {
        let spent = self.spend.spent(&key.spec.name, now);
        if let Some(limit) = key.spec.budget_daily {
            if spent.today >= limit {
                return Err(ApiError::QuotaExceeded {
                    period: QuotaPeriod::Daily,
                    limit,
                    spent: spent.today,
                    retry_after_secs: spend::secs_to_next_day(now),
                });
            }
        }
        if let Some(limit) = key.spec.budget_monthly {
            if spent.this_month >= limit {
                return Err(ApiError::QuotaExceeded {
                    period: QuotaPeriod::Monthly,
                    limit,
                    spent: spent.this_month,
                    retry_after_secs: spend::secs_to_next_month(now),
                });
            }
        }
        Ok(())
    }

    fn limiters_of(&self, key: &KeyInfo) -> Arc<KeyLimiters> {
        let mut map = self.limiters.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(key.spec.name.clone())
            .or_insert_with(|| {
                Arc::new(KeyLimiters {
                    rpm: key.spec.rpm.map(|r| Arc::new(gcra::Gcra::new(r, LIMIT_PERIOD))),
                    tpm: key.spec.tpm.map(|r| Arc::new(gcra::Gcra::new(r, LIMIT_PERIOD))),
                })
            })
            .clone()
    }

    /// Charges the estimated prompt tokens against the key's TPM limit. The returned
    /// [`Charge`] settles the request (spend, TPM correction) when its record is submitted.
    pub fn admit(self: &Arc<Self>, principal: &Principal, estimated_tokens: u64) -> Result<Charge, ApiError> {
        let tpm = self.limiters_of(&principal.key).tpm.clone();
        if let Some(g) = &tpm {
            if estimated_tokens > g.capacity() {
                return Err(ApiError::RateLimited {
                    kind: RateLimitKind::RequestTooLarge { requested: estimated_tokens },
                    limit: g.capacity(),
                    retry_after_secs: LIMIT_PERIOD.as_secs(),
                });
            }
            g.check(estimated_tokens, Instant::now()).map_err(|wait| ApiError::RateLimited {
                kind: RateLimitKind::Tokens,
                limit: g.capacity(),
                retry_after_secs: retry_secs(wait),
            })?;
        }
        Ok(Charge { auth: self.clone(), key: principal.key.spec.name.clone(), tpm, estimated_tokens })
    }
}

fn retry_secs(wait: Duration) -> u64 {
    wait.as_millis().div_ceil(1000).max(1) as u64
}

/// What a request charged up front; settled once with its final record.
#[derive(Clone)]
pub struct Charge {
    auth: Arc<Auth>,
    key: String,
    tpm: Option<Arc<gcra::Gcra>>,
    estimated_tokens: u64,
}

impl Charge {
    /// Adds the record's cost to the key's spend and corrects TPM by the actual usage
    /// (a failed request used no tokens, so the estimate is refunded).
    pub fn settle(&self, rec: &Record) {
        self.auth.spend.add(&self.key, rec.cost_usd, rec.ts_ms, now_ms());
        if let Some(g) = &self.tpm {
            let actual = rec.input_tokens.saturating_add(rec.output_tokens);
            let delta = i64::try_from(actual).unwrap_or(i64::MAX) - i64::try_from(self.estimated_tokens).unwrap_or(0);
            g.adjust(delta, Instant::now());
        }
    }
}

/// A rough token count of `chars` characters of prompt, for the up-front TPM charge.
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(CHARS_PER_TOKEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_probes_are_public() {
        assert_eq!(access("/health"), Access::Public);
        assert_eq!(access("/ready"), Access::Public);
        assert_eq!(access("/admin/reload"), Access::Admin);
        assert_eq!(access("/v1/chat/completions"), Access::Client);
        assert_eq!(access("/health/"), Access::Client);
        assert_eq!(access("/nope"), Access::Client);
    }

    #[test]
    fn bearer_tokens_are_parsed() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, header::HeaderValue::from_static("bearer sk-x"));
        assert_eq!(bearer(&h), Some("sk-x"));
        h.insert(header::AUTHORIZATION, header::HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
