//! The official `openai` Python SDK against the gateway, unchanged.

use std::process::Command;

use crate::mock::{Behavior, Mock};
use crate::support::{remote_config, Gateway};

/// The interpreter with `openai` installed: `scripts/test.sh` makes `.venv`.
pub fn python() -> String {
    std::env::var("TRIAGE_PYTHON").unwrap_or_else(|_| format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_unchanged() {
    let a = Mock::start("a", Behavior::Ok).await;
    let gw = Gateway::start(&remote_config(&[("a", &a.url())], "")).await;
    let base = gw.url("/v1");
    let script = format!("{}/tests/python/sdk_check.py", env!("CARGO_MANIFEST_DIR"));
    let py = python();
    let out =
        tokio::task::spawn_blocking(move || Command::new(&py).arg(&script).arg(&base).arg("triage").arg("a").output())
            .await
            .unwrap()
            .unwrap_or_else(|e| {
                panic!("cannot run {}: {e}; run scripts/test.sh (it creates .venv with openai)", python())
            });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sdk_check.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("sdk checks passed"), "{stdout}");
}
