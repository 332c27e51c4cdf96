//! kvhost's library part: the RESP server (`resp`) and the HTTP API (`http`), on one runtime, used by the `kvhost` binary and by the
//! tests and benchmarks that drive it.
#![forbid(unsafe_code)]

pub mod http;
pub mod repl;
pub mod resp;
