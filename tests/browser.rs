//! The Ordini web panel and the holder's area in a real browser: starts a
//! daemon on 127.0.0.1, creates two orders through the admin API, and runs
//! `tests/browser/panel.mjs` (playwright-core driving Debian's headless
//! Chromium). Screenshots land in `target/screenshots/` (not committed).
//! Needs `/usr/bin/chromium` (or PECD_CHROMIUM) and `npm ci` in
//! `tests/browser`: `.ci/run` installs both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::*;
use common::root;
use serde_json::{Value, json};

const DOMAIN: &str = "pec.provider-a.test";

fn cf(n: u32) -> String {
    let first15 = format!("BNCLGU80A{:02}F205", 1 + n % 28);
    let c = pecd::membership::tax_code::check_char(first15.as_bytes());
    format!("{first15}{c}")
}

fn new_order(d: &Daemon, id: &str, provincia: &str, activation: &str) -> String {
    let (s, v) = d.api(
        &d.admin_token(),
        "POST",
        "/tenants",
        Some(
            json!({"id": id, "name": format!("Ordine {id}"), "domain": DOMAIN,
            "provincia": provincia, "activation": activation}),
        ),
    );
    assert_eq!(s, 201, "{v}");
    v["panel_password"].as_str().unwrap().to_string()
}

#[test]
fn orders_and_holders_use_the_panel_in_a_real_browser() {
    let chromium = std::env::var("PECD_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let browser_dir = root().join("tests/browser");
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: apt-get install chromium (.ci/run does)"
    );
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: npm ci --prefix tests/browser (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Spec::new('a', dir.path(), free_port(), vec![]));
    let pw_a = new_order(&d, "ordine-a", "LO", "first-access");
    let pw_b = new_order(&d, "ordine-b", "MI", "immediate");
    let shots = root().join("target/screenshots");
    let cfs: Vec<String> = (0..7).map(cf).collect();
    let out = std::process::Command::new("node")
        .arg(browser_dir.join("panel.mjs"))
        .env("PECD_URL", format!("http://{}", d.admin))
        .env("PECD_DOMAIN", DOMAIN)
        .env("PECD_ADMIN_TOKEN", d.admin_token())
        .env("ORDER_A", "ordine-a")
        .env("ORDER_A_PW", &pw_a)
        .env("ORDER_B", "ordine-b")
        .env("ORDER_B_PW", &pw_b)
        .env("PECD_CFS", cfs.join(","))
        .env("PECD_SHOTS", &shots)
        .env("PECD_CHROMIUM", &chromium)
        .output()
        .expect("node");
    let say = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        out.status.success(),
        "browser test failed:\n{}\n{}",
        say(&out.stdout),
        say(&out.stderr)
    );
    for name in ["05-cruscotto", "07-area-titolare", "08-cruscotto-telefono"] {
        assert!(shots.join(format!("{name}.png")).exists(), "{name}.png");
    }

    // What the browser did is in the legal log, with the operator's
    // identity (the order, through the panel, from which address).
    let (s, log) = d.api(&d.admin_token(), "GET", "/log/search", None);
    assert_eq!(s, 200);
    let by = |actor: &str, what: &str| {
        log.as_array().unwrap().iter().any(|r: &Value| {
            r["sender"].as_str() == Some(actor)
                && r["detail"].as_str().is_some_and(|d| d.contains(what))
        })
    };
    let op_a = "order:ordine-a (panel, 127.0.0.1)";
    for what in [
        "panel login",
        "mailbox created for order ordine-a",
        "(bulk load)",
        "password reset",
        "transferred from order ordine-a to order ordine-b",
        "anomaly",
        "credentials file downloaded",
    ] {
        assert!(by(op_a, what), "no log record by {op_a} of {what:?}");
    }
    assert!(by("admin (panel, 127.0.0.1)", "resolved"));
    assert!(by(&format!("marco.bruni@{DOMAIN}"), "first access"));
    assert!(by("order:ordine-b (panel, 127.0.0.1)", "denied: mailbox"));
}
