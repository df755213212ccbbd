//! Helpers shared by the integration tests.

/// `sub` of the shared test data; fails naming the missing directory and `.ci/fetch-testdata`.
#[allow(dead_code)] // not every test file uses every helper
pub fn testdata(sub: &str) -> std::path::PathBuf {
    ordeal_checker::read::shared_testdata(sub).unwrap_or_else(|e| panic!("{e}"))
}

/// The rows of a verdicts.tsv (header skipped, blank lines dropped), split on tabs.
#[allow(dead_code)]
pub fn tsv_rows(path: &std::path::Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// rw-register: the verdict, how it was reached, and every anomaly's explanation.
#[allow(dead_code)]
pub fn explanation(r: &ordeal_checker::txn::TxnResult) -> String {
    format!(
        "verdict {} by {:?}; anomalies {:?}; notes {:?}\n{}",
        r.verdict,
        r.decided_by,
        r.anomaly_types,
        r.notes,
        r.anomalies
            .iter()
            .map(|a| a.explanation.as_str())
            .collect::<Vec<_>>()
            .join("\n---\n")
    )
}

/// The proof is whole and each of its cycles holds together: each cycle is closed, refutes
/// exactly one supposed order, and every other edge is known, derived, the case's or forced
/// by a lemma the proof shows. Returns the proof.
#[allow(dead_code)]
pub fn assert_proof(r: &ordeal_checker::txn::TxnResult) -> &ordeal_checker::txn::ProofReport {
    let proof = r
        .exact
        .as_ref()
        .and_then(|e| e.proof.as_ref())
        .unwrap_or_else(|| panic!("no proof: {}", explanation(r)));
    assert_eq!(proof.status, "complete", "{}", explanation(r));
    assert!(!proof.cycles.is_empty(), "{}", explanation(r));
    let lemmas: std::collections::HashSet<usize> =
        proof.cycles.iter().filter_map(|c| c.lemma).collect();
    for c in &proof.cycles {
        let steps = &c.steps;
        assert!(steps.len() >= 2, "{}: {steps:#?}", c.refutes);
        for (i, s) in steps.iter().enumerate() {
            let next = &steps[(i + 1) % steps.len()];
            assert_eq!(s.to, next.from, "{}: not a cycle: {steps:#?}", c.refutes);
            let basis = s.basis.as_deref().unwrap_or("none");
            assert!(
                ["known", "derived", "supposed", "case", "forced"].contains(&basis),
                "{}: step {} rests on {basis}: {}",
                c.refutes,
                s.text,
                explanation(r)
            );
            if basis == "forced" {
                let cited: usize = s
                    .text
                    .split("see (")
                    .nth(1)
                    .and_then(|t| t.split(')').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("a forced step cites no lemma: {}", s.text));
                assert!(
                    lemmas.contains(&cited),
                    "lemma ({cited}) is not shown: {}",
                    explanation(r)
                );
            }
        }
        let supposed = steps
            .iter()
            .filter(|s| s.basis.as_deref() == Some("supposed"))
            .count();
        // A cycle of known edges alone supposes nothing.
        let expected = usize::from(c.refutes != "the known edges");
        assert_eq!(supposed, expected, "{}: {}", c.refutes, explanation(r));
        assert_eq!(c.supposes.is_some(), expected == 1, "{}", c.refutes);
    }
    for a in &r.anomalies {
        assert!(
            !a.explanation.contains("in this order") && !a.explanation.contains("Partial"),
            "{}",
            a.explanation
        );
        assert!(
            a.steps
                .iter()
                .all(|s| s.basis.as_deref() != Some("guessed")),
            "{}",
            a.explanation
        );
    }
    proof
}

/// What a proof that passed `assert_proof_holds` consists of.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProofShape {
    /// Case splits (each with both its cases refuted).
    pub splits: usize,
    /// The deepest nesting of cases.
    pub depth: usize,
    pub lemmas: usize,
    pub cycles: usize,
}

/// `assert_proof`, and then the proof is checked against the history itself, trusting none of
/// the checker's labels: every step of every cycle is an edge that holds in `log` under that
/// cycle's assumptions (the enclosing cases' orders, the order it refutes, and the orders of
/// the lemmas in scope, each lemma itself checked the same way and citing only earlier ones),
/// recomputed here from the reads, writes and (strict serializability) real time; and the
/// cycles cover every case: the root is refuted, where a set of assumptions is refuted by a
/// cycle under it alone, or by a pair both of whose orders are refuted (each by a cycle that
/// supposes it, or by a case split beneath it). The labels are checked too: a `known` step
/// holds with no assumption, a `derived` one by the derivation rule alone, a `supposed`,
/// `case` or `forced` step is exactly the order it names. Returns the proof's shape.
#[allow(dead_code)]
pub fn assert_proof_holds(
    log: &ordeal_checker::txn::TxnLog,
    r: &ordeal_checker::txn::TxnResult,
) -> ProofShape {
    let proof = assert_proof(r);
    proof_check::check(log, r, proof)
}

/// The independent recomputation behind `assert_proof_holds`.
#[allow(dead_code)]
mod proof_check {
    use super::explanation;
    use ordeal_checker::txn::log::{MopKind, NO_POS};
    use ordeal_checker::txn::{ProofCycleReport, ProofReport, TxnLog, TxnResult, VersionOrder};
    use ordeal_checker::{Outcome, Value};
    use std::collections::{HashMap, HashSet};

    /// "Key k's version a precedes b", in the log's key ids.
    type Order = (u32, Value, Value);

    /// Version orders: per key, per version, the versions it precedes.
    #[derive(Clone, Default)]
    struct Orders(HashMap<u32, HashMap<Value, HashSet<Value>>>);

    impl Orders {
        fn insert(&mut self, k: u32, a: &Value, b: &Value) {
            self.0
                .entry(k)
                .or_default()
                .entry(a.clone())
                .or_default()
                .insert(b.clone());
        }

        fn contains(&self, k: u32, a: &Value, b: &Value) -> bool {
            self.0
                .get(&k)
                .and_then(|m| m.get(a))
                .is_some_and(|s| s.contains(b))
        }

        /// Transitively closed, per key.
        fn close(&mut self) {
            for succ in self.0.values_mut() {
                let versions: Vec<Value> = succ.keys().cloned().collect();
                for a in versions {
                    let mut seen: HashSet<Value> = HashSet::new();
                    let mut stack: Vec<Value> = succ[&a].iter().cloned().collect();
                    while let Some(x) = stack.pop() {
                        if seen.insert(x.clone()) {
                            if let Some(next) = succ.get(&x) {
                                stack.extend(next.iter().cloned());
                            }
                        }
                    }
                    succ.insert(a, seen);
                }
            }
        }
    }

    struct Facts<'a> {
        log: &'a TxnLog,
        /// Per transaction: key -> its external read (ok transactions, known reads only;
        /// Null for nil), key -> its final write, key -> every value it wrote.
        ext_read: Vec<HashMap<u32, Value>>,
        final_write: Vec<HashMap<u32, Value>>,
        wrote: Vec<HashMap<u32, HashSet<Value>>>,
        /// Ok, or info with a final write some other ok transaction read.
        committed: Vec<bool>,
        /// (key, value) -> the committed transactions whose final write it is; key -> all
        /// committed transactions with a final write of it.
        writers: HashMap<(u32, Value), Vec<usize>>,
        writers_of_key: HashMap<u32, Vec<usize>>,
        /// Version orders the history itself shows: a transaction read a and then wrote b.
        base: Orders,
        /// rw edges count (not under read committed); real-time and process order count
        /// (strict serializability); the derivation rule applies (one serial order).
        rw: bool,
        realtime: bool,
        derive: bool,
    }

    impl Facts<'_> {
        fn new(log: &TxnLog, rw: bool, realtime: bool, derive: bool) -> Facts<'_> {
            let n = log.txns.len();
            let mut ext_read = vec![HashMap::new(); n];
            let mut final_write = vec![HashMap::new(); n];
            let mut wrote: Vec<HashMap<u32, HashSet<Value>>> = vec![HashMap::new(); n];
            for t in 0..n {
                let tx = &log.txns[t];
                if tx.outcome == Outcome::Fail {
                    continue;
                }
                let mut seen = HashSet::new();
                for m in log.mops_of(t) {
                    let first = seen.insert(m.key);
                    match m.kind {
                        MopKind::Read if first && m.known && tx.outcome == Outcome::Ok => {
                            ext_read[t].insert(m.key, log.decode(m.value));
                        }
                        MopKind::Write => {
                            final_write[t].insert(m.key, log.decode(m.value));
                            wrote[t]
                                .entry(m.key)
                                .or_default()
                                .insert(log.decode(m.value));
                        }
                        _ => {}
                    }
                }
            }
            let mut committed: Vec<bool> =
                log.txns.iter().map(|t| t.outcome == Outcome::Ok).collect();
            let mut finals: HashMap<(u32, Value), Vec<usize>> = HashMap::new();
            for (t, fw) in final_write.iter().enumerate() {
                for (&k, v) in fw {
                    finals.entry((k, v.clone())).or_default().push(t);
                }
            }
            let mut base = Orders::default();
            for t in 0..n {
                for (&k, a) in &ext_read[t] {
                    if let Some(b) = final_write[t].get(&k) {
                        if *a != Value::Null && a != b {
                            base.insert(k, a, b);
                        }
                    }
                    for &w in finals.get(&(k, a.clone())).map_or(&[][..], |ws| ws) {
                        if w != t {
                            committed[w] = true;
                        }
                    }
                }
            }
            let mut writers: HashMap<(u32, Value), Vec<usize>> = HashMap::new();
            let mut writers_of_key: HashMap<u32, Vec<usize>> = HashMap::new();
            for ((k, v), ws) in finals {
                let ws: Vec<usize> = ws.into_iter().filter(|&w| committed[w]).collect();
                if !ws.is_empty() {
                    writers_of_key.entry(k).or_default().extend(&ws);
                    writers.insert((k, v), ws);
                }
            }
            Facts {
                log,
                ext_read,
                final_write,
                wrote,
                committed,
                writers,
                writers_of_key,
                base,
                rw,
                realtime,
                derive,
            }
        }

        fn less(&self, order: &Orders, k: u32, a: &Value, b: &Value) -> bool {
            (*a == Value::Null && *b != Value::Null) || order.contains(k, a, b)
        }

        /// Whether the edge u -kind-> v (on key k) holds under `order`.
        fn holds(&self, order: &Orders, u: usize, v: usize, kind: &str, k: u32) -> bool {
            if u == v || !self.committed[u] || !self.committed[v] {
                return false;
            }
            let (tu, tv) = (&self.log.txns[u], &self.log.txns[v]);
            match kind {
                "wr" => match self.ext_read[v].get(&k) {
                    Some(x) if *x != Value::Null => {
                        self.wrote[u].get(&k).is_some_and(|ws| ws.contains(x))
                    }
                    _ => false,
                },
                "ww" => match (self.final_write[u].get(&k), self.final_write[v].get(&k)) {
                    (Some(a), Some(b)) => self.less(order, k, a, b),
                    _ => false,
                },
                "rw" => {
                    self.rw
                        && match (self.ext_read[u].get(&k), self.final_write[v].get(&k)) {
                            (Some(a), Some(b)) => self.less(order, k, a, b),
                            _ => false,
                        }
                }
                "realtime" => {
                    self.realtime
                        && tu.outcome == Outcome::Ok
                        && tu.complete_pos != NO_POS
                        && tu.complete_pos < tv.invoke_pos
                }
                "process" => {
                    self.realtime
                        && tu.outcome == Outcome::Ok
                        && tu.process == tv.process
                        && tu.invoke_pos < tv.invoke_pos
                }
                _ => false,
            }
        }

        /// Some edge u -> v holds under `order`.
        fn any_edge(&self, order: &Orders, u: usize, v: usize) -> bool {
            if ["realtime", "process"]
                .iter()
                .any(|kind| self.holds(order, u, v, kind, 0))
            {
                return true;
            }
            let keys: HashSet<u32> = self.ext_read[u]
                .keys()
                .chain(self.final_write[u].keys())
                .chain(self.ext_read[v].keys())
                .chain(self.final_write[v].keys())
                .copied()
                .collect();
            keys.into_iter().any(|k| {
                ["ww", "wr", "rw"]
                    .iter()
                    .any(|kind| self.holds(order, u, v, kind, k))
            })
        }

        /// The version orders that follow from `known` and `assumed`: transitively closed
        /// per key; with `derive`, also "u precedes r (an edge u -> r holds), u wrote k, r
        /// read k's version b: u's version precedes b" (else r -rw-> u closes a cycle), to a
        /// fixpoint.
        fn closure(&self, known: &Orders, assumed: &[Order], derive: bool) -> Orders {
            let mut order = known.clone();
            for (k, a, b) in assumed {
                order.insert(*k, a, b);
            }
            for _round in 0..64 {
                order.close();
                if !derive {
                    return order;
                }
                let mut fresh = Vec::new();
                for r in 0..self.log.txns.len() {
                    for (&k, b) in &self.ext_read[r] {
                        let Some(vs) = self.writers.get(&(k, b.clone())) else {
                            continue;
                        };
                        for &u in &self.writers_of_key[&k] {
                            let a = &self.final_write[u][&k];
                            if u != r
                                && !vs.contains(&u)
                                && a != b
                                && !self.less(&order, k, a, b)
                                && self.any_edge(&order, u, r)
                            {
                                fresh.push((k, a.clone(), b.clone()));
                            }
                        }
                    }
                }
                if fresh.is_empty() {
                    return order;
                }
                for (k, a, b) in &fresh {
                    order.insert(*k, a, b);
                }
            }
            panic!("the derivation did not reach a fixpoint in 64 rounds");
        }

        fn key_id(&self, key: &Value) -> u32 {
            (0..self.log.key_count() as u32)
                .find(|&k| self.log.key_value(k) == key)
                .unwrap_or_else(|| panic!("the proof names key {key}, which the history lacks"))
        }

        fn order_of(&self, o: &VersionOrder) -> Order {
            let k = self.key_id(&o.key);
            for v in [&o.first, &o.second] {
                assert!(
                    self.writers.contains_key(&(k, v.clone())),
                    "the proof orders {v} of key {}, which no committed transaction wrote",
                    o.key
                );
            }
            (k, o.first.clone(), o.second.clone())
        }

        /// The versions a ww or rw step orders.
        fn step_order(&self, u: usize, v: usize, kind: &str, k: u32) -> Option<Order> {
            let first = match kind {
                "ww" => self.final_write[u].get(&k)?,
                "rw" => self.ext_read[u].get(&k)?,
                _ => return None,
            };
            Some((k, first.clone(), self.final_write[v].get(&k)?.clone()))
        }
    }

    fn flip(o: &VersionOrder) -> VersionOrder {
        VersionOrder {
            key: o.key.clone(),
            first: o.second.clone(),
            second: o.first.clone(),
        }
    }

    fn is_prefix(short: &[VersionOrder], long: &[VersionOrder]) -> bool {
        short.len() <= long.len() && short.iter().zip(long).all(|(a, b)| a == b)
    }

    /// Whether the assumptions `cases` are refuted by the main cycles.
    fn refuted(main: &[&ProofCycleReport], cases: &[VersionOrder], budget: &mut usize) -> bool {
        *budget = budget
            .checked_sub(1)
            .expect("the proof's case tree is too large to check");
        let here: Vec<&&ProofCycleReport> =
            main.iter().filter(|c| is_prefix(cases, &c.cases)).collect();
        if here
            .iter()
            .any(|c| c.cases.len() == cases.len() && c.supposes.is_none())
        {
            return true;
        }
        // The orders split on or supposed right under `cases`.
        let mut candidates: Vec<&VersionOrder> = Vec::new();
        for c in &here {
            let next = if c.cases.len() > cases.len() {
                Some(&c.cases[cases.len()])
            } else {
                c.supposes.as_ref()
            };
            if let Some(o) = next {
                if !candidates.contains(&o) {
                    candidates.push(o);
                }
            }
        }
        let covered = |o: &VersionOrder, budget: &mut usize| -> bool {
            here.iter()
                .any(|c| c.cases.len() == cases.len() && c.supposes.as_ref() == Some(o))
                || {
                    let mut deeper = cases.to_vec();
                    deeper.push(o.clone());
                    here.iter().any(|c| is_prefix(&deeper, &c.cases))
                        && refuted(main, &deeper, budget)
                }
        };
        candidates
            .into_iter()
            .any(|o| covered(o, budget) && covered(&flip(o), budget))
    }

    pub(super) fn check(log: &TxnLog, r: &TxnResult, proof: &ProofReport) -> super::ProofShape {
        let why = || explanation(r);
        // The anomaly the report's proof belongs to, and what its cycles may use.
        let (kind, rw, realtime) = if r.has_anomaly("cycle-unavoidable") {
            ("cycle-unavoidable", true, false)
        } else if r.has_anomaly("cycle-unavoidable-realtime") {
            ("cycle-unavoidable-realtime", true, true)
        } else if r.has_anomaly("G1c-unavoidable") {
            ("G1c-unavoidable", false, false)
        } else {
            panic!("a proof without its anomaly: {}", why())
        };
        let facts = Facts::new(log, rw, realtime, rw);
        let anomaly = r
            .anomalies
            .iter()
            .find(|a| a.kind == kind)
            .unwrap_or_else(|| panic!("{kind} is not listed: {}", why()));
        let txn_of: HashMap<&str, usize> = anomaly
            .txns
            .iter()
            .map(|t| {
                let found: Vec<usize> = (0..log.txns.len())
                    .filter(|&i| log.txns[i].index == t.index)
                    .collect();
                assert_eq!(found.len(), 1, "history index {} names one txn", t.index);
                (t.name.as_str(), found[0])
            })
            .collect();
        let txn = |name: &str| -> usize {
            *txn_of
                .get(name)
                .unwrap_or_else(|| panic!("{name} is not among the anomaly's txns: {}", why()))
        };
        // Lemmas: number -> (the cases it holds in, the order it forces).
        let mut lemmas: HashMap<usize, (Vec<VersionOrder>, Order)> = HashMap::new();
        for c in &proof.cycles {
            if let Some(l) = c.lemma {
                let s = c
                    .supposes
                    .as_ref()
                    .expect("a lemma's cycle supposes an order");
                let forced = facts.order_of(&flip(s));
                assert!(
                    lemmas.insert(l, (c.cases.clone(), forced)).is_none(),
                    "lemma ({l}) shown twice: {}",
                    why()
                );
            }
        }
        // What the history shows, and what the derivation rule adds to it. A cycle's steps
        // may use these and its assumptions, but derive nothing further from its assumptions
        // (sound too, but under contradictory assumptions that derives anything, and the
        // check would then accept any step).
        let base = facts.closure(&facts.base, &[], false);
        let derived = facts.closure(&facts.base, &[], facts.derive);
        for c in &proof.cycles {
            let what = format!("cycle refuting {} (cases {:?})", c.refutes, c.cases);
            // The lemmas this cycle may lean on: those of its cases (a lemma: only earlier).
            let usable: Vec<usize> = lemmas
                .iter()
                .filter(|(&l, (scope, _))| {
                    is_prefix(scope, &c.cases) && c.lemma.is_none_or(|own| l < own)
                })
                .map(|(&l, _)| l)
                .collect();
            let cases: Vec<Order> = c.cases.iter().map(|o| facts.order_of(o)).collect();
            let supposes = c.supposes.as_ref().map(|o| facts.order_of(o));
            let mut assumed = cases.clone();
            assumed.extend(supposes.iter().cloned());
            assumed.extend(usable.iter().map(|l| lemmas[l].1.clone()));
            let order = facts.closure(&derived, &assumed, false);
            for s in &c.steps {
                let (u, v) = (txn(&s.from), txn(&s.to));
                let k = match &s.key {
                    Some(key) => facts.key_id(key),
                    None => {
                        assert!(
                            ["realtime", "process"].contains(&s.kind.as_str()),
                            "{what}: the {} step {} -> {} names no key: {}\n{}",
                            s.kind,
                            s.from,
                            s.to,
                            s.text,
                            why()
                        );
                        0
                    }
                };
                assert!(
                    facts.holds(&order, u, v, &s.kind, k),
                    "{what}: the step {} -{}-> {} does not hold in the history under its \
                     assumptions: {}\n{}",
                    s.from,
                    s.kind,
                    s.to,
                    s.text,
                    why()
                );
                let pair = facts.step_order(u, v, &s.kind, k);
                let basis = s.basis.as_deref().unwrap_or("none");
                let honest = match basis {
                    "known" => facts.holds(&base, u, v, &s.kind, k),
                    "derived" => s.kind == "ww" && facts.holds(&derived, u, v, &s.kind, k),
                    "supposed" => pair.is_some() && pair == supposes,
                    "case" => pair.as_ref().is_some_and(|p| cases.contains(p)),
                    "forced" => {
                        let cited: Option<usize> = s
                            .text
                            .split("see (")
                            .nth(1)
                            .and_then(|t| t.split(')').next())
                            .and_then(|n| n.parse().ok());
                        cited.is_some_and(|l| {
                            usable.contains(&l) && pair.as_ref() == Some(&lemmas[&l].1)
                        })
                    }
                    _ => false,
                };
                assert!(
                    honest,
                    "{what}: the step {} -{}-> {} is labelled {basis}, which it is not: {}\n{}",
                    s.from,
                    s.kind,
                    s.to,
                    s.text,
                    why()
                );
            }
        }
        let main: Vec<&ProofCycleReport> =
            proof.cycles.iter().filter(|c| c.lemma.is_none()).collect();
        let mut budget = 100_000;
        assert!(
            refuted(&main, &[], &mut budget),
            "the cycles do not cover every case: {}",
            why()
        );
        // Each split shows its two cases; count them by the distinct case prefixes.
        let mut prefixes: HashSet<Vec<VersionOrder>> = HashSet::new();
        for c in &proof.cycles {
            for i in 1..=c.cases.len() {
                prefixes.insert(c.cases[..i].to_vec());
            }
        }
        super::ProofShape {
            splits: prefixes.len().div_ceil(2),
            depth: proof
                .cycles
                .iter()
                .map(|c| c.cases.len())
                .max()
                .unwrap_or(0),
            lemmas: lemmas.len(),
            cycles: proof.cycles.len(),
        }
    }
}
