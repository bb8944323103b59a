//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by
//! playwright-core (`tests/browser/`, installed with `npm ci`) loads the page of a running
//! cluster, sees its workers, then sees the restart of a worker killed with SIGKILL appear
//! without a reload. The screenshot goes to `target/test-artifacts/dashboard.png`.
//!
//! Ignored by default (it needs Chromium and node); `scripts/test.sh` runs it as its own step,
//! and `.ci/run` installs what it needs.
mod common;
#[path = "support/http.rs"]
mod http;

use common::*;
use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "needs Chromium and tests/browser/node_modules: run by scripts/test.sh"]
fn the_dashboard_shows_workers_and_a_restart_live_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let browser_dir = root.join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in {}",
        browser_dir.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: apt-get install chromium"
    );
    let artifacts = root.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);

    let c = NannyCluster::start(4, &["--dashboard", "127.0.0.1:0"], &[], &[]);
    let base = http::dashboard_url(&c.file);
    // A graph in progress, for the graph section of the picture.
    let slow: Vec<serde_json::Value> = (0..8)
        .map(|i| serde_json::json!({"key": format!("slow{i}"), "builtin": "sleep_ms", "args": ["60000"]}))
        .collect();
    let p = c.write_graph("slow.json", &serde_json::json!({ "tasks": slow }));
    let out = c.rusk(&["submit", p.to_str().unwrap()]);
    assert!(out.status.success());

    let out = Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .arg(format!("{base}/"))
        .arg("4")
        .arg(&shot)
        .env("CHROMIUM", &chromium)
        .current_dir(&browser_dir)
        .output()
        .expect("node must be installed");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{log}");
    assert!(out.status.success(), "browser test failed:\n{log}");
    assert!(shot.exists(), "no screenshot at {}", shot.display());
}
