//! kvhost's library part: the RESP server (`resp`), used by the `kvhost` binary and by the
//! tests and benchmarks that drive it.
#![forbid(unsafe_code)]

pub mod resp;
