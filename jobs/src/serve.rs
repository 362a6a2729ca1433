//! `owsu-jobs serve`: the oversight dashboard over HTTP (axum).
//!
//! The board ([`crate::dashboard::Board`]) is loaded from the lake at start and again every
//! `refresh` in the background; a request renders a page from the board in memory and never
//! waits for the lake. A failed refresh keeps the last board and says so in the log. Pages are
//! `GET /`, `/p/KH-PP` and `/u/KH-PPDD`, each in Khmer with `?lang=km`; `/health/live` and
//! `/health/ready` answer probes.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::NaiveDate;
use owsu_lake::Store;
use owsu_schemas::Reference;

use crate::dashboard::{self, Board, Lang, Scope};

/// How the dashboard serves.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// How often the board is loaded again from the lake.
    pub refresh: Duration,
    /// The day to show (default: the latest day with figures, at every refresh).
    pub as_of: Option<NaiveDate>,
}

struct App {
    store: Store,
    reference: Reference,
    config: ServeConfig,
    board: RwLock<Arc<Board>>,
}

/// Loads the board, then serves the dashboard on `listener` until Ctrl-C (or SIGTERM's default
/// end of the process). Fails when the first load fails: a dashboard of nothing is no use.
pub async fn serve(
    store: Store,
    reference: Reference,
    config: ServeConfig,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    let board = dashboard::load(&store, &reference, config.as_of).await?;
    let addr = listener.local_addr()?;
    println!(
        "dashboard on http://{addr}/ (as of {}; refreshed every {} s); Ctrl-C stops it",
        board.as_of,
        config.refresh.as_secs()
    );
    let app = Arc::new(App {
        store,
        reference,
        config,
        board: RwLock::new(Arc::new(board)),
    });
    // On a thread of its own: the lake reader's futures are not `Send` (delta-rs file streams),
    // so the loads run with `block_on` on this runtime's handle, not as a spawned task.
    let handle = tokio::runtime::Handle::current();
    let refreshed = app.clone();
    std::thread::spawn(move || refresh(&handle, &refreshed));
    let router = axum::Router::new()
        .route("/", get(nation))
        .route("/p/{code}", get(province))
        .route("/u/{code}", get(unit))
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(|| async { "ok\n" }))
        .with_state(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// Loads the board again every `refresh`, keeping the last one when a load fails.
fn refresh(handle: &tokio::runtime::Handle, app: &App) {
    loop {
        std::thread::sleep(app.config.refresh);
        match handle.block_on(dashboard::load(
            &app.store,
            &app.reference,
            app.config.as_of,
        )) {
            Ok(b) => *app.board.write().expect("board lock") = Arc::new(b),
            Err(e) => tracing::warn!("dashboard refresh failed, showing the last board: {e:#}"),
        }
    }
}

fn render(app: &App, scope: Scope<'_>, uri: &Uri) -> Response {
    let board = app.board.read().expect("board lock").clone();
    match dashboard::page(&board, &app.reference, scope, Lang::from_query(uri.query())) {
        Some(page) => Html(page).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no such province or unit in the registry\n",
        )
            .into_response(),
    }
}

async fn nation(State(app): State<Arc<App>>, uri: Uri) -> Response {
    render(&app, Scope::Nation, &uri)
}

async fn province(State(app): State<Arc<App>>, Path(code): Path<String>, uri: Uri) -> Response {
    render(&app, Scope::Province(&code), &uri)
}

async fn unit(State(app): State<Arc<App>>, Path(code): Path<String>, uri: Uri) -> Response {
    render(&app, Scope::Unit(&code), &uri)
}
