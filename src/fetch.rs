//! HTTPS GET of one small document (the provider index): HTTP/1.0 over
//! OpenSSL (one crypto stack), certificate and host name verified.
//!
//! Owns: that one request. Must not touch: what the document means.

use std::io::{Read, Write};
use std::time::Duration;

/// Largest document accepted (the national index is well under this).
const MAX_BYTES: usize = 64 << 20;

/// Fetch `url` (`https://host[:port]/path`), trusting `ca` (a PEM file)
/// or the system store, presenting `client` (certificate chain and key,
/// PEM) when given: the national index answers accredited providers only
/// (RT §7).
pub fn https_get(
    url: &str,
    ca: Option<&std::path::Path>,
    client: Option<(&std::path::Path, &std::path::Path)>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url}: only https:// URLs are fetched"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("{url}: bad port"))?),
        None => (authority, 443),
    };
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
        .map_err(|e| e.to_string())?;
    if let Some(ca) = ca {
        b.set_ca_file(ca)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if let Some((cert, key)) = client {
        b.set_certificate_chain_file(cert)
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        b.set_private_key_file(key, openssl::ssl::SslFiletype::PEM)
            .map_err(|e| format!("{}: {e}", key.display()))?;
        b.check_private_key()
            .map_err(|e| format!("{}: {e}", key.display()))?;
    }
    let connector = b.build();
    // Each address in turn (an unreachable IPv6 one must not hide the
    // IPv4 one that answers).
    let addrs: Vec<_> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| format!("{host}: {e}"))?
        .collect();
    let mut last = format!("{host}: no address");
    let mut tcp = None;
    for addr in &addrs {
        match std::net::TcpStream::connect_timeout(addr, timeout) {
            Ok(t) => {
                tcp = Some(t);
                break;
            }
            Err(e) => last = format!("{url} ({addr}): {e}"),
        }
    }
    let tcp = tcp.ok_or(last)?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(host, tcp)
        .map_err(|e| format!("{url}: TLS: {e}"))?;
    // HTTP/1.0: the body runs to the end of the connection (no chunking).
    tls.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: pecd\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("{url}: {e}"))?;
    let mut resp = Vec::new();
    tls.take(MAX_BYTES as u64 + 64 * 1024)
        .read_to_end(&mut resp)
        .map_err(|e| format!("{url}: {e}"))?;
    let split =
        memchr::memmem::find(&resp, b"\r\n\r\n").ok_or_else(|| format!("{url}: no HTTP header"))?;
    let head = String::from_utf8_lossy(&resp[..split]);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("{url}: HTTP {status}"));
    }
    let body = resp[split + 4..].to_vec();
    if body.len() > MAX_BYTES {
        return Err(format!("{url}: larger than {MAX_BYTES} bytes"));
    }
    Ok(body)
}
