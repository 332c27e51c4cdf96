//! Who may open a store: the creator only (0600 by default), never through a symlink or a
//! non-regular file; snapshots are written 0600.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use kvshm::{Client, Config, Error};
use kvshm_tests::TestStore;

const CHILD: &str = env!("CARGO_BIN_EXE_kvshm-child");

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn store_files_are_private_by_default_and_mode_is_configurable() {
    let t = TestStore::new("perm", Config::default(), CHILD);
    assert_eq!(mode(&t.path()), 0o600);
    let t2 = TestStore::new("perm640", Config::default().mode(0o640), CHILD);
    assert_eq!(
        mode(&t2.path()),
        0o640,
        "mode is exact, not reduced by the umask"
    );
    let snap = std::env::temp_dir().join(format!("kvshm-{}.snap", t.name));
    t.host().put(b"k", b"v").unwrap();
    t.host().dump_file(&snap, |_| {}).unwrap();
    assert_eq!(mode(&snap), 0o600, "snapshot must be private");
    std::fs::remove_file(&snap).unwrap();
}

#[test]
fn another_user_cannot_attach() {
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    if uid.trim() != "0" || Command::new("setpriv").arg("--version").output().is_err() {
        // A skip is not a pass (issue 19): say it loudly, and only when asked to.
        assert!(
            std::env::var_os("KVSHM_ALLOW_SKIP").is_some(),
            "another_user_cannot_attach needs root and setpriv to switch users; \
             set KVSHM_ALLOW_SKIP=1 to skip it knowingly"
        );
        eprintln!("SKIPPED another_user_cannot_attach (KVSHM_ALLOW_SKIP): needs root and setpriv");
        return;
    }
    let t = TestStore::new("otheruser", Config::default(), CHILD);
    t.host().put(b"secret", b"value").unwrap();
    // The child binary may sit in a directory nobody else can enter: copy it somewhere public.
    let bin = std::env::temp_dir().join(format!("kvshm-child-{}", std::process::id()));
    std::fs::copy(CHILD, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    for cmd in ["get", "len"] {
        let mut args = vec![cmd, t.dir.to_str().unwrap(), &t.name];
        if cmd == "get" {
            args.push("secret");
        }
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "uid 65534 attached to a 0600 store: {cmd}"
        );
        assert!(err.contains("PermissionDenied"), "{cmd}: {err}");
        assert!(!String::from_utf8_lossy(&o.stdout).contains("value"));
    }
    // A store file of another user that the mode lets everybody read (0644 is allowed) is
    // still refused: the owner check, not only the mode, keeps other users out.
    // (kvcli get attaches read-only, which the mode allows here.)
    let path = t.dir.join(format!("kvshm.{}", t.name));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cli = std::env::temp_dir().join(format!("kvcli-{}", std::process::id()));
    std::fs::copy(kvshm_tests::workspace_bin("kvcli"), &cli).unwrap();
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&cli)
        .args([
            "--name",
            &t.name,
            "--dir",
            t.dir.to_str().unwrap(),
            "get",
            "secret",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "uid 65534 read a 0644 store it does not own"
    );
    assert!(err.contains("owned by uid 0"), "{err}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("value"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&bin).unwrap();
    std::fs::remove_file(&cli).unwrap();
}

#[test]
fn symlinks_and_special_files_are_refused() {
    let t = TestStore::new("planted", Config::default(), CHILD);
    let dir = &t.dir;
    let link = format!("t-planted-link-{}", std::process::id());
    let link_path = dir.join(format!("kvshm.{link}"));
    std::os::unix::fs::symlink(t.path(), &link_path).unwrap();
    let r = Client::open_in(dir, &link);
    let r2 = Client::open_read_only_in(dir, &link);
    std::fs::remove_file(&link_path).unwrap();
    assert!(matches!(r, Err(Error::PermissionDenied { .. })), "{r:?}");
    assert!(matches!(r2, Err(Error::PermissionDenied { .. })), "{r2:?}");

    let fifo = format!("t-planted-fifo-{}", std::process::id());
    let fifo_path = dir.join(format!("kvshm.{fifo}"));
    assert!(Command::new("mkfifo")
        .arg(&fifo_path)
        .status()
        .unwrap()
        .success());
    let r = Client::open_in(dir, &fifo);
    std::fs::remove_file(&fifo_path).unwrap();
    assert!(matches!(r, Err(Error::PermissionDenied { .. })), "{r:?}");

    let d = format!("t-planted-dir-{}", std::process::id());
    std::fs::create_dir(dir.join(format!("kvshm.{d}"))).unwrap();
    let r = Client::open_in(dir, &d);
    std::fs::remove_dir(dir.join(format!("kvshm.{d}"))).unwrap();
    assert!(r.is_err(), "a directory at the store path must be refused");
    // Creating over a planted symlink fails too (O_EXCL never follows it).
    let victim = std::env::temp_dir().join(format!("kvshm-victim-{}", std::process::id()));
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, &link_path).unwrap();
    let r = kvshm::Host::create(&link, &Config::default().dir(dir));
    std::fs::remove_file(&link_path).unwrap();
    assert!(r.is_err());
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "create followed a symlink"
    );
    std::fs::remove_file(&victim).unwrap();
}
