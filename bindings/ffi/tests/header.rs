//! The checked-in `include/kvshm.h` must be exactly what cbindgen generates from the source.
//! `KVSHM_BLESS=1 cargo test -p kvshm-ffi --test header` rewrites it.

#[test]
fn header_is_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(cfg)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("generate header")
        .write(&mut out);
    let path = dir.join("include/kvshm.h");
    if std::env::var_os("KVSHM_BLESS").is_some() {
        std::fs::write(&path, &out).unwrap();
    }
    let have = std::fs::read(&path).unwrap_or_default();
    assert!(
        have == out,
        "include/kvshm.h is out of date; run KVSHM_BLESS=1 cargo test -p kvshm-ffi --test header"
    );
}
