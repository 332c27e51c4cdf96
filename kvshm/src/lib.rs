//! A shared-memory key-value store: co-located processes put, get and remove directly in a
//! growable mapped segment, with no server on the data path.
//!
//! ```no_run
//! use kvshm::{Config, Host, Client};
//! // The owner (normally the `kvhost` daemon):
//! let host = Host::create("demo", &Config::default())?;
//! // Any process of the same user:
//! let client = Client::open("demo")?;
//! client.put(b"user:1", b"alice")?;
//! assert_eq!(client.get(b"user:1")?, Some(b"alice".to_vec()));
//! client.put_many(&[(&b"a"[..], &b"1"[..]), (&b"b"[..], &b"2"[..])])?; // all or nothing
//! host.release()?; // removes the store for good
//! # Ok::<(), kvshm::Error>(())
//! ```
//!
//! What it does not do: persistence across reboot by itself (the host writes snapshots),
//! network access, sharing between users, or sharing between different layouts/architectures
//! (a store made by an incompatible build is refused with `Error::Incompatible`).
//!
//! Crash safety: a client killed at any instruction never deadlocks the others, never
//! corrupts the store and never loses an acknowledged write; see `docs/ARCHITECTURE.md`.
#![deny(unsafe_code)]

mod alloc;
mod cache;
mod changelog;
mod client;
mod config;
#[doc(hidden)]
pub mod crash;
mod error;
mod host;
mod housekeeping;
mod index;
pub mod layout;
mod mem;
mod reclaim;
mod recovery;
mod segment;
mod session;
mod slots;
mod snapshot;
mod stats;
mod store;
mod sync;
mod txn;
mod verify;

pub use changelog::{ChangeBatch, ChangeRead, LoggedChange};
pub use client::{
    format_i64, parse_i64, Change, Client, Entry, Policy, Record, Ttl, WaitResult, Watch, Write,
};
pub use config::{
    default_dir, parse_duration, Config, MAX_CHANGELOG, MAX_KEY_LIMIT, MAX_VALUE_LIMIT,
    MIN_CHANGELOG,
};
pub use error::{Error, ErrorCode, Result};
pub use host::Host;
pub use housekeeping::{Housekeeping, ReclaimPass, RECLAIM_PERIOD};
pub use segment::{open_private_append, store_path, validate_name, DEFAULT_DIR};
pub use snapshot::{
    read_snapshot, read_snapshot_with_expiry, write_snapshot, LoadedSnapshot, SnapshotInfo,
};
pub use stats::{human_bytes, ClientInfo, Stats};
pub use store::{now_ms, LockWaitStats};
pub use verify::Report;

#[cfg(test)]
mod module_graph;
#[cfg(test)]
mod tests;
