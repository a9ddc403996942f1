//! Shared by the test binaries: a small PRNG, the pattern stress, and child-process
//! helpers.
#![allow(dead_code)]

#[path = "../../../restartable/tests/support/affinity.rs"]
pub mod affinity;
pub mod child;

use std::alloc::{alloc, dealloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// xorshift64*: deterministic per seed, no allocation.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An object of the stress: its address, layout and the pattern written in it.
pub struct Obj {
    pub ptr: usize,
    pub layout: Layout,
    /// A number unique to this allocation, written in its first word: an address
    /// handed out twice is caught even though its pattern is the same.
    pub serial: u64,
}

static SERIAL: AtomicU64 = AtomicU64::new(1);

// SAFETY: (test) objects are plain memory handed between threads.
unsafe impl Send for Obj {}

/// The pattern word at word `i` of the object at `addr`.
pub fn pattern(addr: usize, i: usize) -> u64 {
    (addr as u64).rotate_left(17) ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Words of an object that are filled and checked: all of a small one; the first
/// and last 64 words and every 512th of a big one (keeps the stress fast).
pub fn checked_words(words: usize) -> impl Iterator<Item = usize> {
    (0..words).filter(move |&i| words <= 256 || i < 64 || i + 64 >= words || i % 512 == 0)
}

/// A random layout: mostly small sizes, some up to 300 KiB (all size classes and a
/// few large objects), alignments from 1 to 64 KiB (mostly small).
pub fn random_layout(r: &mut Rng) -> Layout {
    let size = match r.below(100) {
        0..=59 => 1 + r.below(128),
        60..=89 => 1 + r.below(4096),
        90..=98 => 1 + r.below(64 * 1024),
        _ => 1 + r.below(300 * 1024),
    } as usize;
    let align = match r.below(100) {
        0..=79 => 1 << r.below(5),
        80..=97 => 1 << r.below(13),
        _ => 1 << r.below(17),
    };
    Layout::from_size_align(size, align).unwrap()
}

/// Allocates with the global allocator and fills the pattern.
pub fn new_obj(layout: Layout) -> Obj {
    // SAFETY: (test) non-zero size.
    let p = unsafe { alloc(layout) };
    assert!(!p.is_null(), "allocation of {layout:?} failed");
    assert_eq!(
        p as usize % layout.align(),
        0,
        "misaligned {layout:?}: {p:p}"
    );
    let obj = Obj {
        ptr: p as usize,
        layout,
        serial: SERIAL.fetch_add(1, Ordering::Relaxed),
    };
    fill(&obj);
    obj
}

pub fn fill(o: &Obj) {
    let words = o.layout.size() / 8;
    let base = o.ptr as *mut u64;
    for i in checked_words(words) {
        // SAFETY: (test) inside the object.
        unsafe { base.add(i).write_unaligned(pattern(o.ptr, i)) };
    }
    // Tail bytes.
    for b in words * 8..o.layout.size() {
        // SAFETY: (test) inside the object.
        unsafe { (o.ptr as *mut u8).add(b).write(o.ptr as u8 ^ b as u8) };
    }
    if words > 0 {
        // SAFETY: (test) the first word of the object.
        unsafe { base.write_unaligned(o.serial) };
    }
}

/// Checks the pattern (panics with the address on corruption) and frees.
pub fn check_and_free(o: Obj) {
    let words = o.layout.size() / 8;
    let base = o.ptr as *const u64;
    if words > 0 {
        // SAFETY: (test) the first word of the object.
        let serial = unsafe { base.read_unaligned() };
        assert_eq!(
            serial, o.serial,
            "object {:#x} {:?} handed out twice (serial {} found {serial})",
            o.ptr, o.layout, o.serial
        );
    }
    for i in checked_words(words).filter(|&i| i > 0) {
        // SAFETY: (test) inside the object.
        let v = unsafe { base.add(i).read_unaligned() };
        assert_eq!(
            v,
            pattern(o.ptr, i),
            "object {:#x} {:?}: word {i} overwritten (overlap or corruption)",
            o.ptr,
            o.layout
        );
    }
    for b in words * 8..o.layout.size() {
        // SAFETY: (test) inside the object.
        let v = unsafe { (o.ptr as *const u8).add(b).read() };
        assert_eq!(
            v,
            o.ptr as u8 ^ b as u8,
            "object {:#x}: byte {b} overwritten",
            o.ptr
        );
    }
    // SAFETY: (test) allocated with this layout.
    unsafe { dealloc(o.ptr as *mut u8, o.layout) };
}

/// Threads of the running stress (tid, pthread), for tests that migrate or signal
/// them; a thread leaves the list before it exits.
pub static WORKERS: Mutex<Vec<(libc::pid_t, libc::pthread_t)>> = Mutex::new(Vec::new());
/// Sequence outcomes of finished stress threads (with `StatsHooks`/`TestHooks`).
pub static ABORTS: AtomicU64 = AtomicU64::new(0);
pub static COMMITS: AtomicU64 = AtomicU64::new(0);

/// The pattern stress: `threads` threads for `duration`, each keeping up to 64
/// objects, freeing its own or handing objects to a shared exchange that other
/// threads free. Returns the number of operations drawn (allocations, frees,
/// hand-offs, and draws that found nothing to do).
pub fn stress(threads: usize, duration: Duration, mut between: impl FnMut()) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let exchange: Arc<Mutex<Vec<Obj>>> = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (stop, total, exchange) = (stop.clone(), total.clone(), exchange.clone());
            std::thread::spawn(move || {
                let me = (
                    // SAFETY: (test) gettid and pthread_self have no preconditions.
                    unsafe { libc::gettid() },
                    // SAFETY: (test) as above.
                    unsafe { libc::pthread_self() },
                );
                WORKERS.lock().unwrap().push(me);
                let mut r = Rng::new(t as u64 + 1);
                let mut mine: Vec<Obj> = Vec::with_capacity(64);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        match r.below(10) {
                            // An allocation when below the bound (60% of draws:
                            // the thread's objects stay at or near 64).
                            0..=4 | 9 if mine.len() < 64 => {
                                mine.push(new_obj(random_layout(&mut r)))
                            }
                            5..=6 if !mine.is_empty() => {
                                let i = r.below(mine.len() as u64) as usize;
                                check_and_free(mine.swap_remove(i));
                            }
                            7 if !mine.is_empty() => {
                                let o = mine.pop().unwrap();
                                exchange.lock().unwrap().push(o);
                            }
                            8 => {
                                let o = exchange.lock().unwrap().pop();
                                if let Some(o) = o {
                                    check_and_free(o);
                                }
                            }
                            _ => {}
                        }
                        n += 1;
                    }
                }
                for o in mine {
                    check_and_free(o);
                }
                WORKERS.lock().unwrap().retain(|w| w.0 != me.0);
                let st = restartable::hooks::thread_stats();
                ABORTS.fetch_add(st.aborts, Ordering::Relaxed);
                COMMITS.fetch_add(st.commits, Ordering::Relaxed);
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        between();
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("a stress thread failed");
    }
    for o in exchange.lock().unwrap().drain(..) {
        check_and_free(o);
    }
    total.load(Ordering::Relaxed)
}

/// The body of a test binary without libtest's harness (`harness = false`): runs
/// `test`, named `name`, as the process's only thread (asserted: nothing else, libtest
/// included, allocates meanwhile), and reports it as libtest does.
pub fn run_alone(name: &str, test: fn()) {
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count());
    assert_eq!(threads.ok(), Some(1), "the test's thread is the only one");
    test();
    println!("test {name} ... ok");
}

pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The CPUs this thread may run on (`sched_getaffinity`), ascending: the only ones a
/// test may pin to (a restricted set need not hold CPU 0 or 1).
pub fn allowed_cpus() -> Vec<usize> {
    restartable::allowed_cpus().expect("sched_getaffinity")
}

/// The first two CPUs this thread may run on, or `None` when only one is allowed.
pub fn two_allowed_cpus() -> Option<(usize, usize)> {
    match allowed_cpus()[..] {
        [a, b, ..] => Some((a, b)),
        _ => None,
    }
}

/// The fast path the front-end must have chosen in this process (once the caches are
/// set up and this thread registered): from who owns registration, whether the areas
/// are at one offset, and the caches' index. By mm_cid's low byte, glibc's areas and
/// the library's own are both taken unchecked (the op's reads of `cpu_id` check
/// them); the offset's sign says whose they are.
pub fn expected_fast_path() -> restartable_alloc::front::FastPath {
    use restartable::Owner;
    use restartable_alloc::front::{self, FastPath};
    let Some((slots, by_cid)) = front::mode() else {
        return FastPath::NoCaches;
    };
    let Some(off) = restartable::registration::AreaOffset::get() else {
        return FastPath::ThreadLocal;
    };
    if !by_cid {
        return FastPath::ByCpu;
    }
    // glibc's area above the thread pointer, the library's own below it (x86_64):
    // an offset of the other sign, or more than 256 slots, reads the whole field.
    match (restartable::registration::process_owner(), off.bytes()) {
        _ if slots > 256 => FastPath::ByWholeCid,
        (Some(Owner::Libc), o) if o > 0 => FastPath::LibcUnchecked,
        (Some(Owner::Library), o) if o < 0 => FastPath::OwnUnchecked,
        _ => FastPath::ByWholeCid,
    }
}

/// Sets `RLIMIT_AS` to the current address space plus `extra` bytes.
pub fn limit_address_space(extra: usize) {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let size: usize = statm.split_whitespace().next().unwrap().parse().unwrap();
    let lim = (size * 4096 + extra) as libc::rlim_t;
    let r = libc::rlimit {
        rlim_cur: lim,
        rlim_max: lim,
    };
    // SAFETY: (test) a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &r) }, 0);
}
