//! sectionfs: Windows named file mappings ("sections") for Linux, as a FUSE filesystem.
//!
//! Every named section is a regular file at the root of the mount; `ftruncate` grows it,
//! `mmap(MAP_SHARED)` shares it, and `NAME.meta` tells its size and creation status.
//! See DESIGN.md for how the pieces fit.
//!
//! The API is [`client`] (sections from Rust) and [`contract`] (what clients read: the
//! creation status, the data mode, the sidecar's text). Every other module is the daemon:
//! public only so that the `sectionfs` binary and the integration tests reach it, hidden
//! from the documentation, and no interface to build on.

pub mod client;
pub mod contract;

#[doc(hidden)]
pub mod cli;
#[doc(hidden)]
pub mod creds;
#[doc(hidden)]
pub mod error;
#[doc(hidden)]
pub mod fuse;
#[doc(hidden)]
pub mod ino;
#[doc(hidden)]
pub mod list;
#[doc(hidden)]
pub mod model;
#[doc(hidden)]
pub mod mount;
#[doc(hidden)]
pub mod name;
#[doc(hidden)]
pub mod namespace;
#[doc(hidden)]
pub mod quota;
#[doc(hidden)]
pub mod resolve;
#[doc(hidden)]
pub mod store;
#[doc(hidden)]
pub mod views;
