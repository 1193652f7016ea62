//! SMTP vocabulary, sans-IO. Knows nothing of PEC, storage or crypto.
//!
//! Owns: replies with enhanced status codes ([`reply`]) and the server-side
//! session state machine ([`session`]) that turns received bytes into events
//! for an I/O shell. Must not touch: sockets, files, the store.

pub mod reply;
pub mod session;
