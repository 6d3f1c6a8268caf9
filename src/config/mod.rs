//! Configuration: the TOML file (`raw`), validated into the types the gateway runs on.
//!
//! Loading is all-or-nothing: a file either becomes a complete [`Config`] or a
//! [`ConfigError`] that names the file, the line and column, the key path and what was
//! expected. Nothing half-valid is ever returned.

mod policy;
mod raw;
mod secret;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use policy::{
    NotHot, RouterRef, Split, TopP, Uncertainty, VirtualModelConfig, CATCH_ALL, DEFAULT_PROMOTE_TIMEOUT_MS,
};
pub use raw::Capability;
use raw::{RawConfig, RawExpert, RawExpertKind};
pub use secret::Secret;

/// The config served by `triage serve` without `--config`: local experts only, no keys.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../policies/default.toml");
/// Name shown in errors for the embedded default.
pub const EMBEDDED_ORIGIN: &str = "<embedded policies/default.toml>";

/// Loopback by default: exposing a gateway that holds provider keys is an explicit choice.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// OpenAI accepts large multimodal bodies; 4 MiB covers long chats without letting one
/// client pin unbounded memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Long enough for a typical streamed answer to finish after SIGTERM, short enough for
/// Kubernetes' default 30 s termination grace period.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 25_000;
/// Three attempts ride out one flaky backend plus one fallback without tripling tail latency.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_BACKOFF_BASE_MS: u64 = 25;
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 1_000;
/// Five consecutive failures is well past noise for a healthy backend.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
pub const DEFAULT_BREAKER_COOLDOWN_MS: u64 = 30_000;
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Time to first byte covers queueing and prompt processing upstream, which can be long
/// for big prompts on busy servers.
pub const DEFAULT_FIRST_BYTE_TIMEOUT_MS: u64 = 60_000;
/// Long generations stream for minutes; the total bound only stops runaway requests.
pub const DEFAULT_TOTAL_TIMEOUT_MS: u64 = 600_000;
/// A small queue keeps waiting time bounded; beyond it a client gets 429 or the next expert.
pub const DEFAULT_LOCAL_QUEUE_LIMIT: usize = 8;
/// Where local model files named by a relative path live, unless `TRIAGE_MODELS_DIR` says.
pub const DEFAULT_MODELS_DIR: &str = "models";
pub const MODELS_DIR_ENV: &str = "TRIAGE_MODELS_DIR";
/// Where trained routers live (`routers/<name>/router.toml`), relative to the working directory.
pub const DEFAULT_ROUTERS_DIR: &str = "routers";
pub const ROUTERS_DIR_ENV: &str = "TRIAGE_ROUTERS_DIR";
/// OpenAI's own limit on `messages`; a longer list is a mistake or an attack on parsing.
pub const DEFAULT_MAX_MESSAGES: usize = 2_048;
/// About 256k tokens at ~4 characters a token: above the context window of nearly every
/// served model, so only runaway or hostile prompts hit it before the expert would.
pub const DEFAULT_MAX_PROMPT_CHARS: usize = 1_048_576;
/// The largest output any current model offers; a bigger `max_tokens` is a mistake, and it
/// would let one request reserve a tenant's whole token budget.
pub const DEFAULT_MAX_TOKENS: u64 = 131_072;
/// Fits real clients' headers (a JWT, a few cookies, tracing) with room to spare; nginx
/// uses 8 KiB buffers for the same reason.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Half the common default open-files limit (1024), leaving descriptors for upstream
/// connections, the ledger and model files.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Any real client sends its headers in well under a second; slowloris clients trickle
/// them to hold connections. 10 s is generous to slow mobile links and short for attackers.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// A 4 MiB body at 1 Mbit/s takes ~35 s; beyond a minute the client is stalling on purpose.
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Io { file: String, source: std::io::Error },
    #[error("{file}:{line}:{column}: at `{path}`: {message}")]
    Parse { file: String, line: usize, column: usize, path: String, message: String },
    #[error("{file}: at `{path}`: {message}")]
    Invalid { file: String, path: String, message: String },
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The files this came from (or [`EMBEDDED_ORIGIN`]), for messages.
    pub origin: String,
    /// Hash of the files' names and contents and of the trained routers' versions: the
    /// policy version every record carries.
    pub version: String,
    /// Where `router = "name"` finds `name/router.toml`.
    pub routers_dir: PathBuf,
    /// The request ledger, when `[ledger]` is set. Read at start only.
    pub ledger: Option<crate::ledger::LedgerConfig>,
    /// Virtual API keys, or why authentication is off. Read at start only.
    pub auth: AuthMode,
    /// Read at start only: the server's accept loop is built once.
    pub limits: Limits,
    pub server: ServerConfig,
    pub resilience: Resilience,
    pub experts: Vec<ExpertConfig>,
    pub models: Vec<VirtualModelConfig>,
    /// Memory tiering of local experts, when `[tiers]` is set (else all are hot from start).
    pub tiers: Option<TiersConfig>,
}

/// A swap of a 135M model from RAM takes ~100 ms; holding an expert at least ten times
/// that long caps the share of time two alternating experts spend swapping at ~10%.
pub const DEFAULT_MIN_RESIDENCY_MS: u64 = 1_000;
/// Demand is a request rate decayed with this half-life: long enough that a burst of
/// traffic an expert got a minute ago still counts, short enough to follow a policy change.
pub const DEFAULT_DEMAND_HALF_LIFE_MS: u64 = 60_000;

/// `[tiers]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TiersConfig {
    pub hot_bytes: u64,
    pub warm_bytes: u64,
    pub min_residency: Duration,
    pub demand_half_life: Duration,
}

/// The lowest tier a local expert may fall to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MinTier {
    #[default]
    Cold,
    Warm,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
}

/// The sections a running gateway reads at start only, as it started with them.
#[derive(Debug, Clone, PartialEq)]
pub struct StartOnly {
    pub server: ServerConfig,
    pub limits: Limits,
    pub auth: AuthMode,
    pub ledger: Option<crate::ledger::LedgerConfig>,
}

impl StartOnly {
    pub fn of(c: &Config) -> Self {
        Self { server: c.server.clone(), limits: c.limits.clone(), auth: c.auth.clone(), ledger: c.ledger.clone() }
    }

    /// The sections `new` sets differently from these. `[server] listen` is left out:
    /// `--listen` overrides it at start, so the files need not agree with the running address.
    pub fn changed_in(&self, new: &Config) -> Vec<&'static str> {
        let server = ServerConfig { listen: self.server.listen, ..new.server.clone() };
        [
            ("[server]", self.server != server),
            ("[limits]", self.limits != new.limits),
            ("[auth]", self.auth != new.auth),
            ("[ledger]", self.ledger != new.ledger),
        ]
        .into_iter()
        .filter_map(|(section, changed)| changed.then_some(section))
        .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuthMode {
    /// Every request is served without a key; `reason` says which config made it so.
    Off {
        reason: &'static str,
    },
    On(AuthSettings),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthSettings {
    /// The sled database with the `keys` tree.
    pub keys_db: PathBuf,
    /// The key for `/admin/*`; None: admin routes refuse every request.
    pub admin_key: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_messages: usize,
    pub max_prompt_chars: usize,
    pub max_tokens: u64,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_messages: DEFAULT_MAX_MESSAGES,
            max_prompt_chars: DEFAULT_MAX_PROMPT_CHARS,
            max_tokens: DEFAULT_MAX_TOKENS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Duration::from_millis(DEFAULT_HEADER_READ_TIMEOUT_MS),
            body_read_timeout: Duration::from_millis(DEFAULT_BODY_READ_TIMEOUT_MS),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Resilience {
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExpertConfig {
    pub name: String,
    pub capabilities: Vec<Capability>,
    pub price: Price,
    pub kind: ExpertKind,
}

impl ExpertConfig {
    pub fn supports(&self, cap: Capability) -> bool {
        self.capabilities.contains(&cap)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExpertKind {
    OpenAi(RemoteConfig),
    Local(LocalSettings),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub total: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RemoteConfig {
    /// Without a trailing slash, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<Secret>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub timeouts: Timeouts,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LocalSettings {
    pub path: PathBuf,
    pub arch: Option<String>,
    pub device: String,
    pub context_length: Option<usize>,
    pub threads: Option<usize>,
    pub queue_limit: usize,
    /// One tenant's share of `queue_limit`; None: half of it, rounded up.
    pub tenant_queue_limit: Option<usize>,
    pub weights: Option<String>,
    pub tokenizer: Option<PathBuf>,
    pub chat_template: Option<String>,
    pub timeouts: Timeouts,
    /// With `[tiers]`: loaded at start and never evicted.
    pub pin: bool,
    pub min_tier: MinTier,
}

/// One config file's text and the name errors should use for it.
pub struct Source {
    pub file: String,
    pub text: String,
}

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    load_paths(&[path.to_path_buf()])
}

/// Reads the files (a directory stands for its `*.toml` files, sorted) and validates
/// them as one config: experts and virtual models from all files, `[server]`,
/// `[resilience]` and `[routing]` from at most one.
pub fn load_paths(paths: &[PathBuf]) -> Result<Config, ConfigError> {
    let mut sources = Vec::new();
    for path in expand(paths)? {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io { file: file.clone(), source })?;
        sources.push(Source { file, text });
    }
    load_sources(&sources)
}

/// The files `load_paths` reads, in order.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigError> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let io = |source| ConfigError::Io { file: path.display().to_string(), source };
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(io)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// The embedded default config.
pub fn embedded_default() -> Result<Config, ConfigError> {
    load_str(EMBEDDED_DEFAULT, EMBEDDED_ORIGIN)
}

/// Parses and validates config text; `origin` names it in errors.
pub fn load_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    load_sources(&[Source { file: origin.to_string(), text: text.to_string() }])
}

/// Parses and validates several files as one config.
pub fn load_sources(sources: &[Source]) -> Result<Config, ConfigError> {
    load_sources_with_env(sources, &|k| std::env::var(k).ok())
}

fn load_sources_with_env(sources: &[Source], env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut parsed = Vec::with_capacity(sources.len());
    for src in sources {
        parsed.push((src.file.as_str(), parse(&src.text, &src.file)?));
    }
    Validator { env }.config(parsed, version_hash(sources))
}

/// Identifies a config version: the same files with the same contents hash the same.
fn version_hash(sources: &[Source]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for s in sources {
        h.update(s.file.as_bytes());
        h.update([0]);
        h.update(s.text.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// Folds the trained routers' own versions into the files' version: retraining a router
/// changes what serves as much as editing a policy does.
fn with_router_versions(files_version: String, models: &[VirtualModelConfig]) -> String {
    use sha2::{Digest, Sha256};
    let routers: Vec<String> = models
        .iter()
        .filter_map(|m| match &m.router {
            Some(RouterRef::Trained { name, version, .. }) => Some(format!("{name}={version}")),
            _ => None,
        })
        .collect();
    if routers.is_empty() {
        return files_version;
    }
    let mut h = Sha256::new();
    h.update(files_version.as_bytes());
    for r in routers {
        h.update([0]);
        h.update(r.as_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

fn parse(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
    let parse_error = |err: &toml::de::Error, path: String| {
        let (line, column) = err.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        ConfigError::Parse { file: origin.to_string(), line, column, path, message: err.message().to_string() }
    };
    let de = toml::Deserializer::parse(text).map_err(|e| parse_error(&e, String::from(".")))?;
    serde_path_to_error::deserialize(de).map_err(|e| parse_error(e.inner(), e.path().to_string()))
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

struct Validator<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
}

fn invalid(file: &str, path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { file: file.to_string(), path: path.into(), message: message.into() }
}

/// Takes the one file's section among many; two files setting it is an error.
fn single<T>(file_sections: Vec<(&str, Option<T>)>, key: &str) -> Result<(String, Option<T>), ConfigError> {
    let mut found: Option<(&str, T)> = None;
    for (file, section) in file_sections {
        if let Some(sec) = section {
            if let Some((first, _)) = &found {
                return Err(invalid(file, key, format!("is already set in {first}; set [{key}] in one file only")));
            }
            found = Some((file, sec));
        }
    }
    Ok(match found {
        Some((f, s)) => (f.to_string(), Some(s)),
        None => (String::new(), None),
    })
}

impl Validator<'_> {
    fn config(&self, files: Vec<(&str, RawConfig)>, version: String) -> Result<Config, ConfigError> {
        let origin = files.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(", ");
        let mut servers = Vec::new();
        let mut resiliences = Vec::new();
        let mut routings = Vec::new();
        let mut ledgers = Vec::new();
        let mut auths = Vec::new();
        let mut limitss = Vec::new();
        let mut tiers = Vec::new();
        let mut raw_experts = Vec::new();
        let mut raw_models = Vec::new();
        for (file, raw) in files {
            servers.push((file, raw.server));
            resiliences.push((file, raw.resilience));
            routings.push((file, raw.routing));
            ledgers.push((file, raw.ledger));
            auths.push((file, raw.auth));
            limitss.push((file, raw.limits));
            tiers.push((file, raw.tiers));
            raw_experts.extend(raw.experts.into_iter().enumerate().map(|(i, e)| (file, i, e)));
            raw_models.extend(raw.models.into_iter().enumerate().map(|(i, m)| (file, i, m)));
        }
        let (server_file, server) = single(servers, "server")?;
        let server = self.server(&server_file, server.unwrap_or_default())?;
        let (res_file, resilience) = single(resiliences, "resilience")?;
        let resilience = self.resilience(&res_file, resilience.unwrap_or_default())?;
        let (_, routing) = single(routings, "routing")?;
        let routers_dir = PathBuf::from(
            routing
                .and_then(|r| r.routers_dir)
                .or_else(|| (self.env)(ROUTERS_DIR_ENV))
                .unwrap_or_else(|| DEFAULT_ROUTERS_DIR.to_string()),
        );

        let (auth_file, auth) = single(auths, "auth")?;
        let auth = self.auth(&auth_file, auth)?;
        let (limits_file, limits) = single(limitss, "limits")?;
        let limits = self.limits(&limits_file, limits.unwrap_or_default())?;
        let (ledger_file, ledger) = single(ledgers, "ledger")?;
        let ledger = match ledger {
            None => None,
            Some(l) => {
                if l.flush_interval_ms == Some(0) {
                    return Err(invalid(&ledger_file, "ledger.flush_interval_ms", "must be greater than 0"));
                }
                let mut cfg = crate::ledger::LedgerConfig::new(&l.path);
                if let Some(ms) = l.flush_interval_ms {
                    cfg.flush_interval = Duration::from_millis(ms);
                }
                cfg.retention_days = l.retention_days;
                cfg.max_records = l.max_records;
                cfg.max_bytes = l.max_bytes;
                cfg.store_prompts = l.store_prompts;
                Some(cfg)
            }
        };
        let (tiers_file, tiers) = single(tiers, "tiers")?;
        let tiers = match tiers {
            None => None,
            Some(t) => {
                if t.hot_bytes == 0 {
                    return Err(invalid(&tiers_file, "tiers.hot_bytes", "must be greater than 0"));
                }
                if t.demand_half_life_ms == Some(0) {
                    return Err(invalid(&tiers_file, "tiers.demand_half_life_ms", "must be greater than 0"));
                }
                Some(TiersConfig {
                    hot_bytes: t.hot_bytes,
                    warm_bytes: t.warm_bytes,
                    min_residency: Duration::from_millis(t.min_residency_ms.unwrap_or(DEFAULT_MIN_RESIDENCY_MS)),
                    demand_half_life: Duration::from_millis(
                        t.demand_half_life_ms.unwrap_or(DEFAULT_DEMAND_HALF_LIFE_MS),
                    ),
                })
            }
        };
        let mut names: HashMap<String, String> = HashMap::new();
        let mut experts = Vec::with_capacity(raw_experts.len());
        for (file, i, e) in raw_experts {
            let path = format!("experts[{i}]");
            if let Some(first) = names.insert(e.name.clone(), file.to_string()) {
                return Err(invalid(
                    file,
                    format!("{path}.name"),
                    format!("duplicate name {:?} (first defined in {first})", e.name),
                ));
            }
            let expert = self.expert(file, &path, e)?;
            if let ExpertKind::Local(l) = &expert.kind {
                if tiers.is_none() && (l.pin || l.min_tier != MinTier::Cold) {
                    let key = if l.pin { "pin" } else { "min_tier" };
                    return Err(invalid(
                        file,
                        format!("{path}.{key}"),
                        "needs a [tiers] section (without one every local expert is hot)",
                    ));
                }
            }
            experts.push(expert);
        }
        let mut models = Vec::with_capacity(raw_models.len());
        for (file, i, m) in raw_models {
            let path = format!("models[{i}]");
            if let Some(first) = names.insert(m.name.clone(), file.to_string()) {
                return Err(invalid(
                    file,
                    format!("{path}.name"),
                    format!("{:?} is already the name of an expert or a model (in {first})", m.name),
                ));
            }
            models.push(policy::validate(file, &path, m, &experts, &routers_dir)?);
        }
        policy::check_fallback_cycles(&models, &experts)?;
        let version = with_router_versions(version, &models);
        Ok(Config { origin, version, server, resilience, experts, models, routers_dir, ledger, auth, limits, tiers })
    }

    fn server(&self, file: &str, raw: raw::RawServer) -> Result<ServerConfig, ConfigError> {
        let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen_text.parse().map_err(|_| {
            invalid(file, "server.listen", format!("expected an address like 127.0.0.1:8080, got {listen_text:?}"))
        })?;
        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes < 1024 {
            return Err(invalid(file, "server.max_body_bytes", format!("must be at least 1024, got {max_body_bytes}")));
        }
        Ok(ServerConfig {
            listen,
            max_body_bytes,
            shutdown_grace: Duration::from_millis(raw.shutdown_grace_ms.unwrap_or(DEFAULT_SHUTDOWN_GRACE_MS)),
        })
    }

    fn auth(&self, file: &str, raw: Option<raw::RawAuth>) -> Result<AuthMode, ConfigError> {
        let Some(raw) = raw else {
            return Ok(AuthMode::Off { reason: "the config has no [auth] section" });
        };
        if raw.enabled == Some(false) {
            return Ok(AuthMode::Off { reason: "[auth] enabled = false" });
        }
        let Some(keys_db) = raw.keys_db.filter(|p| !p.is_empty()) else {
            return Err(invalid(file, "auth.keys_db", "is required when authentication is on (e.g. \"data/keys\")"));
        };
        let admin_key = match &raw.admin_key_env {
            None => None,
            Some(var) => match (self.env)(var) {
                Some(v) if !v.is_empty() => Some(Secret::new(v)),
                _ => {
                    return Err(invalid(
                        file,
                        "auth.admin_key_env",
                        format!("environment variable {var} is not set (it must hold the admin key)"),
                    ))
                }
            },
        };
        Ok(AuthMode::On(AuthSettings { keys_db: PathBuf::from(keys_db), admin_key }))
    }

    fn limits(&self, file: &str, r: raw::RawLimits) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let at_least = |v: Option<u64>, default: u64, min: u64, key: &str| -> Result<u64, ConfigError> {
            match v.unwrap_or(default) {
                n if n < min => Err(invalid(file, format!("limits.{key}"), format!("must be at least {min}, got {n}"))),
                n => Ok(n),
            }
        };
        let as_u64 = |v: Option<usize>| v.map(|n| n as u64);
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(Limits {
            max_messages: to_usize(at_least(as_u64(r.max_messages), d.max_messages as u64, 1, "max_messages")?),
            max_prompt_chars: to_usize(at_least(
                as_u64(r.max_prompt_chars),
                d.max_prompt_chars as u64,
                1,
                "max_prompt_chars",
            )?),
            max_tokens: at_least(r.max_tokens, d.max_tokens, 1, "max_tokens")?,
            // Below 1 KiB even a plain request with an API key would not fit.
            max_header_bytes: to_usize(at_least(
                as_u64(r.max_header_bytes),
                d.max_header_bytes as u64,
                1024,
                "max_header_bytes",
            )?),
            max_connections: to_usize(at_least(
                as_u64(r.max_connections),
                d.max_connections as u64,
                1,
                "max_connections",
            )?),
            header_read_timeout: Duration::from_millis(at_least(
                r.header_read_timeout_ms,
                DEFAULT_HEADER_READ_TIMEOUT_MS,
                1,
                "header_read_timeout_ms",
            )?),
            body_read_timeout: Duration::from_millis(at_least(
                r.body_read_timeout_ms,
                DEFAULT_BODY_READ_TIMEOUT_MS,
                1,
                "body_read_timeout_ms",
            )?),
        })
    }

    fn resilience(&self, file: &str, r: raw::RawResilience) -> Result<Resilience, ConfigError> {
        let max_attempts = r.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if max_attempts == 0 {
            return Err(invalid(file, "resilience.max_attempts", "must be at least 1, got 0"));
        }
        let breaker_failures = r.breaker_failures.unwrap_or(DEFAULT_BREAKER_FAILURES);
        if breaker_failures == 0 {
            return Err(invalid(file, "resilience.breaker_failures", "must be at least 1, got 0"));
        }
        Ok(Resilience {
            max_attempts,
            backoff_base: Duration::from_millis(r.backoff_base_ms.unwrap_or(DEFAULT_BACKOFF_BASE_MS)),
            backoff_max: Duration::from_millis(r.backoff_max_ms.unwrap_or(DEFAULT_BACKOFF_MAX_MS)),
            breaker_failures,
            breaker_cooldown: Duration::from_millis(r.breaker_cooldown_ms.unwrap_or(DEFAULT_BREAKER_COOLDOWN_MS)),
        })
    }

    fn expert(&self, file: &str, path: &str, e: RawExpert) -> Result<ExpertConfig, ConfigError> {
        if e.name.is_empty() || e.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                file,
                format!("{path}.name"),
                format!("must be non-empty without spaces, got {:?}", e.name),
            ));
        }
        let t = &e.timeouts;
        let ms = |v: Option<u64>, default: u64, key: &str| -> Result<Duration, ConfigError> {
            match v.unwrap_or(default) {
                0 => Err(invalid(file, format!("{path}.timeouts.{key}"), "must be greater than 0")),
                n => Ok(Duration::from_millis(n)),
            }
        };
        let timeouts = Timeouts {
            connect: ms(t.connect_ms, DEFAULT_CONNECT_TIMEOUT_MS, "connect_ms")?,
            first_byte: ms(t.first_byte_ms, DEFAULT_FIRST_BYTE_TIMEOUT_MS, "first_byte_ms")?,
            total: ms(t.total_ms, DEFAULT_TOTAL_TIMEOUT_MS, "total_ms")?,
        };
        for (key, v) in [("input_per_mtok", e.price.input_per_mtok), ("output_per_mtok", e.price.output_per_mtok)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(
                    file,
                    format!("{path}.price.{key}"),
                    format!("must be a finite number >= 0, got {v}"),
                ));
            }
        }
        let price = Price { input_per_mtok: e.price.input_per_mtok, output_per_mtok: e.price.output_per_mtok };
        let kind_name = match e.kind {
            RawExpertKind::Openai => "openai",
            RawExpertKind::Local => "local",
        };
        let forbid = |present: bool, key: &str| -> Result<(), ConfigError> {
            if present {
                Err(invalid(file, format!("{path}.{key}"), format!("is not a key of kind = {kind_name:?}")))
            } else {
                Ok(())
            }
        };
        let kind = match e.kind {
            RawExpertKind::Openai => {
                for (present, key) in [
                    (e.path.is_some(), "path"),
                    (e.arch.is_some(), "arch"),
                    (e.device.is_some(), "device"),
                    (e.context_length.is_some(), "context_length"),
                    (e.threads.is_some(), "threads"),
                    (e.queue_limit.is_some(), "queue_limit"),
                    (e.tenant_queue_limit.is_some(), "tenant_queue_limit"),
                    (e.weights.is_some(), "weights"),
                    (e.tokenizer.is_some(), "tokenizer"),
                    (e.chat_template.is_some(), "chat_template"),
                    (e.pin.is_some(), "pin"),
                    (e.min_tier.is_some(), "min_tier"),
                ] {
                    forbid(present, key)?;
                }
                let Some(base_url) = e.base_url else {
                    return Err(invalid(file, format!("{path}.base_url"), "is required for kind = \"openai\""));
                };
                if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                    return Err(invalid(
                        file,
                        format!("{path}.base_url"),
                        format!("must start with http:// or https://, got {base_url:?}"),
                    ));
                }
                // The same parse the remote expert does on every request (`endpoint()` in
                // src/experts/remote.rs), so a bad URL fails here, naming the file and key.
                if let Err(err) = reqwest::Url::parse(base_url.trim_end_matches('/')) {
                    return Err(invalid(
                        file,
                        format!("{path}.base_url"),
                        format!("is not a valid URL ({err}), got {base_url:?}"),
                    ));
                }
                let api_key = match &e.api_key_env {
                    None => None,
                    Some(var) => match (self.env)(var) {
                        Some(v) if !v.is_empty() => Some(Secret::new(v)),
                        _ => {
                            return Err(invalid(
                                file,
                                format!("{path}.api_key_env"),
                                format!("environment variable {var} is not set (it must hold the API key)"),
                            ))
                        }
                    },
                };
                let mut headers = Vec::with_capacity(e.headers.len());
                for (k, v) in &e.headers {
                    let name = http::HeaderName::try_from(k.as_str())
                        .map_err(|_| invalid(file, format!("{path}.headers.{k}"), "is not a valid header name"))?;
                    let value = http::HeaderValue::try_from(v.as_str())
                        .map_err(|_| invalid(file, format!("{path}.headers.{k}"), "is not a valid header value"))?;
                    headers.push((name, value));
                }
                ExpertKind::OpenAi(RemoteConfig {
                    base_url: base_url.trim_end_matches('/').to_string(),
                    model: e.model.unwrap_or_else(|| e.name.clone()),
                    api_key,
                    headers,
                    timeouts,
                })
            }
            RawExpertKind::Local => {
                for (present, key) in [
                    (e.base_url.is_some(), "base_url"),
                    (e.model.is_some(), "model"),
                    (e.api_key_env.is_some(), "api_key_env"),
                    (!e.headers.is_empty(), "headers"),
                ] {
                    forbid(present, key)?;
                }
                let Some(model_file) = e.path else {
                    return Err(invalid(file, format!("{path}.path"), "is required for kind = \"local\""));
                };
                let queue_limit = e.queue_limit.unwrap_or(DEFAULT_LOCAL_QUEUE_LIMIT);
                if queue_limit == 0 {
                    return Err(invalid(file, format!("{path}.queue_limit"), "must be at least 1, got 0"));
                }
                if let Some(t) = e.tenant_queue_limit.filter(|t| *t == 0 || *t > queue_limit) {
                    return Err(invalid(
                        file,
                        format!("{path}.tenant_queue_limit"),
                        format!("must be between 1 and queue_limit ({queue_limit}), got {t}"),
                    ));
                }
                if let Some(w) = &e.weights {
                    if !matches!(w.as_str(), "quantized" | "f16" | "f32") {
                        return Err(invalid(
                            file,
                            format!("{path}.weights"),
                            format!("expected \"quantized\", \"f16\" or \"f32\", got {w:?}"),
                        ));
                    }
                }
                if let Some(a) = &e.arch {
                    // The parse `LocalBackend::new` does at load time (src/experts/local.rs).
                    // serde's message lists the accepted values.
                    let parsed = serde_json::from_value::<crate::local::Arch>(serde_json::Value::String(a.clone()));
                    if let Err(err) = parsed {
                        return Err(invalid(file, format!("{path}.arch"), err.to_string()));
                    }
                }
                let device = e.device.unwrap_or_else(|| "cpu".to_string());
                if !(device == "cpu" || device.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok())) {
                    return Err(invalid(
                        file,
                        format!("{path}.device"),
                        format!("expected \"cpu\" or \"cuda:N\", got {device:?}"),
                    ));
                }
                let pin = e.pin.unwrap_or(false);
                let min_tier = match e.min_tier.as_deref() {
                    None | Some("cold") => MinTier::Cold,
                    Some("warm") => MinTier::Warm,
                    Some(other) => {
                        return Err(invalid(
                            file,
                            format!("{path}.min_tier"),
                            format!("expected \"warm\" or \"cold\", got {other:?}"),
                        ))
                    }
                };
                if pin && e.min_tier.is_some() {
                    return Err(invalid(
                        file,
                        format!("{path}.min_tier"),
                        "has no effect on a pinned expert (pin = true keeps it hot); remove one of the two",
                    ));
                }
                ExpertKind::Local(LocalSettings {
                    pin,
                    min_tier,
                    path: self.model_path(&model_file),
                    arch: e.arch,
                    device,
                    context_length: e.context_length,
                    threads: e.threads,
                    queue_limit,
                    tenant_queue_limit: e.tenant_queue_limit,
                    weights: e.weights,
                    tokenizer: e.tokenizer.map(|t| self.model_path(&t)),
                    chat_template: e.chat_template,
                    timeouts,
                })
            }
        };
        // A remote backend's endpoints are the operator's to declare (OpenAI's chat models
        // refuse `/v1/completions`); a local expert serves both of the gateway's own.
        let local = matches!(kind, ExpertKind::Local(_));
        let capabilities = e.capabilities.unwrap_or_else(|| match local {
            true => vec![Capability::Chat, Capability::Completions],
            false => vec![Capability::Chat],
        });
        if local && capabilities.contains(&Capability::Embeddings) {
            return Err(invalid(file, format!("{path}.capabilities"), "local experts serve chat and completions only"));
        }
        Ok(ExpertConfig { name: e.name, capabilities, price, kind })
    }

    /// Relative model paths resolve against the models folder, so one config works from
    /// any working directory once `TRIAGE_MODELS_DIR` points at the weights.
    fn model_path(&self, file: &str) -> PathBuf {
        let p = PathBuf::from(file);
        if p.is_absolute() {
            return p;
        }
        let dir = (self.env)(MODELS_DIR_ENV).unwrap_or_else(|| DEFAULT_MODELS_DIR.to_string());
        PathBuf::from(dir).join(p)
    }
}

/// The models folder: `TRIAGE_MODELS_DIR`, else `./models` (where `scripts/setup.sh` puts them).
pub fn models_dir() -> PathBuf {
    PathBuf::from(std::env::var(MODELS_DIR_ENV).unwrap_or_else(|_| DEFAULT_MODELS_DIR.to_string()))
}

impl Validator<'_> {}

#[cfg(test)]
mod tests;
