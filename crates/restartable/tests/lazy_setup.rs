//! The set-up of a container's storage on first use (`const` constructors) never
//! waits: not for another thread's set-up, not for the storage pool's lock, so that it
//! cannot deadlock in a signal handler that interrupted this thread, or in a child
//! forked while another thread was setting up or held the pool.
//!
//! Nor does it call the global allocator, even when the storage pool must grow: a
//! first use inside a signal handler that interrupted `malloc` on the same thread
//! would otherwise block on `malloc`'s lock.
//!
//! Each scenario runs in a forked child (so that a deadlock is a child that does not
//! exit, killed after a time limit with a clear message, not a hung test binary) that
//! reports through its exit status: 0 when every check held, else the number of the
//! check that failed.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

#[path = "support/child.rs"]
mod child;
#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use restartable::percpu::storage::hold_pool_lock_while;
use restartable::{PerCpuCounter, ThreadArea};

/// The tests fork, and one holds the pool's lock in a thread of its own while it
/// forks: run concurrently, another test's child could be forked while that lock is
/// held and then wait for it forever where it takes the lock on purpose
/// (`hold_pool_lock_while`). They run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a forked child may take (it does a few thousand operations).
const LIMIT: Duration = Duration::from_secs(120);

/// Whether this thread runs restartable sequences (else every operation takes the
/// fallback, and the checks that a set-up happened do not apply).
fn rseq_here() -> bool {
    ThreadArea::current().is_ok()
}

/// Forks; the child runs `f` and exits with its result (async-signal-safe exit, no
/// destructors); the parent waits up to [`LIMIT`] and asserts the child exited 0.
fn in_forked_child(what: &str, f: impl FnOnce() -> i32) {
    // SAFETY: the child only runs `f` (this library's operations, which take no lock
    // that another thread could hold across the fork, and plain atomics) and `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = f();
        // SAFETY: ends the child without running the parent's destructors or atexit
        // handlers.
        unsafe { libc::_exit(code) };
    }
    let status = child::wait_pid_within(pid, LIMIT, what);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{what}: the forked child failed (wait status {status:#x}; exit code = the number of the failed check)"
    );
}

#[test]
fn a_set_up_in_progress_sends_operations_to_the_fallback_and_a_forked_child_takes_it_over() {
    let _serial = one_at_a_time();
    let warm = PerCpuCounter::new();
    warm.inc();
    let rseq = rseq_here();
    let c = PerCpuCounter::new();
    // As if another thread of this process had stopped in the middle of the set-up.
    assert!(c.claim_set_up_for_test());
    assert!(!c.claim_set_up_for_test(), "a claim is exclusive");
    for _ in 0..1000 {
        c.inc();
    }
    assert_eq!(c.sum(), 1000);
    assert_eq!(c.fallback_value(), 1000, "no set-up while it is claimed");
    assert!(c.per_cpu().iter().all(|&v| v == 0));

    in_forked_child("set-up claimed before the fork", || {
        // The claimer does not exist in the child: the child takes the claim over,
        // sets the storage up and uses the slots.
        for _ in 0..1000 {
            c.inc();
        }
        if c.sum() != 2000 {
            return 1;
        }
        if rseq && c.fallback_value() != 1000 {
            return 2;
        }
        0
    });

    // Still claimed here: still exact, on the fallback.
    c.add(5);
    assert_eq!(c.sum(), 1005);
    assert_eq!(c.fallback_value(), 1005);
}

/// Inside a forked child: forks again, runs `f` in the grandchild and returns its exit
/// code (`FORK_FAILED` if it could not fork, `ABNORMAL` if it did not exit). No time
/// limit of its own: the outer child's ([`LIMIT`]) covers both.
fn fork_and_wait(f: impl FnOnce() -> i32) -> i32 {
    const FORK_FAILED: i32 = 90;
    const ABNORMAL: i32 = 91;
    // SAFETY: as in `in_forked_child`; the caller is a single-threaded child.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return FORK_FAILED;
    }
    if pid == 0 {
        let code = f();
        // SAFETY: as in `in_forked_child`.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    if r == pid && libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        ABNORMAL
    }
}

/// A pid that the tests make two related processes share (as pid reuse or pid
/// namespaces can): the child's pid equals its parent's, or a grandchild's its
/// grandparent's.
const SHARED_PID: u32 = 4_000_001;

#[test]
fn a_child_with_its_parents_pid_still_takes_over_a_claim_made_before_the_fork() {
    let _serial = one_at_a_time();
    let warm = PerCpuCounter::new();
    warm.inc();
    let rseq = rseq_here();
    if !restartable::percpu::identity_wipes_on_fork() {
        child::skip(
            "the kernel refuses MADV_WIPEONFORK (Linux before 4.14?): claims go by pid, \
             and a child with its parent's pid keeps the documented residue",
        );
        return;
    }
    in_forked_child("claim inherited by a child with the same pid", || {
        // SAFETY: this child is single-threaded and has claimed no set-up yet.
        unsafe { restartable::percpu::fake_pid_for_test(SHARED_PID) };
        let c = PerCpuCounter::new();
        if !c.claim_set_up_for_test() {
            return 1;
        }
        c.inc();
        if c.fallback_value() != 1 {
            return 2;
        }
        // The grandchild has the same (faked) pid: by pid alone the claim would be its
        // own, and the counter would stay on the fallback there.
        let code = fork_and_wait(|| {
            for _ in 0..1000 {
                c.inc();
            }
            if c.sum() != 1001 {
                return 10;
            }
            if rseq && c.fallback_value() != 1 {
                return 11;
            }
            0
        });
        if code != 0 {
            return code;
        }
        // Here the claim is still this process's own: still on the fallback.
        c.inc();
        if c.sum() != 2 || c.fallback_value() != 2 {
            return 3;
        }
        0
    });
}

#[test]
fn by_pid_a_grandchild_with_its_grandparents_pid_still_takes_over_its_claim() {
    let _serial = one_at_a_time();
    let warm = PerCpuCounter::new();
    warm.inc();
    let rseq = rseq_here();
    in_forked_child("pid method: claim inherited across a reused pid", || {
        // SAFETY: this child is single-threaded and has claimed no set-up yet.
        unsafe {
            restartable::percpu::use_pid_identity_for_test();
            restartable::percpu::fake_pid_for_test(SHARED_PID);
        }
        if restartable::percpu::identity_wipes_on_fork() {
            return 1;
        }
        let c = PerCpuCounter::new();
        if !c.claim_set_up_for_test() {
            return 2;
        }
        fork_and_wait(|| {
            // The parent, with a pid of its own, takes an identity (claiming another
            // set-up does)...
            // SAFETY: single-threaded; the claim above is not this process's.
            unsafe { restartable::percpu::fake_pid_for_test(SHARED_PID + 1) };
            let other = PerCpuCounter::new();
            if !other.claim_set_up_for_test() {
                return 10;
            }
            // ... and its child gets the grandparent's pid back (reused).
            fork_and_wait(|| {
                // SAFETY: single-threaded; no claim is this process's.
                unsafe { restartable::percpu::fake_pid_for_test(SHARED_PID) };
                for _ in 0..1000 {
                    c.inc();
                }
                if c.sum() != 1000 {
                    return 20;
                }
                if rseq && c.fallback_value() != 0 {
                    return 21;
                }
                0
            })
        })
    });
}

static IN_HANDLER: PerCpuCounter = PerCpuCounter::new();
static HANDLED: AtomicBool = AtomicBool::new(false);

extern "C" fn first_use_in_handler(_: libc::c_int) {
    IN_HANDLER.inc();
    HANDLED.store(true, Ordering::SeqCst);
}

#[test]
fn first_use_in_a_signal_handler_that_interrupted_the_pool_does_not_wait_for_it() {
    let _serial = one_at_a_time();
    let warm = PerCpuCounter::new();
    warm.inc();
    let rseq = rseq_here();
    in_forked_child("first use in a signal handler", || {
        // SAFETY: installs a handler (a plain function) for SIGUSR1 in this child.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = first_use_in_handler as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
                return 1;
            }
        }
        // This thread holds the pool's lock when the signal arrives: the handler's
        // first use of the `static` counter must set it up without waiting for it.
        // SAFETY: raise has no preconditions; the handler runs before it returns.
        let raised = hold_pool_lock_while(|| unsafe { libc::raise(libc::SIGUSR1) });
        if raised != 0 || !HANDLED.load(Ordering::SeqCst) {
            return 2;
        }
        if IN_HANDLER.sum() != 1 {
            return 3;
        }
        if rseq && IN_HANDLER.fallback_value() != 0 {
            // Set up (in a mapping of its own) and used, not sent to the fallback.
            return 4;
        }
        // And again, with the set-up itself claimed by the interrupted code.
        let again = PerCpuCounter::new();
        if !again.claim_set_up_for_test() {
            return 5;
        }
        again.inc();
        if again.sum() != 1 || again.fallback_value() != 1 {
            return 6;
        }
        0
    });
}

#[test]
fn a_child_forked_while_another_thread_holds_the_pool_sets_up_without_it() {
    let _serial = one_at_a_time();
    let warm = PerCpuCounter::new();
    warm.inc();
    let rseq = rseq_here();
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        hold_pool_lock_while(|| {
            held_tx.send(()).expect("main thread waits");
            // Until the parent has forked (bounded: the parent sends or drops).
            let _ = release_rx.recv_timeout(LIMIT);
        })
    });
    held_rx.recv().expect("holder locked the pool");
    let c = PerCpuCounter::new();
    in_forked_child("fork while the pool is locked", || {
        // The pool's lock was held at the fork by a thread that does not exist here:
        // it stays locked in this process forever.
        for _ in 0..1000 {
            c.inc();
        }
        if c.sum() != 1000 {
            return 1;
        }
        if rseq && c.fallback_value() != 0 {
            return 2;
        }
        0
    });
    release_tx.send(()).expect("holder waits");
    holder.join().expect("holder");
    // And here, the ordinary set-up.
    c.inc();
    assert_eq!(c.sum(), 1);
}

/// Enough containers to fill several of the pool's chunks (one 8-byte unit each of a
/// chunk's 8,192 per range), so that their first uses must grow the pool.
const MANY: usize = 20_000;

#[test]
fn first_uses_that_grow_the_pool_call_no_allocator() {
    let _serial = one_at_a_time();
    let warm = PerCpuCounter::new();
    warm.inc();
    if !rseq_here() {
        child::skip("no rseq on this thread: first uses take the fallback, no set-up");
        return;
    }
    // Not set up yet: `const` construction reserves nothing.
    let counters: Vec<PerCpuCounter> = (0..MANY).map(|_| PerCpuCounter::new()).collect();
    in_forked_child("first uses that grow the pool", || {
        let calls = counting_alloc::calls_during(|| {
            for c in &counters {
                c.inc();
            }
        });
        if calls != 0 {
            return 1;
        }
        if counters
            .iter()
            .any(|c| c.fallback_value() != 0 || c.sum() != 1)
        {
            // Set up and used on the fast path, not sent to the fallback.
            return 2;
        }
        0
    });
}
