//! The one error type of the library.

use std::fmt;
use std::io;

/// Everything that can go wrong. A missing key is never an error (`Ok(None)` / `Ok(false)`).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The key is longer than the store's `max_key_len`.
    KeyTooLong { len: usize, max: usize },
    /// The value is longer than the store's `max_value_len`.
    ValueTooLong { len: usize, max: usize },
    /// The store reached its maximum size or the memory backing it ran out. Nothing already
    /// stored was lost; removing keys makes room again.
    StoreFull { hint: &'static str },
    /// No store of that name exists (or it is still being created).
    NotFound { path: String },
    /// A store of that name already exists (on create).
    AlreadyExists { path: String },
    /// Another host already serves this store.
    HostRunning { pid: u64 },
    /// The segment was made by an incompatible build or is not a kvshm segment at all.
    Incompatible { what: String },
    /// The segment holds a value that cannot be right; `offset` is where it was read.
    Corrupt { offset: u64, what: String },
    /// The store file may not be opened by this user, or is not a plain file we own.
    PermissionDenied { path: String },
    /// A read-only client could not get a consistent read (a writer holds the stripe and may
    /// have died; a writable client or the host recovers it).
    Busy,
    /// A snapshot file that is not one, is damaged, or is of another version; nothing was
    /// changed in the store.
    BadSnapshot { offset: u64, what: String },
    /// A batch (`put_many`, `remove_many`) too large for one transaction: its log would need
    /// `entries` entries of each kind, at most `max` are supported. Split the batch.
    BatchTooLarge { entries: usize, max: usize },
    /// A transaction needed more log entries than it reserved: an internal limit (a bug if
    /// ever seen), reported instead of corrupting the log. Nothing was changed.
    TxnLogFull { capacity: usize },
    /// Every client slot page is in use: `max` clients are attached at once (or slots are
    /// held by dead clients awaiting recovery).
    TooManyClients { max: u64 },
    /// This `Client` was opened by process `opened_by` before it forked: a child must not act
    /// as its parent's client slot. Open a new `Client` in the child (the inherited one may
    /// be dropped; dropping it touches nothing shared).
    Forked { opened_by: u64 },
    /// A conditional write found another version than it expected (`current`: the key's
    /// version then, `None` when absent); nothing was changed. `index` is the position of the
    /// failed check in [`Client::commit_if`](crate::Client::commit_if)'s checks (0 for a
    /// single-key operation).
    Conflict { index: usize, current: Option<u64> },
    /// `incr` on a value that is not a decimal 64-bit integer (Redis's rule: optional `-`,
    /// digits, no leading zeros, no spaces, at most 20 bytes); nothing was changed.
    NotAnInteger,
    /// `incr` would overflow a signed 64-bit integer; nothing was changed.
    Overflow,
    /// The store is a read-only replica (a kvhost started with `--replica-of` keeps it a
    /// copy of its primary): write to the primary instead. Nothing was changed.
    ReadOnly,
    /// A bad argument (bad store name, bad configuration, a write on a read-only client).
    InvalidArgument(String),
    /// Any other operating-system error.
    Io(io::Error),
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::KeyTooLong { len, max } => {
                write!(f, "key of {len} bytes exceeds the limit of {max}")
            }
            Error::ValueTooLong { len, max } => {
                write!(f, "value of {len} bytes exceeds the limit of {max}")
            }
            Error::StoreFull { hint } => write!(f, "store is full ({hint})"),
            Error::NotFound { path } => write!(f, "store not found: {path}"),
            Error::AlreadyExists { path } => write!(f, "store already exists: {path}"),
            Error::HostRunning { pid } => write!(f, "store is already hosted by pid {pid}"),
            Error::Incompatible { what } => write!(f, "incompatible store: {what}"),
            Error::Corrupt { offset, what } => {
                write!(f, "corrupt store at offset {offset:#x}: {what}")
            }
            Error::PermissionDenied { path } => write!(f, "permission denied: {path}"),
            Error::BadSnapshot { offset, what } => {
                write!(f, "bad snapshot at byte {offset}: {what}")
            }
            Error::Busy => write!(
                f,
                "stripe busy: no consistent read-only view (writer stalled or dead)"
            ),
            Error::BatchTooLarge { entries, max } => write!(
                f,
                "batch too large: needs {entries} transaction log entries, at most {max} are supported"
            ),
            Error::TxnLogFull { capacity } => write!(
                f,
                "transaction log full ({capacity} entries; internal limit, nothing was changed)"
            ),
            Error::TooManyClients { max } => {
                write!(f, "too many clients: all {max} client slots are in use")
            }
            Error::Forked { opened_by } => write!(
                f,
                "client was opened by process {opened_by} before a fork: open a new client in this process"
            ),
            Error::Conflict { index, current } => match current {
                Some(v) => write!(f, "conflict: check {index} found version {v}"),
                None => write!(f, "conflict: check {index} found the key absent"),
            },
            Error::NotAnInteger => write!(f, "value is not an integer or out of range"),
            Error::Overflow => write!(f, "increment or decrement would overflow"),
            Error::ReadOnly => write!(
                f,
                "the store is a read-only replica (its kvhost replicates a primary): write to the primary"
            ),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// A stable number for each kind of [`Error`], shared by every binding (the C ABI's
/// `kvshm_status` uses the same values, C#'s `KvStatus` too). Values are part of the ABI:
/// never change or reuse one; a new kind takes the next free number. 0-2 and 13 are the C
/// ABI's own (OK, key not found, buffer too small, panic caught).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorCode {
    KeyTooLong = 3,
    ValueTooLong = 4,
    StoreFull = 5,
    NotFound = 6,
    AlreadyExists = 7,
    Incompatible = 8,
    Corrupt = 9,
    PermissionDenied = 10,
    Io = 11,
    InvalidArgument = 12,
    HostRunning = 14,
    Busy = 15,
    BadSnapshot = 16,
    BatchTooLarge = 17,
    TxnLogFull = 18,
    TooManyClients = 19,
    Forked = 20,
    Conflict = 21,
    NotAnInteger = 22,
    Overflow = 23,
    ReadOnly = 24,
}

impl Error {
    /// The kind of this error as a stable number (exhaustive: a new variant must pick one).
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::KeyTooLong { .. } => ErrorCode::KeyTooLong,
            Error::ValueTooLong { .. } => ErrorCode::ValueTooLong,
            Error::StoreFull { .. } => ErrorCode::StoreFull,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            Error::HostRunning { .. } => ErrorCode::HostRunning,
            Error::Incompatible { .. } => ErrorCode::Incompatible,
            Error::Corrupt { .. } => ErrorCode::Corrupt,
            Error::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            Error::Busy => ErrorCode::Busy,
            Error::BadSnapshot { .. } => ErrorCode::BadSnapshot,
            Error::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
            Error::TxnLogFull { .. } => ErrorCode::TxnLogFull,
            Error::TooManyClients { .. } => ErrorCode::TooManyClients,
            Error::Forked { .. } => ErrorCode::Forked,
            Error::Conflict { .. } => ErrorCode::Conflict,
            Error::NotAnInteger => ErrorCode::NotAnInteger,
            Error::Overflow => ErrorCode::Overflow,
            Error::ReadOnly => ErrorCode::ReadOnly,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::Io(_) => ErrorCode::Io,
        }
    }

    pub(crate) fn corrupt(offset: u64, what: impl Into<String>) -> Error {
        Error::Corrupt {
            offset,
            what: what.into(),
        }
    }
}
