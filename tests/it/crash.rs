//! `kill -9` under load, against the real binary: after a restart on the same ledger, every
//! request that completed more than a flush interval before the kill has its record, every
//! record in the database decodes, and the gateway serves again.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::mock::{Behavior, Mock};
use crate::support::client;

/// The ledger's fsync interval in this test: what a crash may lose, at most.
const FLUSH_MS: u64 = 100;
/// Requests completed (and awaited) before the kill; each must survive it.
const SETTLED_REQUESTS: usize = 60;
/// Concurrent clients, before and during the kill.
const CLIENTS: usize = 4;

fn spawn(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["serve", "--no-watch", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// A config on a fresh port; returns it and the base URL.
fn write_config(dir: &Path, name: &str, mock: &Mock, ledger: &Path) -> (std::path::PathBuf, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[ledger]\npath = \"{}\"\nflush_interval_ms = {FLUSH_MS}\n\
         [[experts]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"{}\"\n[[models]]\nname = \"triage\"\nexperts = [\"a\"]\n",
        ledger.display(),
        mock.url()
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    (path, format!("http://127.0.0.1:{port}"))
}

async fn wait_healthy(base: &str, child: &mut Child) {
    let start = Instant::now();
    loop {
        if let Ok(r) = client().get(format!("{base}/health")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the gateway exited at start: {status}");
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One chat request, streamed or not, read to the end; its id if it succeeded.
async fn complete_one(base: &str, n: usize) -> Option<String> {
    let body = json!({"model": "triage", "stream": n % 3 == 0,
                      "messages": [{"role": "user", "content": format!("request {n}")}]});
    let r = client().post(format!("{base}/v1/chat/completions")).json(&body).send().await.ok()?;
    let id = r.headers().get("x-triage-request-id")?.to_str().ok()?.to_string();
    let ok = r.status() == 200;
    let text = r.text().await.ok()?;
    (ok && (n % 3 != 0 || text.ends_with("data: [DONE]\n\n"))).then_some(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_record_older_than_the_flush_interval() {
    let mock = Mock::start("a", Behavior::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger_path = dir.path().join("ledger");
    let (config, base) = write_config(dir.path(), "first.toml", &mock, &ledger_path);
    let mut gw = spawn(&config);
    wait_healthy(&base, &mut gw).await;

    // Settled: completed, then a wait of several flush intervals.
    let mut settled = Vec::new();
    for batch in (0..SETTLED_REQUESTS).collect::<Vec<_>>().chunks(CLIENTS) {
        let ids = futures::future::join_all(batch.iter().map(|&n| complete_one(&base, n))).await;
        settled.extend(ids.into_iter().map(|id| id.expect("every request before the kill succeeds")));
    }
    tokio::time::sleep(Duration::from_millis(5 * FLUSH_MS)).await;

    // In flight: clients keep sending until the gateway dies under them.
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (stop, during, base) = (stop.clone(), during.clone(), base.clone());
            tokio::spawn(async move {
                let mut n = 1000 * (c + 1);
                while !stop.load(Ordering::SeqCst) {
                    if complete_one(&base, n).await.is_some() {
                        during.fetch_add(1, Ordering::SeqCst);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.start_kill().unwrap(); // SIGKILL
    let status = gw.wait().await.unwrap();
    assert!(!status.success(), "killed, not exited: {status}");
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    assert!(during.load(Ordering::SeqCst) > 0, "load was in flight when the gateway was killed");

    // Restart on the same ledger: it opens, serves, and reports.
    let (config, base) = write_config(dir.path(), "second.toml", &mock, &ledger_path);
    let mut gw = spawn(&config);
    wait_healthy(&base, &mut gw).await;
    let after = complete_one(&base, 1).await.expect("the restarted gateway serves");
    let stats = client().get(format!("{base}/admin/stats")).send().await.unwrap();
    assert_eq!(stats.status(), 200);
    let stats: Value = stats.json().await.unwrap();
    let pid = gw.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(10), gw.wait()).await.unwrap().unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status}");

    let ledger = triage::ledger::Ledger::open(triage::ledger::LedgerConfig::new(&ledger_path)).unwrap();
    let missing: Vec<&String> = settled.iter().filter(|id| ledger.get(id).unwrap().is_none()).collect();
    assert!(missing.is_empty(), "{} of {} settled records lost: {missing:?}", missing.len(), settled.len());
    assert!(ledger.get(&after).unwrap().is_some(), "the restarted gateway records too");
    let mut total = 0;
    for rec in ledger.scan(0) {
        let rec = rec.unwrap_or_else(|e| panic!("a record does not decode after the crash: {e}"));
        assert!(rec.status == 200 || rec.status == triage::ledger::STATUS_CLIENT_CLOSED, "{rec:?}");
        total += 1;
    }
    assert!(total > SETTLED_REQUESTS, "{total} records; stats said {stats}");
    ledger.close().await.unwrap();
}
