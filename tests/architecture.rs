//! Module boundaries, checked mechanically: only `smime` touches OpenSSL's
//! CMS/PKCS#7 (and X.509 verification); `pec` stays free of I/O and crypto
//! (save SHA-1 for the breve hashes); only `store` uses a storage engine;
//! only the network edges open sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn module_boundaries_hold() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 10);
    let mut violations = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&f).unwrap();
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let in_smime = rel.starts_with("smime/");
        for needle in [
            "openssl::cms",
            "openssl::pkcs7",
            "openssl::x509::store",
            "openssl_sys",
            "CMS_",
        ] {
            if !in_smime && code.contains(needle) {
                violations.push(format!("{rel}: uses {needle} outside smime/"));
            }
        }
        if rel.starts_with("pec/") {
            for needle in ["std::fs", "TcpStream", "tokio", "openssl::"] {
                let allowed = needle == "openssl::"
                    && rel == "pec/breve.rs"
                    && !code.contains("openssl::pkey");
                if code.contains(needle) && !allowed {
                    violations.push(format!("{rel}: pec/ must stay pure, found {needle}"));
                }
            }
        }
        // The smime FFI shim and the one mallopt call (malloc.rs).
        if !rel.starts_with("smime/") && rel != "malloc.rs" && code.contains("unsafe") {
            violations.push(format!(
                "{rel}: unsafe outside the smime FFI shim and malloc.rs"
            ));
        }
        // The I/O shells: listeners, the SMTP/LMTP client, the admin API,
        // the clamd client, the index fetch.
        let may_open_sockets = [
            "server.rs",
            "server/",
            "smtp/client",
            "admin.rs",
            "admin/",
            "antivirus.rs",
            "fetch.rs",
        ]
        .iter()
        .any(|p| rel.starts_with(p));
        if !may_open_sockets
            && ["TcpStream", "TcpListener", "UdpSocket"]
                .iter()
                .any(|n| code.contains(n))
        {
            violations.push(format!(
                "{rel}: opens sockets outside server/, smtp/client, admin/, antivirus"
            ));
        }
        if !rel.starts_with("store/") && (code.contains("redb::") || code.contains("sled::")) {
            violations.push(format!("{rel}: only store/ may use a storage engine"));
        }
        if !code.starts_with("//!") && !text.trim_start().starts_with("//!") {
            violations.push(format!("{rel}: module must open with a //! header"));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
