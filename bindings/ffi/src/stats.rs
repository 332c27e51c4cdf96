//! Entry points that report: metrics and the integrity check.

use std::ffi::c_char;

use crate::args::out_ptr;
use crate::handle::with_client;
use crate::{fail, kvshm_client, kvshm_status, tri};
use kvshm_status::*;

/// Store metrics (see `kvshm::Stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct kvshm_stats {
    pub keys: u64,
    pub value_bytes: u64,
    pub committed_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub max_bytes: u64,
    pub gets: u64,
    pub hits: u64,
    pub puts: u64,
    pub removes: u64,
    pub clients: u64,
    pub recoveries: u64,
    pub growths: u64,
    /// 0 when no host runs.
    pub host_pid: u64,
    pub max_key_len: u64,
    pub max_value_len: u64,
}

/// Fill `*out` with the store's metrics.
///
/// # Safety
/// `out` is NULL or points to a writable `kvshm_stats`.
#[no_mangle]
pub unsafe extern "C" fn kvshm_get_stats(
    client: *const kvshm_client,
    out: *mut kvshm_stats,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: checked by `out_ptr`.
        let o = tri!(unsafe { out_ptr(out, "out") });
        let s = c.stats();
        *o = kvshm_stats {
            keys: s.keys,
            value_bytes: s.value_bytes,
            committed_bytes: s.committed_bytes,
            used_bytes: s.used_bytes,
            free_bytes: s.free_bytes,
            max_bytes: s.max_bytes,
            gets: s.gets,
            hits: s.hits,
            puts: s.puts,
            removes: s.removes,
            clients: s.clients.len() as u64,
            recoveries: s.recoveries,
            growths: s.growths,
            host_pid: s.host_pid.unwrap_or(0),
            max_key_len: s.max_key_len as u64,
            max_value_len: s.max_value_len as u64,
        };
        KVSHM_OK
    })
}

/// Full integrity check. `*problems` receives the number of problems (0 = healthy); when
/// `report` is not NULL the first problems are written there as text (NUL-terminated,
/// truncated to `report_len`).
///
/// # Safety
/// `problems` is NULL or points to a writable `uint64_t`; `report` is NULL or points to
/// `report_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn kvshm_verify(
    client: *const kvshm_client,
    problems: *mut u64,
    report: *mut c_char,
    report_len: usize,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: checked by `out_ptr`.
        let p = tri!(unsafe { out_ptr(problems, "problems") });
        match c.verify() {
            Ok(r) => {
                *p = r.problems.len() as u64;
                if !report.is_null() && report_len > 0 {
                    let text = r.problems.join("\n");
                    let n = text.len().min(report_len - 1);
                    // SAFETY: `report` holds `report_len` writable bytes (caller contract);
                    // we write n + 1 <= report_len.
                    unsafe {
                        std::ptr::copy_nonoverlapping(text.as_ptr(), report as *mut u8, n);
                        *report.add(n) = 0;
                    }
                }
                KVSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Set the store's eviction policy for every process using it: 0 noeviction (writes to a
/// full store fail with KVSHM_STORE_FULL), 1 allkeys-lru, 2 volatile-lru, 3 allkeys-random,
/// 4 volatile-ttl, 5 volatile-random. KVSHM_INVALID_ARGUMENT for another number.
///
/// # Safety
/// `client` is a handle from `kvshm_open` (or NULL: an error).
#[no_mangle]
pub unsafe extern "C" fn kvshm_set_eviction(
    client: *const kvshm_client,
    policy: u32,
) -> kvshm_status {
    with_client(client, |c| {
        let Some(p) = kvshm_core::Policy::ALL
            .into_iter()
            .find(|p| *p as u32 == policy)
        else {
            return fail(kvshm_core::Error::InvalidArgument(format!(
                "unknown eviction policy {policy}"
            )));
        };
        match c.set_eviction(p) {
            Ok(()) => KVSHM_OK,
            Err(e) => fail(e),
        }
    })
}

/// `*policy` receives the store's eviction policy (the numbers of `kvshm_set_eviction`) and
/// `*evicted` (may be NULL) how many keys were evicted since the store was created.
///
/// # Safety
/// `policy` points to a writable `uint32_t`; `evicted` is NULL or points to a writable
/// `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn kvshm_get_eviction(
    client: *const kvshm_client,
    policy: *mut u32,
    evicted: *mut u64,
) -> kvshm_status {
    with_client(client, |c| {
        // SAFETY: checked by `out_ptr`.
        let p = tri!(unsafe { out_ptr(policy, "policy") });
        *p = c.eviction() as u32;
        if !evicted.is_null() {
            // SAFETY: not NULL, writable (caller contract).
            unsafe { *evicted = c.evicted() };
        }
        KVSHM_OK
    })
}
