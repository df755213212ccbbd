//! The ordeal-http protocol against a sharded store (PROTOCOL.md, "Sharded stores"): the same
//! requests, routed by the shard controller's configuration to a member of the group that
//! owns the operation's key, and re-routed when a group answers "wrong group".
//!
//! | situation | what the client does |
//! |---|---|
//! | an op on key `k` (a txn: its first micro-op's key) | sends it to a member of the owner of `shard_of(k)` in the cached config |
//! | `503 {"wrong_group": true, "owner", "owner_members"}` | nothing was applied: learns the owner from the answer (and, from the second such answer on, re-reads the controller's config) and sends the same op again, at most [`WRONG_GROUP_RETRIES`] times, all inside the one recorded operation; still wrong: `fail` |
//! | `cas` | the store offers `if_revision`, not `if_value`: reads the key (value and revision), `fail` if the value is not the expected one, else `PUT ?if_revision=` that revision (200: ok; 409: fail) |
//! | anything else | as the single-group ordeal-http mapping ([`crate::ordeal_http`]) |
//!
//! Re-sending after a wrong-group answer inside one recorded operation is sound: the answer
//! says nothing was applied, so the operation takes effect at most once, inside its
//! invoke-complete window.

use crate::client::{value_to_store, Completion};
use crate::generator::{MicroOp, OpSpec};
use crate::ordeal_http::{outcome_for_error, outcome_for_status, OrdealHttp};
use ordeal_checker::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How many times one operation is re-sent after wrong-group answers before it is recorded
/// as `fail`.
pub const WRONG_GROUP_RETRIES: usize = 3;

/// How long one controller config request may take.
pub const CONFIG_TIMEOUT_MS: u64 = 1000;

/// The prefix of a completion's error when a group answered "wrong group"; the answer's JSON
/// body follows it.
pub const WRONG_GROUP_ERROR: &str = "wrong-group: ";

/// The store's key hash: FNV-1a 64 of the key's bytes (PROTOCOL.md).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The shard of `key` among `shards` shards.
pub fn shard_of(key: &str, shards: usize) -> usize {
    (fnv1a64(key.as_bytes()) % shards.max(1) as u64) as usize
}

/// A controller configuration: `{"num", "shards": [owner group per shard, 0 = none],
/// "groups": {"G": ["HOST:PORT", ...]}}`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShardConfig {
    pub num: u64,
    pub shards: Vec<u64>,
    pub groups: BTreeMap<String, Vec<String>>,
}

impl ShardConfig {
    /// The owner of `key`'s shard (0: nobody).
    pub fn owner_of(&self, key: &str) -> u64 {
        self.shards
            .get(shard_of(key, self.shards.len()))
            .copied()
            .unwrap_or(0)
    }

    /// The client addresses of group `g`.
    pub fn members(&self, g: u64) -> &[String] {
        self.groups
            .get(&g.to_string())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Does every shard have an owner?
    pub fn all_owned(&self) -> bool {
        !self.shards.is_empty() && self.shards.iter().all(|g| *g != 0)
    }
}

/// Where the client sends each operation: the controller's configuration, cached and
/// re-read when a group says the client is wrong. Cheap to share (`Arc`).
pub struct ShardRouter {
    /// The controller nodes' client URLs (`http://ip:port`).
    controller: Vec<String>,
    /// A node's name for the history, by its client address (`ip:port`).
    names: HashMap<String, String>,
    /// Where to dial a node the configuration lists at another address (a test harness's
    /// proxy in front of it, which the nodes dial but clients need not): listed -> own.
    dial: HashMap<String, String>,
    cached: RwLock<Option<Arc<ShardConfig>>>,
    /// One controller read at a time; the others wait for it and use its result.
    refreshing: tokio::sync::Mutex<()>,
    http: reqwest::Client,
}

impl ShardRouter {
    /// `controller`: the controller nodes' client addresses (`ip:port`); `names`: each node's
    /// name by its client address.
    pub fn new(
        controller: Vec<String>,
        names: HashMap<String, String>,
    ) -> Result<ShardRouter, crate::WorkloadError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(CONFIG_TIMEOUT_MS))
            .connect_timeout(Duration::from_millis(300))
            .build()?;
        Ok(ShardRouter {
            controller: controller
                .into_iter()
                .map(|a| format!("http://{a}"))
                .collect(),
            names,
            dial: HashMap::new(),
            cached: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            http,
        })
    }

    /// Dials these addresses (listed in the configuration -> the node's own) instead.
    pub fn with_dial_addresses(mut self, dial: HashMap<String, String>) -> ShardRouter {
        self.dial = dial;
        self
    }

    /// The address to dial for a member the configuration lists at `addr`.
    pub fn dial_address<'a>(&'a self, addr: &'a str) -> &'a str {
        self.dial.get(addr).map_or(addr, String::as_str)
    }

    /// The cached configuration (read from the controller when there is none yet).
    pub async fn config(&self) -> Option<Arc<ShardConfig>> {
        if let Some(c) = self.cached() {
            return Some(c);
        }
        self.refresh(0).await
    }

    fn cached(&self) -> Option<Arc<ShardConfig>> {
        self.cached
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn store(&self, c: ShardConfig) {
        let mut cached = self.cached.write().unwrap_or_else(|e| e.into_inner());
        if cached.as_ref().is_none_or(|old| old.num <= c.num) {
            *cached = Some(Arc::new(c));
        }
    }

    /// Re-reads the controller's latest configuration unless one newer than `seen_num` is
    /// cached already (another client re-read it meanwhile). A linearizable read from each
    /// controller node in turn; when none answers, the newest local read.
    pub async fn refresh(&self, seen_num: u64) -> Option<Arc<ShardConfig>> {
        let _one = self.refreshing.lock().await;
        if let Some(c) = self.cached().filter(|c| c.num > seen_num) {
            return Some(c);
        }
        let mut best: Option<ShardConfig> = None;
        for consistency in ["linearizable", "local"] {
            for url in &self.controller {
                let got = self
                    .http
                    .get(format!("{url}/shards/config?consistency={consistency}"))
                    .send()
                    .await;
                let Ok(resp) = got else { continue };
                if !resp.status().is_success() {
                    continue;
                }
                if let Ok(c) = resp.json::<ShardConfig>().await {
                    if best.as_ref().is_none_or(|b| b.num < c.num) {
                        best = Some(c);
                    }
                    if consistency == "linearizable" {
                        break;
                    }
                }
            }
            if best.is_some() {
                break;
            }
        }
        if let Some(c) = best {
            self.store(c);
        }
        self.cached()
    }

    /// Learns from a wrong-group answer: the owner it names and that owner's members, when
    /// the answer's configuration is not older than the cached one.
    fn learn(&self, answer: &serde_json::Value) {
        let (Some(shard), Some(owner), Some(members), Some(num)) = (
            answer["shard"].as_u64(),
            answer["owner"].as_u64(),
            answer["owner_members"].as_array(),
            answer["config"].as_u64(),
        ) else {
            return;
        };
        let members: Vec<String> = members
            .iter()
            .filter_map(|m| m.as_str().map(str::to_string))
            .collect();
        let mut cached = self.cached.write().unwrap_or_else(|e| e.into_inner());
        let Some(old) = cached.as_ref() else { return };
        if num < old.num || owner == 0 || members.is_empty() {
            return;
        }
        let mut new = (**old).clone();
        if let Some(slot) = new.shards.get_mut(shard as usize) {
            *slot = owner;
        }
        new.groups.insert(owner.to_string(), members);
        new.num = num;
        *cached = Some(Arc::new(new));
    }

    /// The name of the node an operation would go to first, by the cached config (no
    /// request): what the history's invoke event names.
    pub fn first_node(&self, op: &OpSpec, hint: usize) -> Option<String> {
        let cfg = self.cached()?;
        let members = cfg.members(cfg.owner_of(&routing_key(op)?));
        (!members.is_empty()).then(|| self.name_of(&members[hint % members.len()]))
    }

    /// A node's name for the history: its name in the run, or its address.
    pub fn name_of(&self, addr: &str) -> String {
        self.names
            .get(self.dial_address(addr))
            .cloned()
            .unwrap_or_else(|| addr.to_string())
    }
}

/// The key an operation is routed by: its key, or a txn's first micro-op's.
pub fn routing_key(op: &OpSpec) -> Option<String> {
    if !op.key.is_empty() {
        return Some(op.key.clone());
    }
    MicroOp::parse_txn(&op.value)
        .ok()?
        .into_iter()
        .next()
        .map(|m| m.key)
}

/// The wrong-group answer a completion carries, if it is one.
pub fn wrong_group_answer(c: &Completion) -> Option<serde_json::Value> {
    let body = c.error.as_deref()?.strip_prefix(WRONG_GROUP_ERROR)?;
    serde_json::from_str(body).ok()
}

impl OrdealHttp<'_> {
    /// `op` against one node of a sharded store: as [`OrdealHttp::invoke`], but `cas` by
    /// revision (the sharded store has no `if_value`).
    pub(crate) async fn invoke_sharded(&self, base_url: &str, op: &OpSpec) -> Completion {
        if op.f != "cas" {
            return self.invoke(base_url, op).await;
        }
        let (Some(expected), Some(new)) = (
            op.value.as_list().and_then(|l| l.first()),
            op.value.as_list().and_then(|l| l.get(1)),
        ) else {
            return Completion::fail(op.value.clone(), "cas needs [expected new]");
        };
        let url = format!("{base_url}/kv/{}", op.key);
        let resp = match self.http.get(&url).timeout(self.timeout).send().await {
            Ok(r) => r,
            // Nothing was written yet: a refused connection or an unknown read both leave the
            // cas unapplied.
            Err(e) => {
                let c = outcome_for_error(&e, &op.value);
                return if c.refused {
                    c
                } else {
                    Completion::fail(op.value.clone(), "cas: the read before the write failed")
                };
            }
        };
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let current: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let revision = match status {
            200 => current["revision"].as_u64().unwrap_or(0),
            // Absent: never the expected value.
            404 => return Completion::fail(op.value.clone(), "cas: key absent"),
            _ => {
                // The read did not happen; the cas certainly did not apply.
                let c = outcome_for_status(status, Value::Null, &op.value, &body);
                return if c.kind == ordeal_checker::EventType::Fail {
                    c
                } else {
                    Completion::fail(op.value.clone(), format!("cas: read answered {status}"))
                };
            }
        };
        let stored = current["value"].as_str().map(str::to_string);
        if stored.as_deref() != Some(value_to_store(expected).as_str()) {
            return Completion::fail(op.value.clone(), "precondition-failed");
        }
        let req = self
            .http
            .put(&url)
            .query(&[("if_revision", revision.to_string())])
            .json(&serde_json::json!({ "value": value_to_store(new) }));
        self.send(req, op.value.clone(), &op.value).await
    }
}

impl crate::Client {
    /// Performs `op` on the sharded store `router` routes to; `hint` spreads clients over a
    /// group's members. Returns the completion and the name of the node that gave it.
    pub async fn invoke_routed(
        &self,
        router: &ShardRouter,
        op: &OpSpec,
        hint: usize,
    ) -> (Completion, String) {
        let Some(key) = routing_key(op) else {
            return (
                Completion::fail(op.value.clone(), "no key to route the operation by"),
                String::new(),
            );
        };
        let http = OrdealHttp {
            http: self.http(),
            timeout: self.config().timeout,
            read_consistency: self.config().read_consistency,
        };
        let mut last = None;
        for attempt in 0..=WRONG_GROUP_RETRIES {
            let Some(cfg) = router.config().await else {
                return (
                    Completion::refused(op.value.clone(), "no shard config from the controller"),
                    String::new(),
                );
            };
            let members = cfg.members(cfg.owner_of(&key));
            if members.is_empty() {
                return (
                    Completion::refused(op.value.clone(), "the key's shard has no owner"),
                    String::new(),
                );
            }
            let addr = &members[(hint + attempt) % members.len()];
            let dial = router.dial_address(addr);
            let c = http.invoke_sharded(&format!("http://{dial}"), op).await;
            let Some(answer) = wrong_group_answer(&c) else {
                return (c, router.name_of(addr));
            };
            router.learn(&answer);
            if attempt > 0 {
                router.refresh(cfg.num).await;
            }
            last = Some((c, router.name_of(addr)));
        }
        last.expect("at least one attempt")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_as_the_store_does() {
        // FNV-1a 64 reference values.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert!((0..100).all(|i| shard_of(&format!("k{i}"), 16) < 16));
        let spread: std::collections::BTreeSet<usize> =
            (0..200).map(|i| shard_of(&format!("k{i}"), 16)).collect();
        assert_eq!(spread.len(), 16, "200 keys reach every shard");
    }

    #[test]
    fn configs_route_and_wrong_group_answers_teach_the_owner() {
        let cfg: ShardConfig = serde_json::from_value(serde_json::json!({
            "num": 3, "shards": vec![1; 16], "groups": {"1": ["a:1"], "2": ["b:1", "b:2"]}
        }))
        .unwrap();
        assert!(cfg.all_owned());
        assert_eq!(cfg.owner_of("x"), 1);
        let router = ShardRouter::new(vec![], HashMap::new()).unwrap();
        router.store(cfg);
        let s = shard_of("x", 16) as u64;
        // An older answer teaches nothing; a current one moves the shard.
        router.learn(
            &serde_json::json!({"wrong_group": true, "shard": s, "owner": 2,
            "owner_members": ["b:1", "b:2"], "config": 2}),
        );
        assert_eq!(router.cached().unwrap().owner_of("x"), 1);
        router.learn(
            &serde_json::json!({"wrong_group": true, "shard": s, "owner": 2,
            "owner_members": ["b:1", "b:2"], "config": 4}),
        );
        let c = router.cached().unwrap();
        assert_eq!((c.owner_of("x"), c.num), (2, 4));
        assert_eq!(c.members(2), ["b:1", "b:2"]);
        let wrong = Completion::refused(Value::Null, format!("{WRONG_GROUP_ERROR}{{\"owner\":2}}"));
        assert_eq!(wrong_group_answer(&wrong).unwrap()["owner"], 2);
        assert!(wrong_group_answer(&Completion::refused(Value::Null, "unavailable: x")).is_none());
    }

    #[test]
    fn listed_addresses_are_dialled_as_translated_and_named_by_the_node() {
        let names = HashMap::from([("10.0.0.1:80".to_string(), "n4".to_string())]);
        let router = ShardRouter::new(vec![], names)
            .unwrap()
            .with_dial_addresses(HashMap::from([(
                "127.0.0.1:9000".to_string(),
                "10.0.0.1:80".to_string(),
            )]));
        assert_eq!(router.dial_address("127.0.0.1:9000"), "10.0.0.1:80");
        assert_eq!(router.dial_address("10.0.0.2:80"), "10.0.0.2:80");
        assert_eq!(router.name_of("127.0.0.1:9000"), "n4");
        assert_eq!(router.name_of("10.0.0.1:80"), "n4");
    }

    #[test]
    fn txns_route_by_their_first_key() {
        let op = OpSpec {
            f: "txn",
            key: String::new(),
            value: Value::List(vec![
                crate::generator::micro("r", "k9", Value::Null),
                crate::generator::micro("append", "k1", Value::Int(1)),
            ]),
        };
        assert_eq!(routing_key(&op).as_deref(), Some("k9"));
    }
}
