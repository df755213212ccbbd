//! A small EDN reader for Jepsen histories, which also reads JSON (JSON arrays of op objects from
//! elle-cli), so that one parser reports line numbers for both.
//!
//! Supported: nil/true/false, integers, floats (`1.0`, `1e3`, `1M`: never equal to an integer,
//! as in Clojure), strings with escapes, keywords (`Value::Keyword`, never equal to a string),
//! symbols (become strings), vectors, lists and sets (become lists), maps, comments, commas as
//! white space, `#_` discard, and tagged elements such as `#jepsen.history.Op{...}` (the tag
//! is dropped). Ratios and chars are errors.

use crate::value::Value;

/// A parse error at a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdnError {
    pub line: usize,
    pub message: String,
}

/// Nesting bound: histories nest a few levels; anything deeper is hostile or corrupt input.
const MAX_DEPTH: usize = 128;

pub struct Parser<'a> {
    src: &'a str,
    text: &'a [u8],
    pos: usize,
    line: usize,
    /// In JSON mode a `:` after a map key separates key from value, and `null` is nil.
    json: bool,
}

impl<'a> Parser<'a> {
    pub fn new(text: &'a str, first_line: usize) -> Parser<'a> {
        Parser {
            src: text,
            text: text.as_bytes(),
            pos: 0,
            line: first_line,
            json: false,
        }
    }

    pub fn json(mut self) -> Parser<'a> {
        self.json = true;
        self
    }

    pub fn line(&self) -> usize {
        self.line
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, EdnError> {
        Err(EdnError {
            line: self.line,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// Skips white space, commas and comments.
    pub fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' | b',' => {
                    self.bump();
                }
                b';' => {
                    while let Some(c) = self.peek() {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    /// Whether only white space, comments and discards are left (a broken discard is not
    /// the end: reading the next value reports it).
    pub fn at_end(&mut self) -> bool {
        self.skip().is_ok() && self.pos >= self.text.len()
    }

    /// Reads the next value, which must be there.
    pub fn value(&mut self) -> Result<Value, EdnError> {
        self.value_at(0)
    }

    /// If the next form opens a vector, consumes the bracket and returns true.
    pub fn open_vector(&mut self) -> bool {
        self.open_seq(b"[").is_some()
    }

    /// If the next form opens one of `opens` (`[` or `(`), consumes it and returns the
    /// matching closing byte. Discards before it are skipped.
    pub fn open_seq(&mut self, opens: &[u8]) -> Option<u8> {
        self.skip().ok()?;
        let c = self.peek().filter(|c| opens.contains(c))?;
        self.bump();
        Some(if c == b'(' { b')' } else { b']' })
    }

    /// If the next form is `close`, consumes it and returns true. Discards before it are
    /// skipped.
    pub fn close_seq(&mut self, close: u8) -> bool {
        if self.skip().is_err() {
            return false;
        }
        if self.peek() == Some(close) {
            self.bump();
            true
        } else {
            false
        }
    }

    /// Skips white space, comments and `#_` discards. On an error nothing of the failing
    /// discard is consumed, so that reading the next value reports it.
    fn skip(&mut self) -> Result<(), EdnError> {
        let (pos, line) = (self.pos, self.line);
        self.skip_at(0).inspect_err(|_| {
            self.pos = pos;
            self.line = line;
        })
    }

    /// Skips white space, comments and `#_` discards inside a form at `depth` (each discarded
    /// form is parsed and dropped). Chains of discards are consumed in a loop, never by
    /// recursion, so no input can exhaust the stack; a discarded form counts against the
    /// nesting bound.
    fn skip_at(&mut self, depth: usize) -> Result<(), EdnError> {
        loop {
            self.skip_ws();
            if self.text.get(self.pos..self.pos + 2) != Some(&b"#_"[..]) {
                return Ok(());
            }
            self.pos += 2;
            self.value_at(depth + 1)?;
        }
    }

    fn value_at(&mut self, depth: usize) -> Result<Value, EdnError> {
        if depth > MAX_DEPTH {
            return self.err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        self.skip_at(depth)?;
        let Some(c) = self.peek() else {
            return self.err("unexpected end of input");
        };
        match c {
            b'[' | b'(' => {
                self.bump();
                let close = if c == b'[' { b']' } else { b')' };
                self.seq(close, depth).map(Value::List)
            }
            b'{' => {
                self.bump();
                self.map(depth)
            }
            b'"' => {
                self.bump();
                self.string().map(Value::Str)
            }
            b':' => {
                self.bump();
                let word = self.word();
                if word.is_empty() {
                    return self.err("a lone ':' is not a keyword");
                }
                Ok(Value::Keyword(word.to_string()))
            }
            b'#' => {
                self.bump();
                match self.peek() {
                    Some(b'{') => {
                        // A set is unordered: kept sorted and without duplicates, so that
                        // #{1 2} and #{2 1} are the same value.
                        self.bump();
                        let mut items = self.seq(b'}', depth)?;
                        items.sort();
                        items.dedup();
                        Ok(Value::List(items))
                    }
                    _ => {
                        // A tagged element: drop the tag, keep the value.
                        let tag = self.word();
                        if tag.is_empty() {
                            return self.err("'#' must start a tag, a set or a discard");
                        }
                        self.value_at(depth + 1)
                    }
                }
            }
            b']' | b')' | b'}' => self.err(format!("unexpected '{}'", c as char)),
            b'\\' => self.err("EDN characters are not supported in histories"),
            _ => self.atom(),
        }
    }

    fn seq(&mut self, close: u8, depth: usize) -> Result<Vec<Value>, EdnError> {
        let start_line = self.line;
        let mut items = Vec::new();
        loop {
            self.skip_at(depth + 1)?;
            match self.peek() {
                None => {
                    return Err(EdnError {
                        line: start_line,
                        message: format!("'{}' is never closed", open_of(close)),
                    })
                }
                Some(c) if c == close => {
                    self.bump();
                    return Ok(items);
                }
                Some(_) => items.push(self.value_at(depth + 1)?),
            }
        }
    }

    fn map(&mut self, depth: usize) -> Result<Value, EdnError> {
        let start_line = self.line;
        let mut entries = Vec::new();
        loop {
            self.skip_at(depth + 1)?;
            match self.peek() {
                None => {
                    return Err(EdnError {
                        line: start_line,
                        message: "'{' is never closed".into(),
                    })
                }
                Some(b'}') => {
                    self.bump();
                    return Ok(Value::Map(entries));
                }
                Some(_) => {
                    let k = self.value_at(depth + 1)?;
                    if self.json {
                        self.skip_ws();
                        if self.peek() == Some(b':') {
                            self.bump();
                        } else {
                            return self.err(format!("expected ':' after key {k}"));
                        }
                    }
                    self.skip_at(depth + 1)?;
                    if self.peek() == Some(b'}') {
                        return self.err(format!("map key {k} has no value"));
                    }
                    let v = self.value_at(depth + 1)?;
                    entries.push((k, v));
                }
            }
        }
    }

    fn string(&mut self) -> Result<String, EdnError> {
        let start_line = self.line;
        let mut out = Vec::new();
        loop {
            let Some(c) = self.bump() else {
                return Err(EdnError {
                    line: start_line,
                    message: "string is never closed".into(),
                });
            };
            match c {
                b'"' => break,
                b'\\' => match self.bump() {
                    Some(b'n') => out.push(b'\n'),
                    Some(b't') => out.push(b'\t'),
                    Some(b'r') => out.push(b'\r'),
                    Some(b'"') => out.push(b'"'),
                    Some(b'\\') => out.push(b'\\'),
                    Some(b'/') => out.push(b'/'),
                    Some(b'u') => {
                        let hex = self.take(4);
                        let mut unit = u32::from_str_radix(&hex, 16).ok();
                        // A high surrogate must be followed by an escaped low one: together
                        // they are one character outside the Basic Multilingual Plane.
                        if let Some(high @ 0xD800..=0xDBFF) = unit {
                            unit = None;
                            if self.text.get(self.pos..self.pos + 2) == Some(&b"\\u"[..]) {
                                self.pos += 2;
                                let low_hex = self.take(4);
                                if let Ok(low @ 0xDC00..=0xDFFF) = u32::from_str_radix(&low_hex, 16)
                                {
                                    unit = Some(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00));
                                }
                            }
                        }
                        let code = unit
                            .and_then(char::from_u32)
                            .map_or_else(|| self.err(format!("bad escape \\u{hex}")), Ok)?;
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(code.encode_utf8(&mut buf).as_bytes());
                    }
                    other => {
                        return self.err(format!(
                            "bad escape '\\{}' in string",
                            other.map(|c| c as char).unwrap_or(' ')
                        ))
                    }
                },
                c => out.push(c),
            }
        }
        String::from_utf8(out).or_else(|_| self.err("string is not valid UTF-8"))
    }

    fn take(&mut self, n: usize) -> String {
        let end = (self.pos + n).min(self.text.len());
        let s = String::from_utf8_lossy(&self.text[self.pos..end]).into_owned();
        self.pos = end;
        s
    }

    /// A run of symbol characters.
    fn word(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_whitespace()
                || matches!(
                    c,
                    b',' | b'[' | b']' | b'(' | b')' | b'{' | b'}' | b'"' | b';'
                )
                || (self.json && c == b':')
            {
                break;
            }
            self.pos += 1;
        }
        // A word starts after and ends before ASCII, so both ends are char boundaries.
        self.src.get(start..self.pos).unwrap_or("")
    }

    fn atom(&mut self) -> Result<Value, EdnError> {
        let word = self.word();
        if word.is_empty() {
            let c = self.peek().unwrap_or(b' ');
            return self.err(format!("unexpected character '{}'", c as char));
        }
        match word {
            "nil" | "null" => return Ok(Value::Null),
            "true" => return Ok(Value::Bool(true)),
            "false" => return Ok(Value::Bool(false)),
            _ => {}
        }
        let first = word.as_bytes()[0];
        let numeric = first.is_ascii_digit()
            || ((first == b'-' || first == b'+')
                && word.len() > 1
                && word.as_bytes()[1].is_ascii_digit());
        if !numeric {
            return Ok(Value::Str(word.to_string()));
        }
        // `1N` is an integer; `1.0`, `1e3` and `1M` (a decimal) are not, as in Clojure, where
        // (= 1 1.0) is false.
        let decimal = word.ends_with('M');
        let digits = word.trim_end_matches(['N', 'M']);
        if !decimal {
            if let Ok(i) = digits.parse::<i64>() {
                return Ok(Value::Int(i));
            }
            if !digits.contains(['.', 'e', 'E']) {
                return self.err(format!("integer '{word}' is out of range"));
            }
        }
        match digits.parse::<f64>() {
            Ok(x) => Ok(Value::Float(crate::value::Float(x))),
            _ => self.err(format!("unsupported number '{word}'")),
        }
    }
}

fn open_of(close: u8) -> char {
    match close {
        b']' => '[',
        b')' => '(',
        _ => '{',
    }
}

/// Parses one complete value from `text`.
pub fn parse(text: &str) -> Result<Value, EdnError> {
    let mut p = Parser::new(text, 1);
    let v = p.value()?;
    if !p.at_end() {
        return p.err("unexpected text after the value");
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jepsen_op_maps() {
        let v = parse(r#"{:type :invoke, :f :txn, :value [[:append 11 1] [:r 11 nil]], :process 10, :time 145, :index 0}"#).unwrap();
        assert_eq!(v.get("type"), Some(&Value::Keyword("invoke".into())));
        assert_eq!(v.get("process"), Some(&Value::Int(10)));
        assert_eq!(
            v.get("value").unwrap().to_edn(),
            r#"[[:append 11 1] [:r 11 nil]]"#
        );
    }

    #[test]
    fn drops_tags_and_discards() {
        let v = parse(r#"#jepsen.history.Op{:index 3 #_ :ignored :f :read}"#).unwrap();
        assert_eq!(v.get("index"), Some(&Value::Int(3)));
        assert_eq!(v.get("f"), Some(&Value::Keyword("read".into())));
    }

    #[test]
    fn keywords_strings_floats_and_integers_differ() {
        assert_eq!(parse(":a").unwrap(), Value::Keyword("a".into()));
        assert_eq!(parse("\"a\"").unwrap(), Value::Str("a".into()));
        assert_ne!(parse(":a").unwrap(), parse("\"a\"").unwrap());
        assert_ne!(parse("1.0").unwrap(), parse("1").unwrap());
        assert_eq!(parse("1N").unwrap(), Value::Int(1));
        assert_ne!(parse("1M").unwrap(), Value::Int(1));
        assert_eq!(parse("1.5").unwrap().to_edn(), "1.5");
        assert_eq!(parse("-2e3").unwrap(), parse("-2000.0").unwrap());
        assert!(parse("99999999999999999999").is_err());
        let mut p = Parser::new("[1.0, 1]", 1).json();
        let v = p.value().unwrap();
        assert_ne!(v.as_list().unwrap()[0], v.as_list().unwrap()[1]);
    }

    #[test]
    fn json_mode_reads_objects() {
        let mut p = Parser::new(r#"{"a": [1, null, "x"], "b":-2}"#, 1).json();
        let v = p.value().unwrap();
        assert_eq!(v.get("b"), Some(&Value::Int(-2)));
        assert_eq!(v.get("a").unwrap().to_edn(), r#"[1 nil "x"]"#);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("{:a 1\n :b [1 2}").unwrap_err();
        assert_eq!(err.line, 2, "{err:?}");
        let err = parse("{:a 1\n\n :b [1 2]").unwrap_err();
        assert_eq!(err.line, 1);
        assert!(err.message.contains("never closed"));
    }

    #[test]
    fn long_discard_chains_do_not_exhaust_the_stack() {
        let text = format!("{}{{:a 1}}", "#_1 ".repeat(10_000));
        assert_eq!(parse(&text).unwrap().get("a"), Some(&Value::Int(1)));
        // Discards before a closing bracket and at the very end.
        assert_eq!(parse("[1 #_2]").unwrap().to_edn(), "[1]");
        let mut p = Parser::new("{:a 1} #_ {:b 2}", 1);
        p.value().unwrap();
        assert!(p.at_end());
        // Nested discards are bounded like any nesting.
        let nested = format!("{}1", "#_".repeat(10_000));
        assert!(parse(&nested).is_err());
    }

    #[test]
    fn sets_are_unordered() {
        assert_eq!(parse("#{2 1 2}").unwrap(), parse("#{1 2}").unwrap());
    }

    #[test]
    fn surrogate_pairs_make_one_character() {
        assert_eq!(
            parse(r#""\ud83d\ude00""#).unwrap(),
            Value::Str("\u{1F600}".into())
        );
        assert!(parse(r#""\ud83d""#).is_err());
        assert!(parse(r#""\ude00""#).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let text = "[".repeat(10_000);
        assert!(parse(&text).unwrap_err().message.contains("nested deeper"));
    }
}
