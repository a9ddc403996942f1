//! The same programs, side by side in one run, under `LD_PRELOAD` of
//! `librestartable_malloc.so`, Debian's mimalloc, jemalloc and tcmalloc (gperftools,
//! minimal), and none (glibc): elapsed time (median of `--runs` runs) and peak RSS
//! (median of the runs' `ru_maxrss`: the largest process of the program's tree,
//! measured by a small launcher, `benches/c/launch.c`, so that the benchmark's own
//! size does not count), with the best run's ratio beside the median's, and the CPU
//! time (user + system) of the program's processes, which a busy machine disturbs
//! less than elapsed time.
//!
//! ```sh
//! apt-get install libmimalloc2.0 libjemalloc2 libtcmalloc-minimal4 python3 sqlite3 git gcc g++
//! cargo bench -p restartable-malloc --bench programs            # full size, 5 runs
//! cargo bench -p restartable-malloc --bench programs -- --quick # a smoke run: small, 1 run
//! cargo bench -p restartable-malloc --bench programs -- --quick --runs 3 # small, 3 runs
//! # one program, restartable against mimalloc and glibc and another build of it:
//! cargo bench -p restartable-malloc --bench programs -- --only g++ --alloc mimalloc \
//!     --lib main=/tmp/main/librestartable_malloc.so --runs 20
//! ```
//!
//! Runs are interleaved (in every round each program runs once per allocator, the
//! allocators in a rotating order), so that a machine that gets busier during the run
//! affects all columns alike. Every run's output must equal the run without a
//! preloaded allocator (the programs print results, not timings), or the benchmark
//! fails. The C programs also print their own figures (ns per pair, CPU time
//! included), shown after the table.

#[path = "../tests/common/mod.rs"]
mod common;
mod programs_args;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser as _;

use common::{compile_c_file, fast_import_stream, library, require, scratch};
use programs_args::Args;

const DEBIAN_LIBS: &str = "/usr/lib/x86_64-linux-gnu";
/// glibc's column (no preloaded library): the baseline of outputs and RSS.
const GLIBC: usize = 0;
/// restartable's column (`librestartable_malloc.so`): the one the ratios are of.
const OURS: usize = 1;

/// The allocators: (column name, preloaded library or none). Exits with a message on
/// a bad `--alloc` or `--lib`.
fn allocators(only: &[String], extra: &[String]) -> Vec<(String, Option<PathBuf>)> {
    let mut v = vec![
        ("glibc (none)".to_string(), None),
        ("restartable".to_string(), Some(library().to_path_buf())),
    ];
    assert!(v[GLIBC].1.is_none() && v[OURS].0 == "restartable");
    let others = [
        ("mimalloc", "libmimalloc.so.2", "libmimalloc2.0"),
        ("jemalloc", "libjemalloc.so.2", "libjemalloc2"),
        (
            "tcmalloc",
            "libtcmalloc_minimal.so.4",
            "libtcmalloc-minimal4",
        ),
    ];
    for o in only {
        if o != "none" && !others.iter().any(|(name, ..)| name.contains(o.as_str())) {
            usage_error(&format!(
                "--alloc {o}: no such allocator (mimalloc, jemalloc, tcmalloc, or none)"
            ));
        }
    }
    for (name, file, pkg) in others {
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        let p = Path::new(DEBIAN_LIBS).join(file);
        if !p.exists() {
            eprintln!(
                "{} is missing: apt-get install libmimalloc2.0 libjemalloc2 libtcmalloc-minimal4 \
                 ({pkg} for this one)",
                p.display()
            );
            std::process::exit(1);
        }
        v.push((name.to_string(), Some(p)));
    }
    for e in extra {
        let Some((name, path)) = e.split_once('=') else {
            usage_error(&format!("--lib {e}: expected NAME=PATH"));
        };
        if name.is_empty() || v.iter().any(|(n, _)| n == name) {
            usage_error(&format!(
                "--lib {e}: the NAME must be new and not empty (columns so far: {})",
                v.iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        // Absolute: the programs change directory (git's script does) and pass
        // LD_PRELOAD on to their children.
        let p = std::fs::canonicalize(path)
            .unwrap_or_else(|err| usage_error(&format!("--lib {e}: {path}: {err}")));
        if p.to_string_lossy().contains([':', ' ']) {
            usage_error(&format!(
                "--lib {e}: LD_PRELOAD cannot take a path with ':' or ' ' in it"
            ));
        }
        v.push((name.to_string(), Some(p)));
    }
    v
}

/// Exits with `message` and status 2 (as clap does on a bad argument).
fn usage_error(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2);
}

/// Checks that each preloaded library replaces `malloc` (ld.so only warns about a file
/// it cannot preload, and then the column would measure glibc's).
fn check_preloads(allocs: &[(String, Option<PathBuf>)]) {
    let which = compile_c_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/c/which_malloc.c"),
        "bench-which-malloc",
    );
    for (name, lib) in allocs {
        let Some(lib) = lib else { continue };
        let o = Command::new(&which)
            .env("LD_PRELOAD", lib)
            .output()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", which.display()));
        let found = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let replaces = o.status.success()
            && std::fs::canonicalize(&found).ok()
                == Some(std::fs::canonicalize(lib).expect("the libraries were checked to exist"));
        if !replaces {
            usage_error(&format!(
                "{name}: {} does not replace malloc under LD_PRELOAD (malloc comes from \
                 {found:?}; ld.so said: {:?})",
                lib.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
    }
}

/// A program to run: its name and how to make its command in a fresh directory.
struct Program {
    name: String,
    make: Box<dyn Fn(&Path) -> Command>,
    /// Real programs (the RSS target applies to them).
    real: bool,
}

/// The programs, their inputs written under `inputs`.
fn programs(quick: bool, inputs: &Path) -> Vec<Program> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tests = manifest.join("tests/programs");
    let cdir = manifest.join("benches/c");
    let mut v: Vec<Program> = Vec::new();

    for tool in ["python3", "sqlite3", "git", "gcc", "g++", "sh"] {
        require(tool);
    }
    let churn_py = tests.join("churn.py");
    let rounds = if quick { "20" } else { "200" };
    v.push(Program {
        name: "python3 churn.py (4 threads)".into(),
        make: Box::new(move |_| {
            let mut c = Command::new("python3");
            c.arg(&churn_py).arg(rounds);
            c
        }),
        real: true,
    });

    let sql = tests.join("workload.sql");
    v.push(Program {
        name: "sqlite3 workload.sql (300k rows)".into(),
        make: Box::new(move |dir| {
            let mut c = Command::new("sqlite3");
            c.arg(dir.join("bench.db"))
                .arg(format!(".read {}", sql.display()));
            c
        }),
        real: true,
    });

    let commits = if quick { 200 } else { 3000 };
    let stream = inputs.join("stream");
    std::fs::write(&stream, fast_import_stream(commits)).expect("write stream");
    let git_script = r#"set -e
cd "$1"
git init -q -b main repo && cd repo
git fast-import --quiet < "$2"
git checkout -q main
git log -p --format=%H | cksum
git status --porcelain | wc -l
git gc -q
git fsck --full --no-progress
git log --stat --format=%s | cksum
"#;
    v.push(Program {
        name: format!("git fast-import, log -p, gc, fsck ({commits} commits)"),
        make: Box::new(move |dir| {
            let mut c = Command::new("sh");
            c.args(["-c", git_script, "sh"])
                .arg(dir)
                .arg(&stream)
                .env("HOME", dir)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null");
            c
        }),
        real: true,
    });

    // gcc on a generated C file (a few hundred functions), g++ on the test's C++.
    let gen = inputs.join("generated.c");
    std::fs::write(&gen, generated_c(if quick { 50 } else { 600 })).expect("write C");
    v.push(Program {
        name: "gcc -O2 -c (generated C)".into(),
        make: Box::new(move |dir| {
            let mut c = Command::new("gcc");
            c.args(["-O2", "-c", "-o"]).arg(dir.join("g.o")).arg(&gen);
            c
        }),
        real: true,
    });
    let cpp = tests.join("compile_me.cpp");
    v.push(Program {
        name: "g++ -O2 -c (templates, regex)".into(),
        make: Box::new(move |dir| {
            let mut c = Command::new("g++");
            c.args(["-O2", "-std=c++17", "-c", "-o"])
                .arg(dir.join("cpp.o"))
                .arg(&cpp);
            c
        }),
        real: true,
    });

    let churn = compile_c_file(&cdir.join("churn.c"), "bench-churn");
    let pairs = if quick { "1000000" } else { "20000000" };
    for threads in ["1", "2"] {
        let churn = churn.clone();
        v.push(Program {
            name: format!("C churn, {threads} thread(s)"),
            make: Box::new(move |_| {
                let mut c = Command::new(&churn);
                c.args([threads, pairs]);
                c
            }),
            real: false,
        });
    }
    let larson = compile_c_file(&cdir.join("larson.c"), "bench-larson");
    let rounds = if quick { "5" } else { "50" };
    v.push(Program {
        name: "C larson-like, 2 threads".into(),
        make: Box::new(move |_| {
            let mut c = Command::new(&larson);
            c.args(["2", rounds, "100000", "2000"]);
            c
        }),
        real: false,
    });
    v
}

/// A C file of `n` functions with tables, switches and string handling: enough for
/// gcc's optimizer to allocate a lot.
fn generated_c(n: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("#include <string.h>\n#include <stdlib.h>\n");
    for i in 0..n {
        let _ = writeln!(
            s,
            "struct s{i} {{ int a[{}]; char name[32]; double w; struct s{i} *next; }};\n\
             static const int table{i}[] = {{ {} }};\n\
             int f{i}(struct s{i} *p, int x) {{\n  int acc = 0;\n  for (int k = 0; k < {}; k++) {{\n\
             \x20   switch ((x + k) % 7) {{\n      case 0: acc += table{i}[k % 16] * p->a[k % {}]; break;\n\
             \x20     case 1: acc ^= (int)strlen(p->name) + k; break;\n      case 2: acc -= (int)(p->w * k); break;\n\
             \x20     case 3: if (p->next) acc += f{}(0, acc); break;\n      default: acc += x * k;\n    }}\n  }}\n\
             \x20 return acc;\n}}",
            4 + i % 13,
            (0..16).map(|k| ((i * 31 + k * 7) % 97).to_string()).collect::<Vec<_>>().join(", "),
            8 + i % 9,
            4 + i % 13,
            if i == 0 { 0 } else { i - 1 },
        );
    }
    s
}

/// One run: elapsed time, peak RSS (KiB), CPU time, page faults, stdout, success.
struct Run {
    elapsed: Duration,
    max_rss_kib: i64,
    /// User + system time of the program's process tree (zero when it ran below the
    /// clock's resolution).
    cpu: Duration,
    /// The system part of `cpu`.
    sys: Duration,
    /// Minor page faults of the program's process tree.
    minflt: i64,
    stdout: Vec<u8>,
    ok: bool,
    stderr: Vec<u8>,
}

/// Runs `cmd` through the launcher (which measures its peak RSS and CPU time and
/// writes them to `rss_file`) with `preload`.
fn run_once(
    launcher: &Path,
    rss_file: &Path,
    cmd: &Command,
    preload: Option<&Path>,
    limit: Duration,
) -> Run {
    use std::io::Read;
    use std::os::unix::process::CommandExt as _;
    let _ = std::fs::remove_file(rss_file);
    let mut l = Command::new(launcher);
    l.arg(rss_file)
        .arg(preload.map_or(std::ffi::OsStr::new(""), |p| p.as_os_str()))
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_remove("LD_PRELOAD")
        .env_remove("GLIBC_TUNABLES");
    if let Some(d) = cmd.get_current_dir() {
        l.current_dir(d);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => l.env(k, v),
            None => l.env_remove(k),
        };
    }
    let mut cmd = l;
    let started = Instant::now();
    // Reaped below with `wait4` (for its rusage), not `Child::wait`.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let ereader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    // A watchdog kills the process group past the limit.
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if started.elapsed() > limit {
                    // SAFETY: the child's own process group (process_group(0) above).
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        })
    };
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped; both out pointers are valid.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let elapsed = started.elapsed();
    let ok = r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    // A failed run is reported (and ends the benchmark) by the caller, whatever the
    // launcher managed to write; a successful one must come with all its figures.
    let measured = std::fs::read_to_string(rss_file).unwrap_or_default();
    let [max_rss_kib, user, sys, minflt] = match launcher_figures(&measured) {
        Ok(f) => f,
        Err(_) if !ok => [-1, 0, 0, -1],
        Err(e) => {
            eprintln!(
                "{cmd:?}: the launcher's figures in {} ({measured:?}): {e}; expected \
                 `<peak RSS KiB> <user CPU us> <system CPU us> <minor faults>` \
                 (benches/c/launch.c)",
                rss_file.display()
            );
            std::process::exit(1);
        }
    };
    let sys = Duration::from_micros(sys as u64);
    let cpu = Duration::from_micros(user as u64) + sys;
    done.store(true, Ordering::Relaxed);
    let killed = watchdog.join().expect("watchdog");
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    if killed {
        panic!("{cmd:?} did not finish within {limit:?} and was killed");
    }
    Run {
        elapsed,
        max_rss_kib,
        cpu,
        sys,
        minflt,
        stdout: reader.join().expect("stdout reader"),
        stderr: ereader.join().expect("stderr reader"),
        ok,
    }
}

/// The launcher's line, `<ru_maxrss KiB> <user CPU µs> <system CPU µs> <ru_minflt>`:
/// exactly four numbers, none negative.
fn launcher_figures(s: &str) -> Result<[i64; 4], String> {
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 4 {
        return Err(format!("{} number(s) instead of 4", fields.len()));
    }
    let mut v = [0; 4];
    for (x, f) in v.iter_mut().zip(&fields) {
        *x = f
            .parse::<i64>()
            .ok()
            .filter(|&x| x >= 0)
            .ok_or_else(|| format!("{f:?} is not a count"))?;
    }
    Ok(v)
}

fn median<T: Copy + PartialOrd>(v: Vec<T>) -> T {
    quantiles(v, [0.5])[0]
}

/// The values at fractions `fs` (0 the lowest, 1 the highest) of `v` sorted: the
/// nearest rank, the upper one of two middle values for the median of an even count.
fn quantiles<T: Copy + PartialOrd, const N: usize>(mut v: Vec<T>, fs: [f64; N]) -> [T; N] {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    fs.map(|f| v[((v.len() - 1) as f64 * f).round() as usize])
}

fn main() {
    let args = Args::parse();
    let runs = args.runs();
    let limit = Duration::from_secs(args.limit);
    let allocs = allocators(&args.alloc, &args.lib);
    check_preloads(&allocs);
    let launcher = compile_c_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/c/launch.c"),
        "bench-launch",
    );
    // Everything this process writes, in one directory of its own: two benchmarks
    // running at once must not read each other's figures or delete each other's
    // files. Removed at the end (dropped); left for a look when a run fails (the
    // benchmark exits without unwinding).
    let own = scratch("bench");
    let inputs = own.join("inputs");
    std::fs::create_dir_all(&inputs).expect("inputs directory");
    let rss_file = own.join("rss");
    let mut progs = programs(args.quick, &inputs);
    if !args.only.is_empty() {
        progs.retain(|p| args.only.iter().any(|o| p.name.contains(o.as_str())));
    }
    if progs.is_empty() {
        let _ = std::fs::remove_dir_all(&own);
        usage_error(&format!("--only {:?}: no program matches", args.only));
    }
    eprintln!(
        "{} programs x {} allocators x {runs} runs; library {}",
        progs.len(),
        allocs.len(),
        library().display()
    );
    // results[p][a] = runs
    let mut results: Vec<Vec<Vec<Run>>> = progs
        .iter()
        .map(|_| allocs.iter().map(|_| Vec::new()).collect())
        .collect();
    for round in 0..runs {
        for (pi, p) in progs.iter().enumerate() {
            for k in 0..allocs.len() {
                let ai = (k + round + pi) % allocs.len();
                let (aname, lib) = &allocs[ai];
                let dir = own.join(format!("run-{pi}-{ai}"));
                std::fs::create_dir_all(&dir).expect("run directory");
                let cmd = (p.make)(&dir);
                let r = run_once(&launcher, &rss_file, &cmd, lib.as_deref(), limit);
                if !r.ok {
                    eprintln!(
                        "{} under {aname} failed (its files are in {}):\n{}\n{}",
                        p.name,
                        dir.display(),
                        String::from_utf8_lossy(&r.stdout),
                        String::from_utf8_lossy(&r.stderr)
                    );
                    std::process::exit(1);
                }
                eprintln!(
                    "round {round}: {:<45} {:<13} {:>8.3} s {:>8.3} s CPU ({:.3} s system) \
                     {:>8} KiB {:>8} minor faults",
                    p.name,
                    aname,
                    r.elapsed.as_secs_f64(),
                    r.cpu.as_secs_f64(),
                    r.sys.as_secs_f64(),
                    r.max_rss_kib,
                    r.minflt
                );
                let _ = std::fs::remove_dir_all(&dir);
                results[pi][ai].push(r);
            }
        }
    }
    // Outputs must agree with the system allocator's (C workloads print timings:
    // compare their first word only).
    for (pi, p) in progs.iter().enumerate() {
        let norm = |b: &[u8]| -> String {
            let s = String::from_utf8_lossy(b).into_owned();
            if p.real {
                s
            } else {
                s.split(':').next().unwrap_or("").to_string()
            }
        };
        let want = norm(&results[pi][GLIBC][0].stdout);
        for (ai, (aname, _)) in allocs.iter().enumerate() {
            for r in &results[pi][ai] {
                if norm(&r.stdout) != want {
                    eprintln!(
                        "{}: the output under {aname} differs from glibc's:\n{}\n--- glibc:\n{want}",
                        p.name,
                        String::from_utf8_lossy(&r.stdout)
                    );
                    std::process::exit(1);
                }
            }
        }
    }

    println!("machine: {} CPUs; {}", nproc(), uname());
    println!(
        "elapsed seconds (median of {runs}) / peak RSS in MiB (median); last columns: \
         restartable's time over the fastest column's, and its peak RSS over glibc's\n"
    );
    print!("| program |");
    for (a, _) in &allocs {
        print!(" {a} |");
    }
    println!(" time / fastest | best run / fastest best run | RSS / glibc |");
    print!("|---|");
    for _ in &allocs {
        print!("---|");
    }
    println!("---|---|---|");
    for (pi, p) in progs.iter().enumerate() {
        print!("| {} |", p.name);
        let mut times = Vec::new();
        let mut rss = Vec::new();
        for runs_of in &results[pi] {
            let t = median(runs_of.iter().map(|r| r.elapsed.as_secs_f64()).collect());
            let m = median(runs_of.iter().map(|r| r.max_rss_kib).collect());
            times.push(t);
            rss.push(m);
            print!(" {t:.3} / {:.1} |", m as f64 / 1024.0);
        }
        let best = times.iter().cloned().fold(f64::INFINITY, f64::min);
        let mins: Vec<f64> = results[pi]
            .iter()
            .map(|rs| {
                rs.iter()
                    .map(|r| r.elapsed.as_secs_f64())
                    .fold(f64::INFINITY, f64::min)
            })
            .collect();
        let best_min = mins.iter().cloned().fold(f64::INFINITY, f64::min);
        println!(
            " {:.3} | {:.3} | {} |",
            times[OURS] / best,
            mins[OURS] / best_min,
            show_ratio(ratio(rss[OURS] as f64, rss[GLIBC] as f64))
        );
    }
    println!(
        "\nCPU seconds (user + system of the program's processes, median of {runs}); last \
         columns: restartable's over the lowest, and per round (each round runs every \
         allocator once): the median of restartable's CPU time over the lowest other \
         allocator's in that round, and the rounds where restartable's was the lowest\n"
    );
    print!("| program |");
    for (a, _) in &allocs {
        print!(" {a} |");
    }
    println!(" CPU / lowest | per round: / lowest other (median) | rounds lowest |");
    print!("|---|");
    for _ in &allocs {
        print!("---|");
    }
    println!("---|---|---|");
    for (pi, p) in progs.iter().enumerate() {
        print!("| {} |", p.name);
        // Medians of the runs that reported CPU time (none: `n/a`).
        let cpus: Vec<Option<f64>> = results[pi]
            .iter()
            .map(|rs| {
                let v: Vec<f64> = rs
                    .iter()
                    .map(|r| r.cpu.as_secs_f64())
                    .filter(|&c| c > 0.0)
                    .collect();
                (!v.is_empty()).then(|| median(v))
            })
            .collect();
        for &c in &cpus {
            print!(" {} |", show_ratio(c));
        }
        let low = cpus.iter().flatten().cloned().fold(f64::INFINITY, f64::min);
        let per_round = per_round_ratios(&results[pi], |r| r.cpu.as_secs_f64());
        let lowest = per_round.iter().filter(|&&x| x < 1.0).count();
        println!(
            " {} | {} | {lowest} of {} |",
            show_ratio(cpus[OURS].and_then(|c| ratio(c, low))),
            show_ratio((!per_round.is_empty()).then(|| median(per_round.clone()))),
            per_round.len()
        );
    }
    println!(
        "\nper round, restartable's CPU time over each other column's in the same round: \
         median [first quartile, third quartile] of the {runs} rounds\n"
    );
    print!("| program |");
    for (_, (a, _)) in allocs.iter().enumerate().filter(|&(ai, _)| ai != OURS) {
        print!(" / {a} |");
    }
    println!();
    print!("|---|");
    for _ in 1..allocs.len() {
        print!("---|");
    }
    println!();
    for (pi, p) in progs.iter().enumerate() {
        print!("| {} |", p.name);
        for (_, rs) in results[pi].iter().enumerate().filter(|&(ai, _)| ai != OURS) {
            let v: Vec<f64> = results[pi][OURS]
                .iter()
                .zip(rs)
                .filter_map(|(ours, other)| ratio(ours.cpu.as_secs_f64(), other.cpu.as_secs_f64()))
                .collect();
            if v.is_empty() {
                print!(" {} |", show_ratio(None));
                continue;
            }
            let [q1, med, q3] = quantiles(v, [0.25, 0.5, 0.75]);
            print!(" {med:.3} [{q1:.3}, {q3:.3}] |");
        }
        println!();
    }
    let unmeasured: usize = results
        .iter()
        .flatten()
        .flatten()
        .filter(|r| r.cpu.is_zero())
        .count();
    if unmeasured > 0 {
        println!(
            "\n{unmeasured} run(s) reported no CPU time (the program ran below the clock's \
             resolution): they are left out of the CPU medians above and their rounds out \
             of the ratios; a figure with no run or round left reads `{}`",
            show_ratio(None)
        );
    }
    drop(own);
    println!("\nthe C programs' own figures (median run by elapsed time):\n");
    for (pi, p) in progs.iter().enumerate().filter(|(_, p)| !p.real) {
        for (ai, (aname, _)) in allocs.iter().enumerate() {
            let mut rs: Vec<&Run> = results[pi][ai].iter().collect();
            rs.sort_by_key(|r| r.elapsed);
            let r = rs[rs.len() / 2];
            println!(
                "- {} / {aname}: {}",
                p.name,
                String::from_utf8_lossy(&r.stdout).trim()
            );
        }
    }
}

/// For each round (the `r`th run of every allocator), restartable's ([`OURS`])
/// figure over the lowest of the other columns'; rounds where a figure is not
/// positive (no CPU time measured) are left out.
fn per_round_ratios(runs: &[Vec<Run>], f: impl Fn(&Run) -> f64) -> Vec<f64> {
    let rounds = runs.iter().map(Vec::len).min().unwrap_or(0);
    (0..rounds)
        .filter_map(|r| {
            let figures: Vec<f64> = runs.iter().map(|rs| f(&rs[r])).collect();
            if figures.iter().any(|&x| x.is_nan() || x <= 0.0) {
                return None;
            }
            let other = figures
                .iter()
                .enumerate()
                .filter(|&(ai, _)| ai != OURS)
                .map(|(_, &x)| x)
                .fold(f64::INFINITY, f64::min);
            ratio(figures[OURS], other)
        })
        .collect()
}

/// `a / b`, or `None` when either is not a positive number (a CPU time of zero:
/// nothing measured), rather than a NaN or infinity in the tables.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (a > 0.0 && b > 0.0 && (a / b).is_finite()).then(|| a / b)
}

/// A ratio (or CPU seconds) with three decimals, or `n/a` where nothing was measured.
fn show_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_string(), |r| format!("{r:.3}"))
}

fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn uname() -> String {
    let o = Command::new("uname").arg("-srm").output();
    let k = o
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let g = Command::new("ldd").arg("--version").output();
    let g = g
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    format!("{k}; {g}")
}
