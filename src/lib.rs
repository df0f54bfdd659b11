//! sectionfs: Windows named file mappings ("sections") for Linux, as a FUSE filesystem.
//!
//! Every named section is a regular file at the root of the mount; `ftruncate` grows it,
//! `mmap(MAP_SHARED)` shares it, and `NAME.meta` tells its size and creation status.
//! See DESIGN.md for how the pieces fit.
//!
//! The API is [`client`] (sections from Rust) and [`contract`] (what clients read: the
//! creation status, the data mode, the sidecar's text). The daemon's modules are private;
//! `daemon` (hidden from the documentation) names the few items the `sectionfs` binary
//! and the integration tests reach, and is no interface to build on.

pub mod client;
pub mod contract;

mod cli;
mod creds;
mod error;
mod fuse;
mod ino;
mod list;
mod model;
mod mount;
mod name;
mod namespace;
mod quota;
mod resolve;
mod store;
mod views;

/// What the `sectionfs` binary and the integration tests reach of the daemon.
#[doc(hidden)]
pub mod daemon {
    pub use crate::cli::{
        CliError, Command, MountOptions, Passthrough, Switch, default_store, parse_command,
    };
    pub use crate::error::Error;
    pub use crate::ino::Ino;
    pub use crate::list::run as list;
    pub use crate::model::{AttrChange, Caller, Kind, Options, Sections};
    pub use crate::mount::run as mount;
    pub use crate::store::{FileBacking, Record, Store};

    /// The section name rules and their escaping, for the parser tests.
    pub mod name {
        pub use crate::name::{
            MAX_NAME_LEN, META_SUFFIX, escape, sidecar_name, sidecar_of, unescape, validate,
        };
    }
}
