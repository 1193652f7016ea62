//! The server side of one SMTP connection as a state machine (sans-IO).
//!
//! The I/O shell feeds received bytes with [`Session::feed`] and takes
//! [`Event`]s from [`Session::next_event`] until it returns None. Events that
//! need the outside world (TLS upgrade, credentials, the message itself)
//! stop processing until the shell answers with [`Session::tls_started`],
//! [`Session::auth_result`], [`Session::recipient_result`] or
//! [`Session::message_result`]; pipelined
//! commands wait in the buffer meanwhile (RFC 2920).
//!
//! Two modes: `Submission` (punto di accesso: AUTH only over TLS, required
//! before MAIL) and `Inbound` (punto di ricezione: no AUTH, cleartext
//! allowed, recipients only in local domains — never an open relay).

use super::data::DataReader;
use super::reply::Reply;
use base64::Engine;
use smtp_proto::{
    AUTH_LOGIN, AUTH_PLAIN, Error as ProtoError, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MailFrom,
    RcptTo, Request,
};

/// Which listener this session belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Submission,
    Inbound,
}

/// Per-listener settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub mode: Mode,
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// Whether STARTTLS can be offered (a TLS identity is configured).
    pub tls_available: bool,
    /// Domains accepted as recipients on the inbound listener.
    pub local_domains: Vec<String>,
}

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Write this reply.
    Reply(Reply),
    /// Write this reply (220), then upgrade to TLS and call `tls_started`.
    StartTls(Reply),
    /// Check these credentials and call `auth_result`.
    Authenticate { user: String, password: String },
    /// Inbound only: look this recipient of one of our domains up and call
    /// `recipient_result` (an unknown mailbox is refused now rather than
    /// accepted and dropped, RFC 5321 §6.1).
    Recipient { mail_from: String, address: String },
    /// A complete message: process it and call `message_result` with the
    /// reply (250 only once it is durable).
    Message(Envelope),
    /// Write this reply and close the connection.
    Close(Reply),
}

/// The SMTP envelope and the data of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub authenticated: Option<String>,
    pub tls: bool,
    pub helo: String,
    /// The client greeted with EHLO (not HELO).
    pub esmtp: bool,
    /// Recipients given on submission beyond those kept (`rcpt_to`): the
    /// message is over the limit and gets an avviso di non accettazione.
    pub rcpt_overflow: usize,
    pub data: Vec<u8>,
    /// The client's address, filled in by the I/O shell.
    pub peer: Option<std::net::IpAddr>,
}

impl Envelope {
    /// The `Received:` trace line a server prepends (RFC 5321 §4.4): who
    /// sent it (HELO and address), who took it, how (ESMTP, ESMTPS with
    /// TLS, ESMTPSA authenticated: RFC 3848), under which id and when.
    /// `date` is an RFC 5322 date.
    pub fn trace_header(&self, by: &str, id: &str, date: &str) -> String {
        let with = match (self.esmtp, self.tls, self.authenticated.is_some()) {
            (false, _, _) => "SMTP",
            (true, true, true) => "ESMTPSA",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, false, false) => "ESMTP",
        };
        let helo: String = self
            .helo
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(255)
            .collect();
        let helo = if helo.is_empty() { "unknown" } else { &helo };
        let peer = match self.peer {
            Some(std::net::IpAddr::V6(ip)) => format!(" ([IPv6:{ip}])"),
            Some(ip) => format!(" ([{ip}])"),
            None => String::new(),
        };
        let rcpt = match self.rcpt_to.as_slice() {
            [one] => format!("\r\n\tfor <{one}>"),
            _ => String::new(),
        };
        format!(
            "Received: from {helo}{peer}\r\n\tby {by} (pecd) with {with} id {id}{rcpt};\r\n\t{date}\r\n"
        )
    }
}

enum Framing {
    Command,
    Data {
        receiver: DataReader,
        buf: Vec<u8>,
        /// The reply the message gets instead of being kept (too large,
        /// no memory for it now): the rest is read to its end and dropped.
        refused: Option<Reply>,
    },
    AuthPlain,
    AuthLoginUser,
    AuthLoginPassword {
        user: String,
    },
    /// Waiting for the shell (auth, message, TLS): input stays buffered.
    Waiting,
    Closed,
}

#[derive(Debug, Clone)]
struct Transaction {
    mail_from: String,
    rcpt_to: Vec<String>,
    /// Recipients given beyond the session's limit on submission: counted,
    /// not kept (see `Request::Rcpt`).
    overflow: usize,
}

/// One connection's state.
pub struct Session {
    cfg: SessionConfig,
    tls: bool,
    helo: Option<String>,
    /// The greeting was EHLO (extensions offered and usable).
    esmtp: bool,
    authenticated: Option<String>,
    tx: Option<Transaction>,
    framing: Framing,
    input: Vec<u8>,
    /// The rest of an over-long line is dropped up to its LF: it already
    /// had its one reply (RFC 5321 §4.2.1), and must not be read as a command.
    discard_line: bool,
    /// How many DATA phases began: the shell's data deadline belongs to one.
    data_phases: u64,
    /// The recipient the shell is looking up (`Event::Recipient`).
    pending_rcpt: Option<String>,
    auth_failures: u32,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("mode", &self.cfg.mode)
            .field("tls", &self.tls)
            .field("authenticated", &self.authenticated)
            .finish_non_exhaustive()
    }
}

const MAX_AUTH_FAILURES: u32 = 3;

/// A command line's limit (RFC 5321 §4.5.3.1.4 asks for 512 octets at least;
/// an AUTH initial response may be longer).
const MAX_COMMAND_LINE: usize = 4096;

/// An AUTH continuation line's limit.
const MAX_AUTH_LINE: usize = 2048;

fn domain_of(address: &str) -> Option<String> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
}

impl Session {
    pub fn new(cfg: SessionConfig, tls: bool) -> Session {
        Session {
            cfg,
            tls,
            helo: None,
            esmtp: false,
            authenticated: None,
            tx: None,
            framing: Framing::Command,
            input: Vec::new(),
            discard_line: false,
            data_phases: 0,
            pending_rcpt: None,
            auth_failures: 0,
        }
    }

    /// The 220 greeting.
    pub fn greeting(&self) -> Reply {
        Reply::plain(220, format!("{} ESMTP pecd", self.cfg.hostname))
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.framing, Framing::Closed)
    }

    /// Whether the session is inside DATA (the shell applies the data timeout).
    pub fn in_data(&self) -> bool {
        matches!(self.framing, Framing::Data { .. })
    }

    /// Bytes of the current message held so far (0 outside DATA).
    pub fn buffered(&self) -> usize {
        match &self.framing {
            Framing::Data { buf, .. } => buf.len(),
            _ => 0,
        }
    }

    /// Refuse the message being received with `reply` (e.g. no memory for
    /// it now): what it holds is dropped, the rest is read to its end and
    /// dropped, and the reply answers its final dot. The first refusal
    /// stands.
    pub fn refuse_data(&mut self, reply: Reply) {
        if let Framing::Data { buf, refused, .. } = &mut self.framing {
            *buf = Vec::new();
            refused.get_or_insert(reply);
        }
    }

    /// The largest message this session takes.
    pub fn max_message_size(&self) -> usize {
        self.cfg.max_message_size
    }

    /// How many DATA phases this session began: two pipelined transactions
    /// read in one go are two phases, each with its own deadline.
    pub fn data_phases(&self) -> u64 {
        self.data_phases
    }

    /// Append received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !self.is_closed() {
            self.input.extend_from_slice(bytes);
        }
    }

    /// After the TLS handshake: RFC 3207 §4.2 — forget everything, including
    /// any command pipelined after STARTTLS in cleartext (injection).
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.helo = None;
        self.esmtp = false;
        self.authenticated = None;
        self.tx = None;
        self.input.clear();
        self.discard_line = false;
        self.framing = Framing::Command;
    }

    /// The shell's verdict on credentials (Some(identity) when valid), or
    /// the reply for a check that could not be made (RFC 4954 §6: 454
    /// 4.7.0, a temporary failure): a store that cannot be read must not
    /// tell a client its good password is wrong, nor count against it.
    pub fn auth_result(&mut self, identity: Result<Option<String>, Reply>) -> Reply {
        self.framing = Framing::Command;
        match identity {
            Err(reply) => reply,
            Ok(Some(id)) => {
                self.authenticated = Some(id);
                Reply::new(235, (2, 7, 0), "Authentication successful")
            }
            Ok(None) => {
                self.auth_failures += 1;
                if self.auth_failures >= MAX_AUTH_FAILURES {
                    self.framing = Framing::Closed;
                    return Reply::new(421, (4, 7, 0), "Too many authentication failures, closing");
                }
                Reply::new(535, (5, 7, 8), "Authentication credentials invalid")
            }
        }
    }

    /// The shell's verdict on the recipient of `Event::Recipient`: the
    /// mailbox that takes its mail (the address itself, or the one it is an
    /// alias of, e.g. postmaster), None when there is no such mailbox, or
    /// an error reply (a store that cannot be read: try later).
    pub fn recipient_result(&mut self, verdict: Result<Option<String>, Reply>) -> Reply {
        self.framing = Framing::Command;
        let address = self.pending_rcpt.take().unwrap_or_default();
        match verdict {
            Err(reply) => reply,
            Ok(None) => Reply::new(550, (5, 1, 1), format!("No such mailbox here: {address}")),
            Ok(Some(mailbox)) => match self.tx.as_mut() {
                Some(tx) => {
                    if !tx.rcpt_to.iter().any(|x| x.eq_ignore_ascii_case(&mailbox)) {
                        tx.rcpt_to.push(mailbox);
                    }
                    Reply::new(250, (2, 1, 5), "Recipient OK")
                }
                None => Reply::bad_sequence("Send MAIL first"),
            },
        }
    }

    /// The shell's reply to a message; the transaction ends either way.
    pub fn message_result(&mut self, reply: Reply) -> Reply {
        self.tx = None;
        self.framing = Framing::Command;
        reply
    }

    /// Process buffered input until an event is ready.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            match &mut self.framing {
                Framing::Closed | Framing::Waiting => return None,
                Framing::Data {
                    receiver,
                    buf,
                    refused,
                } => {
                    if self.input.is_empty() {
                        return None;
                    }
                    let input = std::mem::take(&mut self.input);
                    let end = receiver.ingest(&input, buf);
                    let done = end.is_some();
                    if let Some(n) = end {
                        self.input = input[n..].to_vec();
                    }
                    if buf.len() > self.cfg.max_message_size && refused.is_none() {
                        *refused = Some(Reply::new(
                            552,
                            (5, 3, 4),
                            format!(
                                "Message exceeds the maximum size of {} bytes",
                                self.cfg.max_message_size
                            ),
                        ));
                    }
                    if refused.is_some() {
                        // Keep reading to the terminating dot, store nothing
                        // more (and hold no memory for it).
                        *buf = Vec::new();
                    }
                    if !done {
                        continue;
                    }
                    let data = std::mem::take(buf);
                    if let Some(reply) = refused.take() {
                        self.tx = None;
                        self.framing = Framing::Command;
                        return Some(Event::Reply(reply));
                    }
                    let tx = self.tx.clone()?;
                    self.framing = Framing::Waiting;
                    return Some(Event::Message(Envelope {
                        mail_from: tx.mail_from,
                        rcpt_to: tx.rcpt_to,
                        authenticated: self.authenticated.clone(),
                        tls: self.tls,
                        helo: self.helo.clone().unwrap_or_default(),
                        esmtp: self.esmtp,
                        rcpt_overflow: tx.overflow,
                        data,
                        peer: None,
                    }));
                }
                Framing::AuthPlain | Framing::AuthLoginUser | Framing::AuthLoginPassword { .. } => {
                    let Some(pos) = self.input.iter().position(|b| *b == b'\n') else {
                        if self.input.len() > MAX_AUTH_LINE {
                            self.framing = Framing::Command;
                            self.input.clear();
                            self.discard_line = true;
                            return Some(Event::Reply(Reply::new(
                                500,
                                (5, 5, 6),
                                "Authentication line too long",
                            )));
                        }
                        return None;
                    };
                    let line: Vec<u8> = self.input.drain(..=pos).collect();
                    let line = String::from_utf8_lossy(&line).trim().to_string();
                    if line == "*" {
                        self.framing = Framing::Command;
                        return Some(Event::Reply(Reply::new(
                            501,
                            (5, 0, 0),
                            "Authentication cancelled",
                        )));
                    }
                    let Ok(decoded) =
                        base64::engine::general_purpose::STANDARD.decode(line.as_bytes())
                    else {
                        self.framing = Framing::Command;
                        return Some(Event::Reply(Reply::new(
                            501,
                            (5, 5, 2),
                            "Invalid base64 in authentication",
                        )));
                    };
                    match std::mem::replace(&mut self.framing, Framing::Command) {
                        Framing::AuthPlain => return Some(self.plain(&decoded)),
                        Framing::AuthLoginUser => {
                            self.framing = Framing::AuthLoginPassword {
                                user: String::from_utf8_lossy(&decoded).into_owned(),
                            };
                            return Some(Event::Reply(Reply::plain(334, "UGFzc3dvcmQ6")));
                        }
                        Framing::AuthLoginPassword { user } => {
                            self.framing = Framing::Waiting;
                            return Some(Event::Authenticate {
                                user,
                                password: String::from_utf8_lossy(&decoded).into_owned(),
                            });
                        }
                        _ => return None,
                    }
                }
                Framing::Command => {
                    let newline = self.input.iter().position(|b| *b == b'\n');
                    if self.discard_line {
                        match newline {
                            Some(pos) => {
                                self.input.drain(..=pos);
                                self.discard_line = false;
                                continue;
                            }
                            None => {
                                self.input.clear();
                                return None;
                            }
                        }
                    }
                    let Some(pos) = newline else {
                        if self.input.len() > MAX_COMMAND_LINE {
                            self.input.clear();
                            self.discard_line = true;
                            return Some(Event::Reply(Reply::new(500, (5, 5, 2), "Line too long")));
                        }
                        return None;
                    };
                    // One line at a time: a malformed command (`MAIL FROM`
                    // with no colon) must not eat the pipelined command after
                    // it, and each command gets exactly one reply.
                    let mut line: Vec<u8> = self.input.drain(..=pos).collect();
                    if self.cfg.mode == Mode::Inbound {
                        line = self.qualify_postmaster(line);
                    }
                    if line.len() > MAX_COMMAND_LINE {
                        return Some(Event::Reply(Reply::new(500, (5, 5, 2), "Line too long")));
                    }
                    match Request::parse(&mut line.iter()).map(|r| r.into_owned()) {
                        Err(ProtoError::NeedsMoreData { .. }) => {
                            return Some(Event::Reply(Reply::syntax(
                                "Syntax error in parameters or arguments",
                            )));
                        }
                        Err(e) => return Some(Event::Reply(proto_error(e))),
                        Ok(req) => {
                            if let Some(ev) = self.command(req) {
                                return Some(ev);
                            }
                        }
                    }
                }
            }
        }
    }

    /// RFC 5321 §4.5.1: `RCPT TO:<postmaster>` (no domain) must be taken;
    /// the parser reads it as an empty address, so it is given our first
    /// domain before parsing.
    fn qualify_postmaster(&self, line: Vec<u8>) -> Vec<u8> {
        const BARE: &[u8] = b"<postmaster>";
        let Some(domain) = self.cfg.local_domains.first() else {
            return line;
        };
        let head = line.get(..8).map(|h| h.eq_ignore_ascii_case(b"RCPT TO:"));
        let at = line
            .windows(BARE.len())
            .position(|w| w.eq_ignore_ascii_case(BARE));
        match (head, at) {
            (Some(true), Some(at)) => {
                let mut out = line[..at + BARE.len() - 1].to_vec();
                out.push(b'@');
                out.extend_from_slice(domain.as_bytes());
                out.extend_from_slice(&line[at + BARE.len() - 1..]);
                out
            }
            _ => line,
        }
    }

    fn plain(&mut self, decoded: &[u8]) -> Event {
        // RFC 4616: authzid NUL authcid NUL passwd
        let parts: Vec<&[u8]> = decoded.split(|b| *b == 0).collect();
        if parts.len() != 3 {
            self.framing = Framing::Command;
            return Event::Reply(Reply::new(501, (5, 5, 2), "Malformed PLAIN credentials"));
        }
        let authz = String::from_utf8_lossy(parts[0]).into_owned();
        let user = String::from_utf8_lossy(parts[1]).into_owned();
        if !authz.is_empty() && !authz.eq_ignore_ascii_case(&user) {
            self.framing = Framing::Command;
            return Event::Reply(Reply::new(
                535,
                (5, 7, 8),
                "Authorization identity not allowed",
            ));
        }
        self.framing = Framing::Waiting;
        Event::Authenticate {
            user,
            password: String::from_utf8_lossy(parts[2]).into_owned(),
        }
    }

    /// EHLO or HELO: a new start (no transaction). RFC 5321 §4.1.1.1:
    /// HELO gets one line and no extensions.
    fn greet(&mut self, host: String, esmtp: bool) -> Reply {
        self.tx = None;
        self.esmtp = esmtp;
        let reply = if esmtp {
            self.ehlo(&host)
        } else {
            Reply::plain(250, format!("{} greets {host}", self.cfg.hostname))
        };
        self.helo = Some(host);
        reply
    }

    fn ehlo(&self, host: &str) -> Reply {
        let mut lines = vec![
            format!("{} greets {host}", self.cfg.hostname),
            "PIPELINING".into(),
            format!("SIZE {}", self.cfg.max_message_size),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.cfg.tls_available && !self.tls {
            lines.push("STARTTLS".into());
        }
        if self.cfg.mode == Mode::Submission && self.tls {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        Reply {
            code: 250,
            enhanced: None,
            lines,
        }
    }

    fn command(&mut self, req: Request<String>) -> Option<Event> {
        let r = |reply| Some(Event::Reply(reply));
        match req {
            // RFC 2033 §4.1: LHLO is LMTP's, never SMTP's.
            Request::Lhlo { .. } => r(Reply::new(
                500,
                (5, 5, 1),
                "LHLO is LMTP (RFC 2033): use EHLO",
            )),
            Request::Ehlo { host } => r(self.greet(host, true)),
            Request::Helo { host } => r(self.greet(host, false)),
            Request::StartTls => {
                if self.tls {
                    r(Reply::bad_sequence("TLS already active"))
                } else if !self.cfg.tls_available {
                    r(Reply::new(454, (4, 7, 0), "TLS not available"))
                } else {
                    self.framing = Framing::Waiting;
                    Some(Event::StartTls(Reply::plain(
                        220,
                        "2.0.0 Ready to start TLS",
                    )))
                }
            }
            Request::Auth {
                mechanism,
                initial_response,
            } => {
                if self.cfg.mode != Mode::Submission {
                    return r(Reply::new(
                        502,
                        (5, 5, 1),
                        "AUTH not available on this port",
                    ));
                }
                if !self.tls {
                    // RFC 4954 §4: credentials only over an encrypted channel.
                    return r(Reply::new(
                        538,
                        (5, 7, 11),
                        "Encryption required for requested authentication mechanism",
                    ));
                }
                if self.authenticated.is_some() {
                    return r(Reply::bad_sequence("Already authenticated"));
                }
                if self.tx.is_some() {
                    return r(Reply::bad_sequence(
                        "AUTH not allowed during a mail transaction",
                    ));
                }
                let initial = initial_response.trim().to_string();
                if mechanism == AUTH_PLAIN {
                    if initial.is_empty() {
                        self.framing = Framing::AuthPlain;
                        return r(Reply::plain(334, ""));
                    }
                    if initial == "=" {
                        return Some(self.plain(b""));
                    }
                    match base64::engine::general_purpose::STANDARD.decode(initial.as_bytes()) {
                        Ok(d) => Some(self.plain(&d)),
                        Err(_) => r(Reply::new(
                            501,
                            (5, 5, 2),
                            "Invalid base64 in authentication",
                        )),
                    }
                } else if mechanism == AUTH_LOGIN {
                    if initial.is_empty() {
                        self.framing = Framing::AuthLoginUser;
                        return r(Reply::plain(334, "VXNlcm5hbWU6"));
                    }
                    match base64::engine::general_purpose::STANDARD.decode(initial.as_bytes()) {
                        Ok(d) => {
                            self.framing = Framing::AuthLoginPassword {
                                user: String::from_utf8_lossy(&d).into_owned(),
                            };
                            r(Reply::plain(334, "UGFzc3dvcmQ6"))
                        }
                        Err(_) => r(Reply::new(
                            501,
                            (5, 5, 2),
                            "Invalid base64 in authentication",
                        )),
                    }
                } else {
                    r(Reply::new(
                        504,
                        (5, 5, 4),
                        "Unrecognized authentication mechanism",
                    ))
                }
            }
            Request::Mail { from } => {
                if self.helo.is_none() {
                    return r(Reply::bad_sequence("Send EHLO first"));
                }
                if self.tx.is_some() {
                    return r(Reply::bad_sequence("Nested MAIL command"));
                }
                if self.cfg.mode == Mode::Submission {
                    let Some(user) = &self.authenticated else {
                        return r(Reply::new(530, (5, 7, 0), "Authentication required"));
                    };
                    // RFC 6109 §5.2: a user sends only as his own PEC address.
                    if !from.address.eq_ignore_ascii_case(user) {
                        return r(Reply::new(
                            553,
                            (5, 7, 1),
                            format!("Sender address must be {user}"),
                        ));
                    }
                }
                if let Some(param) = unoffered_mail_parameter(&from, self.cfg.mode) {
                    return r(unoffered(param));
                }
                if from.size > self.cfg.max_message_size {
                    return r(Reply::new(
                        552,
                        (5, 3, 4),
                        format!(
                            "Message size exceeds the maximum of {} bytes",
                            self.cfg.max_message_size
                        ),
                    ));
                }
                self.tx = Some(Transaction {
                    mail_from: from.address.to_string(),
                    rcpt_to: Vec::new(),
                    overflow: 0,
                });
                r(Reply::new(250, (2, 1, 0), "Sender OK"))
            }
            Request::Rcpt { to } => {
                let mode = self.cfg.mode;
                let local = self.cfg.local_domains.clone();
                let max = self.cfg.max_recipients;
                let Some(tx) = self.tx.as_mut() else {
                    return r(Reply::bad_sequence("Send MAIL first"));
                };
                if let Some(param) = unoffered_rcpt_parameter(&to) {
                    return r(unoffered(param));
                }
                let address = to.address.to_string();
                if address.is_empty() || !address.contains('@') {
                    return r(Reply::new(501, (5, 1, 3), "Invalid recipient address"));
                }
                if mode == Mode::Inbound {
                    let ours = domain_of(&address)
                        .is_some_and(|d| local.iter().any(|l| l.eq_ignore_ascii_case(&d)));
                    if !ours {
                        return r(Reply::new(
                            550,
                            (5, 7, 1),
                            "Relaying denied: not a domain of this provider",
                        ));
                    }
                }
                // A recipient named twice is one recipient (one delivery, one receipt).
                if tx.rcpt_to.iter().any(|x| x.eq_ignore_ascii_case(&address)) {
                    return r(Reply::new(250, (2, 1, 5), "Recipient OK (already given)"));
                }
                if tx.rcpt_to.len() >= max {
                    // On submission a 452 would have the client send the
                    // rest in a second transaction, and part of a message
                    // over the limit certified (RT §2.1): taken and
                    // counted, so the whole message gets its avviso di non
                    // accettazione. A peer on the MX is held to the limit.
                    if mode == Mode::Submission {
                        tx.overflow += 1;
                        return r(Reply::new(250, (2, 1, 5), "Recipient OK"));
                    }
                    return r(Reply::new(452, (4, 5, 3), "Too many recipients"));
                }
                if mode == Mode::Inbound {
                    let mail_from = tx.mail_from.clone();
                    self.pending_rcpt = Some(address.clone());
                    self.framing = Framing::Waiting;
                    return Some(Event::Recipient { mail_from, address });
                }
                tx.rcpt_to.push(address);
                r(Reply::new(250, (2, 1, 5), "Recipient OK"))
            }
            Request::Data => match &self.tx {
                None => r(Reply::bad_sequence("Send MAIL first")),
                Some(tx) if tx.rcpt_to.is_empty() => {
                    r(Reply::new(554, (5, 5, 1), "No valid recipients"))
                }
                Some(_) => {
                    // A growing buffer costs no copies for a large message
                    // (its pages are remapped, see malloc.rs), and unlike a
                    // reservation from SIZE= it cannot be claimed in advance.
                    // RFC 5321 §4.1.1.4: the CRLF ending the DATA line is
                    // the first CRLF of the terminator, so a lone "." ends
                    // an empty message and a first line "..x" is unstuffed
                    // (a reader starts at a line's start).
                    let receiver = DataReader::default();
                    self.data_phases += 1;
                    self.framing = Framing::Data {
                        receiver,
                        buf: Vec::new(),
                        refused: None,
                    };
                    r(Reply::plain(354, "End data with <CR><LF>.<CR><LF>"))
                }
            },
            Request::Bdat { .. } => r(Reply::new(
                502,
                (5, 5, 1),
                "BDAT not supported (CHUNKING is not offered)",
            )),
            Request::Rset => {
                self.tx = None;
                r(Reply::ok("Reset"))
            }
            Request::Noop { .. } => r(Reply::ok("OK")),
            Request::Quit => {
                self.framing = Framing::Closed;
                Some(Event::Close(Reply::new(221, (2, 0, 0), "Bye")))
            }
            Request::Vrfy { .. } | Request::Expn { .. } => r(Reply::new(
                252,
                (2, 5, 0),
                "Cannot verify, send mail to try delivery",
            )),
            Request::Help { .. } => r(Reply::new(214, (2, 0, 0), "See RFC 5321")),
            Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                r(Reply::new(502, (5, 5, 1), "Command not implemented"))
            }
        }
    }
}

/// RFC 5321 §4.1.1.11: a MAIL/RCPT parameter not recognised or not
/// implemented gets 555.
fn unoffered(param: &str) -> Reply {
    Reply::new(555, (5, 5, 4), format!("Parameter {param} not supported"))
}

/// A MAIL parameter of an extension this server does not offer (only SIZE
/// and BODY=7BIT/8BITMIME are): accepting, say, REQUIRETLS or SMTPUTF8 would
/// promise what the relay does not do.
fn unoffered_mail_parameter(from: &MailFrom<String>, mode: Mode) -> Option<&'static str> {
    if from.flags & !(MAIL_BODY_7BIT | MAIL_BODY_8BITMIME) != 0 {
        Some("(BODY=BINARYMIME, RET, SMTPUTF8, REQUIRETLS, CONPERM or BY)")
    } else if from.env_id.is_some() {
        Some("ENVID")
    } else if from.auth.is_some() && mode != Mode::Submission {
        // RFC 4954 §5: where AUTH is offered the parameter is accepted (and,
        // as it does not come from a trusted relay, ignored).
        Some("AUTH")
    } else if from.trans_id.is_some() || from.mtrk.is_some() {
        Some("(TRANSID or MTRK)")
    } else if from.solicit.is_some() {
        Some("SOLICIT")
    } else if from.hold_for != 0 || from.hold_until != 0 {
        Some("(HOLDFOR or HOLDUNTIL)")
    } else if from.mt_priority != 0 {
        Some("MT-PRIORITY")
    } else if from.by != 0 {
        Some("BY")
    } else {
        None
    }
}

/// A RCPT parameter of an extension this server does not offer (DSN's
/// NOTIFY/ORCPT, RRVS, CONNEG).
fn unoffered_rcpt_parameter(to: &RcptTo<String>) -> Option<&'static str> {
    if to.flags != 0 || to.rrvs != 0 {
        Some("(NOTIFY, RRVS or CONNEG)")
    } else if to.orcpt.is_some() {
        Some("ORCPT")
    } else {
        None
    }
}

fn proto_error(e: ProtoError) -> Reply {
    match e {
        ProtoError::UnknownCommand => Reply::new(500, (5, 5, 2), "Command unrecognized"),
        ProtoError::InvalidSenderAddress => Reply::new(501, (5, 1, 7), "Invalid sender address"),
        ProtoError::InvalidRecipientAddress => {
            Reply::new(501, (5, 1, 3), "Invalid recipient address")
        }
        ProtoError::SyntaxError { syntax } => Reply::syntax(format!("Syntax: {syntax}")),
        ProtoError::InvalidParameter { param } => {
            Reply::new(501, (5, 5, 4), format!("Invalid parameter {param}"))
        }
        ProtoError::UnsupportedParameter { param } => unoffered(&param),
        ProtoError::ResponseTooLong => Reply::new(500, (5, 5, 2), "Line too long"),
        ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
            Reply::syntax("Syntax error")
        }
    }
}
