//! Recovery: rebuilding the core's durable state, the snapshot and the state machine from the
//! data directory; and the records that rebuild a state in a compacted WAL.

use crate::codec;
use crate::kv::Kv;
use crate::paxos::{self, Record, Snapshot};
use crate::server::ServerConfig;
use crate::wal::{Wal, WalOptions};
use crate::StoreError;

/// What recovery rebuilt from the data directory.
pub(crate) struct Recovered {
    pub wal: Wal,
    pub state: paxos::RecoveredState,
    pub snapshot: Option<Snapshot>,
    pub kv: Kv,
    /// Sharded mode: the controller's or group's state machine as of the snapshot.
    pub shard_machine: Option<crate::server::sharded::ShardMachine>,
}

/// Opens the WAL in `cfg.data_dir` and rebuilds everything it holds.
pub(crate) fn recover(cfg: &ServerConfig) -> Result<Recovered, StoreError> {
    let (wal, recovered) = Wal::open(
        &cfg.data_dir,
        WalOptions {
            fsync: cfg.fsync,
            ..WalOptions::default()
        },
    )?;
    let mut state = paxos::RecoveredState::default();
    let n_records = recovered.records.len();
    for (i, r) in recovered.records.iter().enumerate() {
        let rec: Record =
            codec::decode(&format!("WAL record {i} in {}", cfg.data_dir.display()), r)?;
        state.apply(rec);
    }
    let snapshot: Option<Snapshot> = match &recovered.snapshot {
        None => None,
        Some(b) => Some(codec::decode(
            &format!("snapshot in {}", cfg.data_dir.display()),
            b,
        )?),
    };
    let mut kv = Kv::new(cfg.dedup_clients).with_dedup_max_bytes(cfg.dedup_max_bytes);
    let mut shard_machine = cfg.sharding.as_ref().map(|s| s.fresh_machine());
    if let Some(s) = &snapshot {
        match &cfg.sharding {
            // In sharded mode the snapshot holds the shard machine; the (unused) key-value
            // state only keeps the applied index.
            Some(settings) => {
                let machine =
                    settings
                        .machine_from_snapshot(&s.data)
                        .map_err(|e| StoreError::Corrupt {
                            what: format!("the snapshot in {}", cfg.data_dir.display()),
                            detail: e.to_string(),
                        })?;
                shard_machine = Some(machine);
                kv.set_applied_index(s.slot);
            }
            None => kv = Kv::from_snapshot(&s.data)?.with_dedup_max_bytes(cfg.dedup_max_bytes),
        }
        state.compact(s.slot);
    }
    tracing::info!(
        records = n_records,
        snapshot_slot = snapshot.as_ref().map(|s| s.slot).unwrap_or(0),
        truncated_bytes = recovered.truncated_bytes,
        promised = %state.promised,
        "recovered from {}",
        cfg.data_dir.display()
    );
    Ok(Recovered {
        wal,
        state,
        snapshot,
        kv,
        shard_machine,
    })
}

/// The WAL records that rebuild `state` (written first in a compacted WAL).
/// Entries at or below `snapshot_slot` are left out: the snapshot written with them covers them.
pub(crate) fn checkpoint_records(
    state: &paxos::RecoveredState,
    snapshot_slot: u64,
) -> Vec<Vec<u8>> {
    let mut out = vec![codec::encode(&Record::Promise(state.promised))];
    for (slot, (ballot, value)) in state.accepted.range(snapshot_slot + 1..) {
        out.push(codec::encode(&Record::Accepted {
            slot: *slot,
            ballot: *ballot,
            value: value.clone(),
        }));
    }
    for (slot, value) in state.chosen.range(snapshot_slot + 1..) {
        out.push(codec::encode(&Record::Chosen {
            slot: *slot,
            value: value.clone(),
        }));
    }
    out
}
