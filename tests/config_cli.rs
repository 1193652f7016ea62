//! Configuration files in the repository parse; `pecd check-config` reports
//! every error with its key; `pecd log verify|search` work on a store.

mod common;

use common::*;

#[test]
fn shipped_configs_parse() {
    for f in [
        "config/pecd.example.toml",
        "config/pecd.toml",
        "config/pecd-b.toml",
    ] {
        let cfg =
            pecd::config::Config::load(&root().join(f)).unwrap_or_else(|e| panic!("{f}: {e:?}"));
        assert!(
            cfg.provider.local_domains.len() >= 2,
            "{f}: two demo PEC domains"
        );
        assert!(
            cfg.listen.inbound.unwrap().ip().is_loopback(),
            "{f}: loopback only"
        );
        assert!(cfg.listen.submission.unwrap().port() > 1024);
    }
}

#[test]
fn check_config_reports_all_errors_with_key_paths() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(root().join("config/pecd.toml"))
        .unwrap()
        .replace("max_recipients = 100", "max_recipients = 10")
        .replace("digest = \"sha256\"", "digest = \"md5\"")
        .replace("[store]", "[store]\ncolour = \"red\"")
        .replace("../certs/", &format!("{}/", certs().display()))
        + "[delivery]\ncheckpoint_every = \"0s\"\n";
    std::fs::write(&p, text).unwrap();
    let out = pecd()
        .args(["check-config", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "limits.max_recipients",
        "provider.digest",
        "store.colour: line ",
        "delivery.checkpoint_every",
    ] {
        assert!(err.contains(key), "{key} not in: {err}");
    }
    let out = pecd()
        .args(["check-config", "--config"])
        .arg(root().join("config/pecd.toml"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Well-formed but unusable: a signing key that is not the certificate's
    // is what `serve` would refuse, so check-config refuses it too.
    let mismatched = std::fs::read_to_string(root().join("config/pecd.toml"))
        .unwrap()
        .replace("../certs/", &format!("{}/", certs().display()))
        .replace("provider-a.key", "provider-b.key");
    let check = |text: String| {
        std::fs::write(&p, text).unwrap();
        pecd()
            .args(["check-config", "--config"])
            .arg(&p)
            .output()
            .unwrap()
    };
    let out = check(mismatched);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Our own index record sends other providers' presa in carico to a
    // mailbox that is not the service address: refused, naming the line.
    let index = std::fs::read_to_string(certs().join("index.ldif")).unwrap();
    let own = "mailReceipt: posta-certificata@pec.provider-a.test";
    assert!(index.contains(own));
    let elsewhere = dir.path().join("index.ldif");
    std::fs::write(
        &elsewhere,
        index.replace(own, "mailReceipt: ricevute@pec.provider-a.test"),
    )
    .unwrap();
    let text = std::fs::read_to_string(root().join("config/pecd.toml"))
        .unwrap()
        .replace("../certs/", &format!("{}/", certs().display()))
        .replace(
            &format!("{}/index.ldif", certs().display()),
            &elsewhere.display().to_string(),
        );
    let out = check(text);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mailReceipt ricevute@pec.provider-a.test")
            && err.contains("posta-certificata@pec.provider-a.test"),
        "{err}"
    );
}

/// The dev configuration with its data under `dir`; its path.
#[allow(clippy::unwrap_used)]
fn config_in(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg_path = dir.join("pecd.toml");
    let text = std::fs::read_to_string(root().join("config/pecd.toml"))
        .unwrap()
        .replace("../certs/", &format!("{}/", certs().display()))
        .replace(
            "../data/provider-a",
            &dir.join("data").display().to_string(),
        );
    std::fs::write(&cfg_path, text).unwrap();
    cfg_path
}

#[test]
fn log_commands_on_a_store() {
    use pecd::audit::{Event, LogRecord};
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = config_in(dir.path());
    {
        let store = pecd::store::Store::open(&dir.path().join("data/store"), "redb").unwrap();
        let mut b = pecd::store::Batch::new();
        let mut r = LogRecord::new(chrono::Utc::now(), Event::Acceptance);
        r.msgid = Some("<m1@client>".into());
        r.pec_id = Some("pecd.1@pec.provider-a.test".into());
        r.sender = Some("mario@pec.provider-a.test".into());
        r.append_to(&mut b);
        store.commit(b).unwrap();
    }
    let out = pecd()
        .args(["log", "verify", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact: 1 records"));
    let out = pecd()
        .args(["log", "search", "--msgid", "m1@client", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["event"], "acceptance");
    assert_eq!(line["seq"], 1);
}

#[test]
fn mailbox_cli_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = config_in(dir.path());
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = pecd()
            .args(args)
            .arg("--config")
            .arg(&cfg_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(
        &["mailbox", "add", "mario.rossi@pec.provider-a.test"],
        "una password lunga\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        &["mailbox", "add", "mario.rossi@pec.provider-a.test"],
        "una password lunga\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = run(&["mailbox", "add", "luca@pec.provider-a.test"], "corta\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8"));
    let out = run(&["mailbox", "list"], "");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.starts_with("mario.rossi@pec.provider-a.test\tactive\t"),
        "{listing}"
    );
    assert!(
        run(
            &["mailbox", "passwd", "mario.rossi@pec.provider-a.test"],
            "un'altra password\n"
        )
        .status
        .success()
    );
    assert!(
        run(
            &["mailbox", "remove", "mario.rossi@pec.provider-a.test"],
            ""
        )
        .status
        .success()
    );
    let out = run(
        &["mailbox", "remove", "mario.rossi@pec.provider-a.test"],
        "",
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let out = run(
        &["log", "search", "--to", "mario.rossi@pec.provider-a.test"],
        "",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
}

/// A store that cannot be opened for another reason than a running
/// daemon is reported as such, not as an admin endpoint that does not
/// answer (an admin token left from an earlier run notwithstanding).
#[test]
fn a_damaged_store_is_named_not_hidden_behind_the_admin_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = config_in(dir.path());
    let store = dir.path().join("data/store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("pecd.redb"), b"not a database at all").unwrap();
    std::fs::write(dir.path().join("data/admin.token"), b"stale").unwrap();
    let out = pecd()
        .args(["mailbox", "list", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("storage engine"), "{err}");
    assert!(!err.contains("admin endpoint"), "{err}");
}
