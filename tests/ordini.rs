//! The Ordini through the admin API of a running daemon: tenants, members'
//! mailboxes named by the rules, tenant isolation on every endpoint, bulk
//! load that applies nothing when a row is wrong, registry exports, the
//! cancellation rules, transfer, plans and the downgrade plan.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::*;
use serde_json::{Value, json};

const DOMAIN: &str = "pec.provider-a.test";

fn member(nome: &str, cognome: &str, cf: &str) -> Value {
    json!({
        "nome": nome, "cognome": cognome, "codice_fiscale": cf,
        "indirizzo": "Via Roma 1", "comune": "Lodi", "provincia": "LO", "cap": "26900",
        "reference_email": "segreteria@ordine.test"
    })
}

/// A valid codice fiscale for a serial number (the check character
/// computed as the rules say).
fn cf(n: u32) -> String {
    let first15 = format!("RSSMRA85T{:02}A{:03}", 1 + n % 28, n % 1000);
    let c = pecd::membership::tax_code::check_char(first15.as_bytes());
    format!("{first15}{c}")
}

fn start(dir: &std::path::Path) -> Daemon {
    Daemon::start(Spec::new('a', dir, free_port(), vec![]))
}

fn new_tenant(d: &Daemon, id: &str, provincia: &str) -> String {
    let (s, v) = d.api(
        &d.admin_token(),
        "POST",
        "/tenants",
        Some(json!({"id": id, "name": format!("Ordine {id}"), "domain": DOMAIN, "provincia": provincia})),
    );
    assert_eq!(s, 201, "{v}");
    v["token"].as_str().unwrap().to_string()
}

#[test]
fn members_are_named_by_the_rules_and_homonyms_get_an_alias() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let (s, v) = d.api(
        &d.admin_token(),
        "POST",
        "/tenants",
        Some(json!({"id": "ordine-ingegneri-lodi", "name": "Ordine degli Ingegneri di Lodi", "domain": DOMAIN, "provincia": "LO"})),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["order_mailbox"], format!("ordine.lodi@{DOMAIN}"));
    // An order's domain must be one this provider serves.
    let (s, e) = d.api(
        &d.admin_token(),
        "POST",
        "/tenants",
        Some(json!({"id": "ordine-altrove", "name": "Altrove", "domain": "pec.altrove.test", "provincia": "MI"})),
    );
    assert_eq!((s, e["field"].as_str()), (400, Some("domain")), "{e}");
    // The order's own mailbox exists, with its one-time password.
    let order_pw = v["order_mailbox_password"].as_str().unwrap();
    let (s, me) = d.api(
        &basic(&format!("ordine.lodi@{DOMAIN}"), order_pw),
        "GET",
        "/me",
        None,
    );
    assert_eq!(
        (s, me["tenant"].as_str()),
        (200, Some("ordine-ingegneri-lodi")),
        "{me}"
    );
    let token = v["token"].as_str().unwrap().to_string();
    let table = [
        ("Nicolò", "Bianchi", "nicolo.bianchi"),
        ("Maria Grazia", "De Santis", "mariagrazia.desantis"),
        ("Anna", "D'Angelo", "anna.dangelo"),
        ("Giosuè", "Dell'Acqua", "giosue.dellacqua"),
        ("Luigi", "Bassi", "luigi.bassi"),
        ("Luigi", "Bassi", "luigi.bassi.2"),
        ("Luigi", "Bassi", "luigi.bassi.3"),
    ];
    for (i, (n, c, want)) in table.iter().enumerate() {
        let (s, v) = d.api(
            &token,
            "POST",
            "/tenants/ordine-ingegneri-lodi/mailboxes",
            Some(member(n, c, &cf(i as u32))),
        );
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["address"], format!("{want}@{DOMAIN}"));
        assert_eq!(v["password"].as_str().unwrap().len(), 12);
    }
    // The order's own alias for a homonym.
    let mut m = member("Luigi", "Bassi", &cf(50));
    m["alias"] = "ing".into();
    let (s, v) = d.api(
        &token,
        "POST",
        "/tenants/ordine-ingegneri-lodi/mailboxes",
        Some(m),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["address"], format!("luigi.bassi.ing@{DOMAIN}"));
    // A wrong codice fiscale is named.
    let (s, v) = d.api(
        &token,
        "POST",
        "/tenants/ordine-ingegneri-lodi/mailboxes",
        Some(member("Luca", "Verdi", "RSSMRA85T10A562X")),
    );
    assert_eq!(s, 400);
    assert_eq!(v["field"], "codice_fiscale");
    assert!(
        v["message"].as_str().unwrap().contains("check character"),
        "{v}"
    );
    // Search by name, codice fiscale or address.
    let (_, v) = d.api(
        &token,
        "GET",
        "/tenants/ordine-ingegneri-lodi/mailboxes?q=bassi",
        None,
    );
    assert_eq!(v.as_array().unwrap().len(), 4);
    // Name and codice fiscale are immutable; the rest can be edited.
    let addr = format!("nicolo.bianchi@{DOMAIN}");
    let mut edit = json!({"nome": "Nicola"});
    let (s, v) = d.api(
        &token,
        "PATCH",
        &format!("/tenants/ordine-ingegneri-lodi/mailboxes/{addr}"),
        Some(edit.clone()),
    );
    assert_eq!((s, v["field"].as_str()), (400, Some("nome")), "{v}");
    edit = json!({"comune": "Codogno", "nome": "Nicolò"});
    let (s, v) = d.api(
        &token,
        "PATCH",
        &format!("/tenants/ordine-ingegneri-lodi/mailboxes/{addr}"),
        Some(edit),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["anagrafica"]["comune"], "Codogno");
    assert_eq!(v["anagrafica"]["nome"], "Nicolò");
    assert_eq!(
        v["anagrafica"]["indirizzo"], "Via Roma 1",
        "fields not sent are kept"
    );
}

#[test]
fn another_orders_token_is_denied_on_every_endpoint_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let lodi = new_tenant(&d, "ordine-lodi", "LO");
    let milano = new_tenant(&d, "ordine-milano", "MI");
    let (_, v) = d.api(
        &lodi,
        "POST",
        "/tenants/ordine-lodi/mailboxes",
        Some(member("Anna", "Neri", &cf(1))),
    );
    let anna = v["address"].as_str().unwrap().to_string();
    let (_, v) = d.api(
        &milano,
        "POST",
        "/tenants/ordine-milano/mailboxes",
        Some(member("Paolo", "Blu", &cf(2))),
    );
    let paolo = v["address"].as_str().unwrap().to_string();
    let base = "/tenants/ordine-lodi";
    let mb = format!("{base}/mailboxes/{anna}");
    let attempts: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("{base}/mailboxes"), None),
        (
            "POST",
            format!("{base}/mailboxes"),
            Some(member("X", "Y", &cf(3))),
        ),
        ("GET", mb.clone(), None),
        ("PATCH", mb.clone(), Some(json!({"comune": "Milano"}))),
        ("POST", format!("{mb}/password-reset"), None),
        (
            "POST",
            format!("{mb}/cancel"),
            Some(json!({"reason": "death"})),
        ),
        (
            "POST",
            format!("{mb}/transfer"),
            Some(json!({"to": "ordine-milano"})),
        ),
        ("POST", format!("{mb}/renew"), Some(json!({}))),
        (
            "POST",
            format!("{mb}/plan"),
            Some(json!({"plan": "avanzata"})),
        ),
        ("GET", format!("{mb}/downgrade-plan"), None),
        ("POST", format!("{base}/bulk"), None),
        ("GET", format!("{base}/export"), None),
        ("GET", format!("{base}/report"), None),
    ];
    for (method, path, body) in &attempts {
        let (s, v) = d.api(&milano, method, path, body.clone());
        assert_eq!(s, 403, "{method} {path}: {v}");
        assert_eq!(v["error"], "forbidden");
    }
    // National endpoints are the national admin's.
    for (method, path) in [
        ("GET", "/tenants"),
        ("POST", "/tenants"),
        ("GET", "/export"),
        ("POST", "/sweep"),
        ("GET", "/report"),
        // Not even its own token: a leaked one must not mint the next.
        ("POST", "/tenants/ordine-milano/token"),
    ] {
        let (s, _) = d.api(&milano, method, path, Some(json!({})));
        assert_eq!(s, 403, "{method} {path}");
    }
    // Through its own path, another order's mailbox does not exist.
    let (s, _) = d.api(
        &milano,
        "GET",
        &format!("/tenants/ordine-milano/mailboxes/{anna}"),
        None,
    );
    assert_eq!(s, 404);
    let (s, _) = d.api(
        &milano,
        "POST",
        &format!("/tenants/ordine-milano/mailboxes/{anna}/password-reset"),
        None,
    );
    assert_eq!(s, 404);
    // Nothing changed: Anna is still Lodi's, active, in Lodi's list only.
    let (_, v) = d.api(&lodi, "GET", "/tenants/ordine-lodi/mailboxes", None);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["state"], "active");
    let (_, v) = d.api(&milano, "GET", "/tenants/ordine-milano/mailboxes", None);
    assert_eq!(v[0]["address"], paolo.as_str());
    // A wrong token is 401; the national admin sees both.
    assert_eq!(
        d.api("nope", "GET", "/tenants/ordine-lodi/mailboxes", None)
            .0,
        401
    );
    // Refused before its body is read: no schema hints for a stranger.
    for (method, path) in [
        ("POST", "/mailboxes"),
        ("PUT", "/mailboxes/x@y.it/password"),
    ] {
        let (s, v) = d.api("nope", method, path, Some(json!({"wrong": 1})));
        assert_eq!(s, 401, "{method} {path}: {v}");
    }
    assert_eq!(d.api(&d.admin_token(), "GET", &mb, None).0, 200);
    let (s, v) = d.api(&d.admin_token(), "POST", "/sweep", None);
    assert_eq!((s, v), (200, json!({"actions": 0, "failed": []})));
    // Every denial is on the legal log.
    let (_, log) = d.api(&d.admin_token(), "GET", "/log/search", None);
    let denied = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["detail"]
                .as_str()
                .is_some_and(|x| x.starts_with("denied"))
        })
        .count();
    assert_eq!(denied, attempts.len() + 6 + 2);
    // The national admin replaces Lodi's token: the old one stops at once.
    let (s, v) = d.api(&d.admin_token(), "POST", "/tenants/ordine-lodi/token", None);
    assert_eq!(s, 200, "{v}");
    let fresh = v["token"].as_str().unwrap().to_string();
    assert_ne!(fresh, lodi);
    assert_eq!(
        d.api(&lodi, "GET", "/tenants/ordine-lodi/mailboxes", None)
            .0,
        401
    );
    assert_eq!(
        d.api(&fresh, "GET", "/tenants/ordine-lodi/mailboxes", None)
            .0,
        200
    );
    assert_eq!(
        d.api(&milano, "GET", "/tenants/ordine-milano/mailboxes", None)
            .0,
        200
    );
}

#[test]
fn bulk_load_names_line_and_field_and_applies_nothing_when_a_row_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let token = new_tenant(&d, "ordine-lodi", "LO");
    let good1 = cf(10);
    let good2 = cf(11);
    let good3 = cf(12);
    let csv = format!(
        "nome;cognome;codice_fiscale;indirizzo;comune;provincia;cap;email_riferimento;telefono;fax\n\
         Mario;Rossi;{good1};Via Roma 1;Lodi;LO;26900;mario@casa.test;;\n\
         Luca;Bianchi;RSSMRA85T10A562X;Via Po 2;Lodi;LO;26900;;;\n\
         Anna;;{good2};Via Adda 3;Lodi;LO;26900;;;\n\
         Paola;Verdi;{good1};Via Lodi 4;Lodi;LO;26900;;;\n\
         Carla;Gialli;{good3};Via Lodi 5;Lodi;XX;26900;;;\n"
    );
    let upload = |query: &str, body: &str| {
        pecd::admin::call_raw(
            d.admin,
            &token,
            "POST",
            &format!("/tenants/ordine-lodi/bulk{query}"),
            "text/csv",
            body,
        )
        .unwrap()
    };
    let bulk = |partial: bool| upload(&format!("?partial={partial}"), &csv);
    let (s, v) = bulk(false);
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["applied"], false);
    let rejected: Vec<(u64, String)> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["field"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        vec![
            (3, "codice_fiscale".to_string()),
            (4, "cognome".to_string()),
            (5, "codice_fiscale".to_string()),
            (6, "provincia".to_string()),
        ]
    );
    assert!(
        v["rejected"][2]["message"]
            .as_str()
            .unwrap()
            .contains("duplicate of line 2")
    );
    let (_, list) = d.api(&token, "GET", "/tenants/ordine-lodi/mailboxes", None);
    assert!(list.as_array().unwrap().is_empty(), "nothing half-applied");
    // With the explicit flag the valid rows go in, and the credentials
    // file lists them.
    let (s, v) = bulk(true);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["created"].as_array().unwrap().len(), 1);
    let creds = v["credentials_csv"].as_str().unwrap();
    // mario.rossi@ is the daemon's demo mailbox: the member is a homonym.
    assert!(
        creds.starts_with("indirizzo;password_temporanea\nmario.rossi.2@"),
        "{creds}"
    );
    // The roll loaded again gives nobody a second mailbox.
    let (_, v) = bulk(true);
    assert!(v["created"].as_array().is_none_or(|c| c.is_empty()), "{v}");
    let again = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["line"] == 2)
        .unwrap();
    assert_eq!(again["field"], "codice_fiscale");
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("already has the mailbox mario.rossi.2@"),
        "{again}"
    );
    // Lines are the file's: an address over two lines (quoted) and a
    // blank line come before the wrong row on line 5.
    let (s, v) = upload(
        "",
        &format!(
            "nome;cognome;codice_fiscale;indirizzo;comune;provincia;cap\n\
             Lia;Neri;{};\"Via Roma 1\nScala B\";Lodi;LO;26900\n\
             \n\
             Ugo;Blu;{};Via Po 2;Lodi;XX;26900\n",
            cf(13),
            cf(14)
        ),
    );
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["rejected"][0]["line"], 5, "{v}");
    // A bad header is one clear error.
    let (s, v) = upload("", "nome;cognome;colore\n");
    assert_eq!((s, v["field"].as_str()), (400, Some("header")), "{v}");
}

#[test]
fn exports_cancellation_rules_transfer_and_plans() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let lodi = new_tenant(&d, "ordine-lodi", "LO");
    new_tenant(&d, "ordine-milano", "MI");
    let mut made = Vec::new();
    for (i, (n, c)) in [
        ("Anna", "Neri"),
        ("Bruno", "Blu"),
        ("Carlo", "Verdi"),
        ("Dario", "Rosa"),
    ]
    .iter()
    .enumerate()
    {
        let (_, v) = d.api(
            &lodi,
            "POST",
            "/tenants/ordine-lodi/mailboxes",
            Some(member(n, c, &cf(20 + i as u32))),
        );
        made.push(v["address"].as_str().unwrap().to_string());
    }
    let path = |a: &str, what: &str| format!("/tenants/ordine-lodi/mailboxes/{a}/{what}");
    // Cancellation on request needs another PEC address as digital domicile.
    let (s, v) = d.api(
        &lodi,
        "POST",
        &path(&made[0], "cancel"),
        Some(json!({"reason": "request"})),
    );
    assert_eq!((s, v["field"].as_str()), (400, Some("other_pec")), "{v}");
    let (s, v) = d.api(
        &lodi,
        "POST",
        &path(&made[0], "cancel"),
        Some(json!({"reason": "request", "other_pec": "anna@altro-pec.test"})),
    );
    assert_eq!((s, v["state"].as_str()), (200, Some("cancelled")), "{v}");
    let (_, v) = d.api(
        &lodi,
        "POST",
        &path(&made[1], "cancel"),
        Some(json!({"reason": "death"})),
    );
    assert_eq!(v["state"], "cancelled");
    // A cancelled mailbox is not renewed back to life, gets no plan, and
    // is not cancelled a second time.
    let (s, v) = d.api(&lodi, "POST", &path(&made[1], "renew"), Some(json!({})));
    assert_eq!((s, v["field"].as_str()), (400, Some("years")), "{v}");
    let (s, v) = d.api(
        &lodi,
        "POST",
        &path(&made[1], "plan"),
        Some(json!({"plan": "base", "addons": 0})),
    );
    assert_eq!(s, 409, "{v}");
    let (s, v) = d.api(
        &lodi,
        "POST",
        &path(&made[1], "cancel"),
        Some(json!({"reason": "struck-off"})),
    );
    assert_eq!(s, 409, "{v}");
    let (_, v) = d.api(
        &lodi,
        "POST",
        &path(&made[2], "cancel"),
        Some(json!({"reason": "struck-off"})),
    );
    assert_eq!(v["state"], "active", "kept until expiry");
    assert!(v["state_reason"].as_str().unwrap().contains("struck off"));
    // ... and ends there: not renewed past it.
    let (s, v) = d.api(&lodi, "POST", &path(&made[2], "renew"), Some(json!({})));
    assert_eq!((s, v["field"].as_str()), (400, Some("years")), "{v}");
    // Plans: add-ons within the plan's limit only.
    let (s, v) = d.api(
        &lodi,
        "POST",
        &path(&made[3], "plan"),
        Some(json!({"plan": "base", "addons": 6})),
    );
    assert_eq!((s, v["field"].as_str()), (400, Some("addons")), "{v}");
    let (_, v) = d.api(
        &lodi,
        "POST",
        &path(&made[3], "plan"),
        Some(json!({"plan": "avanzata", "addons": 3})),
    );
    assert_eq!(v["inbox_quota"], json!(10u64 << 30));
    let (_, p) = d.api(&lodi, "GET", &path(&made[3], "downgrade-plan"), None);
    assert_eq!(p["to_plan"], "base");
    assert_eq!(p["addons_dropped"], 3);
    assert_eq!(p["inbox_quota_after"], json!(1u64 << 30));
    // Renewal extends from the expiry date, by 1 to 10 years (not a
    // silently different number).
    for years in [0, 11] {
        let (s, v) = d.api(
            &lodi,
            "POST",
            &path(&made[3], "renew"),
            Some(json!({ "years": years })),
        );
        assert_eq!((s, v["field"].as_str()), (400, Some("years")), "{v}");
    }
    let before = p["expires"].as_str().unwrap().to_string();
    let (_, v) = d.api(
        &lodi,
        "POST",
        &path(&made[3], "renew"),
        Some(json!({"years": 2})),
    );
    let after = v["expires"].as_str().unwrap();
    assert_eq!(&after[4..], &before[4..]);
    assert_eq!(
        after[..4].parse::<i32>().unwrap(),
        before[..4].parse::<i32>().unwrap() + 2
    );
    // Transfer (the address typed in capitals): gone from Lodi's view, in
    // Milano's.
    let (s, v) = d.api(
        &lodi,
        "POST",
        &path(&made[3].to_uppercase(), "transfer"),
        Some(json!({"to": "ordine-milano"})),
    );
    assert_eq!(
        (s, v["tenant"].as_str()),
        (200, Some("ordine-milano")),
        "{v}"
    );
    let (s, _) = d.api(
        &lodi,
        "GET",
        &format!("/tenants/ordine-lodi/mailboxes/{}", made[3]),
        None,
    );
    assert_eq!(s, 404);
    let (_, list) = d.api(&lodi, "GET", "/tenants/ordine-lodi/mailboxes", None);
    assert!(!list.to_string().contains(made[3].as_str()), "{list}");
    // The plans report: avanzata 20 €/year + 3 add-on steps at 4 € (the
    // transferred mailbox now counts for Milano); cancelled ones not at all.
    let (_, rep) = d.api(&d.admin_token(), "GET", "/report", None);
    let avanzata = rep
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["plan"] == "avanzata")
        .unwrap();
    assert_eq!(
        (
            avanzata["mailboxes"].as_u64(),
            avanzata["addon_steps"].as_u64()
        ),
        (Some(1), Some(3))
    );
    assert_eq!(avanzata["eur_per_year"].as_f64(), Some(32.0));
    let (_, rep) = d.api(&lodi, "GET", "/tenants/ordine-lodi/report", None);
    let base = rep
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["plan"] == "base")
        .unwrap();
    assert_eq!(
        base["mailboxes"].as_u64(),
        Some(2),
        "the order's own box and the struck-off member (two cancelled): {rep}"
    );
    // The registry feed: per order (CSV) and national (JSON lines).
    let (s, csv) = d.api(&lodi, "GET", "/tenants/ordine-lodi/export", None);
    assert_eq!(s, 200);
    let csv = csv.as_str().unwrap();
    assert!(csv.starts_with("codice_fiscale;pec;ordine;stato\n"));
    assert_eq!(csv.lines().count(), 1 + 3, "{csv}");
    assert!(csv.contains(&format!("{};{};ordine-lodi;cancelled", cf(20), made[0])));
    let (_, all) = d.api(&d.admin_token(), "GET", "/export?format=json", None);
    let rows: Vec<Value> = all.as_str().map_or_else(
        || vec![all.clone()],
        |t| {
            t.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        },
    );
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter()
            .any(|r| r["ordine"] == "ordine-milano" && r["pec"] == made[3].as_str())
    );
    // The OpenAPI document is served.
    let (s, v) = d.api("", "GET", "/openapi.json", None);
    assert_eq!(s, 200);
    assert!(v["openapi"].as_str().unwrap().starts_with("3."));
}

#[test]
fn a_transferred_member_is_reached_through_the_new_orders_secretariat() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let order = |id: &str, provincia: &str, secretariat: &str| {
        let (s, v) = d.api(
            &d.admin_token(),
            "POST",
            "/tenants",
            Some(
                json!({"id": id, "name": id, "domain": DOMAIN, "provincia": provincia,
                "secretariat_email": secretariat}),
            ),
        );
        assert_eq!(s, 201, "{v}");
        v["token"].as_str().unwrap().to_string()
    };
    let lodi = order("ordine-lodi", "LO", "segreteria@lodi.test");
    order("ordine-milano", "MI", "segreteria@milano.test");
    let mut m = member("Pia", "Rosa", &cf(40));
    m["reference_email"] = json!("");
    let (s, v) = d.api(
        &lodi,
        "POST",
        "/tenants/ordine-lodi/mailboxes",
        Some(m.clone()),
    );
    assert_eq!(s, 201, "{v}");
    let addr = v["address"].as_str().unwrap().to_string();
    let (_, v) = d.api(
        &lodi,
        "GET",
        &format!("/tenants/ordine-lodi/mailboxes/{addr}"),
        None,
    );
    assert_eq!(
        v["anagrafica"]["reference_email"], "segreteria@lodi.test",
        "{v}"
    );
    let (s, v) = d.api(
        &lodi,
        "POST",
        &format!("/tenants/ordine-lodi/mailboxes/{addr}/transfer"),
        Some(json!({"to": "ordine-milano"})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["anagrafica"]["reference_email"], "segreteria@milano.test",
        "{v}"
    );
    // Pia joins Lodi again with a new mailbox: it cannot follow her first
    // one to Milano (one mailbox per professional and order), nor go to
    // the order it is in.
    let (s, v) = d.api(&lodi, "POST", "/tenants/ordine-lodi/mailboxes", Some(m));
    assert_eq!(s, 201, "{v}");
    let second = v["address"].as_str().unwrap().to_string();
    for (to, why) in [
        ("ordine-milano", "already has the mailbox"),
        ("ordine-lodi", "already this order's"),
    ] {
        let (s, v) = d.api(
            &lodi,
            "POST",
            &format!("/tenants/ordine-lodi/mailboxes/{second}/transfer"),
            Some(json!({ "to": to })),
        );
        assert_eq!((s, v["field"].as_str()), (400, Some("to")), "{v}");
        assert!(v["message"].as_str().unwrap().contains(why), "{v}");
    }
    // The order's own mailbox is not one of its members: not reachable
    // through the member routes (the national administrator manages it).
    let own = format!("ordine.lodi@{DOMAIN}");
    for (method, op) in [
        ("GET", ""),
        ("POST", "/password-reset"),
        ("POST", "/transfer"),
    ] {
        let body = (op == "/transfer").then(|| json!({"to": "ordine-milano"}));
        let (s, v) = d.api(
            &lodi,
            method,
            &format!("/tenants/ordine-lodi/mailboxes/{own}{op}"),
            body,
        );
        assert_eq!(s, 404, "{method} {op}: {v}");
    }
}

#[test]
fn the_openapi_document_covers_every_route() {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("docs/openapi.json")).unwrap(),
    )
    .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut routes = 0;
    for f in std::fs::read_dir(common::root().join("src/admin")).unwrap() {
        let src = std::fs::read_to_string(f.unwrap().path()).unwrap();
        for piece in src.split(".route(").skip(1) {
            let piece = piece.trim_start().trim_start_matches('"');
            let path = &piece[..piece.find('"').unwrap()];
            assert!(
                paths.contains_key(path),
                "{path} is not in docs/openapi.json"
            );
            routes += 1;
        }
    }
    assert!(routes >= 20);
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn a_holder_completes_the_first_access_and_serves_itself() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let (s, v) = d.api(
        &d.admin_token(),
        "POST",
        "/tenants",
        Some(json!({"id": "ordine-lodi", "name": "Ordine", "domain": DOMAIN, "provincia": "LO", "activation": "first-access"})),
    );
    assert_eq!(s, 201, "{v}");
    let order = v["token"].as_str().unwrap().to_string();
    let (_, v) = d.api(
        &order,
        "POST",
        "/tenants/ordine-lodi/mailboxes",
        Some(member("Elena", "Ferri", &cf(40))),
    );
    assert_eq!(v["state"], "pending-activation");
    let (addr, otp) = (
        v["address"].as_str().unwrap().to_string(),
        v["password"].as_str().unwrap().to_string(),
    );
    // Pending: the holder can log in here but cannot send mail yet.
    let (s, me) = d.api(&basic(&addr, &otp), "GET", "/me", None);
    assert_eq!(
        (s, me["anagrafica"]["codice_fiscale"].as_str()),
        (200, Some(cf(40).as_str()))
    );
    assert!(
        d.submit(&addr, &otp, &addr, &[&addr], b"Subject: x\r\n\r\nx\r\n")
            .is_err()
    );
    assert_eq!(
        d.api(&basic(&addr, "wrong-password"), "GET", "/me", None).0,
        401
    );
    // Until the first access is done, the mailbox is used only through it.
    let pending = basic(&addr, &otp);
    for (path, body) in [
        ("/me/requests", json!({"kind": "addon", "steps": 1})),
        ("/me/password", json!({"new_password": "altra-password"})),
        (
            "/me/reference-email",
            json!({"reference_email": "x@casa.test"}),
        ),
    ] {
        assert_eq!(d.api(&pending, "POST", path, Some(body)).0, 409, "{path}");
    }
    // First access: the data confirmed, the contract accepted, a password
    // other than the one-time one (the order's secretariat knows that).
    let first = |confirm: bool, accept: bool, pw: &str| {
        d.api(
            &pending,
            "POST",
            "/me/first-access",
            Some(json!({"confirm_data": confirm, "accept_contract": accept, "new_password": pw})),
        )
    };
    for (confirm, accept, pw, field) in [
        (true, false, "una-nuova-password", "accept_contract"),
        (false, true, "una-nuova-password", "confirm_data"),
        (true, true, otp.as_str(), "new_password"),
    ] {
        let (s, v) = first(confirm, accept, pw);
        assert_eq!((s, v["field"].as_str()), (400, Some(field)), "{v}");
    }
    let (s, v) = first(true, true, "una-nuova-password");
    assert_eq!((s, v["state"].as_str()), (200, Some("active")), "{v}");
    assert_eq!(
        d.api(&basic(&addr, &otp), "GET", "/me", None).0,
        401,
        "the one-time password is gone"
    );
    let me = basic(&addr, "una-nuova-password");
    assert_eq!(
        d.api(
            &me,
            "POST",
            "/me/first-access",
            Some(
                json!({"confirm_data": true, "accept_contract": true, "new_password": "x2345678"})
            )
        )
        .0,
        409
    );
    // Recovery e-mail and password changes.
    let (s, v) = d.api(
        &me,
        "POST",
        "/me/reference-email",
        Some(json!({"reference_email": "elena@casa.test"})),
    );
    assert_eq!(
        (s, v["anagrafica"]["reference_email"].as_str()),
        (200, Some("elena@casa.test"))
    );
    assert_eq!(
        d.api(
            &me,
            "POST",
            "/me/reference-email",
            Some(json!({"reference_email": "nope"}))
        )
        .0,
        400
    );
    assert_eq!(
        d.api(
            &me,
            "POST",
            "/me/password",
            Some(json!({"new_password": "corta"}))
        )
        .0,
        400
    );
    assert_eq!(
        d.api(
            &me,
            "POST",
            "/me/password",
            Some(json!({"new_password": "ancora-una-nuova"}))
        )
        .0,
        200
    );
    let me = basic(&addr, "ancora-una-nuova");
    // Requests for the order: add-ons within the plan, the Avanzata upgrade.
    assert_eq!(
        d.api(
            &me,
            "POST",
            "/me/requests",
            Some(json!({"kind": "addon", "steps": 9}))
        )
        .0,
        400
    );
    // A count that would overflow is refused the same way.
    assert_eq!(
        d.api(
            &me,
            "POST",
            "/me/requests",
            Some(json!({"kind": "addon", "steps": u32::MAX}))
        )
        .0,
        400
    );
    assert_eq!(
        d.api(
            &me,
            "POST",
            "/me/requests",
            Some(json!({"kind": "addon", "steps": 2}))
        )
        .0,
        201
    );
    assert_eq!(
        d.api(
            &me,
            "POST",
            "/me/requests",
            Some(json!({"kind": "upgrade", "plan": "avanzata"}))
        )
        .0,
        201
    );
    // One open request per mailbox: the upgrade took the add-ons' place.
    let (_, reqs) = d.api(&order, "GET", "/tenants/ordine-lodi/requests", None);
    assert_eq!(reqs.as_array().unwrap().len(), 1, "{reqs}");
    assert_eq!(
        reqs[0]["request"],
        json!({"kind": "upgrade", "plan": "avanzata"})
    );
    let other = new_tenant(&d, "ordine-milano", "MI");
    assert_eq!(
        d.api(&other, "GET", "/tenants/ordine-lodi/requests", None)
            .0,
        403
    );
    // Fulfilled by the order, it leaves the list.
    let (s, v) = d.api(
        &order,
        "POST",
        &format!("/tenants/ordine-lodi/mailboxes/{addr}/plan"),
        Some(json!({"plan": "avanzata"})),
    );
    assert_eq!(s, 200, "{v}");
    let (_, reqs) = d.api(&order, "GET", "/tenants/ordine-lodi/requests", None);
    assert_eq!(reqs, json!([]));
    // Now active, the holder can send.
    d.submit(&addr, "ancora-una-nuova", &addr, &[&addr], format!("From: {addr}\r\nTo: {addr}\r\nSubject: prima\r\nMessage-ID: <prima@x.test>\r\n\r\nciao\r\n").as_bytes())
        .unwrap();
    // Password guessing over the API is throttled as on the panel: after
    // five failures even the right password waits (the address typed in
    // capitals is the same mailbox).
    for _ in 0..5 {
        let guess = basic(&addr.to_uppercase(), "indovina");
        assert_eq!(d.api(&guess, "GET", "/me", None).0, 401);
    }
    assert_eq!(d.api(&me, "GET", "/me", None).0, 429);
    // One client guessing across many mailboxes is stopped as well: after
    // thirty failures from this address, a mailbox never tried is refused
    // before its password is even looked at.
    let stranger = |n: usize| basic(&format!("nessuno{n}@pec.provider-a.test"), "indovina");
    // (This client failed a few times earlier in the test too.)
    let refused = (0..30)
        .find(|&n| match d.api(&stranger(n), "GET", "/me", None).0 {
            401 => false,
            429 => true,
            s => panic!("guess {n}: {s}"),
        })
        .expect("the client is stopped");
    assert!(
        refused >= 20,
        "a user is stopped after five, a client after thirty: {refused}"
    );
}

#[test]
fn the_cli_drives_the_api_and_names_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let run = |args: &[&str]| {
        let out = common::pecd()
            .arg("admin")
            .arg("--config")
            .arg(&d.cfg)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "call",
        "post",
        "/tenants",
        "--body",
        &json!({"id": "ordine-lodi", "name": "Ordine", "domain": DOMAIN, "provincia": "LO"})
            .to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"token\""));
    let csv = dir.path().join("iscritti.csv");
    std::fs::write(
        &csv,
        format!(
            "nome,cognome,codice_fiscale,indirizzo,comune,provincia,cap\n\
             Sara,Galli,{},Via Roma 1,Lodi,LO,26900\n\
             Ugo,Mori,XXXXXX00X00X000X,Via Roma 2,Lodi,LO,269\n",
            cf(60)
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["bulk", "--tenant", "ordine-lodi", csv.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("iscritti.csv:3: codice_fiscale:"), "{err}");
    assert!(err.contains("nothing applied"), "{err}");
    // A Latin-1 export is named by its line; a roll of a few megabytes
    // reaches the check (not a 413 from the API's body limit).
    let latin1 = dir.path().join("latin1.csv");
    std::fs::write(
        &latin1,
        b"nome,cognome,codice_fiscale,indirizzo,comune,provincia,cap\nNicol\xf2,Bi,X,V,L,LO,1\n",
    )
    .unwrap();
    let (code, _, err) = run(&["bulk", "--tenant", "ordine-lodi", latin1.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("latin1.csv:2: not UTF-8"), "{err}");
    let big = dir.path().join("grande.csv");
    std::fs::write(
        &big,
        format!(
            "nome,cognome,codice_fiscale,indirizzo,comune,provincia,cap\nSara,Galli,{},{},Lodi,LO,269\n",
            cf(61),
            "Via ".repeat(800_000)
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["bulk", "--tenant", "ordine-lodi", big.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("grande.csv:2: cap:"), "{err}");
    let creds = dir.path().join("credenziali.csv");
    let (code, out, err) = run(&[
        "bulk",
        "--tenant",
        "ordine-lodi",
        csv.to_str().unwrap(),
        "--partial",
        "--credentials",
        creds.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 mailboxes created"));
    assert!(
        std::fs::read_to_string(&creds)
            .unwrap()
            .contains("sara.galli@")
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&creds).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "one-time passwords: owner only");
    }
    let (code, out, _) = run(&["export", "--tenant", "ordine-lodi"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!(
            "codice_fiscale;pec;ordine;stato\n{};sara.galli@{DOMAIN};ordine-lodi;active\n",
            cf(60)
        )
    );
    let out = common::pecd()
        .args([
            "mailbox",
            "downgrade-plan",
            &format!("sara.galli@{DOMAIN}"),
            "--config",
        ])
        .arg(&d.cfg)
        .output()
        .unwrap();
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (plan["from_plan"].as_str(), plan["at_expiry"].as_str()),
        (Some("base"), Some("downgrade"))
    );
    let (code, _, err) = run(&["call", "GET", "/tenants/nessuno/mailboxes/x@y.it"]);
    assert_eq!(code, 1, "{err}");
    // The pure helpers need no daemon.
    let out = common::pecd()
        .args([
            "mailbox",
            "derive-address",
            "--nome",
            "Nicolò",
            "--cognome",
            "D'Amico",
            "--domain",
            DOMAIN,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("nicolo.damico@{DOMAIN}")
    );
    let out = common::pecd()
        .args(["cf", "check", "RSSMRA85T10A562X"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the code's characters give 'S'"));
    let out = common::pecd()
        .args(["cf", "check", "rssmra85t10a562s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("born 10/12/85, M, municipality A562"));
}

#[test]
fn a_reset_link_goes_to_the_reference_address_and_works_once() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, captured) = capture_smtp();
    let extra = format!(
        "[notify]\nsmarthost = \"127.0.0.1:{sink}\"\npanel_url = \"https://pec.ordini.test/\"\n"
    );
    let d = Daemon::start(Spec {
        extra: &extra,
        ..Spec::new('a', dir.path(), free_port(), vec![])
    });
    let order = new_tenant(&d, "ordine-lodi", "LO");
    let (_, v) = d.api(
        &order,
        "POST",
        "/tenants/ordine-lodi/mailboxes",
        Some(member("Rita", "Neri", &cf(70))),
    );
    let addr = v["address"].as_str().unwrap().to_string();
    let path = format!("/tenants/ordine-lodi/mailboxes/{addr}/password-reset");
    assert_eq!(
        d.api(&order, "POST", &path, Some(json!({"via": "fax"}))).0,
        400
    );
    // Each link asked for: its mail (quoted-printable: soft breaks and =3D
    // undone) and its token.
    let link = |n: usize| {
        let (s, v) = d.api(&order, "POST", &path, Some(json!({"via": "link"})));
        assert_eq!(
            (s, v["sent_to"].as_str()),
            (202, Some("segreteria@ordine.test")),
            "{v}"
        );
        wait_for("the reset mail", 20, || captured.lock().unwrap().len() > n);
        let mail = captured.lock().unwrap()[n]
            .1
            .replace("=\r\n", "")
            .replace("=3D", "=");
        let token: String = mail
            .split("token=")
            .nth(1)
            .unwrap()
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect();
        assert_eq!(token.len(), 64, "{mail}");
        (mail, token)
    };
    // Only the newest link works.
    let (_, first) = link(0);
    let (mail, token) = link(1);
    let (s, v) = d.api(
        "",
        "POST",
        "/me/reset",
        Some(json!({"token": first, "new_password": "password-vecchio-link"})),
    );
    assert_eq!((s, v["field"].as_str()), (400, Some("token")), "{v}");
    // Where holders reach the panel, not the admin listener's address.
    assert!(
        mail.contains(&format!("https://pec.ordini.test/me/reset?token={token}")),
        "{mail}"
    );
    // The link opens a form; the token sets the password once.
    let (s, page) = d.api("", "GET", &format!("/me/reset?token={token}"), None);
    assert_eq!(s, 200);
    assert!(page.as_str().unwrap().contains("name=\"new_password\""));
    let (s, _) = d.api(
        "",
        "POST",
        "/me/reset",
        Some(json!({"token": token, "new_password": "password-da-link"})),
    );
    assert_eq!(s, 200);
    let (s, v) = d.api(
        "",
        "POST",
        "/me/reset",
        Some(json!({"token": token, "new_password": "ancora-una-volta"})),
    );
    assert_eq!((s, v["field"].as_str()), (400, Some("token")));
    // The same from the link's own form: a page that says so in Italian.
    let form = format!("token={token}&new_password=ancora-una-volta");
    let mut http = std::net::TcpStream::connect(d.admin).unwrap();
    use std::io::{Read, Write};
    write!(
        http,
        "POST /me/reset HTTP/1.1\r\nHost: pecd\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut answer = String::new();
    http.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("già stato usato"), "{answer}");
    assert_eq!(
        d.api(&basic(&addr, "password-da-link"), "GET", "/me", None)
            .0,
        200
    );
    // A link sent to the old reference address dies when it changes.
    let (_, stale) = link(2);
    let (s, v) = d.api(
        &order,
        "PATCH",
        &format!("/tenants/ordine-lodi/mailboxes/{addr}"),
        Some(json!({"reference_email": "rita@casa.test"})),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = d.api(
        "",
        "POST",
        "/me/reset",
        Some(json!({"token": stale, "new_password": "presa-da-altri"})),
    );
    assert_eq!((s, v["field"].as_str()), (400, Some("token")), "{v}");
}

/// Without a smarthost a reset link cannot be mailed: refused, and
/// nothing says it was sent (no record, no live token).
#[test]
fn a_reset_link_that_cannot_be_mailed_is_refused_and_not_recorded() {
    // A link asked for Rita, a new member of a new order on `d`: the answer.
    let ask = |d: &Daemon| {
        let order = new_tenant(d, "ordine-lodi", "LO");
        let (_, v) = d.api(
            &order,
            "POST",
            "/tenants/ordine-lodi/mailboxes",
            Some(member("Rita", "Neri", &cf(71))),
        );
        let path = format!(
            "/tenants/ordine-lodi/mailboxes/{}/password-reset",
            v["address"].as_str().unwrap()
        );
        d.api(&order, "POST", &path, Some(json!({"via": "link"})))
    };
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let (s, v) = ask(&d);
    assert_eq!(s, 409, "{v}");
    let (_, log) = d.api(&d.admin_token(), "GET", "/log/search", None);
    assert!(!log.to_string().contains("reset link sent"), "{log}");
    // Nor without `notify.panel_url`: the link would name the admin
    // listener's own (loopback, plain HTTP) address.
    drop(d);
    let (sink, captured) = capture_smtp();
    let extra = format!("[notify]\nsmarthost = \"127.0.0.1:{sink}\"\n");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Spec {
        extra: &extra,
        ..Spec::new('a', dir.path(), free_port(), vec![])
    });
    let (s, v) = ask(&d);
    assert_eq!(s, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("panel_url"), "{v}");
    assert!(captured.lock().unwrap().is_empty());
}
