//! The national administrator's desk (`/nazionale`): the anomaly reports
//! the orders file on wrong assignments, and their resolution.
//!
//! Owns: these pages. The administrator logs in with the daemon's admin
//! token (the same secret the CLI reads from `<data_dir>/admin.token`).
//! Must not touch: the store directly.

use super::session::Who;
use super::{
    Errors, Fields, LoginOutcome, Nav, Posted, St, Web, blocking, client_ip, csrf_input, field,
    internal, italian, login_flow, login_page_for, page, time_it,
};
use crate::tenants;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use std::sync::Arc;

fn admin(w: &Web, h: &HeaderMap) -> Result<String, Response> {
    match w.session(h) {
        Some((_, s)) if s.who == Who::National => Ok(s.csrf),
        _ => Err(Redirect::to("/nazionale/login").into_response()),
    }
}

const TITLE: &str = "Amministrazione nazionale";

async fn login_page(State(w): St, h: HeaderMap) -> Response {
    login_page_for(
        &w,
        &h,
        TITLE,
        |who| (*who == Who::National).then_some("/nazionale"),
        |csrf| login_form(csrf, &Errors::default()),
    )
}

fn login_form(csrf: &str, errors: &Errors) -> Markup {
    html! {
        @if let Some(e) = errors.get("_") { p.alert role="alert" { (e) } }
        form method="post" action="/nazionale/login" {
            (csrf_input(csrf))
            (field("token", "Chiave di amministrazione (admin.token)", "password", "", errors, true, false, "current-password"))
            button type="submit" { "Accedi" }
        }
    }
}

async fn login(State(w): St, p: Posted) -> Response {
    login_flow(
        &w,
        &p,
        "national",
        "admin",
        TITLE,
        |ip| {
            let given = p.fields.get("token").trim();
            let ok = given.len() == w.admin_token.len()
                && openssl::memcmp::eq(given.as_bytes(), w.admin_token.as_bytes());
            if !ok {
                return LoginOutcome::Refused(Errors::one("_", "Chiave non valida."));
            }
            let now = w.app.clock.now();
            let _ = blocking(|| {
                tenants::log_action(
                    &w.app.store,
                    now,
                    &format!("admin (panel, {ip})"),
                    None,
                    "national panel login",
                )
            });
            LoginOutcome::In {
                who: Who::National,
                to: "/nazionale",
            }
        },
        login_form,
    )
}

async fn logout(State(w): St, h: HeaderMap, body: String) -> Response {
    w.logout(&h, &Fields::parse(&body), "/nazionale/login")
}

async fn desk(State(w): St, h: HeaderMap) -> Response {
    let csrf = match admin(&w, &h) {
        Ok(c) => c,
        Err(r) => return r,
    };
    desk_page(&w, &csrf, None, None)
}

fn desk_page(w: &Web, csrf: &str, notice: Option<&str>, error: Option<(&str, String)>) -> Response {
    let list = match blocking(|| tenants::anomalies(&w.app.store, None)) {
        Ok(l) => l,
        Err(_) => return internal(),
    };
    let (open, closed): (Vec<_>, Vec<_>) = list.into_iter().partition(|a| a.resolution.is_none());
    page(
        "Segnalazioni degli ordini",
        Nav::National { csrf },
        html! {
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            h2 { "Aperte (" (open.len()) ")" }
            @if open.is_empty() { p.muted { "Nessuna." } }
            @for a in &open {
                section.card id=(format!("s-{}", a.id)) {
                    p { strong { (a.address) } " — ordine " (a.tenant) " — " (time_it(a.time)) }
                    p { (a.note) }
                    form method="post" action=(format!("/nazionale/segnalazioni/{}", a.id)) {
                        (csrf_input(csrf))
                        div.field {
                            label for=(format!("n-{}", a.id)) { "Come è stata risolta" }
                            textarea id=(format!("n-{}", a.id)) name="note" rows="2" required {}
                            @if let Some((id, e)) = &error { @if *id == a.id { p.error role="alert" { (e) } } }
                        }
                        button type="submit" { "Chiudi la segnalazione" }
                    }
                }
            }
            h2 { "Chiuse (" (closed.len()) ")" }
            @if closed.is_empty() { p.muted { "Nessuna." } } @else {
                div.table { table {
                    thead { tr { th { "Casella" } th { "Ordine" } th { "Segnalazione" } th { "Risoluzione" } } }
                    tbody { @for a in &closed { tr {
                        td { (a.address) } td { (a.tenant) } td { (a.note) }
                        td { @if let Some(r) = &a.resolution { (r.note) " (" (time_it(r.time)) ")" } }
                    } } }
                } }
            }
        },
    )
}

async fn resolve(State(w): St, Path(id): Path<String>, p: Posted) -> Response {
    let csrf = match admin(&w, &p.headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let actor = format!("admin (panel, {})", client_ip(&p.peer));
    let now = w.app.clock.now();
    let note = p.fields.get("note");
    match blocking(|| tenants::resolve_anomaly(&w.app.store, &id, note, &actor, now)) {
        Ok(_) => desk_page(&w, &csrf, Some("Segnalazione chiusa."), None),
        Err(e) => {
            let mut r = desk_page(&w, &csrf, None, Some((&id, italian(&e))));
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            r
        }
    }
}

pub(super) fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/nazionale/login", get(login_page).post(login))
        .route("/nazionale/logout", post(logout))
        .route("/nazionale", get(desk))
        .route("/nazionale/segnalazioni/{id}", post(resolve))
}
