//! Members of the professional orders (Ordini) and their mailboxes: pure
//! rules, no I/O.
//!
//! Owns: the codice fiscale check ([`tax_code`]), the address naming rules
//! ([`naming`]), the provinces table ([`province`]).
//! Must not touch: the store, the network, files.

pub mod naming;
pub mod province;
pub mod tax_code;
