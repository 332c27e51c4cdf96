//! Builds the C test program and the C++ example with the system compilers against the
//! freshly built `libkvshm.so`, and runs them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Build this package's cdylib (a no-op when current) and return its directory.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(["build", "--quiet", "-p", "kvshm-ffi"]);
    if release {
        c.arg("--release");
    }
    assert!(
        c.status().unwrap().success(),
        "cargo build -p kvshm-ffi failed"
    );
    assert!(profile_dir.join("libkvshm.so").exists());
    profile_dir
}

fn compile(compiler: &str, std: &str, src: &str, out: &Path) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = lib_dir();
    let st = Command::new(compiler)
        .arg(std)
        .args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-o"])
        .arg(out)
        .arg(dir.join(src))
        .arg(format!("-I{}", dir.join("include").display()))
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lkvshm")
        .status()
        .unwrap_or_else(|e| panic!("{compiler} not available: {e}"));
    assert!(st.success(), "{compiler} failed to build {src}");
}

#[test]
fn c_test_program_passes() {
    let out = std::env::temp_dir().join(format!("kvshm-c-test-{}", std::process::id()));
    compile("cc", "-std=c99", "tests/c/test_kvshm.c", &out);
    let name = format!("t-capi-{}", std::process::id());
    let o = Command::new(&out).arg(&name).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    println!("{text}");
    let _ = std::fs::remove_file(&out);
    for suffix in ["", "-small", "-foreign", "-link"] {
        let _ = std::fs::remove_file(kvshm_core_dir().join(format!("kvshm.{name}{suffix}")));
    }
    assert!(
        o.status.success() && text.contains(" passed, 0 failed"),
        "C test failed:\n{text}"
    );
}

#[test]
fn cpp_example_builds_and_runs() {
    let out = std::env::temp_dir().join(format!("kvshm-cpp-example-{}", std::process::id()));
    compile("c++", "-std=c++17", "examples/example.cpp", &out);
    let o = Command::new(&out).output().unwrap();
    let _ = std::fs::remove_file(&out);
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "greeting = hello from C++\n"
    );
}

fn kvshm_core_dir() -> PathBuf {
    std::env::var_os("KVSHM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"))
}
