//! The three PEC points. Each follows decide (pure) → sign → persist → reply.
//!
//! Owns: the orchestration of the technical rules at the punto di accesso,
//! di ricezione and di consegna. The decisions here are pure functions of
//! their inputs; the daemon's I/O shells call them. Must not touch: sockets
//! or the storage engine directly.

pub mod access;
