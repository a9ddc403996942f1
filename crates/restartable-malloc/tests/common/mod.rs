//! Shared by the test files: the library and the `rseq` binary (built on demand with
//! the profile these tests were built with), C programs compiled from `tests/c`, and
//! running a command with and without `LD_PRELOAD`.

#![allow(dead_code)]

#[path = "../../../restartable/tests/support/child.rs"]
pub mod child;

#[path = "../../../restartable/tests/support/seccomp.rs"]
pub mod seccomp;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub use child::{OutputWithin, LONG, SHORT};

/// The profile directory these tests were built into (`target/release`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps")
        .to_path_buf()
}

/// Runs `cargo build` for `args` with this test's profile and target directory.
/// (Cargo releases its build lock before running tests, so this does not wait on the
/// `cargo test` that started us; when the artifact is up to date it does nothing.)
fn cargo_build(args: &[&str]) {
    let dir = profile_dir();
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let target_dir = dir.parent().expect("target directory");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .args(args)
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.output_within(LONG);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `librestartable_malloc.so`, built (or found up to date) once per test binary.
/// Integration tests do not link a `cdylib`, so cargo does not build it for them.
pub fn library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        cargo_build(&["-p", "restartable-malloc", "--lib"]);
        let so = profile_dir().join("librestartable_malloc.so");
        assert!(so.exists(), "{} missing after cargo build", so.display());
        so
    })
}

/// The `rseq` CLI binary (for `rseq param-test`).
pub fn rseq_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        cargo_build(&["-p", "restartable-cli", "--bin", "rseq"]);
        let bin = profile_dir().join("rseq");
        assert!(bin.exists(), "{} missing after cargo build", bin.display());
        bin
    })
}

pub use restartable_test_support::Scratch;

/// A new, empty directory of this process's own for `name`:
/// `CARGO_TARGET_TMPDIR/restartable-malloc/<name>-<pid>-<n>`, removed when the
/// returned [`Scratch`] is dropped (kept on a panic); see
/// [`restartable_test_support::scratch_in`].
pub fn scratch(name: &str) -> Scratch {
    restartable_test_support::scratch_in(
        &PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("restartable-malloc"),
        name,
    )
}

/// Whether `tool` is a file in a directory of `PATH`.
pub fn installed(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Fails with a clear message if `tool` is not installed (CI installs it).
pub fn require(tool: &str) {
    assert!(
        installed(tool),
        "`{tool}` is not installed: these tests run real programs under LD_PRELOAD \
         (.ci/run installs python3, sqlite3, git, gcc and g++)"
    );
}

/// Compiles `tests/c/<name>.c` into the scratch area (once per test binary); returns
/// the executable.
pub fn compile_c(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = built.iter().find(|(n, _)| n == name) {
        return p.clone();
    }
    let p = compile_c_now(name);
    built.push((name.to_string(), p.clone()));
    p
}

fn compile_c_now(name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(format!("{name}.c"));
    compile_c_file(&src, name)
}

/// Compiles the C program `src` (with `-O2`, threads) into the scratch area as
/// `malloc-<name>`; returns the executable.
pub fn compile_c_file(src: &Path, name: &str) -> PathBuf {
    compile_atomically(
        src,
        &format!("malloc-{name}"),
        &[
            "-O2",
            "-g",
            "-fno-builtin",
            "-pthread",
            "-Wall",
            "-Wno-alloc-size-larger-than",
            "-Wno-use-after-free",
        ],
        &["-ldl"],
    )
}

/// Compiles the C file `src` (with `-O2`) into the scratch area as the shared
/// library `malloc-<name>.so` (a plugin to `dlopen`); returns its path.
pub fn compile_c_shared(src: &Path, name: &str) -> PathBuf {
    compile_atomically(
        src,
        &format!("malloc-{name}.so"),
        &["-O2", "-shared", "-fPIC"],
        &[],
    )
}

/// Runs `cc ARGS -o TEMPORARY SRC LIBS` and renames the result over `file` in the
/// scratch area; returns the final path.
///
/// The output is written under a name of this process's and call's own in the same
/// directory, then renamed over `file` (atomic): two processes (two benchmarks, or
/// test binaries running at once) that build the same program never run or load a
/// half-written file or overwrite one the other is running (a running file keeps its
/// inode). A failed or timed-out compilation removes its temporary file and leaves
/// `file` as it was.
fn compile_atomically(src: &Path, file: &str, args: &[&str], libs: &[&str]) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    require("cc");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(file);
    let tmp = out.with_file_name(format!(
        "{file}.{}-{}.tmp",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    let mut cmd = Command::new("cc");
    cmd.args(args).arg("-o").arg(&tmp).arg(src).args(libs);
    let result = cmd.output_or_kill(SHORT);
    let ok = matches!(&result, Ok((o, false)) if o.status.success());
    if !ok {
        let _ = std::fs::remove_file(&tmp);
    }
    let (o, killed) = result.unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        !killed,
        "compiling {}: {cmd:?} did not finish within {SHORT:?} and was killed:\n{}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success(),
        "compiling {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    if let Err(e) = std::fs::rename(&tmp, &out) {
        let _ = std::fs::remove_file(&tmp);
        panic!("renaming {} to {}: {e}", tmp.display(), out.display());
    }
    out
}

/// Whether `LD_PRELOAD` puts the library in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malloc {
    /// The system allocator (glibc).
    System,
    /// `librestartable_malloc.so` preloaded.
    Ours,
}

/// `cmd` with `LD_PRELOAD` set for `m` (inherited `LD_PRELOAD`, `GLIBC_TUNABLES` and
/// `RESTARTABLE_MALLOC_STATS` removed: the caller sets what it tests after this).
pub fn with(m: Malloc, mut cmd: Command) -> Command {
    cmd.env_remove("LD_PRELOAD")
        .env_remove("RESTARTABLE_MALLOC_STATS")
        .env_remove("GLIBC_TUNABLES");
    if m == Malloc::Ours {
        cmd.env("LD_PRELOAD", library());
    }
    cmd
}

/// Text of an output stream, for messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `make(m)` for the system allocator and for ours, each within `limit`, and
/// checks both succeed with the same standard output (and, if `same_stderr`, the same
/// standard error). Returns our run's output.
pub fn same_with_and_without(
    what: &str,
    limit: std::time::Duration,
    same_stderr: bool,
    mut make: impl FnMut(Malloc) -> Command,
) -> Output {
    let mut outs = Vec::new();
    for m in [Malloc::System, Malloc::Ours] {
        let mut cmd = with(m, make(m));
        let o = cmd.output_within(limit);
        assert!(
            o.status.success(),
            "{what} ({m:?}) failed: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            o.status,
            text(&o.stdout),
            text(&o.stderr)
        );
        outs.push(o);
    }
    let (sys, ours) = (&outs[0], &outs[1]);
    assert_eq!(sys.status.code(), ours.status.code(), "{what}: exit status");
    assert!(
        sys.stdout == ours.stdout,
        "{what}: standard output differs\n--- system malloc:\n{}\n--- restartable-malloc:\n{}",
        text(&sys.stdout),
        text(&ours.stdout)
    );
    if same_stderr {
        assert!(
            sys.stderr == ours.stderr,
            "{what}: standard error differs\n--- system malloc:\n{}\n--- restartable-malloc:\n{}",
            text(&sys.stderr),
            text(&ours.stderr)
        );
    }
    outs.pop().expect("two runs")
}

/// A `git fast-import` stream: `commits` commits on `main`, each changing a few of
/// 120 files, with fixed authors and dates (so the hashes are fixed too).
pub fn fast_import_stream(commits: usize) -> String {
    let mut s = String::new();
    let mut contents: Vec<Vec<String>> = (0..120)
        .map(|f| (0..30).map(|l| format!("file {f} line {l}")).collect())
        .collect();
    for c in 0..commits {
        let when = 1_700_000_000 + c * 3600;
        let msg = format!(
            "commit {c}: touch files {} and {}\n",
            c % 120,
            (c * 7) % 120
        );
        let _ = write!(
            s,
            "commit refs/heads/main\nauthor A U Thor <author@example.com> {when} +0000\n\
             committer C O Mitter <committer@example.com> {when} +0000\ndata {}\n{msg}",
            msg.len()
        );
        for f in [c % 120, (c * 7) % 120, (c * 13 + 5) % 120] {
            let lines = &mut contents[f];
            let at = (c * 31) % lines.len();
            lines[at] = format!("file {f} line {at} changed in commit {c}");
            if c % 3 == 0 {
                lines.push(format!("file {f} grows in commit {c}"));
            }
            let body = lines.join("\n") + "\n";
            let _ = write!(
                s,
                "M 100644 inline dir{}/file{f}.txt\ndata {}\n{body}",
                f % 8,
                body.len()
            );
        }
        s.push('\n');
    }
    s
}
