//! Helpers shared by the tests that run GNU tar and other commands (tar_gnu.rs, tar_sparse.rs).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Whether `tar` is GNU tar; prints why the caller skips otherwise.
pub fn gnu_tar_available() -> bool {
    let ok = Command::new("tar")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("GNU tar"))
        .unwrap_or(false);
    if !ok {
        eprintln!("skipping: `tar` is not GNU tar");
    }
    ok
}

/// A fresh directory under the temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("stevedore-tar-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd` (C locale, UTC) and returns its stdout; panics with its stderr on failure.
pub fn run<S: AsRef<OsStr> + std::fmt::Debug>(
    cmd: &str,
    args: &[S],
    cwd: Option<&Path>,
) -> Vec<u8> {
    let mut c = Command::new(cmd);
    c.args(args).env("LC_ALL", "C").env("TZ", "UTC");
    if let Some(dir) = cwd {
        c.current_dir(dir);
    }
    let out = c.output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
