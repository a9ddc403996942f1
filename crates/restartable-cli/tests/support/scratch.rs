//! Scratch directories for the tests that write files (compiled fixtures, debugger
//! scripts and drivers), included with `#[path]`. The same scheme as
//! `restartable-malloc`'s tests (`tests/common/mod.rs`), kept separate so that
//! neither package's tests depend on the other's.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A new, empty directory of this process's own for `name`:
/// `CARGO_TARGET_TMPDIR/restartable-cli/<name>-<pid>-<n>`, removed when the returned
/// [`Scratch`] is dropped.
///
/// Unique per process and call: two copies of a test binary running at once (or a
/// re-run while an old copy hangs) never delete or overwrite each other's files. The
/// directory is made with `create_dir`, which fails on an existing one, so a name left
/// by an earlier process (a failed run, a reused pid) is skipped, never emptied.
pub fn scratch(name: &str) -> Scratch {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join("restartable-cli");
    std::fs::create_dir_all(&parent)
        .unwrap_or_else(|e| panic!("scratch directory {}: {e}", parent.display()));
    loop {
        let d = parent.join(format!(
            "{name}-{}-{}",
            std::process::id(),
            CALLS.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::create_dir(&d) {
            Ok(()) => return Scratch(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("scratch directory {}: {e}", d.display()),
        }
    }
}

/// A directory from [`scratch`], removed with what is in it when dropped; kept (and
/// its path printed) when dropped while panicking, for a look at a failed test's
/// files.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(the files are kept in {})", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
