//! Structure-aware segment fuzzing (issue 11): instead of random bytes, damage the fields a
//! buggy or hostile process would hit - lock words, stripe counts, table entries, free-list
//! links, slot pages, `committed_len`, block tags, record lengths, chunk-map (span) entries,
//! client-slot log words - of a live store, and probe every public operation in a
//! `kvshm-child probe` process (address space capped at 2 GiB) with a time limit. An error is
//! fine; a hang, a signal, an abort or a panic fails, and the damaged image is saved to
//! `target/fuzz-failures/` for replay. Half the probes attach *before* the damage (values
//! checked only at attach must be checked again).
//!
//! `KVSHM_FUZZ_ITERS` (default 100) damaged stores, or `KVSHM_FUZZ_SECS` seconds;
//! `KVSHM_FUZZ_SEED` the seed.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kvshm::layout::*;
use kvshm::Config;
use kvshm_tests::{killed_by, ChildGuard, Rng, StoreName, TestStore};

const CHILD: &str = env!("CARGO_BIN_EXE_kvshm-child");

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// A field to damage: its offset, its width (4 or 8 bytes) and what it is.
#[derive(Clone, Debug)]
struct Field {
    off: u64,
    width: u8,
    kind: &'static str,
}

fn u64_at(img: &[u8], off: u64) -> u64 {
    let o = off as usize;
    img.get(o..o + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
}

fn u32_at(img: &[u8], off: u64) -> u32 {
    let o = off as usize;
    img.get(o..o + 4)
        .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()))
}

/// Every field worth damaging in the seed image, found by walking its structures.
fn fields(img: &[u8]) -> Vec<Field> {
    use core::mem::{offset_of, size_of};
    let mut out = Vec::new();
    let mut add = |off: u64, width: u8, kind: &'static str| {
        if (off as usize) + width as usize <= img.len() {
            out.push(Field { off, width, kind });
        }
    };
    let h = |f: usize| f as u64;
    add(h(offset_of!(Header, committed_len)), 8, "committed_len");
    add(h(offset_of!(Header, span_lock)), 4, "lock word");
    add(h(offset_of!(Header, chunk_hint)), 8, "chunk hint");
    add(h(offset_of!(Header, span_chunks)), 8, "span chunks");
    add(h(offset_of!(Header, gen_counter)), 8, "generation counter");
    add(
        h(offset_of!(Header, snapshot_request)),
        8,
        "snapshot request",
    );
    for p in 0..MAX_SLOT_PAGES as u64 {
        add(h(offset_of!(Header, slot_pages)) + 8 * p, 8, "slot page");
    }
    let classes = h(offset_of!(Header, classes));
    let csize = size_of::<ClassHeader>() as u64;
    for c in 0..NUM_CLASSES as u64 {
        let base = classes + c * csize;
        add(base, 4, "lock word");
        add(base + 8, 8, "free-list head");
        add(base + 16, 8, "free count");
        add(base + 24, 8, "class chunks");
        // The first links of the class's free list.
        let mut b = u64_at(img, base + 8);
        for _ in 0..4 {
            if b == 0 || b as usize + 16 > img.len() {
                break;
            }
            add(b, 8, "block tag");
            add(b + 8, 8, "free-list link");
            b = u64_at(img, b + 8);
        }
    }
    let stripes_off = u64_at(img, h(offset_of!(Header, stripes_offset)));
    let nstripes = u32_at(img, h(offset_of!(Header, stripe_count))) as u64;
    for s in 0..nstripes {
        let st = stripes_off + s * STRIPE_SIZE;
        add(st, 4, "lock word");
        add(st + 8, 8, "stripe seq");
        add(st + 16, 8, "table word");
        add(st + 24, 8, "stripe count");
        add(st + 32, 8, "stripe tombstones");
        add(st + 40, 8, "stripe value bytes");
        let tw = u64_at(img, st + 16);
        if tw == 0 {
            continue;
        }
        let toff = tw & TABLE_OFFSET_MASK;
        add(toff, 8, "block tag");
        add(toff + 8, 8, "table log2");
        let cap = table_capacity(((tw >> TABLE_LOG2_SHIFT) as u32).min(20));
        for i in 0..cap {
            let at = toff + TABLE_HEADER_SIZE + i * TABLE_ENTRY_SIZE;
            let e = u64_at(img, at);
            add(at, 8, "table entry");
            if e > 1 {
                let rec = entry_record(e);
                add(rec, 8, "block tag");
                add(rec + RECORD_LENS_OFFSET, 8, "record lengths");
                add(rec + RECORD_META_OFFSET, 8, "record meta");
            }
        }
    }
    let map_off = u64_at(img, h(offset_of!(Header, chunk_map_offset)));
    let nchunks = u64_at(img, h(offset_of!(Header, chunk_count)));
    let committed = u64_at(img, h(offset_of!(Header, committed_len)));
    let chunk_base = u64_at(img, h(offset_of!(Header, chunk_base)));
    for i in 0..nchunks.min(committed.saturating_sub(chunk_base) / CHUNK_SIZE + 2) {
        add(map_off + 4 * i, 4, "chunk map entry");
    }
    let page0 = u64_at(img, h(offset_of!(Header, slot_page0_offset)));
    for slot in 0..4u64 {
        let base = page0 + slot * SLOT_SIZE;
        for (f, kind) in [
            (offset_of!(Slot, state), "slot state"),
            (offset_of!(Slot, txn_state), "txn state"),
            (offset_of!(Slot, n_undo), "log count"),
            (offset_of!(Slot, n_new), "log count"),
            (offset_of!(Slot, n_free), "log count"),
            (offset_of!(Slot, log_ext), "log extension"),
            (offset_of!(Slot, undo), "undo entry"),
            (offset_of!(Slot, new_blocks), "new-block entry"),
            (offset_of!(Slot, frees), "free entry"),
        ] {
            add(base + f as u64, 8, kind);
        }
    }
    out
}

/// A damaging value for `field`, given its current value and the other fields (offsets
/// elsewhere in the store make the most convincing lies).
fn lie(rng: &mut Rng, field: &Field, cur: u64, all: &[Field], img_len: u64) -> u64 {
    let other = all[rng.below(all.len() as u64) as usize].off;
    let choices = [
        0,
        1,
        u64::MAX,
        u32::MAX as u64,
        1 << 31,
        cur.wrapping_add(1),
        cur.wrapping_sub(1),
        cur.wrapping_mul(2),
        cur >> 1,
        cur ^ (1 << rng.below(64)),
        other,
        other + 8,
        img_len,
        img_len + (1 << 20),
        1 << 40,
        rng.next_u64(),
        table_entry(rng.next_u64(), other),
    ];
    let v = choices[rng.below(choices.len() as u64) as usize];
    if field.width == 4 {
        v & 0xffff_ffff
    } else {
        v
    }
}

fn damage(img: &mut [u8], f: &Field, v: u64) {
    let o = f.off as usize;
    img[o..o + f.width as usize].copy_from_slice(&v.to_le_bytes()[..f.width as usize]);
}

fn save_failure(bytes: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("structured-{}.bin", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Run the probe, damaging the store file before (`attached == false`) or after the probe
/// attached. Returns the probe's lines, or why it failed.
fn probe(
    target: &StoreName,
    img: &[u8],
    dmg: &[(Field, u64)],
    attached: bool,
) -> Result<Vec<String>, String> {
    let flag = std::env::temp_dir().join(format!("kvshm-fz-flag-{}", target.name));
    let _ = std::fs::remove_file(&flag);
    let mut c = std::process::Command::new(CHILD);
    if attached {
        std::fs::write(target.path(), img).unwrap();
        c.arg("probe-attached")
            .arg(&target.dir)
            .arg(&target.name)
            .arg(&flag);
    } else {
        let mut bad = img.to_vec();
        for (f, v) in dmg {
            damage(&mut bad, f, *v);
        }
        std::fs::write(target.path(), &bad).unwrap();
        c.arg("probe").arg(&target.dir).arg(&target.name);
    }
    let mut child = ChildGuard::spawn_captured(&mut c);
    let begin = Instant::now();
    let limit = Duration::from_secs(60);
    if attached {
        while !std::fs::read_to_string(&flag).is_ok_and(|s| s == "attached") {
            if child.child.try_wait().unwrap().is_some() || begin.elapsed() > limit {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(target.path())
            .unwrap();
        for (field, v) in dmg {
            f.write_all_at(&v.to_le_bytes()[..field.width as usize], field.off)
                .unwrap();
        }
        std::fs::write(&flag, "go").unwrap();
    }
    let st = child.wait_timeout(limit.saturating_sub(begin.elapsed()));
    let _ = std::fs::remove_file(&flag);
    let lines = child.stdout_lines();
    match st {
        None => Err(format!("hung: {lines:?}")),
        Some(s) if !s.success() => Err(killed_by(&s).map_or_else(
            || format!("exited {s:?}: {lines:?}"),
            |sig| format!("died of signal {sig}: {lines:?}"),
        )),
        Some(_) if lines.last().map(String::as_str) != Some("done") => {
            Err(format!("did not finish: {lines:?}"))
        }
        Some(_) => Ok(lines),
    }
}

#[test]
fn structured_damage_gives_errors_never_crashes() {
    // The seed: several stripes, small and mid-size records, removed keys (tombstones), a
    // record bigger than a chunk (a span), a rebuilt table, free blocks.
    let seed_store = TestStore::new(
        "fzs",
        Config::default()
            .stripes(4)
            .max_size(8 << 20)
            .initial_size(0),
        CHILD,
    );
    let h = seed_store.host();
    for i in 0..400u32 {
        h.put(
            format!("key-{i}").as_bytes(),
            &vec![i as u8; (i % 120) as usize],
        )
        .unwrap();
    }
    for i in (0..400u32).step_by(3) {
        h.remove(format!("key-{i}").as_bytes()).unwrap();
    }
    h.put(b"span", &vec![9u8; 300 << 10]).unwrap();
    h.put(b"key-7", &[1u8; 2000]).unwrap();
    let image = std::fs::read(seed_store.path()).unwrap();
    let all = fields(&image);
    assert!(all.len() > 500, "too few fields found: {}", all.len());
    // Pick a kind of field first, then one of its fields: table entries are many, lock
    // words few, and every kind deserves its share.
    let mut by_kind = std::collections::BTreeMap::<&str, Vec<Field>>::new();
    for f in &all {
        by_kind.entry(f.kind).or_default().push(f.clone());
    }
    let kinds_list: Vec<&Vec<Field>> = by_kind.values().collect();
    let target = StoreName::new("fzst");
    let mut rng = Rng::new(env_u64("KVSHM_FUZZ_SEED").unwrap_or(0x5eed_f1e1d));
    let secs = env_u64("KVSHM_FUZZ_SECS");
    let iters = env_u64("KVSHM_FUZZ_ITERS").unwrap_or(100);
    let start = Instant::now();
    let (mut n, mut with_errors) = (0u64, 0u64);
    let mut kinds = std::collections::BTreeMap::<&str, u64>::new();
    while match secs {
        Some(s) => start.elapsed() < Duration::from_secs(s),
        None => n < iters,
    } {
        n += 1;
        let k = 1 + rng.below(3);
        let dmg: Vec<(Field, u64)> = (0..k)
            .map(|_| {
                let of_kind = kinds_list[rng.below(kinds_list.len() as u64) as usize];
                let f = of_kind[rng.below(of_kind.len() as u64) as usize].clone();
                let cur = if f.width == 4 {
                    u32_at(&image, f.off) as u64
                } else {
                    u64_at(&image, f.off)
                };
                let v = lie(&mut rng, &f, cur, &all, image.len() as u64);
                (f, v)
            })
            .collect();
        for (f, _) in &dmg {
            *kinds.entry(f.kind).or_default() += 1;
        }
        let attached = n % 2 == 0;
        match probe(&target, &image, &dmg, attached) {
            Ok(lines) => {
                if lines
                    .iter()
                    .any(|l| l.contains("Err") || l.contains("attach:"))
                {
                    with_errors += 1;
                }
            }
            Err(why) => {
                let mut bad = image.clone();
                for (f, v) in &dmg {
                    damage(&mut bad, f, *v);
                }
                let p = save_failure(&bad);
                panic!(
                    "iteration {n} (attached first: {attached}): probe {why}\ndamage: {dmg:?}\nimage saved to {}",
                    p.display()
                );
            }
        }
    }
    eprintln!(
        "structured segment fuzz: {n} damaged stores in {:?} ({} fields known), {with_errors} reported errors, {} read back without one; fields hit: {kinds:?}",
        start.elapsed(),
        all.len(),
        n - with_errors
    );
    assert!(
        with_errors > 0,
        "the damage never produced an error: not biting"
    );
}
