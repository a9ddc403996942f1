//! Helpers shared by the workspace's tests and benchmarks (a dev-dependency only; not
//! published).

#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A new, empty directory of this process's own for `name` under `parent`
/// (`parent/<name>-<pid>-<n>`, `parent` made if missing), removed when the returned
/// [`Scratch`] is dropped. Tests pass their package's directory under
/// `CARGO_TARGET_TMPDIR`.
///
/// Unique per process and call: two copies of a test binary (or of a benchmark)
/// running at once, from one checkout or from two sharing a target directory, never
/// delete or overwrite each other's files. The directory is made with `create_dir`,
/// which fails on an existing one, so a name left by an earlier process (a failed
/// run, a reused pid) is skipped, never emptied.
///
/// # Panics
/// When a directory cannot be made (other than an existing name).
pub fn scratch_in(parent: &Path, name: &str) -> Scratch {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    std::fs::create_dir_all(parent)
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

/// A directory from [`scratch_in`], removed with what is in it when dropped; kept
/// (and its path printed) when dropped while panicking, for a look at a failed test's
/// files. (A process that exits without unwinding keeps it too.)
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// The directory.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Scratch directories are the process's own: a second one for the same name (as
    /// a second copy of a test binary running at once would make) neither empties nor
    /// reuses the first, nor one an earlier process left; each is removed when
    /// dropped, and kept when dropped while panicking.
    #[test]
    fn scratch_directories_are_unique_and_removed() {
        // The test's own root, itself a scratch directory (unit tests have no
        // CARGO_TARGET_TMPDIR): two runs at once, or one after a failed run with the
        // same pid, never share it.
        let root_dir = scratch_in(&std::env::temp_dir(), "restartable-test-support");
        let root = root_dir.to_path_buf();
        let scratch = |name: &str| scratch_in(&root, name);
        let a = scratch("unique");
        std::fs::write(a.join("kept"), "a").expect("write in the first directory");
        let b = scratch("unique");
        assert_ne!(a.path(), b.path());
        let name = a.file_name().and_then(|n| n.to_str()).expect("a name");
        assert!(
            name.starts_with(&format!("unique-{}-", std::process::id())),
            "{name}"
        );
        assert!(a.is_dir() && b.is_dir());
        assert_eq!(std::fs::read(a.join("kept")).expect("a's file"), b"a");
        let b_path = b.to_path_buf();
        drop(b);
        assert!(!b_path.exists(), "{} left behind", b_path.display());
        // Directories an earlier process left under the next names this one would
        // take are skipped, not emptied. (The next 16 counts: other tests of this
        // binary, running at once, may take a few of them first.)
        let (prefix, count) = b_path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|s| s.rsplit_once('-'))
            .expect("name-pid-n");
        let count: usize = count.parse().expect("a count");
        let stale: Vec<PathBuf> = (1..=16)
            .map(|k| a.with_file_name(format!("{prefix}-{}", count + k)))
            .collect();
        for d in &stale {
            std::fs::create_dir(d).expect("a stale directory");
            std::fs::write(d.join("stale"), "s").expect("write in it");
        }
        let c = scratch("unique");
        assert!(!stale.contains(&c.to_path_buf()), "{} reused", c.display());
        assert!(c.is_dir() && std::fs::read_dir(&c).expect("read").next().is_none());
        for d in &stale {
            assert_eq!(std::fs::read(d.join("stale")).expect("its file"), b"s");
            std::fs::remove_dir_all(d).expect("remove the stale directory");
        }
        // Dropped while panicking, a directory is kept (with its files, for a look).
        let (tx, rx) = std::sync::mpsc::channel();
        let root2 = root.clone();
        let panicked = std::thread::spawn(move || {
            let d = scratch_in(&root2, "unique");
            std::fs::write(d.join("kept"), "p").expect("write in it");
            tx.send(d.to_path_buf()).expect("send");
            panic!("(this test's own panic: the directory is kept)");
        })
        .join();
        assert!(panicked.is_err());
        let kept = rx.recv().expect("the panicking thread's directory");
        assert_eq!(std::fs::read(kept.join("kept")).expect("kept"), b"p");
        std::fs::remove_dir_all(&kept).expect("remove the kept directory");
        let a_path = a.to_path_buf();
        drop(a);
        drop(c);
        assert!(!a_path.exists(), "{} left behind", a_path.display());
        assert!(
            std::fs::read_dir(&root).expect("read").next().is_none(),
            "the test's root left empty"
        );
        drop(root_dir);
        assert!(!root.exists(), "{} left behind", root.display());
    }
}
