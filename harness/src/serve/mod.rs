//! `ordeal serve [results/]`: a local web UI over a results directory. The list of runs and
//! campaigns, newest first, filtered by verdict, workload and bug, a page at a time; runs and
//! campaigns in progress with their live progress (from their `progress.json`); and every file
//! under the directory as it is (each run's `report.html` with its charts, each campaign's
//! `index.html`), never anything outside it.

pub mod pages;
pub mod progress;
pub mod scan;

use anyhow::{bail, Context, Result};
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// At most this many entries in a directory listing.
const MAX_DIR_ENTRIES: usize = 2000;
/// Files are streamed in chunks of this size.
const CHUNK_BYTES: usize = 64 * 1024;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The results directory (`ordeal test --results`, default `results`).
    #[arg(default_value = "results")]
    pub dir: PathBuf,
    /// Address to listen on. The default serves this machine only; anything else serves the
    /// results to the network, without authentication.
    #[arg(long, default_value = "127.0.0.1:8077")]
    pub listen: SocketAddr,
}

struct App {
    /// The results directory, canonical: every file served lies under it.
    root: PathBuf,
    root_name: String,
    cache: scan::Cache,
}

/// Why a requested path is not served.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `..`, a NUL or a backslash in the path.
    BadPath,
    /// It resolves (through a symlink) outside the results directory.
    Outside,
    NotFound,
}

/// The file `request` (a decoded path below `/files/`) names under `root` (canonical), or why
/// not: no `..` component is accepted, and whatever it resolves to (symlinks followed) must
/// still lie under `root`.
pub fn resolve(root: &Path, request: &str) -> Result<PathBuf, Refusal> {
    if request.contains('\0') || request.contains('\\') {
        return Err(Refusal::BadPath);
    }
    let mut path = root.to_path_buf();
    for part in request.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(Refusal::BadPath),
            p => path.push(p),
        }
    }
    let real = path.canonicalize().map_err(|_| Refusal::NotFound)?;
    if !real.starts_with(root) {
        return Err(Refusal::Outside);
    }
    Ok(real)
}

fn content_type(path: &Path) -> &'static str {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let ext = name.rsplit('.').next().unwrap_or("");
    match ext {
        "html" | "htm" => "text/html; charset=utf-8",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "xml" => "application/xml; charset=utf-8",
        "gz" => "application/gzip",
        "jsonl" | "log" | "txt" | "edn" | "md" | "toml" | "tsv" | "csv" => {
            "text/plain; charset=utf-8"
        }
        _ if !name.contains('.') => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn refused(status: StatusCode, what: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{what}\n"),
    )
        .into_response()
}

async fn list(State(app): State<Arc<App>>, Query(f): Query<pages::Filters>) -> Response {
    let app2 = app.clone();
    match tokio::task::spawn_blocking(move || scan::scan(&app2.root, &app2.cache)).await {
        Ok(l) => Html(pages::render_list(&app.root_name, &l, &f)).into_response(),
        Err(e) => refused(StatusCode::INTERNAL_SERVER_ERROR, &format!("listing: {e}")),
    }
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<usize>,
}

async fn campaigns(State(app): State<Arc<App>>, Query(q): Query<PageQuery>) -> Response {
    let app2 = app.clone();
    match tokio::task::spawn_blocking(move || scan::scan(&app2.root, &app2.cache)).await {
        Ok(l) => Html(pages::render_campaigns(&l, q.page)).into_response(),
        Err(e) => refused(StatusCode::INTERNAL_SERVER_ERROR, &format!("listing: {e}")),
    }
}

async fn files_root(State(app): State<Arc<App>>) -> Response {
    serve_path(app, String::new()).await
}

async fn files(State(app): State<Arc<App>>, UrlPath(rel): UrlPath<String>) -> Response {
    serve_path(app, rel).await
}

/// Streams `file`, a chunk at a time (a history may be large).
async fn stream_file(file: PathBuf) -> Response {
    let f = match tokio::fs::File::open(&file).await {
        Ok(f) => f,
        Err(_) => return refused(StatusCode::NOT_FOUND, "not found"),
    };
    let len = f.metadata().await.map(|m| m.len()).ok();
    let chunks = futures::stream::unfold(f, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; CHUNK_BYTES];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let mut resp = Response::new(Body::from_stream(chunks));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type(&file)),
    );
    if let Some(len) = len {
        headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    }
    // Runs in progress change under the same name.
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}

async fn serve_path(app: Arc<App>, rel: String) -> Response {
    let real = match resolve(&app.root, &rel) {
        Ok(p) => p,
        Err(Refusal::BadPath) => {
            return refused(
                StatusCode::BAD_REQUEST,
                "refused: the path leaves the results directory",
            )
        }
        Err(Refusal::Outside) => {
            return refused(
                StatusCode::FORBIDDEN,
                "refused: that lies outside the results directory",
            )
        }
        Err(Refusal::NotFound) => return refused(StatusCode::NOT_FOUND, "not found"),
    };
    if !real.is_dir() {
        return stream_file(real).await;
    }
    // Relative links in a directory's page need the trailing slash.
    if !rel.is_empty() && !rel.ends_with('/') {
        let last = rel.rsplit('/').next().unwrap_or("");
        return Redirect::to(&format!("{}/", pages::encode(last, false))).into_response();
    }
    if real.join("index.html").is_file() {
        return stream_file(real.join("index.html")).await;
    }
    let dir = real.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let mut entries: Vec<(String, bool, u64)> = Vec::new();
        let mut truncated = false;
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entries.len() >= MAX_DIR_ENTRIES {
                truncated = true;
                break;
            }
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let meta = std::fs::metadata(e.path()).ok();
            entries.push((
                name,
                meta.as_ref().is_some_and(|m| m.is_dir()),
                meta.map(|m| m.len()).unwrap_or(0),
            ));
        }
        entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        (entries, truncated)
    })
    .await;
    match listed {
        Ok((entries, truncated)) => Html(pages::render_dir(
            rel.trim_end_matches('/'),
            &entries,
            truncated,
        ))
        .into_response(),
        Err(e) => refused(StatusCode::INTERNAL_SERVER_ERROR, &format!("listing: {e}")),
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(list))
        .route("/campaigns", get(campaigns))
        .route("/files", get(|| async { Redirect::permanent("/files/") }))
        .route("/files/", get(files_root))
        .route("/files/{*path}", get(files))
        .with_state(app)
}

/// Binds `addr`, naming the usual causes of failure.
fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    match std::net::TcpListener::bind(addr) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "cannot listen on {addr}: the port is in use (another `ordeal serve`?); choose another with --listen 127.0.0.1:PORT"
        ),
        Err(e) => Err(e).with_context(|| format!("cannot listen on {addr}")),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

fn serve(args: &ServeArgs) -> Result<()> {
    if !args.dir.is_dir() {
        bail!(
            "{} is not a directory: name the results directory (`ordeal test` writes results/ by default)",
            args.dir.display()
        );
    }
    let root = args
        .dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    let listener = bind(args.listen)?;
    listener
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    let local = listener.local_addr().context("reading the bound address")?;
    if !local.ip().is_loopback() {
        eprintln!(
            "ordeal serve: warning: {local} is not a loopback address: anyone who can reach it can read the results"
        );
    }
    let app = Arc::new(App {
        root_name: args.dir.display().to_string(),
        root,
        cache: scan::Cache::default(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .context("handing the listener to the runtime")?;
        eprintln!(
            "ordeal serve: serving {} at http://{local}/ (Ctrl-C stops)",
            app.root.display()
        );
        axum::serve(listener, router(app))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving")
    })
}

/// Entry point of `ordeal serve`: 0 after Ctrl-C or SIGTERM, 255 when it cannot serve.
pub fn run_serve(args: ServeArgs) -> i32 {
    match serve(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ordeal serve: {e:#}");
            255
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_refuses_dot_dot_and_symlinks_out_of_the_root() {
        let base =
            std::env::temp_dir().join(format!("ordeal-serve-resolve-{}", std::process::id()));
        let root = base.join("results");
        std::fs::create_dir_all(root.join("t/1")).unwrap();
        std::fs::write(root.join("t/1/report.html"), "<p>r</p>").unwrap();
        std::fs::write(base.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(&base, root.join("escape")).unwrap();
        std::os::unix::fs::symlink("t/1", root.join("latest")).unwrap();
        let root = root.canonicalize().unwrap();
        assert_eq!(
            resolve(&root, "t/1/report.html").unwrap(),
            root.join("t/1/report.html")
        );
        assert_eq!(
            resolve(&root, "latest/report.html").unwrap(),
            root.join("t/1/report.html")
        );
        assert_eq!(resolve(&root, "").unwrap(), root);
        for bad in [
            "../secret",
            "t/../../secret",
            "t/1/..",
            "..",
            "a\\b",
            "x\0y",
        ] {
            assert_eq!(resolve(&root, bad), Err(Refusal::BadPath), "{bad}");
        }
        assert_eq!(resolve(&root, "escape/secret"), Err(Refusal::Outside));
        assert_eq!(resolve(&root, "/etc/passwd"), Err(Refusal::NotFound));
        assert_eq!(resolve(&root, "t/2"), Err(Refusal::NotFound));
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(
            content_type(Path::new("a/report.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("rate.png")), "image/png");
        assert_eq!(content_type(Path::new("x.bin")), "application/octet-stream");
    }
}
