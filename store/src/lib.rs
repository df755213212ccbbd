//! paxos-kv: the system under test.
