//! The order's panel (`/ordine`): login (password + optional TOTP),
//! dashboard, mailbox search, detail and operations, creation with the
//! address suggested live, bulk load with a validation report before
//! anything is applied, exports, anomaly reports.
//!
//! Owns: the pages and their forms. An order's session reaches only its
//! own mailboxes: every lookup goes through `tenants::member`, which
//! answers "not found" for another order's address (the attempt is
//! logged). Must not touch: the store directly.

use super::session::{BulkPending, Who};
use super::{
    Errors, Fields, LoginOutcome, Nav, Posted, St, Web, bar, blocking, client_ip, csrf_input,
    date_it, download, field, human, internal, italian, italian_field, login_flow, login_page_for,
    not_found, page, state_it, time_it,
};
use crate::accounts::{Account, AccountState, Holder};
use crate::tenants::{self, Cancellation, NewMember, TenantError};
use axum::Router;
use axum::extract::{
    ConnectInfo, FromRequest, FromRequestParts, Multipart, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

const PAGE_SIZE: usize = 25;
use crate::tenants::BULK_MAX;

/// A logged-in order operator.
struct Op {
    sid: String,
    tenant: String,
    csrf: String,
    /// The identity written to the legal log.
    actor: String,
}

impl Op {
    fn nav(&self) -> Nav<'_> {
        Nav::Order {
            tenant: &self.tenant,
            csrf: &self.csrf,
        }
    }
}

fn operator(w: &Web, h: &HeaderMap, peer: &SocketAddr) -> Result<Op, Response> {
    let to_login = || Redirect::to("/ordine/login").into_response();
    let (sid, s) = w.session(h).ok_or_else(to_login)?;
    let Who::Order { tenant, stamp } = s.who else {
        return Err(to_login());
    };
    // The panel password set anew since this session's login (by the
    // national administrator, after a theft say): the session ends.
    if blocking(|| tenants::panel_session_stamp(&w.app.store, &tenant)).as_ref() != Some(&stamp) {
        w.sessions.end(&sid);
        return Err(to_login());
    }
    Ok(Op {
        actor: format!("order:{tenant} (panel, {})", client_ip(peer)),
        sid,
        tenant,
        csrf: s.csrf,
    })
}

/// A page of the panel: an order's session, or a redirect to the login.
impl FromRequestParts<Arc<Web>> for Op {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, w: &Arc<Web>) -> Result<Op, Response> {
        operator(
            w,
            &parts.headers,
            &super::peer_of(w, &parts.extensions, &parts.headers),
        )
    }
}

/// A form posted to the panel: its CSRF token checked, then as [`Op`].
struct OpForm(Op, Fields);

impl FromRequest<Arc<Web>> for OpForm {
    type Rejection = Response;

    async fn from_request(req: Request, w: &Arc<Web>) -> Result<OpForm, Response> {
        let p = super::Posted::from_request(req, w).await?;
        Ok(OpForm(operator(w, &p.headers, &p.peer)?, p.fields))
    }
}

// --------------------------------------------------------------------------
// Login

fn login_form(csrf: &str, user: &str, errors: &Errors) -> Markup {
    html! {
        @if let Some(e) = errors.get("_") { p.alert role="alert" { (e) } }
        form method="post" action="/ordine/login" {
            (csrf_input(csrf))
            (field("ordine", "Identificativo dell'ordine", "text", user, errors, true, false, "username"))
            (field("password", "Password", "password", "", errors, true, false, "current-password"))
            (field("codice", "Codice dell'app di autenticazione (se attivato)", "text", "", errors, false, false, "one-time-code"))
            button type="submit" { "Accedi" }
        }
    }
}

async fn login_page(State(w): St, h: HeaderMap) -> Response {
    login_page_for(
        &w,
        &h,
        TITLE,
        |who| matches!(who, Who::Order { .. }).then_some("/ordine"),
        |csrf| login_form(csrf, "", &Errors::default()),
    )
}

const TITLE: &str = "Accesso dell'ordine";

async fn login(State(w): St, p: Posted) -> Response {
    let user = p.fields.get("ordine").trim().to_string();
    let now = w.app.clock.now();
    login_flow(
        &w,
        &p,
        "order",
        &user,
        TITLE,
        |ip| {
            let checked = blocking(|| {
                tenants::check_login(
                    &w.app.store,
                    &user,
                    p.fields.get("password"),
                    Some(p.fields.get("codice")),
                    now,
                )
            });
            let (actor, what) = match &checked {
                Ok(_) => (format!("order:{user} (panel, {ip})"), "panel login".into()),
                Err(tenants::LoginFailure::CodeNeeded) => {
                    return LoginOutcome::Stopped(Errors::one(
                        "codice",
                        "Inserire il codice a 6 cifre dell'app di autenticazione.",
                    ));
                }
                Err(tenants::LoginFailure::Wrong) => (
                    format!("web ({ip})"),
                    format!("panel login failed for order {user:?}"),
                ),
            };
            let _ = blocking(|| tenants::log_action(&w.app.store, now, &actor, None, &what));
            match checked {
                Ok(stamp) => LoginOutcome::In {
                    who: Who::Order {
                        tenant: user.clone(),
                        stamp,
                    },
                    to: "/ordine",
                },
                Err(_) => LoginOutcome::Refused(Errors::one("_", "Credenziali non valide.")),
            }
        },
        |csrf, errors| login_form(csrf, &user, errors),
    )
}

async fn logout(State(w): St, h: HeaderMap, body: String) -> Response {
    w.logout(&h, &Fields::parse(&body), "/ordine/login")
}

// --------------------------------------------------------------------------
// Dashboard

async fn dashboard(State(w): St, op: Op) -> Response {
    let now = w.app.clock.now();
    let today = crate::clock::LegalTime::new(now).date();
    let data = blocking(|| {
        let members = tenants::members(&w.app.store, &op.tenant, None)?;
        let requests = tenants::requests(&w.app.store, &op.tenant)?;
        let filter = crate::audit::Filter {
            since: Some(now - chrono::Duration::days(30)),
            ..Default::default()
        };
        // `order:<id>` (API) or `order:<id> (panel, …)`: exactly this
        // order, not one whose id merely starts the same way.
        let (api, panel) = (
            format!("order:{}", op.tenant),
            format!("order:{} (", op.tenant),
        );
        let mut recent: Vec<_> = crate::audit::search(&w.app.store, &filter)
            .map_err(TenantError::from)?
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| {
                r.sender
                    .as_deref()
                    .is_some_and(|s| s == api || s.starts_with(&panel))
            })
            .collect();
        recent.reverse();
        recent.truncate(10);
        let usages: Vec<_> = members.iter().map(|a| w.app.inbox_usage(a)).collect();
        Ok::<_, TenantError>((members, requests, recent, usages))
    });
    let (members, requests, recent, usages) = match data {
        Ok(x) => x,
        Err(_) => return internal(),
    };
    let mut by_state: Vec<(&str, usize)> = Vec::new();
    let mut by_plan: Vec<(String, usize)> = Vec::new();
    for a in &members {
        let s = state_it(a.state);
        match by_state.iter_mut().find(|(k, _)| *k == s) {
            Some(x) => x.1 += 1,
            None => by_state.push((s, 1)),
        }
        let p = w.app.plan_of(a).map(|p| p.name).unwrap_or_default();
        match by_plan.iter_mut().find(|(k, _)| *k == p) {
            Some(x) => x.1 += 1,
            None => by_plan.push((p, 1)),
        }
    }
    let expiring: Vec<&Account> = members
        .iter()
        .filter(|a| {
            a.state != AccountState::Cancelled
                && a.expires
                    .is_some_and(|e| e >= today && (e - today).num_days() <= 90)
        })
        .collect();
    let over: Vec<(&Account, u64)> = members
        .iter()
        .zip(&usages)
        .filter_map(|(a, u)| {
            let (used, quota) = (*u)?;
            let pct = used.saturating_mul(100).checked_div(quota)?;
            (pct >= 70).then_some((a, pct))
        })
        .collect();
    let pending: Vec<&Account> = members
        .iter()
        .filter(|a| a.state == AccountState::PendingActivation)
        .collect();
    page(
        "Cruscotto",
        op.nav(),
        html! {
            div.grid {
                section.card aria-labelledby="h-stati" {
                    h2 #h-stati { "Caselle per stato" }
                    table { tbody {
                        @for (s, n) in &by_state { tr { td { (s) } td { (n) } } }
                        tr { th { "Totale" } th { (members.len()) } }
                    } }
                }
                section.card aria-labelledby="h-piani" {
                    h2 #h-piani { "Caselle per piano" }
                    table { tbody { @for (p, n) in &by_plan { tr { td { (p) } td { (n) } } } } }
                }
            }
            section aria-labelledby="h-scad" {
                h2 #h-scad { "In scadenza nei prossimi 90 giorni (" (expiring.len()) ")" }
                (account_list(&expiring, |a| a.expires.map(date_it).unwrap_or_default()))
            }
            section aria-labelledby="h-quota" {
                h2 #h-quota { "Oltre il 70% dello spazio (" (over.len()) ")" }
                @if over.is_empty() { p.muted { "Nessuna." } } @else {
                    div.table { table {
                        thead { tr { th { "Casella" } th { "Occupazione" } th { "Soglia" } } }
                        tbody { @for (a, pct) in &over { tr {
                            td { a href=(mailbox_url(&a.address)) { (a.address) } }
                            td { (pct) "%" }
                            td { @if *pct >= 90 { "oltre il 90%" } @else { "oltre il 70%" } }
                        } } }
                    } }
                }
            }
            section aria-labelledby="h-pend" {
                h2 #h-pend { "Primi accessi in attesa (" (pending.len()) ")" }
                (account_list(&pending, |a| a.state_since.map(time_it).map(|t| format!("dal {t}")).unwrap_or_default()))
            }
            section aria-labelledby="h-req" {
                h2 #h-req { "Richieste dei titolari (" (requests.len()) ")" }
                @if requests.is_empty() { p.muted { "Nessuna." } } @else {
                    ul { @for r in &requests { li {
                        (time_it(r.time)) " — " a href=(mailbox_url(&r.address)) { (r.address) } ": "
                        @match &r.request {
                            tenants::Request::Addon { steps } => { (steps) " estensioni di spazio" }
                            tenants::Request::Upgrade { plan } => { "passaggio al piano " (plan) }
                        }
                    } } }
                }
            }
            section aria-labelledby="h-rec" {
                h2 #h-rec { "Azioni recenti" }
                @if recent.is_empty() { p.muted { "Nessuna negli ultimi 30 giorni." } } @else {
                    ul { @for r in &recent { li {
                        (time_it(r.time)) " — " (r.detail.clone().unwrap_or_default())
                        @if let Some(a) = r.recipients.first() { " (" (a) ")" }
                    } } }
                }
            }
        },
    )
}

fn mailbox_url(address: &str) -> String {
    format!("/ordine/caselle/{}", crate::admin::path_segment(address))
}

fn account_list(list: &[&Account], extra: impl Fn(&Account) -> String) -> Markup {
    html! {
        @if list.is_empty() { p.muted { "Nessuna." } } @else {
            ul { @for a in list { li {
                a href=(mailbox_url(&a.address)) { (a.address) }
                " — " (a.holder.cognome) " " (a.holder.nome) " — " (extra(a))
            } } }
        }
    }
}

// --------------------------------------------------------------------------
// Mailbox list and search

async fn list(State(w): St, op: Op, Query(q): Query<HashMap<String, String>>) -> Response {
    let text = q.get("q").map(|s| s.trim().to_string()).unwrap_or_default();
    let page_no: usize = q
        .get("pagina")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let found = blocking(|| {
        tenants::members(
            &w.app.store,
            &op.tenant,
            Some(&text).filter(|t| !t.is_empty()).map(|t| t.as_str()),
        )
    });
    let mut found = match found {
        Ok(f) => f,
        Err(_) => return internal(),
    };
    found.sort_by(|a, b| {
        (
            a.holder.cognome.to_lowercase(),
            a.holder.nome.to_lowercase(),
            &a.address,
        )
            .cmp(&(
                b.holder.cognome.to_lowercase(),
                b.holder.nome.to_lowercase(),
                &b.address,
            ))
    });
    let pages = found.len().div_ceil(PAGE_SIZE).max(1);
    let page_no = page_no.min(pages);
    let shown = &found[(page_no - 1) * PAGE_SIZE..(page_no * PAGE_SIZE).min(found.len())];
    let link = |p: usize| {
        format!(
            "/ordine/caselle?q={}&pagina={p}",
            crate::admin::path_segment(&text)
        )
    };
    page(
        "Caselle",
        op.nav(),
        html! {
            form role="search" method="get" action="/ordine/caselle" {
                div.field {
                    label for="q" { "Cerca per nome, codice fiscale o indirizzo" }
                    input #q type="search" name="q" value=(text);
                }
                button type="submit" { "Cerca" }
            }
            p { (found.len()) " caselle" @if !text.is_empty() { " per «" (text) "»" } "." }
            div.table { table {
                thead { tr { th { "Indirizzo" } th { "Titolare" } th { "Codice fiscale" } th { "Stato" } th { "Piano" } th { "Scadenza" } } }
                tbody { @for a in shown { tr {
                    td { a href=(mailbox_url(&a.address)) { (a.address) } }
                    td { (a.holder.cognome) " " (a.holder.nome) }
                    td { (a.holder.codice_fiscale) }
                    td { (state_it(a.state)) }
                    td { (w.app.plan_of(a).map(|p| p.name).unwrap_or_default()) }
                    td { (a.expires.map(date_it).unwrap_or_default()) }
                } } }
            } }
            nav.pager aria-label="Pagine" {
                @if page_no > 1 { a href=(link(page_no - 1)) rel="prev" { "« Precedente" } }
                span { "Pagina " (page_no) " di " (pages) }
                @if page_no < pages { a href=(link(page_no + 1)) rel="next" { "Successiva »" } }
            }
        },
    )
}

// --------------------------------------------------------------------------
// New mailbox

const HOLDER_FIELDS: [(&str, &str, bool); 10] = [
    ("nome", "Nome", true),
    ("cognome", "Cognome", true),
    ("codice_fiscale", "Codice fiscale", true),
    ("indirizzo", "Indirizzo di residenza", true),
    ("comune", "Comune", true),
    ("provincia", "Provincia (sigla)", true),
    ("cap", "CAP", true),
    ("reference_email", "E-mail di riferimento (non PEC)", false),
    ("telefono", "Telefono", false),
    ("fax", "Fax", false),
];

fn holder_value<'a>(hd: &'a Holder, name: &str) -> &'a str {
    match name {
        "nome" => &hd.nome,
        "cognome" => &hd.cognome,
        "codice_fiscale" => &hd.codice_fiscale,
        "indirizzo" => &hd.indirizzo,
        "comune" => &hd.comune,
        "provincia" => &hd.provincia,
        "cap" => &hd.cap,
        "reference_email" => &hd.reference_email,
        "telefono" => &hd.telefono,
        "fax" => &hd.fax,
        _ => "",
    }
}

fn holder_from(f: &Fields) -> Holder {
    Holder {
        nome: f.get("nome").into(),
        cognome: f.get("cognome").into(),
        codice_fiscale: f.get("codice_fiscale").into(),
        indirizzo: f.get("indirizzo").into(),
        comune: f.get("comune").into(),
        provincia: f.get("provincia").into(),
        cap: f.get("cap").into(),
        reference_email: f.get("reference_email").into(),
        telefono: f.get("telefono").into(),
        fax: f.get("fax").into(),
    }
}

fn new_form(w: &Web, op: &Op, f: &Fields, errors: &Errors, suggested: Option<&str>) -> Markup {
    let plans: Vec<String> = w.app.cfg().plans.iter().map(|p| p.name.clone()).collect();
    html! {
        @if let Some(e) = errors.get("_") { p.alert role="alert" { (e) } }
        form method="post" action="/ordine/caselle/nuova" data-suggest="/ordine/indirizzo" novalidate {
            (csrf_input(&op.csrf))
            @for (name, label, req) in HOLDER_FIELDS {
                (field(name, label, if name == "reference_email" { "email" } else { "text" },
                    f.get(name), errors, req, false, "off"))
            }
            (field("alias", "Alias per gli omonimi (facoltativo)", "text", f.get("alias"), errors, false, false, "off"))
            div.field {
                label for="f-plan" { "Piano" }
                select #f-plan name="plan" {
                    @for p in &plans { option value=(p) selected[f.get("plan") == p] { (p) } }
                }
                @if let Some(e) = errors.get("plan") { p.error role="alert" { (e) } }
            }
            p { "Indirizzo che verrà assegnato: " output #suggested for="f-nome f-cognome f-alias" {
                (suggested.unwrap_or("—")) } }
            button type="submit" name="azione" value="anteprima" class="secondary" { "Anteprima indirizzo" }
            " "
            button type="submit" name="azione" value="crea" { "Crea la casella" }
        }
    }
}

async fn new_page(State(w): St, op: Op) -> Response {
    page(
        "Nuova casella",
        op.nav(),
        new_form(&w, &op, &Fields(HashMap::new()), &Errors::default(), None),
    )
}

fn tenant(w: &Web, id: &str) -> Result<tenants::Tenant, Response> {
    match tenants::get(&w.app.store, id) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(not_found()),
        Err(_) => Err(internal()),
    }
}

async fn create(State(w): St, OpForm(op, f): OpForm) -> Response {
    let t = match tenant(&w, &op.tenant) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let holder = holder_from(&f);
    let alias = Some(f.get("alias").trim().to_string()).filter(|a| !a.is_empty());
    if f.get("azione") == "anteprima" {
        let (suggested, errors) = match blocking(|| {
            tenants::suggest_address(
                &w.app.store,
                &t,
                &holder.nome,
                &holder.cognome,
                &holder.codice_fiscale,
                alias.as_deref(),
            )
        }) {
            Ok(a) => (Some(a), Errors::default()),
            Err(e) => (None, Errors::from_tenant(&e)),
        };
        return page(
            "Nuova casella",
            op.nav(),
            new_form(&w, &op, &f, &errors, suggested.as_deref()),
        );
    }
    let m = NewMember {
        holder,
        alias,
        plan: Some(f.get("plan").to_string()).filter(|p| !p.is_empty()),
    };
    let now = w.app.clock.now();
    match blocking(|| tenants::create_member(&w.app.store, &w.app.cfg(), &t, &m, &op.actor, now)) {
        Ok(c) => page(
            "Casella creata",
            op.nav(),
            html! {
                p.notice role="status" { "La casella " strong { (c.address) } " è stata creata (" (state_it(c.state)) ")." }
                p { "Password temporanea, da consegnare al titolare (sarà cambiata al primo accesso):" }
                p.secret #password { (c.password) }
                p { a href=(mailbox_url(&c.address)) { "Apri la scheda della casella" } " · " a href="/ordine/caselle/nuova" { "Crea un'altra casella" } }
            },
        ),
        Err(e) => {
            let mut r = page(
                "Nuova casella",
                op.nav(),
                new_form(&w, &op, &f, &Errors::from_tenant(&e), None),
            );
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            r
        }
    }
}

/// The live suggestion (JSON for `pecd.js`).
async fn suggest(
    State(w): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let op = match operator(&w, &h, &peer) {
        Ok(o) => o,
        Err(_) => {
            return (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({"error": "sessione scaduta"})),
            )
                .into_response();
        }
    };
    let t = match tenant(&w, &op.tenant) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    match blocking(|| {
        tenants::suggest_address(
            &w.app.store,
            &t,
            get("nome"),
            get("cognome"),
            get("codice_fiscale"),
            Some(get("alias")),
        )
    }) {
        Ok(a) => Json(serde_json::json!({"address": a})).into_response(),
        Err(e) => Json(serde_json::json!({"error": italian(&e)})).into_response(),
    }
}

// --------------------------------------------------------------------------
// Mailbox detail and operations

fn member(w: &Web, op: &Op, address: &str) -> Result<Account, Response> {
    match blocking(|| tenants::member(&w.app.store, &op.tenant, address)) {
        Ok(a) => Ok(a),
        Err(TenantError::NotFound(_)) => {
            tenants::log_denied(
                &w.app.store,
                w.app.clock.now(),
                &op.actor,
                &format!("mailbox {address} through the panel"),
            );
            Err(not_found())
        }
        Err(_) => Err(internal()),
    }
}

/// What the detail page shows after an operation.
#[derive(Default)]
struct Outcome {
    notice: Option<Markup>,
    errors: Errors,
    /// Which form the errors belong to.
    form: &'static str,
}

async fn detail(State(w): St, op: Op, Path(address): Path<String>) -> Response {
    let acc = match member(&w, &op, &address) {
        Ok(a) => a,
        Err(r) => return r,
    };
    detail_page(&w, &op, &acc, Outcome::default(), None)
}

fn detail_page(w: &Web, op: &Op, acc: &Account, out: Outcome, edited: Option<&Fields>) -> Response {
    let now = w.app.clock.now();
    let (history, plan) = blocking(|| {
        // Only this mailbox's records are kept while the log is read (not
        // a year of everyone's, filtered afterwards).
        let filter = crate::audit::Filter {
            since: Some(now - chrono::Duration::days(400)),
            party: Some(acc.address.clone()),
            ..Default::default()
        };
        let records: Vec<_> = crate::audit::search(&w.app.store, &filter)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        (records, w.app.downgrade_plan(acc).ok())
    });
    use crate::audit::Event;
    let states: Vec<_> = history
        .iter()
        .filter(|r| r.event == Event::Mailbox)
        .rev()
        .take(15)
        .collect();
    let receipts: Vec<_> = history
        .iter()
        .filter(|r| {
            matches!(
                r.event,
                Event::Acceptance
                    | Event::NonAcceptance
                    | Event::Delivered
                    | Event::DeliveryError
                    | Event::ReceiptSent
                    | Event::ReceiptReceived
                    | Event::TimeoutNotice
            )
        })
        .rev()
        .take(10)
        .collect();
    let p = w.app.plan_of(acc);
    let plan_names: Vec<String> = w.app.cfg().plans.iter().map(|p| p.name.clone()).collect();
    let today = crate::clock::LegalTime::new(now).date();
    let days_left = acc.expires.map(|e| (e - today).num_days());
    let url = mailbox_url(&acc.address);
    let err_for = |form: &str| {
        if out.form == form {
            Some(&out.errors)
        } else {
            None
        }
    };
    let empty = Errors::default();
    let anag_errors = err_for("anagrafica").unwrap_or(&empty);
    let value = |name: &str| -> String {
        edited.map_or_else(
            || holder_value(&acc.holder, name).to_string(),
            |f| f.get(name).to_string(),
        )
    };
    let general = |form: &str| {
        err_for(form)
            .and_then(|e| {
                e.get("_")
                    .or_else(|| e.0.values().next().map(|s| s.as_str()))
            })
            .map(str::to_string)
    };
    page(
        &format!("Casella {}", acc.address),
        op.nav(),
        html! {
            @if let Some(n) = &out.notice { div.notice role="status" { (n) } }
            div.grid {
                section.card aria-labelledby="h-stato" {
                    h2 #h-stato { "Stato e scadenza" }
                    dl.kv {
                        dt { "Stato" } dd #stato { (state_it(acc.state)) }
                        @if !acc.state_reason.is_empty() { dt { "Motivo" } dd { (acc.state_reason) } }
                        dt { "Creata il" } dd { (time_it(acc.created)) }
                        dt { "Scadenza" } dd { (acc.expires.map(date_it).unwrap_or_else(|| "nessuna".into()))
                            @if let Some(d) = days_left { @if d >= 0 { " (tra " (d) " giorni)" } } }
                    }
                }
                section.card aria-labelledby="h-piano" {
                    h2 #h-piano { "Piano e spazio" }
                    dl.kv {
                        dt { "Piano" } dd { (p.as_ref().map(|p| p.name.clone()).unwrap_or_default()) }
                        dt { "Estensioni" } dd { (acc.addons) }
                    }
                    @if let Some(u) = &plan {
                        (bar("Casella", u.inbox_used, u.inbox_quota_now))
                        (bar("Archivio", u.archive_used, u.archive_quota_now))
                    }
                }
            }
            @if let (Some(d), Some(plan)) = (days_left, &plan) { @if d >= 0 && plan.at_expiry != "none" {
                section aria-labelledby="h-down" {
                    h2 #h-down { "Alla scadenza" }
                    @if plan.at_expiry == "downgrade" && plan.from_plan == plan.to_plan && plan.addons_dropped == 0 {
                        p #downgrade { "Senza rinnovo la casella resta sul piano " (plan.to_plan) ", con lo stesso spazio." }
                    } @else if plan.at_expiry == "downgrade" {
                        p #downgrade { "Senza rinnovo la casella passa dal piano " (plan.from_plan) " al piano " (plan.to_plan)
                            ": spazio casella da " (human(plan.inbox_quota_now)) " a " (human(plan.inbox_quota_after))
                            ", archivio da " (human(plan.archive_quota_now)) " a " (human(plan.archive_quota_after)) "." }
                        @if plan.inbox_over_by > 0 { p.alert { "Lo spazio occupato supera il nuovo limite di " (human(plan.inbox_over_by)) ": i nuovi messaggi saranno rifiutati finché il titolare non libera spazio." } }
                    } @else {
                        p #downgrade { "Senza rinnovo la casella resta in sola ricezione per il periodo di tolleranza, poi viene sospesa." }
                    }
                }
            } }
            section aria-labelledby="h-anag" {
                h2 #h-anag { "Anagrafica" }
                @if let Some(e) = anag_errors.get("_") { p.alert role="alert" { (e) } }
                form method="post" action=(format!("{url}/anagrafica")) {
                    (csrf_input(&op.csrf))
                    @for (name, label, req) in HOLDER_FIELDS {
                        @let fixed = matches!(name, "nome" | "cognome" | "codice_fiscale");
                        (field(name, label, if name == "reference_email" { "email" } else { "text" },
                            &value(name), anag_errors, req && !fixed, fixed, "off"))
                    }
                    button type="submit" { "Salva l'anagrafica" }
                }
            }
            section aria-labelledby="h-ops" {
                h2 #h-ops { "Operazioni" }
                div.grid {
                    form.card method="post" action=(format!("{url}/reset")) {
                        h3 { "Password" }
                        (csrf_input(&op.csrf))
                        div.field {
                            label for="f-via" { "Modalità" }
                            select #f-via name="via" {
                                option value="password" { "Nuova password temporanea (mostrata qui)" }
                                option value="link" { "Link di reimpostazione all'e-mail di riferimento" }
                            }
                        }
                        @if let Some(e) = general("reset") { p.error role="alert" { (e) } }
                        button type="submit" { "Reimposta la password" }
                    }
                    form.card method="post" action=(format!("{url}/piano")) {
                        h3 { "Piano" }
                        (csrf_input(&op.csrf))
                        div.field {
                            label for="f-plan" { "Piano" }
                            select #f-plan name="plan" {
                                @for name in &plan_names {
                                    option value=(name) selected[p.as_ref().is_some_and(|p| &p.name == name)] { (name) }
                                }
                            }
                        }
                        (field("addons", "Estensioni di spazio", "number", &acc.addons.to_string(), err_for("plan").unwrap_or(&empty), true, false, "off"))
                        @if let Some(e) = err_for("plan").and_then(|e| e.get("plan")) { p.error role="alert" { (e) } }
                        button type="submit" { "Cambia il piano" }
                    }
                    form.card method="post" action=(format!("{url}/trasferisci")) {
                        h3 { "Trasferimento" }
                        (csrf_input(&op.csrf))
                        (field("to", "Identificativo dell'ordine di destinazione", "text", "", err_for("transfer").unwrap_or(&empty), true, false, "off"))
                        button type="submit" { "Trasferisci" }
                    }
                    @if acc.state != AccountState::Cancelled {
                        form.card method="post" action=(format!("{url}/cessa")) {
                            h3 { "Cessazione" }
                            (csrf_input(&op.csrf))
                            div.field {
                                label for="f-reason" { "Motivo" }
                                select #f-reason name="reason" {
                                    option value="struck-off" { "Cancellazione dall'albo (attiva fino alla scadenza)" }
                                    option value="death" { "Decesso (immediata)" }
                                    option value="request" { "Richiesta del titolare (immediata, con altro domicilio digitale)" }
                                }
                            }
                            (field("other_pec", "Altro indirizzo PEC (solo su richiesta del titolare)", "email", "", err_for("cancel").unwrap_or(&empty), false, false, "off"))
                            @if let Some(e) = err_for("cancel").and_then(|e| e.get("_")) { p.error role="alert" { (e) } }
                            button.danger type="submit" { "Cessa la casella" }
                        }
                    }
                    @if acc.state == AccountState::Suspended && acc.state_reason.starts_with(crate::lifecycle::NO_FIRST_ACCESS) {
                        form.card method="post" action=(format!("{url}/sblocca")) {
                            h3 { "Sblocco" }
                            (csrf_input(&op.csrf))
                            p { "La casella è bloccata per mancato primo accesso." }
                            button type="submit" { "Sblocca" }
                        }
                    }
                    form.card method="post" action=(format!("{url}/segnala")) {
                        h3 { "Segnala un'anomalia" }
                        (csrf_input(&op.csrf))
                        div.field.invalid[err_for("anomaly").is_some()] {
                            label for="f-note" { "Cosa non va (es. casella non di un nostro iscritto)" }
                            textarea #f-note name="note" rows="3" required {}
                            @if let Some(e) = err_for("anomaly").and_then(|e| e.get("note")) { p.error role="alert" { (e) } }
                        }
                        button.secondary type="submit" { "Invia la segnalazione" }
                    }
                }
            }
            section aria-labelledby="h-hist" {
                h2 #h-hist { "Storico" }
                @if states.is_empty() { p.muted { "Nessun evento." } } @else {
                    ul { @for r in &states { li { (time_it(r.time)) " — " (r.detail.clone().unwrap_or_default())
                        @if let Some(s) = &r.sender { " (" (actor_it(s)) ")" } } } }
                }
            }
            section aria-labelledby="h-ric" {
                h2 #h-ric { "Ultime ricevute" }
                @if receipts.is_empty() { p.muted { "Nessuna." } } @else {
                    // When and what, not the member's correspondence: the
                    // order administers the mailbox, and subjects and
                    // correspondents are not its to read (data
                    // minimisation; many members are bound to secrecy).
                    div.table { table {
                        thead { tr { th { "Data" } th { "Evento" } th { "Direzione" } } }
                        tbody { @for r in &receipts { tr {
                            td { (time_it(r.time)) } td { (event_it(r.event)) }
                            td { @if r.sender.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(&acc.address)) { "inviata dalla casella" } @else { "per la casella" } }
                        } } }
                    } }
                }
            }
        },
    )
}

/// Who made a change, as the log names them, without the client address
/// an operator worked from (`order:lodi (panel, 192.0.2.1)` is shown as
/// `order:lodi`): after a transfer the new order reads the history too.
fn actor_it(actor: &str) -> &str {
    actor.split_once(" (").map_or(actor, |(who, _)| who)
}

fn event_it(e: crate::audit::Event) -> &'static str {
    use crate::audit::Event as E;
    match e {
        E::Acceptance => "accettazione",
        E::NonAcceptance => "non accettazione",
        E::Delivered => "consegna",
        E::DeliveryError => "mancata consegna",
        E::ReceiptSent => "ricevuta inviata",
        E::ReceiptReceived => "ricevuta ricevuta",
        E::TimeoutNotice => "avviso di mancata consegna per superamento tempi",
        _ => "altro",
    }
}

/// A posted operation on one mailbox: guards, then `op` (which returns the
/// outcome to show on the detail page).
async fn operate(
    w: Arc<Web>,
    op: Op,
    f: Fields,
    address: String,
    form: &'static str,
    run: impl FnOnce(&Web, &Op, &Fields) -> Result<Markup, TenantError>,
) -> Response {
    if let Err(r) = member(&w, &op, &address) {
        return r;
    }
    let result = blocking(|| run(&w, &op, &f));
    // The account as it is now (a transfer moves it out of reach).
    let acc = blocking(|| tenants::member(&w.app.store, &op.tenant, &address));
    match (result, acc) {
        (Ok(notice), Ok(acc)) => detail_page(
            &w,
            &op,
            &acc,
            Outcome {
                notice: Some(notice),
                ..Default::default()
            },
            None,
        ),
        (Ok(notice), Err(_)) => page(
            "Operazione eseguita",
            op.nav(),
            html! { div.notice role="status" { (notice) } p { a href="/ordine/caselle" { "Torna alle caselle" } } },
        ),
        (Err(e), Ok(acc)) => {
            let mut errors = Errors::from_tenant(&e);
            if form == "reset" || e.field().is_none() {
                errors = Errors::default();
                errors.add("_", italian(&e));
            }
            let edited = (form == "anagrafica").then_some(&f);
            let mut r = detail_page(
                &w,
                &op,
                &acc,
                Outcome {
                    notice: None,
                    errors,
                    form,
                },
                edited,
            );
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            r
        }
        (Err(_), Err(_)) => not_found(),
    }
}

async fn edit(State(w): St, Path(a): Path<String>, OpForm(op, f): OpForm) -> Response {
    let addr = a.clone();
    operate(w, op, f, a, "anagrafica", move |w, op, f| {
        let mut changes = serde_json::Map::new();
        for (name, _, _) in HOLDER_FIELDS {
            if !matches!(name, "nome" | "cognome" | "codice_fiscale") {
                changes.insert(name.to_string(), f.get(name).trim().into());
            }
        }
        tenants::edit_member(
            &w.app.store,
            &op.tenant,
            &addr,
            &changes,
            &op.actor,
            w.app.clock.now(),
        )?;
        Ok(html! { "Anagrafica aggiornata." })
    })
    .await
}

async fn reset(State(w): St, Path(a): Path<String>, OpForm(op, f): OpForm) -> Response {
    let addr = a.clone();
    operate(w, op, f, a, "reset", move |w, op, f| {
        let now = w.app.clock.now();
        if f.get("via") == "link" {
            let acc = w.app.reset_by_link(&op.tenant, &addr, &op.actor)?;
            return Ok(
                html! { "Link di reimpostazione inviato a " (acc.holder.reference_email) "." },
            );
        }
        let pw = tenants::reset_password(&w.app.store, &op.tenant, &addr, &op.actor, now)?;
        Ok(html! { "Nuova password temporanea di " (addr) ": " span.secret #new-password { (pw) } })
    })
    .await
}

async fn set_plan(State(w): St, Path(a): Path<String>, OpForm(op, f): OpForm) -> Response {
    let addr = a.clone();
    operate(w, op, f, a, "plan", move |w, op, f| {
        let addons = f
            .get("addons")
            .trim()
            .parse::<u32>()
            .map_err(|_| TenantError::Invalid {
                field: "addons".into(),
                message: "a whole number".into(),
            })?;
        let acc = tenants::set_plan(
            &w.app.store,
            &w.app.cfg(),
            &op.tenant,
            &addr,
            f.get("plan"),
            addons,
            &op.actor,
            w.app.clock.now(),
        )?;
        Ok(html! { "Piano aggiornato: " (acc.plan) " con " (acc.addons) " estensioni." })
    })
    .await
}

async fn transfer(State(w): St, Path(a): Path<String>, OpForm(op, f): OpForm) -> Response {
    let addr = a.clone();
    operate(w, op, f, a, "transfer", move |w, op, f| {
        let to = f.get("to").trim();
        if to.is_empty() {
            return Err(TenantError::Invalid {
                field: "to".into(),
                message: "missing".into(),
            });
        }
        if to == op.tenant {
            return Err(TenantError::Invalid {
                field: "to".into(),
                message: "same order".into(),
            });
        }
        tenants::transfer(
            &w.app.store,
            &op.tenant,
            &addr,
            to,
            &op.actor,
            w.app.clock.now(),
        )?;
        Ok(html! { "La casella " (addr) " è stata trasferita all'ordine " (to) "." })
    })
    .await
}

async fn cancel(State(w): St, Path(a): Path<String>, OpForm(op, f): OpForm) -> Response {
    let addr = a.clone();
    operate(w, op, f, a, "cancel", move |w, op, f| {
        let why = match f.get("reason") {
            "death" => Cancellation::Death,
            "request" => Cancellation::Request {
                other_pec: Some(f.get("other_pec").to_string()).filter(|s| !s.trim().is_empty()),
            },
            "struck-off" => Cancellation::StruckOff,
            other => {
                return Err(TenantError::Invalid {
                    field: "reason".into(),
                    message: format!("{other:?}"),
                });
            }
        };
        let acc = tenants::cancel(
            &w.app.store,
            &op.tenant,
            &addr,
            &why,
            &op.actor,
            w.app.clock.now(),
        )?;
        Ok(html! { "Cessazione registrata: casella " (state_it(acc.state)) "." })
    })
    .await
}

async fn unblock(State(w): St, Path(a): Path<String>, OpForm(op, f): OpForm) -> Response {
    let addr = a.clone();
    operate(w, op, f, a, "unblock", move |w, op, _| {
        tenants::unblock(
            &w.app.store,
            &op.tenant,
            &addr,
            &op.actor,
            w.app.clock.now(),
        )?;
        Ok(html! { "Casella sbloccata: il titolare può completare il primo accesso." })
    })
    .await
}

async fn report(State(w): St, Path(a): Path<String>, OpForm(op, f): OpForm) -> Response {
    let addr = a.clone();
    operate(w, op, f, a, "anomaly", move |w, op, f| {
        let x = tenants::report_anomaly(
            &w.app.store,
            &op.tenant,
            &addr,
            f.get("note"),
            &op.actor,
            w.app.clock.now(),
        )?;
        Ok(html! { "Segnalazione " (x.id) " inviata all'amministrazione nazionale." })
    })
    .await
}

// --------------------------------------------------------------------------
// Bulk load

fn bulk_form(op: &Op) -> Markup {
    html! {
        form method="post" action="/ordine/carica" enctype="multipart/form-data" {
            (csrf_input(&op.csrf))
            div.field {
                label for="f-file" { "File CSV dell'anagrafica (separatore ; o ,)" }
                input #f-file type="file" name="file" accept=".csv,text/csv" required;
            }
            p.muted { "Colonne: " (tenants::CSV_COLUMNS.join(", ")) " (alias e piano facoltative). Nulla viene applicato prima della conferma." }
            button type="submit" { "Verifica il file" }
        }
    }
}

async fn bulk_page(op: Op) -> Response {
    page("Caricamento massivo", op.nav(), bulk_form(&op))
}

/// Upload: the validation report, row by row; nothing applied.
async fn bulk_upload(
    State(w): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    mut mp: Multipart,
) -> Response {
    // The operator's session before the body: a file of up to 32 MB is
    // read only for someone logged in (the CSRF token comes with it).
    let peer = super::forwarded_client(peer, &w.app.cfg().listen.trusted_proxies, &h);
    let op = match operator(&w, &h, &peer) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut bad = None;
    loop {
        match mp.next_field().await {
            Ok(Some(part)) => {
                let name = part.name().unwrap_or("").to_string();
                match part.bytes().await {
                    Ok(b) => match String::from_utf8(b.to_vec()) {
                        Ok(s) => {
                            fields.insert(name, s);
                        }
                        Err(_) => {
                            bad = Some(
                                "Il file non è in UTF-8: salvarlo come «CSV UTF-8» e riprovare.",
                            )
                        }
                    },
                    Err(_) => bad = Some("Caricamento interrotto: riprovare."),
                }
            }
            Ok(None) => break,
            Err(_) => {
                bad = Some("Caricamento non valido: riprovare.");
                break;
            }
        }
    }
    let f = Fields(fields);
    if let Err(r) = w.posted(&h, &f) {
        return r;
    }
    let csv = f.get("file").to_string();
    // Whatever this upload turns out to be, a report shown before it is
    // no longer the one to confirm.
    w.sessions.update(&op.sid, |s| s.bulk = None);
    if bad.is_some() || csv.trim().is_empty() {
        let msg = bad.unwrap_or("Il file è vuoto.");
        let mut r = page(
            "Caricamento massivo",
            op.nav(),
            html! { p.alert role="alert" { (msg) } (bulk_form(&op)) },
        );
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return r;
    }
    let t = match tenant(&w, &op.tenant) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let now = w.app.clock.now();
    let preview = match blocking(|| tenants::bulk_check(&w.app.store, &w.app.cfg(), &t, &csv, now))
    {
        Ok(p) => p,
        Err(e) => {
            let mut r = page(
                "Caricamento massivo",
                op.nav(),
                html! { p.alert role="alert" { (italian(&e)) } (bulk_form(&op)) },
            );
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            return r;
        }
    };
    let ok = preview.rejected.is_empty();
    let pending = std::sync::Arc::new(BulkPending::new(
        csv,
        preview.ok.iter().map(|r| r.address.clone()).collect(),
        !ok,
    ));
    let report_id = pending.id.clone();
    w.sessions.update(&op.sid, |s| s.bulk = Some(pending));
    page(
        "Verifica del caricamento",
        op.nav(),
        html! {
            @if ok {
                p.notice role="status" { "Tutte le " (preview.ok.len()) " righe sono valide. Confermare per creare le caselle." }
            } @else {
                p.alert role="alert" { (preview.rejected.len()) " righe con errori, " (preview.ok.len()) " valide. Correggere il file e ricaricarlo, oppure applicare solo le righe valide." }
                h2 { "Righe con errori" }
                div.table { table #rejected {
                    thead { tr { th { "Riga" } th { "Campo" } th { "Errore" } } }
                    tbody { @for e in &preview.rejected { tr { td { (e.line) } td { (e.field) } td { (italian_field(&e.field, &e.message)) } } } }
                } }
            }
            @if !preview.ok.is_empty() {
                h2 { "Righe valide" }
                div.table { table #accepted {
                    thead { tr { th { "Riga" } th { "Titolare" } th { "Codice fiscale" } th { "Indirizzo che verrà assegnato" } } }
                    tbody { @for r in &preview.ok { tr { td { (r.line) } td { (r.cognome) " " (r.nome) } td { (r.codice_fiscale) } td { (r.address) } } } }
                } }
                form method="post" action="/ordine/carica/conferma" {
                    (csrf_input(&op.csrf))
                    input type="hidden" name="anteprima" value=(report_id);
                    @if !ok { input type="hidden" name="partial" value="1"; }
                    button type="submit" { @if ok { "Conferma e crea le caselle" } @else { "Applica solo le righe valide" } }
                }
            }
            h2 { "Carica un altro file" }
            (bulk_form(&op))
        },
    )
}

async fn bulk_confirm(State(w): St, OpForm(op, f): OpForm) -> Response {
    let Some(pending) = w.sessions.get(&op.sid).and_then(|s| s.bulk) else {
        return page(
            "Caricamento massivo",
            op.nav(),
            html! { p.alert role="alert" { "Nessun file da confermare: caricarlo di nuovo." } (bulk_form(&op)) },
        );
    };
    // The report this form came from, not whatever was uploaded last (in
    // another tab, say).
    if f.get("anteprima") != pending.id {
        let mut r = page(
            "Caricamento massivo",
            op.nav(),
            html! { p.alert role="alert" { "Nel frattempo è stato caricato un altro file: confermare dalla sua pagina di verifica, o caricare di nuovo questo." } (bulk_form(&op)) },
        );
        *r.status_mut() = StatusCode::CONFLICT;
        return r;
    }
    let t = match tenant(&w, &op.tenant) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let now = w.app.clock.now();
    let report = match blocking(|| {
        tenants::bulk_load(
            &w.app.store,
            &w.app.cfg(),
            &t,
            &pending.csv,
            // Valid rows alone only where the report listed rejected ones.
            f.on("partial") && pending.rejected,
            Some(&pending.addresses),
            &op.actor,
            now,
        )
    }) {
        Ok(r) => r,
        Err(e) => {
            return page(
                "Caricamento massivo",
                op.nav(),
                html! { p.alert role="alert" { (italian(&e)) } (bulk_form(&op)) },
            );
        }
    };
    if !report.applied {
        // The store changed since the check (an address taken, a namesake
        // created): the operator sees the new report before anything.
        w.sessions.update(&op.sid, |s| s.bulk = None);
        let mut r = page(
            "Caricamento massivo",
            op.nav(),
            html! {
            p.alert role="alert" { "Il file non è più quello verificato (righe o indirizzi sono cambiati nel frattempo): ricaricarlo per vedere la nuova verifica." } (bulk_form(&op)) },
        );
        *r.status_mut() = StatusCode::CONFLICT;
        return r;
    }
    let credentials = tenants::credentials_csv(&report.created);
    w.sessions.update(&op.sid, |s| {
        s.bulk = None;
        s.credentials = Some(credentials.into());
    });
    page(
        "Caricamento completato",
        op.nav(),
        html! {
            p.notice role="status" { (report.created.len()) " caselle create." }
            p { a.button href="/ordine/carica/credenziali.csv" download { "Scarica il file delle credenziali" } }
            p.muted { "Il file contiene le password temporanee: conservarlo con cura. Resta scaricabile fino all'uscita dal pannello." }
            ul { @for c in &report.created { li { a href=(mailbox_url(&c.address)) { (c.address) } } } }
        },
    )
}

async fn bulk_credentials(State(w): St, op: Op) -> Response {
    let Some(c) = w.sessions.get(&op.sid).and_then(|s| s.credentials) else {
        return not_found();
    };
    let _ = blocking(|| {
        tenants::log_action(
            &w.app.store,
            w.app.clock.now(),
            &op.actor,
            None,
            "credentials file downloaded",
        )
    });
    download(
        "credenziali.csv",
        "text/csv; charset=utf-8",
        c.as_bytes().to_vec(),
    )
}

// --------------------------------------------------------------------------
// Exports

async fn exports(op: Op) -> Response {
    page(
        "Esportazioni",
        op.nav(),
        html! {
            ul {
                li { a href="/ordine/esporta/registro.csv" download { "Flusso per INI-PEC / ReGIndE (CSV)" } }
                li { a href="/ordine/esporta/caselle.csv" download { "Elenco delle caselle (CSV)" } }
            }
        },
    )
}

async fn export_feed(State(w): St, op: Op) -> Response {
    let mut out = Vec::new();
    match blocking(|| tenants::export(&w.app.store, Some(&op.tenant), false, &mut out)) {
        Ok(_) => download(
            &format!("registro-{}.csv", op.tenant),
            "text/csv; charset=utf-8",
            out,
        ),
        Err(_) => internal(),
    }
}

async fn export_list(State(w): St, op: Op) -> Response {
    let members = match blocking(|| tenants::members(&w.app.store, &op.tenant, None)) {
        Ok(m) => m,
        Err(_) => return internal(),
    };
    let mut wtr = csv::WriterBuilder::new()
        .delimiter(b';')
        .from_writer(Vec::new());
    let _ = wtr.write_record([
        "indirizzo",
        "cognome",
        "nome",
        "codice_fiscale",
        "stato",
        "piano",
        "estensioni",
        "scadenza",
        "email_riferimento",
    ]);
    for a in &members {
        let plan = w.app.plan_of(a).map(|p| p.name).unwrap_or_default();
        let _ = wtr.write_record(
            [
                a.address.as_str(),
                &a.holder.cognome,
                &a.holder.nome,
                &a.holder.codice_fiscale,
                state_it(a.state),
                &plan,
                &a.addons.to_string(),
                &a.expires.map(|d| d.to_string()).unwrap_or_default(),
                &a.holder.reference_email,
            ]
            .map(|v| spreadsheet_cell(v).into_owned()),
        );
    }
    match wtr.into_inner() {
        Ok(out) => download(
            &format!("caselle-{}.csv", op.tenant),
            "text/csv; charset=utf-8",
            out,
        ),
        Err(_) => internal(),
    }
}

/// A spreadsheet reads a cell that starts with `=`, `+`, `-` or `@` (or a
/// tab or CR) as a formula: a holder's own text (a reference e-mail, a
/// name) must not become one in the order's export (CSV injection), so
/// such a value gets a leading `'`.
fn spreadsheet_cell(s: &str) -> std::borrow::Cow<'_, str> {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}").into(),
        _ => s.into(),
    }
}

// --------------------------------------------------------------------------
// Security: the second factor

async fn security(State(w): St, op: Op) -> Response {
    security_page(&w, &op, None, &Errors::default())
}

fn security_page(w: &Web, op: &Op, notice: Option<&str>, errors: &Errors) -> Response {
    let on = blocking(|| tenants::has_totp(&w.app.store, &op.tenant)).unwrap_or(false);
    let enrolling = w.sessions.get(&op.sid).and_then(|s| s.totp_secret);
    page(
        "Sicurezza dell'accesso",
        op.nav(),
        html! {
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            p { "Secondo fattore (codice TOTP da app di autenticazione): " strong #totp-state { @if on { "attivo" } @else { "non attivo" } } }
            @if let Some(secret) = &enrolling {
                p { "Aggiungere all'app di autenticazione questa chiave (o l'URI), poi inserire il codice mostrato dall'app." }
                p.secret #totp-secret { (secret) }
                p.secret { (crate::totp::otpauth_uri("pecd", &op.tenant, secret)) }
                form method="post" action="/ordine/sicurezza/conferma" {
                    (csrf_input(&op.csrf))
                    (field("codice", "Codice a 6 cifre", "text", "", errors, true, false, "one-time-code"))
                    button type="submit" { "Attiva" }
                }
            } @else if on {
                form method="post" action="/ordine/sicurezza/disattiva" {
                    (csrf_input(&op.csrf))
                    (field("codice", "Codice attuale dell'app di autenticazione", "text", "", errors, true, false, "one-time-code"))
                    button.danger type="submit" { "Disattiva il secondo fattore" }
                }
            } @else {
                form method="post" action="/ordine/sicurezza/inizia" {
                    (csrf_input(&op.csrf))
                    button type="submit" { "Attiva il secondo fattore" }
                }
            }
        },
    )
}

async fn totp_start(State(w): St, OpForm(op, _): OpForm) -> Response {
    // Enrolment is for an order without a second factor; replacing one
    // goes through turning it off (which asks for a current code).
    if blocking(|| tenants::has_totp(&w.app.store, &op.tenant)).unwrap_or(true) {
        return security_page(&w, &op, None, &Errors::default());
    }
    let secret = crate::totp::new_secret();
    if secret.is_empty() {
        return internal();
    }
    w.sessions.update(&op.sid, |s| s.totp_secret = Some(secret));
    security_page(&w, &op, None, &Errors::default())
}

async fn totp_confirm(State(w): St, OpForm(op, f): OpForm) -> Response {
    let Some(secret) = w.sessions.get(&op.sid).and_then(|s| s.totp_secret) else {
        return security_page(&w, &op, None, &Errors::default());
    };
    let now = w.app.clock.now();
    match blocking(|| {
        tenants::set_totp(
            &w.app.store,
            &op.tenant,
            tenants::TotpChange::Enable {
                secret: &secret,
                code: f.get("codice"),
            },
            &op.actor,
            now,
        )
    }) {
        Ok(()) => {
            w.sessions.update(&op.sid, |s| s.totp_secret = None);
            security_page(
                &w,
                &op,
                Some("Secondo fattore attivato: dal prossimo accesso serve il codice."),
                &Errors::default(),
            )
        }
        Err(e) => {
            let mut r = security_page(&w, &op, None, &Errors::from_tenant(&e));
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            r
        }
    }
}

async fn totp_disable(State(w): St, OpForm(op, f): OpForm) -> Response {
    let off = tenants::TotpChange::Disable {
        code: f.get("codice"),
    };
    match blocking(|| {
        tenants::set_totp(&w.app.store, &op.tenant, off, &op.actor, w.app.clock.now())
    }) {
        Ok(()) => security_page(
            &w,
            &op,
            Some("Secondo fattore disattivato."),
            &Errors::default(),
        ),
        Err(e @ TenantError::Invalid { .. }) => {
            let mut r = security_page(&w, &op, None, &Errors::from_tenant(&e));
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            r
        }
        Err(_) => internal(),
    }
}

pub(super) fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/ordine/login", get(login_page).post(login))
        .route("/ordine/logout", post(logout))
        .route("/ordine", get(dashboard))
        .route("/ordine/caselle", get(list))
        .route("/ordine/caselle/nuova", get(new_page).post(create))
        .route("/ordine/indirizzo", get(suggest))
        .route("/ordine/caselle/{a}", get(detail))
        .route("/ordine/caselle/{a}/anagrafica", post(edit))
        .route("/ordine/caselle/{a}/reset", post(reset))
        .route("/ordine/caselle/{a}/trasferisci", post(transfer))
        .route("/ordine/caselle/{a}/piano", post(set_plan))
        .route("/ordine/caselle/{a}/cessa", post(cancel))
        .route("/ordine/caselle/{a}/sblocca", post(unblock))
        .route("/ordine/caselle/{a}/segnala", post(report))
        .route(
            "/ordine/carica",
            get(bulk_page)
                .post(bulk_upload)
                // An order's whole roll (tens of thousands of rows) in one file.
                .layer(axum::extract::DefaultBodyLimit::max(BULK_MAX)),
        )
        .route("/ordine/carica/conferma", post(bulk_confirm))
        .route("/ordine/carica/credenziali.csv", get(bulk_credentials))
        .route("/ordine/esporta", get(exports))
        .route("/ordine/esporta/registro.csv", get(export_feed))
        .route("/ordine/esporta/caselle.csv", get(export_list))
        .route("/ordine/sicurezza", get(security))
        .route("/ordine/sicurezza/inizia", post(totp_start))
        .route("/ordine/sicurezza/conferma", post(totp_confirm))
        .route("/ordine/sicurezza/disattiva", post(totp_disable))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_cells_never_start_a_formula() {
        for (input, out) in [
            (
                "=HYPERLINK(\"http://x\")&\"@x.it\"",
                "'=HYPERLINK(\"http://x\")&\"@x.it\"",
            ),
            ("+39 06", "'+39 06"),
            ("-1", "'-1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("mario@x.it", "mario@x.it"),
            ("", ""),
        ] {
            assert_eq!(spreadsheet_cell(input), out);
        }
    }
}
