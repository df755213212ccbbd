//! Generated histories that are linearizable by construction: clients invoke operations, each
//! takes effect at a random moment between its invocation and completion (against a sequential
//! model of the object), and the scheduler interleaves clients at random. A fraction of
//! operations end `info` (half of those took effect, half did not); after an `info` the client
//! continues under a fresh process id, as in Jepsen.
//!
//! Used by the tests (property tests, cross-checks), the benchmark and the harness.

use crate::history::{Event, EventType, History, Process};
use crate::value::Value;
use std::collections::BTreeSet;

/// Which workload to generate, named after the model that checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// read / write.
    Register,
    /// read / write / cas (a cas whose expected value does not match fails).
    CasRegister,
    /// get / put / append on strings.
    Kv,
    /// get / put / append on strings, mostly writes (15% get, 20% put, 65% append): with a
    /// high info rate, many unknown appends that the search must place or drop.
    KvWrites,
    /// add / read.
    Set,
}

#[derive(Clone, Debug)]
pub struct GenOptions {
    pub workload: Workload,
    /// Operations to invoke.
    pub ops: usize,
    pub keys: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Fraction of operations that end `info`.
    pub info_rate: f64,
    pub seed: u64,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            workload: Workload::CasRegister,
            ops: 1000,
            keys: 10,
            clients: 8,
            info_rate: 0.01,
            seed: 1,
        }
    }
}

/// A small, fast, seeded generator (PCG-XSH-RR); keeps `rand` out of the library.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut r = Rng(seed.wrapping_mul(6_364_136_223_846_793_005) ^ 0x853c_49e6_748f_ea9b);
        r.next_u32();
        r
    }

    pub fn next_u32(&mut self) -> u32 {
        let old = self.0;
        self.0 = old
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        xorshifted.rotate_right((old >> 59) as u32)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u32() as u64 * n as u64) >> 32) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u32() as f64) < p * 4_294_967_296.0
    }
}

/// The sequential state of one key.
#[derive(Clone, Debug)]
enum KeyState {
    Register(Value),
    Kv(String),
    Set(BTreeSet<i64>),
}

struct Pending {
    f: &'static str,
    key: i64,
    input: Value,
    /// Set once the operation took effect (or was decided not to): (type, output value).
    done: Option<(EventType, Value)>,
}

/// Generates a linearizable history.
pub fn generate(opts: &GenOptions) -> History {
    let mut events: Vec<Event> = Vec::with_capacity(opts.ops * 2);
    generate_into(opts, |e| events.push(e));
    History::new(events)
}

/// `generate`, handing the events to `sink` in order (numbered from 0) instead of holding
/// them: big histories go straight to a file.
pub fn generate_into(opts: &GenOptions, mut sink: impl FnMut(Event)) {
    let mut rng = Rng::new(opts.seed);
    let clients = opts.clients.max(1);
    let keys = opts.keys.max(1);
    let mut state: Vec<KeyState> = (0..keys)
        .map(|_| match opts.workload {
            Workload::Register | Workload::CasRegister => KeyState::Register(Value::Null),
            Workload::Kv | Workload::KvWrites => KeyState::Kv(String::new()),
            Workload::Set => KeyState::Set(BTreeSet::new()),
        })
        .collect();
    // Values written so far per key, for cas expectations.
    let mut written: Vec<Vec<i64>> = vec![Vec::new(); keys];
    let mut process: Vec<u64> = (0..clients as u64).collect();
    let mut pending: Vec<Option<Pending>> = (0..clients).map(|_| None).collect();
    // Events handed to `sink` so far: the next one's index, and the clock.
    let mut emitted = 0u64;
    let mut invoked = 0usize;
    let mut open = 0usize;
    let mut counter = 0i64;

    while invoked < opts.ops || open > 0 {
        let c = rng.below(clients);
        let time = emitted as i64 * 1000;
        match &mut pending[c] {
            None => {
                if invoked >= opts.ops {
                    continue;
                }
                invoked += 1;
                open += 1;
                counter += 1;
                let key = rng.below(keys) as i64;
                let roll = rng.below(100);
                let (f, input) = match opts.workload {
                    Workload::Register => {
                        if roll < 50 {
                            ("read", Value::Null)
                        } else {
                            ("write", Value::Int(counter))
                        }
                    }
                    Workload::CasRegister => {
                        if roll < 40 {
                            ("read", Value::Null)
                        } else if roll < 70 {
                            ("write", Value::Int(counter))
                        } else {
                            let w = &written[key as usize];
                            let expected = if w.is_empty() || rng.chance(0.1) {
                                Value::Int(counter + 1_000_000_000)
                            } else {
                                // Recent values, so that many cas ops succeed.
                                let back = rng.below(w.len().min(3)) + 1;
                                Value::Int(w[w.len() - back])
                            };
                            ("cas", Value::List(vec![expected, Value::Int(counter)]))
                        }
                    }
                    Workload::Kv => {
                        if roll < 45 {
                            ("get", Value::Null)
                        } else if roll < 55 {
                            ("put", Value::Str(format!("p{counter} ")))
                        } else {
                            ("append", Value::Str(format!("a{counter} ")))
                        }
                    }
                    Workload::KvWrites => {
                        if roll < 15 {
                            ("get", Value::Null)
                        } else if roll < 35 {
                            ("put", Value::Str(format!("p{counter} ")))
                        } else {
                            ("append", Value::Str(format!("a{counter} ")))
                        }
                    }
                    Workload::Set => {
                        if roll < 30 {
                            ("read", Value::Null)
                        } else {
                            ("add", Value::Int(counter))
                        }
                    }
                };
                let mut e = Event::new(
                    Process::Client(process[c]),
                    EventType::Invoke,
                    f,
                    input.clone(),
                )
                .with_key(key)
                .with_time(time);
                e.index = emitted;
                emitted += 1;
                sink(e);
                pending[c] = Some(Pending {
                    f,
                    key,
                    input,
                    done: None,
                });
            }
            Some(p) if p.done.is_none() => {
                // The linearization point (or, for some info ops, the decision that it never
                // happens).
                let info = rng.chance(opts.info_rate);
                if info && rng.chance(0.5) {
                    p.done = Some((EventType::Info, Value::Null));
                    continue;
                }
                let k = p.key as usize;
                let (kind, output) = match (&mut state[k], p.f) {
                    (KeyState::Register(v), "read") => (EventType::Ok, v.clone()),
                    (KeyState::Register(v), "write") => {
                        *v = p.input.clone();
                        written[k].push(p.input.as_int().unwrap_or(0));
                        (EventType::Ok, p.input.clone())
                    }
                    (KeyState::Register(v), "cas") => {
                        let (from, to) = match p.input.as_list() {
                            Some([a, b]) => (a.clone(), b.clone()),
                            _ => unreachable!("generated cas has two values"),
                        };
                        if *v == from {
                            *v = to.clone();
                            written[k].push(to.as_int().unwrap_or(0));
                            (EventType::Ok, p.input.clone())
                        } else {
                            (EventType::Fail, p.input.clone())
                        }
                    }
                    (KeyState::Kv(s), "get") => (EventType::Ok, Value::Str(s.clone())),
                    (KeyState::Kv(s), "put") => {
                        *s = p.input.as_str().unwrap_or("").to_string();
                        (EventType::Ok, p.input.clone())
                    }
                    (KeyState::Kv(s), "append") => {
                        s.push_str(p.input.as_str().unwrap_or(""));
                        (EventType::Ok, p.input.clone())
                    }
                    (KeyState::Set(set), "read") => (
                        EventType::Ok,
                        Value::List(set.iter().map(|&e| Value::Int(e)).collect()),
                    ),
                    (KeyState::Set(set), "add") => {
                        set.insert(p.input.as_int().unwrap_or(0));
                        (EventType::Ok, p.input.clone())
                    }
                    _ => unreachable!("generated ops match their workload"),
                };
                p.done = Some(if info {
                    (EventType::Info, Value::Null)
                } else {
                    (kind, output)
                });
            }
            Some(_) => {
                let p = pending[c].take().expect("matched Some");
                let (kind, output) = p.done.expect("matched done");
                let mut e = Event::new(Process::Client(process[c]), kind, p.f, output)
                    .with_key(p.key)
                    .with_time(time);
                if kind == EventType::Info {
                    e.error = Some(Value::Str("timeout".into()));
                    // Jepsen retires the process of an indeterminate op.
                    process[c] += clients as u64;
                }
                e.index = emitted;
                emitted += 1;
                sink(e);
                open -= 1;
            }
        }
    }
}

/// Changes the result of the `n`th successful read (modulo their number) to a value no
/// operation ever wrote, which makes any history not linearizable. Returns the event position
/// changed, or `None` if there is no successful read.
pub fn corrupt_read(history: &mut History, n: usize) -> Option<usize> {
    let reads: Vec<usize> = history
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == EventType::Ok && (e.f == "read" || e.f == "get"))
        .map(|(i, _)| i)
        .collect();
    if reads.is_empty() {
        return None;
    }
    let pos = reads[n % reads.len()];
    let e = &mut history.events[pos];
    e.value = match &e.value {
        Value::List(items) => {
            let mut items = items.clone();
            items.push(Value::Str("never-written".into()));
            Value::List(items)
        }
        _ => Value::Str("never-written".into()),
    };
    Some(pos)
}
