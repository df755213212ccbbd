//! Helpers shared by the store's process tests.

/// A port free now and never handed out before in this process: the kernel may give a port
/// just released by `bind(0)` to the next `bind(0)`, which once handed one node's client port
/// to another node's peer listener (the second node then failed with EADDRINUSE).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no fresh loopback port in 1000 tries");
}

/// An empty directory for one test's nodes: `<tmp>/paxos-kv-<kind>-<name>-<pid>`.
pub fn fresh_dir(kind: &str, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("paxos-kv-{kind}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `paxos-kv` with `args`, its stderr appended to `log`.
pub fn spawn_node<I, A>(args: I, log: &std::path::Path) -> std::process::Child
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_paxos-kv"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start paxos-kv")
}

/// The drop guard's work: kills every child by pid, then removes `dir`, or keeps it (and
/// says where) when the test is failing, for its node logs.
pub fn stop_all(children: impl IntoIterator<Item = std::process::Child>, dir: &std::path::Path) {
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    if std::thread::panicking() {
        eprintln!("node logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Sends a request with an optional JSON body; the status and the body as JSON (or as a
/// JSON string when it is not JSON).
pub async fn send_json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<serde_json::Value>,
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    let mut rb = http.request(method, url);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await?;
    let code = r.status().as_u16();
    let text = r.text().await?;
    Ok((
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    ))
}
