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
