//! Metrics for Prometheus: every name, label and help text in one place,
//! the recorder, and the text exposition served at `/metrics` on the admin
//! listener.
//!
//! Owns: the metric vocabulary (`pecd_*`). Must not touch: PEC decisions;
//! callers record through the functions here, so the names cannot drift.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `pecd_smtp_sessions_total` | counter | `listener` (submission, submissions, inbound) |
//! | `pecd_smtp_replies_total` | counter | `listener`, `class` (2xx, 3xx, 4xx, 5xx) |
//! | `pecd_pec_emitted_total` | counter | `kind` (daticert tipo, or `posta-certificata`, `anomalia`, …) |
//! | `pecd_pec_received_total` | counter | `kind` (as above, `anomalia`, `ordinaria`) |
//! | `pecd_consegna_emitted_total` | counter | `variant` (completa, breve, sintetica) |
//! | `pecd_delivery_errors_total` | counter | `code` (5.1.1, 5.2.1, 5.2.2, …) |
//! | `pecd_timeout_notices_total` | counter | `stage` (12h, 24h) |
//! | `pecd_delivery_attempts_total` | counter | `target` (local, relay), `result` (ok, temporary, permanent) |
//! | `pecd_queue_depth` | gauge | |
//! | `pecd_queue_oldest_age_seconds` | gauge | |
//! | `pecd_sign_seconds` | histogram | |
//! | `pecd_verify_seconds` | histogram | |
//! | `pecd_store_commit_seconds` | histogram | |
//! | `pecd_store_errors_total` | counter | (failed commits: disk full, I/O errors) |
//! | `pecd_quota_usage_ratio` | histogram | (inbox usage ÷ quota at each envelope delivery) |
//! | `pecd_certificate_expiry_days` | gauge | `cert` (signing, tls) |
//! | `pecd_panics_total` | counter | |
//! | `pecd_provider_index_providers` | gauge | (providers in the index after a refresh) |
//! | `pecd_provider_index_refresh_failures_total` | counter | |

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

pub const SMTP_SESSIONS: &str = "pecd_smtp_sessions_total";
pub const SMTP_REPLIES: &str = "pecd_smtp_replies_total";
pub const PEC_EMITTED: &str = "pecd_pec_emitted_total";
pub const PEC_RECEIVED: &str = "pecd_pec_received_total";
pub const CONSEGNA_EMITTED: &str = "pecd_consegna_emitted_total";
pub const DELIVERY_ERRORS: &str = "pecd_delivery_errors_total";
pub const TIMEOUT_NOTICES: &str = "pecd_timeout_notices_total";
pub const DELIVERY_ATTEMPTS: &str = "pecd_delivery_attempts_total";
pub const QUEUE_DEPTH: &str = "pecd_queue_depth";
pub const QUEUE_OLDEST: &str = "pecd_queue_oldest_age_seconds";
pub const SIGN_SECONDS: &str = "pecd_sign_seconds";
pub const VERIFY_SECONDS: &str = "pecd_verify_seconds";
pub const STORE_COMMIT_SECONDS: &str = "pecd_store_commit_seconds";
pub const STORE_ERRORS: &str = "pecd_store_errors_total";
pub const QUOTA_USAGE: &str = "pecd_quota_usage_ratio";
pub const CERT_EXPIRY_DAYS: &str = "pecd_certificate_expiry_days";
pub const PANICS: &str = "pecd_panics_total";
pub const INDEX_PROVIDERS: &str = "pecd_provider_index_providers";
pub const INDEX_REFRESH_FAILURES: &str = "pecd_provider_index_refresh_failures_total";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the process-wide recorder (once; later calls return the same
/// handle). None if another recorder is installed already.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(QUOTA_USAGE.into()),
                        &[0.5, 0.7, 0.8, 0.9, 0.95, 1.0],
                    )
                })
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// The text exposition (Prometheus format 0.0.4).
pub fn render() -> String {
    HANDLE
        .get()
        .and_then(|h| h.as_ref())
        .map(|h| {
            h.run_upkeep();
            h.render()
        })
        .unwrap_or_default()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(SMTP_SESSIONS, "SMTP sessions accepted, by listener");
    describe_counter!(SMTP_REPLIES, "SMTP replies sent, by listener and class");
    describe_counter!(PEC_EMITTED, "Signed PEC messages emitted, by kind");
    describe_counter!(
        PEC_RECEIVED,
        "Messages received at the punto di ricezione, by kind"
    );
    describe_counter!(
        CONSEGNA_EMITTED,
        "Ricevute di avvenuta consegna emitted, by variant"
    );
    describe_counter!(
        DELIVERY_ERRORS,
        "Avvisi di mancata consegna, by enhanced code"
    );
    describe_counter!(TIMEOUT_NOTICES, "12 h / 24 h timer notices emitted");
    describe_counter!(DELIVERY_ATTEMPTS, "Delivery attempts, by target and result");
    describe_gauge!(QUEUE_DEPTH, "Items in the queue");
    describe_gauge!(QUEUE_OLDEST, "Age of the oldest queue item, seconds");
    describe_histogram!(SIGN_SECONDS, metrics::Unit::Seconds, "S/MIME signing time");
    describe_histogram!(
        VERIFY_SECONDS,
        metrics::Unit::Seconds,
        "Verification and classification time"
    );
    describe_histogram!(
        STORE_COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "Store commit (fsync) latency"
    );
    describe_histogram!(QUOTA_USAGE, "Inbox usage over quota at envelope delivery");
    describe_gauge!(CERT_EXPIRY_DAYS, "Days until a certificate expires");
    describe_counter!(STORE_ERRORS, "Store commits that failed");
    describe_counter!(PANICS, "Panics caught");
    describe_gauge!(
        INDEX_PROVIDERS,
        "Providers in the provider index after its last refresh"
    );
    describe_counter!(
        INDEX_REFRESH_FAILURES,
        "Provider index refreshes refused (last good copy kept)"
    );
}

/// The class label of an SMTP reply code.
pub fn reply_class(code: u16) -> &'static str {
    match code / 100 {
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// Count the replies in a chunk of server output (final lines only).
pub fn count_replies(listener: &'static str, out: &[u8]) {
    for line in out.split(|b| *b == b'\n') {
        let final_line = line.len() >= 3
            && line[..3].iter().all(u8::is_ascii_digit)
            && line.get(3).is_none_or(|b| *b == b' ' || *b == b'\r');
        if final_line {
            let code = u16::from(line[0] - b'0') * 100;
            metrics::counter!(SMTP_REPLIES, "listener" => listener, "class" => reply_class(code))
                .increment(1);
        }
    }
}

pub fn time(name: &'static str, d: Duration) {
    metrics::histogram!(name).record(d.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_counted_by_their_final_line() {
        assert_eq!(reply_class(250), "2xx");
        assert_eq!(reply_class(354), "3xx");
        assert_eq!(reply_class(452), "4xx");
        assert_eq!(reply_class(550), "5xx");
        // A multi-line 250 and a 354 count twice, not four times; no panic
        // on short or odd lines.
        count_replies("inbound", b"250-a\r\n250 b\r\n354 go\r\n\r\n2\r\n");
    }
}
