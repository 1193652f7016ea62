//! The web interfaces, server-rendered in Italian on the admin listener:
//! the Ordini panel (`/ordine`), the holder's reserved area (`/casella`)
//! and the national administrator's anomaly desk (`/nazionale`).
//!
//! Owns: pages (maud templates, compiled into the binary), cookies,
//! sessions and CSRF tokens, login throttling, and the Italian wording of
//! errors. Every operation goes through `tenants` / `accounts` / `App`, as
//! the JSON API does, and is written to the legal log there with the
//! operator's identity. Works without JavaScript; `pecd.js` only adds the
//! live address suggestion. Must not touch: the storage engine.

// Guards return the finished HTTP response (a redirect or an error page)
// as their error: built once per refused request and sent as it is.
#![allow(clippy::result_large_err)]

use crate::app::App;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, html};
use session::{Session, Sessions, Who};
use std::collections::HashMap;
use std::sync::Arc;

mod holder;
mod national;
mod order;
pub mod session;

const COOKIE: &str = "pecd_sid";

pub struct Web {
    app: Arc<App>,
    /// Shared with the holder API, whose logins count against the same
    /// throttle.
    sessions: Arc<Sessions>,
    /// The national administrator logs in with the admin token.
    admin_token: String,
}

type St = State<Arc<Web>>;

/// The web routes, with their own state, to merge into the admin router.
pub fn router(app: Arc<App>, admin_token: String, sessions: Arc<Sessions>) -> Router {
    let web = Arc::new(Web {
        app,
        sessions,
        admin_token,
    });
    Router::new()
        .route("/", get(home))
        .route("/static/pecd.css", get(css))
        .route("/static/pecd.js", get(js))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .merge(order::routes())
        .merge(holder::routes())
        .merge(national::routes())
        // Unknown pages get the Italian page, never an empty body.
        .fallback(|| async { not_found() })
        .with_state(web)
}

// --------------------------------------------------------------------------
// Requests: cookies, sessions, CSRF, forms

fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Behind a TLS-terminating proxy the cookie is marked Secure (the admin
/// listener itself speaks plain HTTP on loopback).
fn over_tls(h: &HeaderMap) -> bool {
    h.get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn set_cookie(resp: &mut Response, h: &HeaderMap, sid: &str) {
    let secure = if over_tls(h) { "; Secure" } else { "" };
    let v = format!("{COOKIE}={sid}; Path=/; HttpOnly; SameSite=Strict{secure}");
    if let Ok(v) = HeaderValue::from_str(&v) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn clear_cookie(resp: &mut Response) {
    resp.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("pecd_sid=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
}

impl Web {
    /// The caller's session, if live.
    fn session(&self, h: &HeaderMap) -> Option<(String, Session)> {
        let sid = cookie(h, COOKIE)?;
        let s = self.sessions.get(&sid)?;
        Some((sid, s))
    }

    /// The session to put a login form in: the caller's when logged in,
    /// else a new pre-login one (with the cookie to set): each form shown
    /// gets the full time to be filled in.
    fn login_session(&self, h: &HeaderMap) -> Result<(Session, Option<String>), Response> {
        if let Some((_, s)) = self.session(h)
            && s.who != Who::Anonymous
        {
            return Ok((s, None));
        }
        let sid = self.sessions.start(Who::Anonymous).ok_or_else(|| {
            message_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Servizio occupato",
                "Troppe sessioni aperte: riprovare tra qualche minuto.",
            )
        })?;
        let s = self.sessions.get(&sid).ok_or_else(internal)?;
        Ok((s, Some(sid)))
    }

    /// Check a posted form's CSRF token against the session's, and return
    /// the session (a login form posts from an anonymous one).
    fn posted(&self, h: &HeaderMap, f: &Fields) -> Result<(String, Session), Response> {
        let bad = || {
            message_page(
                StatusCode::FORBIDDEN,
                "Modulo scaduto",
                "La sessione è scaduta o il modulo non proviene da questo sito. Ricaricare la pagina e riprovare.",
            )
        };
        let (sid, s) = self.session(h).ok_or_else(bad)?;
        let given = f.get("csrf");
        let ok =
            given.len() == s.csrf.len() && openssl::memcmp::eq(given.as_bytes(), s.csrf.as_bytes());
        if ok { Ok((sid, s)) } else { Err(bad()) }
    }

    /// Rotate to a fresh logged-in session and go to `to`.
    fn logged_in(&self, h: &HeaderMap, old: &str, who: Who, to: &str) -> Response {
        self.sessions.end(old);
        let Some(sid) = self.sessions.start(who) else {
            return message_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Servizio occupato",
                "Troppe sessioni aperte: riprovare tra qualche minuto.",
            );
        };
        let mut r = Redirect::to(to).into_response();
        set_cookie(&mut r, h, &sid);
        r
    }

    fn logout(&self, h: &HeaderMap, f: &Fields, to: &str) -> Response {
        if let Ok((sid, _)) = self.posted(h, f) {
            self.sessions.end(&sid);
        }
        let mut r = Redirect::to(to).into_response();
        clear_cookie(&mut r);
        r
    }
}

/// The client's address for throttling and the log.
fn client_ip(peer: &std::net::SocketAddr) -> String {
    peer.ip().to_string()
}

/// The client's address: the connection's peer (see `admin::serve`), or,
/// when that peer is one of `listen.trusted_proxies`, the last address its
/// `X-Forwarded-For` names that is not a trusted proxy itself. Behind a
/// proxy every peer is the proxy: without this, one client's failed logins
/// would lock every client out. Nobody else's header is believed.
fn peer_of(w: &Web, ext: &axum::http::Extensions, h: &HeaderMap) -> std::net::SocketAddr {
    client_of(&w.app, ext, h)
}

/// [`peer_of`] for any handler of the admin listener (the holder API too).
pub(crate) fn client_of(
    app: &crate::app::App,
    ext: &axum::http::Extensions,
    h: &HeaderMap,
) -> std::net::SocketAddr {
    let peer = ext
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
    forwarded_client(peer, &app.cfg().listen.trusted_proxies, h)
}

/// [`peer_of`]'s decision.
fn forwarded_client(
    peer: std::net::SocketAddr,
    trusted: &[std::net::IpAddr],
    h: &HeaderMap,
) -> std::net::SocketAddr {
    let trusted_ip = |ip: std::net::IpAddr| trusted.iter().any(|t| t.to_canonical() == ip);
    if !trusted_ip(peer.ip().to_canonical()) {
        return peer;
    }
    let entries: Vec<&str> = h
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // From the right (what our proxies appended), past the trusted ones;
    // an entry that does not read as an address ends the walk: what lies
    // left of it may be the client's own writing.
    for entry in entries.into_iter().rev() {
        let ip = entry
            .parse::<std::net::IpAddr>()
            .or_else(|_| entry.parse::<std::net::SocketAddr>().map(|s| s.ip()));
        match ip.map(|ip| ip.to_canonical()) {
            Ok(ip) if trusted_ip(ip) => continue,
            Ok(ip) => return std::net::SocketAddr::new(ip, 0),
            Err(_) => break,
        }
    }
    peer
}

/// A posted urlencoded form whose CSRF token matches the session's.
pub struct Posted {
    headers: HeaderMap,
    peer: std::net::SocketAddr,
    fields: Fields,
    sid: String,
}

impl axum::extract::FromRequest<Arc<Web>> for Posted {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, w: &Arc<Web>) -> Result<Posted, Response> {
        let headers = req.headers().clone();
        let peer = peer_of(w, req.extensions(), &headers);
        let body = String::from_request(req, w)
            .await
            .map_err(IntoResponse::into_response)?;
        let fields = Fields::parse(&body);
        let (sid, _) = w.posted(&headers, &fields)?;
        Ok(Posted {
            headers,
            peer,
            fields,
            sid,
        })
    }
}

/// A urlencoded form's fields.
pub struct Fields(HashMap<String, String>);

impl Fields {
    fn parse(body: &str) -> Fields {
        Fields(serde_urlencoded::from_str(body).unwrap_or_default())
    }
    fn get(&self, k: &str) -> &str {
        self.0.get(k).map_or("", |v| v.as_str())
    }
    fn on(&self, k: &str) -> bool {
        !self.get(k).is_empty()
    }
}

/// Errors by field name, shown next to the fields.
#[derive(Default)]
pub struct Errors(HashMap<String, String>);

impl Errors {
    fn add(&mut self, field: &str, msg: impl Into<String>) {
        self.0.insert(field.to_string(), msg.into());
    }
    fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(|s| s.as_str())
    }
    fn from_tenant(e: &crate::tenants::TenantError) -> Errors {
        let mut x = Errors::default();
        x.add(e.field().unwrap_or("_"), italian(e));
        x
    }
}

/// The Italian wording of an error of the lower layers (whose messages are
/// English, for logs and the API).
fn italian(e: &crate::tenants::TenantError) -> String {
    use crate::tenants::TenantError as E;
    match e {
        E::Invalid { field, message } => italian_field(field, message),
        E::NotFound(_) => "Non trovato.".into(),
        E::Exists(what) => format!("Esiste già: {what}."),
        E::Forbidden(_) => "Operazione non consentita.".into(),
        E::Conflict(m) if m.contains("cannot be cancelled") => {
            "La casella in questo stato non può essere cessata.".into()
        }
        E::Conflict(m) if m.contains("not waiting for its first access") => {
            "La casella non è in attesa del primo accesso.".into()
        }
        E::Conflict(m) if m.contains("already resolved") => "La segnalazione è già chiusa.".into(),
        E::Conflict(m) if m.contains("can be unblocked") => {
            "La casella non è bloccata per mancato primo accesso.".into()
        }
        E::Conflict(m) if m.contains("panel_url") || m.contains("smarthost") => {
            "Il gestore non ha configurato l'invio dei link di reimpostazione: usare la password temporanea.".into()
        }
        E::Conflict(m) if m.contains("first access is not done") => {
            "Completare prima il primo accesso (dati e contratto).".into()
        }
        E::Conflict(_) => "Operazione non possibile nello stato attuale della casella.".into(),
        E::Account(crate::accounts::AccountError::WeakPassword) => {
            "La password deve avere almeno 8 caratteri.".into()
        }
        E::Account(_) | E::Store(_) => {
            "Errore interno: l'operazione non è stata eseguita. Riprovare più tardi.".into()
        }
    }
}

/// Italian for one field's problem (also the bulk report's rows).
fn italian_field(field: &str, message: &str) -> String {
    if message == "missing" {
        return "Campo obbligatorio.".into();
    }
    if let Some(n) = message.strip_prefix("duplicate of line ") {
        return format!("Codice fiscale già presente alla riga {n} del file.");
    }
    match field {
        "codice_fiscale" => format!("Codice fiscale non valido ({message})."),
        "cap" => "Il CAP è di cinque cifre.".into(),
        "provincia" => "Sigla di provincia non valida (es. LO, MI).".into(),
        "reference_email" | "email_riferimento" => "Indirizzo e-mail non valido.".into(),
        "alias" if message.contains("taken") => {
            "Indirizzo già in uso: scegliere un altro alias.".into()
        }
        "alias" => "Alias non valido (lettere e cifre).".into(),
        "nome" | "cognome" => "Il campo non contiene lettere utilizzabili per l'indirizzo.".into(),
        "plan" | "piano" => "Piano inesistente.".into(),
        "other_pec" if message.contains("another address") => {
            "Indicare un indirizzo PEC diverso da quello cessato.".into()
        }
        "other_pec" => "Per la cessazione immediata su richiesta serve un altro indirizzo PEC come domicilio digitale.".into(),
        "to" if message.contains("already this order") => {
            "La casella è già di questo ordine.".into()
        }
        "to" if message.contains("already has the mailbox") => {
            "Il titolare ha già una casella presso l'ordine di destinazione.".into()
        }
        "to" => "L'ordine di destinazione non esiste.".into(),
        "note" => "Scrivere una nota.".into(),
        "new_password" if message.contains("differ") => {
            "La nuova password deve essere diversa da quella temporanea.".into()
        }
        "new_password" | "password" => "La password deve avere almeno 8 caratteri.".into(),
        "confirm_data" => "Confermare i dati anagrafici.".into(),
        "accept_contract" => "Per attivare la casella occorre accettare il contratto.".into(),
        "codice" => "Codice non valido.".into(),
        "addons" if message.contains("at most") => {
            format!("Troppe estensioni per il piano ({message}).")
        }
        "addons" => "Indicare un numero intero di estensioni.".into(),
        "steps" => format!("Numero di estensioni non disponibile sul piano ({message})."),
        "header" => format!("Intestazione del file non valida: {message}."),
        "(row)" => format!("Riga illeggibile: {message}."),
        _ => format!("Valore non valido: {message}."),
    }
}

// --------------------------------------------------------------------------
// Pages

/// Navigation of the logged-in area the page belongs to.
pub enum Nav<'a> {
    None,
    Order { tenant: &'a str, csrf: &'a str },
    Holder { address: &'a str, csrf: &'a str },
    National { csrf: &'a str },
}

fn layout(title: &str, nav: Nav, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="it" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · pecd" }
                link rel="stylesheet" href="/static/pecd.css";
                script src="/static/pecd.js" defer {}
            }
            body {
                a.skip href="#main" { "Vai al contenuto" }
                header.top {
                    span.brand { "pecd · PEC" }
                    @match nav {
                        Nav::Order { tenant, csrf } => {
                            nav aria-label="Menu dell'ordine" {
                                a href="/ordine" { "Cruscotto" }
                                a href="/ordine/caselle" { "Caselle" }
                                a href="/ordine/caselle/nuova" { "Nuova casella" }
                                a href="/ordine/carica" { "Caricamento massivo" }
                                a href="/ordine/esporta" { "Esportazioni" }
                                a href="/ordine/sicurezza" { "Sicurezza" }
                            }
                            (logout_form("/ordine/logout", csrf, tenant))
                        }
                        Nav::Holder { address, csrf } => {
                            nav aria-label="Menu del titolare" { a href="/casella" { "La mia casella" } }
                            (logout_form("/casella/logout", csrf, address))
                        }
                        Nav::National { csrf } => {
                            nav aria-label="Menu nazionale" { a href="/nazionale" { "Segnalazioni" } }
                            (logout_form("/nazionale/logout", csrf, "amministratore"))
                        }
                        Nav::None => {}
                    }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn logout_form(action: &str, csrf: &str, who: &str) -> Markup {
    html! {
        form.logout method="post" action=(action) {
            span.who { (who) }
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" { "Esci" }
        }
    }
}

fn page(title: &str, nav: Nav, body: Markup) -> Response {
    let mut r = layout(title, nav, body).into_response();
    no_store(&mut r);
    r
}

/// Pages carry personal data and one-time passwords: never cached.
fn no_store(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}

fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    let mut r = page(
        title,
        Nav::None,
        html! { p { (text) } p { a href="/" { "Torna all'inizio" } } },
    );
    *r.status_mut() = status;
    r
}

fn internal() -> Response {
    message_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Errore interno",
        "Si è verificato un errore: l'operazione non è stata eseguita. Riprovare più tardi.",
    )
}

fn not_found() -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "Pagina non trovata",
        "La pagina o la casella richiesta non esiste o non è tra quelle che si possono amministrare.",
    )
}

/// A labelled input with its error, if any, next to it.
#[allow(clippy::too_many_arguments)]
fn field(
    name: &str,
    label: &str,
    kind: &str,
    value: &str,
    errors: &Errors,
    required: bool,
    readonly: bool,
    autocomplete: &str,
) -> Markup {
    let id = format!("f-{name}");
    let err_id = format!("e-{name}");
    let err = errors.get(name);
    html! {
        div.field.invalid[err.is_some()] {
            label for=(id) { (label) @if required { " " abbr title="obbligatorio" { "*" } } }
            input id=(id) name=(name) type=(kind) value=(value) required[required] readonly[readonly]
                autocomplete=(autocomplete)
                aria-invalid=[err.map(|_| "true")] aria-describedby=[err.map(|_| err_id.as_str())];
            @if let Some(e) = err { p.error id=(err_id) role="alert" { (e) } }
        }
    }
}

fn csrf_input(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// A usage bar with its figures (bytes used of quota).
fn bar(label: &str, used: u64, quota: u64) -> Markup {
    let pct = used
        .saturating_mul(100)
        .checked_div(quota)
        .unwrap_or(0)
        .min(100);
    html! {
        div.usage {
            span { (label) ": " (human(used)) " di " (human(quota)) " (" (pct) "%)" }
            progress max="100" value=(pct) aria-label=(label) { (pct) "%" }
        }
    }
}

fn human(bytes: u64) -> String {
    const G: f64 = 1024.0 * 1024.0 * 1024.0;
    const M: f64 = 1024.0 * 1024.0;
    let b = bytes as f64;
    if b >= G {
        format!("{:.2} GB", b / G).replace('.', ",")
    } else if b >= M {
        format!("{:.1} MB", b / M).replace('.', ",")
    } else {
        format!("{:.0} KB", (b / 1024.0).ceil())
    }
}

fn state_it(s: crate::accounts::AccountState) -> &'static str {
    use crate::accounts::AccountState as S;
    match s {
        S::PendingActivation => "in attesa di primo accesso",
        S::Active => "attiva",
        S::Expired => "scaduta (solo ricezione)",
        S::Suspended => "sospesa",
        S::Cancelled => "cessata",
        #[allow(unreachable_patterns)]
        _ => "altro",
    }
}

fn date_it(d: chrono::NaiveDate) -> String {
    d.format("%d/%m/%Y").to_string()
}

fn time_it(t: chrono::DateTime<chrono::Utc>) -> String {
    crate::clock::LegalTime::new(t)
        .local()
        .format("%d/%m/%Y %H:%M")
        .to_string()
}

fn download(name: &str, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut r = (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response();
    no_store(&mut r);
    r
}

async fn home() -> Response {
    page(
        "Posta Elettronica Certificata",
        Nav::None,
        html! {
            ul.cards {
                li { a href="/ordine/login" { "Area Ordini" } p { "Gestione delle caselle degli iscritti." } }
                li { a href="/casella/login" { "Area riservata del titolare" } p { "Primo accesso, password, spazio, scadenza." } }
                li { a href="/nazionale/login" { "Amministrazione nazionale" } p { "Segnalazioni degli ordini." } }
            }
        },
    )
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("pecd.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("pecd.js"),
    )
        .into_response()
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// What an area's credentials check decided.
enum LoginOutcome {
    /// Logged in as `who`; go to `to`.
    In { who: Who, to: &'static str },
    /// Wrong credentials: counted for throttling.
    Refused(Errors),
    /// Right credentials that cannot log in now (a missing second factor,
    /// a suspended mailbox): not counted.
    Stopped(Errors),
}

/// Every area's login page: the form in a (new, anonymous) session, or
/// straight to `home` when the session is already `area`'s.
fn login_page_for(
    w: &Web,
    h: &HeaderMap,
    title: &str,
    already: impl Fn(&Who) -> Option<&'static str>,
    form: impl Fn(&str) -> Markup,
) -> Response {
    let (s, new_sid) = match w.login_session(h) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Some(home) = already(&s.who) {
        return Redirect::to(home).into_response();
    }
    let mut r = page(title, Nav::None, form(&s.csrf));
    if let Some(sid) = new_sid {
        set_cookie(&mut r, h, &sid);
    }
    r
}

/// Every area's login: throttled by user and client address, the check,
/// a fresh session on success; otherwise the form again with its errors.
fn login_flow(
    w: &Web,
    p: &Posted,
    kind: &str,
    user: &str,
    title: &str,
    check: impl FnOnce(&str) -> LoginOutcome,
    form: impl FnOnce(&str, &Errors) -> Markup,
) -> Response {
    let ip = client_ip(&p.peer);
    let keys = throttle_keys(kind, user, &ip);
    if let Some(wait) = w.sessions.locked_out(&keys) {
        return locked_page(title, wait);
    }
    let errors = match check(&ip) {
        LoginOutcome::In { who, to } => {
            w.sessions.succeeded(&keys[0]);
            return w.logged_in(&p.headers, &p.sid, who, to);
        }
        LoginOutcome::Refused(e) => {
            w.sessions.failed(&keys);
            e
        }
        LoginOutcome::Stopped(e) => e,
    };
    // The form again, in a fresh pre-login session.
    let (s, new_sid) = match w.login_session(&p.headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut r = page(title, Nav::None, form(&s.csrf, &errors));
    if let Some(sid) = new_sid {
        set_cookie(&mut r, &p.headers, &sid);
    }
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r
}

impl Errors {
    fn one(field: &str, msg: &str) -> Errors {
        let mut e = Errors::default();
        e.add(field, msg);
        e
    }
}

/// Login throttling keys: the user and the client.
pub(crate) fn throttle_keys(kind: &str, user: &str, ip: &str) -> [String; 2] {
    [user_key(kind, user), format!("ip:{ip}")]
}

/// The throttle's key of a user of `kind` (`holder`, `order`, …), the
/// same whichever way (panel or API) the login comes.
pub(crate) fn user_key(kind: &str, user: &str) -> String {
    format!("{kind}:{}", user.trim().to_lowercase())
}

fn locked_page(nav_title: &str, wait: std::time::Duration) -> Response {
    message_page(
        StatusCode::TOO_MANY_REQUESTS,
        nav_title,
        &format!(
            "Troppi tentativi di accesso non riusciti. Riprovare tra {} minuti.",
            wait.as_secs().div_ceil(60)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let proxy: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let peer = std::net::SocketAddr::new(proxy, 4000);
        let mut h = HeaderMap::new();
        // The client wrote the first entry itself; the proxy appended the
        // address it saw.
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 192.0.2.7"),
        );
        let client = |trusted: &[std::net::IpAddr], h: &HeaderMap| {
            forwarded_client(peer, trusted, h).ip().to_string()
        };
        assert_eq!(client(&[proxy], &h), "192.0.2.7");
        assert_eq!(client(&[], &h), "10.0.0.1");
        assert_eq!(client(&[proxy], &HeaderMap::new()), "10.0.0.1");
        // The proxy's entry with a port, bracketed IPv6, or IPv4-mapped.
        for (entry, want) in [
            ("6.6.6.6, 192.0.2.7:5123", "192.0.2.7"),
            ("6.6.6.6, [2001:db8::1]:443", "2001:db8::1"),
            ("6.6.6.6, ::ffff:192.0.2.9", "192.0.2.9"),
            // Unreadable: the walk stops; the client's text is not used.
            ("6.6.6.6, unknown", "10.0.0.1"),
        ] {
            h.insert("x-forwarded-for", HeaderValue::from_str(entry).unwrap());
            assert_eq!(client(&[proxy], &h), want, "{entry}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; pecd_sid=abc ; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "zzz"), None);
    }

    #[test]
    fn lower_layer_errors_read_in_italian_by_field() {
        use crate::tenants::TenantError;
        let inv = |f: &str, m: &str| {
            italian(&TenantError::Invalid {
                field: f.into(),
                message: m.into(),
            })
        };
        assert_eq!(inv("cap", "five digits"), "Il CAP è di cinque cifre.");
        assert_eq!(inv("nome", "missing"), "Campo obbligatorio.");
        assert_eq!(
            inv("codice_fiscale", "duplicate of line 4"),
            "Codice fiscale già presente alla riga 4 del file."
        );
        assert!(
            inv("codice_fiscale", "bad check character").starts_with("Codice fiscale non valido")
        );
        assert_eq!(
            italian(&TenantError::Account(
                crate::accounts::AccountError::WeakPassword
            )),
            "La password deve avere almeno 8 caratteri."
        );
        // Nothing falls through in English without saying it is a value.
        assert!(inv("whatever", "odd").starts_with("Valore non valido"));
    }

    #[test]
    fn sizes_read_the_italian_way() {
        assert_eq!(human(1 << 30), "1,00 GB");
        assert_eq!(human(3 * (1 << 20) / 2), "1,5 MB");
        assert_eq!(human(1), "1 KB");
    }
}
