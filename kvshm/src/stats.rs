//! Store metrics: `Client::stats`.

use std::sync::atomic::Ordering;

use crate::client::Client;
use crate::layout::*;
use crate::segment;
use crate::slots::slot_list;

const R: Ordering = Ordering::Relaxed;

/// One attached client, as seen in `Stats`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    pub id: u64,
    pub pid: u64,
    pub slot: u32,
    /// Whether the client's liveness lock is held (false: dead, awaiting recovery).
    pub alive: bool,
    pub gets: u64,
    pub puts: u64,
    pub removes: u64,
    /// Stripe the client is waiting to lock, if any.
    pub waiting_on_stripe: Option<u32>,
}

/// A snapshot of a store's metrics. Counters are summed racily (each is exact, the set is not
/// one instant).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub keys: u64,
    pub value_bytes: u64,
    /// Bytes of the store file in use as store memory (`used + free + returned`).
    pub committed_bytes: u64,
    /// Committed bytes holding metadata, records, tables or slots.
    pub used_bytes: u64,
    /// Committed bytes available without growing, backed by memory (free blocks and free
    /// chunks).
    pub free_bytes: u64,
    /// Committed bytes of free chunks whose memory went back to the OS (holes in the file;
    /// taken again, before the store grows, when needed).
    pub returned_bytes: u64,
    /// The size the store may grow to.
    pub max_bytes: u64,
    pub gets: u64,
    pub hits: u64,
    pub puts: u64,
    pub removes: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Reads that fell back to the stripe lock.
    pub retries: u64,
    pub clients: Vec<ClientInfo>,
    pub recoveries: u64,
    pub growths: u64,
    /// The store's revision: writes committed since it was created (puts, removes, counter
    /// updates; the sum of the stripes' revisions, whose counters make the keys' versions).
    pub revision: u64,
    /// Keys removed by expiry passes (an expired key is absent for readers before that).
    pub expired: u64,
    /// Keys removed by eviction (a full store under an evicting policy).
    pub evicted: u64,
    /// The eviction policy.
    pub eviction: crate::client::Policy,
    pub stripes: u32,
    pub max_stripe_keys: u64,
    pub max_key_len: usize,
    pub max_value_len: usize,
    /// Pid of the live host, if one holds the store.
    pub host_pid: Option<u64>,
    pub host_start_unix: u64,
    pub created_unix: u64,
}

/// A JSON string literal of `s` (quotes, backslashes and control characters escaped).
fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "null".into(), |v| v.to_string())
}

impl Stats {
    /// The metrics as one JSON object: what `kvcli stats --json` prints and kvhost's
    /// `GET /v1/stats` serves (`name`, `path`: the store's; `snapshot`: `(last Unix time, count)`
    /// from [`Client::last_snapshot`]; `now_unix`: for the host's uptime).
    pub fn to_json(&self, name: &str, path: &str, snapshot: (u64, u64), now_unix: u64) -> String {
        let clients: Vec<String> = self
            .clients
            .iter()
            .map(|c| {
                format!(
                    "{{\"id\":{},\"pid\":{},\"slot\":{},\"alive\":{},\"gets\":{},\"puts\":{},\"removes\":{},\"waiting_on_stripe\":{}}}",
                    c.id,
                    c.pid,
                    c.slot,
                    c.alive,
                    c.gets,
                    c.puts,
                    c.removes,
                    json_opt(c.waiting_on_stripe.map(u64::from))
                )
            })
            .collect();
        let fields: Vec<(&str, String)> = vec![
            ("name", json_str(name)),
            ("path", json_str(path)),
            ("keys", self.keys.to_string()),
            ("value_bytes", self.value_bytes.to_string()),
            ("committed_bytes", self.committed_bytes.to_string()),
            ("used_bytes", self.used_bytes.to_string()),
            ("free_bytes", self.free_bytes.to_string()),
            ("returned_bytes", self.returned_bytes.to_string()),
            ("max_bytes", self.max_bytes.to_string()),
            ("gets", self.gets.to_string()),
            ("hits", self.hits.to_string()),
            ("puts", self.puts.to_string()),
            ("removes", self.removes.to_string()),
            ("revision", self.revision.to_string()),
            ("expired", self.expired.to_string()),
            ("evicted", self.evicted.to_string()),
            ("eviction", json_str(self.eviction.name())),
            ("bytes_in", self.bytes_in.to_string()),
            ("bytes_out", self.bytes_out.to_string()),
            ("lock_fallback_reads", self.retries.to_string()),
            ("clients", format!("[{}]", clients.join(","))),
            ("stripes", self.stripes.to_string()),
            ("max_stripe_keys", self.max_stripe_keys.to_string()),
            (
                "avg_stripe_keys",
                format!("{:?}", self.keys as f64 / f64::from(self.stripes.max(1))),
            ),
            ("growths", self.growths.to_string()),
            ("recoveries", self.recoveries.to_string()),
            ("host_pid", json_opt(self.host_pid)),
            (
                "host_uptime_secs",
                json_opt(
                    self.host_pid
                        .map(|_| now_unix.saturating_sub(self.host_start_unix)),
                ),
            ),
            ("max_key_len", self.max_key_len.to_string()),
            ("max_value_len", self.max_value_len.to_string()),
            ("snapshots", snapshot.1.to_string()),
            ("last_snapshot_unix", snapshot.0.to_string()),
        ];
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    }
}

impl Client {
    /// Current metrics. Sums of words read from the segment saturate: a damaged word gives a
    /// wrong figure, never a panic (debug builds) or a wrapped one.
    pub fn stats(&self) -> Stats {
        let st = &self.st;
        let h = st.mem.header();
        let mut s = Stats {
            committed_bytes: st.mem.committed(),
            max_bytes: st.reserve,
            stripes: st.mem.stripe_count() as u32,
            max_key_len: st.max_key,
            max_value_len: st.max_value,
            recoveries: h.recoveries.load(R),
            growths: h.growth_count.load(R),
            expired: h.expired.load(R),
            evicted: h.evicted.load(R),
            eviction: crate::client::Policy::from_code(h.eviction.load(R)),
            created_unix: h.created_unix.load(R),
            host_start_unix: h.host_start_unix.load(R),
            ..Stats::default()
        };
        for i in 0..st.mem.stripe_count() {
            let stripe = st.mem.stripe(i);
            let n = stripe.count.load(R);
            s.keys = s.keys.saturating_add(n);
            s.max_stripe_keys = s.max_stripe_keys.max(n);
            s.value_bytes = s.value_bytes.saturating_add(stripe.value_bytes.load(R));
            s.revision = s.revision.saturating_add(stripe.revision.load(R));
        }
        let mut totals = [0u64; COUNTERS];
        for (i, t) in totals.iter_mut().enumerate() {
            *t = h.folded[i].load(R);
        }
        for (idx, off) in slot_list(st) {
            let Ok(slot) = st.mem.slot_at(off) else {
                continue;
            };
            if slot.state.load(R) != SLOT_ALIVE {
                continue;
            }
            let c = |k: Counter| slot.counter(k as usize);
            for (i, t) in totals.iter_mut().enumerate() {
                *t = t.saturating_add(slot.counter(i));
            }
            let waiting = slot.waiting_on.load(R);
            s.clients.push(ClientInfo {
                id: slot.client_id.load(R),
                pid: slot.pid.load(R),
                slot: idx,
                alive: self.session().is_ok_and(|me| me.me == idx)
                    || segment::ofd_is_locked(&st.file, segment::SLOT_LOCK_BASE + idx as u64)
                        .unwrap_or(false),
                gets: c(Counter::Gets),
                puts: c(Counter::Puts),
                removes: c(Counter::Removes),
                waiting_on_stripe: waiting.checked_sub(1).map(|w| w as u32),
            });
        }
        s.gets = totals[Counter::Gets as usize];
        s.hits = totals[Counter::Hits as usize];
        s.puts = totals[Counter::Puts as usize];
        s.removes = totals[Counter::Removes as usize];
        s.bytes_in = totals[Counter::BytesIn as usize];
        s.bytes_out = totals[Counter::BytesOut as usize];
        s.retries = totals[Counter::Retries as usize];
        let mut free = 0u64;
        for (c, cls) in h.classes.iter().enumerate() {
            free =
                free.saturating_add(cls.free_count.load(R).saturating_mul(CLASS_SIZES[c] as u64));
        }
        let committed_chunks = s.committed_bytes.saturating_sub(st.chunk_base) / CHUNK_SIZE;
        let map = st.mem.chunk_map();
        let free_chunks = map
            .iter()
            .take(committed_chunks as usize)
            .filter(|e| {
                let e = e.load(R);
                // A draining chunk's blocks are all free and left the class's count.
                crate::reclaim::claimable(e) || (draining_class(e).is_some() && !is_evacuating(e))
            })
            .count() as u64;
        s.free_bytes = free
            .saturating_add(free_chunks * CHUNK_SIZE)
            .min(s.committed_bytes);
        s.returned_bytes = st.returned_bytes().min(s.committed_bytes - s.free_bytes);
        s.used_bytes = s.committed_bytes - s.free_bytes - s.returned_bytes;
        if st.hosting.load(R)
            || segment::ofd_is_locked(&st.file, segment::HOST_LOCK_BYTE).unwrap_or(false)
        {
            s.host_pid = Some(h.host_pid.load(R));
        }
        s
    }
}

/// A byte count for people: `512 B`, `4.0 MiB`, `8.0 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (n as f64, 0);
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(super::human_bytes(512), "512 B");
        assert_eq!(super::human_bytes(4 << 20), "4.0 MiB");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
    }
}
