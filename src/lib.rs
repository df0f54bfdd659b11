//! sectionfs: Windows named file mappings ("sections") for Linux, as a FUSE filesystem.
//!
//! Every named section is a regular file at the root of the mount; `ftruncate` grows it,
//! `mmap(MAP_SHARED)` shares it, and `NAME.meta` tells its size and creation status.
//! See DESIGN.md for how the pieces fit.

pub mod cli;
pub mod client;
pub mod contract;
pub mod creds;
pub mod error;
pub mod fuse;
pub mod ino;
pub mod list;
pub mod model;
pub mod mount;
pub mod name;
pub mod namespace;
pub mod quota;
pub mod resolve;
pub mod store;
pub mod views;
