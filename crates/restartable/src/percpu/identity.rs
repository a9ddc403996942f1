//! This process's identity: a non-zero number that no ancestor of this process had
//! (the lazy set-up's claims are made with it, see [`lazy`](super::lazy)).
//!
//! A claim found in memory was made before the last `fork` (by an ancestor: its
//! claimer does not exist here) or since (by a thread of this process). Process ids
//! do not tell these apart in every case: a pid can be reused by a descendant once
//! its owner died, and a child that is pid 1 of a new pid namespace has the same
//! `getpid()` as a parent that is pid 1 of its own. So the identity is a number from
//! a counter that lives in ordinary memory ([`LINEAGE`]: a child inherits it, with
//! every identity ever handed out by its ancestors below it) and is kept where a
//! `fork` forgets it:
//! - **A page marked `MADV_WIPEONFORK`** (Linux 4.14+), mapped on first use: the
//!   child's copy of the page reads zero, so the first use in the child takes a new
//!   number, higher than every claim its memory holds. No residue.
//! - **Where the kernel refuses the advice** (`EINVAL` before 4.14, other systems, or
//!   the page cannot be mapped): a word holding the process id with the number; a
//!   process that finds another pid there takes a new number. The residue: a process
//!   whose pid equals the one in the word it inherited (the ancestor that took that
//!   number died and its pid was reused by this descendant with no process in
//!   between taking a number, or pid 1 forking pid 1 of a new namespace) sees the
//!   ancestor's claims as its own: those containers stay on their shared fallback
//!   in that process (slower, still exact and sound). (The word keeps the number's
//!   low 32 bits: after 2^32 identities in one lineage, one could repeat, with the
//!   same effect.)
//!
//! Processes that share this memory without being threads of one process (a `vfork`
//! child, a `clone` with `CLONE_VM` but not `CLONE_THREAD`) are outside both: they
//! share the wiped page (no copy, so no wipe), so under it they share the identity
//! (a claim of one is the other's own: it stays on the fallback, sound); under the
//! pid method such a child that calls in rewrites the shared word with its own pid,
//! and the threads of the process it shares memory with then take a new identity
//! and could take over a set-up one of them is still writing. Calling into the
//! library there is already outside `vfork`'s contract (only `_exit` or `exec`), and
//! creating such a process takes `unsafe`.
//!
//! Which of the two applies is decided once, on first use, and inherited by
//! children. Everything here is async-signal-safe and allocation-free (atomics,
//! `getpid`, `mmap`, `madvise`, `munmap`; `errno` is left as it was), as the set-up
//! that calls it must be.
//!
//! The identity of a process never changes once taken: threads of one process (and
//! signal handlers on them) agree on it, so a claim by this process is always seen
//! as this process's. The test switches that could break that (a faked pid, a
//! forced fallback) are `unsafe fn`s.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The highest number handed out by this process or by its ancestors before they
/// forked it (inherited: never wiped).
static LINEAGE: AtomicU64 = AtomicU64::new(0);

/// `UNDECIDED`, `BY_PID`, or the address of the wiped page whose first word is the
/// identity (0 until taken).
static PAGE: AtomicUsize = AtomicUsize::new(UNDECIDED);
const UNDECIDED: usize = 0;
const BY_PID: usize = 1;

/// Without the wiped page: `pid << 32 | number` (low 32 bits of the number), 0 before.
static BY_PID_WORD: AtomicU64 = AtomicU64::new(0);

/// A pid to use instead of `getpid()` (tests), 0 for the real one.
static FAKE_PID: AtomicU32 = AtomicU32::new(0);

/// This process's identity (never 0).
pub(crate) fn current() -> u64 {
    match wiped_word() {
        Some(word) => {
            let id = word.load(Ordering::Acquire);
            if id != 0 {
                return id;
            }
            // First use in this process (the page reads zero after every fork).
            let fresh = next_number();
            match word.compare_exchange(0, fresh, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => fresh,
                // Another thread of this process (or the code this signal handler
                // interrupted) took it first: that one is the identity.
                Err(taken) => taken,
            }
        }
        None => by_pid(),
    }
}

/// Whether the identity lives in a page marked `MADV_WIPEONFORK` (decided now if it
/// was not): `false` means the pid method and its residue (module docs).
///
/// Hidden, for tests (which scenarios apply): not part of the stable API.
pub fn identity_wipes_on_fork() -> bool {
    wiped_word().is_some()
}

/// A number higher than any this process or its ancestors handed out.
fn next_number() -> u64 {
    LINEAGE.fetch_add(1, Ordering::AcqRel) + 1
}

/// The identity by process id: the word's, or a new one if the word holds another
/// pid (a `fork` since) or nothing.
fn by_pid() -> u64 {
    let pid = u64::from(pid());
    let mut word = BY_PID_WORD.load(Ordering::Acquire);
    loop {
        if word != 0 && word >> 32 == pid {
            return word;
        }
        let fresh = (pid << 32) | (next_number() & u64::from(u32::MAX));
        match BY_PID_WORD.compare_exchange(word, fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return fresh,
            Err(now) => word = now,
        }
    }
}

/// This process's id, or the one a test asked for (never 0: a real pid is not).
fn pid() -> u32 {
    match FAKE_PID.load(Ordering::Relaxed) {
        // SAFETY: getpid has no preconditions (a system call: async-signal-safe).
        0 => (unsafe { libc::getpid() }) as u32,
        fake => fake,
    }
}

/// The identity word in the wiped page, mapping it on first use; `None` where the
/// pid method applies.
fn wiped_word() -> Option<&'static AtomicU64> {
    let mut page = PAGE.load(Ordering::Acquire);
    if page == UNDECIDED {
        let mapped = map_wiped_page();
        page = match PAGE.compare_exchange(UNDECIDED, mapped, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => mapped,
            Err(decided) => {
                unmap(mapped);
                decided
            }
        };
    }
    if page == BY_PID {
        return None;
    }
    // SAFETY: a published page is a live, page-aligned, read-write mapping that is
    // never unmapped (nor, by this module, written other than through atomics); a
    // zero-filled word is a valid `AtomicU64`.
    Some(unsafe { &*(page as *const AtomicU64) })
}

/// A fresh page marked `MADV_WIPEONFORK`, or `BY_PID` if the kernel refuses it.
#[cfg(target_os = "linux")]
fn map_wiped_page() -> usize {
    // SAFETY: reading and restoring this thread's errno (the calls below may set it:
    // a signal handler's caller must not see it change).
    let errno = unsafe { *libc::__errno_location() };
    let len = super::storage::page_size();
    // SAFETY: an anonymous mapping at an address of the kernel's choosing affects no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    let page = if p == libc::MAP_FAILED {
        BY_PID
    } else {
        // SAFETY: advice on our own fresh mapping.
        if unsafe { libc::madvise(p, len, libc::MADV_WIPEONFORK) } == 0 {
            p as usize
        } else {
            // SAFETY: our own fresh mapping, known to nobody else.
            unsafe { libc::munmap(p, len) };
            BY_PID
        }
    };
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
    page
}

/// No `MADV_WIPEONFORK` here: the pid method.
#[cfg(not(target_os = "linux"))]
fn map_wiped_page() -> usize {
    BY_PID
}

/// Gives back a page [`map_wiped_page`] mapped (nothing for `BY_PID`).
fn unmap(page: usize) {
    if page == BY_PID {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: as in `map_wiped_page`.
        let errno = unsafe { *libc::__errno_location() };
        // SAFETY: a page this thread mapped and did not publish: nobody else knows it.
        unsafe { libc::munmap(page as *mut libc::c_void, super::storage::page_size()) };
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = errno };
    }
}

/// Makes this process use `pid` instead of its own process id (0: its own again),
/// in the pid method of the module docs (tests: a descendant that has its ancestor's
/// pid, which the system gives only with pid namespaces or pid reuse). Inherited by
/// children forked later.
///
/// # Safety
/// No set-up may be claimed by this process when the faked pid changes the identity
/// (no thread, and no code interrupted by the calling signal handler, in the middle
/// of a set-up): under the pid method this process would take over its own claim
/// and two threads would write the same storage. Tests call it in a single-threaded
/// process before any set-up of its own.
#[doc(hidden)]
pub unsafe fn fake_pid_for_test(pid: u32) {
    FAKE_PID.store(pid, Ordering::Relaxed);
}

/// Makes this process use the pid method (as where the kernel refuses
/// `MADV_WIPEONFORK`) and forget its identity: the next use takes a new one.
/// Inherited by children forked later.
///
/// # Safety
/// As [`fake_pid_for_test`]: no set-up may be claimed by this process, since its
/// identity changes.
#[doc(hidden)]
pub unsafe fn use_pid_identity_for_test() {
    PAGE.store(BY_PID, Ordering::Release);
    BY_PID_WORD.store(0, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_non_zero_and_the_same_on_every_thread_and_call() {
        let here = current();
        assert_ne!(here, 0);
        assert_eq!(current(), here);
        let there = std::thread::spawn(current).join().expect("thread");
        assert_eq!(there, here, "threads of one process share its identity");
        // Where the wiped page is used (this machine's kernel permitting), the
        // identity is its first word.
        if let Some(word) = wiped_word() {
            assert_eq!(word.load(Ordering::Relaxed), here);
        }
    }

    /// `errno` is left as it was when the page cannot be mapped (a signal handler's
    /// caller must not see it change): in a forked child whose address space limit
    /// is 0, so that `mmap` fails (ENOMEM) and the pid method is chosen.
    #[cfg(target_os = "linux")]
    #[test]
    fn errno_is_left_as_it_was_when_the_page_cannot_be_mapped() {
        const SENTINEL: i32 = 12345;
        // SAFETY: (test) the child makes system calls only (no lock another thread
        // of this harness could hold), then `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: (test) a valid rlimit; this thread's errno location; the child
            // ends with `_exit`, running no destructor.
            unsafe {
                let code = if libc::setrlimit(libc::RLIMIT_AS, &none) != 0 {
                    10
                } else {
                    *libc::__errno_location() = SENTINEL;
                    let page = map_wiped_page();
                    let errno = *libc::__errno_location();
                    if page != BY_PID {
                        unmap(page);
                        11
                    } else if errno != SENTINEL {
                        12
                    } else {
                        0
                    }
                };
                libc::_exit(code);
            }
        }
        let mut status = 0;
        // SAFETY: (test) our child; a valid out pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child failed (wait status {status:#x}: 10 setrlimit, 11 mapped anyway, \
             12 errno changed)"
        );
    }
}
