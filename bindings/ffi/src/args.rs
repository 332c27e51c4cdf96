//! Argument checks: every pointer from the caller is checked for NULL and turned into a slice
//! or reference only for the length the caller gave.

use std::ffi::{c_char, CStr};

use crate::{invalid, kvshm_status};

/// Bytes from a (pointer, length) pair: NULL is allowed only with length 0.
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize) -> Result<&'a [u8], kvshm_status> {
    if len > isize::MAX as usize {
        return Err(invalid("length too large"));
    }
    if p.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(invalid("NULL pointer with a non-zero length"))
        };
    }
    // SAFETY: the caller promises `len` readable bytes at `p` (non-NULL, length checked).
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

pub(crate) unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, kvshm_status> {
    if p.is_null() {
        return Err(invalid(&format!("{what} is NULL")));
    }
    // SAFETY: the caller promises a NUL-terminated string at `p` (checked non-NULL).
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| invalid(&format!("{what} is not UTF-8")))
}

pub(crate) unsafe fn opt_dir(p: *const c_char) -> Result<std::path::PathBuf, kvshm_status> {
    if p.is_null() {
        Ok(kvshm_core::default_dir())
    } else {
        // SAFETY: forwarded caller contract.
        Ok(unsafe { c_str(p, "dir") }?.into())
    }
}

pub(crate) unsafe fn out_ptr<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, kvshm_status> {
    if p.is_null() {
        return Err(invalid(&format!("{what} is NULL")));
    }
    // SAFETY: the caller gives a valid, writable `T` at `p` (checked non-NULL).
    Ok(unsafe { &mut *p })
}

/// A byte string: `ptr` may be NULL only when `len` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvshm_bytes {
    pub ptr: *const u8,
    pub len: usize,
}

pub(crate) unsafe fn slices<'a>(
    p: *const kvshm_bytes,
    n: usize,
) -> Result<Vec<&'a [u8]>, kvshm_status> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() || n > isize::MAX as usize / std::mem::size_of::<kvshm_bytes>() {
        return Err(invalid("NULL or oversized array"));
    }
    // SAFETY: the caller gives `n` readable kvshm_bytes at `p` (checked non-NULL).
    let arr = unsafe { std::slice::from_raw_parts(p, n) };
    // SAFETY: each element's range is readable (caller contract); `bytes` checks NULL.
    arr.iter().map(|b| unsafe { bytes(b.ptr, b.len) }).collect()
}
