//! Configuration: TOML files read into typed sections, every key documented
//! here (and in `config/pecd.example.toml`, which a test parses).
//!
//! Owns: the file format, defaults, and validation that reports *every*
//! problem at once with its key path (`limits.max_message_size: …`).
//! Must not touch: anything at run time; other modules receive a [`Config`].

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One configuration problem, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// A duration written as `30s`, `5m`, `12h`, `2d` (or plain seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberOrText {
            expecting: "a duration such as 30s, 5m, 12h, 2d (or whole seconds)",
            number: |n| Span(Duration::from_secs(n)),
            text: |t| parse_span(t).map(Span),
        })
    }
}

/// A value written either as a whole number or as text with a unit, with
/// an error that says which shapes are accepted (serde's untagged enums
/// say only that nothing matched).
struct NumberOrText<T> {
    expecting: &'static str,
    number: fn(u64) -> T,
    text: fn(&str) -> Result<T, String>,
}

impl<T> serde::de::Visitor<'_> for NumberOrText<T> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<T, E> {
        Ok((self.number)(n))
    }
    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<T, E> {
        match u64::try_from(n) {
            Ok(n) => Ok((self.number)(n)),
            Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(n), &self)),
        }
    }
    fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<T, E> {
        (self.text)(t).map_err(E::custom)
    }
}

/// Parse `500ms`, `30s`, `5m`, `12h`, `2d`.
pub fn parse_span(t: &str) -> Result<Duration, String> {
    let t = t.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{t:?} is not a duration (e.g. 30s, 5m, 12h, 2d)"))?;
    Ok(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" | "h" | "d" => {
            let unit_secs = match unit.trim() {
                "m" => 60,
                "h" => 3600,
                _ => 86400,
            };
            Duration::from_secs(
                n.checked_mul(unit_secs)
                    .ok_or_else(|| format!("{t:?} is too long"))?,
            )
        }
        u => {
            return Err(format!(
                "unknown duration unit {u:?} in {t:?} (use ms, s, m, h, d)"
            ));
        }
    })
}

/// A size written as `1GB`, `512MB`, `30KB` or plain bytes; units are
/// binary (1 GB = 1024³ bytes), as mailbox servers count quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberOrText {
            expecting: "a size such as 512MB, 1GB (or bytes)",
            number: Size,
            text: |t| parse_size(t).map(Size),
        })
    }
}

/// Parse `1GB`, `512MB`, `30KB`, `100` (bytes).
pub fn parse_size(t: &str) -> Result<u64, String> {
    let t = t.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{t:?} is not a size (e.g. 512MB, 1GB)"))?;
    let mul: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "K" => 1 << 10,
        "MB" | "M" => 1 << 20,
        "GB" | "G" => 1 << 30,
        "TB" | "T" => 1 << 40,
        u => return Err(format!("unknown size unit {u:?} in {t:?} (use KB, MB, GB)")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{t:?} is too large"))
}

/// What happens to a mailbox of a plan at expiry without renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnExpiry {
    /// Convention mailboxes: fall back to `downgrade_to` (add-ons dropped).
    Downgrade,
    /// Receive-only grace, then suspended, then deleted.
    #[default]
    Suspend,
}

/// A mailbox plan (tier): spaces, add-ons and prices (prices are for
/// reports; pecd does not bill).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    /// Inbox quota before add-ons.
    pub inbox: Size,
    /// Archive space (0: no archive).
    #[serde(default)]
    pub archive: Size,
    #[serde(default)]
    pub price_eur_year: f64,
    /// One inbox add-on step (e.g. 1GB).
    #[serde(default = "one_gb")]
    pub addon_step: Size,
    /// Most add-on steps (absent: no limit; 0: no add-ons).
    #[serde(default)]
    pub addon_max_steps: Option<u32>,
    #[serde(default)]
    pub addon_price_eur_year: f64,
    #[serde(default)]
    pub on_expiry: OnExpiry,
    /// The plan a `downgrade` falls back to.
    #[serde(default)]
    pub downgrade_to: Option<String>,
}

fn one_gb() -> Size {
    Size(1 << 30)
}

impl Plan {
    /// Inbox quota with `addons` steps.
    pub fn inbox_quota(&self, addons: u32) -> u64 {
        self.inbox
            .0
            .saturating_add(self.addon_step.0.saturating_mul(u64::from(addons)))
    }
}

/// The plans of the Ordini conventions (used when the config has none):
/// `base` 1 GB inbox + 3 GB archive, free, add-ons +1 GB up to +5 GB at
/// 4 €/GB/year, falls back to itself at expiry (add-ons dropped);
/// `avanzata` 7 GB + 7 GB at 20 €/year, +1 GB steps without limit,
/// downgraded to `base`.
pub fn default_plans() -> Vec<Plan> {
    vec![
        Plan {
            name: "base".into(),
            inbox: Size(1 << 30),
            archive: Size(3 << 30),
            price_eur_year: 0.0,
            addon_step: one_gb(),
            addon_max_steps: Some(5),
            addon_price_eur_year: 4.0,
            on_expiry: OnExpiry::Downgrade,
            downgrade_to: Some("base".into()),
        },
        Plan {
            name: "avanzata".into(),
            inbox: Size(7 << 30),
            archive: Size(7 << 30),
            price_eur_year: 20.0,
            addon_step: one_gb(),
            addon_max_steps: None,
            addon_price_eur_year: 4.0,
            on_expiry: OnExpiry::Downgrade,
            downgrade_to: Some("base".into()),
        },
    ]
}

/// Notices pecd sends outside PEC (quota warnings, expiry reminders) to
/// holders' reference addresses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// SMTP smarthost for ordinary mail to reference addresses; absent:
    /// such notices are only written into the PEC mailbox and logged.
    #[serde(default)]
    pub smarthost: Option<SocketAddr>,
    /// Sender of those notices (default `noreply@<provider.domain>`).
    #[serde(default)]
    pub from: Option<String>,
    /// Where holders reach the web panels (the TLS proxy in front of the
    /// admin listener), e.g. `https://pec.example.it`: the links mailed to
    /// them (password reset) start with it. Absent: no reset links are
    /// sent (one-time passwords still are).
    #[serde(default)]
    pub panel_url: Option<String>,
}

/// The certifying provider and its signing identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name written in daticert `gestore-emittente` and NOTA 12 errors;
    /// must equal `providerName` in the provider index.
    pub name: String,
    /// Provider mail domain: service address `posta-certificata@<domain>`
    /// and the suffix of PEC identifiers.
    pub domain: String,
    /// PEC mail domains whose mailboxes this instance serves.
    pub local_domains: Vec<String>,
    /// Signing certificate (PEM; intermediates may follow the leaf).
    pub signing_cert: PathBuf,
    /// Signing key (PEM, PKCS#8).
    pub signing_key: PathBuf,
    /// CMS digest: `sha256` (default) or `sha1` for byte-compatibility.
    #[serde(default = "default_digest")]
    pub digest: String,
    /// Add the SMIMECapabilities signed attribute (Aruba/Sogei style).
    #[serde(default)]
    pub smime_capabilities: bool,
    /// Trust anchors for other providers' signatures (PEM file or directory);
    /// empty: the system CA store.
    #[serde(default)]
    pub trust_anchors: Option<PathBuf>,
    /// Certificate revocation lists (PEM or DER files) of the CAs that
    /// issue providers' certificates (RT §6.3 step 3: a revoked signer is
    /// not a provider). Read at start, at every reload and at every index
    /// refresh, so a job that downloads them (e.g. AgID's
    /// `http://ca1.agid.gov.it/CRL`) keeps them current. Empty: no
    /// revocation check beyond the index itself.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// Local copy of the provider index (LDIF).
    pub provider_index: PathBuf,
    /// Where a fresh index is fetched (https); it replaces the local copy
    /// only once it parses. Absent: the local file itself is re-read.
    #[serde(default)]
    pub index_url: Option<String>,
    /// CA file for `index_url` (absent: the system store).
    #[serde(default)]
    pub index_url_ca: Option<PathBuf>,
    /// The client certificate (chain, PEM) and key presented to
    /// `index_url`: the national index answers accredited providers only
    /// (RT §7). Both or neither.
    #[serde(default)]
    pub index_client_cert: Option<PathBuf>,
    #[serde(default)]
    pub index_client_key: Option<PathBuf>,
    /// Who signs the published index (RT §7: a CMS `.p7m`): a PEM file of
    /// the signer's certificate or of its CA. Set, a refreshed index is
    /// taken only signed by them. Absent, a signed index is checked against
    /// `trust_anchors` (or the system store), and a plain LDIF (a local
    /// copy, a test) is taken as it is.
    #[serde(default)]
    pub index_signers: Option<PathBuf>,
    /// How often the index is refreshed.
    #[serde(default = "default_index_refresh")]
    pub index_refresh: Span,
}

fn default_index_refresh() -> Span {
    Span(Duration::from_secs(24 * 3600))
}

// RT §6.2 [?]: providers still sign with SHA-1 (micalg="sha1", 2024
// samples) and the digest suggests it as the default for byte
// compatibility; no rule mandates either. SHA-256 is chosen: every peer
// verifies it (OpenSSL, as for REM), and SHA-1 signatures are refused by
// current baselines. `provider.digest = "sha1"` switches back.
fn default_digest() -> String {
    "sha256".into()
}

/// TLS server identity for the SMTP listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Listening addresses (loopback ports above 1024 in the dev config).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Submission with STARTTLS (punto di accesso).
    pub submission: Option<SocketAddr>,
    /// Submission over implicit TLS.
    pub submissions: Option<SocketAddr>,
    /// Inbound MX (punto di ricezione).
    pub inbound: Option<SocketAddr>,
    /// Admin HTTP endpoint (the CLI while the daemon runs).
    pub admin: Option<SocketAddr>,
    /// Reverse proxies in front of the admin endpoint's web panels, whose
    /// `X-Forwarded-For` names the client (login throttling, the log).
    #[serde(default)]
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// Protocol and resource limits. Command lines are limited to 4096 bytes
/// by the SMTP parser (smtp-proto), above RFC 5321's 512 minimum; DATA
/// lines are not limited beyond the message size.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest message accepted, bytes (SIZE). Default 100 MB.
    pub max_message_size: u64,
    /// Largest recipients × size, bytes. RT §8.5: at least 30 MB must be
    /// allowed; default 100 MB.
    pub max_total_size: u64,
    /// Recipients per message. RT §8.5: at least 50.
    pub max_recipients: usize,
    /// Simultaneous SMTP connections, for the submission listeners and
    /// for the inbound MX each: peers on the open MX cannot take the slots
    /// of authenticated users.
    pub max_connections: usize,
    /// Bytes of message data the SMTP sessions of the submission
    /// listeners, and those of the inbound MX, may each hold in memory at
    /// once while receiving it (DATA): a message that would go beyond gets
    /// `452 4.3.1` and its sender tries again later, rather than many
    /// large messages at once exhausting the host's memory. At least twice
    /// `max_message_size` (the submission listener reads up to twice the
    /// limit before refusing, see `server`). Default 1 GiB.
    pub data_memory: u64,
    /// Idle time allowed between commands (RFC 5321 §4.5.3.2: 5 minutes).
    pub command_timeout: Span,
    /// Time allowed for the DATA phase, plus a second for every 10 kB
    /// received (a large message on a slow line is not cut off).
    pub data_timeout: Span,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 100 * 1024 * 1024,
            max_total_size: 100 * 1024 * 1024,
            max_recipients: 100,
            max_connections: 500,
            data_memory: 1 << 30,
            command_timeout: Span(Duration::from_secs(300)),
            data_timeout: Span(Duration::from_secs(600)),
        }
    }
}

/// The embedded store.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `redb` (default: fsync per commit) or `sled` (process-crash-safe only).
    pub engine: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            engine: "redb".into(),
        }
    }
}

/// Virus scanning (RT §8.4) through clamd.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AntivirusConfig {
    /// clamd's address: `host:port` or the path of its Unix socket. Absent:
    /// no scanning (a provider must scan: set it in production).
    pub clamd: Option<String>,
    /// When clamd cannot answer: `tempfail` (451, the sender retries; for
    /// inbound mail the item waits) or `accept` (pass unscanned, logged).
    pub on_unavailable: OnUnavailable,
    /// How long to wait for clamd.
    pub timeout: Option<Span>,
}

/// What to do when the scanner is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnavailable {
    #[default]
    Tempfail,
    Accept,
}

/// The mailbox lifecycle: reminders, grace, deletion, first access.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Reminder days relative to expiry: positive before, negative after.
    pub reminder_days: Vec<i64>,
    /// `suspend` plans: days of receive-only grace after expiry.
    pub grace_days: i64,
    /// Days from suspension to deletion.
    pub delete_after_days: i64,
    /// Days a pending mailbox waits for its first access before it is
    /// blocked (suspended) until the order unblocks it.
    pub first_access_days: i64,
    /// Term of a new mailbox and of one renewal, in years.
    pub term_years: u32,
    /// What happens when a mailbox's archive space is full.
    pub archive_policy: ArchivePolicy,
    /// At a downgrade, inbox content beyond the new plan's inbox space.
    pub downgrade_excess: DowngradeExcess,
}

/// What a downgrade does with inbox content beyond the new inbox space
/// (nothing is ever deleted by a downgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DowngradeExcess {
    /// Everything stays; new envelopes are refused (5.2.2) until the holder
    /// frees space.
    #[default]
    Keep,
    /// The oldest inbox messages move into the archive folder, within the
    /// archive space, until the inbox fits; what cannot move stays.
    Archive,
}

impl DowngradeExcess {
    pub fn name(self) -> &'static str {
        match self {
            DowngradeExcess::Keep => "keep",
            DowngradeExcess::Archive => "archive",
        }
    }
}

/// When the archive is full (the holder and the order are warned either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchivePolicy {
    /// New copies are not archived until space is freed.
    #[default]
    Stop,
    /// The oldest copies are removed to make room.
    RotateOldest,
}

impl ArchivePolicy {
    pub fn name(self) -> &'static str {
        match self {
            ArchivePolicy::Stop => "stop",
            ArchivePolicy::RotateOldest => "rotate-oldest",
        }
    }
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            reminder_days: vec![90, 30, 5, -25],
            grace_days: 90,
            delete_after_days: 365,
            first_access_days: 30,
            term_years: 1,
            archive_policy: ArchivePolicy::Stop,
            downgrade_excess: DowngradeExcess::Keep,
        }
    }
}

/// The legal log (RT §8.2).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Retention of log records; RT §8.2: 30 months, at least 915 days
    /// (the longest 30 calendar months).
    pub retention: Span,
    /// How often the log's head is sealed in a signed checkpoint
    /// (`crate::checkpoint`); zero: never.
    pub checkpoint_every: Span,
    /// Where checkpoints go (default `<data_dir>/log-checkpoints`); copy
    /// them elsewhere too: a copy out of reach is what shows records cut
    /// off the end.
    pub checkpoint_dir: Option<PathBuf>,
    /// Operational log format on stderr: `human` or `json` (the
    /// `--log-format` option wins).
    pub format: String,
}

/// RT §8.2: 30 months. The longest 30 consecutive calendar months have
/// 915 days (two Julys to Decembers and a leap day among them), so a
/// record is never purged before its 30 months are over.
pub const LEGAL_LOG_DAYS: u64 = 915;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            retention: Span(Duration::from_secs(LEGAL_LOG_DAYS * 86400)),
            checkpoint_every: Span(Duration::from_secs(3600)),
            checkpoint_dir: None,
            format: "human".into(),
        }
    }
}

/// Per-recipient timers of the access point (RT §8.1).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimerConfig {
    /// No presa in carico nor consegna after this: 12 h notice.
    pub warning_after: Span,
    /// No consegna after this: 24 h notice (RT: in the window 22–24 h).
    pub final_after: Span,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            warning_after: Span(Duration::from_secs(12 * 3600)),
            final_after: Span(Duration::from_secs(23 * 3600)),
        }
    }
}

/// Retries of queued work (relays to other providers, local steps).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// First retry delay; it doubles at each attempt.
    pub retry_initial: Span,
    /// Longest delay between two attempts.
    pub retry_max: Span,
    /// When a relay still failing temporarily is given up (RT §2.2.2: SMTP
    /// queues carrying PEC traffic keep a message for at most 24 h).
    pub give_up_after: Span,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            retry_initial: Span(Duration::from_secs(60)),
            retry_max: Span(Duration::from_secs(1800)),
            give_up_after: Span(Duration::from_secs(24 * 3600)),
        }
    }
}

/// Where the punto di consegna stores messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Deliver to a mailbox server over LMTP (e.g. Dovecot's lmtp) instead
    /// of writing Maildirs under `data_dir/mail`. Its permanent refusals
    /// (quota `5.2.2`, …) become avvisi di mancata consegna.
    #[serde(default)]
    pub lmtp: Option<SocketAddr>,
    /// DNS servers for MX lookups (`ip:port`); empty: the system's
    /// (`/etc/resolv.conf`).
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
    /// Port of the hosts an MX lookup finds. 25 on the Internet; another
    /// value only for test networks.
    #[serde(default = "default_mx_port")]
    pub mx_port: u16,
    /// How a Maildir delivery is made durable (see [`MaildirFlush`]).
    #[serde(default)]
    pub maildir_flush: MaildirFlush,
    /// With `maildir_flush = "checkpoint"`: how often the files written
    /// since the last checkpoint are flushed and their copies dropped from
    /// the store (longer: fewer flushes, but larger bursts of writeback
    /// that other commits wait behind, and a larger store meanwhile).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: Span,
}

fn default_checkpoint_every() -> Span {
    // Measured (bench e2e at half rate): 1s lets each checkpoint flush a
    // second's worth of files at once, and submissions' commits queue
    // behind it (p99 18–54 ms); 100ms keeps the bursts small (p99 12–13 ms)
    // for ten syncfs a second, and the store holds fewer copies.
    Span(Duration::from_millis(100))
}

/// How a Maildir delivery is made durable before it counts (and before
/// its ricevuta di consegna goes out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaildirFlush {
    /// A message up to `queue::INLINE_MAX` (256 KB) is written without
    /// waiting for the disk; the delivery's commit keeps a copy in the
    /// store until a checkpoint (`checkpoint_every`, 100ms) flushes the
    /// filesystem (one syncfs) and drops it. After a crash, start-up
    /// writes those files again before anything else. Larger messages are
    /// flushed as `filesystem` does. Same filesystem advice as there.
    #[default]
    Checkpoint,
    /// One syncfs(2) of the data directory's filesystem, shared by every
    /// delivery in flight, before the renames and one after: a few device
    /// flushes for many messages; the data is on disk before the file
    /// gets its name in `new/`. For a data directory on a filesystem of
    /// its own (each flush also writes back anything else pending there);
    /// Linux ≥ 5.8 reports writeback errors through it.
    Filesystem,
    /// fsync of each file, then of its directory: two flushes per message,
    /// unaffected by other writers on a shared filesystem.
    PerFile,
}

fn default_mx_port() -> u16 {
    25
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            lmtp: None,
            nameservers: Vec::new(),
            mx_port: default_mx_port(),
            maildir_flush: MaildirFlush::default(),
            checkpoint_every: default_checkpoint_every(),
        }
    }
}

/// A static route: mail for `domain` goes to `host` instead of its MX.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub domain: String,
    pub host: SocketAddr,
}

/// A mailbox created at start-up if missing (dev and demo setups only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevMailbox {
    pub address: String,
    pub password: String,
    /// Plan name (default: the first plan).
    #[serde(default)]
    pub plan: Option<String>,
    /// The holder's ordinary address for warnings and reminders.
    #[serde(default)]
    pub reference_email: Option<String>,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the store, Maildirs and spool live.
    pub data_dir: PathBuf,
    /// Name in the SMTP greeting and EHLO/LHLO to peers.
    pub hostname: String,
    pub provider: ProviderConfig,
    pub tls: TlsConfig,
    pub listen: ListenConfig,
    pub limits: Limits,
    pub store: StoreConfig,
    pub log: LogConfig,
    pub timers: TimerConfig,
    pub queue: QueueConfig,
    pub delivery: DeliveryConfig,
    pub routes: Vec<Route>,
    /// Demo mailboxes created at start-up when missing (never in production).
    pub dev_mailboxes: Vec<DevMailbox>,
    /// Mailbox plans; the first is the default for new mailboxes.
    pub plans: Vec<Plan>,
    pub notify: NotifyConfig,
    pub lifecycle: LifecycleConfig,
    pub antivirus: AntivirusConfig,
}

impl Config {
    /// Where the legal log's checkpoints go (`log.checkpoint_dir`).
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.log
            .checkpoint_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("log-checkpoints"))
    }

    /// A plan by name; the empty name is the default plan (the first).
    pub fn plan(&self, name: &str) -> Option<&Plan> {
        if name.is_empty() {
            return self.plans.first();
        }
        self.plans.iter().find(|p| p.name == name)
    }
}

const TOP_KEYS: [&str; 17] = [
    "antivirus",
    "lifecycle",
    "plans",
    "notify",
    "dev_mailboxes",
    "delivery",
    "queue",
    "data_dir",
    "hostname",
    "provider",
    "tls",
    "listen",
    "limits",
    "store",
    "log",
    "timers",
    "routes",
];

/// An array of tables (`[[key]]`), empty when absent.
fn array<T: serde::de::DeserializeOwned>(
    text: &str,
    table: &toml::Table,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<T> {
    table
        .get(key)
        .and_then(|v| typed::<Vec<T>>(text, key, v.clone(), errors))
        .unwrap_or_default()
}

/// A `[key]` table, read as if empty when absent (its defaults).
fn section<T: serde::de::DeserializeOwned>(
    text: &str,
    table: &toml::Table,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let value = table
        .get(key)
        .cloned()
        .unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
    typed(text, key, value, errors)
}

/// `value` (the top-level `key` of `text`) as a `T`, or its error noted.
fn typed<T: serde::de::DeserializeOwned>(
    text: &str,
    key: &str,
    value: toml::Value,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    value
        .try_into::<T>()
        .map_err(|e| errors.push(section_error::<T>(text, key, e)))
        .ok()
}

/// The error of section `key`. A `toml::Value` has lost its positions, so
/// the section is read once more from the text for an error that has
/// them: it names the line and, through it, the field (`limits.
/// max_connections`); fields are met in the order of the text there, so
/// it is the first bad one as the operator reads the file.
fn section_error<T: serde::de::DeserializeOwned>(
    text: &str,
    key: &str,
    e: toml::de::Error,
) -> ConfigError {
    let Some((line, message)) = located_error::<T>(text, key) else {
        return err(key, e.to_string().trim().replace('\n', " "));
    };
    let lines: Vec<&str> = text.lines().take(line).collect();
    let field = lines
        .last()
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    // The table the line is in (`[plans.base]`, `[[routes]]`), when it is
    // this section's.
    let table = lines
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim())
        .filter(|t| *t == key || t.starts_with(&format!("{key}.")));
    let path = match (table, field) {
        (Some(t), Some(f)) => format!("{t}.{f}"),
        (None, Some(f)) if f.starts_with(&format!("{key}.")) => f.to_string(),
        (None, Some(f)) => format!("{key}.{f}"),
        (Some(t), None) => t.to_string(),
        (None, None) => key.to_string(),
    };
    err(
        path,
        format!("line {line}: {}", message.trim().replace('\n', " ")),
    )
}

/// Reading the top-level `key` of `text` as a `T`: where it fails (the
/// 1-based line) and why.
fn located_error<T: serde::de::DeserializeOwned>(text: &str, key: &str) -> Option<(usize, String)> {
    use serde::de::{IgnoredAny, MapAccess, Visitor};
    struct Only<'k, T>(&'k str, std::marker::PhantomData<T>);
    impl<'de, T: serde::de::DeserializeOwned> Visitor<'de> for Only<'_, T> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a table")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(k) = map.next_key::<String>()? {
                if k == self.0 {
                    map.next_value::<T>()?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }
    let only = Only::<T>(key, std::marker::PhantomData);
    let e = serde::Deserializer::deserialize_map(toml::Deserializer::new(text), only).err()?;
    let at = e.span()?.start;
    let line = text.get(..at)?.matches('\n').count() + 1;
    Some((line, e.message().to_string()))
}

impl Config {
    /// Parse TOML text; relative paths are resolved against `base`.
    /// Returns every problem found, not just the first.
    pub fn parse(text: &str, base: &Path) -> Result<Config, Vec<ConfigError>> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            vec![err("(syntax)", e.to_string().trim().replace('\n', " "))]
        })?;
        let mut errors = Vec::new();
        for k in table.keys() {
            if !TOP_KEYS.contains(&k.as_str()) {
                errors.push(err(
                    k.clone(),
                    format!("unknown key (expected one of {})", TOP_KEYS.join(", ")),
                ));
            }
        }
        let data_dir = match table.get("data_dir") {
            Some(toml::Value::String(s)) => Some(base.join(s)),
            Some(_) => {
                errors.push(err("data_dir", "must be a string"));
                None
            }
            None => {
                errors.push(err("data_dir", "missing"));
                None
            }
        };
        let hostname = match table.get("hostname") {
            Some(toml::Value::String(s)) => s.clone(),
            None => "localhost".into(),
            Some(_) => {
                errors.push(err("hostname", "must be a string"));
                String::new()
            }
        };
        let provider: Option<ProviderConfig> = section(text, &table, "provider", &mut errors);
        let tls: Option<TlsConfig> = section(text, &table, "tls", &mut errors);
        let listen: Option<ListenConfig> = section(text, &table, "listen", &mut errors);
        let limits: Option<Limits> = section(text, &table, "limits", &mut errors);
        let store: Option<StoreConfig> = section(text, &table, "store", &mut errors);
        let log: Option<LogConfig> = section(text, &table, "log", &mut errors);
        let timers: Option<TimerConfig> = section(text, &table, "timers", &mut errors);
        let queue: Option<QueueConfig> = section(text, &table, "queue", &mut errors);
        let delivery: Option<DeliveryConfig> = section(text, &table, "delivery", &mut errors);
        let routes: Vec<Route> = array(text, &table, "routes", &mut errors);
        let dev_mailboxes: Vec<DevMailbox> = array(text, &table, "dev_mailboxes", &mut errors);
        let mut plans: Vec<Plan> = array(text, &table, "plans", &mut errors);
        if table.get("plans").is_none() {
            plans = default_plans();
        }
        errors.extend(validate_plans(&plans));
        for (i, m) in dev_mailboxes.iter().enumerate() {
            if let Some(p) = &m.plan
                && !plans.iter().any(|q| &q.name == p)
            {
                errors.push(err(
                    format!("dev_mailboxes[{i}].plan"),
                    format!("{p:?} is not a defined plan"),
                ));
            }
        }
        let notify: Option<NotifyConfig> = section(text, &table, "notify", &mut errors);
        let lifecycle: Option<LifecycleConfig> = section(text, &table, "lifecycle", &mut errors);
        let antivirus: Option<AntivirusConfig> = section(text, &table, "antivirus", &mut errors);
        let notify = notify.map(|mut n| {
            if let Some(u) = n.panel_url.as_mut() {
                *u = u.trim().trim_end_matches('/').to_string();
                let host = u
                    .strip_prefix("https://")
                    .or_else(|| u.strip_prefix("http://"))
                    .unwrap_or("");
                if host.is_empty() || host.contains(char::is_whitespace) {
                    errors.push(err(
                        "notify.panel_url",
                        format!("{u:?} is not an http(s) URL, e.g. \"https://pec.example.it\""),
                    ));
                }
            }
            n
        });
        // Semantic checks run on every section that parsed, so one bad
        // section does not hide the problems of the others.
        let resolve = |p: &mut PathBuf| *p = base.join(&*p);
        let provider = provider.map(|mut p| {
            resolve(&mut p.signing_cert);
            resolve(&mut p.signing_key);
            resolve(&mut p.provider_index);
            if let Some(t) = p.trust_anchors.as_mut() {
                resolve(t);
            }
            p.crls.iter_mut().for_each(resolve);
            if let Some(t) = p.index_url_ca.as_mut() {
                resolve(t);
            }
            if let Some(t) = p.index_signers.as_mut() {
                resolve(t);
            }
            for t in [p.index_client_cert.as_mut(), p.index_client_key.as_mut()]
                .into_iter()
                .flatten()
            {
                resolve(t);
            }
            p
        });
        let tls = tls.map(|mut t| {
            resolve(&mut t.cert);
            resolve(&mut t.key);
            t
        });
        let log = log.map(|mut l| {
            if let Some(d) = l.checkpoint_dir.as_mut() {
                resolve(d);
            }
            l
        });
        errors.extend(validate_service(
            listen.as_ref(),
            antivirus.as_ref(),
            lifecycle.as_ref(),
        ));
        errors.extend(validate_parts(
            queue.as_ref(),
            delivery.as_ref(),
            provider.as_ref(),
            tls.as_ref(),
            limits.as_ref(),
            store.as_ref(),
            timers.as_ref(),
            log.as_ref(),
            &routes,
        ));
        match (
            data_dir,
            provider,
            tls,
            listen,
            limits,
            store,
            log,
            timers,
            (queue, delivery, notify, lifecycle, antivirus),
        ) {
            (
                Some(data_dir),
                Some(provider),
                Some(tls),
                Some(listen),
                Some(limits),
                Some(store),
                Some(log),
                Some(timers),
                (Some(queue), Some(delivery), Some(notify), Some(lifecycle), Some(antivirus)),
            ) if errors.is_empty() => Ok(Config {
                data_dir,
                hostname,
                provider,
                tls,
                listen,
                limits,
                store,
                log,
                timers,
                queue,
                delivery,
                routes,
                dev_mailboxes,
                plans,
                notify,
                lifecycle,
                antivirus,
            }),
            _ => Err(errors),
        }
    }

    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![err("(file)", format!("{}: {e}", path.display()))])?;
        // Relative paths in a config file are relative to the file itself.
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base)
    }
}

fn validate_plans(plans: &[Plan]) -> Vec<ConfigError> {
    let mut e = Vec::new();
    if plans.is_empty() {
        e.push(err(
            "plans",
            "at least one plan is needed (the first is the default)",
        ));
    }
    for (i, p) in plans.iter().enumerate() {
        let key = |k: &str| format!("plans[{i}].{k}");
        if plans[..i].iter().any(|q| q.name == p.name) {
            e.push(err(key("name"), format!("{:?} is defined twice", p.name)));
        }
        if p.inbox.0 == 0 {
            e.push(err(key("inbox"), "must be larger than zero"));
        }
        match (&p.on_expiry, &p.downgrade_to) {
            (OnExpiry::Downgrade, None) => e.push(err(
                key("downgrade_to"),
                "missing: on_expiry = \"downgrade\" needs the plan to fall back to",
            )),
            (_, Some(to)) if !plans.iter().any(|q| &q.name == to) => e.push(err(
                key("downgrade_to"),
                format!("{to:?} is not a defined plan"),
            )),
            _ => {}
        }
    }
    e
}

/// What would let the daemon start yet not serve: no SMTP listener, two
/// listeners on one address, a scanner never waited for, lifecycle terms
/// of no length or negative days.
fn validate_service(
    listen: Option<&ListenConfig>,
    antivirus: Option<&AntivirusConfig>,
    lifecycle: Option<&LifecycleConfig>,
) -> Vec<ConfigError> {
    let mut e = Vec::new();
    if let Some(l) = listen {
        let all = [
            ("listen.submission", l.submission),
            ("listen.submissions", l.submissions),
            ("listen.inbound", l.inbound),
            ("listen.admin", l.admin),
        ];
        if all[..3].iter().all(|(_, a)| a.is_none()) {
            e.push(err(
                "listen",
                "no SMTP listener: set submission, submissions or inbound",
            ));
        }
        for (i, (key, a)) in all.iter().enumerate() {
            let Some(a) = a.filter(|a| a.port() != 0) else {
                continue;
            };
            if let Some((other, _)) = all[..i].iter().find(|(_, b)| *b == Some(a)) {
                e.push(err(*key, format!("{a} is already {other}'s address")));
            }
        }
    }
    if let Some(a) = antivirus
        && a.timeout.is_some_and(|t| t.0.is_zero())
    {
        e.push(err("antivirus.timeout", "must be longer than zero"));
    }
    if let Some(c) = antivirus.and_then(|a| a.clamd.as_deref())
        && !c.starts_with('/')
        && !c
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    {
        e.push(err(
            "antivirus.clamd",
            format!("{c:?}: give host:port, or the absolute path of clamd's Unix socket"),
        ));
    }
    if let Some(l) = lifecycle {
        if !(1..=10).contains(&l.term_years) {
            e.push(err("lifecycle.term_years", "must be from 1 to 10"));
        }
        for (key, days) in [
            ("lifecycle.grace_days", l.grace_days),
            ("lifecycle.delete_after_days", l.delete_after_days),
            ("lifecycle.first_access_days", l.first_access_days),
        ] {
            // Ten years at most: a date arithmetic that cannot overflow,
            // and nothing a provider would mean.
            if !(0..=3650).contains(&days) {
                e.push(err(key, "must be from 0 to 3650 days"));
            }
        }
        for &d in &l.reminder_days {
            // After expiry, only within the grace (a suspended mailbox is
            // told nothing more); before it, within ten years.
            if !(-l.grace_days.max(0)..=3650).contains(&d) {
                e.push(err(
                    "lifecycle.reminder_days",
                    format!(
                        "{d}: must be from -grace_days ({}) to 3650",
                        -l.grace_days.max(0)
                    ),
                ));
            }
        }
    }
    e
}

#[allow(clippy::too_many_arguments)]
fn validate_parts(
    queue: Option<&QueueConfig>,
    delivery: Option<&DeliveryConfig>,
    provider: Option<&ProviderConfig>,
    tls: Option<&TlsConfig>,
    limits: Option<&Limits>,
    store: Option<&StoreConfig>,
    timers: Option<&TimerConfig>,
    log: Option<&LogConfig>,
    routes: &[Route],
) -> Vec<ConfigError> {
    let mut e = Vec::new();
    if let Some(l) = log
        && l.retention.0 < Duration::from_secs(LEGAL_LOG_DAYS * 86400)
    {
        e.push(err(
            "log.retention",
            format!("must be at least {LEGAL_LOG_DAYS}d (30 months, RT §8.2)"),
        ));
    }
    if let Some(l) = log
        && !matches!(l.format.as_str(), "human" | "json")
    {
        e.push(err(
            "log.format",
            format!("{:?}: use human or json", l.format),
        ));
    }
    if let Some(p) = provider
        && p.index_refresh.0.is_zero()
    {
        e.push(err("provider.index_refresh", "must be longer than zero"));
    }
    if let Some(d) = delivery
        && d.mx_port == 0
    {
        e.push(err("delivery.mx_port", "must not be 0"));
    }
    if let Some(p) = provider {
        if p.name.trim().is_empty() {
            e.push(err("provider.name", "must not be empty"));
        }
        if !p.domain.contains('.') {
            e.push(err(
                "provider.domain",
                format!("{:?} is not a mail domain", p.domain),
            ));
        }
        if p.local_domains.is_empty() {
            e.push(err(
                "provider.local_domains",
                "at least one PEC domain is needed",
            ));
        }
        if crate::smime::Digest::from_name(&p.digest).is_none() {
            e.push(err(
                "provider.digest",
                format!("{:?}: use sha1, sha256, sha384 or sha512", p.digest),
            ));
        }
        for (key, path) in [
            ("provider.signing_cert", &p.signing_cert),
            ("provider.signing_key", &p.signing_key),
            ("provider.provider_index", &p.provider_index),
        ] {
            if !path.is_file() {
                e.push(err(
                    key,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        if let Some(t) = &p.trust_anchors
            && !t.exists()
        {
            e.push(err(
                "provider.trust_anchors",
                format!("{} does not exist", t.display()),
            ));
        }
        if let Some(t) = &p.index_signers
            && let Err(why) = crate::smime::load_certificates(t)
        {
            e.push(err("provider.index_signers", why.to_string()));
        }
        match (&p.index_client_cert, &p.index_client_key) {
            (Some(_), None) => e.push(err(
                "provider.index_client_key",
                "missing: index_client_cert needs its key",
            )),
            (None, Some(_)) => e.push(err(
                "provider.index_client_cert",
                "missing: index_client_key needs its certificate",
            )),
            (Some(c), Some(k)) => {
                for (key, path) in [
                    ("provider.index_client_cert", c),
                    ("provider.index_client_key", k),
                ] {
                    if !path.is_file() {
                        e.push(err(
                            key,
                            format!("{} is not a readable file", path.display()),
                        ));
                    }
                }
            }
            (None, None) => {}
        }
        for (i, c) in p.crls.iter().enumerate() {
            if let Err(why) = crate::smime::load_crls(c) {
                e.push(err(format!("provider.crls[{i}]"), why.to_string()));
            }
        }
    }
    if let Some(t) = tls {
        for (key, path) in [("tls.cert", &t.cert), ("tls.key", &t.key)] {
            if !path.is_file() {
                e.push(err(
                    key,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
    }
    if let Some(l) = limits {
        // RT §8.5 (DM 2/11/2005 art. 12 c.2): the legal floor.
        if l.max_recipients < 50 {
            e.push(err(
                "limits.max_recipients",
                "must be at least 50 (DM 2/11/2005 art. 12)",
            ));
        }
        if l.max_total_size < 30 * 1024 * 1024 {
            e.push(err(
                "limits.max_total_size",
                "must be at least 30 MB (DM 2/11/2005 art. 12)",
            ));
        }
        if l.max_connections == 0 {
            e.push(err("limits.max_connections", "must be positive"));
        }
        if l.max_message_size == 0 {
            e.push(err("limits.max_message_size", "must be positive"));
        }
        for (key, span) in [
            ("limits.command_timeout", l.command_timeout),
            ("limits.data_timeout", l.data_timeout),
        ] {
            if span.0.is_zero() {
                e.push(err(key, "must be longer than zero"));
            }
        }
        if l.data_memory < l.max_message_size.saturating_mul(2) {
            e.push(err(
                "limits.data_memory",
                "must be at least twice limits.max_message_size (one submission read whole)",
            ));
        }
    }
    if let Some(s) = store
        && !matches!(s.engine.as_str(), "redb" | "sled")
    {
        e.push(err(
            "store.engine",
            format!("{:?}: use redb or sled", s.engine),
        ));
    }
    if let Some(q) = queue {
        if q.give_up_after.0.is_zero() || q.give_up_after.0 > Duration::from_secs(24 * 3600) {
            e.push(err(
                "queue.give_up_after",
                "must be longer than zero and at most 24h (RT §2.2.2)",
            ));
        }
        if q.retry_initial.0.is_zero() {
            e.push(err("queue.retry_initial", "must be longer than zero"));
        }
        if q.retry_max.0 < q.retry_initial.0 {
            e.push(err(
                "queue.retry_max",
                "must not be shorter than queue.retry_initial",
            ));
        }
    }
    if let Some(d) = delivery {
        if d.checkpoint_every.0.is_zero() || d.checkpoint_every.0 > Duration::from_secs(3600) {
            e.push(err(
                "delivery.checkpoint_every",
                "must be longer than zero and at most 1h",
            ));
        }
        if cfg!(not(target_os = "linux")) && d.maildir_flush != MaildirFlush::PerFile {
            e.push(err(
                "delivery.maildir_flush",
                "needs syncfs(2), Linux only: use \"per-file\"",
            ));
        }
    }
    if let Some(t) = timers {
        if t.final_after.0 <= t.warning_after.0 {
            e.push(err(
                "timers.final_after",
                "must be later than timers.warning_after",
            ));
        }
        // RT §8.1: the sender hears within 24 hours at the latest (the
        // window is 22–24 h; shorter values are for tests and drills).
        if t.final_after.0 > Duration::from_secs(24 * 3600) {
            e.push(err(
                "timers.final_after",
                "must be at most 24h (RT §8.1: the notice goes out within 24 hours)",
            ));
        }
    }
    for (i, r) in routes.iter().enumerate() {
        if !r.domain.contains('.') {
            e.push(err(
                format!("routes[{i}].domain"),
                format!("{:?} is not a domain", r.domain),
            ));
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert!(
            parse_span("99999999999999999d").is_err(),
            "overflow is an error, not a wrap"
        );
        assert_eq!(parse_span("12h").unwrap(), Duration::from_secs(43200));
        assert_eq!(parse_span("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_span("7").unwrap(), Duration::from_secs(7));
        assert!(parse_span("12 hours").is_err());
        assert!(parse_span("h").is_err());
    }

    #[test]
    fn every_error_is_reported_with_its_key() {
        let text = r#"
data_dir = "data"
colour = "blue"
[provider]
name = ""
domain = "nodot"
local_domains = []
signing_cert = "nope.pem"
signing_key = "nope.key"
provider_index = "nope.ldif"
digest = "md5"
index_client_cert = "client.pem"
crls = ["nope.crl"]
[tls]
cert = "x"
key = "y"
[listen]
[limits]
max_recipients = 10
max_total_size = 1000
data_memory = 1000
command_timeout = "0s"
[timers]
warning_after = "12h"
final_after = "1h"
[log]
retention = "913d"
format = "xml"
[notify]
panel_url = "pec.example.it"
[lifecycle]
term_years = 11
first_access_days = -1
[antivirus]
timeout = "0s"
clamd = "run/clamd.ctl"
"#;
        let errs = Config::parse(text, Path::new("/nonexistent")).unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "colour",
            "provider.name",
            "provider.domain",
            "provider.local_domains",
            "provider.digest",
            "provider.signing_cert",
            "provider.index_client_key",
            "provider.crls[0]",
            "tls.cert",
            "limits.max_recipients",
            "limits.max_total_size",
            "limits.data_memory",
            "timers.final_after",
            "log.retention",
            "notify.panel_url",
            "limits.command_timeout",
            "log.format",
            "lifecycle.term_years",
            "lifecycle.first_access_days",
            "antivirus.timeout",
            "antivirus.clamd",
            "listen",
        ] {
            assert!(keys.contains(&k), "{k} missing in {keys:?}");
        }
    }

    #[test]
    fn two_listeners_cannot_share_an_address() {
        let base =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pecd.toml"))
                .unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let cfg = Config::parse(&base, &dir).unwrap();
        let sub = cfg.listen.submission.unwrap().to_string();
        let inbound = cfg.listen.inbound.unwrap().to_string();
        let clash = base.replacen(&inbound, &sub, 1);
        let errs = Config::parse(&clash, &dir).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.key == "listen.inbound" && e.message.contains("listen.submission")),
            "{errs:?}"
        );
    }

    #[test]
    fn the_final_notice_is_due_within_24_hours() {
        let base =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pecd.toml"))
                .unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        assert!(base.contains("final_after = \"23h\""));
        let with =
            |v: &str| base.replace("final_after = \"23h\"", &format!("final_after = \"{v}\""));
        assert!(Config::parse(&with("24h"), &dir).is_ok());
        let errs = Config::parse(&with("25h"), &dir).unwrap_err();
        assert!(
            errs.iter().any(|e| e.key == "timers.final_after"),
            "{errs:?}"
        );
    }

    #[test]
    fn lifecycle_days_are_bounded() {
        let base =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pecd.toml"))
                .unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let with = |lines: &str| format!("{base}\n[lifecycle]\n{lines}\n");
        assert!(Config::parse(&with("reminder_days = [90, 30, 5, -25]"), &dir).is_ok());
        for (lines, key) in [
            // A huge reminder made every sweep panic on date arithmetic.
            (
                "reminder_days = [9223372036854775807]",
                "lifecycle.reminder_days",
            ),
            // After the grace the mailbox is suspended: never sent.
            (
                "grace_days = 10\nreminder_days = [-20]",
                "lifecycle.reminder_days",
            ),
            (
                "delete_after_days = 9223372036854775807",
                "lifecycle.delete_after_days",
            ),
        ] {
            let errs = Config::parse(&with(lines), &dir).unwrap_err();
            assert!(errs.iter().any(|e| e.key == key), "{lines}: {errs:?}");
        }
    }

    #[test]
    fn unknown_keys_inside_sections_are_rejected() {
        let text = "data_dir = \"d\"\n[provider]\nname = \"x\"\nfoo = 1\n[tls]\ncert=\"a\"\nkey=\"b\"\n[listen]\n";
        let errs = Config::parse(text, Path::new("/")).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.key == "provider.foo"
                    && e.message.starts_with("line 4: unknown field `foo`")),
            "{errs:?}"
        );
    }

    #[test]
    fn a_wrong_value_is_named_by_its_field_and_line() {
        let base =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pecd.toml"))
                .unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let line_of = |needle: &str| base.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
        let (conns, warn) = (line_of("max_connections ="), line_of("warning_after ="));
        let text = base
            .replace("max_connections = 500", "max_connections = \"many\"")
            .replace("warning_after = \"12h\"", "warning_after = true");
        let errs = Config::parse(&text, &dir).unwrap_err();
        let found = |key: &str, start: &str| {
            errs.iter()
                .any(|e| e.key == key && e.message.starts_with(start))
        };
        assert!(
            found(
                "limits.max_connections",
                &format!("line {conns}: invalid type: string \"many\", expected usize")
            ),
            "{errs:?}"
        );
        // Durations and sizes say which shapes they take.
        assert!(
            found(
                "timers.warning_after",
                &format!(
                    "line {warn}: invalid type: boolean `true`, expected a duration such as 30s"
                )
            ),
            "{errs:?}"
        );
        // Both are reported, in one run.
        assert_eq!(errs.len(), 2, "{errs:?}");
        // A dotted key at the top and a field of an array of tables.
        let text = "data_dir = \"d\"\nlimits.max_message_size = \"big\"\n[[routes]]\ndomain = \"x.test\"\nport = 25\n";
        let errs = Config::parse(text, Path::new("/")).unwrap_err();
        let found = |key: &str, start: &str| {
            errs.iter()
                .any(|e| e.key == key && e.message.starts_with(start))
        };
        assert!(
            found(
                "limits.max_message_size",
                "line 2: invalid type: string \"big\", expected u64"
            ),
            "{errs:?}"
        );
        assert!(
            found("routes.port", "line 5: unknown field `port`"),
            "{errs:?}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let errs = Config::parse("data_dir = \n", Path::new("/")).unwrap_err();
        assert_eq!(errs[0].key, "(syntax)");
        assert!(errs[0].message.contains("line 1"), "{errs:?}");
    }
}
