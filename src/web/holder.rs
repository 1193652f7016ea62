//! The holder's reserved area (`/casella`): login with the mailbox's own
//! credentials, the first-access flow (confirm the anagrafica, accept the
//! contract, set a password), password and reference e-mail changes, plan,
//! space, archive and expiry, requests for an add-on or another plan, and
//! the contract to download.
//!
//! Owns: these pages. Changes go through `tenants` (logged with the holder
//! as actor). Must not touch: other mailboxes; the order's operations.

use super::session::Who;
use super::{
    Errors, Fields, LoginOutcome, Nav, Posted, St, Web, bar, blocking, csrf_input, date_it,
    download, field, human, internal, italian, login_flow, login_page_for, page, state_it, time_it,
};
use crate::accounts::{self, Account, AccountState};
use crate::tenants::{self, TenantError};
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use std::sync::Arc;

struct Me {
    sid: String,
    csrf: String,
    acc: Account,
}

impl Me {
    fn nav(&self) -> Nav<'_> {
        Nav::Holder {
            address: &self.acc.address,
            csrf: &self.csrf,
        }
    }
}

fn usable(a: &Account) -> bool {
    !matches!(a.state, AccountState::Cancelled | AccountState::Suspended)
}

fn me(w: &Web, h: &HeaderMap) -> Result<Me, Response> {
    let to_login = || Redirect::to("/casella/login").into_response();
    let (sid, s) = w.session(h).ok_or_else(to_login)?;
    let Who::Holder {
        address,
        password_hash,
    } = s.who
    else {
        return Err(to_login());
    };
    match blocking(|| accounts::get(&w.app.store, &address)) {
        Ok(Some(acc)) if usable(&acc) && acc.password_hash == password_hash => Ok(Me {
            sid,
            csrf: s.csrf,
            acc,
        }),
        Ok(_) => {
            // Suspended, cancelled or its password changed elsewhere since
            // the login: the session ends.
            w.sessions.end(&sid);
            Err(to_login())
        }
        Err(_) => Err(internal()),
    }
}

/// A page of the holder's area: the holder's session, or the login.
impl FromRequestParts<Arc<Web>> for Me {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, w: &Arc<Web>) -> Result<Me, Response> {
        me(w, &parts.headers)
    }
}

/// A form posted in the holder's area: CSRF checked, then as [`Me`].
struct MeForm(Me, Fields);

impl FromRequest<Arc<Web>> for MeForm {
    type Rejection = Response;

    async fn from_request(req: Request, w: &Arc<Web>) -> Result<MeForm, Response> {
        let p = super::Posted::from_request(req, w).await?;
        Ok(MeForm(me(w, &p.headers)?, p.fields))
    }
}

fn login_form(csrf: &str, user: &str, errors: &Errors) -> Markup {
    html! {
        @if let Some(e) = errors.get("_") { p.alert role="alert" { (e) } }
        form method="post" action="/casella/login" {
            (csrf_input(csrf))
            (field("indirizzo", "Indirizzo PEC", "email", user, errors, true, false, "username"))
            (field("password", "Password", "password", "", errors, true, false, "current-password"))
            button type="submit" { "Accedi" }
        }
        p.muted { "Password dimenticata? L'ordine di appartenenza può inviare un link di reimpostazione all'e-mail di riferimento." }
    }
}

const TITLE: &str = "Area riservata del titolare";

async fn login_page(State(w): St, h: HeaderMap) -> Response {
    login_page_for(
        &w,
        &h,
        TITLE,
        |who| matches!(who, Who::Holder { .. }).then_some("/casella"),
        |csrf| login_form(csrf, "", &Errors::default()),
    )
}

async fn login(State(w): St, p: Posted) -> Response {
    let user = p.fields.get("indirizzo").trim().to_ascii_lowercase();
    login_flow(
        &w,
        &p,
        "holder",
        &user,
        TITLE,
        |_| {
            let acc = blocking(|| accounts::get(&w.app.store, &user))
                .ok()
                .flatten();
            // An unknown address costs a hash too (no timing hint).
            let ok = blocking(|| {
                let hash = acc
                    .as_ref()
                    .map_or(accounts::dummy_hash(), |a| a.password_hash.as_str());
                accounts::check_password(hash, p.fields.get("password"))
            });
            match acc {
                Some(a) if ok && usable(&a) => LoginOutcome::In {
                    to: if a.state == AccountState::PendingActivation {
                        "/casella/primo-accesso"
                    } else {
                        "/casella"
                    },
                    who: Who::Holder {
                        address: a.address,
                        password_hash: a.password_hash,
                    },
                },
                Some(_) if ok => LoginOutcome::Stopped(Errors::one(
                    "_",
                    "La casella è sospesa o cessata: rivolgersi al proprio ordine.",
                )),
                _ => LoginOutcome::Refused(Errors::one("_", "Credenziali non valide.")),
            }
        },
        |csrf, errors| login_form(csrf, &user, errors),
    )
}

async fn logout(State(w): St, h: HeaderMap, body: String) -> Response {
    w.logout(&h, &Fields::parse(&body), "/casella/login")
}

fn anagrafica(a: &Account) -> Markup {
    let hd = &a.holder;
    html! {
        dl.kv {
            dt { "Nome e cognome" } dd { (hd.nome) " " (hd.cognome) }
            dt { "Codice fiscale" } dd { (hd.codice_fiscale) }
            dt { "Residenza" } dd { (hd.indirizzo) ", " (hd.cap) " " (hd.comune) " (" (hd.provincia) ")" }
            dt { "E-mail di riferimento" } dd #reference-email { (hd.reference_email) }
            @if !hd.telefono.is_empty() { dt { "Telefono" } dd { (hd.telefono) } }
        }
    }
}

/// The service contract, as the holder accepts it and downloads it.
fn contract(w: &Web, a: &Account) -> String {
    let cfg = w.app.cfg();
    let plan = w.app.plan_of(a);
    let (pname, inbox, archive) = plan
        .as_ref()
        .map(|p| (p.name.clone(), p.inbox_quota(a.addons), p.archive.0))
        .unwrap_or_default();
    let hd = &a.holder;
    let accepted = match a.state {
        AccountState::PendingActivation => "da accettare al primo accesso".to_string(),
        _ => a
            .state_since
            .map(time_it)
            .map(|t| format!("stato attuale dal {t}"))
            .unwrap_or_default(),
    };
    format!(
        "CONTRATTO DI SERVIZIO DI POSTA ELETTRONICA CERTIFICATA\n\
         \n\
         Gestore: {provider}\n\
         Titolare: {nome} {cognome}, codice fiscale {cf}\n\
         Residenza: {ind}, {cap} {comune} ({prov})\n\
         Casella: {addr}\n\
         Ordine di appartenenza: {ordine}\n\
         Piano: {pname} (spazio casella {inbox}, archivio {archive}), estensioni: {addons}\n\
         Scadenza: {exp}\n\
         Accettazione: {accepted}\n\
         \n\
         1. Il servizio è erogato secondo il DPR 11 febbraio 2005 n. 68 e le regole tecniche\n\
            (DM 2 novembre 2005): ricevute di accettazione e di consegna firmate dal gestore,\n\
            log dei messaggi conservato per trenta mesi.\n\
         2. Il titolare custodisce le credenziali e ne è responsabile; la password si cambia\n\
            dall'area riservata.\n\
         3. Lo spazio della casella è quello del piano; oltre il limite i nuovi messaggi sono\n\
            rifiutati con avviso di mancata consegna. Al 70% e al 90% il titolare è avvisato.\n\
         4. Alla scadenza senza rinnovo si applicano le regole del piano (passaggio al piano base\n\
            oppure sola ricezione e poi sospensione), con preavviso a 90, 30 e 5 giorni.\n\
         5. L'ordine di appartenenza amministra la casella per conto del titolare (creazione,\n\
            rinnovo, cessazione, trasferimento).\n",
        provider = cfg.provider.name,
        nome = hd.nome,
        cognome = hd.cognome,
        cf = hd.codice_fiscale,
        ind = hd.indirizzo,
        cap = hd.cap,
        comune = hd.comune,
        prov = hd.provincia,
        addr = a.address,
        ordine = a.tenant,
        inbox = human(inbox),
        archive = human(archive),
        addons = a.addons,
        exp = a.expires.map(date_it).unwrap_or_else(|| "nessuna".into()),
    )
}

async fn overview(State(w): St, m: Me) -> Response {
    if let Some(r) = first_access_pending(&m) {
        return r;
    }
    overview_page(&w, &m, None, "", &Errors::default())
}

fn overview_page(w: &Web, m: &Me, notice: Option<&str>, form: &str, errors: &Errors) -> Response {
    let a = &m.acc;
    let usage = blocking(|| w.app.downgrade_plan(a).ok());
    let plan = w.app.plan_of(a);
    let others: Vec<String> = w
        .app
        .cfg()
        .plans
        .iter()
        .filter(|p| plan.as_ref().is_none_or(|x| x.name != p.name))
        .map(|p| p.name.clone())
        .collect();
    let empty = Errors::default();
    let e = |f: &str| if form == f { errors } else { &empty };
    page(
        "La mia casella",
        m.nav(),
        html! {
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            div.grid {
                section.card aria-labelledby="h-casella" {
                    h2 #h-casella { (a.address) }
                    dl.kv {
                        dt { "Stato" } dd { (state_it(a.state)) }
                        dt { "Piano" } dd #plan { (plan.as_ref().map(|p| p.name.clone()).unwrap_or_default()) }
                        dt { "Estensioni" } dd { (a.addons) }
                        dt { "Scadenza" } dd { (a.expires.map(date_it).unwrap_or_else(|| "nessuna".into())) }
                    }
                    @if let Some(u) = &usage {
                        (bar("Casella", u.inbox_used, u.inbox_quota_now))
                        (bar("Archivio", u.archive_used, u.archive_quota_now))
                    }
                    p { a href="/casella/contratto" download { "Scarica il contratto" } }
                }
                section.card aria-labelledby="h-anag" {
                    h2 #h-anag { "Anagrafica" }
                    (anagrafica(a))
                    p.muted { "Per correggere nome, cognome o codice fiscale rivolgersi al proprio ordine." }
                }
            }
            div.grid {
                form.card method="post" action="/casella/password" novalidate {
                    h2 { "Cambia la password" }
                    (csrf_input(&m.csrf))
                    (field("current_password", "Password attuale", "password", "", e("password"), true, false, "current-password"))
                    (field("new_password", "Nuova password (almeno 8 caratteri)", "password", "", e("password"), true, false, "new-password"))
                    (field("confirm_password", "Ripeti la nuova password", "password", "", e("password"), true, false, "new-password"))
                    button type="submit" { "Cambia la password" }
                }
                form.card method="post" action="/casella/email" novalidate {
                    h2 { "E-mail di recupero" }
                    (csrf_input(&m.csrf))
                    (field("reference_email", "E-mail di riferimento (non PEC)", "email", &a.holder.reference_email, e("email"), true, false, "email"))
                    button type="submit" { "Salva" }
                }
                form.card method="post" action="/casella/richiesta" novalidate {
                    h2 { "Più spazio o un altro piano" }
                    (csrf_input(&m.csrf))
                    div.field {
                        label for="f-kind" { "Richiesta" }
                        select #f-kind name="kind" {
                            option value="addon" { "Estensioni di spazio" }
                            @for p in &others { option value=(format!("plan:{p}")) { "Passaggio al piano " (p) } }
                        }
                    }
                    (field("steps", "Numero di estensioni (solo per lo spazio)", "number", "1", e("request"), false, false, "off"))
                    @if let Some(x) = e("request").get("_") { p.error role="alert" { (x) } }
                    button type="submit" { "Invia la richiesta all'ordine" }
                }
            }
        },
    )
}

/// A mailbox still waiting for its first access goes there first.
fn first_access_pending(m: &Me) -> Option<Response> {
    (m.acc.state == AccountState::PendingActivation)
        .then(|| Redirect::to("/casella/primo-accesso").into_response())
}

async fn change_password(State(w): St, MeForm(m, f): MeForm) -> Response {
    if let Some(r) = first_access_pending(&m) {
        return r;
    }
    let mut errors = Errors::default();
    if !blocking(|| accounts::check_password(&m.acc.password_hash, f.get("current_password"))) {
        errors.add("current_password", "La password attuale non è corretta.");
    } else if f.get("new_password") != f.get("confirm_password") {
        errors.add("confirm_password", "Le due password non coincidono.");
    } else {
        let now = w.app.clock.now();
        match blocking(|| {
            tenants::change_password(&w.app.store, &m.acc.address, f.get("new_password"), now)
        }) {
            Ok(acc) => {
                keep_session(&w, &m.sid, &acc);
                return overview_page(
                    &w,
                    &Me { acc, ..m },
                    Some("Password cambiata."),
                    "",
                    &Errors::default(),
                );
            }
            Err(e) => errors = Errors::from_tenant(&e),
        }
    }
    let mut r = overview_page(&w, &m, None, "password", &errors);
    *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    r
}

async fn change_email(State(w): St, MeForm(m, f): MeForm) -> Response {
    if let Some(r) = first_access_pending(&m) {
        return r;
    }
    let now = w.app.clock.now();
    match blocking(|| {
        tenants::change_reference_email(&w.app.store, &m.acc.address, f.get("reference_email"), now)
    }) {
        Ok(acc) => overview_page(
            &w,
            &Me { acc, ..m },
            Some("E-mail di riferimento aggiornata."),
            "",
            &Errors::default(),
        ),
        Err(e) => {
            let mut r = overview_page(&w, &m, None, "email", &Errors::from_tenant(&e));
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            r
        }
    }
}

async fn request(State(w): St, MeForm(m, f): MeForm) -> Response {
    if let Some(r) = first_access_pending(&m) {
        return r;
    }
    let req = match f.get("kind").strip_prefix("plan:") {
        Some(p) => tenants::Request::Upgrade {
            plan: p.to_string(),
        },
        None => match f.get("steps").trim().parse::<u32>() {
            Ok(steps) => tenants::Request::Addon { steps },
            Err(_) => {
                let mut e = Errors::default();
                e.add("steps", "Indicare un numero intero di estensioni.");
                let mut r = overview_page(&w, &m, None, "request", &e);
                *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                return r;
            }
        },
    };
    let now = w.app.clock.now();
    match blocking(|| tenants::file_request(&w.app.store, &w.app.cfg(), &m.acc, &req, now)) {
        Ok(_) => overview_page(
            &w,
            &m,
            Some("Richiesta registrata: l'ordine la esaminerà."),
            "",
            &Errors::default(),
        ),
        Err(e) => {
            let mut errors = Errors::default();
            errors.add(
                if e.field() == Some("steps") {
                    "steps"
                } else {
                    "_"
                },
                italian(&e),
            );
            let mut r = overview_page(&w, &m, None, "request", &errors);
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            r
        }
    }
}

async fn contract_download(State(w): St, m: Me) -> Response {
    let name = format!("contratto-{}.txt", m.acc.address.replace('@', "_at_"));
    download(
        &name,
        "text/plain; charset=utf-8",
        contract(&w, &m.acc).into_bytes(),
    )
}

fn first_access_page(w: &Web, m: &Me, errors: &Errors) -> Response {
    page(
        "Primo accesso",
        m.nav(),
        html! {
            p { "Per attivare la casella " strong { (m.acc.address) } " confermare i dati, accettare il contratto e scegliere una nuova password." }
            @if let Some(e) = errors.get("_") { p.alert role="alert" { (e) } }
            form method="post" action="/casella/primo-accesso" novalidate {
                (csrf_input(&m.csrf))
                h2 { "1. I tuoi dati" }
                (anagrafica(&m.acc))
                (checkbox("confirm_data", "Confermo che i dati sono corretti (per correzioni rivolgersi all'ordine)", errors))
                h2 { "2. Il contratto" }
                pre.secret tabindex="0" aria-label="Testo del contratto" { (contract(w, &m.acc)) }
                (checkbox("accept_contract", "Ho letto e accetto il contratto di servizio", errors))
                h2 { "3. La nuova password" }
                (field("new_password", "Nuova password (almeno 8 caratteri)", "password", "", errors, true, false, "new-password"))
                (field("confirm_password", "Ripeti la nuova password", "password", "", errors, true, false, "new-password"))
                button type="submit" { "Attiva la casella" }
            }
        },
    )
}

fn checkbox(name: &str, label: &str, errors: &Errors) -> Markup {
    let id = format!("f-{name}");
    html! {
        div.field.invalid[errors.get(name).is_some()] {
            input id=(id) type="checkbox" name=(name) value="1";
            " " label for=(id) { (label) }
            @if let Some(e) = errors.get(name) { p.error role="alert" { (e) } }
        }
    }
}

async fn first_access_form(State(w): St, m: Me) -> Response {
    if m.acc.state != AccountState::PendingActivation {
        return Redirect::to("/casella").into_response();
    }
    first_access_page(&w, &m, &Errors::default())
}

/// The holder changed the password in this session: it stays, under the
/// new hash (other sessions of the mailbox end at their next request).
fn keep_session(w: &Web, sid: &str, acc: &Account) {
    w.sessions.update(sid, |s| {
        s.who = Who::Holder {
            address: acc.address.clone(),
            password_hash: acc.password_hash.clone(),
        }
    });
}

async fn first_access(State(w): St, MeForm(m, f): MeForm) -> Response {
    let mut errors = Errors::default();
    if f.get("new_password") != f.get("confirm_password") {
        errors.add("confirm_password", "Le due password non coincidono.");
    } else {
        let now = w.app.clock.now();
        match blocking(|| {
            tenants::first_access(
                &w.app.store,
                &m.acc.address,
                f.on("confirm_data"),
                f.on("accept_contract"),
                f.get("new_password"),
                now,
            )
        }) {
            Ok(acc) => {
                keep_session(&w, &m.sid, &acc);
                return overview_page(
                    &w,
                    &Me { acc, ..m },
                    Some("Casella attivata. Benvenuto!"),
                    "",
                    &Errors::default(),
                );
            }
            Err(TenantError::Conflict(_)) => return Redirect::to("/casella").into_response(),
            Err(e) => errors = Errors::from_tenant(&e),
        }
    }
    let mut r = first_access_page(&w, &m, &errors);
    *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    r
}

pub(super) fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/casella/login", get(login_page).post(login))
        .route("/casella/logout", post(logout))
        .route("/casella", get(overview))
        .route(
            "/casella/primo-accesso",
            get(first_access_form).post(first_access),
        )
        .route("/casella/password", post(change_password))
        .route("/casella/email", post(change_email))
        .route("/casella/richiesta", post(request))
        .route("/casella/contratto", get(contract_download))
}
