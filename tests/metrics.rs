//! `/metrics` during a scripted exchange between two real daemons: the
//! text parses as Prometheus exposition, and the counters move by exactly
//! what one certified message implies. `/readyz` and `/healthz` too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::*;
use std::collections::HashMap;

const MARIO: &str = "mario.rossi@pec.provider-a.test";
const GIULIA: &str = "giulia.bianchi@pec.provider-b.test";

/// Scrape and parse; counters and gauges keyed by `name{label=value,…}`.
fn scrape(d: &Daemon) -> HashMap<String, f64> {
    let (status, body) = d.api("", "GET", "/metrics", None);
    assert_eq!(status, 200);
    let text = body.as_str().unwrap_or_default().to_string();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let mut out = HashMap::new();
    for s in scrape.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        out.insert(format!("{}{{{}}}", s.metric, labels.join(",")), v);
    }
    out
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

#[test]
fn counters_move_by_one_certified_message() {
    let dir = tempfile::tempdir().unwrap();
    let (a_in, b_in) = (free_port(), free_port());
    let a = Daemon::start(Spec::new(
        'a',
        dir.path(),
        a_in,
        vec![("pec.provider-b.test", b_in)],
    ));
    let b = Daemon::start(Spec::new(
        'b',
        dir.path(),
        b_in,
        vec![("pec.provider-a.test", a_in)],
    ));
    assert_eq!(a.api("", "GET", "/healthz", None).0, 200);
    let (s, ready) = a.api("", "GET", "/readyz", None);
    assert_eq!(s, 200, "{ready}");
    let (a0, b0) = (scrape(&a), scrape(&b));
    a.submit(
        MARIO,
        "password-mario",
        MARIO,
        &[GIULIA],
        b"From: mario.rossi@pec.provider-a.test\r\nTo: giulia.bianchi@pec.provider-b.test\r\nSubject: Metriche\r\nMessage-ID: <metriche@client.test>\r\n\r\nTesto.\r\n",
    )
    .unwrap();
    wait_for("accettazione + consegna", 30, || {
        a.mailbox(MARIO).len() >= 2
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (a1, b1) = (scrape(&a), scrape(&b));
    // A signs the accettazione and the envelope; receives presa in carico
    // and consegna.
    assert_eq!(
        delta(&a0, &a1, "pecd_pec_emitted_total{kind=accettazione}"),
        1.0
    );
    assert_eq!(
        delta(&a0, &a1, "pecd_pec_emitted_total{kind=posta-certificata}"),
        1.0
    );
    assert_eq!(
        delta(&a0, &a1, "pecd_pec_received_total{kind=presa-in-carico}"),
        1.0
    );
    assert_eq!(
        delta(&a0, &a1, "pecd_pec_received_total{kind=avvenuta-consegna}"),
        1.0
    );
    // B receives the envelope, signs presa in carico and consegna.
    assert_eq!(
        delta(&b0, &b1, "pecd_pec_received_total{kind=posta-certificata}"),
        1.0
    );
    assert_eq!(
        delta(&b0, &b1, "pecd_pec_emitted_total{kind=presa-in-carico}"),
        1.0
    );
    assert_eq!(
        delta(&b0, &b1, "pecd_pec_emitted_total{kind=avvenuta-consegna}"),
        1.0
    );
    assert_eq!(
        delta(&b0, &b1, "pecd_consegna_emitted_total{variant=completa}"),
        1.0
    );
    // One submission session; its replies were all 2xx/3xx.
    assert_eq!(
        delta(&a0, &a1, "pecd_smtp_sessions_total{listener=submission}"),
        1.0
    );
    assert!(
        delta(
            &a0,
            &a1,
            "pecd_smtp_replies_total{class=2xx,listener=submission}"
        ) >= 5.0
    );
    assert_eq!(
        delta(
            &a0,
            &a1,
            "pecd_smtp_replies_total{class=5xx,listener=submission}"
        ),
        0.0
    );
    // One relay A→B, succeeded; signing was timed.
    assert_eq!(
        delta(
            &a0,
            &a1,
            "pecd_delivery_attempts_total{result=ok,target=relay}"
        ),
        1.0
    );
    assert!(a1.get("pecd_sign_seconds_count{}").copied().unwrap_or(0.0) >= 2.0);
    // Certificates are years from expiry (the dev ones).
    assert!(
        a1.get("pecd_certificate_expiry_days{cert=signing}")
            .copied()
            .unwrap_or(0.0)
            > 30.0
    );
    assert!(a1.contains_key("pecd_queue_depth{}"));
    // An unknown recipient moves the 5.1.1 counter.
    let nobody = "nessuno@pec.provider-b.test";
    a.submit(
        MARIO,
        "password-mario",
        MARIO,
        &[nobody],
        b"From: mario.rossi@pec.provider-a.test\r\nTo: nessuno@pec.provider-b.test\r\nSubject: Nessuno\r\nMessage-ID: <nessuno@client.test>\r\n\r\nTesto.\r\n",
    )
    .unwrap();
    wait_for("mancata consegna", 30, || a.mailbox(MARIO).len() >= 4);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let b2 = scrape(&b);
    assert_eq!(
        delta(&b1, &b2, "pecd_delivery_errors_total{code=5.1.1}"),
        1.0
    );
}

#[test]
fn the_example_alert_rules_use_real_metric_names() {
    let rules = std::fs::read_to_string(common::root().join("config/pecd-alerts.yml")).unwrap();
    let known = std::fs::read_to_string(common::root().join("src/metrics.rs")).unwrap();
    let mut n = 0;
    for piece in rules.split("pecd_").skip(1) {
        let name: String = piece
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        let name = format!("pecd_{}", name.trim_end_matches("_bucket"));
        assert!(
            known.contains(&format!("\"{name}\"")),
            "{name} is not a pecd metric"
        );
        n += 1;
    }
    assert!(n >= 6);
}
