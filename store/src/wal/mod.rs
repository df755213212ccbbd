//! The write-ahead log: append-only segment files of checksummed, length-prefixed records,
//! plus one snapshot file.
//!
//! Record format: `len: u32 LE | crc32(payload): u32 LE | payload`. A crash can leave a torn
//! record at the tail (a short header or payload) and a failing disk can flip bits. Recovery
//! stops at the first record that does not check out, and then:
//! - if no valid record follows it (in this segment or a later one), it is a torn tail: the
//!   last write never completed, so it was never acknowledged. The file is truncated there,
//!   with a warning.
//! - if valid records follow it, it is corruption: records that were acknowledged would be
//!   lost. `open` refuses with `StoreError::Corrupt` naming the file and offset, and changes
//!   nothing on disk; the operator restores the node from its peers (see store/README.md).
//!
//! Group commit: `append` only buffers; `sync` writes the buffer and issues one fdatasync for
//! everything appended since the last sync.
//!
//! Compaction: `compact(snapshot, live_records)` writes `live_records` to a fresh segment and
//! fsyncs it, then writes the snapshot (naming that segment as the first live one) to a
//! temporary file, fsyncs, renames it over `snapshot.bin` and fsyncs the directory, and only
//! then deletes older segments. A crash at any point leaves either the old snapshot with all
//! old segments, or the new snapshot with its segments.

pub mod committer;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::StoreError;

const HEADER_BYTES: usize = 8;
const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_TMP: &str = "snapshot.bin.tmp";

#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Start a new segment once the current one exceeds this.
    pub segment_max_bytes: u64,
    /// Largest record accepted; a header claiming more is corruption.
    pub record_max_bytes: u32,
    /// Skip fsync (tests and benchmarks that accept losing data on power failure only).
    pub fsync: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_max_bytes: 64 << 20,
            record_max_bytes: 256 << 20,
            fsync: true,
        }
    }
}

/// What `open` found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    pub snapshot: Option<Vec<u8>>,
    /// Records after the snapshot, in append order.
    pub records: Vec<Vec<u8>>,
    /// Bytes cut off a torn tail (0 when the log was clean).
    pub truncated_bytes: u64,
    /// The WAL starts after segment 0 but there is no snapshot: it was deleted, and the state
    /// compacted into it is gone (the node must catch up from its peers).
    pub snapshot_missing: bool,
}

pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    segment_id: u64,
    file: File,
    segment_bytes: u64,
    buffer: Vec<u8>,
    /// Bytes appended in total (a metric).
    pub appended_bytes: u64,
    pub fsyncs: u64,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Io {
        what: format!("{what} {}", path.display()),
        source: e,
    }
}

fn segment_name(id: u64) -> String {
    format!("wal-{id:020}.log")
}

fn parse_segment(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, "fsync directory", e))
}

/// Splits `data` into records; returns them and the length of the valid prefix.
fn scan(data: &[u8], record_max_bytes: u32) -> (Vec<Vec<u8>>, usize, Option<String>) {
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        if data.len() - pos < HEADER_BYTES {
            return (records, pos, Some("torn record header".into()));
        }
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if len > record_max_bytes {
            return (
                records,
                pos,
                Some(format!("record length {len} over the limit")),
            );
        }
        let start = pos + HEADER_BYTES;
        let end = start + len as usize;
        if end > data.len() {
            return (records, pos, Some("torn record payload".into()));
        }
        if crc32fast::hash(&data[start..end]) != crc {
            return (records, pos, Some("checksum mismatch".into()));
        }
        records.push(data[start..end].to_vec());
        pos = end;
    }
    (records, pos, None)
}

/// The offset of the first valid non-empty record starting after `from`, if any: proof that
/// the failure at `from` is not a torn tail. Every offset is tried, since a damaged length
/// field hides where the next record starts. (The WAL never writes empty records, and
/// zero-filled space would look like valid empty ones.)
fn valid_record_after(data: &[u8], from: usize, record_max_bytes: u32) -> Option<usize> {
    (from + 1..data.len().saturating_sub(HEADER_BYTES)).find(|&q| {
        let len = u32::from_le_bytes(data[q..q + 4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(data[q + 4..q + 8].try_into().expect("4 bytes"));
        let start = q + HEADER_BYTES;
        len > 0
            && len <= record_max_bytes
            && (len as usize) <= data.len() - start
            && crc32fast::hash(&data[start..start + len as usize]) == crc
    })
}

fn frame(buf: &mut Vec<u8>, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

impl Wal {
    /// Opens (creating if needed) the log in `dir` and recovers its contents.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, Recovered), StoreError> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, "create data directory", e))?;
        let _ = fs::remove_file(dir.join(SNAPSHOT_TMP));
        let mut recovered = Recovered::default();
        let mut first_live_segment = 0u64;
        let snap_path = dir.join(SNAPSHOT_FILE);
        if snap_path.exists() {
            let data = fs::read(&snap_path).map_err(|e| io_err(&snap_path, "read", e))?;
            let (mut recs, _, problem) = scan(&data, u32::MAX);
            // The snapshot file is one record: first live segment id (8 bytes) + snapshot.
            // It is written atomically, so damage here is not a torn tail but real loss.
            if problem.is_some() || recs.len() != 1 || recs[0].len() < 8 {
                return Err(StoreError::Corrupt {
                    what: format!("snapshot file {}", snap_path.display()),
                    detail: problem.unwrap_or_else(|| "unexpected layout".into()),
                });
            }
            let rec = recs.pop().expect("one record");
            first_live_segment = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
            recovered.snapshot = Some(rec[8..].to_vec());
        }
        let mut segments: Vec<u64> = fs::read_dir(dir)
            .map_err(|e| io_err(dir, "list", e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_segment(&e.file_name().to_string_lossy()))
            .collect();
        segments.sort_unstable();
        let mut broken = false;
        let mut last_segment = first_live_segment;
        if recovered.snapshot.is_none() && segments.first().is_some_and(|&id| id > 0) {
            // Segments are numbered from 0 and only compaction (which writes the snapshot
            // first) deletes the early ones: the snapshot was deleted.
            recovered.snapshot_missing = true;
            tracing::warn!(
                dir = %dir.display(),
                first_segment = segments[0],
                "no snapshot file, but the WAL starts after a compaction: the snapshot was \
                 deleted; the state it held must come from the peers"
            );
        }
        for (i, &id) in segments.iter().enumerate() {
            let path = dir.join(segment_name(id));
            if id < first_live_segment || broken {
                // Behind the snapshot (a compaction crashed before deleting it), or after a
                // torn tail (only empty segments can follow one: see below).
                fs::remove_file(&path).map_err(|e| io_err(&path, "delete", e))?;
                continue;
            }
            last_segment = id;
            let data = fs::read(&path).map_err(|e| io_err(&path, "read", e))?;
            let (recs, valid, problem) = scan(&data, opts.record_max_bytes);
            recovered.records.extend(recs);
            if let Some(problem) = problem {
                let mut later_data = None;
                for &later in &segments[i + 1..] {
                    let p = dir.join(segment_name(later));
                    let len = fs::metadata(&p).map_err(|e| io_err(&p, "stat", e))?.len();
                    if len > 0 {
                        later_data = Some(p);
                        break;
                    }
                }
                let after = valid_record_after(&data, valid, opts.record_max_bytes);
                if after.is_some() || later_data.is_some() {
                    let evidence = match (after, later_data) {
                        (Some(q), _) => format!("a valid record follows at offset {q}"),
                        (None, Some(p)) => format!("a later segment {} holds data", p.display()),
                        (None, None) => unreachable!("checked above"),
                    };
                    return Err(StoreError::Corrupt {
                        what: format!("WAL segment {}", path.display()),
                        detail: format!(
                            "{problem} at offset {valid}, and {evidence}: this is not a torn \
                             tail, and truncating would forget acknowledged records. Refusing \
                             to start; nothing was changed. Move the data directory aside and \
                             let the node rejoin empty only once the rest of the cluster holds \
                             a quorum without it (store/README.md, \"WAL corruption\")"
                        ),
                    });
                }
                let cut = data.len() - valid;
                tracing::warn!(
                    segment = %path.display(),
                    offset = valid,
                    truncated_bytes = cut,
                    %problem,
                    "WAL tail is torn (no valid record follows); truncating at the last good record"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_err(&path, "open", e))?;
                f.set_len(valid as u64)
                    .map_err(|e| io_err(&path, "truncate", e))?;
                f.sync_all().map_err(|e| io_err(&path, "fsync", e))?;
                recovered.truncated_bytes += cut as u64;
                broken = true;
            }
        }
        let path = dir.join(segment_name(last_segment));
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, "open", e))?;
        let segment_bytes = file
            .seek(SeekFrom::End(0))
            .map_err(|e| io_err(&path, "seek", e))?;
        sync_dir(dir)?;
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                opts,
                segment_id: last_segment,
                file,
                segment_bytes,
                buffer: Vec::new(),
                appended_bytes: 0,
                fsyncs: 0,
            },
            recovered,
        ))
    }

    /// Buffers one record; it is durable only after the next `sync`.
    pub fn append(&mut self, payload: &[u8]) {
        frame(&mut self.buffer, payload);
    }

    /// Bytes buffered and not yet written.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Writes everything buffered and makes it durable with one fdatasync (group commit).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if !self.buffer.is_empty() {
            let path = self.dir.join(segment_name(self.segment_id));
            self.file
                .write_all(&self.buffer)
                .map_err(|e| io_err(&path, "write", e))?;
            self.segment_bytes += self.buffer.len() as u64;
            self.appended_bytes += self.buffer.len() as u64;
            self.buffer.clear();
            if self.opts.fsync {
                self.file
                    .sync_data()
                    .map_err(|e| io_err(&path, "fsync", e))?;
                self.fsyncs += 1;
            }
            if self.segment_bytes >= self.opts.segment_max_bytes {
                self.roll()?;
            }
        }
        Ok(())
    }

    fn roll(&mut self) -> Result<(), StoreError> {
        let id = self.segment_id + 1;
        let path = self.dir.join(segment_name(id));
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, "create", e))?;
        sync_dir(&self.dir)?;
        self.segment_id = id;
        self.segment_bytes = 0;
        Ok(())
    }

    /// Replaces everything on disk with `snapshot` followed by `live_records`; see the module
    /// comment for why each step is crash-safe. Anything still buffered is discarded: callers
    /// pass the complete live state.
    pub fn compact(&mut self, snapshot: &[u8], live_records: &[Vec<u8>]) -> Result<(), StoreError> {
        self.buffer.clear();
        let old_segment = self.segment_id;
        self.roll()?;
        for rec in live_records {
            self.append(rec);
        }
        let buffered = std::mem::take(&mut self.buffer);
        let seg_path = self.dir.join(segment_name(self.segment_id));
        self.file
            .write_all(&buffered)
            .map_err(|e| io_err(&seg_path, "write", e))?;
        self.segment_bytes = buffered.len() as u64;
        if self.opts.fsync {
            self.file
                .sync_data()
                .map_err(|e| io_err(&seg_path, "fsync", e))?;
        }
        let mut payload = Vec::with_capacity(8 + snapshot.len());
        payload.extend_from_slice(&self.segment_id.to_le_bytes());
        payload.extend_from_slice(snapshot);
        let mut framed = Vec::with_capacity(payload.len() + HEADER_BYTES);
        frame(&mut framed, &payload);
        let tmp = self.dir.join(SNAPSHOT_TMP);
        {
            let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, "create", e))?;
            f.write_all(&framed).map_err(|e| io_err(&tmp, "write", e))?;
            if self.opts.fsync {
                f.sync_all().map_err(|e| io_err(&tmp, "fsync", e))?;
            }
        }
        let snap = self.dir.join(SNAPSHOT_FILE);
        fs::rename(&tmp, &snap).map_err(|e| io_err(&snap, "rename snapshot into", e))?;
        sync_dir(&self.dir)?;
        for id in 0..=old_segment {
            let p = self.dir.join(segment_name(id));
            if p.exists() {
                fs::remove_file(&p).map_err(|e| io_err(&p, "delete", e))?;
            }
        }
        Ok(())
    }

    /// Reads the whole current snapshot (for sending to a lagging peer).
    pub fn read_snapshot(dir: &Path) -> Result<Option<Vec<u8>>, StoreError> {
        let snap = dir.join(SNAPSHOT_FILE);
        if !snap.exists() {
            return Ok(None);
        }
        let mut data = Vec::new();
        File::open(&snap)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| io_err(&snap, "read", e))?;
        let (recs, _, _) = scan(&data, u32::MAX);
        Ok(recs
            .into_iter()
            .next()
            .filter(|r| r.len() >= 8)
            .map(|r| r[8..].to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("paxos-kv-wal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn opts() -> WalOptions {
        WalOptions {
            segment_max_bytes: 1 << 20,
            record_max_bytes: 1 << 20,
            fsync: true,
        }
    }

    fn write_records(dir: &Path, n: usize) {
        let (mut wal, rec) = Wal::open(dir, opts()).unwrap();
        assert!(rec.records.is_empty());
        for i in 0..n {
            wal.append(format!("record-{i}").as_bytes());
        }
        wal.sync().unwrap();
    }

    fn only_segment(dir: &Path) -> PathBuf {
        let segs: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().map(|x| x == "log").unwrap_or(false))
            .collect();
        assert_eq!(segs.len(), 1, "{segs:?}");
        segs[0].clone()
    }

    #[test]
    fn roundtrip_and_group_commit() {
        let dir = tmpdir("roundtrip");
        let (mut wal, _) = Wal::open(&dir, opts()).unwrap();
        wal.append(b"a");
        wal.append(b"bc");
        assert_eq!(wal.fsyncs, 0);
        wal.sync().unwrap();
        assert_eq!(wal.fsyncs, 1, "one fsync covers the batch");
        wal.append(b"");
        wal.sync().unwrap();
        drop(wal);
        let (_, rec) = Wal::open(&dir, opts()).unwrap();
        assert_eq!(
            rec.records,
            vec![b"a".to_vec(), b"bc".to_vec(), b"".to_vec()]
        );
        assert_eq!(rec.truncated_bytes, 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_tail_is_truncated() {
        let dir = tmpdir("torn");
        write_records(&dir, 5);
        let seg = only_segment(&dir);
        let len = fs::metadata(&seg).unwrap().len();
        // Cut the last record in half, as a crash mid-write would.
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (mut wal, rec) = Wal::open(&dir, opts()).unwrap();
        assert_eq!(rec.records.len(), 4);
        assert_eq!(rec.records[3], b"record-3");
        assert!(rec.truncated_bytes > 0);
        // Appending after recovery continues from the good prefix.
        wal.append(b"after");
        wal.sync().unwrap();
        drop(wal);
        let (_, rec) = Wal::open(&dir, opts()).unwrap();
        assert_eq!(rec.records.len(), 5);
        assert_eq!(rec.records[4], b"after");
        assert_eq!(rec.truncated_bytes, 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bit_flip_before_valid_records_refuses_to_start() {
        let dir = tmpdir("flip");
        write_records(&dir, 5);
        let seg = only_segment(&dir);
        let before = fs::read(&seg).unwrap();
        let mut data = before.clone();
        // Flip a bit inside the payload of the third record.
        let rec_len = HEADER_BYTES + "record-0".len();
        data[2 * rec_len + HEADER_BYTES + 2] ^= 0x10;
        fs::write(&seg, &data).unwrap();
        let err = Wal::open(&dir, opts())
            .err()
            .expect("corruption must refuse");
        let shown = err.to_string();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{shown}");
        assert!(shown.contains(&seg.display().to_string()), "{shown}");
        assert!(
            shown.contains(&format!("offset {}", 2 * rec_len)),
            "{shown}"
        );
        // Nothing on disk changed.
        assert_eq!(fs::read(&seg).unwrap(), data);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Flips each byte of a small WAL of acknowledged (synced) records, in turn: recovery
    /// either refuses, or returns every record; only damage to the last record (which looks
    /// exactly like a torn write) may drop that one record.
    #[test]
    fn no_flipped_byte_silently_drops_an_acknowledged_record() {
        let dir = tmpdir("flip-every");
        let n = 6;
        {
            let (mut wal, _) = Wal::open(&dir, opts()).unwrap();
            for i in 0..n {
                // Each acknowledged on its own fsync, as the server does per group commit.
                wal.append(format!("acknowledged-{i}").as_bytes());
                wal.sync().unwrap();
            }
        }
        let seg = only_segment(&dir);
        let clean = fs::read(&seg).unwrap();
        let rec_len = HEADER_BYTES + "acknowledged-0".len();
        assert_eq!(clean.len(), n * rec_len);
        let want: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("acknowledged-{i}").into_bytes())
            .collect();
        let mut refused = 0;
        for pos in 0..clean.len() {
            for mask in [0x01u8, 0x80, 0xFF] {
                let mut data = clean.clone();
                data[pos] ^= mask;
                fs::write(&seg, &data).unwrap();
                let in_last_record = pos >= (n - 1) * rec_len;
                match Wal::open(&dir, opts()) {
                    Err(StoreError::Corrupt { .. }) => {
                        assert!(
                            !in_last_record,
                            "byte {pos} ^ {mask:#x}: a torn tail refused"
                        );
                        refused += 1;
                    }
                    Err(e) => panic!("byte {pos} ^ {mask:#x}: {e}"),
                    Ok((_, rec)) => {
                        assert!(
                            in_last_record,
                            "byte {pos} ^ {mask:#x}: recovered {} of {n} records silently",
                            rec.records.len()
                        );
                        assert_eq!(rec.records, want[..n - 1], "byte {pos} ^ {mask:#x}");
                    }
                }
            }
        }
        assert_eq!(refused, 3 * (n - 1) * rec_len);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_deleted_snapshot_is_reported() {
        let dir = tmpdir("snap-deleted");
        let (mut wal, _) = Wal::open(&dir, opts()).unwrap();
        wal.append(b"old");
        wal.sync().unwrap();
        wal.compact(b"SNAP", &[b"live".to_vec()]).unwrap();
        drop(wal);
        let (_, rec) = Wal::open(&dir, opts()).unwrap();
        assert!(!rec.snapshot_missing);
        fs::remove_file(dir.join(SNAPSHOT_FILE)).unwrap();
        let (_, rec) = Wal::open(&dir, opts()).unwrap();
        assert!(rec.snapshot_missing);
        assert_eq!(rec.snapshot, None);
        assert_eq!(rec.records, vec![b"live".to_vec()]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compaction_keeps_snapshot_and_live_records() {
        let dir = tmpdir("compact");
        let (mut wal, _) = Wal::open(&dir, opts()).unwrap();
        for i in 0..10 {
            wal.append(format!("old-{i}").as_bytes());
        }
        wal.sync().unwrap();
        wal.compact(b"SNAP", &[b"live-1".to_vec()]).unwrap();
        wal.append(b"new");
        wal.sync().unwrap();
        drop(wal);
        let (_, rec) = Wal::open(&dir, opts()).unwrap();
        assert_eq!(rec.snapshot.as_deref(), Some(&b"SNAP"[..]));
        assert_eq!(rec.records, vec![b"live-1".to_vec(), b"new".to_vec()]);
        assert_eq!(
            only_segment(&dir).file_name().unwrap(),
            segment_name(1).as_str()
        );
        assert_eq!(
            Wal::read_snapshot(&dir).unwrap().as_deref(),
            Some(&b"SNAP"[..])
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segments_roll_and_recover_in_order() {
        let dir = tmpdir("roll");
        let small = WalOptions {
            segment_max_bytes: 64,
            ..opts()
        };
        let (mut wal, _) = Wal::open(&dir, small.clone()).unwrap();
        for i in 0..20 {
            wal.append(format!("r{i:02}-xxxxxxxxxxxxxxxx").as_bytes());
            wal.sync().unwrap();
        }
        drop(wal);
        let (_, rec) = Wal::open(&dir, small).unwrap();
        assert_eq!(rec.records.len(), 20);
        assert_eq!(rec.records[19], b"r19-xxxxxxxxxxxxxxxx");
        fs::remove_dir_all(&dir).unwrap();
    }
}
