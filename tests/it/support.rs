//! Starting a real gateway on an ephemeral port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use triage::telemetry::Telemetry;
use triage::{config, server, state::AppState};

pub struct Gateway {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    watcher: Option<notify::RecommendedWatcher>,
}

impl Gateway {
    pub async fn start(config_text: &str) -> Gateway {
        Self::start_with_grace(config_text, Duration::from_secs(5)).await
    }

    pub async fn start_with_grace(config_text: &str, grace: Duration) -> Gateway {
        Self::start_with_telemetry(config_text, grace, Telemetry::local()).await
    }

    pub async fn start_with_telemetry(config_text: &str, grace: Duration, telemetry: Telemetry) -> Gateway {
        let config = config::load_str(config_text, "test.toml").unwrap_or_else(|e| panic!("config: {e}"));
        let state = Arc::new(
            AppState::with_telemetry(config, &triage::routing::no_routers, None, telemetry)
                .unwrap_or_else(|e| panic!("state: {e}")),
        );
        Self::serve(state, grace).await
    }

    /// A gateway on config files that are watched and hot-reloaded, as `triage serve --config`.
    pub async fn start_files(paths: &[std::path::PathBuf]) -> Gateway {
        let config = config::load_paths(paths).unwrap_or_else(|e| panic!("config: {e}"));
        let routers: triage::reload::SharedRouterFactory = Arc::new(triage::routing::no_routers);
        let source = triage::reload::ReloadSource { paths: paths.to_vec(), routers: routers.clone() };
        let state = Arc::new(AppState::new(config, &*routers, Some(source)).unwrap_or_else(|e| panic!("state: {e}")));
        let watcher = triage::reload::watch(state.clone()).unwrap();
        let mut gw = Self::serve(state, Duration::from_secs(5)).await;
        gw.watcher = watcher;
        gw
    }

    async fn serve(state: Arc<AppState>, grace: Duration) -> Gateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let st = state.clone();
        let task = tokio::spawn(async move {
            server::run(
                listener,
                st,
                async move {
                    let _ = rx.await;
                },
                grace,
            )
            .await
        });
        Gateway { addr, state, stop: Some(tx), task, watcher: None }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops watching the files (so a test can prove another trigger reloads).
    pub fn stop_watching(&mut self) {
        self.watcher = None;
    }

    /// Sends the shutdown signal (like SIGTERM).
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A config with one remote expert per `(name, base_url)` and a virtual model `triage`
/// listing them in order.
pub fn remote_config(experts: &[(&str, &str)], extra: &str) -> String {
    let mut s = String::from("[resilience]\nbackoff_base_ms = 1\nbackoff_max_ms = 5\n");
    for (name, url) in experts {
        s.push_str(&format!(
            "[[experts]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"{url}\"\nmodel = \"up-{name}\"\ncapabilities = [\"chat\", \"embeddings\", \"completions\"]\ntimeouts = {{ connect_ms = 500, first_byte_ms = 400, total_ms = 3000 }}\n"
        ));
    }
    let names: Vec<String> = experts.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    s.push_str(&format!("[[models]]\nname = \"triage\"\nexperts = [{}]\n", names.join(", ")));
    s.push_str(extra);
    s
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// One gateway on the embedded default config (two local GGUF experts and the default
/// router), shared by the tests that need real models: loading them takes seconds. It
/// runs on its own thread and runtime so it outlives each test's runtime.
/// `triage serve` without `--config` opens the embedded default's ledger, `data/ledger` under
/// the repository, which one process at a time may hold: a test that starts it holds this.
pub static EMBEDDED_SERVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn local_gateway() -> SocketAddr {
    static ADDR: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();
    *ADDR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let text = config::EMBEDDED_DEFAULT
            .replace("path = \"data/ledger\"", &format!("path = {:?}", dir.join("ledger").display().to_string()));
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = config::load_str(&text, "embedded default (test)").unwrap_or_else(|e| panic!("config: {e}"));
        let routers = triage::routing::classifiers::factory(root.join("models"));
        let state = Arc::new(
            AppState::new(config, &*routers, None)
                .unwrap_or_else(|e| panic!("local gateway: {e} (run scripts/setup.sh)")),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                server::run(listener, state, std::future::pending(), Duration::from_secs(1)).await.unwrap();
            });
        });
        rx.recv().unwrap()
    })
}
