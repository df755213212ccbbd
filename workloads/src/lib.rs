//! Generators and clients per workload.
