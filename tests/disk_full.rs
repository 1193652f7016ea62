//! Disk full: the data directory on a small tmpfs. Submissions get a 4xx
//! once space runs out, nothing acknowledged is lost, and service resumes
//! when space returns (the tmpfs is grown). Needs root (mount).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::*;
use std::process::Command;
use std::time::Duration;

const MARIO: &str = "mario.rossi@pec.provider-a.test";

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Whether this machine lets the tests mount a tmpfs (root with
/// CAP_SYS_ADMIN, as on the CI and dev machines; not in an unprivileged
/// container, where these two tests say so loudly and stop).
fn can_mount(dir: &std::path::Path) -> bool {
    let probe = dir.join("probe");
    std::fs::create_dir_all(&probe).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&probe)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let _ = Command::new("umount").arg(&probe).status();
    } else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)");
    }
    ok
}

fn mount(dir: &std::path::Path, size: &str, remount: bool) {
    let opts = if remount {
        format!("remount,size={size}")
    } else {
        format!("size={size}")
    };
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
        .arg(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mounting a tmpfs needs root (the CI runs as root)");
}

#[test]
fn a_full_disk_gives_4xx_loses_nothing_and_service_resumes() {
    let dir = tempfile::tempdir().unwrap();
    if !can_mount(dir.path()) {
        return;
    }
    let data = dir.path().join("data-a");
    std::fs::create_dir_all(&data).unwrap();
    mount(&data, "6m", false);
    let _m = Mount(data.clone());
    let d = Daemon::start(Spec::new('a', dir.path(), free_port(), vec![]));
    let body = "x".repeat(15_000);
    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..400 {
        let msg = format!(
            "From: {MARIO}\r\nTo: {MARIO}\r\nSubject: pieno {i}\r\nMessage-ID: <full{i}@client.test>\r\n\r\n{body}\r\n"
        );
        match d.submit(MARIO, "password-mario", MARIO, &[MARIO], msg.as_bytes()) {
            Ok(()) => acked.push(i),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.expect("the disk never filled");
    eprintln!("acked={} refusal={refusal}", acked.len());
    assert!(
        refusal.contains("451") && refusal.contains("4.3.0"),
        "a temporary refusal: {refusal}"
    );
    assert!(!acked.is_empty());
    // Space returns: the daemon resumes and everything acknowledged is
    // certified (one accettazione each).
    mount(&data, "256m", true);
    std::thread::sleep(Duration::from_millis(500));
    let msg = format!(
        "From: {MARIO}\r\nTo: {MARIO}\r\nSubject: dopo\r\nMessage-ID: <after@client.test>\r\n\r\nx\r\n"
    );
    let mut ok = false;
    for _ in 0..20 {
        if d.submit(MARIO, "password-mario", MARIO, &[MARIO], msg.as_bytes())
            .is_ok()
        {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(ok, "service resumed");
    let subjects = |d: &Daemon| -> Vec<String> {
        d.mailbox(MARIO)
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .filter(|m| m.contains("X-Ricevuta: accettazione"))
            .filter_map(|m| {
                m.lines()
                    .find(|l| l.starts_with("Subject:"))
                    .map(str::to_string)
            })
            .collect()
    };
    wait_for("an accettazione for every acknowledged message", 60, || {
        let s = subjects(&d);
        acked
            .iter()
            .all(|i| s.iter().any(|l| l.ends_with(&format!("pieno {i}"))))
    });
    common::assert_log_verifies(&d.cfg);
}

#[test]
fn the_store_recovers_from_a_commit_that_failed_for_want_of_space() {
    let dir = tempfile::tempdir().unwrap();
    if !can_mount(dir.path()) {
        return;
    }
    let data = dir.path().join("store");
    std::fs::create_dir_all(&data).unwrap();
    mount(&data, "2m", false);
    let _m = Mount(data.clone());
    let store = pecd::store::Store::open(&data, "redb").unwrap();
    let mut failed = false;
    let mut committed = 0u32;
    for i in 0..200u32 {
        let mut b = pecd::store::Batch::new();
        b.put(
            pecd::store::Table::Meta,
            i.to_be_bytes().to_vec(),
            vec![7u8; 64 * 1024],
        );
        let mut r = pecd::audit::LogRecord::new(chrono::Utc::now(), pecd::audit::Event::Mailbox);
        r.detail = Some(format!("record {i}"));
        r.append_to(&mut b);
        if store.commit(b).is_err() {
            failed = true;
            break;
        }
        committed += 1;
    }
    assert!(failed && committed > 0, "the 2 MB store never filled");
    // Space returns: the next commit succeeds (redb reopened), earlier
    // commits are all there, and the log chain is intact.
    mount(&data, "64m", true);
    let mut b = pecd::store::Batch::new();
    b.put(pecd::store::Table::Meta, b"after".to_vec(), b"ok".to_vec());
    pecd::audit::LogRecord::new(chrono::Utc::now(), pecd::audit::Event::Mailbox).append_to(&mut b);
    store.commit(b).expect("commit after space returned");
    for i in 0..committed {
        assert!(
            store
                .get(pecd::store::Table::Meta, &i.to_be_bytes())
                .unwrap()
                .is_some(),
            "commit {i} lost"
        );
    }
    let status = pecd::audit::verify_chain(&store).unwrap();
    assert!(
        matches!(status, pecd::audit::ChainStatus::Intact { .. }),
        "{status:?} after {committed} commits"
    );
}
