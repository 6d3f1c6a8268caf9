//! Hot reload of config and policy files: on a file change (debounced), SIGHUP or
//! `POST /admin/reload`, the files are validated completely and built into a new
//! snapshot, which is swapped in atomically. An invalid version is rejected whole: the
//! previous one keeps serving, and the error is logged, counted and shown by
//! `GET /admin/policies`.

use std::path::{Path, PathBuf};
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
    /// Sections the new version changed that are read at start only (`[server]`,
    /// `[limits]`, `[auth]`, `[ledger]`): the rest is applied, these wait for a restart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restart_required: Vec<&'static str>,
}

impl Reloaded {
    fn unchanged(version: &str) -> Self {
        Self { version: version.to_string(), changed: false, restart_required: Vec::new() }
    }
}

/// Reads, validates and swaps in the config files. `trigger` names the cause in logs.
pub async fn reload(state: &AppState, trigger: &str) -> Result<Reloaded, String> {
    let Some(source) = &state.reload_source else {
        return Ok(Reloaded::unchanged(state.snapshot.load().version()));
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
        Ok(None) => Ok(Reloaded::unchanged(previous.version())),
        Ok(Some(snapshot)) => {
            let version = snapshot.version().to_string();
            let restart_required = state.start_only.changed_in(&snapshot.config);
            if !restart_required.is_empty() {
                tracing::warn!(trigger, sections = ?restart_required, "The new version changes sections read at start only: they take effect after a restart; the rest is applied.");
            }
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
            Ok(Reloaded { version, changed: true, restart_required })
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
///
/// An event counts when it names a config file, a `*.toml` directly in a watched folder,
/// or a name starting with `..` in a watched folder: Kubernetes mounts a ConfigMap as
/// `triage.toml -> ..data/triage.toml`, `..data -> ..<timestamp>`, and updates it by
/// swapping `..data`, so no event names `triage.toml`. A config file that is a symlink
/// is also followed to its target, watched in the target's own folder (see `Targets`).
/// Other events in the folders (a log written beside the config) are ignored, so they
/// cannot hold the debounce off.
pub fn watch(state: Arc<AppState>) -> Result<Option<notify::RecommendedWatcher>, notify::Error> {
    use notify::{RecursiveMode, Watcher};
    let Some(source) = &state.reload_source else { return Ok(None) };
    let watched: Vec<PathBuf> =
        source.paths.iter().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())).collect();
    let mut dirs: Vec<PathBuf> = watched
        .iter()
        .map(|p| if p.is_dir() { p.clone() } else { p.parent().map_or_else(|| PathBuf::from("."), PathBuf::from) })
        .collect();
    dirs.sort();
    dirs.dedup();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // Weak, so that dropping the returned watcher still ends the reload task below.
    let mut targets = Targets::new(watched.clone(), tx.downgrade());
    let (files, folders) = (watched, dirs.clone());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !event.kind.is_access() && event.paths.iter().any(|p| names_config(p, &files, &folders)) {
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
            // A swap may have pointed a symlink elsewhere: follow the new target.
            targets.refresh();
            let _ = reload(&state, "file change").await;
        }
    });
    Ok(Some(watcher))
}

/// Whether an event on `path` may change the config: see [`watch`].
fn names_config(path: &Path, files: &[PathBuf], dirs: &[PathBuf]) -> bool {
    let Some(parent) = path.parent() else { return false };
    files.iter().any(|w| path == w || (w.is_dir() && parent == w && path.extension().is_some_and(|x| x == "toml")))
        || (dirs.iter().any(|d| parent == d)
            && path.file_name().is_some_and(|n| n.as_encoded_bytes().starts_with(b"..")))
}

/// The files that symlinked config files point to. An edit of a target names the target,
/// in its own folder, so those folders are watched too, for events on the targets. The
/// links are resolved again after every change, since a swap (a ConfigMap update,
/// `ln -sfn`) points them elsewhere.
struct Targets {
    /// The watched config paths: files, and folders whose `*.toml` files may be links.
    paths: Vec<PathBuf>,
    resolved: Vec<PathBuf>,
    watcher: Option<notify::RecommendedWatcher>,
    tx: tokio::sync::mpsc::WeakUnboundedSender<()>,
}

impl Targets {
    fn new(paths: Vec<PathBuf>, tx: tokio::sync::mpsc::WeakUnboundedSender<()>) -> Self {
        let mut targets = Self { paths, resolved: Vec::new(), watcher: None, tx };
        targets.refresh();
        targets
    }

    /// Resolves the links and, where a target changed, watches the new targets' folders.
    fn refresh(&mut self) {
        let resolved = resolve_links(&self.paths);
        if resolved == self.resolved {
            return;
        }
        match watch_targets(&resolved, self.tx.clone()) {
            Ok(watcher) => {
                self.watcher = watcher;
                self.resolved = resolved;
            }
            // Keeps the previous watch; the next change tries again.
            Err(e) => tracing::warn!(
                error = %e,
                targets = ?resolved,
                "Cannot watch the target of a symlinked config file; its edits reload on SIGHUP or POST /admin/reload."
            ),
        }
    }
}

/// The canonical targets of the config files that are symlinks, sorted.
fn resolve_links(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = paths
        .iter()
        .flat_map(|p| config::expand(std::slice::from_ref(p)).unwrap_or_default())
        .filter(|f| f.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()))
        .filter_map(|f| std::fs::canonicalize(f).ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn watch_targets(
    targets: &[PathBuf],
    tx: tokio::sync::mpsc::WeakUnboundedSender<()>,
) -> Result<Option<notify::RecommendedWatcher>, notify::Error> {
    use notify::{RecursiveMode, Watcher};
    if targets.is_empty() {
        return Ok(None);
    }
    let files = targets.to_vec();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !event.kind.is_access() && event.paths.iter().any(|p| files.contains(p)) {
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send(());
            }
        }
    })?;
    let mut dirs: Vec<&Path> = targets.iter().filter_map(|t| t.parent()).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(Some(watcher))
}
