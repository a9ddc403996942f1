//! `PerCpuAlloc<TestHooks>` as the global allocator: the pattern stress with delay
//! injection inside the allocator's sequences, compare-twice, migration, yields and
//! signal storms; forward progress when every attempt aborts; and a positive control
//! showing that the stress's checks catch a broken sequence.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::child::{marker, role, run_child_with};
use restartable::hooks::{self, TestHooks};
use restartable_alloc::PerCpuAlloc;

#[global_allocator]
static A: PerCpuAlloc<TestHooks> = PerCpuAlloc::with_hooks();

/// The hooks are process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

extern "C" fn ignore(_: libc::c_int) {}

fn install_handler(sig: libc::c_int) {
    // SAFETY: (test) a zeroed sigaction with a handler that does nothing is valid.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
    }
}

/// The two CPUs [`migrate_on_signal`] moves [`MOVER`] between (allowed CPUs, set
/// before the handler is installed).
static MIGRATE_TO: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
/// The thread id of the one thread the handler moves (0: none).
static MOVER: AtomicI32 = AtomicI32::new(0);

/// Moves the interrupted thread, if it is [`MOVER`], to the other of two CPUs
/// (async-signal-safe: only system calls). `sched_setaffinity` on the calling thread
/// returns on the new CPU.
extern "C" fn migrate_on_signal(_: libc::c_int) {
    // SAFETY: (test) gettid has no preconditions.
    if unsafe { libc::gettid() } != MOVER.load(Ordering::Relaxed) {
        return;
    }
    let (a, b) = (
        MIGRATE_TO[0].load(Ordering::Relaxed),
        MIGRATE_TO[1].load(Ordering::Relaxed),
    );
    // SAFETY: (test) sched_getcpu only reads.
    let now = unsafe { libc::sched_getcpu() };
    let to = if now == a as i32 { b } else { a };
    // SAFETY: (test) a valid set for this thread; `to` is an allowed CPU.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(to, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}

fn install_migrating_handler(sig: libc::c_int) {
    // SAFETY: (test) a zeroed sigaction with a handler that only makes system calls.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = migrate_on_signal as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
    }
}

/// Signals every stress worker, and moves one to a random allowed CPU.
fn storm(r: &mut common::Rng, cpus: &[usize]) {
    let workers = common::WORKERS.lock().unwrap();
    for &(_, pt) in workers.iter() {
        // SAFETY: (test) workers leave the list (under this lock) before exiting.
        unsafe { libc::pthread_kill(pt, libc::SIGUSR1) };
    }
    if let Some(&(tid, _)) = workers.get(r.below(workers.len().max(1) as u64) as usize) {
        let cpu = cpus[r.below(cpus.len() as u64) as usize];
        // SAFETY: (test) a valid CPU set for an existing thread (or an error).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set);
        }
    }
}

#[test]
fn stress_with_injection_migration_yields_and_signals() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if role().is_some() {
        return;
    }
    install_handler(libc::SIGUSR1);
    for point in 1..=6 {
        hooks::set_loops(point, 200);
    }
    hooks::set_loops(9, -1);
    hooks::set_events(500, 0, true, libc::SIGUSR1);
    hooks::set_compare_twice(true);
    let start = Instant::now();
    let mut r = common::Rng::new(3);
    let cpus = common::allowed_cpus();
    let mut rounds = 0;
    // Until aborts were seen in the allocator's sequences (certain with delays inside
    // them and signals every 500 operations; bounded for a loaded machine).
    while common::ABORTS.load(Ordering::Relaxed) == 0 || rounds == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no abort seen in 90 s of signal storms"
        );
        let n = common::stress(6 * common::nproc(), Duration::from_secs(2), || {
            storm(&mut r, &cpus)
        });
        assert!(n > 1000);
        rounds += 1;
    }
    hooks::reset();
    println!(
        "{rounds} rounds: {} commits, {} aborts",
        common::COMMITS.load(Ordering::Relaxed),
        common::ABORTS.load(Ordering::Relaxed)
    );
    assert!(common::COMMITS.load(Ordering::Relaxed) > 0);
}

#[test]
fn every_attempt_aborting_still_allocates() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if role().is_some() {
        return;
    }
    install_handler(libc::SIGTRAP);
    let mut r = common::Rng::new(11);
    // Warm up: this thread registered, caches set up.
    drop(std::hint::black_box(Box::new(1u64)));
    hooks::reset_thread_stats();
    hooks::set_trap(true);
    let mut objs = Vec::with_capacity(100);
    for i in 0..100 {
        objs.push(common::new_obj(common::random_layout(&mut r)));
        if i % 3 == 0 {
            let k = r.below(objs.len() as u64) as usize;
            common::check_and_free(objs.swap_remove(k));
        }
    }
    for o in objs.drain(..) {
        common::check_and_free(o);
    }
    hooks::set_trap(false);
    let st = hooks::thread_stats();
    drop(objs);
    println!("trap: {st:?}");
    assert_eq!(st.commits, 0, "a sequence committed through int3: {st:?}");
    assert!(
        st.aborts >= restartable_alloc::front::MAX_ABORTS as u64,
        "the allocator did not try its sequences: {st:?}"
    );
}

/// Stale pops the broken child tries, counted only while the pinned thread was
/// making progress at the same time (see `a_broken_sequence_is_caught`), before it
/// gives up. Far above what it needs: it reports how many it took (from 1 to 204,
/// median about 25, in 46 runs on the 2-CPU development machine, loaded).
const STALE_POPS: u64 = 2_000;

/// Stale pops the mover of the broken child has counted so far.
static STALE: AtomicU64 = AtomicU64::new(0);
/// Operations of the pinned thread of the broken child.
static PINNED_OPS: AtomicU64 = AtomicU64::new(0);
/// Set when the broken child's threads are to stop (one finished or failed).
static STOP: AtomicBool = AtomicBool::new(false);
/// Set once the broken child's sequences are broken (hooks set): its threads start
/// then, so that no pop made before counts towards [`STALE_POPS`].
static GO: AtomicBool = AtomicBool::new(false);

/// Waits for [`GO`] (or [`STOP`]).
fn wait_for_go() {
    while !GO.load(Ordering::Acquire) && !STOP.load(Ordering::Relaxed) {
        std::thread::yield_now();
    }
}
/// Set when a check of the broken child failed: the threads then leak what they
/// hold (freeing objects of a corrupted cache could do anything).
static FAILED: AtomicBool = AtomicBool::new(false);

/// Sets [`STOP`] when dropped: a thread that ends stops the other.
struct StopOnDrop;
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        STOP.store(true, Ordering::Relaxed);
    }
}

/// Objects held by a thread of the broken child: the last 16 it allocated, checked
/// (by the stress's own checks) and freed as they are replaced.
struct Held(Vec<Option<common::Obj>>, usize);
impl Held {
    fn new() -> Self {
        Held((0..16).map(|_| None).collect(), 0)
    }
    fn keep(&mut self, o: common::Obj) {
        let i = self.1;
        self.1 = (i + 1) % self.0.len();
        if let Some(old) = self.0[i].replace(o) {
            common::check_and_free(old);
        }
    }
    fn free_all(&mut self) {
        if FAILED.load(Ordering::Relaxed) {
            return;
        }
        for o in self.0.iter_mut().filter_map(Option::take) {
            common::check_and_free(o);
        }
    }
}

/// The positive control: with the sequences' CPU check skipped, the allocator hands
/// an object out twice, and the stress's checks (`common::check_and_free`) say so.
///
/// Every attempt is set up to race, and the attempts are counted, not timed. In a
/// child whose caches are indexed by CPU: one thread is pinned to CPU `a` and
/// allocates and frees 64-byte objects there (slot `a`); the other, the mover,
/// allocates 64-byte objects too, and a signal
/// between reading its CPU and the sequence (injection point 9) moves it to the other
/// CPU: an allocation that starts on `a` pops from slot `a` while running on `b`,
/// with a delay loop between its compare and its commit (point 3), while the pinned
/// thread pops from the same slot on `a`. Two such pops that overlap take the same
/// object. The child stops at the first failed check, or after [`STALE_POPS`] stale
/// pops from slot `a` during which the pinned thread made progress (so both ran at
/// once): a bound on attempts, not on time, that a loaded machine only makes slower
/// to reach.
#[test]
fn a_broken_sequence_is_caught() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = "broken";
    match role().as_deref() {
        None => {
            if common::two_allowed_cpus().is_none() {
                common::child::shared::skip(format!(
                    "one allowed CPU ({:?}): a stale CPU cannot happen",
                    common::allowed_cpus()
                ));
                return;
            }
            // The time limit only catches a hang.
            let o = run_child_with(
                "a_broken_sequence_is_caught",
                r,
                // No backtraces: symbolizing one (with the allocator broken) is slow,
                // and the failure is the expected outcome.
                &[common::child::BY_CPU, ("RUST_BACKTRACE", "0")],
                &[],
                Duration::from_secs(600),
                None,
            );
            assert!(
                !o.success,
                "the stress's checks did not notice sequences that skip their CPU check \
                 in {STALE_POPS} stale pops:\n{}\n{}",
                o.stdout, o.stderr
            );
            assert!(!o.stdout.contains(&marker(r)));
            let all = format!("{}{}", o.stdout, o.stderr);
            assert!(
                all.contains("handed out twice") || all.contains("overwritten"),
                "the child failed, but not by the stress's checks:\n{all}"
            );
        }
        Some("broken") => {
            // This child is expected to hand an object out twice and fail its checks;
            // it exits 0 only if STALE_POPS stale pops found nothing.
            drop(std::hint::black_box(Box::new(0u64)));
            assert_eq!(restartable_alloc::stats().caches_by_mm_cid, Some(false));
            let (a, b) = common::two_allowed_cpus().expect("two allowed CPUs (as the parent)");
            MIGRATE_TO[0].store(a, Ordering::Relaxed);
            MIGRATE_TO[1].store(b, Ordering::Relaxed);
            install_migrating_handler(libc::SIGUSR2);
            // The first failed check stops the other thread at once (not after its
            // message is printed).
            let report = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                FAILED.store(true, Ordering::Relaxed);
                STOP.store(true, Ordering::Relaxed);
                report(info);
            }));
            let layout = std::alloc::Layout::from_size_align(64, 8).unwrap();
            let pinned = std::thread::spawn(move || {
                let _stop = StopOnDrop;
                common::affinity::pin_current_thread(a);
                let mut held = Held::new();
                wait_for_go();
                while !STOP.load(Ordering::Relaxed) {
                    held.keep(common::new_obj(layout));
                    PINNED_OPS.fetch_add(1, Ordering::Relaxed);
                }
                held.free_all();
            });
            let mover = std::thread::spawn(move || {
                let _stop = StopOnDrop;
                common::affinity::pin_current_thread(a);
                // SAFETY: (test) gettid has no preconditions.
                MOVER.store(unsafe { libc::gettid() }, Ordering::Relaxed);
                let mut held = Held::new();
                let (mut stale, mut tries) = (0u64, 0u64);
                wait_for_go();
                while stale < STALE_POPS && !STOP.load(Ordering::Relaxed) {
                    // SAFETY: (test) sched_getcpu only reads. This thread is pinned
                    // to one CPU at a time, moved only by the handler.
                    let on_a = unsafe { libc::sched_getcpu() } == a as i32;
                    let before = PINNED_OPS.load(Ordering::Relaxed);
                    let o = common::new_obj(layout);
                    if on_a && PINNED_OPS.load(Ordering::Relaxed) != before {
                        stale += 1;
                        STALE.store(stale, Ordering::Relaxed);
                    }
                    tries += 1;
                    held.keep(o);
                }
                held.free_all();
                if stale == STALE_POPS {
                    println!(
                        "{stale} stale pops from slot {a} ({tries} allocations): nothing caught"
                    );
                }
            });
            // SAFETY: this child process exists to run broken sequences: the objects
            // handed out twice are only ever checked and leaked by these threads, and
            // the child's failure is the expected outcome.
            unsafe { hooks::set_skip_cpu_check(true) };
            // Between the compare and the commit: a wide window for two CPUs' threads
            // in one slot.
            hooks::set_loops(3, 2000);
            // Move the mover to the other CPU between reading the CPU and every
            // sequence (the handler leaves other threads where they are).
            hooks::set_loops(9, -1);
            hooks::set_events(1, 0, false, libc::SIGUSR2);
            GO.store(true, Ordering::Release);
            let results = [mover.join(), pinned.join()];
            hooks::reset();
            assert!(
                results.iter().all(Result::is_ok),
                "a thread's checks failed (above), within {} stale pops",
                STALE.load(Ordering::Relaxed)
            );
            println!("{}", marker(r));
        }
        Some(_) => {}
    }
}

/// The critical sections of this binary, `[start_ip, post-commit)`, from its
/// `__rseq_cs_ptr_array` (for the signal handler below: filled before the threads
/// that may be signalled start).
static SECTIONS: std::sync::OnceLock<Vec<(u64, u64)>> = std::sync::OnceLock::new();

fn critical_sections() -> Vec<(u64, u64)> {
    extern "C" {
        static __start___rseq_cs_ptr_array: u64;
        static __stop___rseq_cs_ptr_array: u64;
    }
    // SAFETY: (test) the bounds of the pointer array the linker keeps (its sections
    // carry SHF_GNU_RETAIN); every entry is the address of a `struct rseq_cs`.
    unsafe {
        let start = core::ptr::addr_of!(__start___rseq_cs_ptr_array);
        let stop = core::ptr::addr_of!(__stop___rseq_cs_ptr_array);
        let n = stop.offset_from(start) as usize;
        (0..n)
            .map(|i| {
                let cs = *start.add(i) as *const restartable::abi::RseqCs;
                ((*cs).start_ip, (*cs).start_ip + (*cs).post_commit_offset)
            })
            .collect()
    }
}

/// What the two signal handlers of the test below saw.
static REGISTERED_IN_HANDLER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static FIRST_IP_IN_SECTION: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);
static SECOND_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static SECOND_IP_IN_SECTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn interrupted_ip(ctx: *mut libc::c_void) -> u64 {
    // SAFETY: (test) the third argument of an SA_SIGINFO handler is its ucontext.
    unsafe { (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize] as u64 }
}

fn in_a_section(ip: u64) -> bool {
    SECTIONS
        .get()
        .is_some_and(|s| s.iter().any(|&(a, b)| (a..b).contains(&ip)))
}

/// Arms a timer on the calling thread's CPU time, `ms` from now.
fn arm(timer: libc::timer_t, ms: i64) {
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: 0,
            tv_nsec: ms * 1_000_000,
        },
    };
    // SAFETY: (test) a timer this thread created; a system call only.
    let r = unsafe { libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) };
    assert_eq!(r, 0);
}

/// The first signal: the safe API in a signal handler, on a thread that had not
/// used rseq yet, registers it (library-owned mode); then the delay off and the
/// trap on: the next sequence past its registration check executes `int3` (the
/// second signal). The delay off, so that a registered thread reaches the trap:
/// with it, a sequence of a registered thread on a loaded machine is preempted (and
/// so aborted) before its registration check every time. (The interrupted sequence
/// keeps the count it loaded and finishes its delay.)
extern "C" fn register_on_signal(_: libc::c_int, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    FIRST_IP_IN_SECTION.store(in_a_section(interrupted_ip(ctx)), Ordering::Relaxed);
    let before = restartable::ThreadArea::current_if_registered().is_some();
    let after = restartable::ThreadArea::current().is_ok();
    REGISTERED_IN_HANDLER.store(1 + u32::from(!before && after), Ordering::Relaxed);
    hooks::set_loops(2, 0);
    hooks::set_trap(true);
}

/// The second signal (`SIGTRAP` from the trap, past a sequence's registration
/// check), to a registered thread: the kernel aborts a sequence it interrupts, so
/// the handler never starts with the thread inside one. Then the trap and the
/// delays off.
extern "C" fn check_on_signal(_: libc::c_int, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let ip = interrupted_ip(ctx);
    if in_a_section(ip) {
        SECOND_IP_IN_SECTION.store(ip, Ordering::Relaxed);
    }
    hooks::set_trap(false);
    hooks::set_loops(2, 0);
    SECOND_DONE.store(true, Ordering::Relaxed);
}

fn install_siginfo_handler(
    sig: libc::c_int,
    f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void),
) {
    // SAFETY: (test) a zeroed sigaction with an SA_SIGINFO handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = f as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
    }
}

/// A timer on the calling thread's CPU time that sends `sig` to this thread.
fn thread_cpu_timer(sig: libc::c_int) -> libc::timer_t {
    // SAFETY: (test) a zeroed sigevent is valid; the fields set are the ones
    // SIGEV_THREAD_ID reads; gettid has no preconditions.
    unsafe {
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = sig;
        sev.sigev_notify_thread_id = libc::gettid();
        let mut t: libc::timer_t = std::ptr::null_mut();
        assert_eq!(
            libc::timer_create(libc::CLOCK_THREAD_CPUTIME_ID, &mut sev, &mut t),
            0
        );
        t
    }
}

static THREAD_FAILED: Mutex<Option<String>> = Mutex::new(None);

/// The C thread of the test below: its first allocation, with the timer, then more
/// until the trap has come.
extern "C" fn first_allocation(_: *mut libc::c_void) -> *mut libc::c_void {
    let r = std::panic::catch_unwind(|| {
        assert!(
            restartable::ThreadArea::current_if_registered().is_none(),
            "the thread registered before its first allocation"
        );
        let first = thread_cpu_timer(libc::SIGUSR1);
        // About 0.2-0.5 s of this thread's CPU time in every sequence until the first
        // signal, after its descriptor is stored and before its registration check
        // (injection point 2): the timer (on this thread's CPU time, which load does
        // not move) comes inside the first.
        hooks::set_loops(2, 1 << 29);
        arm(first, 20);
        let b = std::hint::black_box(Box::new(0x5eed_u64));
        // Sequences until the trap came (the first past its registration check
        // after the first signal).
        let start = Instant::now();
        while !SECOND_DONE.load(Ordering::Relaxed) {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no second signal"
            );
            drop(std::hint::black_box(Box::new(1u64)));
        }
        hooks::reset();
        assert_eq!(*b, 0x5eed);
    });
    if let Err(e) = r {
        hooks::reset();
        let msg = e
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| e.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        *THREAD_FAILED.lock().unwrap() = Some(msg);
    }
    std::ptr::null_mut()
}

/// Library-owned registration in an executable, caches by mm_cid: a thread's first
/// allocation must not run a sequence past its registration check unless the thread
/// was registered before the sequence began. If it did, a signal handler that
/// registers the thread (any use of the safe API) while the sequence runs would leave
/// it running with the kernel's registration but without its protection: the
/// registration's return to user space clears `rseq_cs` (the thread was outside the
/// sequence's range then), so the sequence goes on after the handler unprotected,
/// and its checks of `cpu_id` and `mm_cid`, made or repeated after the registration,
/// pass. (The fast path enters its sequence without a check before it; the op's read
/// of `cpu_id` before its descriptor store is what makes such a sequence abort.)
/// Forced: a long delay inside every sequence (injection point 2, after `rseq_cs` is
/// stored, before the registration check), a timer on the thread's own CPU time (load
/// does not move it) whose handler registers the thread and turns on the trap, so
/// that the next sequence past its registration check executes `int3`; the
/// `SIGTRAP` handler then checks that the kernel aborted the sequence.
#[test]
fn a_thread_registered_by_a_signal_handler_never_runs_a_sequence_unprotected() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    common::child::in_child(
        "a_thread_registered_by_a_signal_handler_never_runs_a_sequence_unprotected",
        "register-in-handler",
        common::child::Spec::within(300).env(&[common::child::LIBRARY_OWNED]),
        || {
            // Warm up: this thread registered, the caches set up.
            drop(std::hint::black_box(Box::new(1u64)));
            if restartable::registration::process_owner() != Some(restartable::Owner::Library)
                || restartable_alloc::stats().caches_by_mm_cid != Some(true)
            {
                common::child::shared::skip("no library-owned rseq with mm_cid caches here");
                return;
            }
            assert!(
                restartable::registration::AreaOffset::get().is_some(),
                "an executable: the library's areas at one offset"
            );
            // The path under test: the library's own areas, taken unchecked (the
            // same op as glibc's, which reads `cpu_id` before its sequence too).
            assert_eq!(
                restartable_alloc::front::fast_path(),
                restartable_alloc::front::FastPath::OwnUnchecked
            );
            SECTIONS.set(critical_sections()).unwrap();
            assert!(
                SECTIONS.get().unwrap().len() > 10,
                "no critical sections found"
            );
            install_siginfo_handler(libc::SIGUSR1, register_on_signal);
            install_siginfo_handler(libc::SIGTRAP, check_on_signal);
            // A thread started by C code (`std::thread::spawn` allocates on the new
            // thread before its closure runs, which registers it).
            let mut t: libc::pthread_t = 0;
            // SAFETY: (test) a valid entry point; the attributes may be null.
            let r = unsafe {
                libc::pthread_create(
                    &mut t,
                    std::ptr::null(),
                    first_allocation,
                    std::ptr::null_mut(),
                )
            };
            assert_eq!(r, 0);
            // SAFETY: (test) joined once.
            assert_eq!(unsafe { libc::pthread_join(t, std::ptr::null_mut()) }, 0);
            if let Some(e) = THREAD_FAILED.lock().unwrap().take() {
                panic!("the C thread: {e}");
            }
            let registered = REGISTERED_IN_HANDLER.load(Ordering::Relaxed);
            println!(
                "first signal: inside a sequence {}, registered the thread {}",
                FIRST_IP_IN_SECTION.load(Ordering::Relaxed),
                registered == 2
            );
            assert!(registered != 0, "the first handler did not run");
            // The case under test, forced: the first signal inside the first
            // sequence (entered unregistered), its handler registering the thread.
            assert!(
                FIRST_IP_IN_SECTION.load(Ordering::Relaxed),
                "the first signal came outside a sequence"
            );
            assert!(
                registered == 2,
                "the first handler did not register the thread"
            );
            let ip = SECOND_IP_IN_SECTION.load(Ordering::Relaxed);
            assert!(
                ip == 0,
                "a signal reached a registered thread inside a critical section at {ip:#x}: \
                 the sequence ran on without the kernel's protection"
            );
        },
    );
}
