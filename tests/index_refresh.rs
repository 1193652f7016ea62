//! The provider index refresh: from the local file or an https URL (a
//! server started here with the dev TLS identity), replacing the running
//! index only when the new one parses; otherwise the last good copy stays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::certs;
use common::daemon::*;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

/// An HTTPS server on 127.0.0.1 serving whatever `body` holds, any path.
fn https_server(body: Arc<Mutex<Vec<u8>>>) -> u16 {
    https_server_for(body, false)
}

/// [`https_server`], answering only clients with a certificate of the dev
/// CA when `clients_only` (as the national index does, RT §7).
fn https_server_for(body: Arc<Mutex<Vec<u8>>>, clients_only: bool) -> u16 {
    let mut b =
        openssl::ssl::SslAcceptor::mozilla_intermediate_v5(openssl::ssl::SslMethod::tls()).unwrap();
    b.set_certificate_chain_file(certs().join("localhost.pem"))
        .unwrap();
    b.set_private_key_file(
        certs().join("localhost.key"),
        openssl::ssl::SslFiletype::PEM,
    )
    .unwrap();
    if clients_only {
        b.set_ca_file(certs().join("ca.pem")).unwrap();
        b.set_verify(
            openssl::ssl::SslVerifyMode::PEER | openssl::ssl::SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        );
    }
    let acceptor = b.build();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let Ok(mut tls) = acceptor.accept(s) else {
                continue;
            };
            let mut req = [0u8; 2048];
            let _ = tls.read(&mut req);
            let data = body.lock().unwrap().clone();
            let _ = tls.write_all(
                format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", data.len()).as_bytes(),
            );
            let _ = tls.write_all(&data);
            let _ = tls.shutdown();
        }
    });
    port
}

fn metric(d: &Daemon, name: &str) -> f64 {
    let (_, v) = d.api("", "GET", "/metrics", None);
    v.as_str()
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|x| x.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_bad_local_index_is_refused_and_the_last_good_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("index.ldif");
    std::fs::copy(certs().join("index.ldif"), &local).unwrap();
    // The harness config points at certs/index.ldif; use our copy.
    let d = Daemon::start(Spec::new('a', dir.path(), free_port(), vec![]));
    let cfg = std::fs::read_to_string(&d.cfg).unwrap().replace(
        &format!("{}/index.ldif", certs().display()),
        &local.display().to_string(),
    );
    std::fs::write(&d.cfg, cfg).unwrap();
    assert_eq!(d.api(&d.admin_token(), "POST", "/reload", None).0, 200);
    let (s, v) = d.api(&d.admin_token(), "POST", "/index/refresh", None);
    assert_eq!((s, v["providers"].as_u64()), (200, Some(2)), "{v}");
    std::fs::copy(certs().join("index-bad.ldif"), &local).unwrap();
    let (s, v) = d.api(&d.admin_token(), "POST", "/index/refresh", None);
    assert_eq!(s, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains("line"), "{v}");
    assert_eq!(
        metric(&d, "pecd_provider_index_refresh_failures_total"),
        1.0
    );
    assert_eq!(metric(&d, "pecd_provider_index_providers"), 2.0);
    // Still working: a message is accepted and delivered as before.
    let mario = "mario.rossi@pec.provider-a.test";
    d.submit(mario, "password-mario", mario, &[mario], format!("From: {mario}\r\nTo: {mario}\r\nSubject: x\r\nMessage-ID: <idx@client.test>\r\n\r\nx\r\n").as_bytes())
        .unwrap();
    wait_for("consegna", 20, || {
        d.mailbox(mario)
            .iter()
            .any(|m| String::from_utf8_lossy(m).contains("X-Ricevuta: avvenuta-consegna"))
    });
}

#[test]
fn an_index_fetched_over_https_replaces_the_local_copy_only_when_it_parses() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("index.ldif");
    std::fs::copy(certs().join("index.ldif"), &local).unwrap();
    let served = Arc::new(Mutex::new(Vec::new()));
    let good = format!(
        "{}\n# refreshed\n",
        std::fs::read_to_string(certs().join("index.ldif")).unwrap()
    );
    *served.lock().unwrap() = good.clone().into_bytes();
    let port = https_server(served.clone());
    let d = Daemon::start(Spec::new('a', dir.path(), free_port(), vec![]));
    fetching(&d, &local, port)("");
    let (s, v) = d.api(&d.admin_token(), "POST", "/index/refresh", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        std::fs::read_to_string(&local).unwrap(),
        good,
        "the fetched copy is the local one"
    );
    // A broken download changes nothing.
    *served.lock().unwrap() = b"dn: garbage\nproviderCertificateHash: zz\n".to_vec();
    let (s, _) = d.api(&d.admin_token(), "POST", "/index/refresh", None);
    assert_eq!(s, 422);
    assert_eq!(std::fs::read_to_string(&local).unwrap(), good);
}

/// A harness config `base` whose index is fetched from the test server on
/// `port` into `local`, with `extra` provider keys.
fn index_fetched(base: &str, local: &std::path::Path, port: u16, extra: &str) -> String {
    base.replace(
        &format!("provider_index = \"{}/index.ldif\"", certs().display()),
        &format!(
            "provider_index = \"{}\"\nindex_url = \"https://localhost:{port}/igpec\"\nindex_url_ca = \"{}/ca.pem\"\n{extra}",
            local.display(),
            certs().display()
        ),
    )
}

/// A reconfiguration of `d`'s provider section: [`index_fetched`], then
/// reloaded.
fn fetching<'a>(d: &'a Daemon, local: &'a std::path::Path, port: u16) -> impl Fn(&str) + 'a {
    let base = std::fs::read_to_string(&d.cfg).unwrap();
    move |extra: &str| {
        std::fs::write(&d.cfg, index_fetched(&base, local, port, extra)).unwrap();
        assert_eq!(d.api(&d.admin_token(), "POST", "/reload", None).0, 200);
    }
}

/// `data` signed as a CMS with attached content (DER), as the published
/// index is (RT §7), by the dev identity `who`.
fn signed(data: &[u8], who: &str) -> Vec<u8> {
    let cert =
        openssl::x509::X509::from_pem(&std::fs::read(certs().join(format!("{who}.pem"))).unwrap())
            .unwrap();
    let key = openssl::pkey::PKey::private_key_from_pem(
        &std::fs::read(certs().join(format!("{who}.key"))).unwrap(),
    )
    .unwrap();
    openssl::cms::CmsContentInfo::sign(
        Some(&cert),
        Some(&key),
        None,
        Some(data),
        openssl::cms::CMSOptions::BINARY,
    )
    .unwrap()
    .to_der()
    .unwrap()
}

#[test]
fn a_signed_index_is_opened_only_when_its_signer_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("index.ldif");
    std::fs::copy(certs().join("index.ldif"), &local).unwrap();
    let ldif = format!(
        "{}\n# signed\n",
        std::fs::read_to_string(certs().join("index.ldif")).unwrap()
    );
    let served = Arc::new(Mutex::new(signed(ldif.as_bytes(), "provider-a")));
    let port = https_server(served.clone());
    let d = Daemon::start(Spec::new('a', dir.path(), free_port(), vec![]));
    let configure = fetching(&d, &local, port);
    let refresh = || d.api(&d.admin_token(), "POST", "/index/refresh", None);
    // Signed by a certificate of the trusted CA: opened, the LDIF inside
    // becomes the local copy.
    configure("");
    let (s, v) = refresh();
    assert_eq!(s, 200, "{v}");
    assert_eq!(std::fs::read_to_string(&local).unwrap(), ldif);
    // One byte of the signed content changed: refused, nothing replaced.
    let mut bad = signed(format!("{ldif}# altered\n").as_bytes(), "provider-a");
    let at = bad.windows(8).position(|w| w == b"# altere").unwrap();
    bad[at + 2] = b'A';
    *served.lock().unwrap() = bad;
    let (s, v) = refresh();
    assert_eq!(s, 422, "{v}");
    assert_eq!(std::fs::read_to_string(&local).unwrap(), ldif);
    // With the index's signer named, only it will do, and a plain LDIF
    // is not an index any more.
    configure(&format!(
        "index_signers = \"{}/provider-b.pem\"",
        certs().display()
    ));
    *served.lock().unwrap() = signed(ldif.as_bytes(), "provider-a");
    assert_eq!(refresh().0, 422);
    *served.lock().unwrap() = ldif.clone().into_bytes();
    assert_eq!(refresh().0, 422);
    let fresh = format!("{ldif}# by B\n");
    *served.lock().unwrap() = signed(fresh.as_bytes(), "provider-b");
    let (s, v) = refresh();
    assert_eq!(s, 200, "{v}");
    assert_eq!(std::fs::read_to_string(&local).unwrap(), fresh);
}

/// A TLS client identity issued by the dev CA (`clientAuth`), made with
/// the `openssl` command: (certificate, key).
fn client_identity(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (key, csr, cert, ext) = (
        dir.join("client.key"),
        dir.join("client.csr"),
        dir.join("client.pem"),
        dir.join("client.ext"),
    );
    std::fs::write(&ext, "extendedKeyUsage = clientAuth\n").unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    for args in [
        vec![
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/O=Provider A S.p.A./CN=pecd index client",
            "-keyout",
            &path(&key),
            "-out",
            &path(&csr),
        ],
        vec![
            "x509",
            "-req",
            "-in",
            &path(&csr),
            "-CA",
            &path(&certs().join("ca.pem")),
            "-CAkey",
            &path(&certs().join("ca.key")),
            "-set_serial",
            "4242",
            "-days",
            "2",
            "-extfile",
            &path(&ext),
            "-out",
            &path(&cert),
        ],
    ] {
        common::output_ok(std::process::Command::new("openssl").args(&args));
    }
    (cert, key)
}

#[test]
fn the_index_is_fetched_with_the_providers_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("index.ldif");
    std::fs::copy(certs().join("index.ldif"), &local).unwrap();
    let ldif = format!(
        "{}\n# for accredited providers\n",
        std::fs::read_to_string(certs().join("index.ldif")).unwrap()
    );
    let port = https_server_for(Arc::new(Mutex::new(ldif.clone().into_bytes())), true);
    let d = Daemon::start(Spec::new('a', dir.path(), free_port(), vec![]));
    let configure = fetching(&d, &local, port);
    let refresh = || d.api(&d.admin_token(), "POST", "/index/refresh", None);
    // Without a client certificate the server will not talk.
    configure("");
    assert_ne!(refresh().0, 200);
    assert_ne!(std::fs::read_to_string(&local).unwrap(), ldif);
    let (cert, key) = client_identity(dir.path());
    configure(&format!(
        "index_client_cert = \"{}\"\nindex_client_key = \"{}\"",
        cert.display(),
        key.display()
    ));
    let (s, v) = refresh();
    assert_eq!(s, 200, "{v}");
    assert_eq!(std::fs::read_to_string(&local).unwrap(), ldif);
}

/// A daemon restarted more often than `provider.index_refresh` still
/// refreshes an old local copy: its age, not the process's, decides.
#[test]
fn an_old_local_index_is_refreshed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("index.ldif");
    std::fs::copy(certs().join("index.ldif"), &local).unwrap();
    let fresh = format!(
        "{}\n# refreshed at start\n",
        std::fs::read_to_string(certs().join("index.ldif")).unwrap()
    );
    let port = https_server(Arc::new(Mutex::new(fresh.clone().into_bytes())));
    let mut d = Daemon::start(Spec::new('a', dir.path(), free_port(), vec![]));
    d.kill();
    let base = std::fs::read_to_string(&d.cfg).unwrap();
    std::fs::write(&d.cfg, index_fetched(&base, &local, port, "")).unwrap();
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400);
    std::fs::File::options()
        .write(true)
        .open(&local)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    d.spawn();
    wait_for("the index refreshed at start", 20, || {
        std::fs::read_to_string(&local).is_ok_and(|t| t == fresh)
    });
}
