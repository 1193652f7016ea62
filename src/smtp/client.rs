//! Outbound SMTP to other providers and external domains.
//!
//! Owns: one SMTP transaction over TCP with STARTTLS when offered, and an
//! outcome *per recipient* (general client crates abort the whole
//! transaction on one refused recipient; PEC needs each recipient's fate).
//! Replies are parsed with smtp-proto. TLS is opportunistic (RFC 7435):
//! authenticity of PEC traffic comes from the S/MIME signatures, and
//! providers' MX certificates are not uniformly publicly trusted.
//! Must not touch: the queue, PEC semantics.

use openssl::ssl::{SslContext, SslMethod, SslVerifyMode};
use smtp_proto::Response;
use smtp_proto::response::parser::ResponseReceiver;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// What happened to each recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub delivered: Vec<String>,
    /// 4xx: try again later.
    pub temporary: Vec<(String, String)>,
    /// 5xx: will never be accepted.
    pub permanent: Vec<(String, String)>,
}

/// A failure of the whole transaction (every recipient shares it).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("timeout waiting for the server")]
    Timeout,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server refused the whole transaction with this reply (`text`
    /// is the reply as [`Outcome`] records one: `554 5.7.1 why`).
    #[error("refused: {text}")]
    Refused { code: u16, text: String },
    /// The server would not open a session (its greeting, EHLO or STARTTLS
    /// reply): a fault of that host, not an answer about the message, so
    /// another MX host is tried and this one again later (as Postfix's
    /// `smtp_skip_5xx_greeting`).
    #[error("session refused by the server: {text}")]
    Unwilling { code: u16, text: String },
    /// The message was sent but its final reply never came: the server may
    /// have accepted it. Sending it elsewhere now could deliver it twice.
    #[error("outcome unknown after the data was sent: {0}")]
    AfterData(String),
}

impl Outcome {
    /// `recipients` share `reply`: delivered (250), to try again (4xx) or
    /// refused (5xx).
    fn settle(&mut self, recipients: Vec<String>, reply: &Response<String>) {
        let text = reply_text(reply);
        match reply.code {
            250 => self.delivered.extend(recipients),
            400..=499 => self
                .temporary
                .extend(recipients.into_iter().map(|r| (r, text.clone()))),
            _ => self
                .permanent
                .extend(recipients.into_iter().map(|r| (r, text.clone()))),
        }
    }
}

impl ClientError {
    /// The server's reply, for a refusal (`554 5.7.1 why`).
    pub fn reply(&self) -> Option<&str> {
        match self {
            ClientError::Refused { text, .. } | ClientError::Unwilling { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Whether retrying may help.
    pub fn is_temporary(&self) -> bool {
        !matches!(self, ClientError::Refused { code, .. } if *code >= 500)
    }

    /// Whether the message may have been accepted anyway.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, ClientError::AfterData(_))
    }
}

/// RFC 5321 §4.5.3.2.6: wait up to 10 minutes for the reply to the final dot.
const FINAL_REPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// RFC 5321 §4.5.3.2.5: each block of message data may take 3 minutes to
/// send; a large message to a slow peer takes as many as it needs.
const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(180);
const DATA_BLOCK: usize = 64 * 1024;

/// A host that does not answer the connection at all is not given the
/// command timeout (minutes): it holds a relay slot for nothing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Conn {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Conn {
    /// Connect and read the 220 greeting.
    async fn open(addr: SocketAddr, timeout: Duration) -> Result<Conn, ClientError> {
        let tcp = tokio::time::timeout(timeout.min(CONNECT_TIMEOUT), TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|source| ClientError::Connect { addr, source })?;
        // Commands and the message are written whole (see server.rs).
        let _ = tcp.set_nodelay(true);
        let mut c = Conn {
            stream: Box::new(tcp),
            buf: Vec::new(),
            timeout,
        };
        unwilling(expect(&c.reply().await?, 220))?;
        Ok(c)
    }

    /// One whole reply within the timeout: a peer that trickles a byte
    /// now and then does not get a new timeout for each.
    async fn reply(&mut self) -> Result<Response<String>, ClientError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut receiver = ResponseReceiver::default();
        loop {
            if !self.buf.is_empty() {
                let data = std::mem::take(&mut self.buf);
                let mut it = data.iter();
                match receiver.parse(&mut it) {
                    Ok(r) => {
                        self.buf = it.as_slice().to_vec();
                        return Ok(r);
                    }
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    Err(e) => return Err(ClientError::Protocol(format!("{e:?}"))),
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .map_err(|_| ClientError::Timeout)??;
            if n == 0 {
                return Err(ClientError::Protocol(
                    "connection closed by the server".into(),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn send(&mut self, line: &[u8]) -> Result<(), ClientError> {
        tokio::time::timeout(self.timeout, self.stream.write_all(line))
            .await
            .map_err(|_| ClientError::Timeout)??;
        Ok(())
    }

    /// Message data, block by block, each within its own time.
    async fn send_data(&mut self, data: &[u8]) -> Result<(), ClientError> {
        let per_block = self.timeout.max(DATA_BLOCK_TIMEOUT);
        for block in data.chunks(DATA_BLOCK) {
            tokio::time::timeout(per_block, self.stream.write_all(block))
                .await
                .map_err(|_| ClientError::Timeout)??;
        }
        Ok(())
    }

    async fn command(&mut self, line: &str) -> Result<Response<String>, ClientError> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }
}

/// A refusal before any mail transaction: the session's, not the message's.
fn unwilling(r: Result<(), ClientError>) -> Result<(), ClientError> {
    r.map_err(|e| match e {
        ClientError::Refused { code, text } => ClientError::Unwilling { code, text },
        e => e,
    })
}

fn expect(r: &Response<String>, ok: u16) -> Result<(), ClientError> {
    if r.code == ok {
        Ok(())
    } else {
        Err(ClientError::Refused {
            code: r.code,
            text: reply_text(r),
        })
    }
}

/// The enhanced status code of a reply text as [`Outcome`] records it
/// (`550 5.1.1 text` → `5.1.1`), if it has one.
pub fn enhanced_code(reply_text: &str) -> Option<&str> {
    reply_text.split_whitespace().nth(1).filter(|t| {
        let parts: Vec<&str> = t.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// `550 5.1.1 text`: the code, the enhanced status when given, the text.
fn reply_text(r: &Response<String>) -> String {
    let text = r.message.replace(['\r', '\n'], " ");
    if r.esc[0] == 0 {
        format!("{} {text}", r.code)
    } else {
        format!("{} {}.{}.{} {text}", r.code, r.esc[0], r.esc[1], r.esc[2])
    }
}

/// Dot-stuff and terminate message data (RFC 5321 §4.5.2).
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 8);
    let mut line_start = true;
    for &b in data {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// One client TLS context for the process. Built without loading a CA
/// bundle: verification is off (opportunistic TLS, see the module header),
/// and parsing the system bundle on every connection is what made relays
/// slow (OpenSSL 3.0 decoder locks).
fn tls_context() -> Result<&'static SslContext, ClientError> {
    static CTX: OnceLock<Result<SslContext, String>> = OnceLock::new();
    CTX.get_or_init(|| {
        let mut b = SslContext::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
        b.set_verify(SslVerifyMode::NONE);
        b.set_min_proto_version(Some(openssl::ssl::SslVersion::TLS1_2))
            .map_err(|e| e.to_string())?;
        // One read per socket batch, not two per record (see `server`).
        b.set_read_ahead(true);
        Ok(b.build())
    })
    .as_ref()
    .map_err(|e| ClientError::Tls(e.clone()))
}

/// An established session: greeted, EHLO'd, upgraded to TLS when offered.
struct Session {
    conn: Conn,
    eight_bit: bool,
    pipelining: bool,
    /// When the session was last handed back (idle sessions age out).
    idle_since: std::time::Instant,
}

impl Session {
    async fn open(addr: SocketAddr, helo: &str, timeout: Duration) -> Result<Session, ClientError> {
        let mut c = Conn::open(addr, timeout).await?;
        let mut ehlo = c.command(&format!("EHLO {helo}")).await?;
        unwilling(expect(&ehlo, 250))?;
        let has = |r: &Response<String>, cap: &str| {
            r.message.lines().any(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|w| w.eq_ignore_ascii_case(cap))
            })
        };
        if has(&ehlo, "STARTTLS") {
            unwilling(expect(&c.command("STARTTLS").await?, 220))?;
            let ssl = openssl::ssl::Ssl::new(tls_context()?)
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            let mut tls = tokio_openssl::SslStream::new(ssl, c.stream)
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            tokio::time::timeout(timeout, Pin::new(&mut tls).connect())
                .await
                .map_err(|_| ClientError::Timeout)?
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            c = Conn {
                stream: Box::new(tls),
                buf: Vec::new(),
                timeout,
            };
            ehlo = c.command(&format!("EHLO {helo}")).await?;
            unwilling(expect(&ehlo, 250))?;
        }
        Ok(Session {
            eight_bit: has(&ehlo, "8BITMIME"),
            pipelining: has(&ehlo, "PIPELINING"),
            conn: c,
            idle_since: std::time::Instant::now(),
        })
    }

    /// One mail transaction. `Ok((outcome, reusable))`: whether the session
    /// is back in a clean state for the next transaction.
    async fn transaction(
        &mut self,
        mail_from: &str,
        rcpt_to: &[String],
        data: &[u8],
        timeout: Duration,
    ) -> Result<(Outcome, bool), ClientError> {
        let eight_bit_data = data.iter().any(|b| *b >= 0x80);
        if eight_bit_data && !self.eight_bit {
            // RFC 6152 §3: 8-bit data only to a server that takes it, and a
            // signed message cannot be converted to 7 bits: a permanent
            // failure for every recipient (RFC 3463 5.6.3), nothing sent.
            let why = "554 5.6.3 the server does not accept 8-bit data (no 8BITMIME) and a signed message cannot be converted".to_string();
            let outcome = Outcome {
                permanent: rcpt_to.iter().map(|r| (r.clone(), why.clone())).collect(),
                ..Outcome::default()
            };
            return Ok((outcome, true));
        }
        let c = &mut self.conn;
        c.timeout = timeout;
        let body = if eight_bit_data { " BODY=8BITMIME" } else { "" };
        let mail = format!("MAIL FROM:<{mail_from}>{body}\r\n");
        let rcpts: Vec<String> = rcpt_to
            .iter()
            .map(|r| format!("RCPT TO:<{r}>\r\n"))
            .collect();
        // RFC 2920: with PIPELINING, MAIL, the RCPTs and DATA go in one
        // write and their replies are read in order.
        let (mail_reply, rcpt_replies, data_reply) = if self.pipelining {
            let mut group = mail.into_bytes();
            rcpts
                .iter()
                .for_each(|r| group.extend_from_slice(r.as_bytes()));
            group.extend_from_slice(b"DATA\r\n");
            c.send(&group).await?;
            let m = c.reply().await?;
            let mut rr = Vec::with_capacity(rcpts.len());
            for _ in &rcpts {
                rr.push(c.reply().await?);
            }
            let d = c.reply().await?;
            (m, rr, Some(d))
        } else {
            c.send(mail.as_bytes()).await?;
            let m = c.reply().await?;
            let mut rr = Vec::with_capacity(rcpts.len());
            if m.code == 250 {
                for r in &rcpts {
                    c.send(r.as_bytes()).await?;
                    rr.push(c.reply().await?);
                }
            }
            (m, rr, None)
        };
        if mail_reply.code != 250 {
            // The data phase cannot have opened (no valid MAIL).
            let _ = c.command("RSET").await;
            return Err(ClientError::Refused {
                code: mail_reply.code,
                text: reply_text(&mail_reply),
            });
        }
        let mut out = Outcome::default();
        let mut accepted = Vec::new();
        for (r, reply) in rcpt_to.iter().zip(&rcpt_replies) {
            let text = reply_text(reply);
            match reply.code {
                250 | 251 => accepted.push(r.clone()),
                400..=499 => out.temporary.push((r.clone(), text)),
                _ => out.permanent.push((r.clone(), text)),
            }
        }
        let go = match data_reply {
            Some(d) => d,
            None if accepted.is_empty() => {
                let reusable = c.command("RSET").await.is_ok_and(|r| r.code == 250);
                return Ok((out, reusable));
            }
            None => c.command("DATA").await?,
        };
        if go.code != 354 {
            let reusable = c.command("RSET").await.is_ok_and(|r| r.code == 250);
            if accepted.is_empty() {
                // Nothing to carry: each recipient has its RCPT reply.
                return Ok((out, reusable));
            }
            if !(400..600).contains(&go.code) {
                // Neither "go on" nor a refusal (a peer out of step):
                // nothing was sent, nothing is settled.
                return Err(ClientError::Protocol(format!(
                    "unexpected reply to DATA: {}",
                    reply_text(&go)
                )));
            }
            // DATA refused: its reply is the outcome of the recipients it
            // would have carried; the others keep their own RCPT reply.
            out.settle(accepted, &go);
            return Ok((out, reusable));
        }
        if accepted.is_empty() {
            // Pipelined DATA opened although nothing was accepted (a
            // server that ignores RFC 2920 §3.1): end it empty-handed.
            c.send(b".\r\n").await?;
            let _ = c.reply().await;
            return Ok((out, false));
        }
        c.send_data(&dot_stuff(data)).await?;
        c.timeout = FINAL_REPLY_TIMEOUT;
        let done = c
            .reply()
            .await
            .map_err(|e| ClientError::AfterData(e.to_string()))?;
        c.timeout = timeout;
        out.settle(accepted, &done);
        // 421: the server is closing the connection (RFC 5321 §3.8).
        Ok((out, done.code != 421))
    }
}

/// Deliver one message to one server over a fresh connection.
pub async fn deliver(
    addr: SocketAddr,
    helo: &str,
    mail_from: &str,
    rcpt_to: &[String],
    data: &[u8],
    timeout: Duration,
) -> Result<Outcome, ClientError> {
    let mut s = Session::open(addr, helo, timeout).await?;
    let (out, _) = s.transaction(mail_from, rcpt_to, data, timeout).await?;
    let _ = s.conn.command("QUIT").await;
    Ok(out)
}

/// Idle outbound sessions kept per peer address, so that a busy pair of
/// providers does not pay a TCP + STARTTLS handshake per message (three
/// relays per certified message: envelope, presa in carico, consegna).
/// A reused session that turns out dead before any data was sent is
/// replaced by a fresh one; nothing is ever sent twice because of it.
pub struct Pool {
    idle: std::sync::Mutex<std::collections::HashMap<SocketAddr, Vec<Session>>>,
    max_idle_per_peer: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// `idle_timeout` must stay well below the peers' command timeout
    /// (RFC 5321 §4.5.3.2.7: at least 5 minutes).
    pub fn new(max_idle_per_peer: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: Default::default(),
            max_idle_per_peer,
            idle_timeout,
        }
    }

    fn take(&self, addr: SocketAddr) -> Option<Session> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&addr)?;
        while let Some(s) = list.pop() {
            if s.idle_since.elapsed() < self.idle_timeout {
                return Some(s);
            }
        }
        None
    }

    fn give_back(&self, addr: SocketAddr, mut s: Session) {
        s.idle_since = std::time::Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        list.retain(|s| s.idle_since.elapsed() < self.idle_timeout);
        if list.len() < self.max_idle_per_peer {
            list.push(s);
        }
    }

    /// Deliver one message to one server, reusing an idle session if any.
    pub async fn deliver(
        &self,
        addr: SocketAddr,
        helo: &str,
        mail_from: &str,
        rcpt_to: &[String],
        data: &[u8],
        timeout: Duration,
    ) -> Result<Outcome, ClientError> {
        if let Some(mut s) = self.take(addr) {
            match s.transaction(mail_from, rcpt_to, data, timeout).await {
                Ok((out, reusable)) => {
                    if reusable {
                        self.give_back(addr, s);
                    }
                    return Ok(out);
                }
                // Sent, final reply lost: never re-send it now.
                Err(e) if e.is_ambiguous() => return Err(e),
                // A refusal is the peer's answer, whatever the session.
                // (421 is the server closing the session: stale.)
                Err(e @ ClientError::Refused { code, .. }) if code != 421 => return Err(e),
                // The peer closed the idle session: nothing was
                // accepted, so a fresh session may carry it.
                Err(_) => {}
            }
        }
        let mut s = Session::open(addr, helo, timeout).await?;
        let (out, reusable) = s.transaction(mail_from, rcpt_to, data, timeout).await?;
        if reusable {
            self.give_back(addr, s);
        }
        Ok(out)
    }
}

/// Deliver one message to one mailbox over LMTP (RFC 2033): LHLO, no TLS
/// (a local mailbox server), and after DATA one reply per accepted
/// recipient — here exactly one.
pub async fn deliver_lmtp(
    addr: SocketAddr,
    lhlo: &str,
    mail_from: &str,
    rcpt: &str,
    data: &[u8],
    timeout: Duration,
) -> Result<Outcome, ClientError> {
    let mut c = Conn::open(addr, timeout).await?;
    expect(&c.command(&format!("LHLO {lhlo}")).await?, 250)?;
    expect(&c.command(&format!("MAIL FROM:<{mail_from}>")).await?, 250)?;
    let mut out = Outcome::default();
    let r = c.command(&format!("RCPT TO:<{rcpt}>")).await?;
    let text = reply_text(&r);
    match r.code {
        250 | 251 => {}
        400..=499 => {
            out.temporary.push((rcpt.to_string(), text));
            let _ = c.command("QUIT").await;
            return Ok(out);
        }
        _ => {
            out.permanent.push((rcpt.to_string(), text));
            let _ = c.command("QUIT").await;
            return Ok(out);
        }
    }
    expect(&c.command("DATA").await?, 354)?;
    c.send_data(&dot_stuff(data)).await?;
    c.timeout = FINAL_REPLY_TIMEOUT;
    let done = c
        .reply()
        .await
        .map_err(|e| ClientError::AfterData(e.to_string()))?;
    out.settle(vec![rcpt.to_string()], &done);
    let _ = c.command("QUIT").await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes() {
        assert_eq!(enhanced_code("552 5.2.2 Mailbox full"), Some("5.2.2"));
        assert_eq!(enhanced_code("550 Relaying denied"), None);
        assert_eq!(enhanced_code("550 a.b.c x"), None);
    }

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b".a\r\nb\r\n.\r\n"), b"..a\r\nb\r\n..\r\n.\r\n");
        assert_eq!(dot_stuff(b"x"), b"x\r\n.\r\n");
    }
}
