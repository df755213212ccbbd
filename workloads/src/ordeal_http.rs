//! The `ordeal-http` protocol (PROTOCOL.md; paxos-kv implements it): one operation in, one
//! completion out, mapped exactly as DESIGN.md's status table says:
//!
//! | reply | outcome |
//! |---|---|
//! | 2xx | ok |
//! | 409 (precondition failed) | fail |
//! | 503 (not proposed) | fail, and the client backs off |
//! | 504 (outcome unknown) | info |
//! | other 4xx (malformed) | fail |
//! | other 5xx | info |
//! | connection refused (nothing sent) | fail, and the client backs off |
//! | timeout, reset after sending | info |

use crate::client::{value_from_store, value_to_store, Completion};
use crate::generator::OpSpec;
use crate::ReadConsistency;
use ordeal_checker::Value;
use std::time::Duration;

/// The HTTP status of a reply, mapped to an outcome. `ok_value` is the completion's value when
/// the status is 2xx.
pub fn outcome_for_status(status: u16, ok_value: Value, input: &Value, body: &str) -> Completion {
    let short_body: String = body.chars().take(200).collect();
    match status {
        200..=299 => Completion::ok(ok_value),
        409 => Completion::fail(input.clone(), "precondition-failed"),
        // A sharded store's "wrong group" (nothing applied) keeps its whole answer: the client
        // re-routes by the owner it names (crate::sharded_http).
        503 if is_wrong_group(body) => Completion::refused(
            input.clone(),
            format!("{}{body}", crate::sharded_http::WRONG_GROUP_ERROR),
        ),
        503 => Completion::refused(input.clone(), format!("unavailable: {short_body}")),
        504 => Completion::info(input.clone(), format!("timeout: {short_body}")),
        400..=499 => Completion::fail(input.clone(), format!("http {status}: {short_body}")),
        // Any other server error may have happened after the proposal: unknown.
        _ => Completion::info(input.clone(), format!("http {status}: {short_body}")),
    }
}

/// Is a 503's body a sharded store's wrong-group answer (`"wrong_group": true`)?
fn is_wrong_group(body: &str) -> bool {
    body.contains("wrong_group")
        && serde_json::from_str::<serde_json::Value>(body)
            .is_ok_and(|j| j["wrong_group"] == serde_json::Value::Bool(true))
}

/// A transport error: a refused connection means the request never left; anything later
/// (timeout, reset mid-reply) leaves the outcome unknown.
pub fn outcome_for_error(err: &reqwest::Error, input: &Value) -> Completion {
    if err.is_connect() {
        Completion::refused(input.clone(), format!("connect: {}", root_cause(err)))
    } else if err.is_timeout() {
        Completion::info(input.clone(), "client-timeout")
    } else {
        Completion::info(input.clone(), format!("transport: {}", root_cause(err)))
    }
}

pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// One node's ordeal-http API, borrowed for one operation.
pub(crate) struct OrdealHttp<'a> {
    pub http: &'a reqwest::Client,
    pub timeout: Duration,
    pub read_consistency: ReadConsistency,
}

impl OrdealHttp<'_> {
    /// Performs `op` against the node whose client API is at `base_url` (`http://host:port`).
    pub async fn invoke(&self, base_url: &str, op: &OpSpec) -> Completion {
        match op.f {
            "read" => {
                self.read(base_url, op, self.read_consistency.as_str())
                    .await
            }
            "write" => {
                let url = format!("{base_url}/kv/{}", op.key);
                let body = serde_json::json!({ "value": value_to_store(&op.value) });
                let req = self.http.put(url).json(&body);
                self.send(req, op.value.clone(), &op.value).await
            }
            "cas" => {
                let (Some(expected), Some(new)) = (
                    op.value.as_list().and_then(|l| l.first()),
                    op.value.as_list().and_then(|l| l.get(1)),
                ) else {
                    return Completion::fail(op.value.clone(), "cas needs [expected new]");
                };
                let url = format!("{base_url}/kv/{}", op.key);
                let req = self
                    .http
                    .put(url)
                    .query(&[("if_value", value_to_store(expected))])
                    .json(&serde_json::json!({ "value": value_to_store(new) }));
                self.send(req, op.value.clone(), &op.value).await
            }
            "append" => {
                let body = serde_json::json!({
                    "ops": [["append", op.key, value_to_store(&op.value)]]
                });
                let req = self.http.post(format!("{base_url}/txn")).json(&body);
                self.send(req, op.value.clone(), &op.value).await
            }
            "txn" => self.txn(base_url, &op.value).await,
            other => Completion::fail(op.value.clone(), format!("unknown operation {other}")),
        }
    }

    /// One txn through `POST /txn`: the whole txn is one request (one log command on a correct
    /// store). The completion carries the micro-ops with reads filled in.
    async fn txn(&self, base_url: &str, value: &Value) -> Completion {
        let body = match txn_body(value) {
            Ok(b) => b,
            Err(e) => return Completion::fail(value.clone(), e),
        };
        let resp = self
            .http
            .post(format!("{base_url}/txn"))
            .json(&body)
            .timeout(self.timeout)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return outcome_for_error(&e, value),
        };
        let status = resp.status().as_u16();
        let text = match resp.text().await {
            Ok(b) => b,
            // Applied or not, the reads are lost: unknown.
            Err(e) => return outcome_for_error(&e, value),
        };
        if (200..300).contains(&status) {
            return match txn_reply(value, &text) {
                Ok(v) => Completion::ok(v),
                // It applied, but what it read is not known: unknown is the honest answer.
                Err(e) => Completion::info(value.clone(), e),
            };
        }
        outcome_for_status(status, Value::Null, value, &text)
    }

    async fn read(&self, base_url: &str, op: &OpSpec, consistency: &str) -> Completion {
        let url = format!("{base_url}/kv/{}", op.key);
        let resp = self
            .http
            .get(url)
            .query(&[("consistency", consistency)])
            .timeout(self.timeout)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return outcome_for_error(&e, &op.value),
        };
        let status = resp.status().as_u16();
        let body = match resp.text().await {
            Ok(b) => b,
            // A read has no effect, but its result is lost: unknown is the honest answer.
            Err(e) => return outcome_for_error(&e, &op.value),
        };
        if status == 404 {
            return Completion::ok(Value::Null);
        }
        if (200..300).contains(&status) {
            let parsed: Result<serde_json::Value, _> = serde_json::from_str(&body);
            return match parsed.ok().as_ref().and_then(|j| j.get("value")) {
                Some(serde_json::Value::String(s)) => Completion::ok(value_from_store(s)),
                Some(serde_json::Value::Null) | None => Completion::ok(Value::Null),
                // A key built by appends is a list in the store; as the kv model sees it, the
                // value is the concatenation of what was appended.
                Some(serde_json::Value::Array(items)) => Completion::ok(Value::Str(
                    items
                        .iter()
                        .map(|i| {
                            i.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| i.to_string())
                        })
                        .collect(),
                )),
                Some(other) => Completion::ok(value_from_store(&other.to_string())),
            };
        }
        outcome_for_status(status, Value::Null, &op.value, &body)
    }

    pub(crate) async fn send(
        &self,
        req: reqwest::RequestBuilder,
        ok_value: Value,
        input: &Value,
    ) -> Completion {
        let resp = match req.timeout(self.timeout).send().await {
            Ok(r) => r,
            Err(e) => return outcome_for_error(&e, input),
        };
        let status = resp.status().as_u16();
        let body = match resp.text().await {
            Ok(b) => b,
            Err(e) => {
                if (200..300).contains(&status) {
                    // The status line said applied; only the body was lost.
                    return Completion::ok(ok_value);
                }
                return outcome_for_error(&e, input);
            }
        };
        outcome_for_status(status, ok_value, input, &body)
    }
}

/// The `POST /txn` body for a txn value `[[f, k, v], ...]`: values as decimal strings, reads
/// with `null`.
pub fn txn_body(value: &Value) -> Result<serde_json::Value, String> {
    let ops = value
        .as_list()
        .ok_or_else(|| format!("txn value {value} is not a list of micro-ops"))?;
    let mut out = Vec::with_capacity(ops.len());
    for m in ops {
        let parts = m.as_list().filter(|p| p.len() == 3);
        let Some([f, k, v]) = parts else {
            return Err(format!("micro-op {m} is not [f, key, value]"));
        };
        let f = f.to_string();
        let arg = match (f.as_str(), v) {
            ("r", _) => serde_json::Value::Null,
            (_, v) => serde_json::Value::String(value_to_store(v)),
        };
        out.push(serde_json::json!([f, k.to_string(), arg]));
    }
    Ok(serde_json::json!({ "ops": out }))
}

/// A store value as the history records it: integers where the text is one, lists element by
/// element (a list-append read), `null` for absent.
fn json_to_value(j: &serde_json::Value) -> Value {
    match j {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::String(s) => value_from_store(s),
        serde_json::Value::Array(items) => Value::List(items.iter().map(json_to_value).collect()),
        serde_json::Value::Number(n) => n.as_i64().map(Value::Int).unwrap_or(Value::Null),
        other => Value::Str(other.to_string()),
    }
}

/// Maps a 2xx `POST /txn` reply onto the invoked txn: reads take the value the store returned;
/// writes and appends stay as invoked.
pub fn txn_reply(invoked: &Value, body: &str) -> Result<Value, String> {
    let short: String = body.chars().take(200).collect();
    let parsed: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("unparsable txn reply {short:?}: {e}"))?;
    let ops = parsed
        .get("ops")
        .and_then(|o| o.as_array())
        .ok_or_else(|| format!("txn reply without ops: {short:?}"))?;
    let invoked_ops = invoked.as_list().unwrap_or(&[]);
    if ops.len() != invoked_ops.len() {
        return Err(format!(
            "txn reply has {} ops for {} invoked: {short:?}",
            ops.len(),
            invoked_ops.len()
        ));
    }
    let mut out = Vec::with_capacity(ops.len());
    for (m, reply) in invoked_ops.iter().zip(ops) {
        let parts = m.as_list().unwrap_or(&[]);
        if parts.len() == 3 && parts[0] == Value::Str("r".into()) {
            let read = reply.get(2).map(json_to_value).unwrap_or(Value::Null);
            out.push(Value::List(vec![parts[0].clone(), parts[1].clone(), read]));
        } else {
            out.push(m.clone());
        }
    }
    Ok(Value::List(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordeal_checker::EventType;

    #[test]
    fn statuses_map_as_design_says() {
        let input = Value::Int(3);
        let k = |s| outcome_for_status(s, Value::Int(3), &input, "").kind;
        assert_eq!(k(200), EventType::Ok);
        assert_eq!(k(204), EventType::Ok);
        assert_eq!(k(409), EventType::Fail);
        assert_eq!(k(503), EventType::Fail);
        let r = |s| outcome_for_status(s, Value::Int(3), &input, "").refused;
        assert!(r(503), "a 503 is a refusal the client backs off from");
        assert!(!r(409), "a failed precondition says the store is up");
        assert!(!r(504) && !r(200));
        assert_eq!(k(504), EventType::Info);
        assert_eq!(k(400), EventType::Fail);
        assert_eq!(k(500), EventType::Info);
    }

    #[tokio::test]
    async fn refused_connection_is_fail_and_silence_is_info() {
        let client = crate::Client::new(crate::ClientConfig {
            protocol: crate::Protocol::OrdealHttp,
            timeout: Duration::from_millis(300),
            max_idle_per_host: 4,
            read_consistency: ReadConsistency::Linearizable,
        })
        .unwrap();
        // A port nobody listens on: refused before anything was sent.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let op = OpSpec {
            f: "write",
            key: "x".into(),
            value: Value::Int(1),
        };
        let c = client
            .invoke(&format!("http://127.0.0.1:{port}"), &op)
            .await;
        assert_eq!(c.kind, EventType::Fail, "{c:?}");
        assert!(c.refused, "{c:?}");
        // A listener that accepts and never answers: the request went out, outcome unknown.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..4 {
                if let Ok((s, _)) = silent.accept().await {
                    held.push(s);
                }
            }
        });
        let c = client.invoke(&format!("http://{addr}"), &op).await;
        assert_eq!(c.kind, EventType::Info, "{c:?}");
        hold.abort();
    }

    #[test]
    fn txn_body_and_reply_map_values() {
        let m = |f: &str, k: &str, v: Value| {
            Value::List(vec![Value::Str(f.into()), Value::Str(k.into()), v])
        };
        let txn = Value::List(vec![
            m("r", "x", Value::Null),
            m("append", "x", Value::Int(3)),
            m("w", "y", Value::Int(-2)),
            m("r", "y", Value::Null),
        ]);
        let body = txn_body(&txn).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"ops": [["r","x",null],["append","x","3"],["w","y","-2"],["r","y",null]]})
        );
        let reply = r#"{"ops":[["r","x",["1","2"]],["append","x","3"],["w","y","-2"],["r","y","-2"]],"revision":9}"#;
        let v = txn_reply(&txn, reply).unwrap();
        let ops = v.as_list().unwrap();
        assert_eq!(
            ops[0],
            m("r", "x", Value::List(vec![Value::Int(1), Value::Int(2)]))
        );
        assert_eq!(ops[1], m("append", "x", Value::Int(3)));
        assert_eq!(ops[3], m("r", "y", Value::Int(-2)));
        assert!(txn_reply(&txn, "{}").is_err());
        assert!(txn_reply(&txn, r#"{"ops":[]}"#).is_err());
        assert!(txn_body(&Value::Int(1)).is_err());
    }
}
