//! The workload every system runs: keys, values, key choice (uniform / Zipf), the op mix, and
//! the latency histogram.

use serde::{Deserialize, Serialize};

/// Key length for every system: 16 bytes, `key:` then 12 hex digits of the key's number.
pub const KEY_LEN: usize = 16;

/// Write key number `i` into `out`.
pub fn key(i: u64, out: &mut [u8; KEY_LEN]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out[..4].copy_from_slice(b"key:");
    for (j, b) in out[4..].iter_mut().enumerate() {
        *b = HEX[((i >> (4 * (11 - j))) & 0xf) as usize];
    }
}

/// Random bytes the loaded values are cut from (16 MiB): every key gets its own window, so no
/// store can compress the data set by finding the same bytes in many values.
pub fn pool() -> &'static [u8] {
    static POOL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let mut r = Rng::new(0x9001);
        (0..(16usize << 20) / 8)
            .flat_map(|_| r.next_u64().to_le_bytes())
            .collect()
    })
}

/// The value loaded under key `i`: `len` random bytes of its own (a window of [`pool`] chosen
/// by `i`), the first 8 bytes replaced by `i`.
pub fn load_value(buf: &mut Vec<u8>, len: usize, i: u64) {
    let p = pool();
    let room = (p.len() - len.min(p.len())) as u64 + 1;
    let start = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) % room;
    buf.clear();
    buf.extend_from_slice(&p[start as usize..start as usize + len]);
    let n = len.min(8);
    buf[..n].copy_from_slice(&i.to_le_bytes()[..n]);
}

/// A value of `len` bytes whose first 8 bytes carry `stamp` (so each put writes new bytes);
/// the rest is fixed per length (cheap enough for the measured loop).
pub fn fill_value(buf: &mut Vec<u8>, len: usize, stamp: u64) {
    if buf.len() != len {
        buf.clear();
        let mut r = Rng::new(0x5eed ^ len as u64);
        buf.extend((0..len).map(|_| r.next_u64() as u8));
    }
    let n = len.min(8);
    buf[..n].copy_from_slice(&stamp.to_le_bytes()[..n]);
}

/// Key choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dist {
    Uniform,
    /// Zipf with theta 0.99 (YCSB's default), ranks scattered over the key space.
    Zipf,
}

impl Dist {
    pub fn name(self) -> &'static str {
        match self {
            Dist::Uniform => "uniform",
            Dist::Zipf => "zipf0.99",
        }
    }
}

/// One measured cell's parameters (what a worker needs to run it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    pub keys: u64,
    pub value_bytes: usize,
    pub dist: Dist,
    /// Percent of operations that are gets; the rest are puts replacing an existing key.
    pub read_pct: u32,
    /// Operations sent together (1 = one round trip per op; >1 only for pipelined servers).
    pub batch: usize,
    pub warmup_ms: u64,
    pub measure_ms: u64,
    pub seed: u64,
}

/// wyrand: small, fast, good enough for key choice.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.0 as u128).wrapping_mul((self.0 ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) ^ t) as u64
    }
    /// Uniform in `0..n`.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in [0, 1).
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Zipf over `0..n` by Gray et al.'s method (as in YCSB's ZipfianGenerator), with the rank
/// scattered by a hash so the hot keys are not neighbours (YCSB's scrambled Zipfian).
#[derive(Clone, Debug)]
pub struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipf {
    pub fn new(n: u64, theta: f64) -> Zipf {
        let zeta = |k: u64| (1..=k).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(n);
        let zeta2 = zeta(2);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipf {
            n,
            theta,
            alpha,
            zetan,
            eta,
        }
    }

    /// A rank in `0..n` (0 the most frequent).
    #[inline]
    pub fn rank(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }

    /// A key number in `0..n`: the rank scattered by a 64-bit mix.
    #[inline]
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let mut x = self.rank(rng).wrapping_add(0x632b_e59b_d9b4_e019);
        x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        x % self.n
    }
}

/// Draws key numbers for a cell.
#[derive(Clone, Debug)]
pub enum Chooser {
    Uniform(u64),
    Zipf(Zipf),
}

impl Chooser {
    pub fn new(cell: &Cell) -> Chooser {
        match cell.dist {
            Dist::Uniform => Chooser::Uniform(cell.keys),
            Dist::Zipf => Chooser::Zipf(Zipf::new(cell.keys, 0.99)),
        }
    }
    #[inline]
    pub fn next(&self, rng: &mut Rng) -> u64 {
        match self {
            Chooser::Uniform(n) => rng.below(*n),
            Chooser::Zipf(z) => z.sample(rng),
        }
    }
}

/// Log-linear latency histogram in nanoseconds: exact below 128 ns, then 64 buckets per
/// power of two (under 1.6% error).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Histogram {
    counts: Vec<u64>,
    pub max: u64,
}

const SUB: u32 = 6;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; (64 - SUB as usize) << SUB],
            max: 0,
        }
    }
}

impl Histogram {
    #[inline]
    fn index(v: u64) -> usize {
        if v < (2 << SUB) {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // >= SUB + 1
        let shift = e - SUB;
        (((shift + 1) << SUB) + ((v >> shift) as u32 & ((1 << SUB) - 1))) as usize
    }

    /// The largest value that lands in bucket `i`.
    fn upper(i: usize) -> u64 {
        if i < (2 << SUB) {
            return i as u64;
        }
        let shift = (i >> SUB) as u32 - 1;
        let mant = (i as u64 & ((1 << SUB) - 1)) | (1 << SUB);
        ((mant + 1) << shift) - 1
    }

    #[inline]
    pub fn record(&mut self, v: u64, n: u64) {
        self.counts[Self::index(v)] += n;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.max = self.max.max(o.max);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value at quantile `q` (0..1), as the bucket's upper bound (capped at the max seen).
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_bound_their_values() {
        for v in [0u64, 1, 127, 128, 129, 1000, 65_535, 1 << 40, u64::MAX >> 2] {
            let i = Histogram::index(v);
            assert!(Histogram::upper(i) >= v, "{v}");
            assert!(i == 0 || Histogram::upper(i - 1) < v, "{v}");
            assert!(Histogram::upper(i) - v <= v / 60 + 1, "{v}");
        }
        let mut h = Histogram::default();
        for v in 1..=1000 {
            h.record(v * 10, 1);
        }
        let p50 = h.quantile(0.5);
        assert!((4900..=5100).contains(&p50), "{p50}");
        assert_eq!(h.quantile(1.0), 10_000);
    }

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let z = Zipf::new(100_000, 0.99);
        let mut r = Rng::new(1);
        let mut top = 0;
        for _ in 0..100_000 {
            let k = z.rank(&mut r);
            assert!(k < 100_000);
            if k < 10 {
                top += 1;
            }
            assert!(z.sample(&mut r) < 100_000);
        }
        // Under theta 0.99 the 10 hottest of 100k keys draw roughly a quarter of all picks.
        assert!((15_000..35_000).contains(&top), "{top}");
    }

    #[test]
    fn keys_are_sixteen_distinct_bytes() {
        let (mut a, mut b) = ([0u8; KEY_LEN], [0u8; KEY_LEN]);
        key(0xabc, &mut a);
        key(0xabd, &mut b);
        assert_eq!(&a, b"key:000000000abc");
        assert_ne!(a, b);
    }
}
