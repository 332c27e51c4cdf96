//! Named crash points for crash-safety tests (feature `crash-points`).
//!
//! With the feature on, `KVSHM_CRASH_AT=name` makes the process SIGKILL itself the first time
//! it reaches `crash_point!("name")`; `name@N` at the N-th time. With `KVSHM_CRASH_ACTION=stop`
//! it SIGSTOPs itself there instead (a frozen lock holder, resumed by SIGCONT); with `panic` it
//! panics there (a bug inside a locked section). Without the
//! feature the macro expands to nothing.

/// Every crash point in the library (a unit test checks this against the source).
pub const CRASH_POINTS: &[&str] = &[
    "alloc.recorded",
    "alloc.tagged",
    "alloc.chunk_claimed",
    "alloc.chunk_zeroed",
    "alloc.chunk_released",
    "alloc.drain_marked",
    "alloc.drain_unlinked",
    "alloc.drain_paused",
    "evacuate.marked",
    "evacuate.moved",
    "span.recorded",
    "span.free_tagged",
    "span.head_cleared",
    "free.tagged",
    "cache.taken",
    "cache.refilled",
    "cache.given",
    "cache.flushed",
    "grow.allocated",
    "attach.length_read",
    "format.created",
    "reclaim.punching",
    "reclaim.backing",
    "slots.page_claimed",
    "put.prepared",
    "put.locked",
    "put.replaced",
    "put.inserted",
    "put.unlocked",
    "stripe.published",
    "remove.unlinked",
    "remove.unlocked",
    "table.filled",
    "table.published",
    "txn.committed",
    "txn.freeing",
    "put_many.prepared",
    "put_many.applied_one",
    "remove_many.applied_one",
    "many.locked",
    "many.unlocked_one",
    "modify.locked",
    "modify.unlocked",
    "expire.removed_one",
    "evict.removed_one",
    "modify.in_place",
    "get_many.key_read",
    "clog.locked",
    "clog.written",
    "clog.appended",
    "clog.marked",
    "recover.clog_unpublished",
    "recover.class_rebuilt",
    "recover.undone",
    "recover.stripes_released",
    "recover.blocks_done",
];

/// Mark a point where a test may kill the process.
#[macro_export]
#[doc(hidden)]
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "crash-points")]
        $crate::crash::hit($name);
    };
}

#[cfg(feature = "crash-points")]
#[doc(hidden)]
pub fn hit(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let target = TARGET.get_or_init(|| {
        let v = std::env::var("KVSHM_CRASH_AT").ok()?;
        Some(match v.split_once('@') {
            Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
            None => (v, 1),
        })
    });
    if let Some((n, k)) = target {
        if n == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *k {
            match std::env::var("KVSHM_CRASH_ACTION").as_deref() {
                Ok("stop") => crate::segment::stop_self(),
                Ok("panic") => panic!("crash point {name} (KVSHM_CRASH_ACTION=panic)"),
                _ => crate::segment::kill_self(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    fn collect(dir: &std::path::Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                collect(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("crash.rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for part in text.split("crash_point!(\"").skip(1) {
                    out.insert(part.split('"').next().unwrap().to_string());
                }
            }
        }
    }

    #[test]
    fn list_matches_source() {
        let mut found = BTreeSet::new();
        collect(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        let listed: BTreeSet<String> = super::CRASH_POINTS.iter().map(|s| s.to_string()).collect();
        assert_eq!(found, listed);
    }
}
