//! `rseq info` and `rseq info --json` in every environment: default (libc-owned here),
//! `GLIBC_TUNABLES=glibc.pthread.rseq=0` (library-owned), rseq forced to `ENOSYS` and
//! `EPERM` by a seccomp filter, and under valgrind (which has no rseq). Each must exit
//! 0, report the right registration and reason, and the right CPU: every run is pinned
//! to one allowed CPU with `sched_setaffinity` and `cpu` must be that CPU.

#![cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]

#[path = "../../restartable/tests/support/seccomp.rs"]
mod seccomp;

#[path = "../../restartable/tests/support/child.rs"]
mod child;

use child::OutputWithin as _;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use serde_json::Value;

const RSEQ: &str = env!("CARGO_BIN_EXE_rseq");
const TUNABLES: &str = "GLIBC_TUNABLES";
const RSEQ_OFF: &str = "glibc.pthread.rseq=0";

/// The keys `rseq info --json` promises.
const KEYS: [&str; 8] = [
    "registration",
    "reason",
    "feature_size",
    "cpu",
    "mm_cid",
    "numa_node",
    "possible_cpus",
    "membarrier_rseq",
];

/// Where `rseq info` runs.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// The test's own environment.
    Default,
    /// `GLIBC_TUNABLES=glibc.pthread.rseq=0`.
    RseqTunableOff,
    /// A seccomp filter makes `rseq` fail with this errno, from `exec` on.
    Seccomp(i32),
    /// The filter and the tunable together.
    SeccompTunableOff(i32),
    /// Under `valgrind -q --error-exitcode=99`.
    Valgrind,
}

impl Mode {
    /// The expected `registration` and `reason` values, `None` where the test's
    /// environment cannot tell.
    fn expected(self) -> Option<(&'static str, Option<&'static str>)> {
        let blocked = |errno| match errno {
            libc::ENOSYS => ("unavailable", Some("enosys")),
            libc::EPERM => ("unavailable", Some("eperm")),
            _ => panic!("no test for errno {errno}"),
        };
        match self {
            Mode::Default if glibc_registered() => Some(("libc", None)),
            Mode::Default => None,
            Mode::RseqTunableOff => Some(("library", None)),
            Mode::Seccomp(errno) | Mode::SeccompTunableOff(errno) => Some(blocked(errno)),
            Mode::Valgrind => Some(("unavailable", Some("enosys"))),
        }
    }
}

/// Whether glibc registered rseq in this process (`__rseq_size` exported and non-zero):
/// then a child in the same environment has it registered by glibc too.
fn glibc_registered() -> bool {
    // SAFETY: RTLD_DEFAULT is a valid pseudo-handle and the name is NUL-terminated.
    let size = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()) };
    let size = size as *const u32;
    // SAFETY: where glibc exports it, `__rseq_size` is a `const unsigned int` set
    // before any user code runs.
    !size.is_null() && unsafe { size.read() } != 0
}

fn valgrind_available() -> bool {
    let found = Command::new("valgrind")
        .arg("--version")
        .try_output_within(child::SHORT)
        .is_ok_and(|o| o.status.success());
    if !found {
        child::skip("valgrind is not on PATH: the valgrind checks");
    }
    found
}

/// The CPUs this thread may run on (children inherit the process's mask).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let ret = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    assert_eq!(
        ret,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Runs in the child between `fork` and `exec`: pins it to `cpu` and installs
/// `filter` if any. System calls only (async-signal-safe); `exec` keeps both.
fn prepare_child(cpu: usize, filter: &[libc::sock_filter]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` came from the allowed set, so it is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if filter.is_empty() {
        return Ok(());
    }
    seccomp::install_filter(filter)
}

/// Runs `rseq <args>` in `mode`, pinned to `cpu`; asserts it exited 0.
fn run_rseq(mode: Mode, args: &[&str], cpu: usize) -> Output {
    let mut cmd = match mode {
        Mode::Valgrind => {
            let mut c = Command::new("valgrind");
            c.args(["-q", "--error-exitcode=99", RSEQ]);
            c
        }
        _ => Command::new(RSEQ),
    };
    cmd.args(args);
    if matches!(mode, Mode::RseqTunableOff | Mode::SeccompTunableOff(_)) {
        cmd.env(TUNABLES, RSEQ_OFF);
    }
    let filter = match mode {
        Mode::Seccomp(errno) | Mode::SeccompTunableOff(errno) => seccomp::rseq_errno_filter(errno),
        Mode::Default | Mode::RseqTunableOff | Mode::Valgrind => Vec::new(),
    };
    // SAFETY: the closure only makes system calls and reads `filter`, allocated
    // before the fork: async-signal-safe.
    unsafe {
        cmd.pre_exec(move || prepare_child(cpu, &filter));
    }
    let out = cmd.output_within(child::LONG);
    assert!(
        out.status.success(),
        "`rseq {}` ({mode:?}, CPU {cpu}) failed: {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    out
}

/// At most `max` of the allowed CPUs, spread over the range (first and last included).
fn sample_cpus(max: usize) -> Vec<usize> {
    let cpus = allowed_cpus();
    if cpus.len() <= max {
        return cpus;
    }
    (0..max)
        .map(|i| cpus[i * (cpus.len() - 1) / (max - 1)])
        .collect()
}

/// Runs `rseq info --json` in `mode` pinned to each allowed CPU (a sample of them on
/// big machines; two under valgrind, where a run takes a second), checks the object's
/// keys and types, the registration and reason expected in `mode`, and the CPU.
fn check_info_json(mode: Mode) {
    let max = if matches!(mode, Mode::Valgrind) { 2 } else { 8 };
    for cpu in sample_cpus(max) {
        let out = run_rseq(mode, &["info", "--json"], cpu);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{mode:?}: not JSON ({e}): {stdout}"));
        let ctx = format!("{mode:?}, CPU {cpu}: {v}");
        for key in KEYS {
            assert!(v.get(key).is_some(), "{ctx}: missing key {key}");
        }
        let registration = v["registration"].as_str().expect("registration string");
        assert!(
            ["libc", "library", "unavailable"].contains(&registration),
            "{ctx}"
        );
        let registered = registration != "unavailable";
        // `reason` is a code exactly when rseq is unavailable.
        assert_eq!(v["reason"].is_string(), !registered, "{ctx}: reason");
        assert_eq!(v["reason"].is_null(), registered, "{ctx}: reason");
        if let Some((want, reason)) = mode.expected() {
            assert_eq!(registration, want, "{ctx}: registration");
            assert_eq!(v["reason"].as_str(), reason, "{ctx}: reason");
        }
        let possible = v["possible_cpus"].as_u64().expect("possible_cpus number");
        assert!(possible >= 1, "{ctx}");
        assert_eq!(
            v["cpu"].as_u64(),
            Some(cpu as u64),
            "{ctx}: cpu while pinned"
        );
        assert!(v["feature_size"].as_u64().is_some(), "{ctx}: feature_size");
        assert!(v["numa_node"].as_u64().is_some(), "{ctx}: numa_node");
        match v["mm_cid"].as_u64() {
            Some(cid) => assert!(registered && cid < possible, "{ctx}: mm_cid"),
            None => assert!(v["mm_cid"].is_null(), "{ctx}: mm_cid"),
        }
        if registered {
            // Linux 6.3+ (feature size >= 28) maintains mm_cid for every registration.
            let has_mm_cid = v["feature_size"].as_u64() >= Some(28);
            assert_eq!(v["mm_cid"].is_u64(), has_mm_cid, "{ctx}: mm_cid");
        }
        // Registered in an executable (glibc's area, or the library's own in the
        // executable's static TLS): one offset, never the thread pointer itself.
        match v["area_offset"].as_i64() {
            Some(off) => assert!(registered && off != 0, "{ctx}: area_offset"),
            None => assert!(
                !registered && v["area_offset"].is_null(),
                "{ctx}: area_offset"
            ),
        }
        let fences = v["membarrier_rseq"]
            .as_bool()
            .expect("membarrier_rseq bool");
        assert!(registered || !fences, "{ctx}: fences without rseq");
    }
}

/// Runs plain `rseq info` in `mode`: exits 0, prints the registration (and why when
/// unavailable) and the pinned CPU.
fn check_info_text(mode: Mode) {
    let cpu = *allowed_cpus().last().expect("an allowed CPU");
    let out = run_rseq(mode, &["info"], cpu);
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{mode:?}: no `{name}` line in:\n{text}"))
    };
    let registration = field("registration");
    if !registration.starts_with("unavailable") {
        let area = field("area ");
        assert!(
            area.starts_with("thread pointer ") && area.contains(" in every thread ("),
            "{mode:?}: area line {area:?}"
        );
    }
    assert_eq!(
        field("cpu "),
        cpu.to_string(),
        "{mode:?}: cpu line:\n{text}"
    );
    let Some((want, reason)) = mode.expected() else {
        return;
    };
    assert!(
        registration.starts_with(want),
        "{mode:?}: registration line {registration:?}, want {want}"
    );
    if let Some(reason) = reason {
        // The text names the errno, e.g. "no rseq system call (ENOSYS): ...".
        let errno_name = format!("({})", reason.to_uppercase());
        assert!(
            registration.contains(&errno_name) && registration.len() > want.len() + 10,
            "{mode:?}: registration line {registration:?} should say why ({errno_name})"
        );
        assert!(text.contains("fallback"), "{mode:?}: note line:\n{text}");
    }
}

#[test]
fn info_default_environment_reports_libc_registration() {
    check_info_json(Mode::Default);
    check_info_text(Mode::Default);
}

#[test]
fn info_with_rseq_tunable_off_reports_library_registration() {
    check_info_json(Mode::RseqTunableOff);
    check_info_text(Mode::RseqTunableOff);
}

#[test]
fn info_under_seccomp_enosys_reports_unavailable_enosys() {
    for mode in [
        Mode::Seccomp(libc::ENOSYS),
        Mode::SeccompTunableOff(libc::ENOSYS),
    ] {
        check_info_json(mode);
        check_info_text(mode);
    }
}

#[test]
fn info_under_seccomp_eperm_reports_unavailable_eperm() {
    for mode in [
        Mode::Seccomp(libc::EPERM),
        Mode::SeccompTunableOff(libc::EPERM),
    ] {
        check_info_json(mode);
        check_info_text(mode);
    }
}

#[test]
fn info_under_valgrind_reports_unavailable_enosys() {
    if !valgrind_available() {
        return;
    }
    check_info_json(Mode::Valgrind);
    check_info_text(Mode::Valgrind);
}

/// `RESTARTABLE_OWN_AREA=thread-local` (library-owned): the area line says that the
/// variable chose the thread-local path, not that `rseq` is a shared object (what it
/// said before the audit).
#[test]
fn info_names_the_variable_that_chose_the_thread_local_path() {
    let o = Command::new(RSEQ)
        .arg("info")
        .env(TUNABLES, RSEQ_OFF)
        .env("RESTARTABLE_OWN_AREA", "thread-local")
        .output_within(child::SHORT);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    if !out.contains("registration     library") {
        child::skip(format!(
            "the library did not register its own area here:\n{out}"
        ));
        return;
    }
    let area = out
        .lines()
        .find(|l| l.starts_with("area "))
        .unwrap_or_else(|| panic!("no area line:\n{out}"));
    assert!(
        area.contains("RESTARTABLE_OWN_AREA=thread-local") && area.contains("thread-local pointer"),
        "{area}"
    );
}

/// The keys that `rseq info --help` documents for `--json` are the keys it prints.
#[test]
fn json_keys_are_the_documented_ones() {
    let help = Command::new(RSEQ)
        .args(["info", "--help"])
        .output_within(child::SHORT);
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let list = help
        .split("Its keys:")
        .nth(1)
        .unwrap_or_else(|| panic!("no key list in:\n{help}"));
    let list = &list[..list.find("\n\n").unwrap_or(list.len())];
    // Each key is the first word of a comma-separated item (its note in brackets).
    let mut documented: Vec<String> = Vec::new();
    let mut depth = 0;
    let mut item = String::new();
    for c in list.chars().chain(std::iter::once(',')) {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '.' if depth == 0 => {
                if let Some(word) = item.split_whitespace().next() {
                    documented.push(word.to_string());
                }
                item.clear();
            }
            _ if depth == 0 => item.push(c),
            _ => {}
        }
    }
    documented.sort();
    let out = Command::new(RSEQ)
        .args(["info", "--json"])
        .output_within(child::SHORT);
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut printed: Vec<String> = json
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    printed.sort();
    assert_eq!(documented, printed, "help:\n{help}");
}
