//! paxos-kv: the system under test.
pub mod paxos;
