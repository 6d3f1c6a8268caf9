//! The ledger exercised for real: a sled database in a temporary directory.

use std::time::Duration;

use super::*;

fn cfg(dir: &tempfile::TempDir) -> LedgerConfig {
    LedgerConfig::new(dir.path().join("ledger"))
}

/// A record shaped like one the gateway writes for `outcome`.
fn outcome(outcome: &str) -> Record {
    let mut r = Record::new("triage");
    r.category = Some("math".into());
    r.confidence = Some(0.9);
    r.top_categories = vec![("math".into(), 0.9), ("chat".into(), 0.1)];
    r.input_tokens = 100;
    r.output_tokens = 50;
    r.latency_ms = 120.0;
    r.ttft_ms = Some(40.0);
    r.prompt_hash = prompt_hash(br#"[{"role":"user","content":"2+2"}]"#);
    match outcome {
        "success" => r.expert = Some("big".into()),
        "stream" => {
            r.expert = Some("big".into());
            r.stream = true;
        }
        "fallback" => {
            r.expert = Some("small".into());
            r.tried = vec!["big".into()];
        }
        "upstream_error" => {
            r.tried = vec!["big".into(), "small".into()];
            r.status = 502;
            r.error = Some("upstream_5xx".into());
        }
        "client_disconnect" => {
            r.expert = Some("big".into());
            r.stream = true;
            r.status = STATUS_CLIENT_CLOSED;
            r.error = Some("client_disconnect".into());
        }
        other => panic!("unknown outcome {other}"),
    }
    r.cost_usd = cost_usd(r.input_tokens, r.output_tokens, 2.0, 8.0);
    r
}

#[tokio::test]
async fn every_outcome_is_recorded_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(cfg(&dir)).unwrap();
    let kinds = ["success", "stream", "fallback", "upstream_error", "client_disconnect"];
    let recs: Vec<Record> = kinds.iter().map(|k| outcome(k)).collect();
    for r in &recs {
        ledger.record(r.clone()).await;
    }
    ledger.flush().await.unwrap();
    for r in &recs {
        assert_eq!(ledger.get(&r.id).unwrap().as_ref(), Some(r), "record {} differs after the round trip", r.id);
    }
    // 100 * $2/M + 50 * $8/M
    assert!((recs[0].cost_usd - 0.0006).abs() < 1e-12);
    let rep = ledger.report(&ReportQuery::default()).unwrap();
    let all = &rep.groups[0];
    assert_eq!(all.requests, 5);
    // Only the 502 is an error; the client that hung up is not.
    assert!((all.error_rate - 0.2).abs() < 1e-9, "error rate {}", all.error_rate);
    ledger.close().await.unwrap();
}

#[tokio::test]
async fn prompts_are_dropped_unless_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(cfg(&dir)).unwrap();
    let mut r = outcome("success");
    r.prompt = Some("secret question".into());
    ledger.record(r.clone()).await;
    ledger.close().await.unwrap();
    drop(ledger);
    let ledger = Ledger::open(LedgerConfig { store_prompts: true, ..cfg(&dir) }).unwrap();
    assert_eq!(ledger.get(&r.id).unwrap().unwrap().prompt, None);
    let mut kept = outcome("success");
    kept.prompt = Some("kept".into());
    ledger.record(kept.clone()).await;
    ledger.flush().await.unwrap();
    assert_eq!(ledger.get(&kept.id).unwrap().unwrap().prompt.as_deref(), Some("kept"));
    ledger.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_across_close_with_many_writers() {
    const TASKS: usize = 16;
    const PER_TASK: usize = 625;
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(cfg(&dir)).unwrap();
    let start = std::time::Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let l = ledger.clone();
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let mut r = outcome("success");
                    r.tenant = Some(format!("t{t}-{i}"));
                    l.record(r).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    ledger.close().await.unwrap();
    let elapsed = start.elapsed();
    eprintln!(
        "{} records in {elapsed:?} ({:.0}/s, debug build)",
        TASKS * PER_TASK,
        (TASKS * PER_TASK) as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(ledger.backlog(), 0);
    drop(ledger);
    let reopened = Ledger::open(cfg(&dir)).unwrap();
    assert_eq!(reopened.scan(0).count(), TASKS * PER_TASK);
    assert_eq!(reopened.lost(), 0);
    reopened.close().await.unwrap();
}

#[tokio::test]
async fn dropping_every_handle_still_writes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(cfg(&dir)).unwrap();
    for _ in 0..100 {
        ledger.record(outcome("success")).await;
    }
    drop(ledger);
    // The writer finishes on its own thread; reopening succeeds once it let go of the lock.
    let mut reopened = None;
    for _ in 0..100 {
        match Ledger::open(cfg(&dir)) {
            Ok(l) => {
                reopened = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let reopened = reopened.expect("the writer never released the database");
    assert_eq!(reopened.scan(0).count(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_channel_makes_writers_wait_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A long interval: the writer only writes when a batch fills, so the channel backs up.
    let ledger = Ledger::open(LedgerConfig { flush_interval: Duration::from_secs(3600), ..cfg(&dir) }).unwrap();
    let n = CHANNEL_CAPACITY * 3;
    let mut refused = 0usize;
    let mut waited = 0usize;
    for _ in 0..n {
        match ledger.try_record(outcome("success")) {
            Ok(()) => {}
            Err(r) => {
                refused += 1;
                // try_record hands the record back; the awaiting path delivers it.
                ledger.record(r).await;
                waited += 1;
            }
        }
    }
    assert!(refused > 0, "the channel never filled, so backpressure was not exercised");
    ledger.close().await.unwrap();
    drop(ledger);
    let reopened = Ledger::open(cfg(&dir)).unwrap();
    assert_eq!(reopened.scan(0).count(), n, "{refused} refused, {waited} re-sent by awaiting");
    reopened.close().await.unwrap();
}

#[tokio::test]
async fn feedback_updates_accuracy_and_unknown_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(cfg(&dir)).unwrap();
    let a = outcome("success");
    let b = outcome("fallback");
    ledger.record(a.clone()).await;
    ledger.record(b.clone()).await;
    // Feedback right after the request: the record may still be in the batch.
    let fb =
        |id: &str, score: f64, source: &str| Feedback { request_id: id.into(), score, source: source.into(), ts_ms: 0 };
    ledger.feedback(fb(&a.id, 0.0, "user")).unwrap();
    ledger.feedback(fb(&b.id, 1.0, "user")).unwrap();
    // The same source again replaces its first verdict.
    ledger.feedback(fb(&a.id, 1.0, "user")).unwrap();
    ledger.flush().await.unwrap();
    let q = ReportQuery { by: vec![GroupBy::Expert], ..Default::default() };
    let rep = ledger.report(&q).unwrap();
    let big = rep.groups.iter().find(|g| g.key == ["big"]).unwrap();
    let acc = big.accuracy.unwrap();
    assert_eq!((acc.n, acc.mean), (1, 1.0));
    assert!(acc.ci_low > 0.0 && acc.ci_low < 1.0 && acc.ci_high == 1.0, "{acc:?}");
    // A second source adds a sample.
    ledger.feedback(fb(&a.id, 0.0, "judge")).unwrap();
    let acc = ledger.report(&q).unwrap().groups.into_iter().find(|g| g.key == ["big"]).unwrap().accuracy.unwrap();
    assert_eq!((acc.n, acc.mean), (2, 0.5));
    assert!(matches!(
        ledger.feedback(fb("01ARZ3NDEKTSV4RRFFQ69G5FAV", 1.0, "user")),
        Err(LedgerError::UnknownRequest(_))
    ));
    assert!(matches!(ledger.feedback(fb(&a.id, 1.5, "user")), Err(LedgerError::InvalidFeedback(_))));
    ledger.close().await.unwrap();
}

#[test]
fn wilson_interval_matches_the_textbook_value() {
    // 8 of 10: Wilson 95% interval is [0.490, 0.943].
    let a = Accuracy::from_scores(8.0, 10).unwrap();
    assert!((a.ci_low - 0.4902).abs() < 1e-3 && (a.ci_high - 0.9433).abs() < 1e-3, "{a:?}");
    assert!(Accuracy::from_scores(0.0, 0).is_none());
}

#[tokio::test]
async fn report_groups_percentiles_and_since() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(cfg(&dir)).unwrap();
    let day = 86_400_000;
    let now = now_ms();
    for i in 0..20u64 {
        let mut r = Record::with_id(ulid::Ulid::from_parts(now - 2 * day + i, i.into()), "triage");
        r.expert = Some("old".into());
        ledger.record(r).await;
    }
    for i in 1..=100u64 {
        let mut r = outcome("success");
        r.latency_ms = i as f64;
        r.active_params = Some(135_000_000);
        ledger.record(r).await;
    }
    ledger.flush().await.unwrap();
    let since = time::parse_since("24h", now_ms()).unwrap();
    let rep = ledger.report(&ReportQuery { since_ms: Some(since), by: vec![GroupBy::Expert], origin: None }).unwrap();
    assert_eq!(rep.total_requests, 100);
    let g = &rep.groups[0];
    assert_eq!(g.key, ["big"]);
    assert_eq!((g.latency_p50_ms, g.latency_p95_ms), (50.0, 95.0));
    assert_eq!(g.active_params_mean, Some(135e6));
    assert!((g.share - 1.0).abs() < 1e-12);
    let table = report::render_table(&rep);
    assert!(table.contains("big") && table.contains("135M"), "{table}");
    ledger.close().await.unwrap();
}

#[tokio::test]
async fn retention_deletes_old_and_excess_records_with_their_feedback() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(cfg(&dir)).unwrap();
    let day = 86_400_000;
    let now = now_ms();
    let mut ids = Vec::new();
    // 10 records 40 days old, then 30 from today.
    for i in 0..40u64 {
        let ts = if i < 10 { now - 40 * day + i } else { now - 1000 + i };
        let r = Record::with_id(ulid::Ulid::from_parts(ts, i.into()), "triage");
        ids.push(r.id.clone());
        ledger.record(r).await;
    }
    ledger.flush().await.unwrap();
    for id in &ids {
        ledger.feedback(Feedback { request_id: id.clone(), score: 1.0, source: "user".into(), ts_ms: 0 }).unwrap();
    }
    let by_age = LedgerConfig { retention_days: Some(30), ..cfg(&dir) };
    assert_eq!(ledger.compact(&by_age, now).unwrap(), 10);
    assert!(ledger.get(&ids[9]).unwrap().is_none() && ledger.get(&ids[10]).unwrap().is_some());
    assert_eq!(ledger.feedback_entries().count(), 30, "feedback of deleted records goes too");
    let by_count = LedgerConfig { max_records: Some(25), ..cfg(&dir) };
    assert_eq!(ledger.compact(&by_count, now).unwrap(), 5);
    assert!(ledger.get(&ids[14]).unwrap().is_none() && ledger.get(&ids[15]).unwrap().is_some(), "oldest first");
    assert_eq!(ledger.feedback_entries().count(), 25);
    let by_bytes = LedgerConfig { max_bytes: Some(1), ..cfg(&dir) };
    assert_eq!(ledger.compact(&by_bytes, now).unwrap(), 25);
    assert_eq!(ledger.scan(0).count(), 0);
    ledger.close().await.unwrap();
}

#[tokio::test]
async fn export_writes_jsonl_and_csv_since_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(cfg(&dir)).unwrap();
    let old = Record::with_id(ulid::Ulid::from_parts(1_000, 1), "triage");
    let mut new = outcome("fallback");
    new.error = Some("has, a comma".into());
    new.endpoint = "completions".into();
    ledger.record(old.clone()).await;
    ledger.record(new.clone()).await;
    ledger.flush().await.unwrap();
    let mut out = Vec::new();
    assert_eq!(export::export(&ledger, 0, export::Format::Jsonl, &mut out).unwrap(), 2);
    let lines: Vec<Record> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, vec![old, new.clone()]);
    let mut csv = Vec::new();
    assert_eq!(export::export(&ledger, 2_000, export::Format::Csv, &mut csv).unwrap(), 1);
    let csv = String::from_utf8(csv).unwrap();
    let mut rows = csv.lines();
    assert_eq!(rows.next().unwrap().split(',').count(), export::CSV_COLUMNS.len());
    let row = rows.next().unwrap();
    assert!(row.starts_with(&new.id) && row.contains("\"has, a comma\"") && row.contains(",big,"), "{row}");
    assert!(row.ends_with(",false,completions"), "usage_estimated, then endpoint, last: {row}");
    ledger.close().await.unwrap();
}
