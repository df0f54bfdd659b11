//! The integration tests, in one binary: a module per area, each mounting the real
//! filesystem through /dev/fuse (see `common` for the harness: the `Mount` guard and its
//! builder, the `Tmpfs` guard, and `mount_test!`, which runs a body once per data mode).
//!
//! One binary instead of one per area: the harness compiles once and the suite links once.
//! The slow tiers stay binaries of their own (`tests/soak.rs`, `tests/crash.rs`), narrowed
//! by SECTIONFS_SOAK_SECS and SECTIONFS_CRASH_ITERATIONS; the model-based test here is
//! narrowed by PROPTEST_CASES. Run one area with `cargo test --test mount AREA::`.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;
#[path = "../users/mod.rs"]
mod users;

mod bad_input;
mod caching;
mod client_api;
mod commit;
mod damage;
mod ecosystem;
mod examples;
mod file_backed;
mod foundation;
mod foundation_cli;
mod foundation_restart;
mod fuzz_parsers;
mod hardening_paths;
mod lifetime;
mod model;
mod namespaces;
mod protections;
mod python_client;
mod real_programs;
mod security;
mod status;
mod transport;
mod unmount;
mod unprivileged;
mod win32;
