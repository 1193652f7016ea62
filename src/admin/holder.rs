//! The holder's self-service on the admin API, authenticated with the
//! mailbox's own credentials (HTTP Basic: address and password): view the
//! data, first access (confirm the anagrafica, accept the contract, set a
//! new password), change password and reference e-mail, request an add-on
//! or the Avanzata upgrade (recorded for the order to fulfil).
//! Must not touch: other mailboxes; the order's operations.

// Guards return the finished HTTP response as their error.
#![allow(clippy::result_large_err)]

use super::{Ctx, error};
use crate::accounts::{self, Account, AccountState};
use crate::tenants::{self, TenantError};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

/// The mailbox whose HTTP Basic credentials a request carries.
struct Holder(Account);

impl axum::extract::FromRequestParts<Ctx> for Holder {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        ctx: &Ctx,
    ) -> Result<Holder, Response> {
        let client = crate::web::client_of(&ctx.app, &parts.extensions, &parts.headers);
        holder(ctx, &parts.headers, &client.ip().to_string()).map(Holder)
    }
}

fn holder(ctx: &Ctx, h: &HeaderMap, client_ip: &str) -> Result<Account, Response> {
    let denied = || {
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "mailbox address and password (HTTP Basic) required",
        )
    };
    let raw = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(denied)?;
    let (user, password) = raw.split_once(':').ok_or_else(denied)?;
    // The panel's throttle and keys: one mailbox, one count, whichever way
    // it is guessed; and one client guessing many mailboxes is stopped too.
    let key = crate::web::throttle_keys("holder", user, client_ip);
    if ctx.throttle.locked_out(&key).is_some() {
        return Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            "locked",
            "too many failed logins; try again later",
        ));
    }
    let acc = tokio::task::block_in_place(|| accounts::get(&ctx.app.store, user))
        .ok()
        .flatten()
        .filter(|a| !matches!(a.state, AccountState::Cancelled | AccountState::Suspended));
    // An unknown address costs the same hash as a known one: the time of
    // the answer does not tell which addresses exist.
    let ok = tokio::task::block_in_place(|| {
        let hash = acc
            .as_ref()
            .map_or(accounts::dummy_hash(), |a| a.password_hash.as_str());
        accounts::check_password(hash, password)
    });
    match acc {
        Some(acc) if ok => {
            ctx.throttle.succeeded(&key[0]);
            Ok(acc)
        }
        _ => {
            ctx.throttle.failed(&key);
            Err(denied())
        }
    }
}

use super::parse;

/// The new view after one of the holder's own changes, or its error.
fn answer(ctx: &Ctx, r: Result<Account, TenantError>) -> Response {
    match r {
        Ok(a) => Json(me_view(ctx, &a)).into_response(),
        Err(e) => fail(e),
    }
}

fn me_view(ctx: &Ctx, a: &Account) -> serde_json::Value {
    super::ordini::view(ctx, a)
}

async fn me(State(ctx): State<Ctx>, Holder(acc): Holder) -> Response {
    Json(me_view(&ctx, &acc)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FirstAccess {
    /// The holder confirms the anagrafica GET /me showed, as the web form
    /// asks with its own box: not taken for granted.
    confirm_data: bool,
    accept_contract: bool,
    new_password: String,
}

async fn first_access(State(ctx): State<Ctx>, Holder(acc): Holder, body: String) -> Response {
    let f: FirstAccess = match parse(&body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let now = ctx.app.clock.now();
    answer(
        &ctx,
        tokio::task::block_in_place(|| {
            tenants::first_access(
                &ctx.app.store,
                &acc.address,
                f.confirm_data,
                f.accept_contract,
                &f.new_password,
                now,
            )
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    new_password: String,
}

async fn password(State(ctx): State<Ctx>, Holder(acc): Holder, body: String) -> Response {
    let p: NewPassword = match parse(&body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let now = ctx.app.clock.now();
    answer(
        &ctx,
        tokio::task::block_in_place(|| {
            tenants::change_password(&ctx.app.store, &acc.address, &p.new_password, now)
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewReference {
    reference_email: String,
}

async fn reference(State(ctx): State<Ctx>, Holder(acc): Holder, body: String) -> Response {
    let r: NewReference = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let now = ctx.app.clock.now();
    answer(
        &ctx,
        tokio::task::block_in_place(|| {
            tenants::change_reference_email(&ctx.app.store, &acc.address, &r.reference_email, now)
        }),
    )
}

async fn request(State(ctx): State<Ctx>, Holder(acc): Holder, body: String) -> Response {
    let req: tenants::Request = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let now = ctx.app.clock.now();
    match tokio::task::block_in_place(|| {
        tenants::file_request(&ctx.app.store, &ctx.app.cfg(), &acc, &req, now)
    }) {
        Ok(r) => (StatusCode::CREATED, Json(r)).into_response(),
        Err(e) => fail(e),
    }
}

fn fail(e: TenantError) -> Response {
    let status = match e.code() {
        "invalid" => StatusCode::BAD_REQUEST,
        "not_found" => StatusCode::NOT_FOUND,
        "conflict" => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut body = json!({"error": e.code(), "message": e.to_string()});
    if let Some(f) = e.field() {
        body["field"] = f.into();
    }
    (status, Json(body)).into_response()
}

/// The order's view of its members' requests.
async fn requests(State(ctx): State<Ctx>, h: HeaderMap, Path(t): Path<String>) -> Response {
    if let Err(r) = super::ordini::scope_for(&ctx, &h, &t) {
        return r;
    }
    match tokio::task::block_in_place(|| tenants::requests(&ctx.app.store, &t)) {
        Ok(l) => Json(l).into_response(),
        Err(e) => fail(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Redeem {
    token: String,
    new_password: String,
}

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"it\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>"
    );
    (
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// Where a reset link lands: a form for the new password.
async fn reset_form(axum::extract::Query(q): axum::extract::Query<TokenQuery>) -> Response {
    page(
        "Nuova password della casella PEC",
        &format!(
            "<form method=\"post\" action=\"/me/reset\">\
             <input type=\"hidden\" name=\"token\" value=\"{}\">\
             <p><label for=\"pw\">Nuova password (almeno 8 caratteri)</label><br>\
             <input id=\"pw\" name=\"new_password\" type=\"password\" minlength=\"8\" required \
             autocomplete=\"new-password\"></p><p><button>Imposta la password</button></p></form>",
            escape(&q.token)
        ),
    )
}

/// A reset link's target: no credentials but the one-use token. JSON in,
/// JSON out; or the form of [`reset_form`], answered with a page.
async fn reset(State(ctx): State<Ctx>, h: HeaderMap, body: String) -> Response {
    let form = h
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let r: Redeem = if form {
        match serde_urlencoded::from_str(&body) {
            Ok(r) => r,
            Err(_) => return page("Richiesta non valida", "<p>Il modulo è incompleto.</p>"),
        }
    } else {
        match parse(&body) {
            Ok(r) => r,
            Err(r) => return r,
        }
    };
    let now = ctx.app.clock.now();
    let done = tokio::task::block_in_place(|| {
        tenants::redeem_reset_token(&ctx.app.store, &r.token, &r.new_password, now)
    });
    match (done, form) {
        (Ok(address), false) => Json(json!({"address": address})).into_response(),
        (Ok(address), true) => page(
            "Password impostata",
            &format!(
                "<p>La nuova password della casella {} è attiva.</p>",
                escape(&address)
            ),
        ),
        (Err(e), false) => fail(e),
        (Err(e), true) => {
            let why = match e.field() {
                Some("token") => {
                    "Il link non è valido, è già stato usato o è scaduto: chiedere all'ordine un nuovo link."
                }
                Some("new_password") => {
                    "La password deve avere almeno 8 caratteri: tornare indietro e riprovare."
                }
                _ => "La password non è stata impostata: riprovare più tardi.",
            };
            let mut r = page("Password non impostata", &format!("<p>{why}</p>"));
            *r.status_mut() = match e.field() {
                Some(_) => StatusCode::BAD_REQUEST,
                None => StatusCode::INTERNAL_SERVER_ERROR,
            };
            r
        }
    }
}

pub(super) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/me", get(me))
        .route("/me/reset", get(reset_form).post(reset))
        .route("/me/first-access", post(first_access))
        .route("/me/password", post(password))
        .route("/me/reference-email", post(reference))
        .route("/me/requests", post(request))
        .route("/tenants/{t}/requests", get(requests))
}
