//! SMTP listeners: the I/O shell around [`Session`] (mini-redis pattern:
//! a semaphore bounds connections, shutdown is broadcast).
//!
//! Owns: sockets, TLS (tokio-openssl, the same OpenSSL as S/MIME), timeouts,
//! and calling the [`App`] for credentials and messages. Must not touch: PEC
//! logic or the store directly.

use crate::app::App;
use crate::smtp::reply::Reply;
use crate::smtp::session::{Event, Mode, Session, SessionConfig};
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// During DATA, every this many bytes received add a second to the data
/// timeout (about 80 kbit/s: a 100 MB message gets close to 3 hours).
const DATA_MIN_RATE: u64 = 10_000;

/// Errors binding or configuring listeners.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS identity: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A connection, plain or TLS, that still knows its TCP socket (for
/// socket options while it runs).
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {
    fn tcp(&self) -> &tokio::net::TcpStream;
}

impl Stream for tokio::net::TcpStream {
    fn tcp(&self) -> &tokio::net::TcpStream {
        self
    }
}

impl Stream for tokio_openssl::SslStream<Box<dyn Stream>> {
    fn tcp(&self) -> &tokio::net::TcpStream {
        self.get_ref().tcp()
    }
}

/// Build the TLS acceptor from the configured certificate chain and key
/// (once per configuration: a reload brings a new one for new sessions).
pub fn acceptor(tls: &crate::config::TlsConfig) -> Result<Arc<SslAcceptor>, ServerError> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    b.set_certificate_chain_file(&tls.cert)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.cert.display())))?;
    b.set_private_key_file(&tls.key, SslFiletype::PEM)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.key.display())))?;
    b.check_private_key()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    // OpenSSL otherwise reads each record with two reads (its header, then
    // its body): with read-ahead it takes what the socket has at once.
    b.set_read_ahead(true);
    Ok(Arc::new(b.build()))
}

/// The listeners of one instance.
#[derive(Clone, Copy, Debug)]
struct Listener {
    mode: Mode,
    implicit_tls: bool,
}

impl Listener {
    /// The `listener` label of the SMTP metrics.
    fn label(&self) -> &'static str {
        match (self.mode, self.implicit_tls) {
            (Mode::Inbound, _) => "inbound",
            (Mode::Submission, true) => "submissions",
            (Mode::Submission, false) => "submission",
        }
    }
}

/// Bind every configured listener and serve until `shutdown` flips.
/// Returns the bound addresses once listening (port 0 gets a free port).
pub async fn start(
    app: Arc<App>,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<(String, SocketAddr)>, ServerError> {
    // One pool of connection slots for the submission listeners, one for
    // the MX: anyone on the Internet may open MX connections, and must not
    // keep the provider's own users from submitting.
    let max = app.cfg().limits.max_connections;
    let (users, peers) = (Arc::new(Semaphore::new(max)), Arc::new(Semaphore::new(max)));
    // The message memory likewise: slow MX peers holding large messages
    // must not leave none for the users' submissions.
    let (users_data, peers_data) = (
        Arc::new(DataMemory::default()),
        Arc::new(DataMemory::default()),
    );
    let mut bound = Vec::new();
    let l = &app.cfg().listen;
    for (name, addr, kind) in [
        (
            "submission",
            l.submission,
            Listener {
                mode: Mode::Submission,
                implicit_tls: false,
            },
        ),
        (
            "submissions",
            l.submissions,
            Listener {
                mode: Mode::Submission,
                implicit_tls: true,
            },
        ),
        (
            "inbound",
            l.inbound,
            Listener {
                mode: Mode::Inbound,
                implicit_tls: false,
            },
        ),
    ] {
        let Some(addr) = addr else { continue };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        bound.push((name.to_string(), local));
        tracing::info!(event = "listening", listener = name, addr = %local);
        let limits = match kind.mode {
            Mode::Submission => (users.clone(), users_data.clone()),
            Mode::Inbound => (peers.clone(), peers_data.clone()),
        };
        tokio::spawn(accept_loop(
            listener,
            kind,
            app.clone(),
            limits,
            shutdown.clone(),
        ));
    }
    Ok(bound)
}

async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    app: Arc<App>,
    (limit, held): (Arc<Semaphore>, Arc<DataMemory>),
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(event = "accept_failed", error = %e);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Replies are written whole, once each: Nagle's algorithm would only
        // hold a reply back until the peer's delayed ACK (up to 40 ms).
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            let mut tcp = tcp;
            let busy = Reply::new(421, (4, 3, 2), "Too many connections, try again later");
            // A fresh socket's buffer takes these bytes at once; the bound
            // only keeps the accept loop from ever waiting on a peer.
            let wait = std::time::Duration::from_secs(1);
            let _ = tokio::time::timeout(wait, tcp.write_all(&busy.to_bytes())).await;
            continue;
        };
        // The TLS identity of the configuration current at accept time.
        let (app, tls) = (app.clone(), app.cfg().tls_acceptor.clone());
        let held = DataClaim {
            pool: held.clone(),
            bytes: 0,
        };
        tokio::spawn(async move {
            if let Err(e) = connection(tcp, peer, kind, app, tls, held).await {
                tracing::debug!(event = "connection_ended", peer = %peer, error = %e);
            }
            drop(permit);
        });
    }
}

async fn tls_accept(
    acceptor: &SslAcceptor,
    s: Box<dyn Stream>,
) -> std::io::Result<Box<dyn Stream>> {
    let ssl = openssl::ssl::Ssl::new(acceptor.context()).map_err(std::io::Error::other)?;
    let mut tls = tokio_openssl::SslStream::new(ssl, s).map_err(std::io::Error::other)?;
    Pin::new(&mut tls)
        .accept()
        .await
        .map_err(std::io::Error::other)?;
    Ok(Box::new(tls))
}

/// Write `bytes` whole within `wait`; a peer that does not take them in
/// time is an error that ends the connection.
async fn send(
    stream: &mut Box<dyn Stream>,
    bytes: &[u8],
    wait: std::time::Duration,
) -> std::io::Result<()> {
    match tokio::time::timeout(wait, stream.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "peer not reading its replies",
        )),
    }
}

/// Failed SMTP authentications in this window count towards a lockout:
/// [`AUTH_FAILURES_PER_CLIENT`] for one mailbox from one client (so a
/// stranger's guesses elsewhere do not lock the holder's own client out),
/// [`AUTH_FAILURES_PER_USER`] for one mailbox from anywhere (a guessing
/// spread over many addresses), [`AUTH_FAILURES_PER_PEER`] from one
/// client (or IPv6 /64) across mailboxes. A success clears its mailbox's
/// counts.
const AUTH_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);
const AUTH_FAILURES_PER_CLIENT: usize = 10;
const AUTH_FAILURES_PER_USER: usize = 100;
const AUTH_FAILURES_PER_PEER: usize = 30;

/// Keys kept at most: a spray of names cannot grow the table past this.
const AUTH_KEYS_MAX: usize = 100_000;

/// The lockout keys of an attempt and their limits.
fn auth_keys(user: &str, peer: std::net::IpAddr) -> [(String, usize); 3] {
    // A name longer than any address is no address: a bounded key.
    let user: String = user.trim().to_lowercase().chars().take(256).collect();
    let client = match peer {
        std::net::IpAddr::V6(ip) if ip.to_ipv4_mapped().is_none() => {
            let s = ip.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        ip => ip.to_canonical().to_string(),
    };
    [
        (
            format!("user:{user}|peer:{client}"),
            AUTH_FAILURES_PER_CLIENT,
        ),
        (format!("user:{user}"), AUTH_FAILURES_PER_USER),
        (format!("peer:{client}"), AUTH_FAILURES_PER_PEER),
    ]
}

fn auth_failures()
-> std::sync::MutexGuard<'static, std::collections::HashMap<String, Vec<std::time::Instant>>> {
    static F: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Vec<std::time::Instant>>>,
    > = std::sync::OnceLock::new();
    F.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Whether any key has had its share of failures within the window.
fn auth_throttled(keys: &[(String, usize)]) -> bool {
    let mut f = auth_failures();
    keys.iter().any(|(k, max)| {
        f.get_mut(k).is_some_and(|v| {
            v.retain(|t| t.elapsed() < AUTH_WINDOW);
            v.len() >= *max
        })
    })
}

fn auth_failed(keys: &[(String, usize)]) {
    let mut f = auth_failures();
    if f.len() > AUTH_KEYS_MAX {
        // Under a spray of names: forget what has aged out, and if that
        // is not enough, everything (the limits start again; memory does
        // not grow).
        f.retain(|_, v| v.last().is_some_and(|t| t.elapsed() < AUTH_WINDOW));
        if f.len() > AUTH_KEYS_MAX / 2 {
            f.clear();
        }
    }
    for (k, max) in keys {
        let v = f.entry(k.clone()).or_default();
        v.push(std::time::Instant::now());
        // Only the newest `max` matter.
        if v.len() > *max {
            v.remove(0);
        }
    }
}

/// A good password: the mailbox's counts start again (its client's
/// earlier typos do not add up towards a lockout over days).
fn auth_succeeded(keys: &[(String, usize)]) {
    let mut f = auth_failures();
    for (k, _) in &keys[..2] {
        f.remove(k);
    }
}

/// The message data all sessions hold in memory while receiving it
/// (`limits.data_memory`).
#[derive(Default)]
struct DataMemory(std::sync::atomic::AtomicU64);

/// One connection's share of [`DataMemory`], given back when it drops.
struct DataClaim {
    pool: Arc<DataMemory>,
    bytes: u64,
}

impl DataClaim {
    /// Hold `now` bytes in all (more or fewer than before); false, holding
    /// nothing, when growing would pass `budget`.
    fn hold(&mut self, now: u64, budget: u64) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        if now <= self.bytes {
            self.pool.0.fetch_sub(self.bytes - now, SeqCst);
            self.bytes = now;
            return true;
        }
        let more = now - self.bytes;
        let before = self.pool.0.fetch_add(more, SeqCst);
        if before.saturating_add(more) > budget {
            self.pool.0.fetch_sub(more, SeqCst);
            self.hold(0, budget);
            return false;
        }
        self.bytes = now;
        true
    }
}

impl Drop for DataClaim {
    fn drop(&mut self) {
        self.hold(0, 0);
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    kind: Listener,
    app: Arc<App>,
    tls: Arc<SslAcceptor>,
    mut held: DataClaim,
) -> std::io::Result<()> {
    let cfg = &app.cfg();
    let limits = &cfg.limits;
    let handshake = std::time::Duration::from_secs(30);
    // A peer that stops reading our replies (while it keeps writing, or
    // not) must not hold its connection slot forever: each write has the
    // command timeout, as each read does (RFC 5321 §4.5.3.2).
    let write_wait = limits.command_timeout.0;
    let mut stream: Box<dyn Stream> = Box::new(tcp);
    if kind.implicit_tls {
        stream = tokio::time::timeout(handshake, tls_accept(&tls, stream))
            .await
            .map_err(|_| std::io::Error::other("TLS handshake timeout"))??;
    }
    let mut session = Session::new(
        SessionConfig {
            mode: kind.mode,
            hostname: cfg.hostname.clone(),
            // RT §3.1.2: on submission a message over a limit (size,
            // recipients) gets an avviso di non accettazione from the
            // access point; only a grossly oversized one (over twice the
            // size limit) is refused at the SMTP level, and recipients
            // past twice their limit are counted, not kept (see the
            // session), so a client is never left to send its message to
            // part of its To/Cc. The inbound MX holds peers to the limits.
            max_message_size: match kind.mode {
                Mode::Submission => limits.max_message_size.saturating_mul(2) as usize,
                Mode::Inbound => limits.max_message_size as usize,
            },
            max_recipients: match kind.mode {
                Mode::Submission => limits.max_recipients.saturating_mul(2),
                Mode::Inbound => limits.max_recipients,
            },
            tls_available: true,
            local_domains: cfg.provider.local_domains.clone(),
        },
        kind.implicit_tls,
    );
    metrics::counter!(crate::metrics::SMTP_SESSIONS, "listener" => kind.label()).increment(1);
    let greeting = session.greeting().to_bytes();
    crate::metrics::count_replies(kind.label(), &greeting);
    send(&mut stream, &greeting, write_wait).await?;
    let mut buf = vec![0u8; 64 * 1024];
    // (DATA phase, its start, bytes read in it)
    let mut data: Option<(u64, std::time::Instant, u64)> = None;
    loop {
        // A DATA phase has a deadline that grows with what arrives: a
        // large message on a slow line gets the time it needs, a peer
        // trickling bytes cannot hold a connection slot forever. Each
        // phase has its own, even when two pipelined transactions are read
        // in one go.
        let wait = if session.in_data() {
            let phase = session.data_phases();
            let (_, started, bytes) = match data {
                Some(d) if d.0 == phase => d,
                _ => *data.insert((phase, std::time::Instant::now(), 0)),
            };
            // Only what may be kept earns time: past the size limit the
            // rest is read to its end and dropped, and must not buy more.
            let counted = bytes.min(session.max_message_size() as u64);
            let earned = std::time::Duration::from_secs(counted / DATA_MIN_RATE);
            limits
                .data_timeout
                .0
                .saturating_add(earned)
                .saturating_sub(started.elapsed())
        } else {
            data = None;
            limits.command_timeout.0
        };
        let n = match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => {
                let bye = Reply::new(421, (4, 4, 2), "Timeout, closing connection").to_bytes();
                let _ = send(&mut stream, &bye, write_wait).await;
                return Ok(());
            }
        };
        if n == 0 {
            return Ok(());
        }
        // Many clients (lettre among them) write the message and the final
        // "." in two writes without TCP_NODELAY: Nagle holds the dot back
        // until our ACK, which Linux delays by up to 40 ms when we have
        // nothing to send. During DATA we ACK at once (the flag is one-shot,
        // hence after every read): measured, p50 submission latency 47 ms
        // → see `bench/run.sh` (half rate).
        if session.in_data() {
            let _ = socket2::SockRef::from(stream.tcp()).set_tcp_quickack(true);
            if let Some(d) = data.as_mut() {
                d.2 += n as u64;
            }
        }
        session.feed(&buf[..n]);
        let mut out = Vec::new();
        while let Some(ev) = session.next_event() {
            match ev {
                Event::Reply(r) => out.extend_from_slice(&r.to_bytes()),
                Event::Close(r) => {
                    out.extend_from_slice(&r.to_bytes());
                    crate::metrics::count_replies(kind.label(), &out);
                    send(&mut stream, &out, write_wait).await?;
                    let _ = tokio::time::timeout(write_wait, stream.shutdown()).await;
                    return Ok(());
                }
                Event::StartTls(r) => {
                    out.extend_from_slice(&r.to_bytes());
                    crate::metrics::count_replies(kind.label(), &out);
                    send(&mut stream, &out, write_wait).await?;
                    out.clear();
                    stream = tokio::time::timeout(handshake, tls_accept(&tls, stream))
                        .await
                        .map_err(|_| std::io::Error::other("TLS handshake timeout"))??;
                    session.tls_started();
                }
                Event::Authenticate { user, password } => {
                    let keys = auth_keys(&user, peer.ip());
                    let verdict = if auth_throttled(&keys) {
                        // Not even looked at: guessing across connections
                        // gets no further than within one.
                        tracing::warn!(event = "auth_throttled", peer = %peer, user = %user);
                        Err(Reply::new(
                            454,
                            (4, 7, 0),
                            "Too many failed authentications, try again later",
                        ))
                    } else {
                        let name = user.clone();
                        app.blocking(move |app| {
                            crate::accounts::authenticate(&app.store, &name, &password)
                        })
                        .await
                        .map(|a| a.map(|a| a.address))
                        .map_err(|e| {
                            tracing::error!(event = "auth_lookup_failed", error = %e);
                            Reply::new(454, (4, 7, 0), "Temporary authentication failure")
                        })
                    };
                    match &verdict {
                        Ok(None) => {
                            tracing::warn!(event = "auth_failed", peer = %peer, user = %user);
                            auth_failed(&keys);
                        }
                        Ok(Some(_)) => auth_succeeded(&keys),
                        Err(_) => {}
                    }
                    out.extend_from_slice(&session.auth_result(verdict).to_bytes());
                }
                Event::Recipient { mail_from, address } => {
                    let verdict = app
                        .blocking(move |app| app.inbound_recipient(&mail_from, &address))
                        .await
                        .map_err(|e| {
                            tracing::error!(event = "recipient_lookup_failed", error = %e);
                            Reply::new(451, (4, 3, 0), "Mailbox lookup failed, try again later")
                        });
                    out.extend_from_slice(&session.recipient_result(verdict).to_bytes());
                }
                Event::Message(mut env) => {
                    env.peer = Some(peer.ip());
                    // Flush pipelined replies before the (slower) processing.
                    crate::metrics::count_replies(kind.label(), &out);
                    send(&mut stream, &out, write_wait).await?;
                    out.clear();
                    let mode = kind.mode;
                    let reply = app
                        .blocking(move |app| match mode {
                            Mode::Submission => app.submit(env),
                            Mode::Inbound => app.receive(&env),
                        })
                        .await;
                    out.extend_from_slice(&session.message_result(reply).to_bytes());
                }
            }
        }
        // Each read adds at most its own size to the message held: the
        // claim follows it read by read (and drops to nothing when a
        // message ends); one that finds no memory is refused at its end.
        if !held.hold(session.buffered() as u64, limits.data_memory) {
            tracing::warn!(event = "data_memory_exhausted", peer = %peer);
            session.refuse_data(Reply::new(
                452,
                (4, 3, 1),
                "Insufficient system storage for the message now, try again later",
            ));
        }
        if !out.is_empty() {
            crate::metrics::count_replies(kind.label(), &out);
            send(&mut stream, &out, write_wait).await?;
        }
        if session.is_closed() {
            return Ok(());
        }
    }
}
