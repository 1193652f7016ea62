//! The `pecd` command line: parses arguments and calls the library.
//! Owns no logic of its own beyond argument handling and exit codes.

use clap::{Parser, Subcommand};
use pecd::index::ProviderIndex;
use pecd::report::{Checker, Outcome};
use pecd::smime::{Verifier, VerifyTime};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pecd",
    version,
    about = "Italian PEC (Posta Elettronica Certificata) provider gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the provider daemon (punto di accesso, ricezione, consegna).
    Serve {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Log format: human or json (default: `log.format` in the config,
        /// else human).
        #[arg(long)]
        log_format: Option<String>,
    },
    /// Check a configuration file and report every problem with its key.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Mailbox accounts: directly in the store when the daemon is stopped,
    /// through its admin API (listen.admin) while it runs.
    Mailbox {
        #[command(subcommand)]
        action: MailboxAction,
    },
    /// Call the running daemon's admin API (listen.admin) as the national
    /// administrator, or as an order with --token: tenants, members, bulk
    /// loads, exports (the API is described in docs/openapi.json).
    Admin {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// An order's API token instead of the national admin token.
        #[arg(long, env = "PECD_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        action: AdminAction,
    },
    /// AgID statistics of a quadrimestre as CSV: P01 (domains, mailboxes,
    /// acceptances, presa in carico to other providers, viruses) and P02
    /// (outages and the 99.8 % SLA).
    Stats {
        /// `YYYY-Q1` (Jan–Apr), `YYYY-Q2` (May–Aug), `YYYY-Q3` (Sep–Dec).
        #[arg(long)]
        period: String,
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// The outage ledger behind P02: `pecd outage add --start … --end …
    /// --kind planned|incident|malfunction`.
    Outage {
        #[command(subcommand)]
        action: OutageAction,
    },
    /// Codice fiscale: `pecd cf check CODE` validates one and names what is
    /// wrong (exit 0 valid, 1 not valid).
    Cf {
        #[command(subcommand)]
        action: CfAction,
    },
    /// The queue: what waits (and why), retry an item now, release one
    /// that was given up and kept in quarantine.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
    /// The legal log: verify its hash chain or search it.
    Log {
        #[command(subcommand)]
        action: LogAction,
    },
    /// Verify and classify PEC messages (.eml files).
    ///
    /// Exit status: 0 every file is a valid PEC message; 1 some file is
    /// anomaly-class (signed by a provider, not conforming); 3 some file is
    /// ordinary mail (unsigned, bad signature, untrusted or unknown signer);
    /// 4 some file is unreadable; 2 usage error. The worst file decides.
    /// Without --index, 5 instead of 0: signed and well-formed, but the
    /// signers not checked against the providers' list.
    Verify {
        /// Message files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Trust anchors: a PEM file or a directory of PEM files
        /// (default: the system CA store, where the PEC root Actalis lives).
        #[arg(long, value_name = "PEM_OR_DIR")]
        trust: Option<PathBuf>,
        /// Provider index (LDIF): check the signer is a listed provider and
        /// the sender domain is one it manages.
        #[arg(long, value_name = "FILE.ldif")]
        index: Option<PathBuf>,
        /// Judge certificate validity at this instant (RFC 3339), or at
        /// `signing-time` (the signature's own signingTime attribute).
        /// Default: now.
        #[arg(long, value_name = "RFC3339_TIME|signing-time")]
        at: Option<String>,
        /// One JSON object per file, one per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum MailboxAction {
    /// Create a mailbox. The password is read from standard input (one line)
    /// unless --password is given.
    Add {
        address: String,
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long)]
        password: Option<String>,
    },
    /// List mailboxes (address, state, creation time).
    List {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Change a password (read from standard input unless --password).
    Passwd {
        address: String,
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long)]
        password: Option<String>,
    },
    /// Remove an account: orders' members get the address again only with
    /// the same codice fiscale; its Maildir is moved to `mail/.removed/`
    /// (nothing is deleted).
    Remove {
        address: String,
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show what a downgrade at expiry would block or delete for a mailbox
    /// (plan, add-ons and spaces before and after, usage over the new quota).
    DowngradePlan {
        address: String,
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the address the naming rules give (nome.cognome@domain, accents
    /// folded, compound names joined), without homonym lookup.
    DeriveAddress {
        #[arg(long)]
        nome: String,
        #[arg(long)]
        cognome: String,
        #[arg(long)]
        domain: String,
        /// Homonym alias the order supplies (mario.rossi.<alias>@…).
        #[arg(long)]
        alias: Option<String>,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Any API call: `pecd admin call GET /tenants`, `pecd admin call POST
    /// /tenants --body '{"id": …}'`. Prints the JSON (or text) reply.
    Call {
        method: String,
        path: String,
        /// JSON body (`@FILE` reads it from a file).
        #[arg(long)]
        body: Option<String>,
    },
    /// Load an order's members from the anagrafica CSV. Nothing is applied
    /// if a row is wrong (each error names its line and field), unless
    /// --partial. Writes the credentials file the order distributes.
    Bulk {
        #[arg(long)]
        tenant: String,
        file: PathBuf,
        #[arg(long)]
        partial: bool,
        /// Where to write the credentials (address;one-time password),
        /// mode 0600; without it they go to standard output.
        #[arg(long, value_name = "FILE")]
        credentials: Option<PathBuf>,
    },
    /// The INI-PEC / ReGIndE feed: one order's or (national) all, to stdout.
    Export {
        #[arg(long)]
        tenant: Option<String>,
        /// csv (default) or json (JSON lines).
        #[arg(long, default_value = "csv")]
        format: String,
    },
}

#[derive(Subcommand)]
enum OutageAction {
    /// Record an outage (RFC 3339 times).
    Add {
        #[arg(long)]
        start: String,
        #[arg(long)]
        end: String,
        #[arg(long)]
        kind: String,
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum CfAction {
    /// Validate a codice fiscale; prints its birth date, sex and
    /// municipality code when valid.
    Check { code: String },
}

#[derive(Subcommand)]
enum LogAction {
    /// Check the hash chain; names the first broken record.
    Verify {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// List the records of a message (JSON lines, in log order).
    Search {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Original Message-ID or PEC identifier (with or without <>).
        #[arg(long)]
        msgid: Option<String>,
        /// Sender address.
        #[arg(long)]
        from: Option<String>,
        /// Recipient address.
        #[arg(long)]
        to: Option<String>,
        /// Only records at or after this instant (RFC 3339).
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// Queued items (local work, then relays, in due order) and what is
    /// kept in quarantine.
    List {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make a queued item due now (its give-up clock keeps running).
    Retry {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The item's id, as `pecd queue list` shows it.
        id: String,
    },
    /// Queue again, as new, an item given up and kept in quarantine.
    Release {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The quarantined entry's name, as `pecd queue list` shows it.
        name: String,
    },
}

fn load_config(path: &std::path::Path) -> Result<pecd::config::Config, String> {
    pecd::config::Config::load(path).map_err(|errs| {
        errs.iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Where the CLI does its work: the store itself, or — while the daemon
/// holds it — the daemon's admin API.
enum Target<S = pecd::store::Store> {
    /// The store (or the provider opened on it: `pecd queue`).
    Store(S),
    Admin {
        addr: std::net::SocketAddr,
        token: String,
    },
}

fn target(path: &std::path::Path) -> Result<Target, String> {
    let cfg = load_config(path)?;
    match pecd::store::Store::open(&cfg.data_dir.join("store"), &cfg.store.engine) {
        Ok(s) => Ok(Target::Store(s)),
        Err(e) => running_daemon(&cfg, e),
    }
}

/// The admin API of the daemon that holds the store (`e`: why the CLI
/// could not open it).
fn running_daemon<T>(
    cfg: &pecd::config::Config,
    e: pecd::store::StoreError,
) -> Result<Target<T>, String> {
    // Only a store held by another process means "ask the daemon"; any
    // other failure (permissions, a damaged file) is the answer itself,
    // not hidden behind an admin token left from an earlier run.
    if !matches!(e, pecd::store::StoreError::Locked(_)) {
        return Err(e.to_string());
    }
    let token = std::fs::read_to_string(cfg.data_dir.join("admin.token")).ok();
    match (cfg.listen.admin, token) {
        (Some(addr), Some(token)) => Ok(Target::Admin {
            addr,
            token: token.trim().to_string(),
        }),
        _ => Err(format!(
            "{e} (the embedded store allows one process at a time; configure listen.admin to manage a running daemon)"
        )),
    }
}

fn stats_command(period: &str, config: &std::path::Path) -> Result<String, String> {
    let p = pecd::stats::Period::parse(period)?;
    let cfg = load_config(config)?;
    match target(config)? {
        Target::Store(store) => pecd::stats::csv(
            &store,
            p,
            cfg.provider.local_domains.len(),
            &cfg.provider.name,
        ),
        Target::Admin { addr, token } => {
            let (status, v) = pecd::admin::call(
                addr,
                &token,
                "GET",
                &format!("/stats?period={}", pecd::admin::path_segment(&p.name())),
                None,
            )?;
            match (status, v) {
                (200, serde_json::Value::String(text)) => Ok(text),
                (_, v) => Err(v["message"].as_str().unwrap_or("stats failed").to_string()),
            }
        }
    }
}

fn outage_add(
    start: &str,
    end: &str,
    kind: &str,
    note: &str,
    config: &std::path::Path,
) -> Result<(), String> {
    let time = |what: &str, s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.to_utc())
            .map_err(|e| format!("--{what} {s:?}: {e}"))
    };
    let o = pecd::stats::Outage {
        start: time("start", start)?,
        end: time("end", end)?,
        kind: pecd::stats::OutageKind::parse(kind)?,
        note: note.to_string(),
    };
    match target(config)? {
        Target::Store(store) => pecd::stats::add_outage(&store, &o, chrono::Utc::now()),
        Target::Admin { addr, token } => admin(
            addr,
            &token,
            "POST",
            "/outages",
            serde_json::to_value(&o).ok(),
        )
        .map(|_| ()),
    }
}

fn admin_command(
    config: &std::path::Path,
    token: Option<String>,
    action: AdminAction,
) -> Result<ExitCode, String> {
    let cfg = load_config(config)?;
    let addr = cfg
        .listen
        .admin
        .ok_or("listen.admin is not configured: the daemon has no admin API")?;
    let token = match token {
        Some(t) => t,
        None => std::fs::read_to_string(cfg.data_dir.join("admin.token"))
            .map(|t| t.trim().to_string())
            .map_err(|e| format!("admin token (is the daemon running?): {e}"))?,
    };
    let seg = pecd::admin::path_segment;
    let (status, reply) = match action {
        AdminAction::Call { method, path, body } => {
            let body = match body.as_deref() {
                None => String::new(),
                Some(b) => match b.strip_prefix('@') {
                    Some(f) => std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?,
                    None => b.to_string(),
                },
            };
            pecd::admin::call_raw(
                addr,
                &token,
                &method.to_ascii_uppercase(),
                &path,
                "application/json",
                &body,
            )?
        }
        AdminAction::Bulk {
            tenant,
            file,
            partial,
            credentials,
        } => {
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let csv = String::from_utf8(bytes).map_err(|e| {
                let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
                format!(
                    "{}:{line}: not UTF-8 (save it as \"CSV UTF-8\")",
                    file.display()
                )
            })?;
            let (status, v) = pecd::admin::call_raw(
                addr,
                &token,
                "POST",
                &format!("/tenants/{}/bulk?partial={partial}", seg(&tenant)),
                "text/csv",
                &csv,
            )?;
            for r in v["rejected"].as_array().into_iter().flatten() {
                eprintln!(
                    "{}:{}: {}: {}",
                    file.display(),
                    r["line"],
                    r["field"].as_str().unwrap_or(""),
                    r["message"].as_str().unwrap_or("")
                );
            }
            if v["applied"] == true {
                let n = v["created"].as_array().map_or(0, |c| c.len());
                println!("{n} mailboxes created");
                // The one-time passwords exist only in this answer: never
                // dropped (a file that cannot be written, or none named,
                // and they go to standard output), never world-readable.
                let text = v["credentials_csv"].as_str().unwrap_or_default();
                match credentials {
                    Some(path) => match pecd::admin::write_secret_file(&path, text.as_bytes()) {
                        Ok(()) => println!("credentials written to {} (mode 0600)", path.display()),
                        Err(e) => {
                            eprintln!(
                                "{}: {e}; the credentials follow on standard output",
                                path.display()
                            );
                            print!("{text}");
                        }
                    },
                    None => print!("{text}"),
                }
                return Ok(ExitCode::SUCCESS);
            }
            if status == 422 {
                eprintln!("nothing applied (use --partial to apply the valid rows)");
                return Ok(ExitCode::from(1));
            }
            (status, v)
        }
        AdminAction::Export { tenant, format } => {
            let path = match &tenant {
                Some(t) => format!("/tenants/{}/export?format={}", seg(t), seg(&format)),
                None => format!("/export?format={}", seg(&format)),
            };
            pecd::admin::call_raw(addr, &token, "GET", &path, "application/json", "")?
        }
    };
    match &reply {
        serde_json::Value::String(text) => print!("{text}"),
        serde_json::Value::Null => {}
        v => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
    }
    Ok(if (200..300).contains(&status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn admin(
    addr: std::net::SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let (status, v) = pecd::admin::call(addr, token, method, path, body.as_ref())?;
    if (200..300).contains(&status) {
        Ok(v)
    } else {
        Err(v["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {status}: {v}")))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, log_format } => match serve(&config, log_format.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => {
                eprintln!("pecd serve: {msg}");
                ExitCode::from(1)
            }
        },
        // What `serve` would build too (certificates and keys read and
        // matched, the provider index parsed, TLS set up): an OK here is
        // a daemon that starts (ExecStartPre of the systemd unit).
        Command::CheckConfig { config } => match load_config(&config).and_then(|c| {
            pecd::app::Live::build(c)
                .map(|_| ())
                .map_err(|e| format!("{}: {e}", config.display()))
        }) {
            Ok(()) => {
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            }
            Err(msg) => {
                eprintln!("{msg}");
                ExitCode::from(1)
            }
        },
        Command::Mailbox { action } => match mailbox_command(action) {
            Ok(code) => code,
            Err(msg) => {
                eprintln!("pecd mailbox: {msg}");
                ExitCode::from(1)
            }
        },
        Command::Admin {
            config,
            token,
            action,
        } => match admin_command(&config, token, action) {
            Ok(code) => code,
            Err(msg) => {
                eprintln!("pecd admin: {msg}");
                ExitCode::from(1)
            }
        },
        Command::Stats { period, config } => match stats_command(&period, &config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(msg) => {
                eprintln!("pecd stats: {msg}");
                ExitCode::from(1)
            }
        },
        Command::Outage {
            action:
                OutageAction::Add {
                    start,
                    end,
                    kind,
                    note,
                    config,
                },
        } => match outage_add(&start, &end, &kind, &note, &config) {
            Ok(()) => {
                println!("outage recorded");
                ExitCode::SUCCESS
            }
            Err(msg) => {
                eprintln!("pecd outage add: {msg}");
                ExitCode::from(1)
            }
        },
        Command::Cf {
            action: CfAction::Check { code },
        } => match pecd::membership::tax_code::parse(&code) {
            Ok(c) => {
                let (y, m, d) = c.birth;
                println!(
                    "{}: valid; born {d:02}/{m:02}/{y:02}, {}, municipality {}",
                    c.code,
                    if c.female { "F" } else { "M" },
                    c.municipality
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: not valid: {e}", code.trim());
                ExitCode::from(1)
            }
        },
        Command::Queue { action } => match queue_command(action) {
            Ok(code) => code,
            Err(msg) => {
                eprintln!("pecd queue: {msg}");
                ExitCode::from(1)
            }
        },
        Command::Log { action } => match log_command(action) {
            Ok(code) => code,
            Err(msg) => {
                eprintln!("pecd log: {msg}");
                ExitCode::from(2)
            }
        },
        Command::Verify {
            files,
            trust,
            index,
            at,
            json,
        } => match verify(files, trust, index, at, json) {
            Ok(code) => code,
            Err(msg) => {
                eprintln!("pecd verify: {msg}");
                ExitCode::from(2)
            }
        },
    }
}

fn serve(path: &std::path::Path, log_format: Option<&str>) -> Result<(), String> {
    pecd::malloc::tune();
    let cfg = load_config(path)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PECD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log_format.unwrap_or(&cfg.log.format) {
        "json" => builder.json().init(),
        "human" => builder.init(),
        other => return Err(format!("log format {other:?}: use human or json")),
    }
    pecd::metrics::install();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        metrics::counter!(pecd::metrics::PANICS).increment(1);
        default_hook(info);
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let app = std::sync::Arc::new(pecd::app::App::open(cfg).map_err(|e| e.to_string())?);
        let _ = app.config_path.set(path.to_path_buf());
        let now = chrono::Utc::now();
        for m in &app.cfg().dev_mailboxes {
            if pecd::accounts::get(&app.store, &m.address)
                .map_err(|e| e.to_string())?
                .is_none()
            {
                pecd::accounts::add(&app.store, &m.address, &m.password, now)
                    .map_err(|e| e.to_string())?;
                if m.plan.is_some() || m.reference_email.is_some() {
                    pecd::accounts::update(
                        &app.store,
                        &m.address,
                        now,
                        "dev mailbox set up",
                        |a| {
                            a.plan = m.plan.clone().unwrap_or_default();
                            a.holder.reference_email =
                                m.reference_email.clone().unwrap_or_default();
                            Ok(())
                        },
                    )
                    .map_err(|e| e.to_string())?;
                }
            }
        }
        // Deliveries a crash may have left unflushed are written again
        // before anything is received.
        match app.repair_mail() {
            Ok(0) => {}
            Ok(n) => tracing::info!(event = "maildir_repaired", files = n),
            Err(e) => return Err(format!("repairing the mailboxes: {e}")),
        }
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut bound = pecd::server::start(app.clone(), rx.clone())
            .await
            .map_err(|e| e.to_string())?;
        if let Some(addr) = pecd::admin::start(app.clone(), rx.clone()).await? {
            bound.push(("admin".into(), addr));
        }
        // Signal handlers before anyone is told we are up: a SIGHUP sent
        // at once (a test, `systemctl reload` right after start) must
        // reload, not kill by its default action.
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| e.to_string())?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        app.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        // The inbound line comes last: scripts and tests wait for it.
        bound.sort_by_key(|(name, _)| name == "inbound");
        for (name, addr) in &bound {
            println!("listening {name} {addr}");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let tick = (app.cfg().timers.warning_after.0 / 20).clamp(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(1),
        );
        let worker = tokio::spawn(app.clone().worker(tick, rx));
        // SIGHUP: reload the configuration; a bad file changes nothing.
        let reloader = app.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match tokio::task::block_in_place(|| reloader.reload_from_file()) {
                    Ok(()) => {}
                    Err(errors) => {
                        for e in errors {
                            tracing::error!(event = "config_reload_refused", error = %e);
                        }
                    }
                }
            }
        });
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!(event = "shutdown");
        let _ = tx.send(true);
        let _ = worker.await;
        app.store.close();
        Ok(())
    })
}

fn password_or_stdin(p: Option<String>) -> Result<String, String> {
    match p {
        Some(p) => Ok(p),
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("reading the password from standard input: {e}"))?;
            Ok(line.trim_end_matches(['\r', '\n']).to_string())
        }
    }
}

fn mailbox_command(action: MailboxAction) -> Result<ExitCode, String> {
    use pecd::accounts;
    use pecd::admin::path_segment as seg;
    let now = chrono::Utc::now();
    match action {
        MailboxAction::DowngradePlan { address, config } => {
            let cfg = load_config(&config)?;
            let plan = match target(&config)? {
                Target::Store(store) => {
                    let acc = accounts::get(&store, &address)
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("mailbox {address} does not exist"))?;
                    let now = cfg
                        .plan(&acc.plan)
                        .ok_or("the mailbox's plan is not in the configuration")?;
                    let after = now.downgrade_to.as_deref().and_then(|p| cfg.plan(p));
                    let space = pecd::maildir::measure(&cfg.data_dir.join("mail"), &acc.address)
                        .map_err(|e| e.to_string())?;
                    serde_json::to_value(pecd::lifecycle::downgrade_plan(
                        &acc,
                        now,
                        after,
                        space,
                        cfg.lifecycle.downgrade_excess,
                    ))
                    .map_err(|e| e.to_string())?
                }
                Target::Admin { addr, token } => admin(
                    addr,
                    &token,
                    "GET",
                    &format!("/mailboxes/{}/downgrade-plan", seg(&address)),
                    None,
                )?,
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&plan).unwrap_or_default()
            );
        }
        MailboxAction::DeriveAddress {
            nome,
            cognome,
            domain,
            alias,
        } => {
            let a = pecd::membership::naming::derive_with_alias(
                &nome,
                &cognome,
                &domain,
                alias.as_deref(),
            )
            .map_err(|e| e.to_string())?;
            println!("{a}");
        }
        MailboxAction::Add {
            address,
            config,
            password,
        } => {
            let pw = password_or_stdin(password)?;
            match target(&config)? {
                Target::Store(store) => {
                    let a = accounts::add(&store, &address, &pw, now).map_err(|e| e.to_string())?;
                    println!("created {}", a.address);
                }
                Target::Admin { addr, token } => {
                    let v = admin(
                        addr,
                        &token,
                        "POST",
                        "/mailboxes",
                        Some(serde_json::json!({"address": address, "password": pw})),
                    )?;
                    println!("created {}", v["address"].as_str().unwrap_or(&address));
                }
            }
        }
        MailboxAction::List { config } => {
            let rows: Vec<(String, String, String)> = match target(&config)? {
                Target::Store(store) => accounts::list(&store)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|a| {
                        let state = serde_json::to_value(a.state).unwrap_or_default();
                        (
                            a.address,
                            state.as_str().unwrap_or("?").to_string(),
                            a.created.to_rfc3339(),
                        )
                    })
                    .collect(),
                Target::Admin { addr, token } => admin(addr, &token, "GET", "/mailboxes", None)?
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| {
                        let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
                        let created = chrono::DateTime::parse_from_rfc3339(&s("created"))
                            .map(|t| t.to_utc().to_rfc3339())
                            .unwrap_or_else(|_| s("created"));
                        (s("address"), s("state"), created)
                    })
                    .collect(),
            };
            for (a, st, c) in rows {
                println!("{a}\t{st}\t{c}");
            }
        }
        MailboxAction::Passwd {
            address,
            config,
            password,
        } => {
            let pw = password_or_stdin(password)?;
            match target(&config)? {
                Target::Store(store) => {
                    accounts::set_password(&store, &address, &pw, now).map_err(|e| e.to_string())?
                }
                Target::Admin { addr, token } => {
                    admin(
                        addr,
                        &token,
                        "PUT",
                        &format!("/mailboxes/{}/password", seg(&address)),
                        Some(serde_json::json!({"password": pw})),
                    )?;
                }
            }
            println!("password changed for {address}");
        }
        MailboxAction::Remove { address, config } => {
            match target(&config)? {
                Target::Store(store) => {
                    let acc = pecd::tenants::remove_mailbox(&store, &address, "cli", now)
                        .map_err(|e| e.to_string())?;
                    let mail = load_config(&config)?.data_dir.join("mail");
                    let stamp = now.format("%Y%m%dT%H%M%SZ").to_string();
                    if let Some(p) = pecd::mailsync::set_aside(&store, &mail, &acc.address, &stamp)
                        .map_err(|e| format!("removed, but its messages were not set aside: {e}"))?
                    {
                        println!("messages set aside in {}", p.display());
                    }
                }
                Target::Admin { addr, token } => {
                    admin(
                        addr,
                        &token,
                        "DELETE",
                        &format!("/mailboxes/{}", seg(&address)),
                        None,
                    )?;
                }
            }
            println!("removed {address}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn queue_command(action: QueueAction) -> Result<ExitCode, String> {
    let config = match &action {
        QueueAction::List { config, .. }
        | QueueAction::Retry { config, .. }
        | QueueAction::Release { config, .. } => config.clone(),
    };
    let cfg = load_config(&config)?;
    // Opened as the daemon opens it: a release writes the spool and reads
    // the quarantine Maildir.
    let target = match pecd::app::App::open(cfg.clone()) {
        Ok(app) => Target::Store(app),
        // Held by the daemon (or unreadable: the API says which).
        Err(pecd::app::StartError::Store(e)) => running_daemon(&cfg, e)?,
        Err(e) => return Err(e.to_string()),
    };
    let local = |r: Result<pecd::queue::Item, pecd::app::QueueActionError>| {
        r.map_err(|e| e.to_string())
            .and_then(|i| serde_json::to_value(i).map_err(|e| e.to_string()))
    };
    match action {
        QueueAction::List { json, .. } => {
            let v = match &target {
                Target::Store(app) => app
                    .queue_view()
                    .map_err(|e| e.to_string())
                    .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string()))?,
                Target::Admin { addr, token } => admin(*addr, token, "GET", "/queue", None)?,
            };
            print!("{}", queue_listing(&v, json));
        }
        QueueAction::Retry { id, .. } => {
            let item = match &target {
                Target::Store(app) => local(app.retry_queued(&id))?,
                Target::Admin { addr, token } => {
                    let path = format!("/queue/{}/retry", pecd::admin::path_segment(&id));
                    admin(*addr, token, "POST", &path, None)?
                }
            };
            println!("{}: due now ({})", id, work_summary(&item["work"]));
        }
        QueueAction::Release { name, .. } => {
            let item = match &target {
                Target::Store(app) => local(app.release_quarantined(&name))?,
                Target::Admin { addr, token } => {
                    let path = format!("/quarantine/{}/release", pecd::admin::path_segment(&name));
                    admin(*addr, token, "POST", &path, None)?
                }
            };
            println!("{name}: queued again ({})", work_summary(&item["work"]));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What an item must still do, in a few words.
fn work_summary(w: &serde_json::Value) -> String {
    let s = |k: &str| w[k].as_str().unwrap_or("?").to_string();
    let list = |k: &str| {
        w[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    match w["kind"].as_str() {
        Some("relay") => format!("relay to {}: {}", s("domain"), list("rcpt_to")),
        Some("local") => match w["receipt_to"].as_str() {
            Some(r) => format!("deliver to {}, then a receipt to {r}", s("mailbox")),
            None => format!("deliver to {}", s("mailbox")),
        },
        Some("archive") => format!("archive copy for {}", s("mailbox")),
        Some("receive") => format!("receive from <{}> for {}", s("mail_from"), list("rcpt_to")),
        _ => w.to_string(),
    }
}

/// `pecd queue list`: a table, or JSON lines (`queued` / `quarantined`).
fn queue_listing(v: &serde_json::Value, json: bool) -> String {
    let empty = Vec::new();
    let items = v["items"].as_array().unwrap_or(&empty);
    let kept = v["quarantined"].as_array().unwrap_or(&empty);
    let mut out = String::new();
    if json {
        for i in items {
            out.push_str(&format!(
                "{}\n",
                serde_json::json!({"state": "queued", "item": i})
            ));
        }
        for q in kept {
            let mut q = q.clone();
            q["state"] = "quarantined".into();
            out.push_str(&format!("{q}\n"));
        }
        return out;
    }
    out.push_str(&format!("{} queued\n", items.len()));
    for i in items {
        out.push_str(&format!(
            "{}  due {}  tries {}  {}{}\n",
            i["id"].as_str().unwrap_or("?"),
            i["next_attempt"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.to_utc().format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_else(|| "?".into()),
            i["attempts"],
            work_summary(&i["work"]),
            i["last_error"]
                .as_str()
                .map(|e| format!("  (last error: {e})"))
                .unwrap_or_default(),
        ));
    }
    out.push_str(&format!("{} quarantined\n", kept.len()));
    for q in kept {
        let what = match q["item"].is_object() {
            true => format!(
                "{}{}",
                work_summary(&q["item"]["work"]),
                q["item"]["last_error"]
                    .as_str()
                    .map(|e| format!("  (last error: {e})"))
                    .unwrap_or_default()
            ),
            false => q["error"].as_str().unwrap_or("?").to_string(),
        };
        let file = q["file"]
            .as_str()
            .map(|f| format!("  kept in {f}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{}  {what}{file}\n",
            q["name"].as_str().unwrap_or("?")
        ));
    }
    out
}

fn log_command(action: LogAction) -> Result<ExitCode, String> {
    use pecd::audit::{ChainStatus, Filter};
    match action {
        LogAction::Verify { config } => {
            let status = match target(&config)? {
                Target::Store(store) => {
                    // The checkpoints' signatures are checked as the daemon
                    // would: with its trust anchors.
                    let live =
                        pecd::app::Live::build(load_config(&config)?).map_err(|e| e.to_string())?;
                    pecd::checkpoint::verify(
                        &store,
                        &live.checker.verifier,
                        &live.pec_provider.service_address(),
                        &live.checkpoint_dir(),
                    )?
                }
                Target::Admin { addr, token } => {
                    let v = admin(addr, &token, "GET", "/log/verify", None)?;
                    if v["intact"].as_bool() == Some(true) {
                        ChainStatus::Intact {
                            records: v["records"].as_u64().unwrap_or(0),
                            first_seq: v["first_seq"].as_u64().unwrap_or(0),
                            head_seq: v["head_seq"].as_u64().unwrap_or(0),
                        }
                    } else {
                        ChainStatus::Broken {
                            seq: v["seq"].as_u64().unwrap_or(0),
                            reason: v["reason"].as_str().unwrap_or("?").to_string(),
                        }
                    }
                }
            };
            match status {
                ChainStatus::Intact {
                    records,
                    first_seq,
                    head_seq,
                } => {
                    println!("legal log intact: {records} records (#{first_seq}..#{head_seq})");
                    Ok(ExitCode::SUCCESS)
                }
                ChainStatus::Broken { seq, reason } => {
                    println!("legal log BROKEN at record #{seq}: {reason}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        LogAction::Search {
            config,
            msgid,
            from,
            to,
            since,
        } => {
            let since = match since {
                None => None,
                Some(t) => Some(
                    chrono::DateTime::parse_from_rfc3339(&t)
                        .map_err(|e| format!("--since {t:?}: not an RFC 3339 time ({e})"))?
                        .to_utc(),
                ),
            };
            match target(&config)? {
                Target::Store(store) => {
                    let filter = Filter {
                        id: msgid,
                        from,
                        to,
                        party: None,
                        since,
                    };
                    for (seq, rec) in
                        pecd::audit::search(&store, &filter).map_err(|e| e.to_string())?
                    {
                        let mut v = serde_json::to_value(&rec).map_err(|e| e.to_string())?;
                        v["seq"] = seq.into();
                        println!("{v}");
                    }
                }
                Target::Admin { addr, token } => {
                    let mut q = Vec::new();
                    for (k, v) in [
                        ("msgid", msgid),
                        ("from", from),
                        ("to", to),
                        ("since", since.map(|t| t.to_rfc3339())),
                    ] {
                        if let Some(v) = v {
                            q.push(format!("{k}={}", pecd::admin::path_segment(&v)));
                        }
                    }
                    let v = admin(
                        addr,
                        &token,
                        "GET",
                        &format!("/log/search?{}", q.join("&")),
                        None,
                    )?;
                    for rec in v.as_array().cloned().unwrap_or_default() {
                        println!("{rec}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn verify(
    files: Vec<PathBuf>,
    trust: Option<PathBuf>,
    index: Option<PathBuf>,
    at: Option<String>,
    json: bool,
) -> Result<ExitCode, String> {
    let when = match at.as_deref() {
        None | Some("now") => VerifyTime::Now,
        Some("signing-time") => VerifyTime::SigningTime,
        Some(t) => VerifyTime::At(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| format!("--at {t:?}: not an RFC 3339 time ({e})"))?
                .with_timezone(&chrono::Utc),
        ),
    };
    let verifier = match &trust {
        None => Verifier::system(),
        Some(p) => pecd::smime::load_certificates(p).and_then(Verifier::with_anchors),
    }
    .map_err(|e| format!("--trust: {e}"))?;
    let index = match &index {
        None => None,
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| format!("--index {}: {e}", p.display()))?;
            Some(ProviderIndex::from_ldif(&text).map_err(|errs| {
                let lines: Vec<String> = errs
                    .iter()
                    .map(|e| format!("{}:{e}", p.display()))
                    .collect();
                format!("provider index rejected:\n{}", lines.join("\n"))
            })?)
        }
    };
    let checker = Checker {
        verifier,
        index,
        when,
    };
    let mut worst = Outcome::Pec;
    for f in &files {
        let name = f.display().to_string();
        let report = match std::fs::read(f) {
            Ok(raw) => checker.check(&name, &raw),
            Err(e) => pecd::report::Report {
                file: name.clone(),
                outcome: Outcome::Unreadable,
                kind: None,
                reason: Some(format!("cannot read: {e}")),
                signature: None,
                provider: None,
                provider_checked: checker.index.is_some(),
                wrapped: false,
                canonical: true,
                daticert: None,
                verdict: None,
            },
        };
        worst = worst.max(report.outcome);
        if json {
            println!("{}", report.to_json());
        } else {
            print!("{}", report.to_text());
        }
    }
    // Signed and well-formed, but by whom? Without the provider index any
    // S/MIME certificate the trust store accepts would do: not "valid PEC".
    if worst == Outcome::Pec && checker.index.is_none() {
        return Ok(ExitCode::from(5));
    }
    Ok(ExitCode::from(worst.exit_code() as u8))
}
