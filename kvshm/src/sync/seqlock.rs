//! The seqlock protocol on a stripe's `seq` word.
//!
//! Writer (holding the stripe lock): [`write_begin`] makes `seq` odd and fences, so no data
//! store can become visible before the odd value; [`write_end`] publishes everything with a
//! Release store of the next even value. Reader: [`read_begin`] (Acquire) gives an even
//! snapshot or `None`; after reading the data with Relaxed atomic loads, [`read_validate`]
//! (Acquire fence, then re-load) says whether nothing changed meanwhile.

use std::sync::atomic::Ordering;

use super::atomic::SeqWord;

#[inline]
pub fn write_begin<S: SeqWord>(seq: &S) {
    seq.store(seq.load(Ordering::Relaxed) | 1, Ordering::Relaxed);
    S::fence(Ordering::Release);
}

#[inline]
pub fn write_end<S: SeqWord>(seq: &S) {
    seq.store((seq.load(Ordering::Relaxed) | 1) + 1, Ordering::Release);
}

#[inline]
pub fn read_begin<S: SeqWord>(seq: &S) -> Option<u64> {
    let s = seq.load(Ordering::Acquire);
    (s & 1 == 0).then_some(s)
}

#[inline]
pub fn read_validate<S: SeqWord>(seq: &S, begun: u64) -> bool {
    S::fence(Ordering::Acquire);
    seq.load(Ordering::Relaxed) == begun
}
