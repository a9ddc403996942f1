//! `librestartable_malloc.so`: the per-CPU allocator of
//! [`restartable_alloc`] as a drop-in C `malloc` for any program.
//!
//! ```sh
//! cargo build --release -p restartable-malloc
//! LD_PRELOAD=$PWD/target/release/librestartable_malloc.so python3 -c 'print(sum(range(10)))'
//! RESTARTABLE_MALLOC_STATS=1 LD_PRELOAD=$PWD/target/release/librestartable_malloc.so ls
//! ```
//!
//! # What it exports, with glibc's semantics
//! `malloc`, `free`, `calloc` (overflow-checked), `realloc` (`realloc(NULL, n)` is
//! `malloc(n)`; `realloc(p, 0)` frees `p` and returns NULL, as glibc does),
//! `reallocarray`, `posix_memalign` (returns `EINVAL`/`ENOMEM`, leaves `errno`),
//! `aligned_alloc` and `memalign` (glibc 2.36: an alignment that is not a power of two
//! is rounded up to one), `valloc`, `pvalloc`, `malloc_usable_size`; and glibc's
//! other names for them, `__libc_malloc`, `__libc_free`, `__libc_calloc`,
//! `__libc_realloc`, `__libc_memalign`, `__libc_valloc`, `__libc_pvalloc` and `cfree`
//! (the same functions: an object from any name is freed through any other). Every failure
//! sets `errno = ENOMEM` (or `EINVAL` for a bad alignment) and returns NULL; `malloc(0)`
//! returns a unique pointer. Objects are aligned to 16 bytes.
//!
//! `free`, `realloc` and `malloc_usable_size` find what a pointer is through the page
//! map (small objects: the span's size class) or the large-object map
//! ([`restartable_alloc::raw`]). A pointer this allocator did not hand out (a
//! foreign pointer, an interior pointer, one already given back to the system) aborts
//! the program with a message naming the call and the pointer, instead of corrupting
//! the heap. (A second `free` of a small object whose span is still in use cannot be
//! told from a live one: like glibc's fast paths, that is not caught.)
//!
//! `malloc_trim(pad)` gives the cached objects and free pages back to the OS
//! ([`restartable_alloc::trim`]) and returns 1 if it released any memory, as glibc's.
//! `mallinfo2` and `mallinfo` report this allocator's heap (see [`mallinfo2`] for
//! what each field holds), and `malloc_stats` prints the statistics below to
//! standard error. `mallopt` and `malloc_info` stay glibc's: they set and describe
//! glibc's own heap, which the program no longer uses (`mallopt` returns what
//! glibc returns; its settings change nothing here).
//!
//! # Before `main` and after `exit`
//! Nothing needs initializing: the first call, from the dynamic loader or from
//! glibc's own start-up, sets up what it needs lazily. Calls nested inside the
//! allocator's own set-up (thread registration in library-owned mode, destructor
//! registration, `dlsym`) are served by the middle layer instead of recursing into
//! registration. Threads whose rseq area is gone (late in their exit, after glibc
//! unregistered it) or that never had one use per-thread caches or the middle.
//! `fork` takes every allocator lock around the fork (`pthread_atfork`, handlers
//! installed when the library is loaded, so that they run inside the program's own:
//! the program's fork handlers may allocate), so the child of a multi-threaded
//! program can allocate.
//!
//! Nothing here unwinds: the exported functions are `extern "C"`, so a panic could not
//! cross into C (Rust aborts the process instead); their paths have no panicking
//! operation by design and never format or allocate through Rust's machinery (the
//! abort message is written with `write(2)` from a fixed buffer).
//!
//! # Statistics
//! With `RESTARTABLE_MALLOC_STATS=1` in the environment (read when the library is
//! loaded), the library prints the allocator's statistics ([`restartable_alloc::Stats`])
//! to standard error when the process exits (from its ELF destructor, after the
//! program's `atexit` handlers), with who registered the rseq areas and how the fast
//! paths find them. That is the standard error the process started with, kept open
//! for this (a close-on-exec duplicate from fd 512 up): programs that close fd 2 at
//! exit, as every GNU coreutils program does, still get their statistics printed;
//! nothing is printed if no descriptor refers to it any more (never into a file of
//! the program's that took its number). `malloc_stats()` writes to fd 2 as it is.
//! The duplicate exists only while the variable is set, is not inherited by programs
//! the process runs (it is closed on exec), and is not made under a limit of 512 open
//! files or fewer (the statistics then need fd 2 open at exit). It keeps the file
//! open: a program that detaches from it (`daemon(3)` points fd 2 at `/dev/null`)
//! holds a pipe it started with until it exits, so a reader of that pipe (`$(...)`,
//! `| cat`) waits for it, and gets its statistics.
//!
//! # Where the library registers rseq itself
//! Where glibc does not register rseq (glibc before 2.35, or
//! `GLIBC_TUNABLES=glibc.pthread.rseq=0`), each thread registers the library's own
//! area. That area is an initial-exec thread-local (`restartable`'s
//! `initial-exec-tls` feature), at one offset from every thread's thread pointer, so
//! `malloc` and `free` find it with no thread-local access, as they find glibc's. The
//! library must then be loaded at program start (`LD_PRELOAD`, or linked), as any
//! `malloc` must be.

#![deny(missing_docs)]

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use restartable_alloc::raw::{self, Block};

/// Alignment of every object (glibc's `MALLOC_ALIGNMENT` on x86_64).
const ALIGN: usize = 16;
/// The page `valloc` and `pvalloc` align to.
const PAGE: usize = 4096;

#[inline(always)]
fn set_errno(e: i32) {
    // SAFETY: glibc's errno location is this thread's, always valid.
    unsafe { *libc::__errno_location() = e };
}

#[inline(always)]
fn or_enomem(p: *mut u8) -> *mut c_void {
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p.cast()
}

/// Writes "restartable-malloc: `what`(): invalid pointer 0x..." and aborts.
#[cold]
#[inline(never)]
fn invalid_pointer(what: &[u8], p: *const c_void) -> ! {
    let mut buf = [0u8; 160];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        for &b in bytes {
            if n < buf.len() {
                buf[n] = b;
                n += 1;
            }
        }
    };
    put(b"restartable-malloc: ");
    put(what);
    put(b"(): invalid pointer 0x");
    let a = p as usize;
    for shift in (0..16).rev() {
        put(&[b"0123456789abcdef"[(a >> (shift * 4)) & 15]]);
    }
    put(b" (not allocated by this allocator, or already freed)\n");
    raw::fatal(&buf[..n])
}

#[inline(always)]
fn lookup_or_abort(what: &[u8], p: *mut c_void) -> Block {
    match raw::lookup(p as *const u8) {
        Block::Foreign => invalid_pointer(what, p),
        b => b,
    }
}

/// `malloc(3)`: `n` bytes aligned to 16, or NULL with `errno = ENOMEM`.
///
/// # Safety
/// None beyond C's: the result is freed at most once, with this library's `free`.
#[no_mangle]
pub unsafe extern "C" fn malloc(n: usize) -> *mut c_void {
    match raw::malloc_fast(n) {
        Ok(p) => p.cast(),
        Err(slow) => malloc_slow(slow),
    }
}

/// [`malloc`] past its fast path, with `errno` on failure. `extern "C"` (it cannot
/// unwind), so that `malloc` reaches it by a tail jump: a call to a Rust function
/// from an `extern "C"` one needs a landing pad that aborts, hence a frame.
#[cold]
#[inline(never)]
extern "C" fn malloc_slow(slow: raw::MallocSlow) -> *mut c_void {
    // The checked modes (caches by CPU, or by the whole mm_cid) start here, with no
    // frame, and so do the sizes above the table (up to `MAX_SMALL`) in every mode
    // at one offset (`MallocSlow::checked`); the rest by a second tail jump.
    // (Library-owned registration by mm_cid's low byte, glibc before 2.35 or its
    // registration switched off, takes `malloc`'s inlined path for the table's
    // sizes, as glibc's does.)
    match slow.checked() {
        Ok(p) => p.cast(),
        Err(slow) => malloc_slower(slow),
    }
}

/// [`malloc_slow`] past the checked modes' attempt: the front-end's whole path, the
/// middle, large objects; `errno` on failure.
#[cold]
#[inline(never)]
extern "C" fn malloc_slower(slow: raw::MallocSlow) -> *mut c_void {
    or_enomem(slow.finish())
}

/// `free(3)`: NULL does nothing; a pointer this allocator did not hand out aborts.
///
/// # Safety
/// `p` is NULL or a live object of this allocator, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // NULL goes to the slow path like any pointer that is no small object (no span
    // covers the first page): the fast path of a real object does not test it.
    // SAFETY: `p` is a live object of this allocator (caller), not used again, NULL,
    // or a foreign pointer, which the slow path sorts out.
    if let Err(slow) = unsafe { raw::free_fast(p.cast()) } {
        free_slow(slow)
    }
}

/// [`free`] past its fast path: the checked modes' first attempt (as
/// [`malloc_slow`]'s, with no frame), then [`free_slower`] by a tail jump.
/// `extern "C"` for the tail jump (see [`malloc_slow`]).
#[cold]
#[inline(never)]
extern "C" fn free_slow(slow: raw::FreeSlow) {
    // SAFETY: `free`'s contract.
    if let Err(slow) = unsafe { slow.checked() } {
        free_slower(slow)
    }
}

/// [`free_slow`] past the checked modes' attempt: NULL, a large object, a full
/// cache, an aborted sequence, the thread-local path, or a pointer this allocator
/// did not hand out (aborts).
#[cold]
#[inline(never)]
extern "C" fn free_slower(slow: raw::FreeSlow) {
    let p = slow.ptr();
    if p.is_null() {
        return;
    }
    match slow.lookup() {
        Block::Foreign => invalid_pointer(b"free", p.cast()),
        // SAFETY: `p` is a live object of kind `b` (the caller of `free`), not used
        // again.
        b => unsafe { slow.finish(b) },
    }
}

/// `calloc(3)`: `n * m` zeroed bytes; NULL with `ENOMEM` if the product overflows.
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, m: usize) -> *mut c_void {
    match n.checked_mul(m) {
        Some(total) => or_enomem(raw::alloc_zeroed(total, ALIGN)),
        None => or_enomem(core::ptr::null_mut()),
    }
}

/// `realloc(3)` as glibc: NULL is `malloc(n)`; `n == 0` frees `p` and returns NULL;
/// on failure NULL with `ENOMEM` and `p` untouched.
///
/// # Safety
/// `p` is NULL or a live object of this allocator; on success it is not used again.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, n: usize) -> *mut c_void {
    if p.is_null() {
        // SAFETY: no precondition.
        return unsafe { malloc(n) };
    }
    let b = lookup_or_abort(b"realloc", p);
    if n == 0 {
        // SAFETY: a live object of kind `b`, given up by the caller.
        unsafe { raw::free(p.cast(), b) };
        return core::ptr::null_mut();
    }
    // SAFETY: a live object of kind `b` (caller).
    or_enomem(unsafe { raw::realloc(p.cast(), b, n) })
}

/// `reallocarray(3)`: `realloc(p, n * m)`, NULL with `ENOMEM` on overflow.
///
/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, m: usize) -> *mut c_void {
    match n.checked_mul(m) {
        // SAFETY: forwarded.
        Some(total) => unsafe { realloc(p, total) },
        None => or_enomem(core::ptr::null_mut()),
    }
}

/// glibc 2.36's `memalign`: alignments up to 16 are `malloc`; others are rounded up
/// to a power of two; one above `SIZE_MAX / 2 + 1` is `EINVAL`.
fn memalign_impl(align: usize, n: usize) -> *mut c_void {
    if align <= ALIGN {
        return or_enomem(raw::alloc(n, ALIGN));
    }
    if align > usize::MAX / 2 + 1 {
        set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    }
    or_enomem(raw::alloc(n, align.next_power_of_two()))
}

/// `posix_memalign(3)`: `EINVAL` unless `align` is a power of two multiple of
/// `sizeof(void *)`, `ENOMEM` when memory is exhausted; `errno` is left alone.
///
/// # Safety
/// `out` is valid to write a pointer to.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, n: usize) -> i32 {
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<usize>()) {
        return libc::EINVAL;
    }
    let p = raw::alloc(n, align.max(ALIGN));
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller's out pointer.
    unsafe { out.write(p.cast()) };
    0
}

/// `aligned_alloc(3)`, as glibc 2.36's (the same as `memalign`).
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, n: usize) -> *mut c_void {
    memalign_impl(align, n)
}

/// `memalign(3)` (see [`aligned_alloc`]).
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, n: usize) -> *mut c_void {
    memalign_impl(align, n)
}

/// `valloc(3)`: page-aligned.
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn valloc(n: usize) -> *mut c_void {
    memalign_impl(PAGE, n)
}

/// `pvalloc(3)`: page-aligned, the size rounded up to whole pages (0 stays 0, as in glibc: a minimal object).
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn pvalloc(n: usize) -> *mut c_void {
    match n.checked_add(PAGE - 1) {
        Some(r) => memalign_impl(PAGE, r & !(PAGE - 1)),
        None => or_enomem(core::ptr::null_mut()),
    }
}

/// `malloc_usable_size(3)`: bytes usable at `p` (at least what was asked); 0 for NULL.
///
/// # Safety
/// `p` is NULL or a live object of this allocator.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    match lookup_or_abort(b"malloc_usable_size", p) {
        Block::Small { class } => restartable_alloc::size_class::size(class),
        Block::Large { len } => len,
        Block::Foreign => 0,
    }
}

// glibc's other names for the same functions. glibc 2.36 exports `__libc_malloc` and
// its family (some programs and libraries call them to reach "the real malloc"), and
// `cfree` as a compatibility symbol (old binaries, `dlsym`). Each is ours too, so that
// an object from one name can be freed or resized by any other: `__libc_malloc` then
// `free`, `malloc` then `__libc_free`. (tcmalloc, jemalloc and mimalloc export them
// for the same reason.)

/// `__libc_malloc`: the same as [`malloc`].
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_malloc(n: usize) -> *mut c_void {
    // SAFETY: forwarded with the caller's contract.
    unsafe { malloc(n) }
}

/// `__libc_free`: the same as [`free`].
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn __libc_free(p: *mut c_void) {
    // SAFETY: forwarded with the caller's contract.
    unsafe { free(p) }
}

/// `cfree` (glibc's compatibility symbol, reached by old binaries and `dlsym`): the
/// same as [`free`].
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: forwarded with the caller's contract.
    unsafe { free(p) }
}

/// `__libc_calloc`: the same as [`calloc`].
///
/// # Safety
/// As for [`calloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_calloc(n: usize, m: usize) -> *mut c_void {
    // SAFETY: forwarded with the caller's contract.
    unsafe { calloc(n, m) }
}

/// `__libc_realloc`: the same as [`realloc`].
///
/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_realloc(p: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: forwarded with the caller's contract.
    unsafe { realloc(p, n) }
}

/// `__libc_memalign`: the same as [`memalign`].
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_memalign(align: usize, n: usize) -> *mut c_void {
    memalign_impl(align, n)
}

/// `__libc_valloc`: the same as [`valloc`].
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_valloc(n: usize) -> *mut c_void {
    // SAFETY: forwarded with the caller's contract.
    unsafe { valloc(n) }
}

/// `__libc_pvalloc`: the same as [`pvalloc`].
///
/// # Safety
/// As for [`malloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_pvalloc(n: usize) -> *mut c_void {
    // SAFETY: forwarded with the caller's contract.
    unsafe { pvalloc(n) }
}

/// `malloc_trim(3)`: gives back to the OS what the allocator can, keeping up to `pad`
/// bytes of free pages resident; 1 if any memory was released, else 0 (as glibc).
///
/// Through [`restartable_alloc::trim`]: the calling thread's fallback cache and every
/// per-CPU cache (drained from this thread with membarrier fences, where the kernel
/// has them) go back to the middle, the transfer caches to their spans, and the free
/// pages to the OS with `madvise(MADV_DONTNEED)`. Spans holding a live object stay;
/// large objects were unmapped when they were freed.
#[no_mangle]
pub extern "C" fn malloc_trim(pad: usize) -> i32 {
    i32::from(restartable_alloc::trim(pad) > 0)
}

/// `mallinfo2(3)`, filled from [`restartable_alloc::stats`] and split as glibc splits
/// it (its `uordblks + hblkhd` is what the program holds, its `arena` the heap
/// without the mmapped objects):
///
/// | field | here |
/// |---|---|
/// | `arena` | bytes mapped for the heap: [`Stats::mapped_bytes`](restartable_alloc::Stats::mapped_bytes) without the large objects (regions of spans, span records, the per-CPU cache region, the page map's and the large-object map's leaves) |
/// | `uordblks` | bytes of small objects in use (at their size class; objects in a thread's fallback cache count as in use) |
/// | `hblkhd` | bytes of large objects in use (each its own mapping) |
/// | `fordblks` | free bytes still resident: objects in per-CPU and transfer caches, free space in spans in use, backed free pages |
/// | `fsmblks` | the part of `fordblks` in the per-CPU and transfer caches (glibc's fast bins) |
/// | `keepcost` | backed free pages of the page heap (what `malloc_trim` releases beyond the caches) |
/// | `ordblks`, `smblks`, `hblks`, `usmblks` | 0 (no free-chunk or mapping counts are kept; `usmblks` is always 0 in glibc too) |
///
/// The counters are read without stopping other threads (exact when nothing
/// allocates meanwhile).
#[no_mangle]
pub extern "C" fn mallinfo2() -> libc::mallinfo2 {
    // Allocates nothing: answers when memory is exhausted too.
    let s = restartable_alloc::stats_summary();
    let z = |x: u64| usize::try_from(x).unwrap_or(usize::MAX);
    let caches = s.cpu_cache_bytes + s.transfer_cache_bytes;
    libc::mallinfo2 {
        arena: z(s.mapped_bytes.saturating_sub(s.large_bytes)),
        ordblks: 0,
        smblks: 0,
        hblks: 0,
        hblkhd: z(s.large_bytes),
        usmblks: 0,
        fsmblks: z(caches),
        uordblks: z(s.in_use_bytes.saturating_sub(s.large_bytes)),
        fordblks: z(caches + s.span_free_bytes + s.page_heap_free_bytes),
        keepcost: z(s.page_heap_free_bytes),
    }
}

/// `mallinfo(3)`: [`mallinfo2`] with `int` fields, each saturated at `INT_MAX`
/// (glibc's truncates).
#[no_mangle]
pub extern "C" fn mallinfo() -> libc::mallinfo {
    let m = mallinfo2();
    let i = |x: usize| i32::try_from(x).unwrap_or(i32::MAX);
    libc::mallinfo {
        arena: i(m.arena),
        ordblks: i(m.ordblks),
        smblks: i(m.smblks),
        hblks: i(m.hblks),
        hblkhd: i(m.hblkhd),
        usmblks: i(m.usmblks),
        fsmblks: i(m.fsmblks),
        uordblks: i(m.uordblks),
        fordblks: i(m.fordblks),
        keepcost: i(m.keepcost),
    }
}

/// `malloc_stats(3)`: prints the allocator's statistics to standard error, the same
/// text as `RESTARTABLE_MALLOC_STATS=1` prints at exit.
#[no_mangle]
pub extern "C" fn malloc_stats() {
    write_stats(2);
}

/// Whether `RESTARTABLE_MALLOC_STATS` asked for statistics at exit.
static STATS_AT_EXIT: AtomicBool = AtomicBool::new(false);

/// The environment variable that asks for statistics at exit (any value but empty or
/// `0`).
pub const STATS_ENV: &str = "RESTARTABLE_MALLOC_STATS";

extern "C" fn on_load() {
    // The fork handlers now, before the program registers any of its own: glibc runs
    // prepare handlers in the reverse order of registration (parent and child ones in
    // that order), so ours run innermost, and a program's handler that allocates
    // finds no allocator lock held. Installed lazily (at the first lock, after the
    // program's), they would take every lock before such a handler ran.
    restartable_alloc::sync::ensure_fork_handlers();
    // SAFETY: a NUL-terminated name; the value is read at once.
    let on = unsafe {
        let v = libc::getenv(c"RESTARTABLE_MALLOC_STATS".as_ptr());
        !v.is_null() && {
            let s = core::ffi::CStr::from_ptr(v).to_bytes();
            !s.is_empty() && s != b"0"
        }
    };
    STATS_AT_EXIT.store(on, Ordering::Relaxed);
    if on {
        keep_stderr();
    }
}

extern "C" fn on_unload() {
    if STATS_AT_EXIT.load(Ordering::Relaxed) {
        write_stats(stderr_at_exit());
    }
}

/// A duplicate of the standard error the process started with (`-1`: none), for the
/// statistics at exit: GNU coreutils programs close fd 2 in an `atexit` handler
/// (gnulib's `close_stdout`), which runs before our destructor.
static KEPT_STDERR: AtomicI32 = AtomicI32::new(-1);
/// The device and inode of that standard error (`[0, 0]`: fd 2 was not open at
/// load), checked at exit: fd 2, or the duplicate's number, may refer to a file of
/// the program's own by then (fd 2 is the lowest free number once closed).
static STDERR_ID: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// The lowest descriptor [`keep_stderr`]'s duplicate may take: high, so that the
/// program's own files still get the low numbers it may expect (bash keeps its
/// script at 255 likewise), below the usual limit of 1,024 open files.
const KEPT_STDERR_MIN_FD: libc::c_int = 512;

/// The device and inode of the file open at `fd`, if it is open.
fn file_id(fd: libc::c_int) -> Option<[u64; 2]> {
    // SAFETY: fstat writes a `stat` we own; a closed fd only makes it fail.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        (libc::fstat(fd, &mut st) == 0).then_some([st.st_dev as u64, st.st_ino as u64])
    }
}

/// Records fd 2's file and keeps a close-on-exec duplicate of it (see
/// [`KEPT_STDERR`]), if fd 2 is open and a descriptor from [`KEPT_STDERR_MIN_FD`] up
/// is free.
fn keep_stderr() {
    let Some(id) = file_id(2) else { return };
    STDERR_ID[0].store(id[0], Ordering::Relaxed);
    STDERR_ID[1].store(id[1], Ordering::Relaxed);
    // SAFETY: duplicates a descriptor; no memory is passed.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, KEPT_STDERR_MIN_FD) };
    KEPT_STDERR.store(fd.max(-1), Ordering::Relaxed);
}

/// Where the statistics at exit go: the standard error the process started with,
/// through fd 2 or the duplicate, whichever still refers to it; nowhere (`-1`) when
/// neither does (or fd 2 was closed at load), rather than into a file of the
/// program's that took the number.
fn stderr_at_exit() -> libc::c_int {
    let id = [
        STDERR_ID[0].load(Ordering::Relaxed),
        STDERR_ID[1].load(Ordering::Relaxed),
    ];
    if id == [0, 0] {
        return -1;
    }
    let kept = KEPT_STDERR.load(Ordering::Relaxed);
    [2, kept]
        .into_iter()
        .find(|&fd| fd >= 0 && file_id(fd) == Some(id))
        .unwrap_or(-1)
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = on_load;

#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = on_unload;

/// A fixed buffer that `write!` fills without allocating.
struct Buf {
    bytes: [u8; 2048],
    len: usize,
}

impl core::fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.bytes.len() - self.len;
        let n = s.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes the statistics to `fd` (nothing if it is negative).
fn write_stats(fd: libc::c_int) {
    use core::fmt::Write as _;
    if fd < 0 {
        return;
    }
    // Allocates nothing: answers when memory is exhausted too.
    let s = restartable_alloc::stats_summary();
    let slots = restartable_alloc::front::mode().map_or(0, |(n, _)| n);
    let mut b = Buf {
        bytes: [0; 2048],
        len: 0,
    };
    let owner = restartable::registration::process_owner();
    let mode = match (s.caches_by_mm_cid, owner) {
        (Some(true), _) => "per-CPU caches indexed by mm_cid",
        (Some(false), _) => "per-CPU caches indexed by CPU",
        (None, None) => "no per-CPU caches: rseq unavailable",
        (None, Some(_)) => "no per-CPU caches set up",
    };
    let areas = match owner {
        Some(restartable::Owner::Libc) => "registered by glibc, ",
        Some(restartable::Owner::Library) => "registered by this library, ",
        None => {
            "none (rseq unavailable here): per-thread caches and the central lists serve every call"
        }
    };
    let found = match owner {
        None => "",
        Some(_) if restartable::registration::AreaOffset::get().is_some() => {
            "found at one offset from the thread pointer"
        }
        Some(_) => "found through a thread-local",
    };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let kib = |x: u64| x.div_ceil(1024);
    let _ = write!(
        b,
        "restartable-malloc statistics (pid {pid}, {mode}):\n\
         \x20 rseq areas        {areas}{found}\n\
         \x20 in use            {:>12} KiB (large objects {} KiB)\n\
         \x20 per-CPU caches    {:>12} KiB in {} slots\n\
         \x20 transfer caches   {:>12} KiB\n\
         \x20 free in spans     {:>12} KiB\n\
         \x20 free pages        {:>12} KiB backed, {} KiB released\n\
         \x20 mapped            {:>12} KiB\n\
         \x20 released in total {:>12} KiB (madvise)\n",
        kib(s.in_use_bytes),
        kib(s.large_bytes),
        kib(s.cpu_cache_bytes),
        slots,
        kib(s.transfer_cache_bytes),
        kib(s.span_free_bytes),
        kib(s.page_heap_free_bytes),
        kib(s.released_bytes),
        kib(s.mapped_bytes),
        kib(s.released_total_bytes),
    );
    // SAFETY: a valid buffer written to a descriptor (a closed one fails).
    unsafe { libc::write(fd, b.bytes.as_ptr().cast(), b.len) };
}
