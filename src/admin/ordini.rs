//! The Ordini part of the admin API: tenants and their members' mailboxes.
//!
//! Owns: who may call what. The national admin token (the daemon's admin
//! token) sees everything; an order's token sees only `/tenants/<its id>/…`
//! and only its own mailboxes there. Every cross-tenant attempt is denied
//! (403, or 404 for a mailbox of another order) and written to the legal
//! log. Errors are `{"error": code, "message": text, "field": name}`.
//! Must not touch: the store beyond `tenants`, `accounts`, `lifecycle`.

// Guards return the finished HTTP response as their error: it is built once
// per refused request and goes straight out, so its size does not matter.
#![allow(clippy::result_large_err)]

use super::{Ctx, error};
use crate::tenants::{self, Cancellation, NewMember, Tenant, TenantError};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Caller {
    National,
    Order(String),
}

impl Caller {
    fn name(&self) -> String {
        match self {
            Caller::National => "admin".into(),
            Caller::Order(t) => format!("order:{t}"),
        }
    }
}

fn bearer(h: &HeaderMap) -> &str {
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

fn caller(ctx: &Ctx, h: &HeaderMap) -> Result<Caller, Response> {
    let given = bearer(h);
    if given.len() == ctx.token.len() && openssl::memcmp::eq(given.as_bytes(), ctx.token.as_bytes())
    {
        return Ok(Caller::National);
    }
    match tokenant(ctx, given) {
        Some(t) => Ok(Caller::Order(t)),
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong token",
        )),
    }
}

fn tokenant(ctx: &Ctx, token: &str) -> Option<String> {
    tenants::tenant_for_token(&ctx.app.store, token)
        .ok()
        .flatten()
}

/// The caller may act for `tenant`; otherwise 403, logged.
fn scope(ctx: &Ctx, h: &HeaderMap, tenant: &str) -> Result<Caller, Response> {
    let c = caller(ctx, h)?;
    match &c {
        Caller::National => Ok(c),
        Caller::Order(t) if t == tenant => Ok(c),
        Caller::Order(_) => {
            tenants::log_denied(
                &ctx.app.store,
                ctx.app.clock.now(),
                &c.name(),
                &format!("access to order {tenant}"),
            );
            Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token does not administer order {tenant}"),
            ))
        }
    }
}

/// [`scope`] for the other admin modules.
pub(super) fn scope_for(ctx: &Ctx, h: &HeaderMap, tenant: &str) -> Result<(), Response> {
    scope(ctx, h, tenant).map(|_| ())
}

fn national(ctx: &Ctx, h: &HeaderMap) -> Result<(), Response> {
    match caller(ctx, h)? {
        Caller::National => Ok(()),
        c => {
            tenants::log_denied(
                &ctx.app.store,
                ctx.app.clock.now(),
                &c.name(),
                "national endpoint",
            );
            Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "national administrators only",
            ))
        }
    }
}

fn fail(e: TenantError) -> Response {
    let status = match e.code() {
        "invalid" => StatusCode::BAD_REQUEST,
        "exists" | "conflict" => StatusCode::CONFLICT,
        "not_found" => StatusCode::NOT_FOUND,
        "forbidden" => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut body = json!({"error": e.code(), "message": e.to_string()});
    if let Some(f) = e.field() {
        body["field"] = f.into();
    }
    (status, Json(body)).into_response()
}

/// The mailbox view the API returns (never the password hash).
pub(super) fn view(ctx: &Ctx, a: &crate::accounts::Account) -> serde_json::Value {
    let plan = ctx.app.plan_of(a);
    json!({
        "address": a.address,
        "state": a.state,
        "state_since": a.state_since,
        "state_reason": a.state_reason,
        "tenant": a.tenant,
        "plan": plan.as_ref().map(|p| p.name.clone()),
        "addons": a.addons,
        "inbox_quota": plan.as_ref().map(|p| p.inbox_quota(a.addons)),
        "archive_quota": plan.as_ref().map(|p| p.archive.0),
        "expires": a.expires,
        "created": a.created,
        "anagrafica": a.holder,
    })
}

use super::parse;

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    id: String,
    name: String,
    domain: String,
    provincia: String,
    #[serde(default)]
    activation: tenants::Activation,
    #[serde(default)]
    secretariat_email: String,
}

async fn tenants_list(State(ctx): State<Ctx>, h: HeaderMap) -> Response {
    if let Err(r) = national(&ctx, &h) {
        return r;
    }
    match blocking(|| tenants::list(&ctx.app.store)) {
        Ok(l) => Json(l).into_response(),
        Err(e) => fail(e),
    }
}

async fn tenants_create(State(ctx): State<Ctx>, h: HeaderMap, body: String) -> Response {
    let parsed: Result<NewTenant, Response> = parse(&body);
    if let Err(r) = national(&ctx, &h) {
        return r;
    }
    let t = match parsed {
        Ok(v) => v,
        Err(r) => return r,
    };
    let now = ctx.app.clock.now();
    let t = Tenant {
        id: t.id,
        name: t.name,
        domain: t.domain.to_ascii_lowercase(),
        provincia: t.provincia,
        activation: t.activation,
        secretariat_email: t.secretariat_email,
        created: now,
    };
    // Its members' mailboxes must be ones this provider receives mail for.
    if !ctx
        .app
        .cfg()
        .provider
        .local_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(&t.domain))
    {
        return fail(TenantError::invalid(
            "domain",
            format!("{} is not one of provider.local_domains", t.domain),
        ));
    }
    match blocking(|| tenants::create(&ctx.app.store, &t, now)) {
        Ok(o) => (
            StatusCode::CREATED,
            Json(json!({
                "id": t.id,
                "token": o.token,
                "order_mailbox": o.order_mailbox.address,
                "order_mailbox_password": o.order_mailbox.password,
                "panel_login": t.id,
                "panel_password": o.panel_password,
            })),
        )
            .into_response(),
        Err(e) => fail(e),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    q: Option<String>,
}

async fn members_list(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path(t): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Err(r) = scope(&ctx, &h, &t) {
        return r;
    }
    match blocking(|| tenants::members(&ctx.app.store, &t, q.q.as_deref())) {
        Ok(l) => Json(l.iter().map(|a| view(&ctx, a)).collect::<Vec<_>>()).into_response(),
        Err(e) => fail(e),
    }
}

fn tenant_of(ctx: &Ctx, t: &str) -> Result<Tenant, Response> {
    match tenants::get(&ctx.app.store, t) {
        Ok(Some(x)) => Ok(x),
        Ok(None) => Err(fail(TenantError::NotFound(format!("order {t}")))),
        Err(e) => Err(fail(e)),
    }
}

async fn members_create(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path(t): Path<String>,
    body: String,
) -> Response {
    let parsed: Result<NewMember, Response> = parse(&body);
    let c = match scope(&ctx, &h, &t) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let m = match parsed {
        Ok(v) => v,
        Err(r) => return r,
    };
    let tenant = match tenant_of(&ctx, &t) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = ctx.app.clock.now();
    match blocking(|| {
        tenants::create_member(&ctx.app.store, &ctx.app.cfg(), &tenant, &m, &c.name(), now)
    }) {
        Ok(created) => (StatusCode::CREATED, Json(created)).into_response(),
        Err(e) => fail(e),
    }
}

async fn member_get(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path((t, a)): Path<(String, String)>,
) -> Response {
    if let Err(r) = scope(&ctx, &h, &t) {
        return r;
    }
    match blocking(|| tenants::member(&ctx.app.store, &t, &a)) {
        Ok(acc) => Json(view(&ctx, &acc)).into_response(),
        Err(e) => denied_member(&ctx, &h, &t, &a, e),
    }
}

/// One operation on a member's mailbox: the caller must administer order
/// `t`; the body (JSON, empty for `{}`) must parse as `B`; `op` gets it with
/// the caller's name and the time, and its account is answered as the
/// mailbox view (errors as [`denied_member`]).
fn member_op<B: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    h: &HeaderMap,
    t: &str,
    a: &str,
    body: &str,
    op: impl FnOnce(B, &str, DateTime<Utc>) -> Result<crate::accounts::Account, TenantError>,
) -> Response {
    let parsed: Result<B, Response> = parse(body);
    let c = match scope(ctx, h, t) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let b = match parsed {
        Ok(v) => v,
        Err(r) => return r,
    };
    let now = ctx.app.clock.now();
    match blocking(|| op(b, &c.name(), now)) {
        Ok(acc) => Json(view(ctx, &acc)).into_response(),
        Err(e) => denied_member(ctx, h, t, a, e),
    }
}

/// A mailbox not in the caller's order: 404 as for a missing one (its
/// existence is not disclosed), and the attempt is logged.
fn denied_member(ctx: &Ctx, h: &HeaderMap, t: &str, a: &str, e: TenantError) -> Response {
    if matches!(e, TenantError::NotFound(_)) {
        let who = caller(ctx, h).map(|c| c.name()).unwrap_or_default();
        tenants::log_denied(
            &ctx.app.store,
            ctx.app.clock.now(),
            &who,
            &format!("mailbox {a} through order {t}"),
        );
    }
    fail(e)
}

async fn member_edit(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path((t, a)): Path<(String, String)>,
    body: String,
) -> Response {
    member_op(
        &ctx,
        &h,
        &t,
        &a,
        &body,
        |changes: serde_json::Map<String, serde_json::Value>, actor, now| {
            tenants::edit_member(&ctx.app.store, &t, &a, &changes, actor, now)
        },
    )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResetHow {
    /// `password` (a new one-time password, returned) or `link` (a reset
    /// link to the holder's reference e-mail).
    #[serde(default)]
    via: Option<String>,
}

async fn member_reset(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path((t, a)): Path<(String, String)>,
    body: String,
) -> Response {
    let c = match scope(&ctx, &h, &t) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let how: ResetHow = match parse(&body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = ctx.app.clock.now();
    match how.via.as_deref() {
        None | Some("password") => {
            match blocking(|| tenants::reset_password(&ctx.app.store, &t, &a, &c.name(), now)) {
                Ok(pw) => Json(json!({"address": a, "password": pw})).into_response(),
                Err(e) => denied_member(&ctx, &h, &t, &a, e),
            }
        }
        Some("link") => {
            let r = blocking(|| ctx.app.reset_by_link(&t, &a, &c.name()));
            match r {
                Ok(acc) => (
                    StatusCode::ACCEPTED,
                    Json(json!({"address": a, "sent_to": acc.holder.reference_email})),
                )
                    .into_response(),
                Err(e) => denied_member(&ctx, &h, &t, &a, e),
            }
        }
        Some(other) => fail(TenantError::Invalid {
            field: "via".into(),
            message: format!("{other:?}: use password or link"),
        }),
    }
}

async fn member_unblock(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path((t, a)): Path<(String, String)>,
) -> Response {
    member_op(
        &ctx,
        &h,
        &t,
        &a,
        "",
        |_: serde::de::IgnoredAny, actor, now| tenants::unblock(&ctx.app.store, &t, &a, actor, now),
    )
}

async fn member_cancel(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path((t, a)): Path<(String, String)>,
    body: String,
) -> Response {
    member_op(&ctx, &h, &t, &a, &body, |why: Cancellation, actor, now| {
        tenants::cancel(&ctx.app.store, &t, &a, &why, actor, now)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Transfer {
    to: String,
}

async fn member_transfer(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path((t, a)): Path<(String, String)>,
    body: String,
) -> Response {
    member_op(&ctx, &h, &t, &a, &body, |x: Transfer, actor, now| {
        tenants::transfer(&ctx.app.store, &t, &a, &x.to, actor, now)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Renew {
    #[serde(default)]
    years: Option<u32>,
}

async fn member_renew(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path((t, a)): Path<(String, String)>,
    body: String,
) -> Response {
    member_op(&ctx, &h, &t, &a, &body, |r: Renew, actor, now| {
        let years = r.years.unwrap_or(ctx.app.cfg().lifecycle.term_years);
        tenants::renew(&ctx.app.store, &t, &a, years, actor, now)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanChange {
    plan: String,
    #[serde(default)]
    addons: u32,
}

async fn member_plan(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path((t, a)): Path<(String, String)>,
    body: String,
) -> Response {
    member_op(&ctx, &h, &t, &a, &body, |p: PlanChange, actor, now| {
        tenants::set_plan(
            &ctx.app.store,
            &ctx.app.cfg(),
            &t,
            &a,
            &p.plan,
            p.addons,
            actor,
            now,
        )
    })
}

/// The national view of any mailbox's downgrade plan (the CLI's).
async fn national_downgrade_plan(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path(a): Path<String>,
) -> Response {
    if let Err(r) = national(&ctx, &h) {
        return r;
    }
    match blocking(|| {
        let acc = crate::accounts::get(&ctx.app.store, &a)?
            .ok_or_else(|| TenantError::NotFound(format!("mailbox {a}")))?;
        ctx.app.downgrade_plan(&acc).map_err(TenantError::Conflict)
    }) {
        Ok(p) => Json(p).into_response(),
        Err(e) => fail(e),
    }
}

async fn member_downgrade_plan(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path((t, a)): Path<(String, String)>,
) -> Response {
    if let Err(r) = scope(&ctx, &h, &t) {
        return r;
    }
    match blocking(|| {
        let acc = tenants::member(&ctx.app.store, &t, &a)?;
        ctx.app.downgrade_plan(&acc).map_err(TenantError::Conflict)
    }) {
        Ok(p) => Json(p).into_response(),
        Err(e) => denied_member(&ctx, &h, &t, &a, e),
    }
}

#[derive(Deserialize)]
struct BulkQuery {
    #[serde(default)]
    partial: bool,
}

async fn bulk(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path(t): Path<String>,
    Query(q): Query<BulkQuery>,
    body: String,
) -> Response {
    let c = match scope(&ctx, &h, &t) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let tenant = match tenant_of(&ctx, &t) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = ctx.app.clock.now();
    match blocking(|| {
        tenants::bulk_load(
            &ctx.app.store,
            &ctx.app.cfg(),
            &tenant,
            &body,
            q.partial,
            None,
            &c.name(),
            now,
        )
    }) {
        Ok(report) => {
            let status = if report.applied {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            let credentials = tenants::credentials_csv(&report.created);
            (
                status,
                Json(json!({
                    "applied": report.applied,
                    "created": report.created,
                    "rejected": report.rejected,
                    "credentials_csv": credentials,
                })),
            )
                .into_response()
        }
        Err(e) => fail(e),
    }
}

#[derive(Deserialize)]
struct ExportQuery {
    #[serde(default)]
    format: Option<String>,
}

fn export_response(ctx: &Ctx, tenant: Option<&str>, q: &ExportQuery) -> Response {
    let json = match q.format.as_deref() {
        None | Some("csv") => false,
        Some("json") => true,
        Some(other) => {
            return fail(TenantError::Invalid {
                field: "format".into(),
                message: format!("{other:?}: use csv or json"),
            });
        }
    };
    // Written into memory in one pass over the mailboxes (no per-row
    // lookups); a million rows is some tens of MB.
    let mut out = Vec::new();
    match blocking(|| tenants::export(&ctx.app.store, tenant, json, &mut out)) {
        Ok(_) => {
            let ct = if json {
                "application/x-ndjson"
            } else {
                "text/csv; charset=utf-8"
            };
            ([(header::CONTENT_TYPE, ct)], Body::from(out)).into_response()
        }
        Err(e) => fail(e),
    }
}

async fn export_tenant(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path(t): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Response {
    if let Err(r) = scope(&ctx, &h, &t) {
        return r;
    }
    export_response(&ctx, Some(&t), &q)
}

async fn export_all(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Query(q): Query<ExportQuery>,
) -> Response {
    if let Err(r) = national(&ctx, &h) {
        return r;
    }
    export_response(&ctx, None, &q)
}

async fn report_tenant(State(ctx): State<Ctx>, h: HeaderMap, Path(t): Path<String>) -> Response {
    if let Err(r) = scope(&ctx, &h, &t) {
        return r;
    }
    match blocking(|| tenants::plans_report(&ctx.app.store, &ctx.app.cfg(), Some(&t))) {
        Ok(l) => Json(l).into_response(),
        Err(e) => fail(e),
    }
}

async fn report_all(State(ctx): State<Ctx>, h: HeaderMap) -> Response {
    if let Err(r) = national(&ctx, &h) {
        return r;
    }
    match blocking(|| tenants::plans_report(&ctx.app.store, &ctx.app.cfg(), None)) {
        Ok(l) => Json(l).into_response(),
        Err(e) => fail(e),
    }
}

async fn sweep(State(ctx): State<Ctx>, h: HeaderMap) -> Response {
    if let Err(r) = national(&ctx, &h) {
        return r;
    }
    match blocking(|| ctx.app.sweep()) {
        // Accounts that could not be changed are named, so an operator
        // (or a cron job) sees a partial sweep without reading the logs.
        Ok(s) => Json(s).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    }
}

/// A new API token for an order (national only), the old one revoked;
/// shown once.
async fn rotate_token(State(ctx): State<Ctx>, h: HeaderMap, Path(t): Path<String>) -> Response {
    if let Err(r) = national(&ctx, &h) {
        return r;
    }
    let now = ctx.app.clock.now();
    match blocking(|| tenants::rotate_token(&ctx.app.store, &t, "admin", now)) {
        Ok(token) => Json(json!({"tenant": t, "token": token})).into_response(),
        Err(e) => fail(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PanelPassword {
    #[serde(default)]
    password: Option<String>,
    /// Also turn the panel's second factor off: the way back in for an
    /// order that lost its authenticator.
    #[serde(default)]
    reset_second_factor: bool,
}

/// A new web-panel password for an order (national only): the given one,
/// or a random one; shown once. The order's open panel sessions end.
async fn panel_password(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path(t): Path<String>,
    body: String,
) -> Response {
    let parsed: Result<PanelPassword, Response> = parse(&body);
    if let Err(r) = national(&ctx, &h) {
        return r;
    }
    let p = match parsed {
        Ok(p) => p,
        Err(r) => return r,
    };
    let now = ctx.app.clock.now();
    match blocking(|| {
        tenants::set_panel_password(
            &ctx.app.store,
            &t,
            p.password.as_deref(),
            p.reset_second_factor,
            "admin",
            now,
        )
    }) {
        Ok(pw) => Json(json!({"panel_login": t, "panel_password": pw})).into_response(),
        Err(e) => fail(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Note {
    note: String,
}

async fn anomaly_report(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path((t, a)): Path<(String, String)>,
    body: String,
) -> Response {
    let parsed: Result<Note, Response> = parse(&body);
    let c = match scope(&ctx, &h, &t) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let n = match parsed {
        Ok(n) => n,
        Err(r) => return r,
    };
    let now = ctx.app.clock.now();
    match blocking(|| tenants::report_anomaly(&ctx.app.store, &t, &a, &n.note, &c.name(), now)) {
        Ok(x) => (StatusCode::CREATED, Json(x)).into_response(),
        Err(e) => denied_member(&ctx, &h, &t, &a, e),
    }
}

async fn anomalies_list(State(ctx): State<Ctx>, h: HeaderMap) -> Response {
    if let Err(r) = national(&ctx, &h) {
        return r;
    }
    match blocking(|| tenants::anomalies(&ctx.app.store, None)) {
        Ok(l) => Json(l).into_response(),
        Err(e) => fail(e),
    }
}

async fn anomaly_resolve(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let parsed: Result<Note, Response> = parse(&body);
    if let Err(r) = national(&ctx, &h) {
        return r;
    }
    let n = match parsed {
        Ok(n) => n,
        Err(r) => return r,
    };
    let now = ctx.app.clock.now();
    match blocking(|| tenants::resolve_anomaly(&ctx.app.store, &id, &n.note, "admin", now)) {
        Ok(x) => Json(x).into_response(),
        Err(e) => fail(e),
    }
}

/// The OpenAPI document (kept in the repo at `docs/openapi.json`).
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../docs/openapi.json"),
    )
        .into_response()
}

pub(super) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/tenants", get(tenants_list).post(tenants_create))
        .route(
            "/tenants/{t}/mailboxes",
            get(members_list).post(members_create),
        )
        .route(
            "/tenants/{t}/mailboxes/{a}",
            get(member_get).patch(member_edit),
        )
        .route(
            "/tenants/{t}/mailboxes/{a}/password-reset",
            post(member_reset),
        )
        .route("/tenants/{t}/mailboxes/{a}/cancel", post(member_cancel))
        .route("/tenants/{t}/mailboxes/{a}/unblock", post(member_unblock))
        .route("/tenants/{t}/mailboxes/{a}/transfer", post(member_transfer))
        .route("/tenants/{t}/mailboxes/{a}/renew", post(member_renew))
        .route("/tenants/{t}/mailboxes/{a}/plan", post(member_plan))
        .route(
            "/tenants/{t}/mailboxes/{a}/downgrade-plan",
            get(member_downgrade_plan),
        )
        // A roll as large as the panel takes (not axum's 2 MB default).
        .route(
            "/tenants/{t}/bulk",
            post(bulk).layer(axum::extract::DefaultBodyLimit::max(tenants::BULK_MAX)),
        )
        .route("/tenants/{t}/export", get(export_tenant))
        .route("/export", get(export_all))
        .route("/report", get(report_all))
        .route("/tenants/{t}/report", get(report_tenant))
        .route(
            "/mailboxes/{a}/downgrade-plan",
            get(national_downgrade_plan),
        )
        .route("/sweep", post(sweep))
        .route("/tenants/{t}/panel-password", post(panel_password))
        .route("/tenants/{t}/token", post(rotate_token))
        .route("/tenants/{t}/mailboxes/{a}/anomaly", post(anomaly_report))
        .route("/anomalies", get(anomalies_list))
        .route("/anomalies/{id}/resolve", post(anomaly_resolve))
}
