//! Binds the API to a socket and drains it on shutdown.
//!
//! The accept loop is hyper's own (not `axum::serve`) for the knobs hostile clients need:
//! a cap on open connections (a semaphore taken before `accept`, so excess clients wait in
//! the kernel's backlog), a header read timeout that drops slowloris clients (on a coarse
//! timer of its own, see [`timer`]), and a bound on the header buffer.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::api;
use crate::config::Limits;

mod timer;
use crate::state::AppState;

/// hyper's read buffer must hold the whole header block; twice the configured header limit
/// lets the API answer an oversized (but not absurd) block with an OpenAI-shaped 431, and
/// hyper itself cuts off anything beyond. hyper refuses buffers under 8 KiB.
const HEADER_BUFFER_FACTOR: usize = 2;
const MIN_HYPER_BUFFER: usize = 8 * 1024;
/// After a failed `accept` (out of file descriptors, usually), pause instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What a leak would make grow: open client connections and requests in flight (a request
/// counts until its response body, a stream included, is finished or dropped). Served on
/// `/metrics`; the fault and soak tests check both return to zero.
#[derive(Debug, Default)]
pub struct Load {
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Load {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }

    pub(crate) fn connection(&self) -> Held {
        Held::of(&self.connections)
    }

    pub(crate) fn request(&self) -> Held {
        Held::of(&self.requests)
    }
}

/// One count in a [`Load`] gauge, given back on drop (so a panic or a cancelled future
/// cannot leave it counted).
#[derive(Debug)]
pub struct Held(Arc<AtomicUsize>);

impl Held {
    fn of(gauge: &Arc<AtomicUsize>) -> Held {
        gauge.fetch_add(1, Ordering::AcqRel);
        Held(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// hyper's HTTP/1 settings from `[limits]`: the header read timeout and buffer bound.
fn http_builder(limits: &Limits) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(timer::CoarseTimer::new(limits.header_read_timeout))
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size((limits.max_header_bytes * HEADER_BUFFER_FACTOR).max(MIN_HYPER_BUFFER));
    http
}

/// Answers on `listener` with [`api::loading_app`] until `loading` resolves, and returns
/// its output; `serve` then hands the listener to [`run`]. An orchestrator's liveness probe
/// passes and its readiness probe does not while models load, and a client is told to
/// come back instead of hanging. Each loading-time connection closes after its answer, so
/// no keep-alive client is left on the loading answers once the gateway serves.
pub async fn serve_loading<T>(listener: &TcpListener, limits: &Limits, loading: impl Future<Output = T>) -> T {
    let app = api::loading_app();
    let mut http = http_builder(limits);
    http.keep_alive(false);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(loading);
    loop {
        let permit = tokio::select! {
            biased;
            out = &mut loading => return out,
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return loading.await,
            },
        };
        let tcp = tokio::select! {
            biased;
            out = &mut loading => return out,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let conn = http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app.clone()));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "Connection ended with an error while loading.");
            }
            drop(permit);
        });
    }
}

/// Serves until `shutdown` resolves, then stops accepting, marks the gateway not-ready,
/// and lets in-flight requests and streams finish for up to `grace`.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    let limits = state.limits.clone();
    let app = api::app(state.clone());
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http = http_builder(&limits);
    http.keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small SSE events would otherwise wait for ACKs (Nagle).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "Could not set TCP_NODELAY.");
        }
        let service = TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(TokioIo::new(tcp), service);
        let mut stop = stop_rx.clone();
        let held = state.load.connection();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
                    // Finish the request in flight (a stream included), then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, peer = %peer, "Connection ended with an error.");
            }
            drop(held);
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(grace_ms = grace.as_millis() as u64, "Shutting down: draining in-flight requests.");
    state.start_draining();
    let _ = stop_tx.send(true);
    // Every connection holds a permit: all permits back means all connections closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(grace, connections.acquire_many(all)).await {
        Ok(_) => tracing::info!("All requests finished; bye."),
        Err(_) => tracing::warn!("Shutdown grace period over; closing the remaining connections."),
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed by the call, not on
/// the first poll, so a signal that comes right after is not met by the default action
/// (which kills without draining). Call it inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (term, int) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                (term, int) => {
                    let e = term.err().or(int.err()).map(|e| e.to_string()).unwrap_or_default();
                    tracing::error!(error = %e, "Cannot listen for SIGTERM and SIGINT.");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "Cannot listen for Ctrl-C.");
            std::future::pending::<()>().await;
        }
    }
}
