//! The admin console: a small server-rendered web page the applier serves for the HQ data team
//! (`[hq.console]`, off by default, loopback by default): the sites, parked rows with what
//! they wait for (retry, drop with a reason), conflicts with both versions side by side
//! (resolved from the page), and rejected batches. It does what the CLI does, through the same
//! library calls (`ParkedRows`, `ConflictQueue`, `site_statuses`), on its own connections.
//!
//! Access: people sign in with the token of `[hq.console] token_file`; the console then sets
//! a session cookie (a random secret made at start, `HttpOnly`, `SameSite=Strict`), which
//! every page needs. Every form that changes HQ carries the same secret as a field, so another
//! site cannot make a signed-in browser post to it. Scripts may send
//! `Authorization: Bearer <token>` instead. Row values appear only on a conflict's own page,
//! behind the sign-in, as `conflicts show --values` prints them; nothing is logged but the
//! actions taken (ids, never values).

mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Form, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use mysql_async::Opts;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tributary_apply::{
    Choice, ConflictFilter, ConflictPolicies, ConflictQueue, ParkedFilter, ParkedRows,
    ResolveOutcome, RetryOutcome,
};
use tributary_schema::Policy;

/// The session cookie's name.
const COOKIE: &str = "tributary_console";
/// Rows listed per page.
const LIST_LIMIT: u32 = 200;

/// What the console needs, from `[hq]` and `[hq.console]`.
#[derive(Clone)]
pub struct ConsoleSettings {
    pub listen: SocketAddr,
    pub token: String,
    pub hq: Opts,
    pub database: String,
    pub policy: Policy,
    pub conflicts: ConflictPolicies,
    /// Record what the console's actions write for the integration topics.
    pub record_applied: bool,
    /// `[hq] site_silent_after_s`: a site silent this long is shown offline.
    pub site_silent_after_s: u64,
}

impl std::fmt::Debug for ConsoleSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSettings")
            .field("listen", &self.listen)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

struct Console {
    settings: ConsoleSettings,
    /// The session cookie's value and the forms' anti-forgery field.
    session: String,
}

type Shared = Arc<Console>;

/// The running console; [`ConsoleServer::stop`] ends it.
pub struct ConsoleServer {
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl ConsoleServer {
    /// Binds the configured address and serves until stopped.
    pub async fn start(settings: ConsoleSettings) -> Result<ConsoleServer> {
        let address = settings.listen;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| {
                format!("cannot serve the console on {address}; choose a free [hq.console] listen")
            })?;
        let bound = listener.local_addr()?;
        let session = tributary_batch::random_hex(32)
            .map_err(|e| anyhow::anyhow!("no randomness for the console's session: {e}"))?;
        let shared: Shared = Arc::new(Console { settings, session });
        let signed_in = Router::new()
            .route("/", get(sites))
            .route("/parked", get(parked))
            .route("/parked/{id}/retry", post(retry_parked))
            .route("/parked/{id}/drop", post(drop_parked))
            .route("/conflicts", get(conflicts))
            .route("/conflicts/{id}", get(conflict))
            .route("/conflicts/{id}/resolve", post(resolve_conflict))
            .route("/rejected", get(rejected))
            .layer(middleware::from_fn_with_state(
                shared.clone(),
                require_sign_in,
            ));
        let router = Router::new()
            .route("/login", get(login_page).post(login))
            .merge(signed_in)
            .with_state(shared);
        let shutdown = CancellationToken::new();
        let stopped = shutdown.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(address = %bound, error = %e, "the console stopped");
            }
        });
        tracing::info!("serving the admin console on http://{bound}/");
        Ok(ConsoleServer {
            shutdown,
            task: Some(task),
        })
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ConsoleServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Pages need the session cookie (or the token as a bearer); others go to the sign-in page.
async fn require_sign_in(State(console): State<Shared>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let signed_in = cookie(headers).is_some_and(|c| same(&c, &console.session))
        || bearer.is_some_and(|t| same(t, &console.settings.token));
    if signed_in {
        next.run(request).await
    } else {
        Redirect::to("/login").into_response()
    }
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then(|| value.to_owned())
        })
}

/// Compares secrets in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn login_page() -> Html<String> {
    Html(pages::login(None))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(console): State<Shared>, Form(form): Form<LoginForm>) -> Response {
    if !same(form.token.trim(), &console.settings.token) {
        tracing::warn!("console sign-in refused: wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            Html(pages::login(Some("That token is not the console's."))),
        )
            .into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        console.session
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// A page, or the error that kept it from being made (named, never with values).
fn page(result: Result<String>) -> Response {
    match result {
        Ok(body) => Html(body).into_response(),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "console page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html(pages::error(&format!("{e:#}"))),
            )
                .into_response()
        }
    }
}

async fn sites(State(console): State<Shared>) -> Response {
    page(
        async {
            let mut conn = mysql_async::Conn::new(console.settings.hq.clone()).await?;
            let statuses = tributary_apply::site_statuses(&mut conn).await?;
            conn.disconnect().await.ok();
            Ok(pages::sites(
                &statuses,
                console.settings.site_silent_after_s,
            ))
        }
        .await,
    )
}

async fn parked_rows(console: &Console) -> Result<ParkedRows> {
    let s = &console.settings;
    let rows = ParkedRows::connect(s.hq.clone(), &s.database, &s.policy, s.conflicts.clone())
        .await
        .context("connecting to HQ")?;
    Ok(rows.recording_applied_changes(s.record_applied))
}

async fn conflict_queue(console: &Console) -> Result<ConflictQueue> {
    let s = &console.settings;
    let queue = ConflictQueue::connect(s.hq.clone(), &s.database, &s.policy, s.conflicts.clone())
        .await
        .context("connecting to HQ")?;
    Ok(queue.recording_applied_changes(s.record_applied))
}

async fn parked(State(console): State<Shared>) -> Response {
    page(
        async {
            let mut rows = parked_rows(&console).await?;
            parked_page(&mut rows, &console, None).await
        }
        .await,
    )
}

/// The parked rows page, oldest first, with what an action just did.
async fn parked_page(
    rows: &mut ParkedRows,
    console: &Console,
    said: Option<&str>,
) -> Result<String> {
    let filter = ParkedFilter {
        limit: LIST_LIMIT,
        ..ParkedFilter::default()
    };
    let entries = rows.list(&filter).await?;
    Ok(pages::parked(&entries, &console.session, said))
}

/// A form that changes HQ.
#[derive(Deserialize)]
struct ActionForm {
    /// The anti-forgery field: the session's secret.
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    choice: String,
    #[serde(default)]
    by: String,
    /// The rest: a merge's ticked columns (`take:<column>`).
    #[serde(flatten)]
    other: std::collections::BTreeMap<String, String>,
}

/// An [`ActionForm`] whose anti-forgery field is the session's; any other is refused (403)
/// before a handler sees it.
struct CheckedForm(ActionForm);

impl axum::extract::FromRequest<Shared> for CheckedForm {
    type Rejection = Response;

    async fn from_request(request: Request, console: &Shared) -> Result<Self, Self::Rejection> {
        let Form(form) = Form::<ActionForm>::from_request(request, console)
            .await
            .map_err(IntoResponse::into_response)?;
        if same(&form.csrf, &console.session) {
            Ok(CheckedForm(form))
        } else {
            Err((
                StatusCode::FORBIDDEN,
                Html(pages::error("This form did not come from the console.")),
            )
                .into_response())
        }
    }
}

async fn retry_parked(
    State(console): State<Shared>,
    Path(id): Path<u64>,
    _from_the_console: CheckedForm,
) -> Response {
    page(
        async {
            let mut rows = parked_rows(&console).await?;
            let said = match rows.retry(id).await? {
                RetryOutcome::Released { released } => {
                    format!("Parked row {id} was written at HQ ({released} rows released).")
                }
                RetryOutcome::StillParked(entry) => {
                    format!("Parked row {id} still waits: {}", entry.reason)
                }
                RetryOutcome::Conflict => {
                    format!("Parked row {id} met a conflict; see Conflicts.")
                }
                RetryOutcome::Unknown => format!("There is no parked row {id}."),
            };
            tracing::info!(parked_id = id, "console: parked row retried");
            parked_page(&mut rows, &console, Some(&said)).await
        }
        .await,
    )
}

async fn drop_parked(
    State(console): State<Shared>,
    Path(id): Path<u64>,
    CheckedForm(form): CheckedForm,
) -> Response {
    page(
        async {
            let reason = form.reason.trim();
            anyhow::ensure!(
                !reason.is_empty(),
                "a parked row is dropped only with a reason; write why in the field"
            );
            let mut rows = parked_rows(&console).await?;
            let said = match rows.drop_row(id, reason).await? {
                Some(_) => format!("Parked row {id} was dropped; the reason is recorded."),
                None => format!("There is no parked row {id}."),
            };
            tracing::info!(parked_id = id, "console: parked row dropped");
            parked_page(&mut rows, &console, Some(&said)).await
        }
        .await,
    )
}

async fn conflicts(State(console): State<Shared>) -> Response {
    page(
        async {
            let filter = ConflictFilter {
                limit: LIST_LIMIT,
                ..ConflictFilter::default()
            };
            let entries = conflict_queue(&console).await?.list(&filter).await?;
            Ok(pages::conflicts(&entries))
        }
        .await,
    )
}

async fn conflict(State(console): State<Shared>, Path(id): Path<u64>) -> Response {
    page(
        async {
            let detail = conflict_queue(&console)
                .await?
                .show(id)
                .await?
                .with_context(|| format!("there is no conflict {id}"))?;
            Ok(pages::conflict(&detail, &console.session, None))
        }
        .await,
    )
}

async fn resolve_conflict(
    State(console): State<Shared>,
    Path(id): Path<u64>,
    CheckedForm(form): CheckedForm,
) -> Response {
    page(
        async {
            let by = match form.by.trim() {
                "" => "console",
                by => by,
            };
            let mut queue = conflict_queue(&console).await?;
            let said = match chosen(&form) {
                Err(problem) => format!("Conflict {id} was not resolved: {problem}"),
                Ok(choice) => match queue.resolve(id, &choice, by, None).await? {
                    ResolveOutcome::Resolved { released } => format!(
                        "Conflict {id} is resolved; {released} changes that queued behind it were applied."
                    ),
                    ResolveOutcome::AlreadyResolved { by } => {
                        format!("Conflict {id} was already resolved (by {by}).")
                    }
                    ResolveOutcome::Unknown => format!("There is no conflict {id}."),
                    ResolveOutcome::Refused(reason) => {
                        format!("Conflict {id} was not resolved: {reason}")
                    }
                },
            };
            tracing::info!(conflict_id = id, "console: conflict resolution submitted");
            let detail = queue
                .show(id)
                .await?
                .with_context(|| format!("there is no conflict {id}"))?;
            Ok(pages::conflict(&detail, &console.session, Some(&said)))
        }
        .await,
    )
}

/// The choice a resolve form carries; a merge takes the ticked columns.
fn chosen(form: &ActionForm) -> Result<Choice, String> {
    match form.choice.as_str() {
        "keep-hq" => Ok(Choice::KeepHq),
        "take-site" => Ok(Choice::TakeSite),
        "merge" => {
            let columns: Vec<String> = form
                .other
                .keys()
                .filter_map(|field| field.strip_prefix(pages::MERGE_FIELD_PREFIX))
                .map(str::to_owned)
                .collect();
            if columns.is_empty() {
                return Err(
                    "tick at least one column to take from the site, or take one \
                            version whole"
                        .to_owned(),
                );
            }
            Ok(Choice::Merge(columns))
        }
        other => Err(format!(
            "'{other}' is not a choice: keep-hq, take-site or merge"
        )),
    }
}

async fn rejected(State(console): State<Shared>) -> Response {
    page(
        async {
            let mut conn = mysql_async::Conn::new(console.settings.hq.clone()).await?;
            let batches = tributary_apply::rejected_batches(&mut conn, LIST_LIMIT).await?;
            conn.disconnect().await.ok();
            Ok(pages::rejected(&batches))
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; tributary_console=abc123; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers).as_deref(), Some("abc123"));
        assert_eq!(cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same("0123456789abcdef", "0123456789abcdef"));
        assert!(!same("0123456789abcdef", "0123456789abcdeg"));
        assert!(!same("0123456789abcdef", "0123456789abcde"));
    }
}
