//! Virtual API keys in their own sled database (tree `keys`).
//!
//! Only the sha256 of a secret is stored: the `keys` tree maps the hex digest to the
//! key's JSON. The secret (`sk-triage-` + 256 random bits) is shown once, at creation.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Secret;

/// Recognisable in logs, configs and secret scanners, like OpenAI's `sk-`.
pub const KEY_PREFIX: &str = "sk-triage-";
/// 256 bits: far beyond guessing, and the same strength as the sha256 that stores it.
const SECRET_BYTES: usize = 32;
/// How much of the secret `keys list` shows so an operator can tell keys apart; 4 hex
/// characters (16 bits) identify a key without weakening it.
const SHOWN_SECRET_CHARS: usize = 4;
const KEYS_TREE: &str = "keys";
/// Key names end up in ledger records and metrics labels.
const MAX_NAME_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot open the keys database at {path}: {source} (sled allows one process at a time: if the gateway is running, use its /admin/keys endpoint)")]
    Open { path: PathBuf, source: sled::Error },
    #[error("keys database error: {0}")]
    Storage(#[from] sled::Error),
    #[error("corrupt key entry: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("a key named {0:?} already exists")]
    Duplicate(String),
    #[error("no key named {0:?}")]
    NotFound(String),
    #[error("invalid key name {0:?}: use 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("invalid {field}: {message}")]
    BadLimit { field: &'static str, message: String },
}

/// What an operator sets when creating a key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    pub name: String,
    /// Defaults to the key's name.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Virtual models and experts this key may call; empty: all.
    #[serde(default)]
    pub models: Vec<String>,
    /// Spend limits in the ledger's currency (US dollars).
    #[serde(default)]
    pub budget_daily: Option<f64>,
    #[serde(default)]
    pub budget_monthly: Option<f64>,
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens (prompt + completion) per minute.
    #[serde(default)]
    pub tpm: Option<u32>,
}

/// A stored key: the spec plus bookkeeping, never the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    #[serde(flatten)]
    pub spec: KeySpec,
    /// `sk-triage-` and the last few characters, to tell keys apart.
    pub hint: String,
    pub created_ms: u64,
    #[serde(default)]
    pub revoked_ms: Option<u64>,
}

impl KeyInfo {
    pub fn tenant(&self) -> &str {
        self.spec.tenant.as_deref().unwrap_or(&self.spec.name)
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.spec.models.is_empty() || self.spec.models.iter().any(|m| m == model)
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_ms.is_some()
    }
}

/// The handle on the keys database; clones share it.
#[derive(Clone)]
pub struct KeyStore {
    tree: sled::Tree,
    db: sled::Db,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").finish_non_exhaustive()
    }
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_spec(spec: &KeySpec) -> Result<(), KeyError> {
    if !valid_name(&spec.name) {
        return Err(KeyError::BadName(spec.name.clone()));
    }
    if let Some(t) = &spec.tenant {
        if !valid_name(t) {
            return Err(KeyError::BadLimit { field: "tenant", message: format!("{t:?} is not a valid name") });
        }
    }
    for (field, v) in [("budget_daily", spec.budget_daily), ("budget_monthly", spec.budget_monthly)] {
        if let Some(v) = v {
            if !(v.is_finite() && v >= 0.0) {
                return Err(KeyError::BadLimit { field, message: format!("must be a finite number >= 0, got {v}") });
            }
        }
    }
    for (field, v) in [("rpm", spec.rpm), ("tpm", spec.tpm)] {
        if v == Some(0) {
            return Err(KeyError::BadLimit { field, message: "must be at least 1 (omit it for no limit)".into() });
        }
    }
    Ok(())
}

impl KeyStore {
    pub fn open(path: &Path) -> Result<KeyStore, KeyError> {
        let db = sled::open(path).map_err(|source| KeyError::Open { path: path.to_path_buf(), source })?;
        Ok(KeyStore { tree: db.open_tree(KEYS_TREE)?, db })
    }

    /// Stores a new key and returns its secret, which exists nowhere else from now on.
    pub fn create(&self, spec: KeySpec) -> Result<(Secret, KeyInfo), KeyError> {
        check_spec(&spec)?;
        if self.find(&spec.name)?.is_some() {
            return Err(KeyError::Duplicate(spec.name));
        }
        let bytes: [u8; SECRET_BYTES] = rand::random();
        let secret = format!("{KEY_PREFIX}{}", hex::encode(bytes));
        let hint = format!("{KEY_PREFIX}...{}", &secret[secret.len() - SHOWN_SECRET_CHARS..]);
        let info = KeyInfo { spec, hint, created_ms: crate::ledger::now_ms(), revoked_ms: None };
        self.tree.insert(hash_secret(&secret), serde_json::to_vec(&info)?)?;
        self.db.flush()?;
        Ok((Secret::new(secret), info))
    }

    /// The key a presented secret belongs to, revoked or not.
    pub fn lookup(&self, secret: &str) -> Result<Option<KeyInfo>, KeyError> {
        match self.tree.get(hash_secret(secret))? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Every key, in creation order.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let mut out = Vec::new();
        for entry in self.tree.iter() {
            let (_, v) = entry?;
            out.push(serde_json::from_slice::<KeyInfo>(&v)?);
        }
        out.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then_with(|| a.spec.name.cmp(&b.spec.name)));
        Ok(out)
    }

    /// Marks a key revoked; it stays listed (and its spend in the ledger stays attributed).
    pub fn revoke(&self, name: &str) -> Result<KeyInfo, KeyError> {
        let Some((hash, mut info)) = self.find(name)? else {
            return Err(KeyError::NotFound(name.to_string()));
        };
        if info.revoked_ms.is_none() {
            info.revoked_ms = Some(crate::ledger::now_ms());
            self.tree.insert(hash, serde_json::to_vec(&info)?)?;
            self.db.flush()?;
        }
        Ok(info)
    }

    /// Keys are few and created rarely; a scan by name keeps one tree and no index to drift.
    fn find(&self, name: &str) -> Result<Option<(sled::IVec, KeyInfo)>, KeyError> {
        for entry in self.tree.iter() {
            let (k, v) = entry?;
            let info: KeyInfo = serde_json::from_slice(&v)?;
            if info.spec.name == name {
                return Ok(Some((k, info)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_stored_hashed_and_found_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let (secret, info) = store.create(KeySpec { name: "a".into(), ..KeySpec::default() }).unwrap();
        assert!(secret.expose().starts_with(KEY_PREFIX));
        assert_eq!(secret.expose().len(), KEY_PREFIX.len() + 2 * SECRET_BYTES);
        assert_eq!(store.lookup(secret.expose()).unwrap().unwrap(), info);
        for entry in store.tree.iter() {
            let (k, v) = entry.unwrap();
            assert_eq!(k.as_ref(), hash_secret(secret.expose()).as_bytes());
            assert!(!String::from_utf8_lossy(&v).contains(secret.expose()));
        }
        assert!(matches!(
            store.create(KeySpec { name: "a".into(), ..KeySpec::default() }),
            Err(KeyError::Duplicate(_))
        ));
        assert!(store.revoke("a").unwrap().is_revoked());
        assert!(matches!(store.revoke("b"), Err(KeyError::NotFound(_))));
    }
}
