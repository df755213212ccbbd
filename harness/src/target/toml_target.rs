//! A target described by a TOML file, for a store ordeal does not ship. See
//! `targets/paxos-kv.toml` for a worked example and PROTOCOL.md for the `ordeal-http` protocol.
//!
//! ```toml
//! name = "my-store"
//! protocol = "ordeal-http"             # or "etcd-v3"
//! command = ["/path/to/my-store", "--id", "{id}", "--listen", "{ip}:{peer_port}",
//!            "--client", "{ip}:{client_port}", "--peers", "{peers}", "--data-dir", "{data_dir}"]
//! version_args = ["--version"]         # optional
//! binds_source_ip = true               # nodes dial peers from their own {ip}
//! log = "{data_dir}/store.log"         # optional: a log the node writes besides stdout/stderr
//! status_digest = true                 # optional: GET /status has a comparable "digest"
//! [peers]
//! entry = "{id}={addr}"                # one peer in {peers}; {addr} is host:port to dial
//! separator = ","
//! per_node = true                      # each node gets its own list: the proxy can sit between
//! # dialer = "header:X-PeerURLs"       # per_node = false: how the proxy in front of a node tells
//! #                                    # which peer dialled ("source-ip" or "header:NAME")
//! [ready]                              # optional: GET path answering 2xx once a node serves
//! path = "/health"
//! [leader]                             # optional: the node whose GET path has field == value
//! path = "/status"
//! field = "role"
//! value = "leader"
//! ```
//!
//! Placeholders in `command` and `log`: `{id}` (1-based), `{name}` (`n{id}`), `{ip}`,
//! `{peer_port}`, `{client_port}`, `{peer_addr}` (host:port every peer dials to reach this node
//! when `per_node = false`: `{ip}:{peer_port}`, or the proxy in front of the node), `{peers}`, `{peer_clients}` (with the userspace proxy, where
//! this node forwards client requests to each other node, `{id}={addr}` comma-separated; empty
//! otherwise), `{data_dir}`, `{bug}` (`--bug`), `{ordeal_dir}` (where `ordeal` is). An argument
//! containing a placeholder that expands to nothing is left out, so `"--bug={bug}"` disappears
//! when there is no `--bug`.

use super::{ConvergenceQuery, Dialer, LeaderQuery, NodeDirs, Protocol, Target};
use crate::cluster::{Layout, NodeAddr};
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    name: String,
    command: Vec<String>,
    protocol: Protocol,
    #[serde(default)]
    version_args: Option<Vec<String>>,
    peers: PeersSpec,
    #[serde(default = "yes")]
    binds_source_ip: bool,
    #[serde(default)]
    log: Option<String>,
    #[serde(default)]
    status_digest: bool,
    #[serde(default)]
    ready: Option<ReadySpec>,
    #[serde(default)]
    leader: Option<LeaderSpec>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeersSpec {
    entry: String,
    #[serde(default = "comma")]
    separator: String,
    per_node: bool,
    /// With `per_node = false`: how the proxy in front of a node tells which peer dialled it,
    /// `source-ip` or `header:NAME`.
    #[serde(default)]
    dialer: Option<String>,
}

fn comma() -> String {
    ",".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadySpec {
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaderSpec {
    path: String,
    field: String,
    value: String,
}

pub struct TomlTarget {
    file: PathBuf,
    spec: TargetFile,
    binary: PathBuf,
    bug: Option<String>,
    ordeal_dir: String,
}

const NODE_PLACEHOLDERS: &[&str] = &[
    "id",
    "name",
    "ip",
    "peer_port",
    "client_port",
    "peer_addr",
    "peers",
    "peer_clients",
    "data_dir",
    "bug",
    "ordeal_dir",
];
const PEER_PLACEHOLDERS: &[&str] = &["id", "name", "addr", "ip", "peer_port"];

/// Replaces `{name}` by its value; an unknown placeholder is an error naming it.
fn expand(template: &str, values: &[(&str, String)], known: &[&str]) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| anyhow!("{template:?}: a `{{` without its `}}`"))?;
        let key = &after[..close];
        if !known.contains(&key) {
            bail!(
                "{template:?}: unknown placeholder {{{key}}}; known: {}",
                known
                    .iter()
                    .map(|k| format!("{{{k}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let value = values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        out.push_str(value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether some placeholder in `template` expands to nothing.
fn has_empty_placeholder(template: &str, values: &[(&str, String)]) -> bool {
    values
        .iter()
        .any(|(k, v)| v.is_empty() && template.contains(&format!("{{{k}}}")))
}

impl TomlTarget {
    /// Reads and checks a target file: every field, every placeholder, the binary. Errors name
    /// the file, the field and why.
    pub fn load(file: &Path, target_bin: Option<&Path>, bug: Option<&str>) -> Result<TomlTarget> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("target file {}: cannot read it", file.display()))?;
        let spec: TargetFile = toml::from_str(&text).map_err(|e| {
            anyhow!(
                "target file {}: {}",
                file.display(),
                e.to_string().trim_end()
            )
        })?;
        let at = |field: &str, why: String| {
            anyhow!("target file {}: field `{field}`: {why}", file.display())
        };
        if spec.command.is_empty() {
            return Err(at(
                "command",
                "is empty; the first element is the program".into(),
            ));
        }
        let ordeal_dir = super::ordeal_dir()?.display().to_string();
        let program = match target_bin {
            Some(b) => b.to_path_buf(),
            None => PathBuf::from(
                expand(
                    &spec.command[0],
                    &[("ordeal_dir", ordeal_dir.clone())],
                    &["ordeal_dir"],
                )
                .map_err(|e| at("command", format!("{e:#}")))?,
            ),
        };
        let binary = super::find_program(&program).ok_or_else(|| {
            at(
                "command",
                format!(
                    "program {} not found (neither a file nor on PATH)",
                    program.display()
                ),
            )
        })?;
        if bug.is_some() && !spec.command.iter().any(|a| a.contains("{bug}")) {
            return Err(at(
                "command",
                "--bug was given but no argument uses {bug}".into(),
            ));
        }
        if let Some(d) = &spec.peers.dialer {
            let dialer = parse_dialer(d).map_err(|why| at("peers.dialer", why))?;
            if spec.peers.per_node {
                return Err(at(
                    "peers.dialer",
                    "only means something with per_node = false (with per_node = true each link has its own proxy)".into(),
                ));
            }
            if dialer == Dialer::SourceIp && !spec.binds_source_ip {
                return Err(at(
                    "peers.dialer",
                    "\"source-ip\" needs binds_source_ip = true (nodes that dial from any address all look like 127.0.0.1)".into(),
                ));
            }
        }
        if spec.name.trim().is_empty() {
            return Err(at("name", "is empty".into()));
        }
        let target = TomlTarget {
            file: file.to_path_buf(),
            spec,
            binary,
            bug: bug.map(str::to_string),
            ordeal_dir,
        };
        // Expand everything once against a sample layout so that a bad placeholder is refused
        // now, not when node 1 starts.
        let sample = sample_layout();
        let dirs = NodeDirs {
            data_dir: PathBuf::from("/data"),
            log_path: PathBuf::from("/log"),
        };
        target
            .try_args(0, &sample, &dirs)
            .map_err(|e| at("command", format!("{e:#}")))?;
        if let Some(log) = &target.spec.log {
            expand(log, &target.values(0, &sample, &dirs)?, NODE_PLACEHOLDERS)
                .map_err(|e| at("log", format!("{e:#}")))?;
        }
        for (field, path) in [
            ("ready.path", target.spec.ready.as_ref().map(|r| &r.path)),
            ("leader.path", target.spec.leader.as_ref().map(|l| &l.path)),
        ] {
            if let Some(p) = path {
                if !p.starts_with('/') {
                    return Err(at(field, format!("{p:?} must start with /")));
                }
            }
        }
        Ok(target)
    }

    fn peers(&self, i: usize, layout: &Layout) -> Result<String> {
        let entries = layout
            .nodes
            .iter()
            .enumerate()
            .map(|(j, other)| {
                let addr = if self.spec.peers.per_node {
                    layout.peer_target[i][j]
                } else {
                    layout.shared_peer_address(j)
                };
                expand(
                    &self.spec.peers.entry,
                    &[
                        ("id", other.id.to_string()),
                        ("name", other.name.clone()),
                        ("addr", addr.to_string()),
                        ("ip", addr.ip().to_string()),
                        ("peer_port", addr.port().to_string()),
                    ],
                    PEER_PLACEHOLDERS,
                )
                .context("field `peers.entry`")
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(entries.join(&self.spec.peers.separator))
    }

    fn values(
        &self,
        i: usize,
        layout: &Layout,
        dirs: &NodeDirs,
    ) -> Result<Vec<(&'static str, String)>> {
        let node = &layout.nodes[i];
        Ok(vec![
            ("id", node.id.to_string()),
            ("name", node.name.clone()),
            ("ip", node.peer.ip().to_string()),
            ("peer_port", node.peer.port().to_string()),
            ("client_port", node.client.port().to_string()),
            ("peer_addr", layout.shared_peer_address(i).to_string()),
            ("peers", self.peers(i, layout)?),
            ("peer_clients", super::paxos_kv::peer_client_list(i, layout)),
            ("data_dir", dirs.data_dir.display().to_string()),
            ("bug", self.bug.clone().unwrap_or_default()),
            ("ordeal_dir", self.ordeal_dir.clone()),
        ])
    }

    fn try_args(&self, i: usize, layout: &Layout, dirs: &NodeDirs) -> Result<Vec<String>> {
        let values = self.values(i, layout, dirs)?;
        let mut out = Vec::new();
        for template in &self.spec.command[1..] {
            let arg = expand(template, &values, NODE_PLACEHOLDERS)?;
            if !has_empty_placeholder(template, &values) {
                out.push(arg);
            }
        }
        Ok(out)
    }
}

/// `source-ip` or `header:NAME`.
fn parse_dialer(text: &str) -> std::result::Result<Dialer, String> {
    match text.trim() {
        "source-ip" => Ok(Dialer::SourceIp),
        t => match t.strip_prefix("header:").map(str::trim) {
            Some(name) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                Ok(Dialer::HttpHeader(name.to_string()))
            }
            _ => Err(format!(
                "{text:?}: expected \"source-ip\" or \"header:NAME\" (e.g. \"header:X-PeerURLs\")"
            )),
        },
    }
}

/// Three nodes on made-up ports: enough to expand every template once while loading.
fn sample_layout() -> Layout {
    let nodes: Vec<NodeAddr> = (1..=3)
        .map(|id| {
            let ip = std::net::Ipv4Addr::new(127, 0, 0, 10 + id as u8);
            NodeAddr {
                id,
                name: format!("n{id}"),
                peer: SocketAddr::new(ip.into(), 7000 + id as u16),
                client: SocketAddr::new(ip.into(), 7020 + id as u16),
            }
        })
        .collect();
    let peer_target = (0..3)
        .map(|_| nodes.iter().map(|n| n.peer).collect())
        .collect();
    Layout {
        nodes,
        peer_target,
        forward_target: None,
    }
}

impl Target for TomlTarget {
    fn name(&self) -> String {
        self.spec.name.clone()
    }

    fn binary(&self) -> &Path {
        &self.binary
    }

    fn version(&self) -> String {
        match &self.spec.version_args {
            Some(args) => super::version_of(
                &self.binary,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            ),
            None => "unknown (the target file has no version_args)".into(),
        }
    }

    fn protocol(&self) -> Protocol {
        self.spec.protocol
    }

    fn args(&self, i: usize, layout: &Layout, dirs: &NodeDirs) -> Vec<String> {
        // Checked against a sample layout at load; a real layout has the same placeholders.
        self.try_args(i, layout, dirs).unwrap_or_else(|e| {
            tracing::error!("target file {}: {e:#}", self.file.display());
            Vec::new()
        })
    }

    fn leader_query(&self) -> LeaderQuery {
        match &self.spec.leader {
            Some(l) => LeaderQuery::Http {
                path: l.path.clone(),
                field: l.field.clone(),
                value: l.value.clone(),
            },
            None => LeaderQuery::None,
        }
    }

    fn convergence_query(&self) -> ConvergenceQuery {
        if self.spec.status_digest {
            ConvergenceQuery::OrdealStatusDigest
        } else {
            ConvergenceQuery::None
        }
    }

    fn ready_path(&self) -> Option<String> {
        self.spec.ready.as_ref().map(|r| r.path.clone())
    }

    fn peer_proxy(&self) -> std::result::Result<Dialer, String> {
        if self.spec.peers.per_node {
            return Ok(Dialer::Link);
        }
        match &self.spec.peers.dialer {
            Some(d) => parse_dialer(d),
            None => Err(format!(
                "target file {}: its nodes share one address per peer (peers.per_node = false) and field `peers.dialer` does not say how the proxy in front of a node tells which peer dialled (\"source-ip\" or \"header:NAME\")",
                self.file.display()
            )),
        }
    }

    fn binds_source_ip(&self) -> bool {
        self.spec.binds_source_ip
    }

    fn extra_log(&self, i: usize, layout: &Layout, dirs: &NodeDirs) -> Option<PathBuf> {
        let log = self.spec.log.as_ref()?;
        let values = self.values(i, layout, dirs).ok()?;
        expand(log, &values, NODE_PLACEHOLDERS)
            .ok()
            .map(PathBuf::from)
    }

    fn file(&self) -> Option<&Path> {
        Some(&self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand_and_unknown_ones_are_named() {
        let v = [("id", "3".to_string()), ("bug", String::new())];
        assert_eq!(expand("--id={id}", &v, &["id", "bug"]).unwrap(), "--id=3");
        assert!(has_empty_placeholder("--bug={bug}", &v));
        assert!(!has_empty_placeholder("--id={id}", &v));
        let e = expand("{nope}", &v, &["id"]).unwrap_err().to_string();
        assert!(e.contains("{nope}"), "{e}");
        assert!(expand("{id", &v, &["id"]).is_err());
    }

    #[test]
    fn dialers_parse_and_bad_ones_are_named() {
        assert_eq!(parse_dialer("source-ip"), Ok(Dialer::SourceIp));
        assert_eq!(
            parse_dialer("header:X-PeerURLs"),
            Ok(Dialer::HttpHeader("X-PeerURLs".into()))
        );
        for bad in ["header:", "ip", "header:a b"] {
            let e = parse_dialer(bad).unwrap_err();
            assert!(e.contains(bad) && e.contains("header:NAME"), "{e}");
        }
    }
}
