//! Admin HTTP API (axum) on the admin listener: what the CLI needs while the
//! daemon holds the store (one process at a time), and health.
//!
//! Owns: routes, bearer-token authentication (the token is written at start
//! to `<data_dir>/admin.token`, mode 0600, for the local CLI), and the one
//! JSON error shape `{"error": code, "message": text}`. Must not touch:
//! the storage engine (through `accounts` / `audit` only).

use crate::app::App;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

mod holder;
mod ordini;

#[derive(Clone)]
struct Ctx {
    app: Arc<App>,
    token: Arc<String>,
    /// The web panels' login throttle, which the holder API's Basic
    /// credentials count against too.
    throttle: Arc<crate::web::session::Sessions>,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

/// A JSON body, parsed after the caller is known (an unauthorized caller
/// learns nothing of the schema); an empty body is `{}`.
#[allow(clippy::result_large_err)] // the response itself, returned as is
fn parse<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, Response> {
    let body = if body.trim().is_empty() { "{}" } else { body };
    serde_json::from_str(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid", format!("body: {e}")))
}

/// None when the bearer token is right; the 401 response otherwise.
fn unauthorized(ctx: &Ctx, headers: &HeaderMap) -> Option<Response> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant-time comparison of equal-length secrets.
    let ok = given.len() == ctx.token.len()
        && openssl::memcmp::eq(given.as_bytes(), ctx.token.as_bytes());
    (!ok).then(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong admin token",
        )
    })
}

fn account_error(e: crate::accounts::AccountError) -> Response {
    use crate::accounts::AccountError as E;
    match e {
        E::BadAddress(_) | E::WeakPassword => {
            error(StatusCode::BAD_REQUEST, "invalid", e.to_string())
        }
        E::Exists(_) => error(StatusCode::CONFLICT, "exists", e.to_string()),
        E::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        other => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            other.to_string(),
        ),
    }
}

#[derive(Deserialize)]
struct NewMailbox {
    address: String,
    password: String,
}

#[derive(Deserialize)]
struct NewPassword {
    password: String,
}

#[derive(Deserialize)]
struct Search {
    msgid: Option<String>,
    from: Option<String>,
    to: Option<String>,
    since: Option<String>,
}

async fn list(State(ctx): State<Ctx>, h: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&ctx, &h) {
        return r;
    }
    match tokio::task::block_in_place(|| crate::accounts::list(&ctx.app.store)) {
        Ok(list) => Json(
            list.into_iter()
                .map(|a| json!({"address": a.address, "state": a.state, "created": a.created}))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => account_error(e),
    }
}

async fn add(State(ctx): State<Ctx>, h: HeaderMap, body: String) -> Response {
    if let Some(r) = unauthorized(&ctx, &h) {
        return r;
    }
    let m: NewMailbox = match parse(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let now = ctx.app.clock.now();
    match tokio::task::block_in_place(|| {
        crate::accounts::add(&ctx.app.store, &m.address, &m.password, now)
    }) {
        Ok(a) => (StatusCode::CREATED, Json(json!({"address": a.address}))).into_response(),
        Err(e) => account_error(e),
    }
}

async fn passwd(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path(address): Path<String>,
    body: String,
) -> Response {
    if let Some(r) = unauthorized(&ctx, &h) {
        return r;
    }
    let p: NewPassword = match parse(&body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let now = ctx.app.clock.now();
    match tokio::task::block_in_place(|| {
        crate::accounts::set_password(&ctx.app.store, &address, &p.password, now)
    }) {
        Ok(()) => Json(json!({"address": address})).into_response(),
        Err(e) => account_error(e),
    }
}

async fn remove(State(ctx): State<Ctx>, h: HeaderMap, Path(address): Path<String>) -> Response {
    if let Some(r) = unauthorized(&ctx, &h) {
        return r;
    }
    let now = ctx.app.clock.now();
    let removed = tokio::task::block_in_place(|| {
        let acc = crate::tenants::remove_mailbox(&ctx.app.store, &address, "admin", now)?;
        let mail = ctx.app.cfg().data_dir.join("mail");
        let stamp = now.format("%Y%m%dT%H%M%SZ").to_string();
        // Removed on the record already: a Maildir that cannot be moved
        // is reported, for the operator to move by hand.
        let aside = crate::mailsync::set_aside(&ctx.app.store, &mail, &acc.address, &stamp);
        ctx.app.forget_usage(&acc.address);
        Ok::<_, crate::tenants::TenantError>((acc.address, aside))
    });
    match removed {
        Ok((address, Ok(aside))) => Json(json!({
            "address": address,
            "messages_set_aside": aside.map(|p| p.display().to_string()),
        }))
        .into_response(),
        Ok((address, Err(e))) => {
            tracing::warn!(event = "maildir_not_set_aside", %address, error = %e);
            Json(json!({"address": address, "warning": format!("messages not set aside: {e}")}))
                .into_response()
        }
        Err(e) if e.code() == "not_found" => {
            error(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn log_verify(State(ctx): State<Ctx>, h: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&ctx, &h) {
        return r;
    }
    match tokio::task::block_in_place(|| ctx.app.verify_log()) {
        Ok(crate::audit::ChainStatus::Intact { records, first_seq, head_seq }) => {
            Json(json!({"intact": true, "records": records, "first_seq": first_seq, "head_seq": head_seq})).into_response()
        }
        Ok(crate::audit::ChainStatus::Broken { seq, reason }) => {
            Json(json!({"intact": false, "seq": seq, "reason": reason})).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", e),
    }
}

async fn log_search(State(ctx): State<Ctx>, h: HeaderMap, Query(q): Query<Search>) -> Response {
    if let Some(r) = unauthorized(&ctx, &h) {
        return r;
    }
    let since = match q.since.as_deref().map(chrono::DateTime::parse_from_rfc3339) {
        None => None,
        Some(Ok(t)) => Some(t.to_utc()),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, "invalid", format!("since: {e}")),
    };
    let filter = crate::audit::Filter {
        id: q.msgid,
        from: q.from,
        to: q.to,
        party: None,
        since,
    };
    match tokio::task::block_in_place(|| crate::audit::search(&ctx.app.store, &filter)) {
        Ok(recs) => Json(
            recs.into_iter()
                .map(|(seq, r)| {
                    let mut v = serde_json::to_value(r).unwrap_or_default();
                    v["seq"] = seq.into();
                    v
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
    }
}

/// Reload the configuration file (as SIGHUP does): 200, or 422 with every
/// problem while the running configuration stays.
async fn reload(State(ctx): State<Ctx>, h: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&ctx, &h) {
        return r;
    }
    match tokio::task::block_in_place(|| ctx.app.reload_from_file()) {
        Ok(()) => Json(json!({"reloaded": true})).into_response(),
        Err(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "invalid", "message": "configuration not reloaded", "errors": errors})),
        )
            .into_response(),
    }
}

/// Refresh the provider index now (as the daily job does).
async fn index_refresh(State(ctx): State<Ctx>, h: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&ctx, &h) {
        return r;
    }
    match tokio::task::block_in_place(|| ctx.app.refresh_index()) {
        Ok(n) => Json(json!({"providers": n})).into_response(),
        Err(e) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("index not replaced (the last good copy stays): {e}"),
        ),
    }
}

fn queue_error(e: crate::app::QueueActionError) -> Response {
    use crate::app::QueueActionError as E;
    let status = match &e {
        E::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        E::Busy(_) => (StatusCode::CONFLICT, "busy"),
        E::NotReleasable(..) => (StatusCode::UNPROCESSABLE_ENTITY, "not_releasable"),
        E::Failed(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    error(status.0, status.1, e.to_string())
}

/// The queue and the quarantine (`pecd queue list`).
async fn queue_list(State(ctx): State<Ctx>, h: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&ctx, &h) {
        return r;
    }
    match tokio::task::block_in_place(|| ctx.app.queue_view()) {
        Ok(v) => Json(v).into_response(),
        Err(e) => queue_error(e),
    }
}

/// A queued item due now (`pecd queue retry`).
async fn queue_retry(State(ctx): State<Ctx>, h: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = unauthorized(&ctx, &h) {
        return r;
    }
    match tokio::task::block_in_place(|| ctx.app.retry_queued(&id)) {
        Ok(item) => Json(item).into_response(),
        Err(e) => queue_error(e),
    }
}

/// A given-up item back in the queue (`pecd queue release`).
async fn quarantine_release(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = unauthorized(&ctx, &h) {
        return r;
    }
    match tokio::task::block_in_place(|| ctx.app.release_quarantined(&name)) {
        Ok(item) => Json(item).into_response(),
        Err(e) => queue_error(e),
    }
}

#[derive(Deserialize)]
struct StatsQuery {
    period: String,
}

/// AgID statistics of a quadrimestre (CSV).
async fn stats(State(ctx): State<Ctx>, h: HeaderMap, Query(q): Query<StatsQuery>) -> Response {
    if let Some(r) = unauthorized(&ctx, &h) {
        return r;
    }
    let period = match crate::stats::Period::parse(&q.period) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid", e),
    };
    let cfg = ctx.app.cfg();
    match tokio::task::block_in_place(|| {
        crate::stats::csv(
            &ctx.app.store,
            period,
            cfg.provider.local_domains.len(),
            &cfg.provider.name,
        )
    }) {
        Ok(text) => (
            [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    }
}

/// Record an outage in the ledger behind P02.
async fn outage(State(ctx): State<Ctx>, h: HeaderMap, body: String) -> Response {
    if let Some(r) = unauthorized(&ctx, &h) {
        return r;
    }
    let o: crate::stats::Outage = match serde_json::from_str(&body) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid", format!("body: {e}")),
    };
    let now = ctx.app.clock.now();
    match tokio::task::block_in_place(|| crate::stats::add_outage(&ctx.app.store, &o, now)) {
        Ok(()) => (StatusCode::CREATED, Json(json!({"recorded": true}))).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, "invalid", e),
    }
}

/// Ready: listeners bound, certificates loaded (the App exists only with
/// them), and the store answering a read.
async fn readyz(State(ctx): State<Ctx>) -> Response {
    let listening = ctx.app.ready.load(std::sync::atomic::Ordering::Relaxed);
    let store = tokio::task::block_in_place(|| {
        ctx.app
            .store
            .get(crate::store::Table::Meta, b"readyz")
            .is_ok()
    });
    let body = json!({"listeners": listening, "store": store, "certificates": true});
    let status = if listening && store {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text exposition (unauthenticated, like `/healthz`: bind the
/// admin listener to a trusted network).
async fn metrics_text() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// Write a fresh admin token for the local CLI (mode 0600) and return it.
pub fn write_token(data_dir: &std::path::Path) -> std::io::Result<String> {
    let token = crate::tenants::random_secret(32);
    if token.is_empty() {
        return Err(std::io::Error::other(
            "no random source for the admin token",
        ));
    }
    write_secret_file(&data_dir.join("admin.token"), token.as_bytes())?;
    Ok(token)
}

/// Write `bytes` to `path` readable by its owner only (mode 0600): tokens,
/// files of one-time passwords.
pub fn write_secret_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only to a file created now: one left from before
    // (or made by hand) is narrowed too before the secret goes in.
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(bytes)?;
    f.sync_all()
}

/// Bind the configured admin listener (if any), write the token, serve.
pub async fn start(
    app: Arc<App>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<std::net::SocketAddr>, String> {
    let Some(addr) = app.cfg().listen.admin else {
        return Ok(None);
    };
    let token = write_token(&app.cfg().data_dir).map_err(|e| format!("admin token: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(serve(app, token, listener, shutdown));
    Ok(Some(local))
}

/// Serve the admin API on `listener` until `shutdown` flips.
pub async fn serve(
    app: Arc<App>,
    token: String,
    listener: tokio::net::TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let throttle = Arc::new(crate::web::session::Sessions::default());
    let web = crate::web::router(app.clone(), token.clone(), throttle.clone());
    let ctx = Ctx {
        app,
        token: Arc::new(token),
        throttle,
    };
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/reload", axum::routing::post(reload))
        .route("/stats", get(stats))
        .route("/index/refresh", axum::routing::post(index_refresh))
        .route("/outages", axum::routing::post(outage))
        .route("/metrics", get(metrics_text))
        .route("/mailboxes", get(list).post(add))
        .route("/mailboxes/{address}", axum::routing::delete(remove))
        .route("/mailboxes/{address}/password", put(passwd))
        .route("/log/verify", get(log_verify))
        .route("/log/search", get(log_search))
        .route("/queue", get(queue_list))
        .route("/queue/{id}/retry", axum::routing::post(queue_retry))
        .route(
            "/quarantine/{name}/release",
            axum::routing::post(quarantine_release),
        )
        .merge(ordini::routes())
        .merge(holder::routes())
        .with_state(ctx)
        .merge(web);
    // The peer address: the web panel's login throttling and legal log.
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await
}

/// The CLI side: one JSON request to a running daemon's admin API over
/// loopback HTTP/1.1 (a dozen lines; no client crate needed).
pub fn call(
    addr: std::net::SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value), String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    call_raw(addr, token, method, path, "application/json", &body)
}

/// [`call`] with a body of any type (e.g. `text/csv` for a bulk load).
pub fn call_raw(
    addr: std::net::SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> Result<(u16, serde_json::Value), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .map_err(|e| format!("admin endpoint {addr}: {e}"))?;
    // Some calls take a while on a large provider (a log verification of
    // 30 months, a bulk load of a whole roll, a national export): the CLI
    // waits for them rather than give up while the daemon keeps working.
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(1800)));
    // A token, or a ready `Basic …` credential (the holder's endpoints).
    let auth = if token.starts_with("Basic ") {
        token.to_string()
    } else {
        format!("Bearer {token}")
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("malformed HTTP status line")?;
    let value = if body.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_string()))
    };
    Ok((status, value))
}

/// Percent-encode one path segment (an address has `@` and maybe `+`).
pub fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_token_file_is_private_even_when_it_was_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let token = super::write_token(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), token);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
