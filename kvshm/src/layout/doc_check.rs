//! `docs/layout.md` cannot drift from the code: its field tables are parsed and every offset
//! compared with `offset_of!`, and every non-padding field of the code must be in them.

use core::mem::{offset_of, size_of};

use super::*;

const DOC: &str = include_str!("../../../docs/layout.md");

/// (name, offset, size) of each field of a struct.
type Fields = Vec<(&'static str, usize, usize)>;

fn size_of_field<T, F>(_: impl Fn(&T) -> &F) -> usize {
    size_of::<F>()
}

macro_rules! fields {
    ($t:ty { $($f:ident),* $(,)? }) => {
        vec![$((stringify!($f), offset_of!($t, $f), size_of_field(|x: &$t| &x.$f))),*]
    };
}

fn structs() -> Vec<(&'static str, Fields)> {
    vec![
        (
            "## Header",
            fields!(Header {
                magic,
                layout_version,
                header_size,
                layout_signature,
                hash_seed,
                max_key_len,
                max_value_len,
                stripe_count,
                stripe_shift,
                reserve_len,
                stripes_offset,
                chunk_map_offset,
                chunk_count,
                slot_page0_offset,
                chunk_base,
                created_unix,
                changelog_offset,
                changelog_len,
                _pad0,
                committed_len,
                growth_count,
                _unused0,
                span_lock,
                _unused1,
                _pad1,
                chunk_hint,
                span_chunks,
                gen_counter,
                next_client_id,
                recoveries,
                host_pid,
                host_start_unix,
                cache_flush,
                snapshot_request,
                replica,
                _pad2,
                folded,
                _pad3,
                slot_pages,
                last_snapshot_unix,
                snapshot_count,
                expired,
                eviction,
                evicted,
                evict_hand,
                _reserved,
                classes,
            }),
        ),
        (
            "### Class header",
            fields!(ClassHeader {
                lock,
                _pad,
                head,
                free_count,
                chunks
            }),
        ),
        (
            "## Stripe",
            fields!(Stripe {
                lock,
                waiters,
                seq,
                table,
                count,
                tombstones,
                value_bytes,
                revision,
                changes,
                _pad1,
                next_expiry,
                clock,
                _pad
            }),
        ),
        (
            "## Client slot",
            fields!(Slot {
                state,
                client_id,
                pid,
                start_unix,
                counters,
                txn_state,
                n_undo,
                n_new,
                n_free,
                log_ext,
                waiting_on,
                clog_pending,
                clog_seq,
                counters_shared,
                _pad0,
                undo,
                new_blocks,
                frees,
                cache,
                _pad1,
            }),
        ),
    ]
}

/// The table rows of the section that starts with `heading`: (offset text, field cell).
fn rows(heading: &str) -> Vec<(String, String)> {
    let start = DOC
        .find(&format!("{heading} "))
        .unwrap_or_else(|| panic!("docs/layout.md has no section {heading:?}"));
    let body = &DOC[start..];
    let body = &body[body.find('\n').unwrap_or(0)..];
    let end = body.find("\n#").unwrap_or(body.len());
    body[..end]
        .lines()
        .filter(|l| l.starts_with("| "))
        .filter_map(|l| {
            let cells: Vec<String> = l
                .replace("\\|", "\u{1}")
                .split('|')
                .map(|c| c.trim().to_string())
                .collect();
            let off = cells.get(1)?.clone();
            off.chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
                .then(|| (off, cells.get(2).cloned().unwrap_or_default()))
        })
        .collect()
}

/// Backticked words of a cell, in order.
fn ticked(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

#[test]
fn layout_doc_matches_the_code() {
    for (heading, fields) in structs() {
        let mut documented = Vec::new();
        for (off, cell) in rows(heading) {
            let (first, end) = match off.split_once("..") {
                Some((a, b)) => (
                    a.parse::<usize>().unwrap(),
                    Some(b.parse::<usize>().unwrap()),
                ),
                None => (off.parse::<usize>().unwrap(), None),
            };
            let names: Vec<&str> = ticked(&cell)
                .into_iter()
                .filter(|w| fields.iter().any(|f| f.0 == *w))
                .collect();
            assert!(
                !names.is_empty(),
                "{heading}: row {off} names no field: {cell}"
            );
            let mut at = first;
            for name in names {
                let &(fname, o, size) = fields.iter().find(|f| f.0 == name).unwrap();
                assert_eq!(
                    o, at,
                    "{heading}: docs put `{name}` at {at}, the code at {o}"
                );
                at = o + size;
                documented.push(fname);
            }
            if let Some(end) = end {
                assert_eq!(at, end, "{heading}: row {off} ends at {at} in the code");
            }
        }
        for (name, off, _) in &fields {
            assert!(
                name.starts_with("_pad") || documented.contains(name),
                "{heading}: field `{name}` (offset {off}) is not in docs/layout.md"
            );
        }
    }
}
