//! The one place that encodes and decodes bytes: WAL records, snapshots, peer messages, hellos,
//! client commands and the state machine all go through `encode` and `decode`, so the wire
//! and disk formats (bincode 1, fixed-width integers) are chosen once.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::StoreError;

/// Encodes `value` to bytes. Encoding plain data to memory cannot fail (no maps with
/// non-string keys, no I/O), so a failure is a bug and panics naming the type.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    bincode::serialize(value).unwrap_or_else(|e| {
        panic!(
            "encoding a {} to memory cannot fail: {e}",
            std::any::type_name::<T>()
        )
    })
}

/// Decodes bytes from disk or a peer; bad bytes are an error naming `what`, never a panic.
pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    bincode::deserialize(bytes).map_err(|e| StoreError::Decode {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

/// As [`decode`], but the bytes must hold exactly one value: trailing bytes are an error. For
/// telling apart layouts where one is a prefix of the other (old snapshots).
pub fn decode_exact<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
        .deserialize(bytes)
        .map_err(|e| StoreError::Decode {
            what: what.to_string(),
            detail: e.to_string(),
        })
}

/// The length `encode(value)` would return, without allocating it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    bincode::serialized_size(value).map_or(0, |n| n as usize)
}
