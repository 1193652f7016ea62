//! Composition root and the processing of the three PEC points.
//!
//! Owns: the running [`App`] (config, store, spool, signer, trust, ids),
//! what happens to a submitted message (punto di accesso), to a received one
//! (punto di ricezione) and at delivery (punto di consegna), routing, the
//! queue worker and the 12 h / 24 h timers. Every effect is a queue item
//! committed, with its log records, before the SMTP reply: nothing
//! acknowledged is lost, and a crash re-runs only uncommitted work.
//! Must not touch: sockets (see `server`, `smtp::client`), the engine.

use crate::accounts::{self, AccountState};
use crate::audit::{Event, LogRecord};
use crate::clock::{Clock, LegalTime, SystemClock};
use crate::config::Config;
use crate::index::{ProviderIndex, SignerLookup};
use crate::maildir::{ARCHIVE_FOLDER, Maildir, mailbox_path};
use crate::pec::build::{self, Certification, DeliveryFailure, Rejection};
use crate::pec::classify::ClaimedKind;
use crate::pec::headers::TimeoutStage;
use crate::pec::ids::IdGenerator;
use crate::pec::original::OriginalHeaders;
use crate::pec::{PecType, Provider, RecipientClass};
use crate::points::access::{self, AccessLimits, Decision, Submission};
use crate::queue::{self, Item, Spool, Work};
use crate::report::{Checker, Outcome};
use crate::smime::{Digest, Signer, Verifier, VerifyTime};
use crate::smtp::reply::Reply;
use crate::smtp::session::Envelope;
use crate::store::{Batch, Store, StoreError, Table};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Map a mailbox server's permanent refusal to the NOTA 12 cause: quota
/// (`5.2.2`) and disabled (`5.2.1`) by their codes, anything else as given.
fn lmtp_failure(reply: &str) -> DeliveryFailure {
    match crate::smtp::client::enhanced_code(reply).unwrap_or("5.0.0") {
        "5.2.2" => DeliveryFailure::MailboxFull,
        "5.2.1" => DeliveryFailure::MailboxDisabled,
        "5.1.1" => DeliveryFailure::UnknownRecipient,
        other => DeliveryFailure::Other {
            code: other.to_string(),
            description: format!("consegna rifiutata dal server delle caselle ({reply})"),
        },
    }
}

/// How long the reception point remembers a (Message-ID, recipient) pair.
const SEEN_RETENTION: chrono::Duration = chrono::Duration::days(7);
/// An envelope dated longer ago than this is not certified again (well
/// inside [`SEEN_RETENTION`], well past any relay's 24 h of retries).
const ENVELOPE_MAX_AGE: chrono::Duration = chrono::Duration::days(4);

/// Local work (reception, delivery: CPU and fsync) in flight at once: enough
/// for the store's group commit to have company.
const LOCAL_CONCURRENCY: usize = 16;

/// Relays in flight at once (network-bound; a dead peer holds its slots only
/// until its timeouts, and never holds up local work).
const RELAY_CONCURRENCY: usize = 32;

/// How long a mailbox's usage is trusted without looking at the folder, at
/// least; a large folder is looked at less often (see [`App::usage`]).
const USAGE_RECHECK: Duration = Duration::from_secs(1);

/// A folder's rescan is trusted for this many times as long as it took: a
/// busy mailbox of tens of thousands of messages spends about 1 % of a
/// core rescanning, however often it is delivered to.
const USAGE_RESCAN_FACTOR: u32 = 100;

/// Longest a usage figure is trusted: messages an IMAP client deleted
/// count against the quota for at most this long.
const USAGE_TRUST_MAX: Duration = Duration::from_secs(60);

/// How long a usage figure whose look at the folder took `took` is trusted.
fn usage_trusted_for(took: Duration) -> Duration {
    took.saturating_mul(USAGE_RESCAN_FACTOR)
        .clamp(USAGE_RECHECK, USAGE_TRUST_MAX)
}

/// How often the queue and certificate gauges are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(10);

/// How often unreferenced spool blobs are collected.
const SPOOL_GC_EVERY: Duration = Duration::from_secs(600);

/// Idle outbound sessions kept per peer, and for how long (well under the
/// 5-minute server timeout of RFC 5321 §4.5.3.2.7).
const RELAY_IDLE_PER_PEER: usize = RELAY_CONCURRENCY;
const RELAY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// RFC 5321 §4.5.3.2: a peer may take 5 minutes over the greeting, MAIL
/// and RCPT (a greylisting pause, a recipient check); cut off sooner, the
/// message only goes again later. (DATA's blocks and final reply have
/// their own, longer, limits in `smtp::client`.)
const RELAY_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("signing identity: {0}")]
    Signer(#[from] crate::smime::SmimeError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// See [`App::view_envelope`].
struct EnvelopeView {
    daticert: crate::pec::daticert::Daticert,
    certification: Certification,
    postacert: Option<Vec<u8>>,
}

/// Releases an operator's claim on a queue item (see [`App::claim_item`]).
struct ItemClaim<'a> {
    app: &'a App,
    id: String,
}

impl Drop for ItemClaim<'_> {
    fn drop(&mut self) {
        self.app.lock_busy().remove(&self.id);
    }
}

/// What one lifecycle sweep did: the actions applied, and the accounts
/// it could not change now (each logged with its error, tried again at
/// the next sweep).
#[derive(Debug, Default, Serialize)]
pub struct Swept {
    pub actions: usize,
    pub failed: Vec<String>,
}

/// The queue as an operator sees it.
#[derive(Debug, Serialize)]
pub struct QueueView {
    /// Local work first, then relays, each in due order.
    pub items: Vec<Item>,
    pub quarantined: Vec<QuarantineView>,
}

/// One quarantined entry.
#[derive(Debug, Serialize)]
pub struct QuarantineView {
    /// What names it for `pecd queue release`.
    pub name: String,
    /// A given-up item (None: an undecodable entry or a stray file, see
    /// `error`).
    pub item: Option<Item>,
    pub error: Option<String>,
    /// Where its message is kept.
    pub file: Option<String>,
}

impl QuarantineView {
    /// A file in the quarantine Maildir that no entry names: a release
    /// commits before it removes the file, and a crash between leaves it.
    /// Shown, so it is not kept unseen.
    fn stray(path: &std::path::Path) -> QuarantineView {
        QuarantineView {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            item: None,
            error: Some(STRAY.into()),
            file: Some(path.display().to_string()),
        }
    }
}

const STRAY: &str = "a kept message no entry names (released, then a crash before its file \
                     went?): look at it, then remove it";

/// Why an operator's queue action was not done; each maps to one admin
/// API status.
#[derive(Debug, thiserror::Error)]
pub enum QueueActionError {
    #[error("no such item: {0}")]
    NotFound(String),
    #[error("item {0} is being processed right now; try again in a moment")]
    Busy(String),
    #[error("{0} cannot be released: {1}")]
    NotReleasable(String, String),
    #[error("{0}")]
    Failed(String),
}

/// Releases a claimed Message-ID when processing ends, however it ends.
struct InFlight<'a> {
    app: &'a App,
    id: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.app.in_flight.lock() {
            set.remove(&self.id);
        }
    }
}

/// Per-recipient state of an accepted transaction (timers, RT §8.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TxState {
    pub pec_id: String,
    pub recipient: String,
    pub sent_at: DateTime<Utc>,
    pub warned: bool,
    /// Certification data needed to build the timeout notices.
    pub sender: String,
    pub recipients: Vec<(String, bool)>,
    pub reply_to: String,
    pub subject: String,
    pub msgid: Option<String>,
}

/// Marker suffixes after a transaction key: written by receipts, read by
/// the timers (see `process_receive`).
const MARK_TAKEN: &[u8] = b"\ntaken";
const MARK_CLOSED: &[u8] = b"\nclosed";

/// Forget a transaction: its state and its markers.
fn close_transaction(b: &mut Batch, key: &[u8]) {
    for m in [&b""[..], MARK_TAKEN, MARK_CLOSED] {
        let mut k = key.to_vec();
        k.extend_from_slice(m);
        b.delete(Table::Transactions, k);
    }
}

/// Mark transaction `key` closed; the next timer pass forgets it. A marker,
/// not a deletion: a timer pass signing a notice for it meanwhile writes
/// its state back, which would bring a deleted transaction back to life.
fn mark_closed(b: &mut Batch, key: &[u8], now: DateTime<Utc>) {
    b.put(Table::Timers, timer_key(now, key), Vec::new());
    let mut k = key.to_vec();
    k.extend_from_slice(MARK_CLOSED);
    b.put(Table::Transactions, k, Vec::new());
}

/// A local delivery that will no longer send its receipt.
fn without_receipt(item: &Item) -> Item {
    let mut kept = item.clone();
    if let Work::Local { receipt_to, .. } = &mut kept.work {
        *receipt_to = None;
    }
    kept
}

/// The metrics label of another provider's enhanced code: its class and
/// subject only (RFC 3463 has eight subjects), so a peer's replies cannot
/// mint series without end.
fn remote_code_label(code: &str) -> String {
    match code.split('.').nth(1).and_then(|s| s.parse::<u8>().ok()) {
        Some(subject) if subject <= 7 => format!("5.{subject}.x"),
        _ => "5.x.x".to_string(),
    }
}

/// The usage cache's key of a mailbox (or `<mailbox>#archive`): however
/// a recipient's case was written, one figure per folder.
fn usage_key(mailbox: &str) -> String {
    mailbox.trim().to_lowercase()
}

/// The LDIF inside a downloaded index: a signed CMS (RT §7) is opened
/// once its signature verifies against `provider.index_signers` (or the
/// trust anchors of providers' signatures); a plain document is refused
/// when signers are configured (whoever can answer for the URL could
/// otherwise name the providers we trust).
fn index_content(p: &crate::config::ProviderConfig, body: Vec<u8>) -> Result<Vec<u8>, String> {
    let trusted = match p.index_signers.as_ref().or(p.trust_anchors.as_ref()) {
        Some(path) => crate::smime::load_certificates(path).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    match crate::smime::open_signed(&body, &trusted) {
        Some(Ok(ldif)) => Ok(ldif),
        Some(Err(e)) => Err(format!("the index's signature does not verify: {e}")),
        None if p.index_signers.is_some() => {
            Err("not a signed index (provider.index_signers is set)".into())
        }
        None => Ok(body),
    }
}

/// What makes a verified PEC message the same event twice: its signer and
/// the signed daticert (an envelope is its identificativo; a receipt or
/// notice its tipo, the transaction's identificativo, whom it is about and
/// when it was issued). None of it is in the unsigned headers.
fn signed_event_key(signer: &str, d: &crate::pec::daticert::Daticert) -> String {
    if d.tipo == PecType::Transport {
        return format!("{signer}\n{}\n{}", d.tipo.token(), d.identificativo);
    }
    format!(
        "{signer}\n{}\n{}\n{}\n{}\n{} {}{}",
        d.tipo.token(),
        d.identificativo,
        d.consegna.as_deref().unwrap_or_default(),
        d.ricezione.join(","),
        d.data.giorno,
        d.data.ora,
        d.data.zona,
    )
}

/// The original's headers as the envelope's signed `postacert.eml`
/// carries them: who was in Cc (which decides the consegna's variant,
/// RT §3.8) must come from what the signature covers, not from the
/// envelope's own To/Cc, which anyone on the way could swap. A message
/// body is borrowed, not copied (message/rfc822 travels unencoded); an
/// encoded one (non-conforming) is decoded.
fn signed_original_headers(envelope: &[u8]) -> OriginalHeaders {
    let leaves = crate::pec::mime::leaf_parts(envelope).unwrap_or_default();
    let Some(l) = leaves.iter().find(|l| {
        l.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case("postacert.eml"))
    }) else {
        return OriginalHeaders::default();
    };
    let cte = crate::pec::mime::header_value(l.header, "Content-Transfer-Encoding")
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if matches!(cte.as_str(), "base64" | "quoted-printable") {
        OriginalHeaders::parse(&crate::pec::mime::decoded_body(l.header, l.body))
    } else {
        OriginalHeaders::parse(l.body)
    }
}

/// The Message-ID of a message received (the legal log names it).
fn received_message_id(raw: &[u8]) -> Option<String> {
    let (header, _) = crate::pec::mime::split_header(raw);
    crate::pec::mime::header_value(header, "Message-ID").map(|v| {
        v.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string()
    })
}

fn tx_key(pec_id: &str, rcpt: &str) -> Vec<u8> {
    format!("{pec_id}\n{}", rcpt.to_lowercase()).into_bytes()
}

/// The timers' entry for transaction `tx` at `at` (table `Timers`).
fn timer_key(at: DateTime<Utc>, tx: &[u8]) -> Vec<u8> {
    let mut k = crate::store::time_key(at).into_bytes();
    k.push(b'/');
    k.extend_from_slice(tx);
    k
}

/// Most timer entries one pass handles (each may sign a notice); the rest
/// wait for the next tick.
const TIMERS_PER_PASS: usize = 1_000;

/// What a configuration reload replaces at once: the config and everything
/// built from it (signing identity, trust anchors and provider index,
/// scanner, resolver). Work in progress keeps the snapshot it took.
pub struct Live {
    pub config: Config,
    pub signer: Signer,
    pub checker: Checker,
    /// The certifying provider as PEC messages name it.
    pub pec_provider: Provider,
    /// Built once per config, so its cache serves every relay (an error,
    /// e.g. no resolv.conf, is reported at each MX lookup instead).
    resolver: Result<hickory_resolver::TokioResolver, String>,
    scanner: Option<crate::antivirus::Clamd>,
    /// (label, not-after as Unix time) of the signing and TLS certificates.
    cert_expiry: Vec<(&'static str, i64)>,
    /// TLS for the listeners (new sessions take the current one).
    pub tls_acceptor: Arc<openssl::ssl::SslAcceptor>,
}

impl std::ops::Deref for Live {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

impl Live {
    /// Build everything a config implies; any error leaves nothing built.
    pub fn build(config: Config) -> Result<Live, StartError> {
        let digest = Digest::from_name(&config.provider.digest).ok_or_else(|| {
            StartError::Config(format!("provider.digest {:?}", config.provider.digest))
        })?;
        let signer = Signer::from_files(
            &config.provider.signing_cert,
            &config.provider.signing_key,
            digest,
        )?
        .with_smime_capabilities(config.provider.smime_capabilities);
        let verifier = match &config.provider.trust_anchors {
            Some(p) => Verifier::with_anchors(crate::smime::load_certificates(p)?)?,
            None => Verifier::system()?,
        };
        let mut crls = Vec::new();
        for c in &config.provider.crls {
            let loaded = crate::smime::load_crls(c)?;
            // Still used (better than none), but the job that fetches it
            // has stopped: the operator must know.
            let now = openssl::asn1::Asn1Time::days_from_now(0)
                .map_err(|e| StartError::Config(e.to_string()))?;
            if loaded
                .iter()
                .any(|l| l.next_update().is_some_and(|t| t < now))
            {
                tracing::warn!(event = "crl_stale", file = %c.display(), "the revocation list is past its next update");
            }
            crls.extend(loaded);
        }
        let verifier = verifier.with_crls(crls);
        let text = std::fs::read_to_string(&config.provider.provider_index)?;
        let index = ProviderIndex::from_ldif(&text).map_err(|errs| {
            StartError::Config(
                errs.iter()
                    .map(|e| format!("{}: {e}", config.provider.provider_index.display()))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?;
        let provider = Provider {
            name: config.provider.name.clone(),
            domain: config.provider.domain.clone(),
        };
        // RT §1.1: other providers send presa in carico and rilevazione
        // virus to the `mailReceipt` our index record publishes, and only
        // the service address is taken as our service mailbox: a
        // different one would have them refused or wrapped for nobody,
        // and every 12 h timer would run out.
        if let Some(own) = index.provider_for_domain(&provider.domain)
            && !own
                .mail_receipt
                .eq_ignore_ascii_case(&provider.service_address())
        {
            return Err(StartError::Config(format!(
                "{}: line {}: mailReceipt {} of our own record is not the service address {}",
                config.provider.provider_index.display(),
                own.line,
                own.mail_receipt,
                provider.service_address()
            )));
        }
        let tls_acceptor =
            crate::server::acceptor(&config.tls).map_err(|e| StartError::Config(e.to_string()))?;
        Ok(Live {
            tls_acceptor,
            checker: Checker {
                verifier,
                index: Some(index),
                when: VerifyTime::Now,
            },
            signer,
            pec_provider: provider,
            resolver: resolver(&config.delivery.nameservers),
            scanner: config.antivirus.clamd.as_deref().map(|a| {
                crate::antivirus::Clamd::new(
                    a,
                    config
                        .antivirus
                        .timeout
                        .map_or(Duration::from_secs(30), |t| t.0),
                )
            }),
            cert_expiry: [
                ("signing", &config.provider.signing_cert),
                ("tls", &config.tls.cert),
            ]
            .into_iter()
            .filter_map(|(label, path)| Some((label, not_after(path)?)))
            .collect(),
            config,
        })
    }
}

/// The running provider.
pub struct App {
    live: std::sync::RwLock<Arc<Live>>,
    pub store: Store,
    pub spool: Spool,
    pub ids: IdGenerator,
    pub clock: Arc<dyn Clock>,
    pub wake: tokio::sync::Notify,
    /// When this process opened the store (see `process_local`).
    pub started: DateTime<Utc>,
    /// The same moment on the monotonic clock (see [`App::purge_log`]).
    started_at: std::time::Instant,
    /// Held for reading by a log verification, for writing by the purge:
    /// a verification walks the log page by page, and a purge committed
    /// in between would read as records missing from the start.
    log_upkeep: std::sync::RwLock<()>,
    /// Held for reading by what closes or marks a transaction (a received
    /// receipt, a relay's refusal), from its reads of the transaction to
    /// its commit; for writing by a timer pass, likewise. Without it a
    /// pass could read a transaction open, a consegna commit its close,
    /// and the pass then send the 24 h notice and delete that mark.
    transactions: std::sync::RwLock<()>,
    /// One reload at a time (a file reload, an index refresh): each builds
    /// on the configuration the last one left.
    reloading: std::sync::Mutex<()>,
    /// A scheduled index refresh is running (see `worker`).
    index_refreshing: std::sync::atomic::AtomicBool,
    /// Message-IDs the reception point is processing right now.
    in_flight: std::sync::Mutex<HashSet<String>>,
    /// Whether the duplicate record held entries in the keys of releases
    /// before the signed key (they start with `<`) when the store was
    /// opened: only then is the old key looked up as well.
    legacy_seen: bool,
    /// Queue items being processed right now (never twice at once).
    busy: std::sync::Mutex<HashSet<String>>,
    local_slots: Arc<tokio::sync::Semaphore>,
    relay_slots: Arc<tokio::sync::Semaphore>,
    relays: crate::smtp::client::Pool,
    /// Listeners bound (set by the binary once they are): `/readyz`.
    pub ready: std::sync::atomic::AtomicBool,
    /// The file the configuration came from (reloads read it again).
    pub config_path: std::sync::OnceLock<std::path::PathBuf>,
    /// Mailbox usage by address (with the Maildir stamp it was taken at),
    /// and until when it is trusted without looking at the folder.
    usage: std::sync::Mutex<HashMap<String, (crate::maildir::Usage, std::time::Instant)>>,
}

fn resolver(
    nameservers: &[std::net::SocketAddr],
) -> Result<hickory_resolver::TokioResolver, String> {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig};
    use hickory_resolver::name_server::TokioConnectionProvider;
    if nameservers.is_empty() {
        return hickory_resolver::Resolver::builder_tokio()
            .map(|b| b.build())
            .map_err(|e| format!("system DNS configuration: {e}"));
    }
    let servers: Vec<NameServerConfig> = nameservers
        .iter()
        .flat_map(|a| {
            [
                NameServerConfig::new(*a, hickory_resolver::proto::xfer::Protocol::Udp),
                NameServerConfig::new(*a, hickory_resolver::proto::xfer::Protocol::Tcp),
            ]
        })
        .collect();
    let config = ResolverConfig::from_parts(None, vec![], servers);
    Ok(
        hickory_resolver::Resolver::builder_with_config(config, TokioConnectionProvider::default())
            .build(),
    )
}

/// Remove the messages of a Maildir older than `age` (by file time).
fn purge_older(dir: &std::path::Path, age: Duration) -> std::io::Result<usize> {
    let mut n = 0;
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries {
            let e = e?;
            let old = e.metadata()?.modified()?.elapsed().is_ok_and(|a| a > age);
            if old {
                std::fs::remove_file(e.path())?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// An account's warning flags (quota level, archive full).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Flags {
    quota_warned: u8,
    archive_full_warned: bool,
    archive_warned_at: Option<DateTime<Utc>>,
}

impl Flags {
    fn of(a: &accounts::Account) -> Flags {
        Flags {
            quota_warned: a.quota_warned,
            archive_full_warned: a.archive_full_warned,
            archive_warned_at: a.archive_warned_at,
        }
    }

    fn apply(&self, a: &mut accounts::Account) {
        a.quota_warned = self.quota_warned;
        a.archive_full_warned = self.archive_full_warned;
        a.archive_warned_at = self.archive_warned_at;
    }
}

/// What an archive copy is made from: bytes in hand (linked to their inbox
/// copy when there is one), bytes with no file of their own (a small sent
/// message kept in the store: written), or a spool file (linked; read only
/// when no link can be made), so a large sent message is not read to be
/// archived.
enum ArchiveSource<'a> {
    Bytes(&'a [u8]),
    Stored(&'a [u8]),
    Spool {
        path: std::path::PathBuf,
        len: usize,
    },
}

impl ArchiveSource<'_> {
    fn len(&self) -> usize {
        match self {
            ArchiveSource::Bytes(b) | ArchiveSource::Stored(b) => b.len(),
            ArchiveSource::Spool { len, .. } => *len,
        }
    }
}

/// A queue item's content, where it lies: in the store (read) or in a
/// spool file (only its place and size, so that it can be linked).
enum ItemContent {
    Stored(Vec<u8>),
    Spool {
        path: std::path::PathBuf,
        len: usize,
    },
}

impl ItemContent {
    fn source(&self) -> ArchiveSource<'_> {
        match self {
            ItemContent::Stored(d) => ArchiveSource::Stored(d),
            ItemContent::Spool { path, len } => ArchiveSource::Spool {
                path: path.clone(),
                len: *len,
            },
        }
    }
}

/// Warning flags a delivery wants to change, and the notices that go with
/// them (see `App::commit_with_flags`).
struct FlagChange {
    mailbox: String,
    before: Flags,
    after: Flags,
    notices: Batch,
}

/// The not-after time (Unix seconds) of the first certificate in a PEM file.
fn not_after(path: &std::path::Path) -> Option<i64> {
    let pem = std::fs::read(path).ok()?;
    let cert = openssl::x509::X509::from_pem(&pem).ok()?;
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(cert.not_after()).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

impl App {
    pub fn open(config: Config) -> Result<App, StartError> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    pub fn open_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<App, StartError> {
        let store = Store::open(&config.data_dir.join("store"), &config.store.engine)?;
        let spool = Spool::open(&config.data_dir.join("spool"))?;
        let live = Live::build(config)?;
        let started = clock.now();
        let legacy_seen = !store.scan_prefix(Table::Seen, b"<", 1)?.is_empty();
        Ok(App {
            live: std::sync::RwLock::new(Arc::new(live)),
            store,
            spool,
            ids: IdGenerator::new(),
            clock,
            wake: tokio::sync::Notify::new(),
            started,
            started_at: std::time::Instant::now(),
            log_upkeep: Default::default(),
            transactions: std::sync::RwLock::new(()),
            reloading: Default::default(),
            index_refreshing: Default::default(),
            in_flight: std::sync::Mutex::new(HashSet::new()),
            legacy_seen,
            busy: std::sync::Mutex::new(HashSet::new()),
            local_slots: Arc::new(tokio::sync::Semaphore::new(LOCAL_CONCURRENCY)),
            relay_slots: Arc::new(tokio::sync::Semaphore::new(RELAY_CONCURRENCY)),
            relays: crate::smtp::client::Pool::new(RELAY_IDLE_PER_PEER, RELAY_IDLE_TIMEOUT),
            usage: Default::default(),
            ready: Default::default(),
            config_path: Default::default(),
        })
    }

    /// The current configuration and what is built from it (a snapshot:
    /// a reload does not change it under the caller).
    pub fn cfg(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Refresh the provider index: fetch it from `provider.index_url` (or
    /// re-read the local file), and only if it parses and lists providers,
    /// make it the local copy and the running index. A failure keeps the
    /// last good copy in use (and says why).
    pub fn refresh_index(&self) -> Result<usize, String> {
        let live = self.cfg();
        let p = &live.provider;
        let result = (|| -> Result<usize, String> {
            let text = match &p.index_url {
                Some(url) => {
                    let client = p
                        .index_client_cert
                        .as_deref()
                        .zip(p.index_client_key.as_deref());
                    let body = crate::fetch::https_get(
                        url,
                        p.index_url_ca.as_deref(),
                        client,
                        Duration::from_secs(60),
                    )?;
                    let body = index_content(p, body).map_err(|e| format!("{url}: {e}"))?;
                    String::from_utf8(body).map_err(|_| format!("{url}: not UTF-8 LDIF"))?
                }
                None => std::fs::read_to_string(&p.provider_index)
                    .map_err(|e| format!("{}: {e}", p.provider_index.display()))?,
            };
            let index = ProviderIndex::from_ldif(&text).map_err(|errs| {
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
            let n = index.providers().len();
            if n == 0 {
                return Err("the new index lists no provider".into());
            }
            if p.index_url.is_some() {
                // The fetched copy becomes the local one (whole, durably),
                // so a restart starts from it.
                crate::fsync::replace_file(&p.provider_index, text.as_bytes())
                    .map_err(|e| format!("{}: {e}", p.provider_index.display()))?;
            }
            // Rebuilt from the configuration running *now*: a reload made
            // while the index was downloading must not be undone.
            let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
            self.reload_locked(self.cfg().config.clone())?;
            Ok(n)
        })();
        match &result {
            Ok(n) => {
                metrics::gauge!(crate::metrics::INDEX_PROVIDERS).set(*n as f64);
                tracing::info!(event = "provider_index_refreshed", providers = n);
            }
            Err(e) => {
                metrics::counter!(crate::metrics::INDEX_REFRESH_FAILURES).increment(1);
                tracing::error!(event = "provider_index_refresh_failed", error = %e);
            }
        }
        result
    }

    /// Read the configuration file again and [`App::reload`] it; every
    /// problem is returned (with its key path) and the running config stays.
    pub fn reload_from_file(&self) -> Result<(), Vec<String>> {
        let path = self
            .config_path
            .get()
            .ok_or_else(|| vec!["no configuration file to reload".to_string()])?;
        let config = Config::load(path).map_err(|errs| {
            errs.iter()
                .map(|e| format!("{}: {e}", path.display()))
                .collect::<Vec<_>>()
        })?;
        self.reload(config).map_err(|e| vec![e])
    }

    /// Replace the configuration at once. A config that does not build
    /// (bad certificate, bad provider index, …) is refused and the running
    /// one stays; what only a restart can change (data directory, store
    /// engine, listeners, connection limit, log format) must be unchanged.
    pub fn reload(&self, config: Config) -> Result<(), String> {
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        self.reload_locked(config)
    }

    /// [`App::reload`], the caller holding `reloading`.
    fn reload_locked(&self, config: Config) -> Result<(), String> {
        let old = self.cfg();
        let mut fixed = Vec::new();
        if config.data_dir != old.data_dir {
            fixed.push("data_dir");
        }
        if config.store.engine != old.store.engine {
            fixed.push("store.engine");
        }
        if format!("{:?}", config.listen) != format!("{:?}", old.listen) {
            fixed.push("listen");
        }
        // Sized or set up once at start (the connection pools, the
        // operational log's writer).
        if config.limits.max_connections != old.limits.max_connections {
            fixed.push("limits.max_connections");
        }
        if config.log.format != old.log.format {
            fixed.push("log.format");
        }
        if !fixed.is_empty() {
            return Err(format!("{} change only with a restart", fixed.join(", ")));
        }
        let live = Live::build(config).map_err(|e| e.to_string())?;
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
        tracing::info!(event = "config_reloaded");
        Ok(())
    }

    fn is_local(&self, address: &str) -> bool {
        address.rsplit_once('@').is_some_and(|(_, d)| {
            self.cfg()
                .provider
                .local_domains
                .iter()
                .any(|l| l.eq_ignore_ascii_case(d))
        })
    }

    fn new_id(&self, t: LegalTime) -> String {
        self.ids.next(t, &self.cfg().provider.domain)
    }

    fn sign(&self, m: crate::pec::mime::UnsignedMessage) -> Result<Vec<u8>, String> {
        let t = std::time::Instant::now();
        let signed = self
            .cfg()
            .signer
            .sign_owned(m)
            .map_err(|e| format!("signing failed: {e}"))?;
        crate::metrics::time(crate::metrics::SIGN_SECONDS, t.elapsed());
        let (header, _) = crate::pec::mime::split_header(&signed);
        let kind = crate::pec::mime::header_value(header, crate::pec::headers::X_RICEVUTA)
            .or_else(|| crate::pec::mime::header_value(header, crate::pec::headers::X_TRASPORTO))
            .unwrap_or_else(|| "other".into());
        metrics::counter!(crate::metrics::PEC_EMITTED, "kind" => kind).increment(1);
        Ok(signed)
    }

    /// Queue `data` for addresses: local domains go to our own reception
    /// point (full processing, RT §1.1), others are relayed per domain.
    fn route(
        &self,
        b: &mut Batch,
        data: &[u8],
        mail_from: &str,
        rcpts: &[String],
        pec_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let mut local = Vec::new();
        let mut remote: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in rcpts {
            if self.is_local(r) {
                local.push(r.clone());
            } else if let Some((_, d)) = r.rsplit_once('@') {
                remote
                    .entry(d.to_ascii_lowercase())
                    .or_default()
                    .push(r.clone());
            }
        }
        if !local.is_empty() {
            let work = Work::Receive {
                mail_from: mail_from.into(),
                rcpt_to: local,
            };
            self.enqueue(b, data, work, now, pec_id)?;
        }
        for (domain, rcpt_to) in remote {
            let work = Work::Relay {
                mail_from: mail_from.into(),
                rcpt_to,
                domain,
                via: None,
            };
            self.enqueue(b, data, work, now, pec_id)?;
        }
        Ok(())
    }

    /// A new queue item in `b` for `data` (its content in `b` too, or in
    /// the spool when large: [`queue::stage`]).
    fn enqueue(
        &self,
        b: &mut Batch,
        data: &[u8],
        work: Work,
        now: DateTime<Utc>,
        pec_id: Option<&str>,
    ) -> Result<(), String> {
        let id = self.new_id(LegalTime::new(now));
        let pec_id = pec_id.map(str::to_string);
        queue::stage(b, &self.spool, &[data], id, work, now, pec_id)
            .map_err(|e| format!("spool: {e}"))?
            .put(b);
        Ok(())
    }

    /// `data` for a local mailbox (`Work::Local` without a receipt) or its
    /// archive (`Work::Archive`), stored within `b` when that waits for no
    /// disk flush ([`App::stores_at_once`]; the file is written once `b`
    /// commits): no queue item, no second commit. Otherwise — or if that
    /// fails, leaving nothing in `b` — queued as before.
    /// `pending` holds the flag changes already in `b`: an archive copy for
    /// a mailbox whose flags are changing is queued, so each change is
    /// judged against the state it came from.
    fn store_now_or_enqueue(
        &self,
        b: &mut Batch,
        data: &[u8],
        work: Work,
        now: DateTime<Utc>,
        pec_id: Option<&str>,
        pending: &mut Vec<FlagChange>,
    ) -> Result<(), String> {
        let (ops, log) = (b.ops.len(), b.log.len());
        if self.stores_at_once(data.len()) {
            let id = self.new_id(LegalTime::new(now));
            let item = Item::new(
                id.clone(),
                work.clone(),
                String::new(),
                now,
                pec_id.map(str::to_string),
            );
            let stored = match &work {
                Work::Local {
                    mailbox,
                    receipt_to: None,
                } => Some(self.deliver_into(b, &item, mailbox, None, data)),
                Work::Archive { mailbox } if !pending.iter().any(|c| c.mailbox == *mailbox) => {
                    let source = ArchiveSource::Stored(data);
                    Some(self.after_storage(b, mailbox, &item, source, false))
                }
                _ => None,
            };
            match stored {
                Some(Ok(flags)) => {
                    pending.extend(flags);
                    return Ok(());
                }
                Some(Err(e)) => {
                    tracing::warn!(event = "store_now_failed", item = %id, error = %e);
                    // Nothing of the attempt stays in `b`.
                    b.ops.truncate(ops);
                    b.log.truncate(log);
                }
                None => {}
            }
        }
        self.enqueue(b, data, work, now, pec_id)
    }

    /// Whether `len` bytes can be stored (and their notices made) within
    /// the commit that acknowledges them: Maildir delivery that waits for
    /// no flush (`maildir_flush = "checkpoint"`) and a message small
    /// enough to be kept in the store until the checkpoint.
    fn stores_at_once(&self, len: usize) -> bool {
        self.cfg().delivery.lmtp.is_none() && self.defers(len)
    }

    /// Whether a Maildir delivery of `len` bytes is deferred: recorded in
    /// its commit and flushed by a later checkpoint (`mailsync`). A large
    /// message is not copied into the store.
    fn defers(&self, len: usize) -> bool {
        self.cfg().delivery.maildir_flush == crate::config::MaildirFlush::Checkpoint
            && len <= queue::INLINE_MAX
    }

    /// Queue `data` for a local mailbox.
    fn to_mailbox(
        &self,
        b: &mut Batch,
        data: &[u8],
        mailbox: &str,
        pec_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        self.enqueue_local(b, data, mailbox, None, pec_id, now)
    }

    /// Queue a local delivery; with `receipt_to`, a delivery receipt follows it.
    fn enqueue_local(
        &self,
        b: &mut Batch,
        data: &[u8],
        mailbox: &str,
        receipt_to: Option<&str>,
        pec_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let work = Work::Local {
            mailbox: mailbox.to_lowercase(),
            receipt_to: receipt_to.map(str::to_string),
        };
        self.enqueue(b, data, work, now, pec_id)
    }

    /// Commit; if the batch queued new work, wake the worker (work created
    /// by the worker itself must not wait for the next tick).
    fn commit(&self, b: Batch) -> Result<(), String> {
        let queued = b
            .ops
            .iter()
            .any(|op| matches!(op, crate::store::Op::Put(Table::Queue, _, _)));
        // Read back only for the operational log, so only if it is on.
        let records: Vec<LogRecord> = if tracing::enabled!(tracing::Level::INFO) {
            b.log
                .iter()
                .filter_map(|p| serde_json::from_slice(p).ok())
                .collect()
        } else {
            Vec::new()
        };
        // Deferred Maildir deliveries are written once their records are
        // committed: a mailbox never shows what its commit did not keep.
        let files = crate::mailsync::pending(&b);
        let t = std::time::Instant::now();
        self.store.commit(b).map(|_| ()).map_err(|e| {
            metrics::counter!(crate::metrics::STORE_ERRORS).increment(1);
            e.to_string()
        })?;
        crate::metrics::time(crate::metrics::STORE_COMMIT_SECONDS, t.elapsed());
        if let Some(files) = files {
            crate::mailsync::written_after(files);
        }
        // Every committed legal-log record, mirrored into the operational
        // log with the stable fields (never a body or a password).
        for r in records {
            let event = serde_json::to_value(r.event)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let tenant = r
                .sender
                .as_deref()
                .and_then(|s| s.strip_prefix("order:"))
                .unwrap_or("");
            tracing::info!(
                event = %event,
                msg_id = r.msgid.as_deref().unwrap_or(""),
                pec_id = r.pec_id.as_deref().unwrap_or(""),
                from = r.sender.as_deref().unwrap_or(""),
                to = %r.recipients.join(","),
                tenant,
                detail = r.detail.as_deref().unwrap_or(""),
            );
        }
        if queued {
            self.wake.notify_one();
        }
        Ok(())
    }

    fn record(&self, now: DateTime<Utc>, event: Event, c: &Certification) -> LogRecord {
        let mut r = LogRecord::new(now, event);
        r.pec_id = Some(c.pec_id.clone());
        r.msgid = c.msgid.clone();
        r.sender = Some(c.sender.clone());
        r.recipients = c.recipients.iter().map(|x| x.address.clone()).collect();
        r.subject = Some(c.subject.clone());
        r
    }

    // ----------------------------------------------------------------------
    // Virus checks (RT §8.4)

    /// Scan a message: `Ok(Some(name))` infected, `Ok(None)` clean or not
    /// scanned (no clamd configured, or unavailable under the `accept`
    /// policy), `Err` unavailable under `tempfail`.
    fn virus_check(&self, data: &[u8]) -> Result<Option<String>, String> {
        let live = self.cfg();
        let Some(clamd) = &live.scanner else {
            return Ok(None);
        };
        match clamd.scan(data) {
            Ok(crate::antivirus::Scan::Clean) => Ok(None),
            Ok(crate::antivirus::Scan::Infected(name)) => Ok(Some(name)),
            Err(e) => match self.cfg().antivirus.on_unavailable {
                crate::config::OnUnavailable::Tempfail => Err(e.to_string()),
                crate::config::OnUnavailable::Accept => {
                    tracing::warn!(event = "virus_scan_skipped", error = %e);
                    Ok(None)
                }
            },
        }
    }

    /// A Maildir opened to receive `len` bytes through `mailsync::deliver`
    /// (deferred per [`App::defers`], else as [`App::durable`]).
    fn writable(
        &self,
        md: Result<Maildir, crate::maildir::MaildirError>,
        len: usize,
    ) -> Result<Maildir, String> {
        if self.defers(len) {
            md.map(|md| md.flushing(crate::maildir::Flush::Deferred))
                .map_err(|e| e.to_string())
        } else {
            self.durable(md)
        }
    }

    /// A Maildir whose deliveries are on disk when they return, flushed
    /// the configured way (`delivery.maildir_flush`).
    fn durable(
        &self,
        md: Result<Maildir, crate::maildir::MaildirError>,
    ) -> Result<Maildir, String> {
        use crate::config::MaildirFlush as Configured;
        use crate::maildir::Flush;
        let flush = match self.cfg().delivery.maildir_flush {
            Configured::Checkpoint | Configured::Filesystem => Flush::Filesystem,
            Configured::PerFile => Flush::PerFile,
        };
        md.map(|md| md.flushing(flush)).map_err(|e| e.to_string())
    }

    /// Flush the deferred deliveries' files and drop their copies.
    pub fn checkpoint_mail(&self) -> Result<usize, String> {
        crate::mailsync::checkpoint(&self.store)
    }

    /// At start-up, before anything is received or delivered: write again
    /// the deferred deliveries a crash may have left unflushed.
    pub fn repair_mail(&self) -> Result<usize, String> {
        crate::mailsync::repair(&self.store)
    }

    /// Keep an infected message for the retention of the log (30 months,
    /// DPR 68/2005 art. 12) in `data_dir/virus`.
    fn keep_virus(&self, id: &str, data: &[u8]) -> Result<(), String> {
        // On disk before it counts: no record keeps a copy of it.
        let md = self.durable(Maildir::open(self.cfg().data_dir.join("virus")))?;
        md.deliver_once(id, data, true).map_err(|e| e.to_string())?;
        Ok(())
    }

    // ----------------------------------------------------------------------
    // Punto di accesso

    /// A message from an authenticated user. The reply is sent only after
    /// everything it implies is durable.
    pub fn submit(&self, env: Envelope) -> Reply {
        match self.try_submit(env) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(event = "submit_failed", error = %e);
                Reply::local_error("Temporary failure, message not accepted; try again later")
            }
        }
    }

    fn try_submit(&self, mut env: Envelope) -> Result<Reply, String> {
        let now = self.clock.now();
        // A session opened before the mailbox was suspended sends no more
        // than a new one could.
        let user = env.authenticated.clone().unwrap_or_default();
        let may_send = accounts::get(&self.store, &user)
            .map_err(|e| e.to_string())?
            .is_some_and(|a| a.state.can_send());
        if !may_send {
            return Ok(Reply::new(
                550,
                (5, 7, 1),
                "Mailbox not allowed to send (suspended or expired)",
            ));
        }
        let time = LegalTime::new(now);
        let pec_id = self.new_id(time);
        let limits = AccessLimits {
            max_message_size: self.cfg().limits.max_message_size,
            max_total_size: self.cfg().limits.max_total_size,
            max_recipients: self.cfg().limits.max_recipients,
        };
        let sub = Submission {
            authenticated: &user,
            mail_from: &env.mail_from,
            rcpt_to: &env.rcpt_to,
            rcpt_overflow: env.rcpt_overflow,
            message: &env.data,
        };
        let live = self.cfg();
        let certified = |a: &str| {
            live.checker
                .index
                .as_ref()
                .is_some_and(|i| i.is_certified_address(a))
        };
        let mut b = Batch::new();
        match access::decide(
            &sub,
            &limits,
            &self.cfg().pec_provider,
            time,
            pec_id.clone(),
            &certified,
        ) {
            Decision::Reject {
                certification,
                reason,
            } => {
                let notice_id = self.new_id(time);
                let notice = self.sign(build::non_acceptance(
                    &certification,
                    &notice_id,
                    &Rejection::Formal(reason.clone()),
                ))?;
                self.to_mailbox(&mut b, &notice, &user, Some(&pec_id), now)?;
                let mut r = self.record(now, Event::NonAcceptance, &certification);
                r.related = vec![notice_id];
                r.detail = Some(reason.clone());
                r.append_to(&mut b);
                self.commit(b)?;
                // RT §3.1.2: the message is not accepted; the avviso di non
                // accettazione is the certified answer, the 5xx tells the
                // mail program at once.
                Ok(Reply::new(
                    550,
                    (5, 7, 1),
                    format!("Messaggio non accettato: {reason}"),
                ))
            }
            Decision::Accept(c) => {
                let virus = match self.virus_check(&env.data) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::error!(event = "virus_scan_unavailable", error = %e);
                        return Ok(Reply::new(
                            451,
                            (4, 7, 0),
                            "Virus scanner unavailable, message not accepted; try again later",
                        ));
                    }
                };
                if let Some(name) = virus {
                    self.keep_virus(&pec_id, &env.data)?;
                    let notice_id = self.new_id(time);
                    let notice = self.sign(build::non_acceptance(
                        &c,
                        &notice_id,
                        &Rejection::Virus(name.clone()),
                    ))?;
                    self.to_mailbox(&mut b, &notice, &user, Some(&pec_id), now)?;
                    let mut r = self.record(now, Event::VirusDetected, &c);
                    r.detail = Some(format!("at submission: {name}"));
                    r.append_to(&mut b);
                    let mut r = self.record(now, Event::NonAcceptance, &c);
                    r.related = vec![notice_id];
                    r.detail = Some(format!("virus: {name}"));
                    r.append_to(&mut b);
                    self.commit(b)?;
                    return Ok(Reply::new(
                        550,
                        (5, 7, 1),
                        format!("Messaggio non accettato: virus {name}"),
                    ));
                }
                let acc_id = self.new_id(time);
                let acceptance = self.sign(build::acceptance(&c, &acc_id))?;
                // The trace line travels in the envelope's copied headers.
                let trace = env.trace_header(&self.cfg().hostname, &pec_id, &time.rfc5322());
                let unsigned = build::transport_traced(&c, trace.as_bytes(), &env.data);
                // The original now lives in the envelope: its buffer goes
                // before signing, so a large message is held once.
                env.data = Vec::new();
                let envelope = self.sign(unsigned)?;
                let mut flags = Vec::new();
                let work = Work::Local {
                    mailbox: c.sender.to_lowercase(),
                    receipt_to: None,
                };
                self.store_now_or_enqueue(
                    &mut b,
                    &acceptance,
                    work,
                    now,
                    Some(&pec_id),
                    &mut flags,
                )?;
                let rcpts: Vec<String> = c.recipients.iter().map(|r| r.address.clone()).collect();
                self.route(&mut b, &envelope, &c.sender, &rcpts, Some(&pec_id), now)?;
                // The sender's archive keeps what it sent.
                if self.cfg().delivery.lmtp.is_none() {
                    let work = Work::Archive {
                        mailbox: c.sender.to_lowercase(),
                    };
                    self.store_now_or_enqueue(
                        &mut b,
                        &envelope,
                        work,
                        now,
                        Some(&pec_id),
                        &mut flags,
                    )?;
                }
                // Timers only for certified recipients (RT §8.1 [INF]).
                let (warn, _) = self.timer_durations()?;
                for r in c
                    .recipients
                    .iter()
                    .filter(|r| r.class == RecipientClass::Certified)
                {
                    let st = TxState {
                        pec_id: pec_id.clone(),
                        recipient: r.address.clone(),
                        sent_at: now,
                        warned: false,
                        sender: c.sender.clone(),
                        recipients: c
                            .recipients
                            .iter()
                            .map(|x| (x.address.clone(), x.class == RecipientClass::Certified))
                            .collect(),
                        reply_to: c.reply_to.clone(),
                        subject: c.subject.clone(),
                        msgid: c.msgid.clone(),
                    };
                    let key = tx_key(&pec_id, &r.address);
                    b.put(Table::Timers, timer_key(now + warn, &key), Vec::new());
                    b.put(
                        Table::Transactions,
                        key,
                        serde_json::to_vec(&st).unwrap_or_default(),
                    );
                }
                let mut r = self.record(now, Event::Acceptance, &c);
                r.related = vec![acc_id];
                r.append_to(&mut b);
                self.commit_with_flags(b, flags)?;
                tracing::info!(event = "accepted", pec_id = %pec_id, from = %c.sender, rcpts = rcpts.len());
                Ok(Reply::ok(format!(
                    "Messaggio accettato, identificativo {pec_id}"
                )))
            }
        }
    }

    // ----------------------------------------------------------------------
    // Punto di ricezione: the SMTP part only makes the message durable.

    pub fn receive(&self, env: &Envelope) -> Reply {
        let now = self.clock.now();
        let r = (|| -> Result<(), String> {
            let time = LegalTime::new(now);
            let id = self.new_id(time);
            // RFC 5321 §4.4: the trace line goes on top of what is stored;
            // an S/MIME signature covers the body, never the outer header.
            let trace = env.trace_header(&self.cfg().hostname, &id, &time.rfc5322());
            let mut b = Batch::new();
            let work = Work::Receive {
                mail_from: env.mail_from.clone(),
                rcpt_to: env.rcpt_to.clone(),
            };
            let parts = [trace.as_bytes(), &env.data[..]];
            if self.stores_at_once(trace.len() + env.data.len()) {
                // Processed as it arrives, in one commit, when no step waits
                // for the disk (its deliveries are written after that
                // commit). A failure commits nothing: the queue takes over.
                let raw = parts.concat();
                let item = Item::stored_in_memory(id.clone(), work.clone(), &raw, now);
                match self.process_received(&item, &raw, &env.mail_from, &env.rcpt_to) {
                    Ok(()) => return Ok(()),
                    Err(e) => tracing::warn!(event = "receive_now_failed", item = %id, error = %e),
                }
            }
            queue::stage(&mut b, &self.spool, &parts, id, work, now, None)
                .map_err(|e| e.to_string())?
                .put(&mut b);
            self.commit(b)
        })();
        match r {
            Ok(()) => Reply::ok("Messaggio ricevuto"),
            Err(e) => {
                tracing::error!(event = "receive_failed", error = %e);
                Reply::local_error("Temporary failure; try again later")
            }
        }
    }

    /// Mark a Message-ID as being processed; None if it already is. The
    /// guard releases it. Two copies of one message (a peer's retry) must
    /// not pass the dedup check at the same time.
    fn claim_in_flight(&self, message_id: &str) -> Option<InFlight<'_>> {
        let mut set = self.in_flight.lock().ok()?;
        if !set.insert(message_id.to_string()) {
            return None;
        }
        Some(InFlight {
            app: self,
            id: message_id.to_string(),
        })
    }

    /// An account, or our own service mailbox (presa in carico, virus notices).
    fn mailbox_exists(&self, address: &str) -> Result<bool, String> {
        if address.eq_ignore_ascii_case(&self.service_address()) {
            return Ok(true);
        }
        Ok(accounts::get(&self.store, address)
            .map_err(|e| e.to_string())?
            .is_some())
    }

    /// The inbound listener's RCPT check for an address of our domains: the
    /// mailbox that takes its mail, or None to refuse it (550 5.1.1).
    /// RFC 5321 §4.5.1: postmaster, when no mailbox has that name, is the
    /// provider's service mailbox. RT §3.9: an envelope for an unknown
    /// mailbox is taken, so that its sender gets the avviso di mancata
    /// consegna (5.1.1) the rules ask for; mail that may be PEC (its reverse
    /// path is in a certified domain, as envelopes' and receipts' are) is
    /// therefore accepted, and anything else refused now rather than
    /// accepted and then lost (RFC 5321 §6.1).
    pub fn inbound_recipient(&self, mail_from: &str, rcpt: &str) -> Result<Option<String>, String> {
        if self.mailbox_exists(rcpt)? {
            return Ok(Some(rcpt.to_string()));
        }
        if rcpt
            .rsplit_once('@')
            .is_some_and(|(local, _)| local.eq_ignore_ascii_case("postmaster"))
        {
            return Ok(Some(self.service_address()));
        }
        let certified = self
            .cfg()
            .checker
            .index
            .as_ref()
            .is_some_and(|i| i.is_certified_address(mail_from));
        Ok(certified.then(|| rcpt.to_string()))
    }

    fn service_address(&self) -> String {
        self.cfg().pec_provider.service_address()
    }

    /// RT §9: verify, classify and act; all results commit with the removal
    /// of the item.
    fn process_receive(
        &self,
        item: &Item,
        mail_from: &str,
        rcpt_to: &[String],
    ) -> Result<(), String> {
        let raw = item.content(&self.store, &self.spool)?;
        self.process_received(item, &raw, mail_from, rcpt_to)
    }

    /// [`App::process_receive`] of `raw`, the item's content (an item
    /// processed as it arrives was never queued: its removal is a no-op).
    fn process_received(
        &self,
        item: &Item,
        raw: &[u8],
        mail_from: &str,
        rcpt_to: &[String],
    ) -> Result<(), String> {
        // A receipt holds it from its reads of the transaction to its
        // commit (below), after the slow steps: a timer pass waiting for
        // it holds up every other reader meanwhile.
        let mut _transactions = None;
        let now = self.clock.now();
        let time = LegalTime::new(now);
        let mut b = Batch::new();
        item.done(&mut b);
        let t = std::time::Instant::now();
        // Certificates as they were when the message arrived: one that
        // waited in the queue (a scanner down, a crash) past its signer's
        // certificate expiry was genuine when it was handed to us. Checked
        // "now" first (the cached chain, RT §6.3's cost at throughput); only
        // a chain refused for an item that waited is checked again at its
        // arrival.
        let checker = &self.cfg().checker;
        let mut report = checker.check(&item.id, raw);
        let chain_refused = report
            .signature
            .as_ref()
            .is_some_and(|v| matches!(v.status, crate::smime::SignatureStatus::UntrustedChain(_)));
        if chain_refused && now - item.created > chrono::Duration::minutes(5) {
            report = checker.check_at(&item.id, raw, crate::smime::VerifyTime::At(item.created));
        }
        crate::metrics::time(crate::metrics::VERIFY_SECONDS, t.elapsed());
        if report.wrapped {
            // RT §6.3: what arrived is not itself S/MIME-signed; a genuine
            // envelope inside a wrapper (a list, a forward) certifies
            // nothing about this transaction: ordinary mail, wrapped in
            // a busta di anomalia.
            report.outcome = Outcome::Ordinary;
            report.reason = Some("busta di trasporto racchiusa in un altro messaggio".into());
        }
        if report.outcome == Outcome::Pec && !report.canonical {
            // Verified only after its line endings were repaired: what
            // would be stored and read again (the daticert, postacert.eml
            // behind a receipt) is not byte for byte what was verified.
            report.outcome = Outcome::Anomaly;
            report.reason = Some(
                "fine riga non conformi nel contenuto firmato: la firma non lo certifica".into(),
            );
        }
        let received = match (
            report.outcome,
            report.verdict.as_ref().and_then(|v| v.claimed),
        ) {
            (Outcome::Pec, Some(ClaimedKind::Pec(k))) => k.token(),
            (Outcome::Pec, _) => "pec",
            (Outcome::Anomaly, _) => "anomalia",
            _ => "ordinaria",
        };
        metrics::counter!(crate::metrics::PEC_RECEIVED, "kind" => received).increment(1);
        // Exactly once per (event, recipient) for genuine PEC messages: a
        // peer that retries a relay after a crash gets its 250 again, nothing
        // is repeated. Only *verified* messages are remembered, so a forged
        // plain mail cannot suppress the real one, and a verified message is
        // known by what its signature covers (the signer and the signed
        // daticert), never by its Message-ID, which anyone holding a copy
        // can rewrite: a genuine notice re-sent under an envelope's
        // identificativo must not make the envelope itself a "duplicate".
        let signer = report
            .signature
            .as_ref()
            .and_then(|s| s.signer_sha1.as_deref())
            .unwrap_or_default();
        let outer_id =
            crate::pec::mime::header_value(crate::pec::mime::split_header(raw).0, "Message-ID");
        let claimed = report.verdict.as_ref().and_then(|v| v.claimed);
        let message_id = match &report.daticert {
            Some(d) if report.outcome == Outcome::Pec => signed_event_key(signer, d),
            _ => format!(
                "{signer}\nmessage-id\n{}",
                outer_id.clone().unwrap_or_else(|| item.blob.clone())
            ),
        };
        let _in_flight = match self.claim_in_flight(&message_id) {
            Some(guard) => guard,
            // Another copy is being processed right now: try again shortly.
            None => return Err(format!("message {message_id} is already being processed")),
        };
        let mut unique: Vec<String> = Vec::new();
        for r in rcpt_to {
            if !unique.iter().any(|u| u.eq_ignore_ascii_case(r)) {
                unique.push(r.clone());
            }
        }
        // The record as releases before the signed key wrote it (the
        // envelope's `<identificativo>`, else the Message-ID): a relay
        // retried across the upgrade is still a duplicate. Only while such
        // records were there at start-up (they are purged after
        // SEEN_RETENTION); this lookup can go in a later release.
        let legacy = match (&report.daticert, claimed) {
            _ if !self.legacy_seen => None,
            (Some(d), Some(ClaimedKind::Pec(PecType::Transport))) => {
                Some(format!("<{}>", d.identificativo))
            }
            _ => outer_id,
        };
        let seen = |key: &[u8]| -> Result<bool, String> {
            Ok(self
                .store
                .get(Table::Seen, key)
                .map_err(|e| e.to_string())?
                .is_some())
        };
        let mut fresh = Vec::new();
        for r in unique {
            let key = format!("{message_id}\n{}", r.to_lowercase()).into_bytes();
            if report.outcome == Outcome::Pec {
                let legacy_seen = match &legacy {
                    Some(l) => seen(format!("{l}\n{}", r.to_lowercase()).as_bytes())?,
                    None => false,
                };
                if legacy_seen || seen(&key)? {
                    tracing::info!(event = "duplicate_ignored", key = %message_id.replace('\n', " "), to = %r);
                    continue;
                }
                b.put(Table::Seen, key, now.timestamp().to_be_bytes().to_vec());
            }
            fresh.push(r);
        }
        if fresh.is_empty() {
            return self.commit(b);
        }
        let rcpt_to = &fresh[..];
        let mut flags = Vec::new();
        // One scan per message, whichever paths need it.
        let scanned = std::cell::OnceCell::new();
        match (report.outcome, claimed, &report.daticert) {
            (Outcome::Pec, Some(ClaimedKind::Pec(PecType::Transport)), Some(d))
                if d.data
                    .instant()
                    .is_some_and(|t| item.created - t > ENVELOPE_MAX_AGE) =>
            {
                // An envelope that reached us far later than any relay retry
                // (RT §2.2.2: a sender's provider gives up after 24 h; how
                // long it then waited in our queue does not count) is a
                // replay, which the duplicate record may have forgotten:
                // certifying it again would date a new consegna today.
                let why = format!(
                    "busta di trasporto del {} {}: oltre il tempo massimo di inoltro, non più certificabile",
                    d.data.giorno, d.data.ora
                );
                self.wrap_unless_infected(&mut b, item, raw, mail_from, rcpt_to, why, &scanned)?;
            }
            (Outcome::Pec, Some(ClaimedKind::Pec(PecType::Transport)), Some(d)) => {
                // A genuine envelope certifies a transaction for its own
                // destinatari: sent on to anyone else (a forward, a replay
                // to other users) it is ordinary mail to them.
                let (listed, unlisted): (Vec<String>, Vec<String>) =
                    rcpt_to.iter().cloned().partition(|r| {
                        d.destinatari
                            .iter()
                            .any(|x| x.address.eq_ignore_ascii_case(r))
                    });
                if !unlisted.is_empty() {
                    let why =
                        "destinatario non compreso tra i destinatari della busta di trasporto";
                    self.wrap_unless_infected(
                        &mut b,
                        item,
                        raw,
                        mail_from,
                        &unlisted,
                        why.into(),
                        &scanned,
                    )?;
                }
                if listed.is_empty() {
                    return self.commit(b);
                }
                let rcpt_to = &listed[..];
                // Unavailable scanner under `tempfail`: the item waits.
                let virus = self.scan_once(raw, &scanned)?;
                let headers = signed_original_headers(raw);
                let c = Certification::from_daticert(
                    d,
                    self.cfg().pec_provider.clone(),
                    time,
                    &headers,
                );
                // Presa in carico to the sending provider's service mailbox.
                let sig = report.signature.as_ref();
                let live = self.cfg();
                let mail_receipt = live
                    .checker
                    .index
                    .as_ref()
                    .and_then(|i| {
                        match i.lookup_signer(
                            sig.and_then(|s| s.signer_sha1.as_deref()).unwrap_or(""),
                            sig.and_then(|s| s.signer_der.as_deref()).unwrap_or(&[]),
                        ) {
                            SignerLookup::Found(p) => Some(p.mail_receipt.clone()),
                            _ => None,
                        }
                    })
                    .ok_or("genuine envelope but no mailReceipt for its signer")?;
                let pic_id = self.new_id(time);
                let pic = self.sign(build::taken_in_charge(&c, &pic_id, &mail_receipt, rcpt_to))?;
                self.route(
                    &mut b,
                    &pic,
                    &self.service_address(),
                    std::slice::from_ref(&mail_receipt),
                    Some(&c.pec_id),
                    now,
                )?;
                let mut r = self.record(now, Event::TakenInChargeSent, &c);
                r.provider = report.provider.clone();
                r.related = vec![pic_id];
                r.append_to(&mut b);
                if let Some(name) = virus {
                    // RT §3.6: not delivered, kept, and one avviso di
                    // rilevazione virus per recipient to the sending
                    // provider's service mailbox.
                    self.keep_virus(&item.id, raw)?;
                    for rcpt in rcpt_to {
                        let notice_id = self.new_id(time);
                        let notice = self.sign(build::virus_detected(
                            &c,
                            &notice_id,
                            &mail_receipt,
                            rcpt,
                            &name,
                        ))?;
                        self.route(
                            &mut b,
                            &notice,
                            &self.service_address(),
                            std::slice::from_ref(&mail_receipt),
                            Some(&c.pec_id),
                            now,
                        )?;
                        let mut r = self.record(now, Event::VirusDetected, &c);
                        r.recipients = vec![rcpt.clone()];
                        r.provider = report.provider.clone();
                        r.related = vec![notice_id];
                        r.detail = Some(format!("in a received envelope: {name}"));
                        r.append_to(&mut b);
                    }
                    return self.commit(b);
                }
                let mut deliverable = Vec::new();
                for rcpt in rcpt_to {
                    let state = accounts::get(&self.store, rcpt)
                        .map_err(|e| e.to_string())?
                        .map(|a| a.state);
                    if state.is_some_and(AccountState::can_receive) {
                        deliverable.push(rcpt.as_str());
                        continue;
                    }
                    let failure = if state.is_some() {
                        DeliveryFailure::MailboxDisabled
                    } else {
                        DeliveryFailure::UnknownRecipient
                    };
                    metrics::counter!(crate::metrics::DELIVERY_ERRORS, "code" => failure.code().to_string())
                        .increment(1);
                    let notice_id = self.new_id(time);
                    let mut r = self.record(now, Event::DeliveryError, &c);
                    r.recipients = vec![rcpt.clone()];
                    r.provider = report.provider.clone();
                    r.related = vec![notice_id.clone()];
                    r.detail = Some(failure.code().to_string());
                    r.append_to(&mut b);
                    let signed =
                        self.sign(build::delivery_error(&c, &notice_id, rcpt, &failure))?;
                    self.route(
                        &mut b,
                        &signed,
                        &self.service_address(),
                        std::slice::from_ref(&c.sender),
                        Some(&c.pec_id),
                        now,
                    )?;
                }
                // One of our own envelopes reaching its local recipients
                // after the final notice (its reception waited: a scanner
                // down, a release from quarantine): the 24 h notice has
                // closed the transaction, as for a relay (see
                // `closed_by_final_notice`), so it is stored without a
                // consegna. Its age is the signed date's, not the item's.
                let closed = self.is_local(&d.mittente)
                    && d.data.instant().is_some_and(|sent| {
                        chrono::Duration::from_std(self.cfg().timers.final_after.0)
                            .is_ok_and(|fin| now - sent > fin)
                    });
                // Store first; the receipt follows the storage.
                flags = self.deliver_now_or_queue(
                    &mut b,
                    item,
                    &deliverable,
                    (!closed).then_some(c.sender.as_str()),
                    &c.pec_id,
                    raw,
                )?;
            }
            (Outcome::Pec, Some(ClaimedKind::Pec(t)), Some(d)) => {
                _transactions = Some(self.transactions.read().unwrap_or_else(|e| e.into_inner()));
                // A receipt or notice for one of our users (or our service
                // mailbox): deliver it and update the transaction. The SMTP
                // recipient is not signed: a receipt certifies something
                // only to the sender it reports to (its signed `mittente`)
                // and to our service mailbox (presa in carico, rilevazione
                // virus). Re-sent to anyone else (a user passing a receipt
                // on to a colleague) it is ordinary mail to them, wrapped as
                // such, and only existing mailboxes get anything.
                let service = self.service_address();
                let (addressed, others): (Vec<String>, Vec<String>) =
                    rcpt_to.iter().cloned().partition(|r| {
                        r.eq_ignore_ascii_case(&d.mittente) || r.eq_ignore_ascii_case(&service)
                    });
                if !others.is_empty() {
                    // Not scanned: the same genuine receipt reaches its
                    // addressee unscanned (receipts are the providers'
                    // output; RT §8.4 scans envelopes and ordinary mail),
                    // and one verdict must hold for all its copies.
                    let why = "ricevuta non destinata al mittente del messaggio cui si riferisce";
                    let arrived = item.created;
                    self.wrap_as_anomaly(&mut b, raw, mail_from, &others, why.into(), arrived)?;
                }
                let mut existing = Vec::new();
                for rcpt in &addressed {
                    if self.mailbox_exists(rcpt)? {
                        existing.push(rcpt.as_str());
                    }
                }
                flags = self.deliver_now_or_queue(
                    &mut b,
                    item,
                    &existing,
                    None,
                    &d.identificativo,
                    raw,
                )?;
                // RT §3.7: a rilevazione virus about one of our senders'
                // messages becomes its avviso di mancata consegna per virus.
                // Whom the notice is about: a presa in carico lists its
                // recipients in `ricezione`, the others name theirs in
                // `consegna`; an older-form rilevazione virus only in
                // `ricezione` (RT §8.4: accepted as well).
                let targets: Vec<String> = match (t, &d.consegna) {
                    (PecType::TakenInCharge, _) => d.ricezione.clone(),
                    (PecType::VirusDetected, None) => d.ricezione.clone(),
                    (_, consegna) => consegna.iter().cloned().collect(),
                };
                // Only about transactions we track and are still open: a
                // listed provider cannot make us sign notices about
                // messages never sent, and a recipient already settled (a
                // consegna, a mancata consegna) gets no second outcome.
                let tracked = |target: &str| -> Result<bool, String> {
                    let key = tx_key(&d.identificativo, target);
                    let mut closed = key.clone();
                    closed.extend_from_slice(MARK_CLOSED);
                    let get = |k: &[u8]| self.store.get(Table::Transactions, k);
                    Ok(get(&key).map_err(|e| e.to_string())?.is_some()
                        && get(&closed).map_err(|e| e.to_string())?.is_none())
                };
                if t == PecType::VirusDetected && self.is_local(&d.mittente) {
                    let c = Certification::from_daticert(
                        d,
                        self.cfg().pec_provider.clone(),
                        time,
                        &OriginalHeaders::default(),
                    );
                    let why = d.errore_esteso.clone().unwrap_or_else(|| "virus".into());
                    // One per recipient (RT §8.6).
                    for recipient in &targets {
                        if !tracked(recipient)? {
                            continue;
                        }
                        let notice_id = self.new_id(time);
                        let notice = self
                            .sign(build::delivery_error_virus(&c, &notice_id, recipient, &why))?;
                        self.to_mailbox(
                            &mut b,
                            &notice,
                            &d.mittente,
                            Some(&d.identificativo),
                            now,
                        )?;
                        let mut r = self.record(now, Event::DeliveryError, &c);
                        r.recipients = vec![recipient.clone()];
                        r.provider = report.provider.clone();
                        r.related = vec![notice_id];
                        r.detail = Some(format!("virus: {why}"));
                        r.append_to(&mut b);
                        metrics::counter!(crate::metrics::DELIVERY_ERRORS, "code" => "virus")
                            .increment(1);
                    }
                }
                // Markers, not a read-modify-write of the state: a presa in
                // carico and a consegna for the same recipient may be
                // processed at the same time and must not undo each other.
                let marker = match t {
                    PecType::TakenInCharge => Some(MARK_TAKEN),
                    PecType::Delivery | PecType::DeliveryError | PecType::VirusDetected => {
                        Some(MARK_CLOSED)
                    }
                    _ => None,
                };
                for target in &targets {
                    let mut key = tx_key(&d.identificativo, target);
                    // Only for transactions we track (a read, never a write,
                    // of the state itself). A notice about someone else's
                    // message (the sender's own provider reporting to its
                    // user) never touches ours, whatever identificativo it
                    // names.
                    if let Some(m) = marker
                        && self.is_local(&d.mittente)
                        && tracked(target)?
                    {
                        // A closed transaction is forgotten by the next
                        // timer pass, not 12 hours later.
                        if m == MARK_CLOSED {
                            mark_closed(&mut b, &key, now);
                        } else {
                            key.extend_from_slice(m);
                            b.put(Table::Transactions, key, Vec::new());
                        }
                    }
                }
                let mut r = LogRecord::new(
                    now,
                    if t == PecType::TakenInCharge {
                        Event::TakenInChargeReceived
                    } else {
                        Event::ReceiptReceived
                    },
                );
                r.pec_id = Some(d.identificativo.clone());
                r.msgid = d.msgid.clone();
                r.sender = Some(d.mittente.clone());
                // Whom it is about (RT §8.2: the recipients of the message
                // it certifies); where it went, in `detail`.
                r.recipients = if targets.is_empty() {
                    rcpt_to.to_vec()
                } else {
                    targets
                };
                r.subject = d.oggetto.clone();
                r.related = received_message_id(raw).into_iter().collect();
                r.provider = report.provider.clone();
                r.detail = Some(format!("{} to {}", t.token(), rcpt_to.join(", ")));
                r.append_to(&mut b);
            }
            (Outcome::Pec, Some(ClaimedKind::AnomalyEnvelope), _) => {
                // RT §3.5, §9: a busta di anomalia is made by the recipient's
                // provider for its own user and never travels between
                // providers; one arriving here left somebody's mailbox and
                // certifies nothing to our recipients. Wrapped and scanned
                // like any other mail, not delivered as it is.
                let why = "busta di anomalia di un altro gestore: non certifica nulla a questo destinatario";
                self.wrap_unless_infected(
                    &mut b,
                    item,
                    raw,
                    mail_from,
                    rcpt_to,
                    why.into(),
                    &scanned,
                )?;
            }
            _ => {
                // Ordinary mail or a non-conforming PEC message (RT §3.5, §9).
                let reason = report
                    .reason
                    .clone()
                    .unwrap_or_else(|| "messaggio non certificato".into());
                self.wrap_unless_infected(&mut b, item, raw, mail_from, rcpt_to, reason, &scanned)?;
            }
        }
        self.commit_with_flags(b, flags)
    }

    /// The virus scan of `raw`, made once per message (`scanned` keeps it).
    fn scan_once(
        &self,
        raw: &[u8],
        scanned: &std::cell::OnceCell<Option<String>>,
    ) -> Result<Option<String>, String> {
        if let Some(v) = scanned.get() {
            return Ok(v.clone());
        }
        let v = self.virus_check(raw)?;
        let _ = scanned.set(v.clone());
        Ok(v)
    }

    /// [`App::wrap_as_anomaly`] for `rcpts`, unless the message carries a
    /// virus: then (RT §9: "if virus(M): drop") it is wrapped and signed by
    /// us for nobody, but kept with the infected messages, on the record.
    /// An unavailable scanner under `tempfail` makes the item wait.
    #[allow(clippy::too_many_arguments)]
    fn wrap_unless_infected(
        &self,
        b: &mut Batch,
        item: &Item,
        raw: &[u8],
        mail_from: &str,
        rcpts: &[String],
        reason: String,
        scanned: &std::cell::OnceCell<Option<String>>,
    ) -> Result<(), String> {
        let now = self.clock.now();
        let Some(name) = self.scan_once(raw, scanned)? else {
            return self.wrap_as_anomaly(b, raw, mail_from, rcpts, reason, item.created);
        };
        self.keep_virus(&item.id, raw)?;
        let mut r = LogRecord::new(now, Event::VirusDetected);
        r.sender = Some(mail_from.to_string());
        r.recipients = rcpts.to_vec();
        r.related = received_message_id(raw).into_iter().collect();
        r.detail = Some(format!(
            "message with virus {name}, not certified: not delivered, kept as {}",
            item.id
        ));
        r.append_to(b);
        Ok(())
    }

    /// In `b`: `raw` wrapped in one busta di anomalia for each of `rcpts`
    /// that has a mailbox, and the log record. A read error fails the
    /// item (retried), never drops mail already acknowledged. `arrived`:
    /// when the message was received (its queue item's creation), the
    /// time the busta di anomalia states (RT §3.5: `Date:` is the arrival
    /// time), however long it then waited in the queue.
    fn wrap_as_anomaly(
        &self,
        b: &mut Batch,
        raw: &[u8],
        mail_from: &str,
        rcpts: &[String],
        reason: String,
        arrived: DateTime<Utc>,
    ) -> Result<(), String> {
        let now = self.clock.now();
        let time = LegalTime::new(arrived);
        let mut existing: Vec<String> = Vec::new();
        for r in rcpts {
            if self.mailbox_exists(r)? {
                existing.push(r.clone());
            }
        }
        if !existing.is_empty() {
            let wrapped = self.sign(build::anomaly(&build::AnomalyInput {
                provider: &self.cfg().pec_provider,
                time,
                envelope_from: mail_from,
                recipients: &existing,
                received: raw,
                reason: crate::pec::classify::reason_for_holder(&reason),
                fallback_message_id: &self.new_id(time),
            }))?;
            for rcpt in &existing {
                self.to_mailbox(b, &wrapped, rcpt, None, now)?;
            }
        }
        let mut r = LogRecord::new(now, Event::Anomaly);
        r.sender = Some(mail_from.to_string());
        r.recipients = rcpts.to_vec();
        r.detail = Some(reason);
        r.append_to(b);
        Ok(())
    }

    // ----------------------------------------------------------------------
    // Punto di consegna

    fn process_local(
        &self,
        item: &Item,
        mailbox: &str,
        receipt_to: Option<&str>,
    ) -> Result<(), String> {
        let data = item.content(&self.store, &self.spool)?;
        if receipt_to.is_some() {
            let now = self.clock.now();
            let (_, stopped) = self.closed_by_final_notice(
                item,
                &data,
                std::slice::from_ref(&mailbox.to_string()),
                now,
            );
            if !stopped.is_empty() {
                // RT §8.1: our sender was told at the 24 h mark that this
                // recipient was not reached; a consegna now would contradict
                // it. The message is kept for an operator, without receipt.
                let mut b = Batch::new();
                let kept = self.keep_given_up(&mut b, &without_receipt(item))?;
                let mut r = LogRecord::new(now, Event::DeliveryError);
                r.pec_id = item.pec_id.clone();
                r.recipients = stopped;
                r.detail = Some(format!(
                    "not delivered: the 24 h notice closed the transaction; kept in {}",
                    kept.unwrap_or_default()
                ));
                r.append_to(&mut b);
                item.done(&mut b);
                return self.commit(b);
            }
        }
        self.store_locally(item, mailbox, receipt_to, &data)
    }

    fn store_locally(
        &self,
        item: &Item,
        mailbox: &str,
        receipt_to: Option<&str>,
        data: &[u8],
    ) -> Result<(), String> {
        let mut b = Batch::new();
        item.done(&mut b);
        let flags = self.deliver_into(&mut b, item, mailbox, receipt_to, data)?;
        self.commit_with_flags(b, flags.into_iter().collect())
    }

    /// Received `data` for local `mailboxes`: stored within `b`, the
    /// reception's own commit, each followed (with `receipt_to`) by its
    /// receipt. A temporary failure of any fails the whole item, whose
    /// retry finds what was already stored (Maildir names come from the
    /// item). With LMTP, each mailbox is queued as an item of its own
    /// instead: a mailbox server may refuse one user for a while (4xx), and
    /// neither the other recipients nor the reception itself (the presa in
    /// carico, RT §1.1) may wait for it; given up, such an item gets its
    /// sender the avviso di mancata consegna.
    fn deliver_now_or_queue(
        &self,
        b: &mut Batch,
        item: &Item,
        mailboxes: &[&str],
        receipt_to: Option<&str>,
        pec_id: &str,
        data: &[u8],
    ) -> Result<Vec<FlagChange>, String> {
        let mut changes = Vec::new();
        if self.cfg().delivery.lmtp.is_some() {
            for m in mailboxes {
                self.enqueue_local(b, data, m, receipt_to, Some(pec_id), self.clock.now())?;
            }
            return Ok(changes);
        }
        for m in mailboxes {
            changes.extend(self.deliver_into(b, item, m, receipt_to, data)?);
        }
        Ok(changes)
    }

    /// Store `data` in `mailbox` (idempotently under `item`'s id: a retry
    /// after a crash finds it), then, in `b`, the archive copy, the quota
    /// warnings and — with `receipt_to` — the ricevuta di consegna or the
    /// avviso di mancata consegna. `b`'s commit makes the delivery count:
    /// a queued local delivery commits it alone, the reception point with
    /// the rest of the message's processing (one commit instead of two).
    fn deliver_into(
        &self,
        b: &mut Batch,
        item: &Item,
        mailbox: &str,
        receipt_to: Option<&str>,
        data: &[u8],
    ) -> Result<Option<FlagChange>, String> {
        let stored: Result<(), DeliveryFailure> = match self.cfg().delivery.lmtp {
            Some(addr) => {
                let out =
                    tokio::runtime::Handle::current().block_on(crate::smtp::client::deliver_lmtp(
                        addr,
                        &self.cfg().hostname,
                        &self.service_address(),
                        mailbox,
                        data,
                        Duration::from_secs(60),
                    ));
                match out {
                    Ok(o) if !o.delivered.is_empty() => Ok(()),
                    Ok(o) => match o.permanent.first() {
                        // The mailbox server refused for good (e.g. quota 5.2.2).
                        Some((_, why)) => Err(lmtp_failure(why)),
                        None => return Err(format!("LMTP temporary failure: {:?}", o.temporary)),
                    },
                    Err(e) => return Err(format!("LMTP: {e}")),
                }
            }
            None => 'maildir: {
                // Read once: its existence here, its quota below.
                let acc = accounts::get(&self.store, mailbox).map_err(|e| e.to_string())?;
                // A mailbox removed while this waited in the queue: its
                // folder was set aside, and is not made again at its
                // address (the next holder must not find this mail).
                if acc.is_none() && !mailbox.eq_ignore_ascii_case(&self.service_address()) {
                    break 'maildir Err(DeliveryFailure::UnknownRecipient);
                }
                let dir = mailbox_path(&self.cfg().data_dir.join("mail"), mailbox)
                    .map_err(|e| e.to_string())?;
                let md = self.writable(Maildir::open(dir), data.len())?;
                // Only an item from before this process started, or one already
                // retried, can have been interrupted between delivery and commit.
                let interrupted = item.attempts > 0 || item.created < self.started;
                let full = receipt_to.is_some() && !self.fits(&md, acc.as_ref(), data.len())?;
                // Whether an earlier try left the file (then it is counted
                // already). Not asked on the common path (a first attempt,
                // whose rename into `new/` keeps a file of that name
                // anyway); asked after an interruption, and before refusing
                // for quota: a try whose failure could not be recorded (a
                // full disk) looks like a first one, and what it stored must
                // not be refused. The same rule as `archive_copy`.
                if (interrupted || full)
                    && md
                        .find(&item.id, data.len())
                        .map_err(|e| e.to_string())?
                        .is_some()
                {
                    Ok(())
                } else if full {
                    Err(DeliveryFailure::MailboxFull)
                } else {
                    let before = md.new_stamp();
                    crate::mailsync::deliver(b, &md, &item.id, data, interrupted)
                        .map_err(|e| e.to_string())?;
                    self.note_usage(&md, mailbox, data.len() as u64, before);
                    Ok(())
                }
            }
        };
        metrics::counter!(crate::metrics::DELIVERY_ATTEMPTS, "target" => "local",
            "result" => if stored.is_ok() { "ok" } else { "permanent" })
        .increment(1);
        let flags = match stored {
            Ok(()) => self.after_storage(
                b,
                mailbox,
                item,
                ArchiveSource::Bytes(data),
                receipt_to.is_some(),
            )?,
            Err(_) => None,
        };
        match (receipt_to, stored) {
            (Some(sender), stored) => self.delivery_outcome(b, data, mailbox, sender, stored)?,
            (None, Err(failure)) => {
                // A notice (accettazione, receipt, anomalia) the mailbox
                // server refused: no PEC notice answers a notice (RT §1.2),
                // but the refusal goes on the record.
                let mut r = LogRecord::new(self.clock.now(), Event::DeliveryError);
                r.pec_id = item.pec_id.clone();
                r.recipients = vec![mailbox.to_string()];
                r.detail = Some(format!(
                    "notice refused by the mailbox server: {} {}",
                    failure.code(),
                    failure.description()
                ));
                r.append_to(b);
            }
            (None, Ok(())) => {}
        }
        Ok(flags)
    }

    // ----------------------------------------------------------------------
    // Lifecycle (expiry, reminders, downgrade, suspension, deletion)

    /// The plan of an account (empty name: the first plan). A plan the
    /// configuration no longer defines (renamed, removed) falls back to
    /// the first plan, loudly: without one, the mailbox would have no
    /// quota and never expire.
    pub fn plan_of(&self, acc: &accounts::Account) -> Option<crate::config::Plan> {
        let live = self.cfg();
        match live.plan(&acc.plan) {
            Some(p) => Some(p.clone()),
            None => {
                // Once per plan name and process: this is on the delivery
                // path, and the operator needs one line, not one per message.
                static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
                let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
                if !warned.contains(&acc.plan) {
                    warned.push(acc.plan.clone());
                    tracing::error!(event = "plan_not_configured", address = %acc.address, plan = %acc.plan, "accounts on a plan the configuration no longer defines get the first plan");
                }
                live.plan("").cloned()
            }
        }
    }

    /// The daily sweep: everything [`crate::lifecycle::due`] says, applied
    /// and logged, a few hundred accounts per commit. Safe to run at any
    /// time and as often as wanted: each action happens once.
    pub fn sweep(&self) -> Result<Swept, String> {
        let now = self.clock.now();
        let today = LegalTime::new(now).date();
        let mut swept = Swept::default();
        for entry in self.store.entries(Table::Mailboxes) {
            let (_, v) = entry.map_err(|e| e.to_string())?;
            let Ok(acc) = serde_json::from_slice::<accounts::Account>(&v) else {
                continue; // reported by `mailbox list`; never stops the sweep
            };
            // Most accounts have nothing due: decided without the lock;
            // the few that do are re-read and changed under it.
            let due = self.plan_of(&acc).is_some_and(|p| {
                !crate::lifecycle::due(&acc, &p, &self.cfg().lifecycle, today).is_empty()
            });
            if due {
                // One account that cannot be changed now (its Maildir
                // unreadable, a file expunged under the move) is reported
                // and tried again at the next sweep: the accounts after it
                // still get their reminders and transitions.
                match accounts::with_lock(&acc.address, || self.sweep_one(&acc.address, today, now))
                {
                    Ok(n) => swept.actions += n,
                    Err(e) => {
                        tracing::warn!(event = "sweep_account_failed", address = %acc.address, error = %e);
                        swept.failed.push(acc.address.clone());
                    }
                }
            }
        }
        Ok(swept)
    }

    /// The due lifecycle actions of one account, applied in one commit.
    fn sweep_one(
        &self,
        address: &str,
        today: chrono::NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<usize, String> {
        use crate::lifecycle::{self, Action};
        let Some(mut acc) = accounts::get(&self.store, address).map_err(|e| e.to_string())? else {
            return Ok(0);
        };
        let Some(plan) = self.plan_of(&acc) else {
            return Ok(0);
        };
        let actions = lifecycle::due(&acc, &plan, &self.cfg().lifecycle, today);
        let mut b = Batch::new();
        let acted = actions.len();
        let mut deleted = false;
        for a in actions {
            let what = match a {
                Action::Remind {
                    key,
                    days,
                    expires,
                    superseded,
                } => {
                    let at_expiry = self.expiry_outlook(&acc, &plan);
                    // The days actually left (a sweep run late, after the
                    // daemon was down, does not say "tra 90 giorni").
                    let left = if days >= 0 {
                        (expires - today).num_days().max(0)
                    } else {
                        days
                    };
                    let n =
                        crate::notices::expiry_reminder(&acc.address, expires, left, &at_expiry);
                    self.send_notice(&mut b, &n, &acc, now)?;
                    acc.reminders.push(key.clone());
                    acc.reminders.extend(superseded.iter().cloned());
                    if superseded.is_empty() {
                        format!("expiry reminder {key} sent")
                    } else {
                        format!(
                            "expiry reminder {key} sent (in place of {})",
                            superseded.join(", ")
                        )
                    }
                }
                Action::Downgrade { to, new_expiry } => {
                    let what = format!(
                        "expired on {}: plan {} + {} add-ons → {to}, new expiry {new_expiry}",
                        acc.expires.map(|d| d.to_string()).unwrap_or_default(),
                        plan.name,
                        acc.addons
                    );
                    let (expired, dropped) = (acc.expires.unwrap_or(today), acc.addons);
                    acc.plan = to.clone();
                    acc.addons = 0;
                    acc.expires = Some(new_expiry);
                    acc.reminders.clear();
                    let moved = (self.cfg().lifecycle.downgrade_excess
                        == crate::config::DowngradeExcess::Archive)
                        .then(|| self.move_excess_to_archive(&acc))
                        .transpose()?;
                    // The holder is told what was lost, with the figures:
                    // a silent downgrade would show itself as refused mail.
                    let quota_after = self.quota(&acc).unwrap_or(0);
                    // Measured afresh (not the usage cache): the figure
                    // goes into the holder's notice.
                    let used = match self.cfg().delivery.lmtp {
                        Some(_) => 0,
                        None => {
                            crate::maildir::measure(&self.cfg().data_dir.join("mail"), &acc.address)
                                .map_or(0, |m| m.used)
                        }
                    };
                    let n = crate::notices::downgraded(
                        &acc.address,
                        expired,
                        &to,
                        dropped,
                        quota_after,
                        moved,
                        used.saturating_sub(quota_after),
                    );
                    self.send_notice(&mut b, &n, &acc, now)?;
                    match moved {
                        Some((n, bytes)) => {
                            format!("{what}; {n} messages ({bytes} bytes) moved to the archive")
                        }
                        None => what,
                    }
                }
                Action::Become { state, reason } => {
                    // The one transition table decides, whatever asks.
                    if !acc.state.can_become(state) {
                        tracing::error!(event = "transition_refused", to = %acc.address, from_state = ?acc.state, to_state = ?state);
                        continue;
                    }
                    let what = format!("state {:?} → {state:?}: {reason}", acc.state);
                    acc.state = state;
                    acc.state_since = Some(now);
                    acc.state_reason = reason;
                    what
                }
                Action::Delete => {
                    crate::tenants::delete_account(&mut b, &acc);
                    deleted = true;
                    "deleted after suspension (tombstone kept)".to_string()
                }
            };
            let mut r = LogRecord::new(now, Event::Mailbox);
            r.recipients = vec![acc.address.clone()];
            r.detail = Some(what);
            r.append_to(&mut b);
        }
        if !deleted {
            accounts::put(&mut b, &acc);
        }
        self.commit(b)?;
        if deleted {
            // As for an operator's removal: the messages go aside, never
            // to whoever gets the address next (the same holder, by the
            // tombstone, or a national `mailbox add`).
            let mail = self.cfg().data_dir.join("mail");
            let stamp = now.format("%Y%m%dT%H%M%SZ").to_string();
            if let Err(e) = crate::mailsync::set_aside(&self.store, &mail, &acc.address, &stamp) {
                tracing::error!(event = "maildir_not_set_aside", to = %acc.address, error = %e);
            }
            self.forget_usage(&acc.address);
        }
        Ok(acted)
    }

    /// Inbox bytes used (the usage cache, rescanned only when the folder
    /// changed); none with LMTP delivery: the mailbox server knows.
    fn inbox_used(&self, acc: &accounts::Account) -> Result<Option<u64>, String> {
        if self.cfg().delivery.lmtp.is_some() {
            return Ok(None);
        }
        let dir = mailbox_path(&self.cfg().data_dir.join("mail"), &acc.address)
            .map_err(|e| e.to_string())?;
        // Never delivered to: empty (a read creates no folders).
        if !dir.exists() {
            return Ok(Some(0));
        }
        let md = Maildir::open(dir).map_err(|e| e.to_string())?;
        self.usage(&md, &acc.address).map(Some)
    }

    /// (used, quota) of a mailbox's inbox, for lists of many mailboxes
    /// (the archive is not measured).
    pub fn inbox_usage(&self, acc: &accounts::Account) -> Option<(u64, u64)> {
        let quota = self.quota(acc)?;
        Some((self.inbox_used(acc).ok()??, quota))
    }

    /// What a downgrade at expiry would do to `acc` (usage measured now).
    pub fn downgrade_plan(
        &self,
        acc: &accounts::Account,
    ) -> Result<crate::lifecycle::DowngradePlan, String> {
        // With LMTP the mailbox server holds the mail: nothing to measure.
        let space = match self.cfg().delivery.lmtp {
            Some(_) => crate::maildir::Measure::default(),
            None => crate::maildir::measure(&self.cfg().data_dir.join("mail"), &acc.address)
                .map_err(|e| e.to_string())?,
        };
        self.downgrade_plan_for(acc, space)
    }

    /// [`App::downgrade_plan`] with the mailbox's space already known.
    fn downgrade_plan_for(
        &self,
        acc: &accounts::Account,
        space: crate::maildir::Measure,
    ) -> Result<crate::lifecycle::DowngradePlan, String> {
        let now = self
            .plan_of(acc)
            .ok_or("the mailbox's plan is not configured")?;
        let live = self.cfg();
        let after = now.downgrade_to.as_deref().and_then(|p| live.plan(p));
        Ok(crate::lifecycle::downgrade_plan(
            acc,
            &now,
            after,
            space,
            live.lifecycle.downgrade_excess,
        ))
    }

    /// What expiry will bring `acc` on `plan`, with the mailbox's figures
    /// (read now: only when a reminder is due). When they cannot be read,
    /// the downgrade is still announced, without the usage.
    fn expiry_outlook(
        &self,
        acc: &accounts::Account,
        plan: &crate::config::Plan,
    ) -> crate::notices::AtExpiry {
        // Struck off the roll: not renewed, cancelled at expiry whatever
        // the plan says (see `lifecycle::due`).
        if acc.state_reason.starts_with(crate::lifecycle::STRUCK_OFF) {
            return crate::notices::AtExpiry::Lapse;
        }
        if plan.on_expiry != crate::config::OnExpiry::Downgrade {
            return crate::notices::AtExpiry::Suspend;
        }
        let (d, measured) = match self.downgrade_plan(acc) {
            // With LMTP delivery nothing was measured here: no figure.
            Ok(d) => (d, self.cfg().delivery.lmtp.is_none()),
            Err(e) => {
                tracing::warn!(event = "downgrade_plan_failed", address = %acc.address, error = %e);
                match self.downgrade_plan_for(acc, crate::maildir::Measure::default()) {
                    Ok(d) => (d, false),
                    Err(_) => return crate::notices::AtExpiry::Suspend,
                }
            }
        };
        crate::notices::AtExpiry::Downgrade {
            to: d.to_plan,
            addons_dropped: d.addons_dropped,
            inbox_used: measured.then_some(d.inbox_used),
            inbox_quota_after: d.inbox_quota_after,
            excess_to_archive: d.moves_to_archive > 0,
        }
    }

    /// Policy `archive` at a downgrade: the oldest inbox messages move into
    /// the archive folder (a rename) until the inbox fits its new space or
    /// the archive space is used up. Returns (messages, bytes) moved.
    fn move_excess_to_archive(&self, acc: &accounts::Account) -> Result<(usize, u64), String> {
        let (Some(plan), None) = (self.plan_of(acc), self.cfg().delivery.lmtp) else {
            return Ok((0, 0));
        };
        let quota = plan.inbox_quota(acc.addons);
        let root = mailbox_path(&self.cfg().data_dir.join("mail"), &acc.address)
            .map_err(|e| e.to_string())?;
        let inbox = Maildir::open(&root).map_err(|e| e.to_string())?;
        let archive = Maildir::open_folder(&root, ARCHIVE_FOLDER).map_err(|e| e.to_string())?;
        let mut used = inbox.usage(None).map_err(|e| e.to_string())?.bytes;
        let archive_used = archive.usage(None).map_err(|e| e.to_string())?.bytes;
        let mut room = plan.archive.0.saturating_sub(archive_used);
        // An archive already over its space (a plan with less of it) would
        // rotate or refuse copies next: a message whose archive copy is its
        // only one afterwards is not safe there, so its inbox name stays.
        let archive_over = archive_used > plan.archive.0;
        // Most inbox messages already have their archive copy (a hard link
        // made at delivery): for those the inbox name just goes, the copy
        // stays, and the archive's space is not spent twice (nor, under
        // `rotate-oldest`, would the next copy rotate the moved mail out).
        // A copy is known by its inode (a link) or by its name before the
        // flags (`<id>,S=<size>`: a copy written, not linked); moving such
        // a message would put two files of one name in the archive.
        use std::os::unix::fs::MetadataExt as _;
        let inode = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let base = |p: &std::path::Path| {
            p.file_name().map(|n| {
                n.to_string_lossy()
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
        };
        let copies = archive.messages().map_err(|e| e.to_string())?;
        let archived: std::collections::HashSet<(u64, u64)> =
            copies.iter().filter_map(|(p, _)| inode(p)).collect();
        let archived_names: std::collections::HashSet<String> =
            copies.iter().filter_map(|(p, _)| base(p)).collect();
        let (mut n, mut bytes) = (0, 0);
        let messages = inbox.oldest_first().map_err(|e| e.to_string())?;
        // Only the INBOX's own messages move; the holder's folders (which
        // the quota counts too) stay as they are. When those alone exceed
        // the new space, emptying the INBOX would not make the mailbox fit:
        // nothing moves, and the holder is told how much is over.
        let in_inbox: u64 = messages.iter().map(|(_, len)| len).sum();
        if used.saturating_sub(in_inbox) > quota {
            return Ok((0, 0));
        }
        for (path, len) in messages {
            let linked = inode(&path).is_some_and(|i| archived.contains(&i))
                || base(&path).is_some_and(|b| archived_names.contains(&b));
            if used <= quota || (linked && archive_over) || (!linked && len > room) {
                break;
            }
            let Some(name) = path.file_name() else {
                continue;
            };
            let moved = if linked {
                std::fs::remove_file(&path)
            } else {
                std::fs::rename(&path, archive.root().join("cur").join(name))
            };
            match moved {
                Ok(()) => {}
                // Expunged or renamed (a flag) by the holder's IMAP client
                // since the listing: it is not in the inbox as counted.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                // Anything else stops the move; what moved so far stays
                // moved and is flushed and recorded below.
                Err(e) => {
                    tracing::warn!(event = "downgrade_move_stopped", file = %path.display(), error = %e);
                    break;
                }
            }
            if !linked {
                room -= len;
            }
            used -= len;
            n += 1;
            bytes += len;
        }
        if n > 0 {
            for d in [
                root.join("new"),
                root.join("cur"),
                archive.root().join("cur"),
            ] {
                crate::fsync::sync_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            }
            self.forget_usage(&acc.address);
        }
        Ok((n, bytes))
    }

    // ----------------------------------------------------------------------
    // Quota (plans: `config.plans`)

    /// The inbox quota of a mailbox, from its plan and add-ons.
    fn quota(&self, acc: &accounts::Account) -> Option<u64> {
        self.plan_of(acc).map(|p| p.inbox_quota(acc.addons))
    }

    /// A mailbox's usage: pecd's own deliveries are added as they happen;
    /// the folder is looked at again (and rescanned if it changed, e.g. an
    /// IMAP client deleted messages) at most every [`USAGE_RECHECK`], or
    /// [`USAGE_RESCAN_FACTOR`] times the last rescan's duration if longer,
    /// so a busy mailbox is not rescanned on every delivery and a large one
    /// does not cost a rescan every second.
    fn usage(&self, md: &Maildir, mailbox: &str) -> Result<u64, String> {
        let key = usage_key(mailbox);
        let known = self.lock_usage().get(&key).copied();
        if let Some((u, until)) = known
            && std::time::Instant::now() < until
        {
            return Ok(u.bytes);
        }
        self.measure(md, &key, known.map(|k| k.0))
    }

    /// The usage of `md` read from its folders (`known`: a figure whose
    /// directory stamps may show it still holds), cached under `key` (a
    /// [`usage_key`] already).
    fn measure(
        &self,
        md: &Maildir,
        key: &str,
        known: Option<crate::maildir::Usage>,
    ) -> Result<u64, String> {
        let started = std::time::Instant::now();
        let u = md.usage(known).map_err(|e| e.to_string())?;
        let trusted = usage_trusted_for(started.elapsed());
        self.lock_usage()
            .insert(key.to_string(), (u, started + trusted));
        Ok(u.bytes)
    }

    /// Forget a mailbox's usage figures (its folder set aside, say).
    pub fn forget_usage(&self, address: &str) {
        let key = usage_key(address);
        let mut cache = self.lock_usage();
        cache.remove(&format!("{key}#archive"));
        cache.remove(&key);
    }

    fn lock_usage(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (crate::maildir::Usage, std::time::Instant)>>
    {
        self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `size` more bytes fit in the mailbox's inbox quota. Receipts
    /// and notices are never refused for quota (the holder needs them most
    /// when the box is full: pecd's choice), only envelopes.
    fn fits(
        &self,
        md: &Maildir,
        acc: Option<&accounts::Account>,
        size: usize,
    ) -> Result<bool, String> {
        let Some(acc) = acc else {
            return Ok(true);
        };
        let mailbox = acc.address.as_str();
        let Some(quota) = self.quota(acc) else {
            return Ok(true);
        };
        let mut after = self.usage(md, mailbox)?.saturating_add(size as u64);
        if after > quota {
            // A refusal is final (an avviso di mancata consegna 5.2.2): it
            // rests on the folders as they are now, not on a figure up to a
            // minute old (the holder may just have made room). Their
            // directory stamps say whether the figure still holds, so a
            // mailbox that stays full is not rescanned for each message.
            let known = self.lock_usage().get(&usage_key(mailbox)).map(|k| k.0);
            after = self
                .measure(md, mailbox, known)?
                .saturating_add(size as u64);
        }
        if quota > 0 {
            metrics::histogram!(crate::metrics::QUOTA_USAGE).record(after as f64 / quota as f64);
        }
        Ok(after <= quota)
    }

    /// The cached usage after a delivery of `added` bytes (`before`: the
    /// time of `new/` before it).
    fn note_usage(
        &self,
        md: &Maildir,
        mailbox: &str,
        added: u64,
        before: Option<std::time::SystemTime>,
    ) {
        let key = usage_key(mailbox);
        let mut cache = self.lock_usage();
        if let Some((u, until)) = cache.get(&key).copied() {
            cache.insert(key, (md.usage_after_delivery(u, added, before), until));
        }
    }

    /// 70 % and 90 % of the inbox quota: warned once per crossing, into the
    /// mailbox and to the holder's reference address (via `notify`).
    /// Returns whether `acc` changed (the caller stores it).
    fn quota_warnings(&self, b: &mut Batch, acc: &mut accounts::Account) -> Result<bool, String> {
        let mailbox = acc.address.clone();
        let mailbox = mailbox.as_str();
        let Some(quota) = self.quota(acc).filter(|q| *q > 0) else {
            return Ok(false);
        };
        let dir =
            mailbox_path(&self.cfg().data_dir.join("mail"), mailbox).map_err(|e| e.to_string())?;
        let md = Maildir::open(dir).map_err(|e| e.to_string())?;
        let used = self.usage(&md, mailbox)?;
        let pct = used.saturating_mul(100) / quota;
        let level: u8 = match pct {
            90.. => 90,
            70.. => 70,
            _ => 0,
        };
        if level == acc.quota_warned {
            return Ok(false);
        }
        let now = self.clock.now();
        if level > acc.quota_warned {
            let n = crate::notices::quota_warning(mailbox, level, used, quota);
            self.send_notice(b, &n, acc, now)?;
            let mut r = LogRecord::new(now, Event::Mailbox);
            r.recipients = vec![mailbox.to_string()];
            r.detail = Some(format!("quota warning {level}% ({used} of {quota} bytes)"));
            r.append_to(b);
        }
        acc.quota_warned = level;
        Ok(true)
    }

    /// A provider notice into the holder's PEC mailbox and, through the
    /// smarthost, to the holder's reference address.
    fn send_notice(
        &self,
        b: &mut Batch,
        n: &crate::notices::Notice,
        acc: &accounts::Account,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let time = LegalTime::new(now);
        let from = self.notice_sender();
        let into_box = crate::notices::message(n, &from, &acc.address, time, &self.new_id(time));
        self.to_mailbox(b, &into_box, &acc.address, None, now)?;
        self.relay_notice(b, n, &acc.holder.reference_email, now)
    }

    /// Mail a password-reset link to the holder's reference address.
    pub fn reset_by_link(
        &self,
        tenant: &str,
        address: &str,
        actor: &str,
    ) -> Result<accounts::Account, crate::tenants::TenantError> {
        use crate::tenants::TenantError;
        let live = self.cfg();
        if live.notify.smarthost.is_none() {
            return Err(TenantError::Conflict(
                "no notify.smarthost: reset links cannot be mailed".into(),
            ));
        }
        let now = self.clock.now();
        // The token, its record and the mail carrying it in one commit.
        let mut b = Batch::new();
        let (token, acc) =
            crate::tenants::issue_reset_token(&mut b, &self.store, tenant, address, actor, now)?;
        // Where holders reach the panel; without it a link would name the
        // admin listener's own address (loopback, plain HTTP): none is sent.
        let Some(base) = live.notify.panel_url.clone() else {
            return Err(TenantError::Conflict(
                "no notify.panel_url: reset links would not reach the panel".into(),
            ));
        };
        let url = format!("{base}/me/reset?token={token}");
        let hours = crate::tenants::RESET_VALIDITY.num_hours();
        let n = crate::notices::reset_link(&acc.address, &url, hours);
        self.relay_notice(&mut b, &n, &acc.holder.reference_email, now)
            .and_then(|()| self.commit(b))
            .map_err(TenantError::Conflict)?;
        Ok(acc)
    }

    fn notice_sender(&self) -> String {
        self.cfg()
            .notify
            .from
            .clone()
            .unwrap_or_else(|| format!("noreply@{}", self.cfg().provider.domain))
    }

    /// A provider notice as ordinary mail to `to` through the smarthost
    /// (nothing without a smarthost or an address).
    fn relay_notice(
        &self,
        b: &mut Batch,
        n: &crate::notices::Notice,
        to: &str,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let (Some(via), Some((_, domain))) = (self.cfg().notify.smarthost, to.rsplit_once('@'))
        else {
            return Ok(());
        };
        let time = LegalTime::new(now);
        let from = self.notice_sender();
        let data = crate::notices::message(n, &from, to, time, &self.new_id(time));
        let work = Work::Relay {
            mail_from: from.clone(),
            rcpt_to: vec![to.to_string()],
            domain: domain.to_ascii_lowercase(),
            via: Some(via),
        };
        self.enqueue(b, &data, work, now, None)
    }

    // ----------------------------------------------------------------------
    // Archive: a copy of every message a mailbox sends or receives

    /// Copy `data` into the mailbox's archive folder (`.Archivio`, a
    /// Maildir++ folder an IMAP client shows), within the plan's archive
    /// space. When it is full, `lifecycle.archive_policy` decides: `stop`
    /// (no new copies) or `rotate-oldest` (the oldest copies go); either
    /// way the holder and the order are warned, once per filling.
    /// Returns whether `acc` changed (the caller stores it).
    #[allow(clippy::too_many_arguments)]
    fn archive_copy(
        &self,
        b: &mut Batch,
        notices: &mut Batch,
        acc: &mut accounts::Account,
        id: &str,
        data: &ArchiveSource<'_>,
        interrupted: bool,
    ) -> Result<bool, String> {
        let mailbox = acc.address.clone();
        let mailbox = mailbox.as_str();
        let quota = self.plan_of(acc).map_or(0, |p| p.archive.0);
        if quota == 0 {
            return Ok(false);
        }
        let root =
            mailbox_path(&self.cfg().data_dir.join("mail"), mailbox).map_err(|e| e.to_string())?;
        let folder = Maildir::open_folder(&root, ARCHIVE_FOLDER);
        let md = match data {
            // Linked to a spool file, which no record keeps a copy of.
            ArchiveSource::Spool { .. } => self.durable(folder)?,
            _ => self.writable(folder, data.len())?,
        };
        let key = format!("{mailbox}#archive");
        let size = data.len() as u64;
        let mut used = self.usage(&md, &key)?;
        let mut full = used.saturating_add(size) > quota;
        // As in `deliver_into`: whether an earlier try left this copy is
        // asked after an interruption, and before a full archive rotates
        // or warns; not on the common path.
        if (interrupted || full)
            && md
                .find(id, data.len())
                .map_err(|e| e.to_string())?
                .is_some()
        {
            return Ok(false);
        }
        let mut rotated = 0;
        if full {
            // Full by the folders as they are now (the holder may have
            // made room), before anything is removed for it; the stamps
            // spare a rescan when nothing changed.
            let known = self.lock_usage().get(&usage_key(&key)).map(|k| k.0);
            used = self.measure(&md, &key, known)?;
            full = used.saturating_add(size) > quota;
        }
        if full
            && size <= quota
            && self.cfg().lifecycle.archive_policy == crate::config::ArchivePolicy::RotateOldest
        {
            // Only the oldest copies that make room, and only if removing
            // what can be removed makes room at all: a copy that cannot
            // fit is not worth the archive.
            let oldest = md.oldest_first().map_err(|e| e.to_string())?;
            let need = used.saturating_add(size) - quota;
            if oldest.iter().map(|(_, len)| *len).sum::<u64>() >= need {
                for (path, len) in oldest {
                    if used.saturating_add(size) <= quota {
                        break;
                    }
                    if std::fs::remove_file(&path).is_ok() {
                        used = used.saturating_sub(len);
                        rotated += 1;
                    }
                }
            }
            self.lock_usage().remove(&usage_key(&key));
            full = used.saturating_add(size) > quota;
        }
        let now = self.clock.now();
        if rotated > 0 {
            let mut r = LogRecord::new(now, Event::Mailbox);
            r.recipients = vec![mailbox.to_string()];
            r.detail = Some(format!("archive full: {rotated} oldest copies removed"));
            r.append_to(b);
        }
        if !full {
            let before = md.new_stamp();
            match data {
                // The inbox copy, when there is one: linked, not written again.
                ArchiveSource::Bytes(bytes) => {
                    let inbox = Maildir::open(&root).map_err(|e| e.to_string())?;
                    crate::mailsync::deliver_linked(b, &md, id, bytes, interrupted, &inbox)
                }
                ArchiveSource::Stored(bytes) => {
                    crate::mailsync::deliver(b, &md, id, bytes, interrupted)
                }
                // What the holder sent: linked to its spool file, read
                // only if no link can be made.
                ArchiveSource::Spool { path, len } => md
                    .deliver_linked_from(id, *len, interrupted, path, || {
                        std::fs::read(path).map(std::borrow::Cow::Owned)
                    })
                    .map(|_| ()),
            }
            .map_err(|e| e.to_string())?;
            self.note_usage(&md, &key, size, before);
        }
        let policy = self.cfg().lifecycle.archive_policy;
        // `stop`: once per filling. `rotate-oldest` stays full by design:
        // once, then again at most weekly while it keeps rotating.
        let stale = acc
            .archive_warned_at
            .is_none_or(|t| now - t > chrono::Duration::days(7));
        let rotating = policy == crate::config::ArchivePolicy::RotateOldest;
        let warn = (full || rotated > 0) && (!acc.archive_full_warned || (rotating && stale));
        if warn {
            let n = crate::notices::archive_full(mailbox, quota, policy.name());
            self.send_notice(notices, &n, acc, now)?;
            if let Ok(Some(t)) = crate::tenants::get(&self.store, &acc.tenant) {
                self.relay_notice(notices, &n, &t.secretariat_email, now)?;
            }
            let mut r = LogRecord::new(now, Event::Mailbox);
            r.recipients = vec![mailbox.to_string()];
            r.detail = Some(format!(
                "archive full ({quota} bytes), policy {}: holder and order warned",
                policy.name()
            ));
            r.append_to(notices);
        }
        // A new filling (stop policy) is warned after the holder freed
        // space below 90 %.
        let reset = !rotating
            && acc.archive_full_warned
            && !full
            && used.saturating_add(size).saturating_mul(10) <= quota.saturating_mul(9);
        if warn {
            acc.archive_full_warned = true;
            acc.archive_warned_at = Some(now);
        } else if reset {
            acc.archive_full_warned = false;
        }
        Ok(warn || reset)
    }

    /// After a message is stored in `mailbox`: its archive copy, and (for
    /// envelopes) the quota warnings; the account is written once.
    fn after_storage(
        &self,
        b: &mut Batch,
        mailbox: &str,
        item: &Item,
        data: ArchiveSource<'_>,
        envelope: bool,
    ) -> Result<Option<FlagChange>, String> {
        if self.cfg().delivery.lmtp.is_some() {
            return Ok(None);
        }
        let Some(mut acc) = accounts::get(&self.store, mailbox).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let before = Flags::of(&acc);
        let mut notices = Batch::new();
        let interrupted = item.attempts > 0 || item.created < self.started;
        let mut changed =
            self.archive_copy(b, &mut notices, &mut acc, &item.id, &data, interrupted)?;
        if envelope {
            changed |= self.quota_warnings(&mut notices, &mut acc)?;
        }
        Ok(changed.then(|| FlagChange {
            mailbox: mailbox.to_string(),
            before,
            after: Flags::of(&acc),
            notices,
        }))
    }

    /// Commit `b`; with a change of an account's warning flags, under that
    /// account's lock and only if no concurrent delivery changed the flags
    /// first (then its warnings went out, and these are dropped): each
    /// warning once, while deliveries to one mailbox still run in parallel.
    fn commit_with_flags(&self, mut b: Batch, changes: Vec<FlagChange>) -> Result<(), String> {
        // Each account's lock, taken in address order: two deliveries to
        // overlapping sets of mailboxes cannot deadlock.
        let mut locks: Vec<String> = changes.iter().map(|c| c.mailbox.clone()).collect();
        locks.sort_unstable();
        locks.dedup();
        let locks: Vec<&str> = locks.iter().map(String::as_str).collect();
        accounts::with_locks(&locks, || {
            for change in changes {
                let fresh =
                    accounts::get(&self.store, &change.mailbox).map_err(|e| e.to_string())?;
                if let Some(mut acc) = fresh
                    && Flags::of(&acc) == change.before
                {
                    change.after.apply(&mut acc);
                    accounts::put(&mut b, &acc);
                    b.ops.extend(change.notices.ops);
                    b.log.extend(change.notices.log);
                }
            }
            self.commit(b)
        })
    }

    /// `data` read as a busta di trasporto of one of our senders (whose
    /// transactions, timers and notices are ours), or None.
    fn own_envelope(&self, data: &[u8], time: LegalTime) -> Option<EnvelopeView> {
        let (header, _) = crate::pec::mime::split_header(data);
        crate::pec::mime::header_value(header, crate::pec::headers::X_TRASPORTO)
            .is_some_and(|v| v == crate::pec::headers::TRANSPORT_PEC)
            .then(|| self.view_envelope(data, time).ok())
            .flatten()
            .filter(|env| self.is_local(&env.daticert.mittente))
    }

    /// A busta di trasporto read back: its daticert, the certification data
    /// for notices about it (roles from its Cc header) and its original.
    fn view_envelope(&self, envelope: &[u8], time: LegalTime) -> Result<EnvelopeView, String> {
        let mut found =
            crate::report::parts(envelope, &["daticert.xml", "postacert.eml"]).into_iter();
        let xml = found.next().flatten().ok_or("envelope without daticert")?;
        let daticert = crate::pec::daticert::Daticert::parse(&xml).map_err(|e| e.to_string())?;
        let postacert = found.next().flatten();
        // Roles from the signed original (see `signed_original_headers`),
        // already decoded here.
        let headers = postacert
            .as_deref()
            .map(OriginalHeaders::parse)
            .unwrap_or_default();
        let certification = Certification::from_daticert(
            &daticert,
            self.cfg().pec_provider.clone(),
            time,
            &headers,
        );
        Ok(EnvelopeView {
            daticert,
            certification,
            postacert,
        })
    }

    /// After a stored (or refused) envelope: the ricevuta di avvenuta
    /// consegna (variant per RT §3.8) or the avviso di mancata consegna.
    fn delivery_outcome(
        &self,
        b: &mut Batch,
        envelope: &[u8],
        mailbox: &str,
        sender: &str,
        stored: Result<(), DeliveryFailure>,
    ) -> Result<(), String> {
        let now = self.clock.now();
        let time = LegalTime::new(now);
        let mut env = self.view_envelope(envelope, time)?;
        let postacert = env.postacert.take();
        let c = &env.certification;
        let notice_id = self.new_id(time);
        let (notice, event, detail) = match stored {
            Ok(()) => {
                let variant = c.delivery_variant(mailbox);
                metrics::counter!(crate::metrics::CONSEGNA_EMITTED, "variant" => variant.token())
                    .increment(1);
                (
                    build::delivery_owned(c, &notice_id, mailbox, variant, postacert),
                    Event::Delivered,
                    None,
                )
            }
            Err(failure) => (
                {
                    metrics::counter!(crate::metrics::DELIVERY_ERRORS, "code" => failure.code().to_string())
                        .increment(1);
                    build::delivery_error(c, &notice_id, mailbox, &failure)
                },
                Event::DeliveryError,
                Some(failure.code().to_string()),
            ),
        };
        let mut r = self.record(now, event, c);
        r.recipients = vec![mailbox.to_string()];
        r.provider = Some(env.daticert.gestore_emittente.clone());
        r.related = vec![notice_id.clone()];
        r.detail = detail;
        r.append_to(b);
        let signed = self.sign(notice)?;
        self.route(
            b,
            &signed,
            &self.service_address(),
            &[sender.to_string()],
            Some(&c.pec_id),
            now,
        )
    }

    // ----------------------------------------------------------------------
    // Relay

    async fn resolve(&self, domain: &str) -> Result<Vec<std::net::SocketAddr>, String> {
        if let Some(r) = self
            .cfg()
            .routes
            .iter()
            .find(|r| r.domain.eq_ignore_ascii_case(domain))
        {
            return Ok(vec![r.host]);
        }
        let live = self.cfg();
        let resolver = live.resolver.as_ref().map_err(|e| e.clone())?;
        let mx = resolver
            .mx_lookup(domain)
            .await
            .map_err(|e| format!("MX {domain}: {e}"))?;
        let mut hosts: Vec<_> = mx
            .iter()
            .map(|m| (m.preference(), m.exchange().to_utf8()))
            .collect();
        hosts.sort();
        let mut out = Vec::new();
        for (_, h) in hosts {
            if let Ok(ips) = resolver.lookup_ip(h.as_str()).await {
                let port = self.cfg().delivery.mx_port;
                out.extend(ips.iter().map(|ip| std::net::SocketAddr::new(ip, port)));
            }
        }
        if out.is_empty() {
            return Err(format!("no MX host reachable for {domain}"));
        }
        Ok(out)
    }

    async fn process_relay(
        self: &Arc<Self>,
        item: &Item,
        mail_from: &str,
        rcpt_to: &[String],
        domain: &str,
        via: Option<std::net::SocketAddr>,
    ) -> Result<(), String> {
        let now = self.clock.now();
        let give_up = self.cfg().queue.give_up_after.0;
        // The try `reschedule` put at the limit itself still runs: the
        // slack of one first retry interval.
        if item.expired(now, give_up + self.cfg().queue.retry_initial.0) {
            // Past the limit before this try (the daemon was down, the
            // queue backed up): given up, not relayed late.
            // Its last try's answer is what the sender is told, if any.
            let error = item
                .last_error
                .clone()
                .unwrap_or_else(|| format!("not relayed within {give_up:?}"));
            let late = item.clone();
            return self
                .blocking(move |app| {
                    let mut b = Batch::new();
                    app.reschedule(&mut b, late, now, error);
                    app.commit(b)
                })
                .await;
        }
        let data = item.content(&self.store, &self.spool)?;
        let (kept, stopped) = self.closed_by_final_notice(item, &data, rcpt_to, now);
        let narrowed;
        let item = if stopped.is_empty() {
            item
        } else {
            // The item names only the recipients still to reach, from the
            // commit that records the others on: a later retry neither
            // relays to them nor records them again.
            let mut next = item.clone();
            if let Work::Relay { rcpt_to, .. } = &mut next.work {
                rcpt_to.clone_from(&kept);
            }
            let (closed, done) = (next.clone(), kept.is_empty());
            self.blocking(move |app| {
                let mut b = Batch::new();
                let mut r = LogRecord::new(now, Event::DeliveryError);
                r.pec_id = closed.pec_id.clone();
                r.recipients = stopped;
                r.detail = Some("not relayed: the 24 h notice closed the transaction".into());
                r.append_to(&mut b);
                if done {
                    closed.done(&mut b);
                } else {
                    // Same key (lane, due time, id): replaced.
                    closed.put(&mut b);
                }
                app.commit(b)
            })
            .await?;
            if kept.is_empty() {
                return Ok(());
            }
            narrowed = next;
            &narrowed
        };
        let rcpt_to = &kept[..];
        let hosts = match via {
            Some(h) => Ok(vec![h]),
            None => self.resolve(domain).await,
        };
        let mut last_err = String::new();
        let mut outcome = None;
        let mut permanent = false;
        // Whether every host tried would not even open a session with a
        // 5xx (a blocklist, RFC 7504 "no service"): then the refusal is
        // final, as Postfix with `smtp_skip_5xx_greeting = no`, and the
        // sender hears of it now, not 24 h later.
        let mut all_unwilling = false;
        match hosts {
            Ok(hosts) => {
                all_unwilling = !hosts.is_empty();
                for h in hosts {
                    match self
                        .relays
                        .deliver(
                            h,
                            &self.cfg().hostname,
                            mail_from,
                            rcpt_to,
                            &data,
                            RELAY_COMMAND_TIMEOUT,
                        )
                        .await
                    {
                        Ok(o) => {
                            outcome = Some(o);
                            break;
                        }
                        Err(e) => {
                            // A refusal's own reply (its enhanced code goes
                            // into the notice), else what went wrong.
                            last_err = e.reply().map_or_else(|| e.to_string(), str::to_string);
                            all_unwilling &= matches!(
                                e,
                                crate::smtp::client::ClientError::Unwilling { code, .. } if code >= 500
                            );
                            if e.is_ambiguous() {
                                // The peer may hold it already: retry later,
                                // never fan out to the next host now. A pecd
                                // peer absorbs the repeat of a verified PEC
                                // message (by Message-ID and recipient);
                                // others may deliver it twice, as any MTA
                                // after a lost final reply (RFC 5321 §6.1).
                                break;
                            }
                            if !e.is_temporary() {
                                // A 5xx to MAIL FROM: every recipient is
                                // refused for good. (A host that will not
                                // open a session is a temporary fault of
                                // that host: the next one is tried.)
                                permanent = true;
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => last_err = e,
        }
        if all_unwilling && outcome.is_none() {
            permanent = true;
        }
        if permanent {
            outcome = Some(crate::smtp::client::Outcome {
                permanent: rcpt_to
                    .iter()
                    .map(|r| (r.clone(), last_err.clone()))
                    .collect(),
                ..Default::default()
            });
        }
        let result = match &outcome {
            Some(o) if o.temporary.is_empty() && o.permanent.is_empty() => "ok",
            Some(o) if o.temporary.is_empty() => "permanent",
            _ => "temporary",
        };
        metrics::counter!(crate::metrics::DELIVERY_ATTEMPTS, "target" => "relay", "result" => result)
            .increment(1);
        let (item, mail_from, domain) = (item.clone(), mail_from.to_string(), domain.to_string());
        self.blocking(move |app| {
            app.relay_done(&item, &mail_from, &domain, &data, now, outcome, last_err)
        })
        .await
    }

    /// RT §8.1, §3.10: once the 24 h notice told our sender that the
    /// transmission to a certified recipient ended negatively, the envelope
    /// no longer goes there (a consegna would contradict it; the timers no
    /// longer track it). Returns `rcpt_to` split into those still to relay
    /// and those stopped. The envelope is read only for an item that old.
    fn closed_by_final_notice(
        &self,
        item: &Item,
        data: &[u8],
        rcpt_to: &[String],
        now: DateTime<Utc>,
    ) -> (Vec<String>, Vec<String>) {
        let all = || (rcpt_to.to_vec(), Vec::new());
        if item.pec_id.is_none() || !item.expired(now, self.cfg().timers.final_after.0) {
            return all();
        }
        let Some(env) = self.own_envelope(data, LegalTime::new(now)) else {
            return all();
        };
        rcpt_to.iter().cloned().partition(|r| {
            !env.certification
                .recipients
                .iter()
                .any(|c| c.class == RecipientClass::Certified && c.address.eq_ignore_ascii_case(r))
        })
    }

    /// RT §8.2 asks every record for the original Message-ID, subject and
    /// the ids of the messages involved: for a relayed message, read from
    /// its own header (no MIME walk on the relay path). A receipt names
    /// the original in `X-Riferimento-Message-ID`; an envelope's is on the
    /// acceptance record of the same `pec_id`.
    fn describe_relayed(r: &mut LogRecord, data: &[u8]) {
        use crate::pec::mime::{header_value, split_header};
        let (header, _) = split_header(data);
        r.subject = Some(crate::pec::classify::subject(header)).filter(|s| !s.is_empty());
        r.related = header_value(header, "Message-ID").into_iter().collect();
        r.msgid = header_value(header, crate::pec::headers::X_RIFERIMENTO_MESSAGE_ID);
    }

    /// The outcome of a relay attempt, recorded (log, notices for refused
    /// recipients, the item retired or rescheduled) in one commit.
    #[allow(clippy::too_many_arguments)]
    fn relay_done(
        &self,
        item: &Item,
        mail_from: &str,
        domain: &str,
        data: &[u8],
        now: DateTime<Utc>,
        outcome: Option<crate::smtp::client::Outcome>,
        last_err: String,
    ) -> Result<(), String> {
        // A refusal closes its transaction (see `process_received`).
        let _transactions = self.transactions.read().unwrap_or_else(|e| e.into_inner());
        let mut b = Batch::new();
        match outcome {
            Some(o) => {
                // What went: a receipt or notice (X-Ricevuta), or an envelope.
                let (header, _) = crate::pec::mime::split_header(data);
                let event =
                    match crate::pec::mime::header_value(header, crate::pec::headers::X_RICEVUTA) {
                        Some(_) => Event::ReceiptSent,
                        None => Event::EnvelopeSent,
                    };
                let mut r = LogRecord::new(now, event);
                r.pec_id = item.pec_id.clone();
                r.sender = Some(mail_from.into());
                r.recipients = o.delivered.clone();
                r.provider = Some(domain.into());
                Self::describe_relayed(&mut r, data);
                if !o.delivered.is_empty() {
                    r.append_to(&mut b);
                }
                // The refusals say the same of the message (read once).
                for (rcpt, why) in &o.permanent {
                    let mut refused = r.clone();
                    refused.event = Event::DeliveryError;
                    refused.recipients = vec![rcpt.clone()];
                    refused.detail = Some(format!("refused by {domain}: {why}"));
                    refused.append_to(&mut b);
                }
                if !o.permanent.is_empty() {
                    self.undeliverable(&mut b, item, data, &o.permanent, None, now);
                }
                if o.temporary.is_empty() {
                    item.done(&mut b);
                } else {
                    let mut next = item.clone();
                    if let Work::Relay { rcpt_to, .. } = &mut next.work {
                        *rcpt_to = o.temporary.iter().map(|x| x.0.clone()).collect();
                    }
                    if next.expired(now, self.cfg().queue.give_up_after.0) {
                        // Each recipient with its own last answer.
                        self.give_up_relay(&mut b, &next, Some(data), &o.temporary, now);
                    } else {
                        self.reschedule(&mut b, next, now, o.temporary[0].1.clone());
                    }
                }
            }
            None => self.reschedule(&mut b, item.clone(), now, last_err),
        }
        self.commit(b)
    }

    /// Recipients of our own envelope (a local sender's) that its relay
    /// will never reach: refused for good (`gave_up_after` None) or given
    /// up on. Certified recipients refused at the SMTP level get the sender
    /// an avviso di mancata consegna now (no PEC notice will ever come from
    /// their provider), given up ones the 24 h timer notice; recipients
    /// outside PEC get no PEC notice at all (RT §8.6), so the sender gets
    /// what any mail system sends, a non-delivery report, and it reaches a
    /// PEC mailbox as every provider's bounce does: in a busta di anomalia
    /// (RT §1 [OBS]: "ANOMALIA MESSAGGIO: Undelivered Mail Returned to
    /// Sender").
    ///
    /// A notice that cannot be made (the signer fails) is logged, and the
    /// relay's outcome is recorded all the same: undoing it would send the
    /// message again to the recipients that took it, and a relay past its
    /// give-up time must end (RT §2.2.2).
    fn undeliverable(
        &self,
        b: &mut Batch,
        item: &Item,
        data: &[u8],
        failed: &[(String, String)],
        gave_up_after: Option<std::time::Duration>,
        now: DateTime<Utc>,
    ) {
        // All the notices or none: the record below must be true.
        let mut notices = Batch::new();
        match self.try_undeliverable(&mut notices, data, failed, gave_up_after, now) {
            Ok(()) => b.append(notices),
            Err(e) => {
                tracing::error!(event = "undeliverable_notice_failed", item = %item.id, error = %e);
                let mut r = LogRecord::new(now, Event::DeliveryError);
                r.pec_id = item.pec_id.clone();
                r.recipients = failed.iter().map(|f| f.0.clone()).collect();
                r.detail = Some(format!("the sender could not be told: {e}"));
                r.append_to(b);
            }
        }
    }

    fn try_undeliverable(
        &self,
        b: &mut Batch,
        data: &[u8],
        failed: &[(String, String)],
        gave_up_after: Option<std::time::Duration>,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let (header, _) = crate::pec::mime::split_header(data);
        let time = LegalTime::new(now);
        let Some(env) = self.own_envelope(data, time) else {
            return Ok(());
        };
        let mut outside = Vec::new();
        for (rcpt, why) in failed {
            let class = env
                .certification
                .recipients
                .iter()
                .find(|r| r.address.eq_ignore_ascii_case(rcpt))
                .map(|r| r.class);
            if class == Some(RecipientClass::External) {
                outside.push(crate::notices::Undelivered {
                    recipient: rcpt.clone(),
                    why: why.clone(),
                });
            } else if gave_up_after.is_none() {
                self.refused_notice(b, &env, rcpt, why, now)?;
            }
        }
        if outside.is_empty() {
            return Ok(());
        }
        let (d, c) = (&env.daticert, &env.certification);
        let hostname = &self.cfg().hostname;
        let report_id = self.new_id(time);
        let report = crate::notices::non_delivery_report(&crate::notices::NonDelivery {
            hostname,
            to: &d.mittente,
            time,
            message_id: &report_id,
            subject: &c.subject,
            returned_header: header,
            recipients: &outside,
            gave_up_after,
        });
        let wrapped = self.sign(build::anomaly(&build::AnomalyInput {
            provider: &self.cfg().pec_provider,
            time,
            envelope_from: "",
            recipients: std::slice::from_ref(&d.mittente),
            received: &report,
            reason: "avviso di mancato recapito a destinatari di posta ordinaria (non PEC)",
            fallback_message_id: &self.new_id(time),
        }))?;
        self.to_mailbox(b, &wrapped, &d.mittente, Some(&d.identificativo), now)?;
        let mut r = LogRecord::new(now, Event::Anomaly);
        r.pec_id = Some(d.identificativo.clone());
        r.sender = Some(format!("MAILER-DAEMON@{hostname}"));
        r.recipients = vec![d.mittente.clone()];
        r.related = vec![report_id];
        r.detail = Some(format!(
            "non-delivery report for {}",
            outside
                .iter()
                .map(|u| u.recipient.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        r.append_to(b);
        Ok(())
    }

    /// A certified recipient permanently refused at the SMTP level by
    /// another provider: the sender's provider tells its user now, with the
    /// peer's reply in NOTA 12 form, and closes that recipient's timers.
    fn refused_notice(
        &self,
        b: &mut Batch,
        env: &EnvelopeView,
        rcpt: &str,
        reply: &str,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let time = LegalTime::new(now);
        let (d, c) = (&env.daticert, &env.certification);
        // A 5xx reply's own enhanced code, else the generic 5.0.0.
        let code = crate::smtp::client::enhanced_code(reply)
            .filter(|c| c.starts_with('5'))
            .unwrap_or("5.0.0")
            .to_string();
        metrics::counter!(crate::metrics::DELIVERY_ERRORS, "code" => remote_code_label(&code))
            .increment(1);
        let failure = DeliveryFailure::Other {
            code,
            description: format!("destinatario rifiutato dal gestore di destinazione ({reply})"),
        };
        let notice_id = self.new_id(time);
        let mut r = self.record(now, Event::DeliveryError, c);
        r.recipients = vec![rcpt.to_string()];
        r.related = vec![notice_id.clone()];
        r.detail = Some(format!("{}: refused at the SMTP level", failure.code()));
        r.append_to(b);
        let notice = self.sign(build::delivery_error(c, &notice_id, rcpt, &failure))?;
        self.to_mailbox(b, &notice, &d.mittente, Some(&d.identificativo), now)?;
        mark_closed(b, &tx_key(&d.identificativo, rcpt), now);
        Ok(())
    }

    fn reschedule(&self, b: &mut Batch, mut item: Item, now: DateTime<Utc>, error: String) {
        let give_up = self.cfg().queue.give_up_after.0;
        if item.expired(now, give_up) {
            if let Work::Relay { rcpt_to, .. } = &item.work {
                let failed: Vec<(String, String)> =
                    rcpt_to.iter().map(|r| (r.clone(), error.clone())).collect();
                let data = item
                    .content(&self.store, &self.spool)
                    .inspect_err(|e| {
                        tracing::error!(event = "queue_content_missing", item = %item.id, error = %e)
                    })
                    .ok();
                self.give_up_relay(b, &item, data.as_deref(), &failed, now);
                return;
            }
            // Work on a message acknowledged with a 250, or due in a
            // mailbox: never dropped, kept for an operator.
            let (kept_item, notice) = self.envelope_given_up(&item, give_up, &error);
            match self.keep_given_up(b, &kept_item) {
                Ok(kept) => {
                    b.append(notice);
                    // RT §2.2.2: give up after 24 h, on the record, with
                    // whom it concerned (RT §8.2).
                    let mut r = LogRecord::new(now, Event::DeliveryError);
                    r.pec_id = item.pec_id.clone();
                    match &item.work {
                        Work::Local { mailbox, .. } | Work::Archive { mailbox } => {
                            r.recipients = vec![mailbox.clone()];
                        }
                        Work::Receive { mail_from, rcpt_to } => {
                            r.sender = Some(mail_from.clone());
                            r.recipients = rcpt_to.clone();
                        }
                        Work::Relay { .. } => {}
                    }
                    let mut detail = format!("gave up after {give_up:?}: {error}");
                    if let Some(place) = kept {
                        detail.push_str(&format!("; the message is kept in {place}"));
                    }
                    r.detail = Some(detail);
                    r.append_to(b);
                    item.done(b);
                    return;
                }
                // Not kept: not given up either (tried again later).
                Err(e) => tracing::error!(event = "queue_keep_failed", item = %item.id, error = %e),
            }
        }
        item.retry(
            b,
            now,
            error,
            self.cfg().queue.retry_initial.0,
            self.cfg().queue.retry_max.0,
        );
        // The last try at the limit, not up to a backoff past it (RT
        // §2.2.2: a relay is given up after 24 h, not tried at 24 h 20).
        // Only before the limit: an item past it is here because keeping
        // it failed, and waits its backoff like any other (never `now`
        // again and again).
        if !item.expired(now, give_up)
            && let Ok(limit) = chrono::Duration::from_std(give_up)
        {
            item.next_attempt = item.next_attempt.min(item.created + limit).max(now);
        }
        item.put(b);
    }

    /// RT §2.2.2: a relay given up at `give_up_after`, `failed` its
    /// recipients with their last answers. What it carried is the
    /// sender's, who hears of it ([`App::undeliverable`]: certified
    /// recipients by the 24 h timer notice, others by a non-delivery
    /// report; nothing when its content is gone), and the give-up is on
    /// the record.
    fn give_up_relay(
        &self,
        b: &mut Batch,
        item: &Item,
        data: Option<&[u8]>,
        failed: &[(String, String)],
        now: DateTime<Utc>,
    ) {
        let give_up = self.cfg().queue.give_up_after.0;
        if let Some(data) = data {
            self.undeliverable(b, item, data, failed, Some(give_up), now);
        }
        let mut r = LogRecord::new(now, Event::DeliveryError);
        r.pec_id = item.pec_id.clone();
        r.recipients = failed.iter().map(|f| f.0.clone()).collect();
        if let Work::Relay {
            mail_from, domain, ..
        } = &item.work
        {
            r.sender = Some(mail_from.clone());
            r.provider = Some(domain.clone());
        }
        if let Some(data) = data {
            Self::describe_relayed(&mut r, data);
        }
        let why = failed.first().map(|f| f.1.as_str()).unwrap_or_default();
        r.detail = Some(format!("gave up after {give_up:?}: {why}"));
        r.append_to(b);
        item.done(b);
    }

    // ----------------------------------------------------------------------
    // Quarantine

    /// RT §1.4, §3.9: an envelope its mailbox could not take for
    /// `give_up` (a mailbox server answering 4xx, a disk failing) is not
    /// delivered: its sender gets the avviso di mancata consegna (5.4.7, the
    /// delivery time expired). Returns the item to keep for an operator and
    /// the notice's batch, which goes in only with the keeping: the item
    /// kept is without its receipt, so that a later release cannot
    /// contradict the avviso with a consegna.
    fn envelope_given_up(&self, item: &Item, give_up: Duration, error: &str) -> (Item, Batch) {
        let Work::Local {
            mailbox,
            receipt_to: Some(sender),
        } = &item.work
        else {
            return (item.clone(), Batch::new());
        };
        let failure = DeliveryFailure::Other {
            code: "5.4.7".into(),
            description: format!(
                "consegna non riuscita entro {} ({error})",
                crate::notices::duration_it(give_up)
            ),
        };
        let mut notice = Batch::new();
        let sent = item.content(&self.store, &self.spool).and_then(|data| {
            self.delivery_outcome(&mut notice, &data, mailbox, sender, Err(failure))
        });
        match sent {
            Ok(()) => (without_receipt(item), notice),
            Err(e) => {
                tracing::error!(event = "undeliverable_notice_failed", item = %item.id, error = %e);
                (item.clone(), Batch::new())
            }
        }
    }

    /// A message whose processing was given up, as a file in the
    /// `data_dir/quarantine` Maildir (flushed before it counts), with its
    /// queue item beside it in the store (`meta`, `quarantine/<id>`):
    /// where it was going and why it failed. Returns where it is (the
    /// Maildir and the file's name); None for a message whose content is
    /// gone already (nothing to keep).
    fn keep_given_up(&self, b: &mut Batch, item: &Item) -> Result<Option<String>, String> {
        let content = match self.item_content(item) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(event = "queue_content_missing", item = %item.id, error = %e);
                return Ok(None);
            }
        };
        let md = self.durable(Maildir::open(self.cfg().data_dir.join("quarantine")))?;
        let name = match &content {
            ItemContent::Stored(data) => md.deliver_once(&item.id, data, true),
            // Linked, not read (it may be large).
            ItemContent::Spool { path, len } => {
                md.deliver_linked_from(&item.id, *len, true, path, || {
                    std::fs::read(path).map(std::borrow::Cow::Owned)
                })
            }
        }
        .map_err(|e| e.to_string())?;
        b.put(
            Table::Meta,
            queue::quarantine_key(&item.id),
            serde_json::to_vec(item).map_err(|e| e.to_string())?,
        );
        tracing::error!(event = "queue_item_kept", item = %item.id, file = %name);
        Ok(Some(format!("{} as {name}", md.root().display())))
    }

    /// Held while an operator's action changes item `id`: the worker
    /// skips busy items, and only runs an item still stored under the key
    /// it read, so an item moved meanwhile never runs twice.
    fn claim_item(&self, id: &str) -> Option<ItemClaim<'_>> {
        self.lock_busy().insert(id.to_string()).then(|| ItemClaim {
            app: self,
            id: id.to_string(),
        })
    }

    /// What waits in the queue and what was set aside (`pecd queue list`).
    pub fn queue_view(&self) -> Result<QueueView, QueueActionError> {
        let failed = |e: StoreError| QueueActionError::Failed(e.to_string());
        let items = queue::list(&self.store)
            .map_err(failed)?
            .into_iter()
            .map(|(_, i)| i)
            .collect();
        let md = Maildir::open(self.cfg().data_dir.join("quarantine"))
            .map_err(|e| QueueActionError::Failed(e.to_string()))?;
        let mut quarantined: Vec<QuarantineView> = queue::quarantined(&self.store)
            .map_err(failed)?
            .into_iter()
            .map(|q| {
                let (item, error) = match q.item {
                    Ok(i) => (Some(i), None),
                    Err(e) => (None, Some(e)),
                };
                let file = item
                    .as_ref()
                    .and_then(|i| md.path_of(&i.id).ok().flatten())
                    .map(|p| p.display().to_string());
                QuarantineView {
                    name: q.name,
                    item,
                    error,
                    file,
                }
            })
            .collect();
        let ids: Vec<&str> = quarantined
            .iter()
            .filter_map(|q| q.item.as_ref().map(|i| i.id.as_str()))
            .collect();
        let stray = md
            .files_not_of(&ids)
            .map_err(|e| QueueActionError::Failed(e.to_string()))?;
        quarantined.extend(stray.iter().map(|p| QuarantineView::stray(p)));
        Ok(QueueView { items, quarantined })
    }

    /// An operator's retry: queued item `id` due now (the peer is back,
    /// the mailbox fixed). Its give-up clock keeps running from its
    /// creation.
    pub fn retry_queued(&self, id: &str) -> Result<Item, QueueActionError> {
        let claim = self
            .claim_item(id)
            .ok_or_else(|| QueueActionError::Busy(id.to_string()))?;
        let failed = |e: StoreError| QueueActionError::Failed(e.to_string());
        let Some((key, mut item)) = queue::find(&self.store, id).map_err(failed)? else {
            let kept = queue::quarantine_key(id);
            let hint = match self.store.get(Table::Meta, &kept).map_err(failed)? {
                Some(_) => " (it is in quarantine: `pecd queue release` queues it again)",
                None => "",
            };
            return Err(QueueActionError::NotFound(format!("{id}{hint}")));
        };
        let mut b = Batch::new();
        self.spool
            .touch(&item)
            .map_err(|e| QueueActionError::Failed(e.to_string()))?;
        queue::due_now(&mut b, key, &mut item, self.clock.now());
        self.commit(b).map_err(QueueActionError::Failed)?;
        drop(claim);
        self.wake.notify_one();
        tracing::info!(event = "queue_retry", item = %id);
        Ok(item)
    }

    /// An operator's release of a given-up item kept in quarantine (see
    /// [`App::keep_given_up`]): queued again with its message, its give-up
    /// clock started again, under its own id and counted as tried once, so
    /// a delivery it made before (a file written, then a later step
    /// failed) is found, not repeated. The quarantine file goes only after
    /// that commit.
    pub fn release_quarantined(&self, name: &str) -> Result<Item, QueueActionError> {
        let claim = self
            .claim_item(name)
            .ok_or_else(|| QueueActionError::Busy(name.to_string()))?;
        let failed = |e: String| QueueActionError::Failed(e);
        let key = queue::quarantine_key(name);
        let kept = self
            .store
            .get(Table::Meta, &key)
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| QueueActionError::NotFound(name.to_string()))?;
        let old: Item = serde_json::from_slice(&kept).map_err(|_| {
            QueueActionError::NotReleasable(
                name.to_string(),
                "an undecodable queue entry, kept only to be looked at".into(),
            )
        })?;
        let md = Maildir::open(self.cfg().data_dir.join("quarantine"))
            .map_err(|e| failed(e.to_string()))?;
        let path = md
            .path_of(&old.id)
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| {
                QueueActionError::NotReleasable(
                    name.to_string(),
                    format!("its message is no longer in {}", md.root().display()),
                )
            })?;
        let data = std::fs::read(&path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
        let mut b = Batch::new();
        let mut item = queue::stage(
            &mut b,
            &self.spool,
            &[&data],
            old.id.clone(),
            old.work.clone(),
            self.clock.now(),
            old.pec_id.clone(),
        )
        .map_err(|e| failed(e.to_string()))?;
        // "Tried before" is what makes a delivery look for its own earlier
        // file (wherever an IMAP client moved it) instead of writing anew.
        item.attempts = 1;
        item.put(&mut b);
        b.delete(Table::Meta, key);
        self.commit(b).map_err(failed)?;
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(event = "quarantine_file_left", file = %path.display(), error = %e);
        }
        drop(claim);
        self.wake.notify_one();
        tracing::info!(event = "quarantine_released", item = %old.id);
        Ok(item)
    }

    // ----------------------------------------------------------------------
    // Timers (RT §8.1)

    /// RT §8.1: the first look (12 h by default) and the last (24 h).
    fn timer_durations(&self) -> Result<(chrono::Duration, chrono::Duration), String> {
        let t = &self.cfg().timers;
        let d = |v: Duration| chrono::Duration::from_std(v).map_err(|e| e.to_string());
        Ok((d(t.warning_after.0)?, d(t.final_after.0)?))
    }

    /// In `b`: a timer entry for every open transaction of an older store
    /// (from before the timers table). Returns how many.
    fn index_timers(&self, b: &mut Batch) -> Result<usize, String> {
        let (warn, fin) = self.timer_durations()?;
        let mut n = 0;
        for entry in self.store.entries(Table::Transactions) {
            let (k, v) = entry.map_err(|e| e.to_string())?;
            if let Ok(st) = serde_json::from_slice::<TxState>(&v) {
                let at = st.sent_at + if st.warned { fin } else { warn };
                b.put(Table::Timers, timer_key(at, &k), Vec::new());
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn check_timers(&self) -> Result<usize, String> {
        // Most passes find nothing due: they hold up no receipt.
        let first = self
            .store
            .range(Table::Timers, b"", None, 1)
            .map_err(|e| e.to_string())?;
        let nothing_due = match first.first() {
            None => true,
            Some((k, _)) => {
                crate::store::split_time_key(k).is_some_and(|(at, _)| at > self.clock.now())
            }
        };
        if nothing_due {
            return Ok(0);
        }
        let _pass = self.transactions.write().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now();
        let time = LegalTime::new(now);
        let (warn, fin) = self.timer_durations()?;
        let mut b = Batch::new();
        let mut n = 0;
        // Only what is due: the timers table is ordered by due time, so a
        // backlog of transactions waiting for their receipts costs nothing
        // per pass.
        let mut due: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for entry in self.store.entries(Table::Timers) {
            let (k, _) = entry.map_err(|e| e.to_string())?;
            match crate::store::split_time_key(&k) {
                Some((at, _)) if at > now => break,
                Some((_, tx)) => {
                    let tx = tx.to_vec();
                    due.push((k, tx));
                }
                None => {
                    b.delete(Table::Timers, k);
                }
            }
            if due.len() >= TIMERS_PER_PASS {
                break;
            }
        }
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        for (timer, k) in due {
            b.delete(Table::Timers, timer);
            if !seen.insert(k.clone()) {
                continue; // two entries for one transaction: one look
            }
            let get = |key: &[u8]| self.store.get(Table::Transactions, key);
            let marked = |m: &[u8]| -> Result<bool, String> {
                let mut key = k.clone();
                key.extend_from_slice(m);
                Ok(get(&key).map_err(|e| e.to_string())?.is_some())
            };
            let state = get(&k).map_err(|e| e.to_string())?;
            let decoded = state.as_deref().map(serde_json::from_slice::<TxState>);
            let Some(Ok(mut st)) = decoded else {
                if let Some(Err(e)) = decoded {
                    // Its notices cannot be built: said, not silently lost.
                    tracing::error!(event = "transaction_unreadable", key = %String::from_utf8_lossy(&k), error = %e);
                    let mut r = LogRecord::new(now, Event::Anomaly);
                    r.detail = Some(format!(
                        "timer of an unreadable transaction dropped: {}",
                        String::from_utf8_lossy(&k)
                    ));
                    r.append_to(&mut b);
                }
                // Closed meanwhile (or unreadable): only markers may be left.
                close_transaction(&mut b, &k);
                continue;
            };
            // Every entry the transaction may still have (the first look at
            // `warn`, the last at `fin`): deleting a missing key is free.
            let forget = |b: &mut Batch| {
                close_transaction(b, &k);
                for at in [st.sent_at + warn, st.sent_at + fin] {
                    b.delete(Table::Timers, timer_key(at, &k));
                }
            };
            if marked(MARK_CLOSED)? {
                forget(&mut b);
                continue;
            }
            let taken = marked(MARK_TAKEN)?;
            let age = now - st.sent_at;
            let unwarned = !taken && !st.warned;
            // RT §8.1: nothing at all ⇒ both notices, even when the pass
            // comes late (the daemon was down at the 12 h mark).
            let stages: &[TimeoutStage] = if age >= fin && unwarned {
                &[TimeoutStage::H12, TimeoutStage::H24]
            } else if age >= fin {
                &[TimeoutStage::H24]
            } else if age >= warn && unwarned {
                &[TimeoutStage::H12]
            } else {
                &[]
            };
            let Some(&stage) = stages.last() else {
                // Early (the durations changed) or taken in charge: look
                // again at the next deadline.
                let next = if age < warn { warn } else { fin };
                b.put(Table::Timers, timer_key(st.sent_at + next, &k), Vec::new());
                continue;
            };
            let c = Certification {
                provider: self.cfg().pec_provider.clone(),
                time,
                pec_id: st.pec_id.clone(),
                sender: st.sender.clone(),
                recipients: st
                    .recipients
                    .iter()
                    .map(|(a, cert)| crate::pec::Recipient {
                        address: a.clone(),
                        class: if *cert {
                            RecipientClass::Certified
                        } else {
                            RecipientClass::External
                        },
                        role: crate::pec::RecipientRole::To,
                    })
                    .collect(),
                reply_to: st.reply_to.clone(),
                subject: st.subject.clone(),
                msgid: st.msgid.clone(),
                receipt_request: Default::default(),
            };
            for &each in stages {
                let notice_id = self.new_id(time);
                let notice = self.sign(build::timeout(&c, &notice_id, &st.recipient, each))?;
                self.to_mailbox(&mut b, &notice, &st.sender, Some(&st.pec_id), now)?;
                let mut r = self.record(now, Event::TimeoutNotice, &c);
                r.recipients = vec![st.recipient.clone()];
                r.related = vec![notice_id];
                let label = match each {
                    TimeoutStage::H12 => "12h",
                    TimeoutStage::H24 => "24h",
                };
                metrics::counter!(crate::metrics::TIMEOUT_NOTICES, "stage" => label).increment(1);
                r.detail = Some(label.into());
                r.append_to(&mut b);
            }
            match stage {
                TimeoutStage::H12 => {
                    st.warned = true;
                    b.put(Table::Timers, timer_key(st.sent_at + fin, &k), Vec::new());
                    b.put(
                        Table::Transactions,
                        k,
                        serde_json::to_vec(&st).unwrap_or_default(),
                    );
                }
                TimeoutStage::H24 => forget(&mut b),
            }
            n += 1;
        }
        if !b.is_empty() {
            self.commit(b)?;
        }
        Ok(n)
    }

    // ----------------------------------------------------------------------
    // The worker

    /// In `b`: queue items found under a stale key moved to their key, and
    /// undecodable ones to quarantine. Returns how many were moved.
    fn tidy_queue(&self, b: &mut Batch, found: queue::Due) -> Result<usize, String> {
        if !found.bad.is_empty() {
            tracing::error!(event = "queue_quarantine", count = found.bad.len());
            queue::quarantine(b, &self.store, &found.bad, self.clock.now())
                .map_err(|e| e.to_string())?;
        }
        let n = found.rekey.len();
        for (_, item) in &found.rekey {
            self.spool.touch(item).map_err(|e| e.to_string())?;
        }
        queue::rekey(b, found.rekey);
        Ok(n)
    }

    /// A store upgrade, once per store: `upgrade` fills a batch, committed
    /// with the mark (`meta`) that it ran. Returns what `upgrade` counted.
    fn upgrade_once(
        &self,
        mark: &[u8],
        upgrade: impl FnOnce(&mut Batch) -> Result<usize, String>,
    ) -> Result<usize, String> {
        if self
            .store
            .get(Table::Meta, mark)
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(0);
        }
        let mut b = Batch::new();
        let n = upgrade(&mut b)?;
        b.put(Table::Meta, mark.to_vec(), Vec::new());
        self.commit(b)?;
        Ok(n)
    }

    /// Start due items that are not already running, as far as free slots
    /// allow, without waiting for them; returns how many were started and
    /// how long until the next item is due. A finished item wakes the
    /// worker, so a free slot is filled at once.
    pub async fn run_queue_once(self: &Arc<Self>) -> (usize, Option<Duration>) {
        let now = self.clock.now();
        // Reads only, served from redb's cache: run in place.
        let due = queue::load_due(
            &self.store,
            now,
            |lane| self.slots(lane).available_permits(),
            |id| self.lock_busy().contains(id),
        );
        let queue::Due {
            items,
            bad,
            next,
            rekey,
        } = match due {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(event = "queue_load_failed", error = %e);
                return (0, None);
            }
        };
        if !bad.is_empty() || !rekey.is_empty() {
            // Re-keyed items are queue puts: the commit wakes the worker.
            let mut b = Batch::new();
            let found = queue::Due {
                bad,
                rekey,
                ..Default::default()
            };
            let tidied = self
                .blocking(move |app| app.tidy_queue(&mut b, found).and_then(|_| app.commit(b)))
                .await;
            if let Err(e) = tidied {
                tracing::error!(event = "queue_tidy_failed", error = %e);
            }
        }
        let mut started = 0;
        for item in items {
            let Ok(permit) = self.slots(item.work.lane()).clone().try_acquire_owned() else {
                continue; // full: a finishing item wakes us
            };
            if !self.lock_busy().insert(item.id.clone()) {
                continue; // still running from an earlier pass
            }
            started += 1;
            let app = self.clone();
            tokio::spawn(async move {
                let id = item.id.clone();
                // The pass may have read the queue before another task
                // retired this very item (it leaves `busy` only after its
                // commit): only an item still stored under its key runs.
                let current = app.store.get(Table::Queue, &item.key());
                if matches!(current, Ok(Some(_))) {
                    app.process_item(item, now).await;
                }
                app.lock_busy().remove(&id);
                drop(permit);
                app.wake.notify_one();
            });
        }
        (started, next)
    }

    fn slots(&self, lane: queue::Lane) -> &Arc<tokio::sync::Semaphore> {
        match lane {
            queue::Lane::Relay => &self.relay_slots,
            queue::Lane::Local => &self.local_slots,
        }
    }

    fn lock_busy(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn process_item(self: &Arc<Self>, item: Item, now: DateTime<Utc>) {
        let (item, r) = match &item.work {
            Work::Relay {
                mail_from,
                rcpt_to,
                domain,
                via,
            } => {
                let (mail_from, rcpt_to, domain, via) =
                    (mail_from.clone(), rcpt_to.clone(), domain.clone(), *via);
                let r = self
                    .process_relay(&item, &mail_from, &rcpt_to, &domain, via)
                    .await;
                (item, r)
            }
            _ => {
                self.blocking(move |app| {
                    let r = app.process_stored(&item);
                    (item, r)
                })
                .await
            }
        };
        if let Err(e) = r {
            tracing::warn!(event = "queue_item_failed", item = %item.id, error = %e);
            let stored = self
                .blocking(move |app| {
                    let mut b = Batch::new();
                    app.reschedule(&mut b, item, now, e);
                    app.commit(b)
                })
                .await;
            if let Err(e) = stored {
                // Still due under its old key: without a pause the next
                // pass would run it at once, again and again (a relay
                // re-sent in a loop while the store refuses commits). The
                // item stays busy meanwhile.
                tracing::error!(event = "queue_reschedule_failed", error = %e);
                tokio::time::sleep(self.cfg().queue.retry_initial.0).await;
            }
        }
    }

    /// An item whose work is all storage (no network): a local delivery,
    /// a received message, an archive copy.
    fn process_stored(&self, item: &Item) -> Result<(), String> {
        match &item.work {
            Work::Local {
                mailbox,
                receipt_to,
            } => self.process_local(item, mailbox, receipt_to.as_deref()),
            Work::Receive { mail_from, rcpt_to } => self.process_receive(item, mail_from, rcpt_to),
            Work::Archive { mailbox } => {
                let mut b = Batch::new();
                item.done(&mut b);
                // The archive copy only (`envelope` false: no quota
                // warnings for what the holder sent).
                let content = self.item_content(item)?;
                let flags = self.after_storage(&mut b, mailbox, item, content.source(), false)?;
                self.commit_with_flags(b, flags.into_iter().collect())
            }
            Work::Relay { .. } => Err("a relay is not processed from storage alone".into()),
        }
    }

    /// Where `item`'s content lies: a spool file is not read.
    fn item_content(&self, item: &Item) -> Result<ItemContent, String> {
        if item.inline {
            return item
                .content(&self.store, &self.spool)
                .map(ItemContent::Stored);
        }
        let spooled = |e: std::io::Error| format!("spool {}: {e}", item.blob);
        let path = self.spool.path(&item.blob).map_err(spooled)?;
        let len = std::fs::metadata(&path).map_err(spooled)?.len() as usize;
        Ok(ItemContent::Spool { path, len })
    }

    /// Run `f` (commits, Maildir writes, signatures: work that blocks or
    /// takes a while) on the runtime's blocking threads, so the two
    /// asynchronous workers keep serving the network meanwhile. A panic in
    /// `f` resumes here.
    pub async fn blocking<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&App) -> R + Send + 'static,
    ) -> R {
        let app = self.clone();
        match tokio::task::spawn_blocking(move || f(&app)).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Queue depth and oldest age, certificates' days to expiry.
    fn update_gauges(&self) {
        let now = self.clock.now();
        let (mut depth, mut oldest) = (0u64, None::<DateTime<Utc>>);
        for (_, v) in self.store.entries(Table::Queue).flatten() {
            depth += 1;
            if let Ok(i) = serde_json::from_slice::<Item>(&v) {
                oldest = Some(oldest.map_or(i.created, |o| o.min(i.created)));
            }
        }
        metrics::gauge!(crate::metrics::QUEUE_DEPTH).set(depth as f64);
        let age = oldest.map_or(0.0, |o| (now - o).num_seconds().max(0) as f64);
        metrics::gauge!(crate::metrics::QUEUE_OLDEST).set(age);
        for (label, at) in &self.cfg().cert_expiry {
            let days = (*at - now.timestamp()) as f64 / 86_400.0;
            metrics::gauge!(crate::metrics::CERT_EXPIRY_DAYS, "cert" => *label).set(days);
        }
    }

    /// Seal the legal log's head in a signed checkpoint (unless sealed
    /// already); the sequence number sealed.
    pub fn seal_log(&self) -> Result<Option<u64>, String> {
        let live = self.cfg();
        crate::checkpoint::write(
            &self.store,
            &live.signer,
            &live.checkpoint_dir(),
            self.clock.now(),
        )
    }

    /// The legal log's chain and its checkpoints ([`crate::checkpoint::verify`]).
    pub fn verify_log(&self) -> Result<crate::audit::ChainStatus, String> {
        let _walk = self.log_upkeep.read().unwrap_or_else(|e| e.into_inner());
        let live = self.cfg();
        crate::checkpoint::verify(
            &self.store,
            &live.checker.verifier,
            &self.service_address(),
            &live.checkpoint_dir(),
        )
    }

    /// RT §8.2: purge the legal log's records older than the retention
    /// (the purge is itself a record), then the seals of what went.
    ///
    /// "Older" is measured on a clock that cannot leap: the time this
    /// process started plus the monotonic time since (an hour's slack),
    /// when the wall clock is ahead of that. A wall clock stepped years
    /// forward (a bad NTP source, a mistyped date) would otherwise delete,
    /// irreversibly, records the law says to keep.
    pub fn purge_log(&self) -> Result<u64, String> {
        let now = self.clock.now();
        let steady = chrono::Duration::from_std(self.started_at.elapsed())
            .ok()
            .and_then(|d| {
                self.started
                    .checked_add_signed(d + chrono::Duration::hours(1))
            })
            .unwrap_or(self.started);
        let retention = chrono::Duration::from_std(self.cfg().log.retention.0)
            .unwrap_or(chrono::Duration::days(crate::config::LEGAL_LOG_DAYS as i64));
        // A verification walking the log holds it for a while: the purge
        // waits for the next round rather than hold up the worker.
        let _upkeep = match self.log_upkeep.try_write() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                tracing::info!(
                    event = "log_purge_postponed",
                    reason = "a verification is running"
                );
                return Ok(0);
            }
        };
        let purged = crate::audit::purge(&self.store, now.min(steady) - retention, now)
            .map_err(|e| e.to_string())?;
        if purged > 0 {
            // The records are gone either way; a seal left behind is only
            // skipped by verification, and pruned at the next purge.
            let pruned = crate::audit::first_seq(&self.store)
                .map_err(|e| e.to_string())
                .and_then(|first| crate::checkpoint::prune(&self.cfg().checkpoint_dir(), first));
            if let Err(e) = pruned {
                tracing::error!(event = "log_checkpoint_prune_failed", error = %e);
            }
        }
        Ok(purged)
    }

    /// Forget (Message-ID, recipient) pairs seen before `before`. A peer
    /// retries a relay for at most 24 h (RT §2.2.2), so a week is ample.
    pub fn purge_seen(&self, before: DateTime<Utc>) -> Result<usize, String> {
        let mut b = Batch::new();
        let mut n = 0;
        for entry in self.store.entries(Table::Seen) {
            let (k, v) = entry.map_err(|e| e.to_string())?;
            let secs = v
                .as_slice()
                .try_into()
                .map(i64::from_be_bytes)
                .unwrap_or(i64::MIN);
            if secs < before.timestamp() {
                b.delete(Table::Seen, k);
                n += 1;
            }
            if b.ops.len() >= 1000 {
                self.commit(std::mem::take(&mut b))?;
            }
        }
        self.commit(b)?;
        Ok(n)
    }

    fn collect_spool(&self) {
        // An unreadable queue means nothing may be collected.
        match queue::referenced_blobs(&self.store) {
            Ok(refs) => {
                let _ = self.spool.collect_garbage(&refs, Duration::from_secs(3600));
            }
            Err(e) => tracing::error!(event = "spool_gc_skipped", error = %e),
        }
    }

    /// The background loop: queue and timers, woken by new work or every
    /// `tick`, until `shutdown` flips.
    pub async fn worker(
        self: Arc<Self>,
        tick: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let flusher = tokio::spawn(self.clone().flusher(shutdown.clone()));
        self.collect_spool();
        // Upgrades of a store written by an older version: the worker's
        // passes read only the queue's lanes and the timers' index.
        type Upgrade<'a> = &'a dyn Fn(&mut Batch) -> Result<usize, String>;
        let rekey = |b: &mut Batch| {
            let found = queue::misplaced(&self.store).map_err(|e| e.to_string())?;
            self.tidy_queue(b, found)
        };
        let index = |b: &mut Batch| self.index_timers(b);
        let upgrades: [(&str, &[u8], Upgrade<'_>); 2] = [
            ("queue_rekeyed", b"queue/lanes", &rekey),
            ("timers_indexed", b"timers/indexed", &index),
        ];
        for (event, mark, upgrade) in upgrades {
            let done = tokio::task::block_in_place(|| self.upgrade_once(mark, upgrade));
            match done {
                Ok(0) => {}
                Ok(n) => tracing::info!(event, count = n),
                Err(e) => {
                    tracing::error!(event = "store_upgrade_failed", upgrade = event, error = %e)
                }
            }
        }
        let mut last_gc = std::time::Instant::now();
        let mut last_gauges = std::time::Instant::now() - GAUGES_EVERY;
        // The local copy's age decides the first refresh: a daemon
        // restarted more often than `provider.index_refresh` still
        // refreshes a copy that old (None: due now).
        let mut last_index: Option<std::time::Instant> =
            std::fs::metadata(&self.cfg().provider.provider_index)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .and_then(|age| std::time::Instant::now().checked_sub(age));
        let mut last_purge: Option<std::time::Instant> = None;
        let mut last_timers: Option<std::time::Instant> = None;
        let mut last_checkpoint: Option<std::time::Instant> = None;
        loop {
            let every = self.cfg().log.checkpoint_every.0;
            if !every.is_zero() && last_checkpoint.is_none_or(|t| t.elapsed() >= every) {
                last_checkpoint = Some(std::time::Instant::now());
                match tokio::task::block_in_place(|| self.seal_log()) {
                    Ok(None) => {}
                    Ok(Some(seq)) => tracing::info!(event = "log_checkpoint", seq),
                    Err(e) => tracing::error!(event = "log_checkpoint_failed", error = %e),
                }
            }
            // RT §8.2: log records older than the retention are purged; the
            // purge itself is a log record.
            if last_purge.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                last_purge = Some(std::time::Instant::now());
                match tokio::task::block_in_place(|| self.purge_log()) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(event = "log_purged", records = n),
                    Err(e) => tracing::error!(event = "log_purge_failed", error = %e),
                }
                let now = self.clock.now();
                match tokio::task::block_in_place(|| self.purge_seen(now - SEEN_RETENTION)) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(event = "seen_purged", entries = n),
                    Err(e) => tracing::error!(event = "seen_purge_failed", error = %e),
                }
                // Infected messages are kept as long as the log (DPR
                // 68/2005 art. 12: 30 months), then go.
                let dir = self.cfg().data_dir.join("virus");
                match tokio::task::block_in_place(|| purge_older(&dir, self.cfg().log.retention.0))
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(event = "virus_store_purged", messages = n),
                    Err(e) => tracing::error!(event = "virus_store_purge_failed", error = %e),
                }
                // The mailbox lifecycle goes by calendar day; hourly is
                // ample, and each action happens once however often it runs.
                match tokio::task::block_in_place(|| self.sweep()) {
                    Ok(s) if s.actions == 0 && s.failed.is_empty() => {}
                    Ok(s) => tracing::info!(
                        event = "lifecycle_sweep",
                        actions = s.actions,
                        failed = s.failed.len()
                    ),
                    Err(e) => tracing::error!(event = "lifecycle_sweep_failed", error = %e),
                }
            }
            let (_, next) = self.run_queue_once().await;
            // Timers need not be re-scanned on every wake-up (each message
            // wakes the worker): once per tick is precise enough.
            if last_timers.is_none_or(|t| t.elapsed() >= tick) {
                last_timers = Some(std::time::Instant::now());
                if let Err(e) = tokio::task::block_in_place(|| self.check_timers()) {
                    tracing::error!(event = "timers_failed", error = %e);
                }
            }
            if last_index.is_none_or(|t| t.elapsed() >= self.cfg().provider.index_refresh.0)
                && !self
                    .index_refreshing
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                // Off the worker: a slow index server must not hold up
                // deliveries and timers for its download's length.
                last_index = Some(std::time::Instant::now());
                let app = self.clone();
                tokio::task::spawn_blocking(move || {
                    // Cleared however the refresh ends (a panic included).
                    struct Done(Arc<App>);
                    impl Drop for Done {
                        fn drop(&mut self) {
                            self.0
                                .index_refreshing
                                .store(false, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                    let done = Done(app);
                    let _ = done.0.refresh_index();
                });
            }
            if last_gauges.elapsed() >= GAUGES_EVERY {
                last_gauges = std::time::Instant::now();
                tokio::task::block_in_place(|| self.update_gauges());
            }
            // By time, not by passes: a busy worker passes on every message.
            if last_gc.elapsed() >= SPOOL_GC_EVERY {
                last_gc = std::time::Instant::now();
                tokio::task::block_in_place(|| self.collect_spool());
            }
            let sleep = next.map_or(tick, |d| d.min(tick));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => break,
            }
        }
        let _ = flusher.await;
    }

    /// The checkpoint of deferred Maildir deliveries (`mailsync`): every
    /// `delivery.checkpoint_every`, and once more at shutdown.
    async fn flusher(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let every = self.cfg().delivery.checkpoint_every.0;
            let stop = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                _ = shutdown.changed() => true,
            };
            if let Err(e) = self.blocking(|app| app.checkpoint_mail()).await {
                tracing::error!(event = "maildir_checkpoint_failed", error = %e);
            }
            if stop {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_providers_codes_are_labelled_by_class_and_subject() {
        assert_eq!(remote_code_label("5.1.1"), "5.1.x");
        assert_eq!(remote_code_label("5.7.123456"), "5.7.x");
        assert_eq!(remote_code_label("5.99.1"), "5.x.x");
        assert_eq!(remote_code_label("5.0.0"), "5.0.x");
    }

    #[test]
    fn a_slow_rescan_is_trusted_for_longer() {
        // A small folder: looked at again after the minimum.
        assert_eq!(usage_trusted_for(Duration::from_micros(200)), USAGE_RECHECK);
        // A large one (50 ms to rescan): 1 % of a core at most.
        assert_eq!(
            usage_trusted_for(Duration::from_millis(50)),
            Duration::from_secs(5)
        );
        assert_eq!(usage_trusted_for(Duration::MAX), USAGE_TRUST_MAX);
    }

    /// `len` bytes at `path`, last modified `hours` ago.
    fn aged_file(path: &std::path::Path, len: usize, hours: u64) {
        std::fs::write(path, vec![b'x'; len]).unwrap();
        let t = std::time::SystemTime::now() - Duration::from_secs(3600 * hours);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    /// The names in `dir`, sorted.
    fn names_in(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A provider on the dev certificates, with a 10 KB plan, its data in
    /// `dir`, and one mailbox on that plan.
    fn small_provider(dir: &std::path::Path) -> App {
        let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
        let toml = format!(
            r#"data_dir = "{data}"
hostname = "mx.pec.provider-a.test"
[provider]
name = "Provider A S.p.A."
domain = "pec.provider-a.test"
local_domains = ["pec.provider-a.test"]
signing_cert = "{c}/provider-a.pem"
signing_key = "{c}/provider-a.key"
trust_anchors = "{c}/ca.pem"
provider_index = "{c}/index.ldif"
[tls]
cert = "{c}/localhost.pem"
key = "{c}/localhost.key"
[listen]
inbound = "127.0.0.1:0"
[lifecycle]
archive_policy = "rotate-oldest"
[[plans]]
name = "mini"
inbox = "10KB"
archive = "10KB"
on_expiry = "suspend"
"#,
            data = dir.join("data").display(),
            c = certs.display(),
        );
        let app = App::open(Config::parse(&toml, dir).unwrap()).unwrap();
        let acc: accounts::Account = serde_json::from_value(serde_json::json!({
            "address": "mini@pec.provider-a.test", "password_hash": "", "state": "active",
            "created": "2026-01-01T00:00:00Z", "plan": "mini",
        }))
        .unwrap();
        let mut b = Batch::new();
        accounts::put(&mut b, &acc);
        app.store.commit(b).unwrap();
        app
    }

    #[test]
    fn a_downgrade_leaves_mail_whose_only_copy_would_be_in_an_archive_over_its_space() {
        let dir = tempfile::tempdir().unwrap();
        let app = small_provider(dir.path());
        let mini = "mini@pec.provider-a.test";
        let acc = accounts::get(&app.store, mini).unwrap().unwrap();
        let root = mailbox_path(&app.cfg().data_dir.join("mail"), mini).unwrap();
        let inbox = Maildir::open(&root).unwrap();
        let archive = Maildir::open_folder(&root, ARCHIVE_FOLDER).unwrap();
        // Three 5 KB messages, each with its archive copy linked: inbox and
        // archive both over the plan's 10 KB.
        for id in ["a", "b", "c"] {
            let name = format!("{id},S=5000");
            let path = inbox.root().join("cur").join(&name);
            std::fs::write(&path, vec![b'x'; 5000]).unwrap();
            std::fs::hard_link(&path, archive.root().join("cur").join(&name)).unwrap();
        }
        assert_eq!(app.move_excess_to_archive(&acc).unwrap(), (0, 0));
        assert_eq!(inbox.messages().unwrap().len(), 3, "no inbox copy removed");
        assert_eq!(archive.messages().unwrap().len(), 3);
    }

    #[test]
    fn a_relay_retry_is_not_put_off_past_the_give_up_limit() {
        let dir = tempfile::tempdir().unwrap();
        let app = small_provider(dir.path());
        let now = app.clock.now();
        let give_up = chrono::Duration::from_std(app.cfg().queue.give_up_after.0).unwrap();
        let work = Work::Relay {
            mail_from: "mini@pec.provider-a.test".into(),
            rcpt_to: vec!["x@ordinaria.test".into()],
            domain: "ordinaria.test".into(),
            via: None,
        };
        // Ten minutes before the limit, with a backoff of half an hour.
        let mut item = Item::stored_in_memory(
            "r1".into(),
            work,
            b"x",
            now - give_up + chrono::Duration::minutes(10),
        );
        item.attempts = 10;
        let mut b = Batch::new();
        app.reschedule(&mut b, item.clone(), now, "451 busy".into());
        app.store.commit(b).unwrap();
        let at_limit = item.created + give_up;
        let due = queue::load_due(&app.store, at_limit, |_| 10, |_| false).unwrap();
        assert_eq!(due.items.len(), 1, "tried at the limit at the latest");
    }

    #[test]
    fn a_struck_off_holder_is_told_the_mailbox_lapses_at_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let app = small_provider(dir.path());
        let mut acc = accounts::get(&app.store, "mini@pec.provider-a.test")
            .unwrap()
            .unwrap();
        let plan = app.plan_of(&acc).unwrap();
        assert_eq!(
            app.expiry_outlook(&acc, &plan),
            crate::notices::AtExpiry::Suspend
        );
        acc.state_reason = format!("{}: kept until expiry", crate::lifecycle::STRUCK_OFF);
        // Not "… sarà sospesa" (nor a downgrade): it cannot be renewed.
        assert_eq!(
            app.expiry_outlook(&acc, &plan),
            crate::notices::AtExpiry::Lapse
        );
    }

    #[test]
    fn an_item_past_its_limit_that_cannot_be_kept_waits_its_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let app = small_provider(dir.path());
        let now = app.clock.now();
        // Nowhere to keep it: the quarantine is a file.
        let data = app.cfg().data_dir.clone();
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("quarantine"), b"not a folder").unwrap();
        let work = Work::Local {
            mailbox: "mini@pec.provider-a.test".into(),
            receipt_to: None,
        };
        let mut b = Batch::new();
        let item = queue::stage(
            &mut b,
            &app.spool,
            &[b"Subject: x\r\n\r\nx\r\n"],
            "l1".into(),
            work,
            now - chrono::Duration::days(2),
            None,
        )
        .unwrap();
        item.put(&mut b);
        app.store.commit(b).unwrap();
        let mut b = Batch::new();
        app.reschedule(&mut b, item, now, "cannot deliver".into());
        app.store.commit(b).unwrap();
        // Not due again at once (a loop of retries as fast as commits).
        let due = queue::load_due(&app.store, now, |_| 10, |_| false).unwrap();
        assert!(due.items.is_empty(), "{:?}", due.items);
        assert!(due.next.is_some_and(|n| n > std::time::Duration::ZERO));
    }

    #[test]
    fn a_timer_pass_waits_for_a_receipt_being_processed() {
        let dir = tempfile::tempdir().unwrap();
        let app = std::sync::Arc::new(small_provider(dir.path()));
        // A timer due (of a transaction gone meanwhile): the pass has work.
        let mut b = Batch::new();
        let due = app.clock.now() - chrono::Duration::seconds(1);
        b.put(Table::Timers, timer_key(due, b"gone\nx@y.test"), Vec::new());
        app.store.commit(b).unwrap();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (taken, is_taken) = std::sync::mpsc::channel::<()>();
        let receipt = {
            let app = app.clone();
            std::thread::spawn(move || {
                let _marks = app.transactions.read().unwrap();
                taken.send(()).unwrap();
                held.recv().unwrap();
            })
        };
        is_taken.recv().unwrap();
        let pass = {
            let app = app.clone();
            std::thread::spawn(move || app.check_timers().unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            !pass.is_finished(),
            "the pass waited for the receipt's commit"
        );
        release.send(()).unwrap();
        receipt.join().unwrap();
        assert_eq!(pass.join().unwrap(), 0);
    }

    #[test]
    fn a_busta_di_anomalia_is_dated_when_its_message_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let app = small_provider(dir.path());
        let mini = "mini@pec.provider-a.test";
        let raw = format!(
            "From: someone@example.com\r\nTo: {mini}\r\nSubject: ciao\r\nMessage-ID: <m1@example.com>\r\n\r\nhello\r\n"
        );
        // Received two hours ago, processed now (a scanner was down).
        let arrived = app.clock.now() - chrono::Duration::hours(2);
        let work = Work::Receive {
            mail_from: "someone@example.com".into(),
            rcpt_to: vec![mini.into()],
        };
        let item = Item::stored_in_memory("r1".into(), work, raw.as_bytes(), arrived);
        app.process_received(&item, raw.as_bytes(), "someone@example.com", &[mini.into()])
            .unwrap();
        // Queued for the mailbox.
        let due = queue::load_due(&app.store, app.clock.now(), |_| 10, |_| false).unwrap();
        assert_eq!(due.items.len(), 1);
        let wrapped = due.items[0].content(&app.store, &app.spool).unwrap();
        let date =
            crate::pec::mime::header_value(crate::pec::mime::split_header(&wrapped).0, "Date")
                .unwrap();
        assert_eq!(date, LegalTime::new(arrived).rfc5322());
    }

    #[test]
    fn a_full_mailbox_is_refused_only_on_its_folders_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let app = small_provider(dir.path());
        let mini = "mini@pec.provider-a.test";
        let root = mailbox_path(&app.cfg().data_dir.join("mail"), mini).unwrap();
        let md = Maildir::open(&root).unwrap();
        for name in ["a", "b"] {
            std::fs::write(root.join("new").join(name), vec![b'x'; 5000]).unwrap();
        }
        let acc = |a: &str| accounts::get(&app.store, a).unwrap();
        assert!(
            !app.fits(&md, acc(mini).as_ref(), 1000).unwrap(),
            "11 KB in 10 KB"
        );
        // The holder deletes a message: the next delivery, within the time
        // the figure is trusted, fits.
        std::fs::remove_file(root.join("new").join("a")).unwrap();
        assert!(
            app.fits(&md, acc("Mini@PEC.provider-a.test").as_ref(), 1000)
                .unwrap()
        );
    }

    #[test]
    fn a_delivery_to_a_removed_mailbox_does_not_make_its_folder_again() {
        let dir = tempfile::tempdir().unwrap();
        let app = small_provider(dir.path());
        let gone = "gone@pec.provider-a.test";
        let work = Work::Local {
            mailbox: gone.into(),
            receipt_to: None,
        };
        let item = Item::new(
            "pecd.1.x.1@pec.provider-a.test".into(),
            work,
            String::new(),
            Utc::now(),
            None,
        );
        let mut b = Batch::new();
        app.deliver_into(&mut b, &item, gone, None, b"Subject: x\r\n\r\nx\r\n")
            .unwrap();
        app.commit(b).unwrap();
        let root = mailbox_path(&app.cfg().data_dir.join("mail"), gone).unwrap();
        assert!(!root.exists(), "no folder at a removed mailbox's address");
        let log = crate::audit::search(&app.store, &Default::default()).unwrap();
        assert!(log.iter().any(|(_, r)| r.event == Event::DeliveryError
            && r.detail.as_deref().is_some_and(|d| d.contains("5.1.1"))));
    }

    #[test]
    fn a_downgrade_does_not_archive_a_message_twice() {
        let dir = tempfile::tempdir().unwrap();
        let app = small_provider(dir.path());
        let mini = "mini@pec.provider-a.test";
        let acc = accounts::get(&app.store, mini).unwrap().unwrap();
        let root = mailbox_path(&app.cfg().data_dir.join("mail"), mini).unwrap();
        Maildir::open(&root).unwrap();
        let archive = Maildir::open_folder(&root, ARCHIVE_FOLDER).unwrap();
        // Two messages over the 10 KB inbox; the older one's archive copy
        // was written (not linked), and the holder has since read it.
        aged_file(&root.join("new").join("m1,S=6000"), 6000, 2);
        aged_file(&root.join("new").join("m2,S=6000"), 6000, 1);
        std::fs::write(
            archive.root().join("cur").join("m1,S=6000:2,S"),
            vec![b'x'; 6000],
        )
        .unwrap();
        assert_eq!(app.move_excess_to_archive(&acc).unwrap(), (1, 6000));
        assert_eq!(names_in(&root.join("new")), ["m2,S=6000"]);
        assert_eq!(
            names_in(&archive.root().join("cur")),
            ["m1,S=6000:2,S"],
            "one copy"
        );
    }

    #[test]
    fn archive_rotation_removes_only_what_makes_room_and_only_if_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let app = small_provider(dir.path());
        let mini = "mini@pec.provider-a.test";
        let mut acc = accounts::get(&app.store, mini).unwrap().unwrap();
        let root = mailbox_path(&app.cfg().data_dir.join("mail"), mini).unwrap();
        let archive = Maildir::open_folder(&root, ARCHIVE_FOLDER).unwrap();
        let old = archive.root().join("cur");
        for (hours, name) in [(3, "oldest"), (2, "older"), (1, "old")] {
            aged_file(&old.join(name), 3000, hours);
        }
        let copy = |id: &str, size: usize, acc: &mut accounts::Account| {
            let (mut b, mut n) = (Batch::new(), Batch::new());
            let bytes = vec![b'y'; size];
            let stored = app.archive_copy(
                &mut b,
                &mut n,
                acc,
                id,
                &ArchiveSource::Stored(&bytes),
                false,
            );
            app.commit(b).unwrap();
            stored.unwrap()
        };
        let left = || names_in(&old);
        // A copy larger than the whole archive: nothing removed for it.
        copy("grande", 11_000, &mut acc);
        assert_eq!(left(), ["old", "older", "oldest"]);
        // 9,000 bytes used of 10 KB (10,240), 5,000 more: the oldest two
        // make room, the third stays.
        copy("nuovo", 5000, &mut acc);
        assert_eq!(left(), ["old"]);
    }
}
