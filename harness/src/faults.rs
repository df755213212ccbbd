//! The fault vocabulary: one row per kind of fault, read by the nemesis (its `--nemesis` name and
//! the history events it records), by the checks (pairing a start with its stop) and by the
//! charts (lane name and colour). Adding a kind of fault is one row here plus how to inject it.

use crate::nemesis::FaultKind;

/// One kind of fault.
#[derive(Debug)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// Its name in `--nemesis`.
    pub option: &'static str,
    /// The nemesis event `f` that starts it in the history, and the one that ends it.
    pub start_f: &'static str,
    pub stop_f: &'static str,
    /// Its lane in the charts.
    pub lane: &'static str,
    /// Its colour in the charts (shading and lane bars), RGB.
    pub colour: (u8, u8, u8),
    /// Only sharded paxos-kv has it (`--groups`): `--nemesis all` includes it only there.
    pub sharded_only: bool,
}

pub const FAULTS: &[FaultSpec] = &[
    FaultSpec {
        kind: FaultKind::Pause,
        option: "pause",
        start_f: "pause",
        stop_f: "resume",
        lane: "pause",
        colour: (230, 171, 2),
        sharded_only: false,
    },
    FaultSpec {
        kind: FaultKind::Kill,
        option: "kill",
        start_f: "kill",
        stop_f: "start",
        lane: "kill",
        colour: (214, 39, 40),
        sharded_only: false,
    },
    FaultSpec {
        kind: FaultKind::Partition,
        option: "partition",
        start_f: "start-partition",
        stop_f: "stop-partition",
        lane: "partition",
        colour: (44, 160, 44),
        sharded_only: false,
    },
    FaultSpec {
        kind: FaultKind::Network,
        option: "network",
        start_f: "start-network",
        stop_f: "stop-network",
        lane: "network",
        colour: (31, 119, 180),
        sharded_only: false,
    },
    FaultSpec {
        kind: FaultKind::ShardMove,
        option: "shard-move",
        start_f: "shard-move",
        stop_f: "shard-return",
        lane: "shard-move",
        colour: (148, 103, 189),
        sharded_only: true,
    },
];

impl FaultKind {
    pub fn spec(self) -> &'static FaultSpec {
        FAULTS
            .iter()
            .find(|s| s.kind == self)
            .expect("every fault kind has a row in FAULTS")
    }
}

/// The kind whose start event is `f`.
pub fn by_start(f: &str) -> Option<&'static FaultSpec> {
    FAULTS.iter().find(|s| s.start_f == f)
}

/// The kind whose stop event is `f`.
pub fn by_stop(f: &str) -> Option<&'static FaultSpec> {
    FAULTS.iter().find(|s| s.stop_f == f)
}

/// The kind named `option` in `--nemesis`.
pub fn by_option(option: &str) -> Option<&'static FaultSpec> {
    FAULTS.iter().find(|s| s.option == option)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_row_and_events_are_unambiguous() {
        for kind in [
            FaultKind::Pause,
            FaultKind::Kill,
            FaultKind::Partition,
            FaultKind::Network,
            FaultKind::ShardMove,
        ] {
            assert_eq!(FAULTS.iter().filter(|s| s.kind == kind).count(), 1);
            let spec = kind.spec();
            assert_eq!(by_start(spec.start_f).map(|s| s.kind), Some(kind));
            assert_eq!(by_stop(spec.stop_f).map(|s| s.kind), Some(kind));
            assert_eq!(by_option(spec.option).map(|s| s.kind), Some(kind));
        }
        // No event both starts one kind and stops another.
        for s in FAULTS {
            assert!(by_stop(s.start_f).is_none(), "{} is also a stop", s.start_f);
        }
    }
}
