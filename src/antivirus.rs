//! Virus scanning through clamd (ClamAV's daemon), RT §8.4 / DPR 68/2005
//! art. 12: the INSTREAM command over TCP or a Unix socket.
//!
//! Owns: the clamd protocol and its verdicts. Must not touch: PEC
//! decisions (the caller turns a verdict into a notice), the store.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

/// What clamd said about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    Clean,
    /// The signature name clamd reported.
    Infected(String),
}

/// clamd could not give a verdict.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("clamd at {0}: {1}")]
    Io(String, std::io::Error),
    #[error("clamd answered {0:?}")]
    Protocol(String),
}

#[derive(Debug, Clone)]
enum Target {
    Tcp(String),
    Unix(PathBuf),
}

/// A clamd to ask.
#[derive(Debug, Clone)]
pub struct Clamd {
    target: Target,
    timeout: Duration,
}

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

impl Clamd {
    /// `host:port`, or an absolute path to clamd's Unix socket.
    pub fn new(address: &str, timeout: Duration) -> Clamd {
        let target = if address.starts_with('/') {
            Target::Unix(PathBuf::from(address))
        } else {
            Target::Tcp(address.to_string())
        };
        Clamd { target, timeout }
    }

    fn name(&self) -> String {
        match &self.target {
            Target::Tcp(a) => a.clone(),
            Target::Unix(p) => p.display().to_string(),
        }
    }

    fn connect(&self) -> std::io::Result<Box<dyn Conn>> {
        match &self.target {
            Target::Tcp(a) => {
                let addr = std::net::ToSocketAddrs::to_socket_addrs(a)?
                    .next()
                    .ok_or_else(|| std::io::Error::other("no address"))?;
                let s = std::net::TcpStream::connect_timeout(&addr, self.timeout)?;
                s.set_read_timeout(Some(self.timeout))?;
                s.set_write_timeout(Some(self.timeout))?;
                Ok(Box::new(s))
            }
            Target::Unix(p) => {
                let s = std::os::unix::net::UnixStream::connect(p)?;
                s.set_read_timeout(Some(self.timeout))?;
                s.set_write_timeout(Some(self.timeout))?;
                Ok(Box::new(s))
            }
        }
    }

    /// Scan `data` (a whole message: clamd decodes MIME parts itself).
    pub fn scan(&self, data: &[u8]) -> Result<Scan, ScanError> {
        let io = |e| ScanError::Io(self.name(), e);
        let mut c = self.connect().map_err(io)?;
        c.write_all(b"zINSTREAM\0").map_err(io)?;
        for chunk in data.chunks(256 * 1024) {
            c.write_all(&(chunk.len() as u32).to_be_bytes())
                .map_err(io)?;
            c.write_all(chunk).map_err(io)?;
        }
        c.write_all(&[0, 0, 0, 0]).map_err(io)?;
        let mut reply = Vec::new();
        c.read_to_end(&mut reply).map_err(io)?;
        parse_reply(&reply)
    }
}

/// `stream: OK`, `stream: <name> FOUND`, anything else is an error (size
/// limit exceeded, a broken database…).
fn parse_reply(reply: &[u8]) -> Result<Scan, ScanError> {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\0', '\n']).trim();
    let body = text.strip_prefix("stream:").map(str::trim).unwrap_or(text);
    if body == "OK" {
        Ok(Scan::Clean)
    } else if let Some(name) = body.strip_suffix(" FOUND") {
        Ok(Scan::Infected(name.trim().to_string()))
    } else {
        Err(ScanError::Protocol(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(parse_reply(b"stream: OK\0").unwrap(), Scan::Clean);
        assert_eq!(
            parse_reply(b"stream: Eicar-Test-Signature FOUND\0").unwrap(),
            Scan::Infected("Eicar-Test-Signature".into())
        );
        assert!(parse_reply(b"INSTREAM size limit exceeded. ERROR\0").is_err());
        assert!(parse_reply(b"").is_err());
    }

    #[test]
    fn an_absent_clamd_is_an_error_not_a_verdict() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Clamd::new(&format!("127.0.0.1:{port}"), Duration::from_secs(2));
        assert!(matches!(c.scan(b"x"), Err(ScanError::Io(..))));
    }
}
