//! `ordeal serve` end to end: a results directory made by real runs (a tiny campaign against
//! the fake store, and a run still in progress), served on a free port, fetched over HTTP:
//! the list, filtered lists, a report and its chart, a campaign's index, live progress, and
//! path-traversal attempts, which must be refused; a second server on the same port fails
//! clearly; the server stops by pid. Then the same in headless Chromium: the list renders and
//! its report link opens the report.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ordeal-serve-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const FAKE: &str = env!("CARGO_BIN_EXE_ordeal-fake-kv");
const ORDEAL: &str = env!("CARGO_BIN_EXE_ordeal");

/// `ordeal serve DIR --listen 127.0.0.1:0`, stopped by pid when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let mut child = Command::new(ORDEAL)
            .args(["serve", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ordeal serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        // The first line names the address; reading it blocks until the server is up (or gone).
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let addr = first
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("ordeal serve said {first:?}"))
            .to_string();
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM by pid; returns the exit code.
    fn stop(mut self) -> i32 {
        let pid = self.child.id() as i32;
        // SAFETY: signalling the child we started.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "ordeal serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A child killed by pid if the test fails before it ends it (its store nodes die with it:
/// PR_SET_PDEATHSIG).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw HTTP/1.0 GET: `path` goes out exactly as given (no client normalises `..` away).
fn get(addr: &str, path: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    Reply {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

/// The rows of the list's runs table (each `<tr class="...">...</tr>`).
fn run_rows(page: &str) -> Vec<String> {
    // As served (`class=runs`) or as a browser serialises it (`class="runs"`).
    let table = page
        .split("<table class=runs>")
        .nth(1)
        .or_else(|| page.split("<table class=\"runs\">").nth(1))
        .unwrap_or_else(|| panic!("no runs table in {page}"));
    let table = table.split("</table>").next().unwrap();
    table
        .split("<tr class=\"")
        .skip(1)
        .map(|r| r.split("</tr>").next().unwrap().to_string())
        .collect()
}

/// The first `href="..."` in `html` that ends with `suffix`.
fn href_ending(html: &str, suffix: &str) -> Option<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|h| h.split('"').next())
        .find(|h| h.ends_with(suffix))
        .map(|h| h.replace("&amp;", "&"))
}

/// A short campaign on the proxy backend against the fake store: a clean test expected valid,
/// and the fake's lost-writes bug expected invalid (it loses acknowledged writes when node 1
/// is killed), one seed each.
fn tiny_campaign(dir: &Path, out: &Path) {
    let file = dir.join("tiny.toml");
    std::fs::write(
        &file,
        format!(
            "[defaults]\nnodes = 3\ntime_limit_s = 4\nrate = 300\nconcurrency = 6\nnet = \"proxy\"\n\
             nemesis = \"kill\"\nnemesis_targets = \"leader\"\nnemesis_interval_ms = \"400-700\"\n\
             nemesis_hold_ms = \"300-500\"\nrecovery_s = 1\nseed = 1\nstore_bin = {FAKE:?}\n\
             [[test]]\nname = \"clean\"\nexpect = \"valid\"\n\
             [[test]]\nname = \"lost\"\nbug = \"lost-writes\"\nexpect = \"invalid\"\n"
        ),
    )
    .unwrap();
    let o = Command::new(ORDEAL)
        .args([
            "campaign",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `ordeal test` against the fake store on the proxy backend, writing into `results`.
fn test_run(results: &Path, name: &str, time_limit_s: u32) -> Command {
    let mut c = Command::new(ORDEAL);
    c.args([
        "test",
        "--no-progress",
        "--name",
        name,
        "--store-bin",
        FAKE,
        "--net",
        "proxy",
        "--nodes",
        "3",
        "--rate",
        "100",
        "--concurrency",
        "4",
        "--recovery-s",
        "1",
        "--seed",
        "5",
        "--time-limit",
        &time_limit_s.to_string(),
        "--results",
        results.to_str().unwrap(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

#[test]
fn serve_lists_filters_opens_reports_shows_progress_and_refuses_traversal() {
    let dir = scratch("http");
    let results = dir.join("results");
    std::fs::create_dir_all(&results).unwrap();
    // A run that is still going while the server is looked at: a long main phase, ended by
    // SIGINT below.
    let mut live = KillOnDrop(test_run(&results, "live-run", 120).spawn().unwrap());
    tiny_campaign(&dir, &results.join("campaigns"));
    // Outside the results directory: no request may read it, directly or through a symlink.
    std::fs::write(dir.join("secret.txt"), "TOP-SECRET").unwrap();
    std::os::unix::fs::symlink(&dir, results.join("escape")).unwrap();
    assert!(results.join("escape/secret.txt").is_file());

    let server = Server::start(&results);
    let addr = server.addr.clone();

    // The live run shows in progress with its operations so far, and the page reloads itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        let r = get(&addr, "/");
        assert_eq!(r.status, 200, "{}", r.head);
        let page = r.text();
        if page.contains("<h2>In progress") && page.contains("main: ") {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the live run never showed as in progress: {page}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let live_row = page
        .split("<tr class=running>")
        .nth(1)
        .unwrap()
        .split("</tr>")
        .next()
        .unwrap();
    assert!(live_row.contains("live-run"), "{live_row}");
    let ops: u64 = live_row
        .split(" ops (")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no op count in {live_row}"));
    assert!(ops > 0, "{live_row}");
    assert!(page.contains("http-equiv=\"refresh\""));

    // The list: the campaign's two runs and the live one; the campaign, finished.
    let rows = run_rows(&page);
    assert_eq!(rows.len(), 3, "{page}");
    assert_eq!(
        rows.iter().filter(|r| r.starts_with("running")).count(),
        1,
        "{rows:?}"
    );
    // Newest first: the live run started before the campaign's runs.
    let started: Vec<&str> = rows
        .iter()
        .map(|r| {
            r.split("<td>")
                .nth(1)
                .unwrap()
                .split("</td>")
                .next()
                .unwrap()
        })
        .collect();
    assert!(started.windows(2).all(|w| w[0] >= w[1]), "{started:?}");
    assert!(rows[2].contains("live-run"), "{rows:?}");
    assert!(page.contains("<table class=campaigns>") && page.contains(">tiny<"));
    assert!(page.contains(">pass<") && page.contains("2 passed, 0 failed, 0 errors of 2"));

    // Filters.
    let only = |q: &str| run_rows(&get(&addr, q).text());
    let invalid = only("/?verdict=invalid");
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    assert!(invalid[0].contains(">lost-s1<") && invalid[0].contains(">lost-writes<"));
    assert_eq!(only("/?bug=lost-writes"), invalid);
    let clean = only("/?verdict=valid&bug=none&workload=register");
    assert_eq!(clean.len(), 1, "{clean:?}");
    assert!(clean[0].contains(">clean-s1<"), "{clean:?}");
    assert_eq!(only("/?workload=kv").len(), 0);
    let running = only("/?verdict=running");
    assert_eq!(running.len(), 1);
    assert!(running[0].contains("live-run"));
    // Paging past the end shows the last page, not an error.
    assert_eq!(only("/?verdict=invalid&page=999"), invalid);

    // The invalid run's report, its chart, and the campaign's index with its links.
    let report_href = href_ending(&invalid[0], "/report.html").unwrap();
    let report = get(&addr, &report_href);
    assert_eq!(report.status, 200, "{report_href}: {}", report.head);
    assert!(report.head.contains("text/html"));
    let report = report.text();
    assert!(
        report.contains("invalid") && report.contains("lost"),
        "{report_href}"
    );
    let png_rel = href_ending(&report, ".png").expect("the report links a chart");
    let png_href = format!("{}{png_rel}", report_href.trim_end_matches("report.html"));
    let png = get(&addr, &png_href);
    assert_eq!(png.status, 200, "{png_href}");
    assert!(png.head.contains("image/png") && png.body.starts_with(b"\x89PNG"));
    let index_href = href_ending(&page, "/index.html").expect("a link to the campaign");
    let index = get(&addr, &index_href).text();
    assert!(
        index.contains("Detection power") && index.contains("1 of 1"),
        "{index}"
    );
    let run_in_index = href_ending(&index, "/report.html").unwrap();
    let base = index_href.trim_end_matches("index.html");
    assert_eq!(get(&addr, &format!("{base}{run_in_index}")).status, 200);
    assert_eq!(get(&addr, "/campaigns").status, 200);

    // Traversal: refused however spelled, and the secret never appears.
    for path in [
        "/files/../secret.txt",
        "/files/%2e%2e/secret.txt",
        "/files/..%2fsecret.txt",
        "/files/campaigns/../../secret.txt",
        "/files/campaigns/%2E%2E/%2E%2E/secret.txt",
        "/files/escape/secret.txt",
        "/files/..%5csecret.txt",
        "/files//etc/passwd",
        "/../secret.txt",
    ] {
        let r = get(&addr, path);
        assert!(
            matches!(r.status, 400 | 403 | 404),
            "{path}: {} {}",
            r.status,
            r.text()
        );
        let body = r.text();
        assert!(
            !body.contains("TOP-SECRET") && !body.contains("root:"),
            "{path}: {body}"
        );
    }
    assert_eq!(get(&addr, "/files/escape/secret.txt").status, 403);

    // The port is taken: a second server says so and exits.
    let second = Command::new(ORDEAL)
        .args(["serve", results.to_str().unwrap(), "--listen", &addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(255));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use") && err.contains(&addr), "{err}");

    // The live run ends: it leaves the in-progress section with a verdict and a report.
    let code = common::interrupt_and_wait(&mut live.0);
    assert_eq!(code, 0, "the interrupted run's verdict");
    assert_eq!(only("/?verdict=running").len(), 0);
    let done = only("/?verdict=valid");
    let live_done = done.iter().find(|r| r.contains("live-run")).unwrap();
    assert!(live_done.contains("/report.html"), "{live_done}");
    assert!(!get(&addr, "/").text().contains("<h2>In progress"));

    assert_eq!(server.stop(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Chromium, headless: `ORDEAL_CHROMIUM`, else the first of chromium, chromium-browser,
/// google-chrome on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORDEAL_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// Runs headless Chromium with `args` (bounded; killed by pid after 120 s); returns stdout.
fn run_chromium(bin: &Path, profile: &Path, args: &[&str]) -> String {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium {args:?}: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

#[test]
fn the_list_renders_in_headless_chromium_and_its_link_opens_the_report() {
    let Some(bin) = chromium() else {
        if std::env::var_os("ORDEAL_REQUIRE_CHROMIUM").is_some() {
            panic!("ORDEAL_REQUIRE_CHROMIUM is set but no chromium is on PATH");
        }
        eprintln!(
            "skipped: no chromium, chromium-browser or google-chrome on PATH (set ORDEAL_CHROMIUM)"
        );
        return;
    };
    let dir = scratch("chromium");
    let results = dir.join("results");
    let st = test_run(&results, "seen-in-chromium", 2).status().unwrap();
    assert_eq!(st.code(), Some(0));
    let server = Server::start(&results);
    let profile = dir.join("profile");

    // The list as the browser built it: the run's row and its report link.
    let dom = run_chromium(&bin, &profile, &["--dump-dom", &server.url("/")]);
    let rows = run_rows(&dom);
    assert_eq!(rows.len(), 1, "{dom}");
    assert!(rows[0].contains("seen-in-chromium") && rows[0].contains("valid"));
    let link = href_ending(&rows[0], "/report.html").unwrap();
    // Following the link opens the run's report, charts and all.
    let report = run_chromium(&bin, &profile, &["--dump-dom", &server.url(&link)]);
    assert!(
        report.contains("seen-in-chromium") && report.contains("rate.png"),
        "{report}"
    );
    // And a screenshot of the list, as a person would see it.
    let shot = dir.join("serve.png");
    run_chromium(
        &bin,
        &profile,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,1000",
            &server.url("/"),
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1400, 1000));
    assert_eq!(server.stop(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
