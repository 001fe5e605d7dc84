//! Every end-to-end test, in one test binary: real nightowl binaries (the shared release
//! build, `NIGHTOWL_BIN_DIR`), real certificates, mounts, processes and network
//! namespaces. One binary links the whole stack once instead of once per file (build
//! time and disk on a 2-core CI machine: docs/testing.md), and its tests share the test
//! runner's threads instead of running file after file.
//!
//! The heavy ones (`drills::`, `loadgen::`) each put a collector under load; the test
//! command (`tests/run.sh`) runs them after the rest, one at a time, so their figures and
//! the other tests' waits do not disturb each other. `cargo test` alone runs everything
//! together, which is slower but correct.

mod check;
mod config;
mod crash;
mod disk_alert;
mod docs;
mod drill_smoke;
mod drills;
mod feed;
mod hold;
mod latency;
mod layout;
mod limits;
mod loadgen;
mod mtls;
mod offline;
mod policy;
mod quickstart;
mod reload;
mod shutdown;
