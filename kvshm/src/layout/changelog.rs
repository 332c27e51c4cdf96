//! The change log region (`Header::changelog_offset`, `changelog_len`): a control block, then
//! a ring of entries. The protocol is in `changelog.rs`; docs/layout.md has the diagram.

/// Bytes before the ring (the control block: one page, of which 40 bytes are used; the ring
/// that follows is a power of two, so a position maps to the ring with a mask, not a
/// division: measured, the divisions cost a put ~20% in wall time).
pub const CLOG_CONTROL_SIZE: u64 = 4096;
/// Control word offsets: the log lock (`sync::lock` word, low half of the word).
pub const CLOG_LOCK: u64 = 0;
/// Monotonic byte position where the next entry goes.
pub const CLOG_HEAD: u64 = 8;
/// Monotonic position of the oldest entry still whole (`head - tail <= cap`).
pub const CLOG_TAIL: u64 = 16;
/// Sequence number of the next entry (the first is 1).
pub const CLOG_NEXT_SEQ: u64 = 24;
/// Bytes of the ring (immutable, `changelog_len - CLOG_CONTROL_SIZE`, a power of two).
pub const CLOG_CAP: u64 = 32;
/// A reader sleeps for new entries (flag, u32 in the low half; `sync::change`'s protocol
/// under the log lock).
pub const CLOG_WAITERS: u64 = 40;
/// The futex word such a reader sleeps on (u32 in the low half).
pub const CLOG_CHANGES: u64 = 48;
/// Where a replica's copy stands (written only by the replication's applier, kvhost
/// `--replica-of`): 1 when the two fields below are valid (cleared first, set last).
pub const CLOG_REPL_VALID: u64 = 64;
/// The primary's replication offset this store holds everything up to.
pub const CLOG_REPL_OFFSET: u64 = 72;
/// The primary's replication id: 40 ASCII bytes.
pub const CLOG_REPL_ID: u64 = 80;
/// Bytes of the replication id.
pub const CLOG_REPL_ID_LEN: u64 = 40;

/// Where a store's change log is: its region's offset and the ring's capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangelogRegion {
    pub off: u64,
    pub cap: u64,
}
