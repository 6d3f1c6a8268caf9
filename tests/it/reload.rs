//! Policies as files: validation, hot reload, and the `policy check` command.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::mock::{Behavior, Mock};
use crate::support::{client, Gateway};

fn experts_toml(a: &Mock, b: &Mock) -> String {
    format!(
        "[[experts]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"{}\"\n[[experts]]\nname = \"b\"\nkind = \"openai\"\nbase_url = \"{}\"\n",
        a.url(),
        b.url()
    )
}

fn model_toml(experts: &str) -> String {
    format!("[[models]]\nname = \"triage\"\nexperts = [{experts}]\n")
}

/// Writes like an editor that saves atomically: a temporary file renamed over the old.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn expert_of_next_request(gw: &Gateway) -> String {
    let body = json!({"model": "triage", "messages": [{"role": "user", "content": "hi"}]});
    let resp = client().post(gw.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()["x-triage-expert"].to_str().unwrap().to_string()
}

async fn wait_for_expert(gw: &Gateway, want: &str) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if expert_of_next_request(gw).await == want {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the gateway never switched to {want}");
}

async fn policies(gw: &Gateway) -> Value {
    client().get(gw.url("/admin/policies")).send().await.unwrap().json().await.unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    experts: PathBuf,
    policy: PathBuf,
    gw: Gateway,
    _a: Mock,
    _b: Mock,
}

async fn setup() -> Setup {
    let a = Mock::start("a", Behavior::Ok).await;
    let b = Mock::start("b", Behavior::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let experts = dir.path().join("experts.toml");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&experts, experts_toml(&a, &b)).unwrap();
    std::fs::write(&policy, model_toml("\"a\"")).unwrap();
    let gw = Gateway::start_files(&[dir.path().to_path_buf()]).await;
    Setup { _dir: dir, experts, policy, gw, _a: a, _b: b }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_takes_effect_within_two_seconds_under_traffic_without_failures() {
    let s = setup().await;
    assert_eq!(expert_of_next_request(&s.gw).await, "a");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, failures, served, url) =
            (stop.clone(), failures.clone(), served.clone(), s.gw.url("/v1/chat/completions"));
        load.push(tokio::spawn(async move {
            let body = json!({"model": "triage", "messages": [{"role": "user", "content": "hi"}]});
            while !stop.load(Ordering::SeqCst) {
                match client().post(&url).json(&body).send().await {
                    Ok(r) if r.status() == 200 => served.fetch_add(1, Ordering::SeqCst),
                    _ => failures.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = policies(&s.gw).await["status"]["version"].clone();
    std::fs::write(&s.policy, model_toml("\"b\"")).unwrap();
    let took = wait_for_expert(&s.gw, "b").await;
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }
    assert!(took < Duration::from_secs(2), "the new mapping took {took:?}");
    assert_eq!(failures.load(Ordering::SeqCst), 0, "no request failed during the reload");
    assert!(served.load(Ordering::SeqCst) > 10);
    let after = policies(&s.gw).await;
    assert_ne!(after["status"]["version"], before, "the version hash changed");
    assert_eq!(after["status"]["reloads"], 1);
}

#[tokio::test]
async fn a_broken_edit_is_rejected_whole_and_reported() {
    let s = setup().await;
    // Syntax error.
    std::fs::write(&s.policy, "[[models]\nname = \"triage\"\n").unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(expert_of_next_request(&s.gw).await, "a", "the old mapping keeps serving");
    let p = policies(&s.gw).await;
    assert!(p["status"]["last_error"].as_str().unwrap().contains("policy.toml:1:"), "{p}");
    assert!(p["status"]["failed_reloads"].as_u64().unwrap() >= 1);
    // Semantic error: an unknown expert.
    std::fs::write(&s.policy, model_toml("\"b\", \"zzz\"")).unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(expert_of_next_request(&s.gw).await, "a");
    let p = policies(&s.gw).await;
    assert!(p["status"]["last_error"].as_str().unwrap().contains("unknown expert \"zzz\""), "{p}");
    // Removing an expert that a model still references.
    let experts = std::fs::read_to_string(&s.experts).unwrap();
    let only_b = experts
        .split("[[experts]]")
        .filter(|e| e.contains("\"b\""))
        .map(|e| format!("[[experts]]{e}"))
        .collect::<String>();
    std::fs::write(&s.policy, model_toml("\"a\"")).unwrap();
    std::fs::write(&s.experts, only_b).unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let p = policies(&s.gw).await;
    assert!(p["status"]["last_error"].as_str().unwrap().contains("unknown expert \"a\""), "{p}");
    assert_eq!(expert_of_next_request(&s.gw).await, "a", "expert a is still served");
}

#[tokio::test]
async fn a_file_replaced_by_rename_is_picked_up() {
    let s = setup().await;
    write_atomic(&s.policy, &model_toml("\"b\""));
    wait_for_expert(&s.gw, "b").await;
}

#[tokio::test]
async fn a_new_file_can_add_an_expert_and_its_model() {
    let s = setup().await;
    let c = Mock::start("c", Behavior::Ok).await;
    let text = format!("[[experts]]\nname = \"c\"\nkind = \"openai\"\nbase_url = \"{}\"\n[[models]]\nname = \"new\"\nexperts = [\"c\"]\n", c.url());
    write_atomic(&s.policy.with_file_name("added.toml"), &text);
    let start = Instant::now();
    loop {
        let body = json!({"model": "new", "messages": [{"role": "user", "content": "hi"}]});
        let r = client().post(s.gw.url("/v1/chat/completions")).json(&body).send().await.unwrap();
        if r.status() == 200 {
            assert_eq!(r.headers()["x-triage-expert"], "c");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "the new model never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn admin_reload_applies_or_rejects_with_the_reason() {
    let mut s = setup().await;
    s.gw.stop_watching();
    std::fs::write(&s.policy, model_toml("\"b\"")).unwrap();
    let r = client().post(s.gw.url("/admin/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["changed"], true);
    assert_eq!(expert_of_next_request(&s.gw).await, "b");
    std::fs::write(&s.policy, model_toml("\"nope\"")).unwrap();
    let r = client().post(s.gw.url("/admin/reload")).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("unknown expert \"nope\""), "{v}");
    assert_eq!(expert_of_next_request(&s.gw).await, "b");
}

/// Sections read at start only are named when an edit changes them: the rest of the edit is
/// applied, and the operator learns that those parts wait for a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_names_the_sections_that_need_a_restart() {
    let mut s = setup().await;
    s.gw.stop_watching();
    std::fs::write(&s.policy, format!("{}[limits]\nmax_messages = 3\n", model_toml("\"b\""))).unwrap();
    let r = client().post(s.gw.url("/admin/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["changed"].as_bool(), &v["restart_required"]), (Some(true), &json!(["[limits]"])), "{v}");
    assert_eq!(expert_of_next_request(&s.gw).await, "b", "the rest of the edit is applied");
    // Compared with what the process started with: still pending after an unrelated edit ...
    std::fs::write(&s.policy, format!("{}[limits]\nmax_messages = 3\n", model_toml("\"a\""))).unwrap();
    let v: Value = client().post(s.gw.url("/admin/reload")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["restart_required"], json!(["[limits]"]), "{v}");
    // ... and nothing to restart for once the files agree with the running values again.
    std::fs::write(&s.policy, model_toml("\"b\"")).unwrap();
    let v: Value = client().post(s.gw.url("/admin/reload")).send().await.unwrap().json().await.unwrap();
    assert!(v.get("restart_required").is_none(), "{v}");
}

/// The real binary: `triage serve --config` and SIGHUP.
#[tokio::test]
async fn the_binary_reloads_on_sighup() {
    let a = Mock::start("a", Behavior::Ok).await;
    let b = Mock::start("b", Behavior::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = |e: &str| format!("[server]\nlisten = \"127.0.0.1:{port}\"\n{}{}", experts_toml(&a, &b), model_toml(e));
    std::fs::write(&file, text("\"a\"")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["serve", "--no-watch", "--config"])
        .arg(&file)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let body = json!({"model": "triage", "messages": [{"role": "user", "content": "hi"}]});
    let expert = || async {
        for _ in 0..100 {
            if let Ok(r) = client().post(&url).json(&body).send().await {
                return r.headers()["x-triage-expert"].to_str().unwrap().to_string();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the gateway did not start");
    };
    assert_eq!(expert().await, "a");
    // --no-watch: only SIGHUP can trigger this reload.
    std::fs::write(&file, text("\"b\"")).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(expert().await, "a", "not watched");
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let start = Instant::now();
    while expert().await != "b" {
        assert!(start.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status}");
}

/// A Kubernetes ConfigMap volume: `triage.toml -> ..data/triage.toml`, `..data -> ..v1`.
/// An update (kubelet's AtomicWriter) writes a new `..v2`, points `..data_tmp` at it,
/// renames that over `..data` and deletes `..v1`: no event names `triage.toml`.
#[cfg(unix)]
#[tokio::test]
async fn a_configmap_style_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let a = Mock::start("a", Behavior::Ok).await;
    let b = Mock::start("b", Behavior::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let text = |e: &str| format!("{}{}", experts_toml(&a, &b), model_toml(e));
    std::fs::create_dir(d.join("..v1")).unwrap();
    std::fs::write(d.join("..v1/triage.toml"), text("\"a\"")).unwrap();
    symlink("..v1", d.join("..data")).unwrap();
    symlink("..data/triage.toml", d.join("triage.toml")).unwrap();
    let gw = Gateway::start_files(&[d.join("triage.toml")]).await;
    assert_eq!(expert_of_next_request(&gw).await, "a");
    // A log written beside the config every 20 ms must not hold the reload back (the
    // debounce waits for 250 ms of quiet among the events that count).
    let log = d.join("gateway.log");
    let logging = tokio::spawn(async move {
        loop {
            std::fs::write(&log, "a line\n").unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    std::fs::create_dir(d.join("..v2")).unwrap();
    std::fs::write(d.join("..v2/triage.toml"), text("\"b\"")).unwrap();
    symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..v1")).unwrap();
    let took = wait_for_expert(&gw, "b").await;
    logging.abort();
    assert!(took < Duration::from_secs(2), "the swap took {took:?}");
}

/// `--config` names a symlink to a file elsewhere: editing that file reloads, and so does
/// pointing the link at another file, whose later edits are then followed too.
#[cfg(unix)]
#[tokio::test]
async fn edits_to_the_target_of_a_symlinked_config_are_picked_up() {
    use std::os::unix::fs::symlink;
    let a = Mock::start("a", Behavior::Ok).await;
    let b = Mock::start("b", Behavior::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let text = |e: &str| format!("{}{}", experts_toml(&a, &b), model_toml(e));
    let (etc, srv, next) = (dir.path().join("etc"), dir.path().join("srv"), dir.path().join("next"));
    for d in [&etc, &srv, &next] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(srv.join("triage.toml"), text("\"a\"")).unwrap();
    let link = etc.join("triage.toml");
    symlink(srv.join("triage.toml"), &link).unwrap();
    let gw = Gateway::start_files(std::slice::from_ref(&link)).await;
    assert_eq!(expert_of_next_request(&gw).await, "a");
    // In place, and then atomically, as an editor saves.
    std::fs::write(srv.join("triage.toml"), text("\"b\"")).unwrap();
    wait_for_expert(&gw, "b").await;
    write_atomic(&srv.join("triage.toml"), &text("\"a\""));
    wait_for_expert(&gw, "a").await;
    // The link re-pointed (`ln -sfn`): the new target is read, then followed.
    std::fs::write(next.join("triage.toml"), text("\"b\"")).unwrap();
    symlink(next.join("triage.toml"), etc.join("triage.toml.tmp")).unwrap();
    std::fs::rename(etc.join("triage.toml.tmp"), &link).unwrap();
    wait_for_expert(&gw, "b").await;
    std::fs::write(next.join("triage.toml"), text("\"a\"")).unwrap();
    wait_for_expert(&gw, "a").await;
}

/// SIGHUP while the experts and routers still load (seconds) must not end the process,
/// which is SIGHUP's default action until a handler is installed.
#[tokio::test]
async fn the_binary_survives_sighup_while_loading() {
    let _one_at_a_time = crate::support::EMBEDDED_SERVE.lock().await;
    use tokio::io::AsyncBufReadExt;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // The embedded default: its local experts take seconds to load.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["serve", "--no-watch", "--listen", &addr.to_string()])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let mut until = async |what: &str| {
        let read = async {
            loop {
                let line = lines.next_line().await.unwrap().unwrap_or_else(|| panic!("the gateway exited:\n{log}"));
                log.push_str(&line);
                log.push('\n');
                if line.contains(what) {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(120), read).await.unwrap_or_else(|_| panic!("no {what:?} in:\n{log}"));
    };
    until("Listening; loading experts and routers before serving.").await;
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP while loading ended the gateway");
    let ready = |path: &str| client().get(format!("http://{addr}{path}")).send();
    assert_eq!(ready("/ready").await.unwrap().status(), 503, "the HUP arrived while loading");
    until("Triage is serving").await;
    assert_eq!(ready("/ready").await.unwrap().status(), 200, "serves after the HUP");
    assert!(child.try_wait().unwrap().is_none());
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status}");
}

#[test]
fn policy_check_validates_offline_with_exit_status_1_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[models]]\nname = \"m\"\nexperts = [\"ghost\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_triage")).args(["policy", "check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("models[0].experts[0]") && err.contains("unknown expert \"ghost\""),
        "{err}"
    );
}

/// Every file shipped in policies/ loads with the gateway's own validation. Files that
/// define their own experts load alone; the others (written by `policy fit`) load beside
/// the default's experts, as their header says.
#[test]
fn every_shipped_policy_file_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = triage::config::expand(&[root.join("policies")]).unwrap();
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut args = vec![f.clone()];
        if !text.contains("[[experts]]") {
            args.insert(0, root.join("policies/default.toml"));
        }
        let out = Command::new(env!("CARGO_BIN_EXE_triage"))
            .args(["policy", "check"])
            .args(&args)
            .current_dir(root)
            .env("OPENAI_API_KEY", "sk-test-not-used")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
    }
}
