//! Ledger write throughput: N records from T concurrent tasks, timed until `close()` has
//! written and fsynced them all, plus the time each `record(..).await` took.
//!
//!     cargo run --example ledger_throughput -- [records] [tasks]
//!
//! Results are in docs-ledger.md.
#![expect(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark program stops at the first failure")]

use std::time::Instant;

use triage::ledger::{cost_usd, prompt_hash, Ledger, LedgerConfig, Record};

/// Enough records that start-up and the final fsync are a small part of the time.
const DEFAULT_RECORDS: usize = 200_000;
/// The number of request-handling tasks a busy gateway runs at once, roughly.
const DEFAULT_TASKS: usize = 16;

fn sample() -> Record {
    let mut r = Record::new("triage");
    r.category = Some("math".into());
    r.confidence = Some(0.93);
    r.top_categories = vec![("math".into(), 0.93), ("code".into(), 0.05)];
    r.expert = Some("gpt-4o-mini".into());
    r.input_tokens = 812;
    r.output_tokens = 164;
    r.cost_usd = cost_usd(812, 164, 0.15, 0.6);
    r.latency_ms = 840.5;
    r.ttft_ms = Some(212.0);
    r.stream = true;
    r.prompt_hash = prompt_hash(b"[{\"role\":\"user\",\"content\":\"What is 2+2?\"}]");
    r
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let records: usize = args.next().map_or(DEFAULT_RECORDS, |s| s.parse().expect("records"));
    let tasks: usize = args.next().map_or(DEFAULT_TASKS, |s| s.parse().expect("tasks"));
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerConfig::new(dir.path().join("ledger"))).unwrap();
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let l = ledger.clone();
            tokio::spawn(async move {
                let mut waits = Vec::with_capacity(records / tasks);
                for _ in 0..records / tasks {
                    let rec = sample();
                    let t = Instant::now();
                    l.record(rec).await;
                    waits.push(t.elapsed().as_nanos() as u64);
                }
                waits
            })
        })
        .collect();
    let mut waits = Vec::new();
    for h in handles {
        waits.extend(h.await.unwrap());
    }
    let accepted = start.elapsed();
    ledger.close().await.unwrap();
    let total = start.elapsed();
    waits.sort_unstable();
    let pct = |p: f64| waits[((p * waits.len() as f64) as usize).min(waits.len() - 1)] as f64 / 1e3;
    let n = waits.len();
    drop(ledger);
    let reopened = Ledger::open(LedgerConfig::new(dir.path().join("ledger"))).unwrap();
    let stored = reopened.scan(0).count();
    reopened.close().await.unwrap();
    println!("{n} records from {tasks} tasks: all accepted in {accepted:.2?}, written and fsynced in {total:.2?}");
    println!("throughput: {:.0} records/s (to durable)", n as f64 / total.as_secs_f64());
    println!("record().await: p50 {:.1} us, p99 {:.1} us, max {:.1} us", pct(0.50), pct(0.99), pct(1.0));
    println!("stored after reopen: {stored}");
    assert_eq!(stored, n, "records lost");
}
