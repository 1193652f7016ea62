//! pecd — an Italian PEC (Posta Elettronica Certificata) provider gateway.
//!
//! The library holds everything the `pecd` binary and the black-box tests use.
//! Pure decisions live apart from I/O:
//!
//! ```text
//!   original message ──► pec::original (parse)      ─┐
//!                        pec::build (every PEC type) ├─► UnsignedMessage ─► smime::Signer ─► signed bytes
//!                        pec::daticert (model, XML)  ─┘
//!   received bytes ────► smime::Verifier (signature, chain, time)
//!                        index::ProviderIndex (signer hash, managedDomains)
//!                        pec::classify (decision table RT §6.3 / §9) ─► Verdict
//! ```
//!
//! Modules:
//! - [`clock`]: the legal time reference (Europe/Rome) and a clock abstraction.
//! - [`pec`]: the PEC domain, pure functions only (no I/O, no crypto).
//! - [`smime`]: the only module that touches OpenSSL's CMS; signs and verifies.
//! - [`index`]: the provider index (IGPEC) as imported from LDIF.
//! - [`report`]: the `pecd verify` report (verification + classification of files).

pub mod accounts;
pub mod admin;
pub mod antivirus;
pub mod app;
pub mod audit;
pub mod checkpoint;
pub mod clock;
pub mod config;
pub mod fetch;
pub mod fsync;
pub mod index;
pub mod lifecycle;
pub mod maildir;
pub mod mailsync;
pub mod malloc;
pub mod membership;
pub mod metrics;
pub mod notices;
pub mod pec;
pub mod points;
pub mod queue;
pub mod report;
pub mod server;
pub mod smime;
pub mod smtp;
pub mod stats;
pub mod store;
pub mod tenants;
pub mod totp;
pub mod web;
