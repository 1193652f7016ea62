//! SMTP vocabulary, sans-IO. Knows nothing of PEC, storage or crypto.
//!
//! Owns: replies with enhanced status codes ([`reply`]), the server-side
//! session state machine ([`session`], its DATA reader in [`data`]) that
//! turns received bytes into events
//! for an I/O shell, and the outbound client ([`client`], the one part that
//! does I/O). Must not touch: files, the store.

pub mod client;
pub mod data;
pub mod reply;
pub mod session;
