//! A dynamically typed value as it appears in histories: the subset of EDN and JSON that Jepsen
//! histories use. As in Knossos (Clojure's `=`), a keyword is not the string of its name
//! (`:a` is not `"a"`) and a float is not the integer of its value (`1.0` is not `1`); names
//! (`:f`, `:type`, micro-op names) are read through `as_str`, which takes either. JSON has no
//! keywords: a keyword written to JSON becomes its name as a string.

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A value in a history: an operation's argument or result, a key, a micro-op.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    /// `nil` / `null`: for a register, "unset"; on an invoke of a read, "not known yet".
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    /// A floating-point number (EDN `1.5`, `1.0`, `1M`; a JSON number with a fraction or an
    /// exponent).
    Float(Float),
    Str(String),
    /// An EDN keyword, without the leading colon.
    Keyword(String),
    /// EDN vectors, lists and sets; JSON arrays.
    List(Vec<Value>),
    /// EDN and JSON maps, in the order read.
    Map(Vec<(Value, Value)>),
}

/// An `f64` with total equality, order and hashing (by `f64::total_cmp`, with `-0.0` taken
/// as `0.0`), so that values can be compared, sorted and interned.
#[derive(Clone, Copy, Debug)]
pub struct Float(pub f64);

impl Float {
    fn key(self) -> f64 {
        if self.0 == 0.0 {
            0.0
        } else {
            self.0
        }
    }
}

impl PartialEq for Float {
    fn eq(&self, other: &Float) -> bool {
        self.key().total_cmp(&other.key()).is_eq()
    }
}

impl Eq for Float {}

impl PartialOrd for Float {
    fn partial_cmp(&self, other: &Float) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Float {
    fn cmp(&self, other: &Float) -> std::cmp::Ordering {
        self.key().total_cmp(&other.key())
    }
}

impl std::hash::Hash for Float {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().to_bits().hash(state)
    }
}

impl fmt::Display for Float {
    /// As Clojure prints doubles: always with a fraction or an exponent (`1.0`, `1.5E20`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = self.0;
        if x.is_nan() {
            f.write_str("##NaN")
        } else if x.is_infinite() {
            f.write_str(if x > 0.0 { "##Inf" } else { "##-Inf" })
        } else {
            let text = format!("{x:?}");
            f.write_str(&text)
        }
    }
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The text of a string, or the name of a keyword: for names (`f`, `type`, micro-op
    /// names, map keys), which Jepsen writes as keywords and JSON as strings.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::Keyword(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// Looks a key up in a map value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Renders the value as EDN (strings quoted, vectors in brackets).
    pub fn to_edn(&self) -> String {
        let mut out = String::new();
        self.write_edn(&mut out);
        out
    }

    fn write_edn(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("nil"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => out.push_str(&i.to_string()),
            Value::Float(x) => out.push_str(&x.to_string()),
            Value::Str(s) => {
                out.push_str(&serde_json::to_string(s).expect("a string serialises"));
            }
            Value::Keyword(k) => {
                out.push(':');
                out.push_str(k);
            }
            Value::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    item.write_edn(out);
                }
                out.push(']');
            }
            Value::Map(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    k.write_edn(out);
                    out.push(' ');
                    v.write_edn(out);
                }
                out.push('}');
            }
        }
    }
}

/// Short human form: `nil`, `3`, `x`, `[1 2]`. Strings and keywords are shown by their text
/// alone (use `to_edn` where the two must be told apart).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) | Value::Keyword(s) => f.write_str(s),
            other => f.write_str(&other.to_edn()),
        }
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Self {
        Value::List(l)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Float(x) => serializer.serialize_f64(x.0),
            Value::Str(s) | Value::Keyword(s) => serializer.serialize_str(s),
            Value::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    // JSON object keys must be strings.
                    match k {
                        Value::Str(s) | Value::Keyword(s) => map.serialize_entry(s, v)?,
                        other => map.serialize_entry(&other.to_edn(), v)?,
                    }
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null, a boolean, a number, a string, an array or an object")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        i64::try_from(u)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("integer {u} is out of range")))
    }

    /// A JSON number with a fraction or an exponent (`1.0`, `2e3`) is a float, never the
    /// integer of its value.
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Value, E> {
        Ok(Value::Float(Float(x)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::Str(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::Str(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            entries.push((Value::Str(k), v));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let text = r#"[null,true,-3,"x",[1,["r","k",[1,2]]],{"a":1}]"#;
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), text);
    }

    #[test]
    fn keywords_and_floats_are_values_of_their_own() {
        let kw = Value::Keyword("a".into());
        let s = Value::Str("a".into());
        assert_ne!(kw, s);
        assert_eq!(kw.as_str(), Some("a"));
        assert_eq!(kw.to_edn(), ":a");
        assert_eq!(s.to_edn(), "\"a\"");
        let one: Value = serde_json::from_str("1.0").unwrap();
        assert_eq!(one, Value::Float(Float(1.0)));
        assert_ne!(one, Value::Int(1));
        assert_eq!(one.to_edn(), "1.0");
        assert_eq!(serde_json::to_string(&one).unwrap(), "1.0");
        assert_eq!(Value::Float(Float(-0.0)), Value::Float(Float(0.0)));
        let mut sorted = vec![kw.clone(), s.clone(), one.clone(), Value::Int(1)];
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
    }

    #[test]
    fn edn_rendering() {
        let v = Value::List(vec![Value::Int(1), Value::Str("a".into()), Value::Null]);
        assert_eq!(v.to_edn(), r#"[1 "a" nil]"#);
        assert_eq!(v.to_string(), r#"[1 "a" nil]"#);
        assert_eq!(Value::Str("a".into()).to_string(), "a");
    }
}
