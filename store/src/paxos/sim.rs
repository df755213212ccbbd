//! Deterministic simulator of a cluster of [`super::Node`]s (in progress).
