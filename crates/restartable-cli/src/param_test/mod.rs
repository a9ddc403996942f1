//! `rseq param-test`: the reference rseq stress test (the kernel selftests' and
//! librseq's `param_test`), flag for flag, run on this library's containers and ops
//! with the test hooks compiled in (delay injection, statistics, compare-twice).
//!
//! # Flags
//! The reference's flags, with its defaults and meanings:
//!
//! | flag | meaning |
//! |------|---------|
//! | `-1` .. `-9 N` | delay loops at injection point N (see [`restartable::hooks`]); at 7-9, `-1` enables the `-m` events |
//! | `-m N` | the events (yield / sleep / signal) every N-th time (0: never) |
//! | `-y` | event: yield (and, in the list/buffer/memcpy tests, yield between pop and push) |
//! | `-k` | event: send the thread `SIGUSR1` (a handler counts deliveries) |
//! | `-s MS` | event: sleep MS milliseconds |
//! | `-t N` | threads (default 200) |
//! | `-r N` | repetitions per thread (default 5000) |
//! | `-d` | no rseq at all: every thread runs on the containers' fallback paths |
//! | `-D M` | every M-th thread (0, M, 2M, ...) without rseq |
//! | `-T s\|l\|b\|m\|i\|r` | spinlock (default), list, buffer, memcpy, increment, membarrier |
//! | `-M` | buffer and memcpy push with release ordering |
//! | `-c` | only check: exit 0 when rseq is available, 2 when not |
//! | `-v` | verbose: per-thread commits, aborts, compare failures, fallbacks, signals |
//! | `-h` | usage |
//!
//! and four of our own: `--mm-cid` (index per-CPU data by mm_cid, the reference's
//! `param_test_mm_cid` build; exit 2 where mm_cid is unavailable), `--compare-twice`
//! (the reference's `param_test_compare_twice` build), `--migrate` (one more `-m`
//! event: the thread moves to another allowed CPU and stays pinned there until its
//! sequence's outcome, then gets its mask back, see [`hooks::set_migrate`]; a usage
//! error unless `-m N` > 0 and one of `-7`, `-8`, `-9` is -1; `-v` then counts the
//! moves; with one allowed CPU nothing moves, and a note on stderr says so) and the hidden `--break-cpu-check` (the sequences skip their CPU check: a
//! deliberately broken build, which the stress test must catch; `--migrate` at
//! point 7 makes every event a stale CPU for it).
//!
//! # Exit codes
//! 0 success; 1 a failed check (stderr says what was expected and what was found) or
//! bad usage (usage on stderr); 2 "skip": rseq (or, with `--mm-cid`, mm_cid) is
//! unavailable to the main thread, as the reference. `-c` exits 0 or 2 without
//! running anything; with `--mm-cid` it checks rseq *and* mm_cid, so a driver can use
//! `-c --mm-cid` to decide whether the mm_cid build would skip.
//!
//! # Differences from the reference, on purpose
//! - Options are parsed in full before anything runs (the reference acts on `-c` and
//!   `-h` as soon as it meets them); any bad option anywhere is a usage error.
//! - `-d` where glibc owns the registration: the reference's `-d` only skips its own
//!   registration call, so under glibc (which registered every thread) it still runs
//!   on rseq. Here `-d` means what it says: the command re-executes itself with
//!   `GLIBC_TUNABLES=glibc.pthread.rseq=0` (added to any tunables already set) so
//!   that the library owns registrations, and every thread then opts out with
//!   `disable_current_thread()`.
//! - `-D M` where glibc owns the registration has no effect, as in the reference
//!   (glibc registered every thread; not registering again changes nothing); `-v`
//!   says so on stderr. Where the library owns registrations (the tunable above,
//!   musl, old glibc), every M-th thread opts out. The reference applies `-D` to the
//!   spinlock and increment tests only, because its list and buffers have no path for
//!   a thread without rseq; this library's containers have a shared fallback path, so
//!   `-D` (and `-d`) apply to every container test here, which exercises mixed mode.
//!   The membarrier test's workers always use rseq (the reference registers them
//!   regardless of `-d` and `-D`), since its op has no fallback.
//! - Failures exit 1 with a message instead of `abort()`; a compare-twice mismatch
//!   still aborts the process (the library's hook does), as the reference.
//! - The list, buffer and memcpy items carry distinct values, so the end check proves
//!   every item came back exactly once (and, for memcpy, intact), not only the sum.

mod workloads;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, ArgMatches, Args};
use restartable::hooks::{self, Stats};
use restartable::registration::{self, DisableError};
use restartable::{IndexBy, Owner};

/// Arguments of `rseq param-test`: taken raw and parsed here with a clap `Command`
/// shaped like the reference's options (digit flags, negative values, `-h`), so that
/// usage errors exit 1 with the usage text, as the reference does.
#[derive(Args, Debug)]
pub struct ParamTestArgs {
    /// The reference stress test's options (`-h` lists them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<OsString>,
}

/// The environment variable and value that make glibc leave registration to us.
const TUNABLES: &str = "GLIBC_TUNABLES";
const RSEQ_OFF: &str = "glibc.pthread.rseq=0";

/// The test types of `-T`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TestType {
    /// `s`: a per-CPU spinlock protecting per-CPU counts.
    Spinlock,
    /// `l`: per-CPU linked lists, pop and push back.
    List,
    /// `b`: per-CPU arrays of boxed nodes, pop and push back.
    Buffer,
    /// `m`: per-CPU arrays of items copied in and out, pop and push back.
    Memcpy,
    /// `i`: a per-CPU counter.
    Increment,
    /// `r`: swapping the per-CPU list array that workers increment, with fences.
    Membarrier,
}

impl TestType {
    /// The test named by `-T`'s value (the reference's letter, or its full name).
    fn from_arg(s: &str) -> Option<TestType> {
        Some(match s {
            "s" | "spinlock" => TestType::Spinlock,
            "l" | "list" => TestType::List,
            "b" | "buffer" => TestType::Buffer,
            "m" | "memcpy" => TestType::Memcpy,
            "i" | "increment" => TestType::Increment,
            "r" | "membarrier" => TestType::Membarrier,
            _ => return None,
        })
    }

    /// The name the reference prints with `-v`.
    fn name(self) -> &'static str {
        match self {
            TestType::Spinlock => "spinlock",
            TestType::List => "linked list",
            TestType::Buffer => "buffer",
            TestType::Memcpy => "memcpy buffer",
            TestType::Increment => "counter increment",
            TestType::Membarrier => "membarrier",
        }
    }

    /// Whether `-d` / `-D` apply to this test's worker threads.
    fn honours_disable(self) -> bool {
        self != TestType::Membarrier
    }
}

/// Everything the options select.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// `-1`..`-9`: delay loops per injection point (index 0 unused).
    pub loops: [i32; hooks::POINTS],
    /// `-m`: events every N-th time (0: never).
    pub modulo: i64,
    /// `-y`: the event yields (and the list/buffer tests yield between pop and push).
    pub yield_now: bool,
    /// `-k`: the event sends the thread `SIGUSR1`.
    pub signal: bool,
    /// `-s`: the event sleeps this many milliseconds (0: no sleep).
    pub sleep_ms: i32,
    /// `-t`: worker threads.
    pub threads: usize,
    /// `-r`: repetitions per worker thread.
    pub reps: u64,
    /// `-d`: no thread uses rseq.
    pub disable_rseq: bool,
    /// `-D`: every M-th worker thread does not use rseq (0: none).
    pub disable_mod: u64,
    /// `-T`: the test type.
    pub test: TestType,
    /// `-M`: buffer and memcpy pushes commit with release ordering.
    pub release: bool,
    /// `-c`: only report whether rseq is available.
    pub check: bool,
    /// `-v`: per-thread statistics and totals on stdout.
    pub verbose: bool,
    /// `--mm-cid`: per-CPU data indexed by mm_cid.
    pub mm_cid: bool,
    /// `--compare-twice`: the hooks re-check before every commit.
    pub compare_twice: bool,
    /// `--migrate`: the `-m` events move the thread to another allowed CPU.
    pub migrate: bool,
    /// `--break-cpu-check` (hidden): the hooks skip the CPU check.
    pub break_cpu_check: bool,
}

impl Options {
    /// The index mode of the per-CPU data.
    pub fn index(&self) -> IndexBy {
        if self.mm_cid {
            IndexBy::MmCid
        } else {
            IndexBy::Cpu
        }
    }
}

/// What the command line asks for.
enum Parsed {
    /// `-h`: print the usage and exit 0.
    Help,
    /// Run (or, with `-c`, check) with these options.
    Run(Options),
}

/// Clap ids of the injection-point options, by point number (0 unused).
const POINT_IDS: [&str; hooks::POINTS] = ["", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// The usage text, in the reference's layout plus our switches.
fn usage() -> String {
    let mut u = String::from("Usage : rseq param-test <OPTIONS>\nOPTIONS:\n");
    for n in 1..=9 {
        let extra = if n >= 7 { " (-1 to enable -m)" } else { "" };
        u += &format!("\t[-{n} loops] Number of loops for delay injection {n}{extra}\n");
    }
    u += "\t[-m N] Yield/sleep/kill every modulo N (default 0: disabled) (>= 0)\n\
          \t[-y] Yield\n\
          \t[-k] Kill thread with signal\n\
          \t[-s S] S: =0: disabled (default), >0: sleep time (ms)\n\
          \t[-t N] Number of threads (default 200)\n\
          \t[-r N] Number of repetitions per thread (default 5000)\n\
          \t[-d] Disable rseq system call (no initialization)\n\
          \t[-D M] Disable rseq for each M threads\n\
          \t[-T test] Choose test: (s)pinlock, (l)ist, (b)uffer, (m)emcpy, (i)ncrement, membarrie(r)\n\
          \t[-M] Push into buffer and memcpy buffer with memory barriers.\n\
          \t[-c] Check if the rseq syscall is available.\n\
          \t[-v] Verbose output.\n\
          \t[-h] Show this help.\n\
          \t[--mm-cid] Index per-CPU data by mm_cid (exit 2 if unavailable; with -c: check rseq and mm_cid).\n\
          \t[--compare-twice] Re-check the CPU and compared values before each commit.\n\
          \t[--migrate] -m event: move the thread to another allowed CPU, pinned there until its\n\
          \t           sequence ends (needs -m N > 0 and -7, -8 or -9 at -1; -v counts the moves;\n\
          \t           no effect, with a note on stderr, where one CPU is allowed).\n\
          \n\
          Exit status: 0 success, 1 failed check or bad usage, 2 rseq (or mm_cid) unavailable.\n";
    u
}

/// The clap command for the reference's options.
fn command() -> clap::Command {
    let mut cmd = clap::Command::new("param-test")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .args_override_self(true);
    for (n, id) in POINT_IDS.iter().enumerate().skip(1) {
        cmd = cmd.arg(
            Arg::new(*id)
                .short(char::from(b'0' + n as u8))
                .value_name("loops")
                .allow_negative_numbers(true)
                .value_parser(clap::value_parser!(i32)),
        );
    }
    let number = |id: &'static str, short: char, name: &'static str| {
        Arg::new(id)
            .short(short)
            .value_name(name)
            .allow_negative_numbers(true)
            .value_parser(clap::value_parser!(i64))
    };
    let flag = |id: &'static str, short: char| Arg::new(id).short(short).action(ArgAction::SetTrue);
    let long = |id: &'static str| Arg::new(id).long(id).action(ArgAction::SetTrue);
    cmd.arg(number("modulo", 'm', "N"))
        .arg(number("sleep", 's', "S"))
        .arg(number("threads", 't', "N"))
        .arg(number("reps", 'r', "N"))
        .arg(number("disable-mod", 'D', "M"))
        .arg(Arg::new("test").short('T').value_name("test"))
        .arg(flag("yield", 'y'))
        .arg(flag("kill", 'k'))
        .arg(flag("disable", 'd'))
        .arg(flag("release", 'M'))
        .arg(flag("check", 'c'))
        .arg(flag("verbose", 'v'))
        .arg(flag("help", 'h').long("help"))
        .arg(long("mm-cid"))
        .arg(long("compare-twice"))
        .arg(long("migrate"))
        .arg(long("break-cpu-check").hide(true))
}

/// Parses the options; `Err` is the message for a usage error.
fn parse(args: &[OsString]) -> Result<Parsed, String> {
    let m: ArgMatches = command().try_get_matches_from(args).map_err(|e| {
        // clap's first line says what is wrong; its usage hint would name an
        // option set we do not use (`--help`): ours is printed instead.
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("invalid arguments");
        first.trim_start_matches("error: ").to_string()
    })?;
    if m.get_flag("help") {
        return Ok(Parsed::Help);
    }
    let non_negative = |id: &str, what: &str| -> Result<Option<i64>, String> {
        match m.get_one::<i64>(id).copied() {
            Some(v) if v < 0 => Err(format!("{what} must be >= 0, got {v}")),
            v => Ok(v),
        }
    };
    let mut loops = [0i32; hooks::POINTS];
    for (n, id) in POINT_IDS.iter().enumerate().skip(1) {
        if let Some(v) = m.get_one::<i32>(id) {
            loops[n] = *v;
        }
    }
    let modulo = non_negative("modulo", "-m")?.unwrap_or(0);
    let sleep_ms = non_negative("sleep", "-s")?.unwrap_or(0);
    let sleep_ms = i32::try_from(sleep_ms).map_err(|_| format!("-s {sleep_ms}: too large"))?;
    let threads = non_negative("threads", "-t")?.unwrap_or(200) as usize;
    let reps = non_negative("reps", "-r")?.unwrap_or(5000) as u64;
    let disable_mod = non_negative("disable-mod", "-D")?.unwrap_or(0) as u64;
    let migrate = m.get_flag("migrate");
    if migrate && (modulo == 0 || !loops[7..=9].contains(&-1)) {
        return Err(
            "--migrate is an -m event: it needs -m N (N > 0) and -7, -8 or -9 at -1".to_string(),
        );
    }
    let test = match m.get_one::<String>("test") {
        None => TestType::Spinlock,
        Some(t) => TestType::from_arg(t)
            .ok_or_else(|| format!("-T {t}: unknown test (expected s, l, b, m, i or r)"))?,
    };
    Ok(Parsed::Run(Options {
        loops,
        modulo,
        yield_now: m.get_flag("yield"),
        signal: m.get_flag("kill"),
        sleep_ms,
        threads,
        reps,
        disable_rseq: m.get_flag("disable"),
        disable_mod,
        test,
        release: m.get_flag("release"),
        check: m.get_flag("check"),
        verbose: m.get_flag("verbose"),
        mm_cid: m.get_flag("mm-cid"),
        compare_twice: m.get_flag("compare-twice"),
        migrate,
        break_cpu_check: m.get_flag("break-cpu-check"),
    }))
}

/// Runs `rseq param-test`.
pub fn run(args: &ParamTestArgs) -> ExitCode {
    let opts = match parse(&args.args) {
        Ok(Parsed::Help) => {
            out!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Run(o)) => o,
        Err(msg) => {
            err!("{}", usage());
            errln!("rseq param-test: {msg}");
            return ExitCode::from(1);
        }
    };

    if opts.check {
        let status = restartable::status();
        let ok = status.is_registered() && (!opts.mm_cid || status.mm_cid);
        if opts.verbose {
            match (status.is_registered(), opts.mm_cid && !status.mm_cid) {
                (false, _) => outln!("The rseq syscall is unavailable ({status})."),
                (true, true) => outln!("The rseq syscall is available, mm_cid is not."),
                (true, false) => outln!("The rseq syscall is available."),
            }
        }
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        };
    }

    if opts.disable_rseq && registration::process_owner() == Some(Owner::Libc) {
        return reexec_without_glibc_rseq();
    }

    if let Err(e) = install_signal_handler() {
        errln!("rseq param-test: sigaction(SIGUSR1): {e}");
        return ExitCode::from(1);
    }
    if opts.verbose {
        outln!("Signal handler set for SIGUSR1");
    }

    if opts.disable_rseq {
        if let Err(e) = registration::disable_current_thread() {
            errln!("rseq param-test: -d: cannot disable rseq on the main thread: {e}");
            return ExitCode::from(1);
        }
    } else {
        let status = restartable::status();
        if !status.is_registered() {
            if opts.verbose {
                outln!("The rseq cpu id getter is unavailable");
            }
            errln!("rseq param-test: skipped: {status}");
            return ExitCode::from(2);
        }
        if opts.mm_cid && !status.mm_cid {
            if opts.verbose {
                outln!("The rseq mm_cid getter is unavailable");
            }
            errln!("rseq param-test: skipped: --mm-cid but {status}");
            return ExitCode::from(2);
        }
    }
    if opts.disable_mod > 0 && opts.verbose && registration::process_owner() == Some(Owner::Libc) {
        errln!(
            "rseq param-test: note: -D {} has no effect: glibc owns the rseq registration of \
             every thread (as with the reference); set {TUNABLES}={RSEQ_OFF} to let the library \
             own registrations",
            opts.disable_mod
        );
    }
    if opts.migrate {
        let cpus = restartable::allowed_cpus().map_or(0, |c| c.len());
        if cpus < 2 {
            errln!(
                "rseq param-test: note: --migrate has no effect: {cpus} allowed CPU(s), no \
                 other CPU to move a thread to (-v counts 0 migrations)"
            );
        }
    }

    if opts.verbose {
        outln!("{}", opts.test.name());
    }
    let started = Instant::now();
    let ctx = Context::new(&opts);
    let result = std::thread::scope(|s| {
        let progress = ctx.show_progress.then(|| s.spawn(|| ctx.progress_loop()));
        let r = workloads::run(&ctx);
        ctx.stop.store(true, Ordering::Relaxed);
        if let Some(p) = progress {
            let _ = p.join();
        }
        r
    });
    let failures = ctx.take_failures();
    let outcome = match result {
        Ok(()) if failures.is_empty() => None,
        Ok(()) => Some(failures),
        Err(e) => Some(failures.into_iter().chain(std::iter::once(e)).collect()),
    };
    if opts.verbose {
        ctx.print_totals(started.elapsed());
    }
    match outcome {
        None => ExitCode::SUCCESS,
        Some(msgs) => {
            for m in msgs {
                errln!(
                    "rseq param-test: -T {}: FAILED: {m}",
                    test_letter(opts.test)
                );
            }
            ExitCode::from(1)
        }
    }
}

/// The `-T` letter of a test type, for messages.
fn test_letter(t: TestType) -> char {
    match t {
        TestType::Spinlock => 's',
        TestType::List => 'l',
        TestType::Buffer => 'b',
        TestType::Memcpy => 'm',
        TestType::Increment => 'i',
        TestType::Membarrier => 'r',
    }
}

/// `-d` where glibc owns the registration: run this same command again with glibc's
/// rseq registration turned off, so the library owns registrations and threads can
/// opt out. Returns only on failure.
fn reexec_without_glibc_rseq() -> ExitCode {
    let current = std::env::var_os(TUNABLES);
    if current
        .as_deref()
        .and_then(|v| v.to_str())
        .is_some_and(|v| v.split(':').any(|t| t == RSEQ_OFF))
    {
        errln!(
            "rseq param-test: -d: glibc still owns rseq registrations although {TUNABLES} \
             contains {RSEQ_OFF}; cannot run without rseq"
        );
        return ExitCode::from(1);
    }
    let value = match current {
        Some(v) if !v.is_empty() => {
            let mut v = v;
            v.push(":");
            v.push(RSEQ_OFF);
            v
        }
        _ => OsString::from(RSEQ_OFF),
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            errln!("rseq param-test: -d: cannot find this executable to re-run it: {e}");
            return ExitCode::from(1);
        }
    };
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(TUNABLES, value)
        .exec();
    errln!("rseq param-test: -d: cannot re-execute with {TUNABLES}={RSEQ_OFF}: {err}");
    ExitCode::from(1)
}

/// Sets the library's process-global test hooks from the options.
fn configure_hooks(opts: &Options) {
    hooks::reset();
    for n in 1..hooks::POINTS {
        hooks::set_loops(n, opts.loops[n]);
    }
    hooks::set_events(
        opts.modulo,
        opts.sleep_ms,
        opts.yield_now,
        if opts.signal { libc::SIGUSR1 } else { 0 },
    );
    hooks::set_compare_twice(opts.compare_twice);
    hooks::set_migrate(opts.migrate);
    // SAFETY: `--break-cpu-check` (hidden) asks for the deliberately broken sequence:
    // this process exists to show that the stress test catches it, and exits with the
    // failure it reports. Without the flag the switch stays off, which is always sound.
    unsafe { hooks::set_skip_cpu_check(opts.break_cpu_check) };
}

thread_local! {
    /// `SIGUSR1` deliveries to this thread (`-k`).
    static SIGNALS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The `SIGUSR1` handler: counts the delivery on the receiving thread.
extern "C" fn on_sigusr1(_signo: libc::c_int) {
    // A const-initialized thread-local without destructor: a plain TLS access, safe
    // in a signal handler.
    let _ = SIGNALS.try_with(|c| c.set(c.get() + 1));
}

/// Installs the `SIGUSR1` handler that `-k` relies on (always, as the reference).
fn install_signal_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed `sigaction` is a valid starting value; the handler only touches
    // a const-initialized thread-local; the pointers passed are valid.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What each worker thread reports when it ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ThreadReport {
    /// Whether the thread had rseq at its end.
    pub rseq: bool,
    /// Its sequence outcomes ([`hooks::thread_stats`]).
    pub stats: Stats,
    /// Its sequences after a forced move ([`hooks::thread_migrations`]).
    pub migrations: u64,
    /// `SIGUSR1` deliveries it received.
    pub signals: u64,
}

/// Shared state of one run: options, failures, progress and per-thread reports.
pub(crate) struct Context<'o> {
    /// The options of the run.
    pub opts: &'o Options,
    failures: Mutex<Vec<String>>,
    reports: Mutex<Vec<ThreadReport>>,
    /// Repetitions done, counted in chunks when a progress line is shown.
    pub progress: AtomicU64,
    /// Whether a progress line is shown (stderr is a terminal).
    pub show_progress: bool,
    /// Tells the progress thread to stop.
    stop: AtomicBool,
}

/// Repetitions between two progress updates of one worker.
pub(crate) const PROGRESS_CHUNK: u64 = 64;

impl<'o> Context<'o> {
    /// A fresh context for `opts`.
    fn new(opts: &'o Options) -> Self {
        Context {
            opts,
            failures: Mutex::new(Vec::new()),
            reports: Mutex::new(Vec::new()),
            progress: AtomicU64::new(0),
            show_progress: std::io::stderr().is_terminal(),
            stop: AtomicBool::new(false),
        }
    }

    /// Records a failed check (the run goes on, and exits 1 at the end).
    pub fn fail(&self, msg: String) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg);
    }

    /// Whether a failure was recorded.
    pub fn failed(&self) -> bool {
        !self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The failures recorded so far, emptied.
    fn take_failures(&self) -> Vec<String> {
        std::mem::take(&mut *self.failures.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Called by a worker after `done` repetitions: every [`PROGRESS_CHUNK`], counts
    /// them towards the progress line (when there is one).
    #[inline]
    pub fn advance(&self, done: u64) {
        if self.show_progress && done > 0 && done.is_multiple_of(PROGRESS_CHUNK) {
            self.progress.fetch_add(PROGRESS_CHUNK, Ordering::Relaxed);
        }
    }

    /// Prepares the calling worker thread: opts out of rseq for `-d` and every `-D`-th
    /// thread (where the test honours them), and clears its statistics.
    pub fn enter_worker(&self, index: usize) {
        let o = self.opts;
        if o.test.honours_disable()
            && (o.disable_rseq
                || (o.disable_mod > 0 && (index as u64).is_multiple_of(o.disable_mod)))
        {
            match registration::disable_current_thread() {
                // -D under glibc: moot, as the reference (noted once by `run`).
                Ok(()) | Err(DisableError::LibcOwned) => {}
                Err(e) => self.fail(format!("thread {index}: cannot disable rseq: {e}")),
            }
        }
        hooks::reset_thread_stats();
        let _ = SIGNALS.try_with(|c| c.set(0));
    }

    /// Records the calling worker's statistics; prints them with `-v`.
    pub fn leave_worker(&self, index: usize) {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        let report = ThreadReport {
            rseq: restartable::status().is_registered(),
            stats: hooks::thread_stats(),
            migrations: hooks::thread_migrations(),
            signals: SIGNALS.try_with(|c| c.get()).unwrap_or(0),
        };
        if self.opts.verbose {
            let s = report.stats;
            outln!(
                "thread {index} (tid {tid}, {}): commits {}, aborts {}, compare failures {}, \
                 fallbacks {}, signals delivered {}{}",
                if report.rseq { "rseq" } else { "no rseq" },
                s.commits,
                s.aborts,
                s.compare_failures,
                s.fallbacks,
                report.signals,
                self.migrations(report.migrations)
            );
        }
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(report);
    }

    /// Prints the totals over every worker (`-v`).
    fn print_totals(&self, elapsed: Duration) {
        let reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = Stats::default();
        let mut signals = 0;
        let mut migrations = 0;
        let mut without = 0;
        for r in reports.iter() {
            total += r.stats;
            migrations += r.migrations;
            signals += r.signals;
            without += usize::from(!r.rseq);
        }
        outln!(
            "total: {} threads ({} without rseq), {} reps each: commits {}, aborts {}, \
             compare failures {}, fallbacks {}, signals delivered {}{}; {:.3} s",
            reports.len(),
            without,
            self.opts.reps,
            total.commits,
            total.aborts,
            total.compare_failures,
            total.fallbacks,
            signals,
            self.migrations(migrations),
            elapsed.as_secs_f64()
        );
    }

    /// The `-v` count of forced moves, with `--migrate` only.
    fn migrations(&self, moves: u64) -> String {
        if self.opts.migrate {
            format!(", migrations {moves}")
        } else {
            String::new()
        }
    }

    /// Shows a progress line on stderr (a terminal) until the run stops; the first
    /// line appears after one second, so short runs print nothing.
    fn progress_loop(&self) {
        let total = (self.opts.threads as u64).saturating_mul(self.opts.reps);
        let start = Instant::now();
        let mut shown = false;
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            let t = start.elapsed();
            if t < Duration::from_secs(1) {
                continue;
            }
            let done = self.progress.load(Ordering::Relaxed).min(total);
            let pct = (done * 100).checked_div(total).unwrap_or(100);
            err!(
                "\r\x1b[Kparam-test {}: {pct}% ({done}/{total} reps), {:.1} s",
                self.opts.test.name(),
                t.as_secs_f64()
            );
            shown = true;
        }
        if shown {
            err!("\r\x1b[K");
        }
    }
}
