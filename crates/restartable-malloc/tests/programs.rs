//! Real programs that nobody here wrote, under `LD_PRELOAD` of the library and
//! without it: the same standard output, the same (successful) exit status, no crash.
//! python3 (threads churning dicts, lists, strings), sqlite3 (a scripted workload of
//! 300 000 rows), git (fast-import, log, status, gc, fsck on a generated repository),
//! gcc and g++ compiling programs (then running them), and `rseq param-test`.
//! Sizes keep each program to a few seconds: CI runs them all.

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    fast_import_stream, require, rseq_binary, same_with_and_without, scratch, text, Malloc, LONG,
    SHORT,
};

fn program(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/programs")
        .join(name)
}

fn tag(m: Malloc) -> &'static str {
    match m {
        Malloc::System => "system",
        Malloc::Ours => "ours",
    }
}

#[test]
fn python3_threads_churning_dicts_lists_strings() {
    require("python3");
    let out = same_with_and_without("python3 churn.py", SHORT, true, |_| {
        let mut c = Command::new("python3");
        c.arg(program("churn.py")).arg("60");
        c
    });
    let s = text(&out.stdout);
    assert!(s.contains("drained ") && s.lines().count() == 5, "{s}");
}

#[test]
fn sqlite3_scripted_workload() {
    require("sqlite3");
    let dir = scratch("sqlite3");
    let out = same_with_and_without("sqlite3 workload.sql", SHORT, true, |m| {
        let db = dir.join(format!("{}.db", tag(m)));
        let mut c = Command::new("sqlite3");
        c.arg(&db)
            .arg(format!(".read {}", program("workload.sql").display()));
        c
    });
    let s = text(&out.stdout);
    assert!(s.starts_with("wal\n300000|") && s.ends_with("ok\n"), "{s}");
}

#[test]
fn git_fast_import_log_status_gc() {
    require("git");
    require("sh");
    let dir = scratch("git");
    std::fs::write(dir.join("stream"), fast_import_stream(600)).expect("write stream");
    // Every git command (and the shell) runs under the same LD_PRELOAD.
    let script = r#"set -e
cd "$1"
rm -rf repo && git init -q -b main repo && cd repo
git fast-import --quiet < ../stream
git checkout -q main
echo "an edit" >> dir3/file3.txt
rm dir5/file5.txt
echo "new" > untracked.txt
echo "== status"; git status --porcelain
echo "== log"; git log --format='%H %an %s' | head -n 5
git log --stat --format='%s' | tail -n 5
echo "commits $(git rev-list --count HEAD), objects $(git rev-list --all --objects | wc -l)"
echo "== diff"; git diff --stat
git log -p --format=%H | cksum
echo "== gc"; git gc -q
git count-objects -v | grep -E '^(count|in-pack|packs):'
git fsck --full --no-progress
git log -p --format=%H | cksum
echo "== blame"; git blame -s dir3/file3.txt | tail -n 2
"#;
    let out = same_with_and_without("git", LONG, true, |m| {
        let work = dir.join(tag(m));
        std::fs::create_dir_all(&work).expect("work dir");
        std::fs::copy(dir.join("stream"), work.join("stream")).expect("copy stream");
        let mut c = Command::new("sh");
        c.args(["-c", script, "sh"])
            .arg(&work)
            .env("HOME", &work)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "A U Thor")
            .env("GIT_AUTHOR_EMAIL", "author@example.com")
            .env("GIT_COMMITTER_NAME", "C O Mitter")
            .env("GIT_COMMITTER_EMAIL", "committer@example.com");
        c
    });
    let s = text(&out.stdout);
    assert!(s.contains("commits 600,") && s.contains("in-pack: "), "{s}");
}

/// Compiles `source` with `compiler` (under `m`), links it, runs the result (under
/// `m` too) and prints what it printed: object files must be byte-identical.
fn compile_and_run(compiler: &str, source: &str, flags: &[&str]) {
    require(compiler);
    let dir = scratch(compiler);
    let src = program(source);
    let mut objects = Vec::new();
    for m in [Malloc::System, Malloc::Ours] {
        let obj = dir.join(format!("{}.o", tag(m)));
        let exe = dir.join(tag(m));
        // One command: compile (cc1/cc1plus, as), link (collect2, ld), run.
        let script = format!(
            "set -e; {compiler} {} -c -o '{}' '{}'; {compiler} -o '{}' '{}'; '{}'",
            flags.join(" "),
            obj.display(),
            src.display(),
            exe.display(),
            obj.display(),
            exe.display()
        );
        objects.push((m, obj, script));
    }
    let mut i = 0;
    same_with_and_without(&format!("{compiler} {source}"), SHORT, true, |_| {
        let mut c = Command::new("sh");
        c.args(["-c", &objects[i].2]);
        i += 1;
        c
    });
    let a = std::fs::read(&objects[0].1).expect("object");
    let b = std::fs::read(&objects[1].1).expect("object");
    assert!(a == b, "{compiler}: the object files differ");
}

#[test]
fn gcc_compiles_and_the_program_runs() {
    compile_and_run("gcc", "compile_me.c", &["-O2", "-Wall", "-g"]);
}

#[test]
fn gxx_compiles_and_the_program_runs() {
    compile_and_run("g++", "compile_me.cpp", &["-O1", "-std=c++17", "-Wall"]);
}

#[test]
fn rseq_param_test_runs_under_the_library() {
    let rseq = rseq_binary();
    for args in [
        "-T s -t 16 -r 20000",
        "-T l -t 200 -r 2000",
        "-T b -t 16 -r 20000 -M",
        "-T m -t 16 -r 20000",
        "-T i -t 16 -r 20000",
        "-T r -t 16 -r 20000",
        "-T l -t 32 -r 5000 -D 3",
        "-T b -t 32 -r 5000 -m 10 -y",
    ] {
        let out = same_with_and_without(&format!("rseq param-test {args}"), SHORT, true, |_| {
            let mut c = Command::new(rseq);
            c.arg("param-test").args(args.split(' '));
            c
        });
        assert!(out.status.success());
    }
}
