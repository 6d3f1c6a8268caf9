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
        let state = Arc::new(AppState::with_telemetry(&config, telemetry).unwrap_or_else(|e| panic!("state: {e}")));
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
        Gateway { addr, state, stop: Some(tx), task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
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
            "[[experts]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"{url}\"\nmodel = \"up-{name}\"\ncapabilities = [\"chat\", \"embeddings\"]\ntimeouts = {{ connect_ms = 500, first_byte_ms = 400, total_ms = 3000 }}\n"
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
