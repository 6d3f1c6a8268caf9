//! Hot reload of config and policy files: on a file change (debounced), SIGHUP or
//! `POST /admin/reload`, the files are validated completely and built into a new
//! snapshot, which is swapped in atomically. An invalid version is rejected whole: the
//! previous one keeps serving, and the error is logged, counted and shown by
//! `GET /admin/policies`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::{self, RouterRef};
use crate::routing::{Classify, Snapshot};
use crate::state::AppState;

/// Editors save in bursts (truncate, write, rename); waiting this long after the last
/// event reads the file once it is complete, and still reloads well within 2 s.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

pub type SharedRouterFactory = Arc<dyn Fn(&RouterRef) -> Result<Arc<dyn Classify>, String> + Send + Sync>;

/// Where the config came from, so it can be read again.
pub struct ReloadSource {
    /// Empty for the embedded default, which cannot change.
    pub paths: Vec<PathBuf>,
    pub routers: SharedRouterFactory,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct PolicyStatus {
    pub version: String,
    /// Unix seconds.
    pub loaded_at: u64,
    pub files: Vec<String>,
    pub models: Vec<String>,
    pub reloads: u64,
    pub failed_reloads: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl PolicyStatus {
    pub fn of(snapshot: &Snapshot) -> Self {
        Self {
            version: snapshot.version().to_string(),
            loaded_at: now_secs(),
            files: snapshot.config.origin.split(", ").map(str::to_string).collect(),
            models: snapshot.virtual_models().iter().map(|m| m.name.clone()).collect(),
            ..Self::default()
        }
    }
}

/// The outcome of one reload.
#[derive(Debug, Clone, Serialize)]
pub struct Reloaded {
    pub version: String,
    pub changed: bool,
}

/// Reads, validates and swaps in the config files. `trigger` names the cause in logs.
pub async fn reload(state: &AppState, trigger: &str) -> Result<Reloaded, String> {
    let Some(source) = &state.reload_source else {
        return Ok(Reloaded { version: state.snapshot.load().version().to_string(), changed: false });
    };
    // One reload at a time, so two quick edits cannot swap in out of order.
    let _guard = state.reload_lock.lock().await;
    let previous = state.snapshot.load_full();
    let paths = source.paths.clone();
    let routers = source.routers.clone();
    let prev = previous.clone();
    // Loading reads files and may load models: keep it off the async workers.
    let built = tokio::task::spawn_blocking(move || {
        let config = config::load_paths(&paths).map_err(|e| e.to_string())?;
        if config.version == prev.version() {
            return Ok(None);
        }
        Snapshot::build(config, Some(&prev), &*routers).map(Some).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("reload task failed: {e}"))
    .and_then(|r| r);
    let mut status = state.policy_status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match built {
        Ok(None) => Ok(Reloaded { version: previous.version().to_string(), changed: false }),
        Ok(Some(snapshot)) => {
            let version = snapshot.version().to_string();
            let (reloads, failed) = (status.reloads + 1, status.failed_reloads);
            let (last_error, last_error_at) = (status.last_error.take(), status.last_error_at.take());
            *status = PolicyStatus {
                reloads,
                failed_reloads: failed,
                last_error,
                last_error_at,
                ..PolicyStatus::of(&snapshot)
            };
            state.snapshot.store(Arc::new(snapshot));
            state.telemetry.metrics().policy_reload(true);
            tracing::info!(trigger, version = %version, previous = %previous.version(), "Config reloaded.");
            Ok(Reloaded { version, changed: true })
        }
        Err(e) => {
            status.failed_reloads += 1;
            state.telemetry.metrics().policy_reload(false);
            status.last_error = Some(e.clone());
            status.last_error_at = Some(now_secs());
            tracing::error!(trigger, error = %e, version = %previous.version(), "Config reload rejected; the previous version keeps serving.");
            Err(e)
        }
    }
}

/// Watches the config files (their folders, so atomic renames are seen) and reloads
/// after each burst of changes. The returned watcher must be kept alive.
pub fn watch(state: Arc<AppState>) -> Result<Option<notify::RecommendedWatcher>, notify::Error> {
    use notify::{RecursiveMode, Watcher};
    let Some(source) = &state.reload_source else { return Ok(None) };
    let watched: Vec<PathBuf> =
        source.paths.iter().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())).collect();
    let dirs: Vec<PathBuf> =
        watched
            .iter()
            .map(|p| {
                if p.is_dir() {
                    p.clone()
                } else {
                    p.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
                }
            })
            .collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let relevant = watched.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        let hit = event.paths.iter().any(|p| {
            relevant.iter().any(|w| {
                p == w || (w.is_dir() && p.parent() == Some(w.as_path()) && p.extension().is_some_and(|x| x == "toml"))
            })
        });
        if hit {
            let _ = tx.send(());
        }
    })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait until the files have been quiet for DEBOUNCE.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let _ = reload(&state, "file change").await;
        }
    });
    Ok(Some(watcher))
}
