//! Per-thread registration: every thread gets, lazily and exactly once, a usable rseq
//! area or the reason why not.
//!
//! The process decides once who owns registrations:
//! - **libc**: glibc (2.35+) registered an area for every thread; we find it at
//!   `thread pointer + __rseq_offset` and never register again (a second `rseq()` on
//!   the same thread would fail with `EBUSY`/`EINVAL`).
//! - **library**: libc did not register (musl, old glibc,
//!   `GLIBC_TUNABLES=glibc.pthread.rseq=0`, or the kernel refused glibc); each thread
//!   registers its own thread-local area on first use and unregisters it from a
//!   thread-local destructor, before its TLS is freed.
//!
//! Per thread, the state machine is
//! `uninit -> registered | unavailable(reason)`, and `registered -> destroyed` when the
//! thread exits; it never aborts the process and never writes a kernel-owned field.

use core::cell::{Cell, UnsafeCell};
use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicIsize, AtomicU32, AtomicU8, Ordering};

use crate::abi::{self, Rseq};
use crate::sys;

/// Who owns this thread's rseq registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The C library registered the area (glibc 2.35+); the library reuses it.
    Libc,
    /// The library registered its own thread-local area.
    Library,
}

/// Why rseq is unavailable to a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The kernel has no rseq system call (`ENOSYS`: old kernel, valgrind, qemu-user,
    /// a seccomp filter returning `ENOSYS`).
    NoSyscall,
    /// The system call is forbidden (`EPERM`, typically a seccomp filter).
    NotPermitted,
    /// Another component registered an area for this thread (`EBUSY` or `EINVAL`).
    ForeignOwner {
        /// The errno returned by the registration attempt.
        errno: i32,
    },
    /// The C library owns registrations but this thread has none (its registration
    /// failed, or the thread was not created by the C library).
    LibcNotRegistered,
    /// The thread is exiting: its thread-local destructors are running or have run.
    ThreadExiting,
    /// The thread opted out with [`disable_current_thread`].
    Disabled,
    /// This target has no rseq support in this library (only x86_64 Linux today).
    UnsupportedTarget,
    /// Registration failed with another errno.
    Error {
        /// The errno returned by the registration attempt.
        errno: i32,
    },
}

impl Reason {
    fn from_errno(errno: i32) -> Reason {
        match errno {
            libc::ENOSYS => Reason::NoSyscall,
            libc::EPERM => Reason::NotPermitted,
            libc::EBUSY | libc::EINVAL => Reason::ForeignOwner { errno },
            errno => Reason::Error { errno },
        }
    }

    /// A short machine-friendly name (`"enosys"`, `"eperm"`, ...), used by `rseq info`.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::NoSyscall => "enosys",
            Reason::NotPermitted => "eperm",
            Reason::ForeignOwner { .. } => "foreign-owner",
            Reason::LibcNotRegistered => "libc-not-registered",
            Reason::ThreadExiting => "thread-exiting",
            Reason::Disabled => "disabled",
            Reason::UnsupportedTarget => "unsupported-target",
            Reason::Error { .. } => "error",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The kernel itself may have it: valgrind and qemu-user answer ENOSYS too.
            Reason::NoSyscall => f.write_str(
                "no rseq system call (ENOSYS): an old kernel, or valgrind, qemu-user or a \
                 seccomp filter in between",
            ),
            Reason::NotPermitted => f.write_str("the rseq system call is not permitted (EPERM)"),
            Reason::ForeignOwner { errno } => write!(
                f,
                "another component registered rseq for this thread (errno {errno})"
            ),
            Reason::LibcNotRegistered => {
                f.write_str("the C library owns rseq but did not register this thread")
            }
            Reason::ThreadExiting => f.write_str("the thread is exiting"),
            Reason::Disabled => f.write_str("rseq was disabled for this thread"),
            Reason::UnsupportedTarget => {
                f.write_str("rseq is not supported on this target by this library")
            }
            Reason::Error { errno } => write!(f, "rseq registration failed (errno {errno})"),
        }
    }
}

/// The registration state of a thread, as reported by [`crate::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// The thread has a registered area, owned as said.
    Registered(Owner),
    /// The thread cannot use rseq, for the reason given.
    Unavailable(Reason),
}

impl Registration {
    /// `"libc"`, `"library"` or `"unavailable"`.
    pub fn code(&self) -> &'static str {
        match self {
            Registration::Registered(Owner::Libc) => "libc",
            Registration::Registered(Owner::Library) => "library",
            Registration::Unavailable(_) => "unavailable",
        }
    }
}

/// Proof that the current thread has a registered rseq area, and its address.
///
/// `ThreadArea` is `Copy` but neither `Send` nor `Sync`: it cannot leave the thread
/// that obtained it. The area it points to stays mapped for the thread's lifetime.
/// If the thread's registration ends while a `ThreadArea` is kept
/// ([`disable_current_thread`], or thread exit in library-owned mode), the kernel
/// resets `cpu_id` to -1 and `mm_cid` to 0, and every op of [`crate::arch`] given
/// that area aborts, whichever [`Index`](crate::arch::Index) it uses: by CPU, the CPU
/// check fails (and the index -1 is refused); by mm_cid, whose field would still
/// match slot 0, the sequence also checks that `cpu_id` is a CPU. No commit happens
/// without the kernel's protection.
///
/// It holds the area's offset from the thread pointer, not its address: in the
/// default environment (glibc owns registration) that offset is glibc's
/// `__rseq_offset`, the same for every thread, so reaching the area takes no
/// thread-local access at all, and the ops address it as `%fs:field(offset)`.
#[derive(Clone, Copy, Debug)]
pub struct ThreadArea {
    /// Area address minus this thread's thread pointer (wrapping).
    off: isize,
    _not_send: PhantomData<*mut Rseq>,
}

impl ThreadArea {
    /// This thread's registered area, registering it on first use.
    #[inline]
    pub fn current() -> Result<ThreadArea, Reason> {
        imp::current()
    }

    /// This thread's registered area and its current `cpu_id`, read once: the fast
    /// path of every per-CPU operation indexed by CPU.
    #[inline]
    pub fn current_with_cpu() -> Result<(ThreadArea, u32), Reason> {
        imp::current_with_cpu()
    }

    /// This thread's area if it is already registered and usable, without
    /// registering it: no system call, no thread-local destructor, no allocation.
    /// `None` means "not yet registered, or unavailable"; [`current`](Self::current)
    /// tells which (and registers).
    ///
    /// For code that must not re-enter itself through registration, such as a global
    /// allocator: in library-owned mode, registering arms a thread-local destructor,
    /// which may allocate. Such code takes its fast path with this accessor and calls
    /// `current` only from a guarded slow path.
    ///
    /// # Examples
    /// ```
    /// use restartable::ThreadArea;
    ///
    /// let registered = ThreadArea::current().is_ok();
    /// // Once `current` has registered the thread, the accessor finds the area.
    /// assert_eq!(ThreadArea::current_if_registered().is_some(), registered);
    /// ```
    #[inline]
    pub fn current_if_registered() -> Option<ThreadArea> {
        imp::current_if_registered()
    }

    /// Address of the area.
    #[inline(always)]
    pub fn as_ptr(self) -> *mut Rseq {
        imp::thread_pointer()
            .wrapping_offset(self.off)
            .cast::<Rseq>()
    }

    /// The area's offset from the thread pointer (`%fs` on x86_64): the asm operand
    /// of the ops, which address the area's fields as `%fs:field(offset)`.
    #[doc(hidden)]
    #[inline(always)]
    pub fn fs_offset(self) -> isize {
        self.off
    }

    /// A 32-bit field of the area at byte offset `D`, read once.
    #[inline(always)]
    fn field<const D: usize>(self) -> u32 {
        #[cfg(restartable_asm)]
        {
            // SAFETY: the area is this thread's, valid for the thread's lifetime (type
            // invariant), and every field read is 4-byte aligned within it.
            unsafe { sys::read_fs_u32::<D>(self.off) as u32 }
        }
        #[cfg(not(restartable_asm))]
        {
            // SAFETY: as above (no `ThreadArea` exists on such targets).
            unsafe {
                self.as_ptr()
                    .cast::<u8>()
                    .add(D)
                    .cast::<u32>()
                    .read_volatile()
            }
        }
    }

    /// The kernel's current `cpu_id` (one load; may be stale by the time it is used).
    #[inline(always)]
    pub fn cpu_id(self) -> u32 {
        self.field::<{ abi::OFFSET_CPU_ID }>()
    }

    /// The kernel's current `mm_cid` (valid only when [`mm_cid_available`]).
    #[inline(always)]
    pub fn mm_cid(self) -> u32 {
        self.field::<{ abi::OFFSET_MM_CID }>()
    }

    /// The kernel's current `node_id` (valid only when the feature size allows).
    #[inline(always)]
    pub fn node_id(self) -> u32 {
        self.field::<{ abi::OFFSET_NODE_ID }>()
    }

    /// # Safety
    /// `off` must be the offset from the thread pointer of this thread's registered
    /// area.
    #[inline(always)]
    unsafe fn from_offset(off: isize) -> ThreadArea {
        ThreadArea {
            off,
            _not_send: PhantomData,
        }
    }

    /// # Safety
    /// `ptr` must be this thread's registered area.
    #[inline(always)]
    unsafe fn new(ptr: *mut Rseq) -> ThreadArea {
        let off = (ptr as isize).wrapping_sub(imp::thread_pointer() as isize);
        // SAFETY: forwarded contract.
        unsafe { ThreadArea::from_offset(off) }
    }
}

/// The offset of this thread's rseq area from the thread pointer, the same in every
/// thread of the process: what finds the current thread's area with no thread-local
/// access, as `%fs:field(offset)`. It exists once the process has decided who owns
/// registrations (the first [`ThreadArea::current`], or any container's set-up, does)
/// and the areas are at one offset:
/// - where glibc owns registrations (the default on glibc 2.35+): glibc's
///   `__rseq_offset`;
/// - where the library registers its own areas and is linked into the executable (any
///   Rust program): its thread-local area's offset, which the linker fixed. Not in a
///   shared object, whose thread-locals may be allocated per thread on demand.
///
/// Either way every thread has an area there for its whole life, registered or not:
/// one that is not (yet, or any more) registered reads a `cpu_id` that is no CPU, as
/// every accessor below checks.
///
/// For fast paths that must not touch a thread-local at all (a shared object's
/// thread-locals cost a `__tls_get_addr` call): branch on [`AreaOffset::get`] once,
/// and keep the code for `None` (library-owned registration in a shared object, or
/// not decided yet) out of line, using [`ThreadArea::current_if_registered`].
///
/// # Examples
/// ```
/// use restartable::registration::AreaOffset;
/// use restartable::ThreadArea;
///
/// let area = match AreaOffset::get() {
///     Some(off) => off.current_if_registered(),
///     None => ThreadArea::current_if_registered(),
/// };
/// assert_eq!(area.map(|a| a.as_ptr()), ThreadArea::current_if_registered().map(|a| a.as_ptr()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AreaOffset {
    /// Not 0 (see `FS_OFFSET`).
    off: isize,
}

/// [`AreaOffset`]'s name from before it covered library-owned areas (it was glibc's
/// `__rseq_offset` only).
#[deprecated(note = "renamed `AreaOffset`: it also finds the library's own areas")]
pub type LibcOffset = AreaOffset;

impl AreaOffset {
    /// The offset, if the process has decided who owns registrations and its areas
    /// are at one offset (see above); `None` otherwise. One load of a static.
    #[inline(always)]
    pub fn get() -> Option<AreaOffset> {
        let off = FS_OFFSET.load(Ordering::Relaxed);
        (off != 0).then_some(AreaOffset { off })
    }

    /// The offset in bytes (never 0).
    #[inline(always)]
    pub fn bytes(self) -> isize {
        self.off
    }

    /// The offset back from [`bytes`](Self::bytes), for code that keeps it next to
    /// its own set-up (one cache line, one load fewer than [`get`](Self::get)).
    ///
    /// # Safety
    /// `bytes` must be what `bytes()` returned for an `AreaOffset` of this process.
    #[inline(always)]
    pub unsafe fn from_bytes(bytes: isize) -> AreaOffset {
        AreaOffset { off: bytes }
    }

    /// The calling thread's area and its `cpu_id` when `cpu_id < bound`: two loads
    /// (`cpu_id` at `%fs:4(offset)`) and one compare. A thread whose registration
    /// failed, or has not happened yet, reads -2 or -1 there, past any bound: `None`.
    ///
    /// # Safety
    /// `bound` must be at most
    /// [`CPU_ID_REGISTRATION_FAILED`](abi::CPU_ID_REGISTRATION_FAILED): then a
    /// `cpu_id` below it is a CPU number, which the kernel writes only into an area it
    /// maintains for this thread.
    #[inline(always)]
    pub unsafe fn current_with_cpu_below(self, bound: usize) -> Option<(ThreadArea, u32)> {
        let cpu = self.cpu_id();
        // SAFETY: `bound` is at most CPU_ID_REGISTRATION_FAILED (caller) and `cpu` was
        // read from this thread's area at `self.off`.
        unsafe { area_if_cpu_below(self.off, cpu, bound) }
    }

    /// The calling thread's area if it is registered (its `cpu_id` is a CPU).
    #[inline(always)]
    pub fn current_if_registered(self) -> Option<ThreadArea> {
        // Compared as the 32-bit field (one `cmp $-3, %e..`).
        if self.cpu_id_narrow() < abi::CPU_ID_REGISTRATION_FAILED {
            // SAFETY: a CPU number in this thread's area at the offset: the kernel
            // maintains it.
            Some(unsafe { ThreadArea::from_offset(self.off) })
        } else {
            None
        }
    }

    /// The calling thread's area without the check of
    /// [`current_if_registered`](Self::current_if_registered), for a fast path whose
    /// ops index by mm_cid: such an op checks inside its sequence that `cpu_id` is a
    /// CPU ([`Index::CHECK_CPU_ID`](crate::arch::Index::CHECK_CPU_ID)) and aborts
    /// otherwise, exactly as for an area whose registration ended (see
    /// [`ThreadArea`]), so the separate check before it (a load, a compare, a branch)
    /// only sends an unregistered thread to its slow path one attempt sooner.
    ///
    /// # Safety
    /// The area is always mapped, but it may be unregistered (glibc's registration
    /// failed for this thread, or ended late in its exit; in library mode, the thread
    /// has not registered yet, or has unregistered): its
    /// `cpu_id` may read -1 or -2 and its `mm_cid` a stale value or 0. The caller
    /// uses it only with ops (which abort on it) and with an index it bounds itself
    /// (`mm_cid` below its slot count) or that the op reads inside its sequence and
    /// uses only after its registration check (`load_index_slab_pop`/`push`), and its
    /// path after an abort finds out
    /// whether the thread is registered ([`current_if_registered`]) before it tries
    /// again.
    ///
    /// And with the other ops only where glibc owns registrations ([`process_owner`]
    /// is [`Owner::Libc`]), where a thread that is not registered never becomes so.
    /// In library-owned mode a signal handler may register the thread (its first use
    /// of the library) while it runs a sequence it entered unregistered: the
    /// registration's return to user space clears `rseq_cs` (the thread is outside
    /// the sequence then), and after the handler the sequence goes on without the
    /// kernel's protection while its checks of `cpu_id` and `mm_cid` pass. The
    /// in-sequence index ops (`load_index_slab_pop`/`push`) also read `cpu_id` before
    /// their descriptor store and abort unless that read was a CPU too, so they may
    /// take this area whoever owns registrations.
    ///
    /// [`current_if_registered`]: Self::current_if_registered
    #[inline(always)]
    pub unsafe fn current_unchecked(self) -> ThreadArea {
        // SAFETY: this thread's area at the offset (glibc's or the library's own),
        // mapped for its lifetime; not proven registered, which the caller accepts
        // (contract): every op aborts on an unregistered area (see `ThreadArea`).
        unsafe { ThreadArea::from_offset(self.off) }
    }

    /// `cpu_id` of the calling thread's area at the offset, as a plain 32-bit value.
    #[inline(always)]
    fn cpu_id_narrow(self) -> u32 {
        #[cfg(restartable_asm)]
        {
            // SAFETY: as in `cpu_id`.
            unsafe { sys::read_fs_u32_narrow::<{ abi::OFFSET_CPU_ID }>(self.off) }
        }
        #[cfg(not(restartable_asm))]
        {
            abi::CPU_ID_UNINITIALIZED
        }
    }

    /// `cpu_id` of the calling thread's area at the offset (-2 if its registration
    /// failed, -1 if it is not registered), zero-extended.
    #[inline(always)]
    fn cpu_id(self) -> u64 {
        #[cfg(restartable_asm)]
        {
            // SAFETY: an AreaOffset exists only where every thread has an area at this
            // offset, mapped for the thread's lifetime with its `cpu_id` initialized:
            // glibc's (in its thread descriptor, initialized even when registration
            // failed) or the library's own (in the executable's static TLS block,
            // `const`-initialized).
            unsafe { sys::read_fs_u32::<{ abi::OFFSET_CPU_ID }>(self.off) }
        }
        #[cfg(not(restartable_asm))]
        {
            // Never in libc mode on such targets (see `decide_mode_slow`).
            u64::from(abi::CPU_ID_UNINITIALIZED)
        }
    }
}

/// [`AreaOffset`]'s bytes (deciding the mode first), for code that keeps its own copy
/// next to its data: the containers' storage caches it at set-up, so that their fast
/// path has no mode test ([`cached_area_with_cpu_below`]). `None` where the
/// areas are not at one offset (library mode in a shared object).
pub(crate) fn area_offset() -> Option<isize> {
    decide_mode();
    let off = FS_OFFSET.load(Ordering::Relaxed);
    (off != 0).then_some(off)
}

/// The area at `off` with its `cpu_id` when that is below `bound`, else `None`: the
/// one compare of every `*_with_cpu_below` entry. `cpu` is zero-extended, so the
/// compare with `bound` needs no other extension.
///
/// # Safety
/// `bound` must be at most [`CPU_ID_REGISTRATION_FAILED`](abi::CPU_ID_REGISTRATION_FAILED)
/// and `cpu` the `cpu_id` just read from an area of this thread at `off` (glibc's, the
/// library's own, or `UNREGISTERED`): a CPU number there means the kernel maintains
/// that area for this thread (an unregistered one reads -1 or -2).
#[inline(always)]
unsafe fn area_if_cpu_below(off: isize, cpu: u64, bound: usize) -> Option<(ThreadArea, u32)> {
    if cpu < bound as u64 {
        let cpu = cpu as u32;
        // SAFETY: `cpu < bound <= CPU_ID_REGISTRATION_FAILED` (caller).
        unsafe { core::hint::assert_unchecked(cpu < abi::CPU_ID_REGISTRATION_FAILED) };
        // SAFETY: a CPU number in this thread's area at `off` (caller): the kernel
        // maintains that area.
        Some((unsafe { ThreadArea::from_offset(off) }, cpu))
    } else {
        None
    }
}

/// The calling thread's area and `cpu_id` when `cpu_id < bound`, from a cached copy
/// of [`AreaOffset`]'s bytes: one load of `cpu_id` and one compare, no test of the
/// mode (the cache exists only where the areas are at one offset). A thread whose
/// registration failed, or has not happened yet, reads -2 or -1 there, past any
/// bound: `None`.
///
/// # Safety
/// `bound` must be at most [`CPU_ID_REGISTRATION_FAILED`](abi::CPU_ID_REGISTRATION_FAILED),
/// and `off` what [`area_offset`] returned in this process, or 0 with `bound` 0 (a
/// cache not filled yet): the load then reads `%fs:4`, the upper half of the thread
/// control block's self pointer that the x86-64 ABI keeps at `%fs:0`, which is
/// always mapped, and no value is below 0.
#[inline(always)]
pub(crate) unsafe fn cached_area_with_cpu_below(
    off: isize,
    bound: usize,
) -> Option<(ThreadArea, u32)> {
    #[cfg(restartable_asm)]
    {
        // SAFETY: glibc's area of this thread (in its thread descriptor, mapped for
        // the thread's lifetime, `cpu_id` initialised even when registration failed),
        // or the TCB's self pointer when `off` is 0 (caller).
        let cpu = unsafe { sys::read_fs_u32::<{ abi::OFFSET_CPU_ID }>(off) };
        // SAFETY: `bound` is at most CPU_ID_REGISTRATION_FAILED (caller) and `cpu` was
        // read from this thread's area at `off`.
        unsafe { area_if_cpu_below(off, cpu, bound) }
    }
    #[cfg(not(restartable_asm))]
    {
        let _ = (off, bound);
        None
    }
}

/// `RESTARTABLE_OWN_AREA=thread-local`: where the library registers its own areas,
/// find them through the thread-local pointer even where they are at one offset
/// ([`AreaOffset`] is then `None`): the path of a shared object loaded with `dlopen`,
/// for tests and comparisons. Read once, when the mode is decided.
pub const OWN_AREA_VAR: &core::ffi::CStr = c"RESTARTABLE_OWN_AREA";

/// Process-wide decision, made once.
const MODE_UNINIT: u8 = 0;
const MODE_LIBC: u8 = 1;
const MODE_LIBRARY: u8 = 2;
/// Library mode where the system call itself is missing or forbidden for the whole
/// process: threads do not even try.
const MODE_NONE: u8 = 3;

static MODE: AtomicU8 = AtomicU8::new(MODE_UNINIT);
/// The fast way to this thread's area, published when the mode is decided: the
/// offset from the thread pointer at which every thread of the process has its area.
/// In libc mode glibc's `__rseq_offset` (which the slow path reads too); in library
/// mode the offset of `OWN` where that is in the executable's static TLS
/// block (`imp::own_static_offset`). 0 otherwise (mode undecided, or library-owned
/// areas in a shared object), where the fast path reads the cached area pointer from
/// a thread-local instead. Never 0 where set: neither area is at the thread pointer
/// itself (which holds the TCB's self pointer).
static FS_OFFSET: AtomicIsize = AtomicIsize::new(0);
static FEATURE_SIZE: AtomicU32 = AtomicU32::new(0);
/// The reason stored with `MODE_NONE` (an errno).
static NONE_ERRNO: AtomicU32 = AtomicU32::new(0);

/// The feature size usable on registered areas (20 for the original ABI, 28 here).
pub fn feature_size() -> u32 {
    decide_mode();
    FEATURE_SIZE.load(Ordering::Relaxed)
}

/// Whether `mm_cid` is maintained by the kernel for registered areas.
pub fn mm_cid_available() -> bool {
    feature_size() >= abi::FEATURE_SIZE_MM_CID
}

/// Whether `node_id` is maintained by the kernel for registered areas.
pub fn node_id_available() -> bool {
    feature_size() >= abi::FEATURE_SIZE_NODE_ID
}

/// Decides libc-owned or library-owned, once per process.
#[cold]
fn decide_mode_slow() -> u8 {
    let auxv = sys::getauxval(abi::AT_RSEQ_FEATURE_SIZE) as u32;
    let (mode, feature) = match sys::libc_rseq() {
        Some(l) if l.size != 0 && cfg!(restartable_asm) => {
            // Readers only compute their own thread's area from it: no other data is
            // published with it. (An offset of 0, the TCB rather than an area, leaves
            // the static at its 0: the fast paths then take the thread-local path.)
            FS_OFFSET.store(l.offset, Ordering::Relaxed);
            (MODE_LIBC, abi::effective_feature_size(l.size, auxv))
        }
        _ => {
            // Where this library is linked into the executable, its own area is at one
            // offset in every thread: the fast paths then find it as they find glibc's
            // (unless `OWN_AREA_VAR` asks for the thread-local path).
            #[cfg(restartable_asm)]
            if let Some(off) = imp::own_static_offset() {
                if !sys::env_is(OWN_AREA_VAR, b"thread-local") {
                    FS_OFFSET.store(off, Ordering::Relaxed);
                }
            }
            (
                MODE_LIBRARY,
                if auxv == 0 {
                    abi::ORIGINAL_FEATURE_SIZE
                } else {
                    auxv
                },
            )
        }
    };
    FEATURE_SIZE.store(feature, Ordering::Relaxed);
    // Every thread computes the same answer; the first store wins, the rest agree.
    match MODE.compare_exchange(MODE_UNINIT, mode, Ordering::Release, Ordering::Acquire) {
        Ok(_) => mode,
        Err(existing) => existing,
    }
}

#[inline]
fn decide_mode() -> u8 {
    match MODE.load(Ordering::Acquire) {
        MODE_UNINIT => decide_mode_slow(),
        m => m,
    }
}

/// The owner of registrations in this process, deciding it if needed: `None` when the
/// library registers its own areas but the system call is missing for the process.
pub fn process_owner() -> Option<Owner> {
    match decide_mode() {
        MODE_LIBC => Some(Owner::Libc),
        MODE_LIBRARY => Some(Owner::Library),
        _ => None,
    }
}

/// Per-thread state values.
const T_UNINIT: u8 = 0;
const T_REGISTERED: u8 = 1;
const T_UNAVAILABLE: u8 = 2;
const T_DESTROYED: u8 = 3;
const T_DISABLED: u8 = 4;

thread_local! {
    static STATE: Cell<u8> = const { Cell::new(T_UNINIT) };
    static REASON: Cell<Option<Reason>> = const { Cell::new(None) };
    /// Length we registered `OWN` with, for the matching unregistration.
    static OWN_LEN: Cell<u32> = const { Cell::new(0) };
    /// Armed on registration; its destructor unregisters.
    static UNREGISTER: Unregister = const { Unregister };
}

/// The library-owned area: 256 bytes so that any future feature size fits, 64-byte
/// aligned (the kernel asks for 32 today through `AT_RSEQ_ALIGN`).
#[repr(C, align(64))]
struct OwnArea {
    rseq: UnsafeCell<Rseq>,
    _extension: UnsafeCell<[u8; 224]>,
}

const OWN_AREA_SIZE: u32 = core::mem::size_of::<OwnArea>() as u32;
const OWN_AREA_ALIGN: u64 = core::mem::align_of::<OwnArea>() as u64;
const _: () = assert!(OWN_AREA_SIZE == 256);

#[cfg(not(all(restartable_asm, feature = "initial-exec-tls")))]
thread_local! {
    // No destructor and a const initializer: in an executable this is a plain
    // `%fs`-relative access with no lazy-initialization check.
    static OWN: OwnArea = const {
        OwnArea { rseq: UnsafeCell::new(Rseq::new()), _extension: UnsafeCell::new([0; 224]) }
    };
}

/// This thread's library-owned area (`OWN`). It has no destructor: it stays
/// accessible until the thread's TLS block is freed, after every destructor.
#[cfg(not(all(restartable_asm, feature = "initial-exec-tls")))]
#[inline(always)]
fn own_rseq() -> *mut Rseq {
    OWN.with(|own| own.rseq.get())
}

/// The name of the library-owned area with the `initial-exec-tls` feature: one
/// symbol per version of this crate (hidden: each shared object has its own).
#[cfg(all(restartable_asm, feature = "initial-exec-tls"))]
macro_rules! own_symbol {
    () => {
        concat!("__restartable_own_rseq_area_", env!("CARGO_PKG_VERSION"))
    };
}

// With the `initial-exec-tls` feature the library-owned area is a thread-local of
// the initial-exec model, which Rust has no stable attribute for: defined here, in
// `.tdata` with the image of `Rseq::new()` (checked below), and addressed by
// `own_rseq`. Such a thread-local is in static TLS by construction: at one offset
// from every thread's thread pointer, also in a shared object (which must then be
// loaded at program start: `LD_PRELOAD` or a dependency, as for a malloc).
#[cfg(all(restartable_asm, feature = "initial-exec-tls"))]
core::arch::global_asm!(
    ".pushsection .tdata,\"awT\",@progbits",
    ".p2align 6",
    concat!(".globl ", own_symbol!()),
    concat!(".hidden ", own_symbol!()),
    concat!(".type ", own_symbol!(), ",@object"),
    concat!(".size ", own_symbol!(), ",256"),
    concat!(own_symbol!(), ":"),
    // cpu_id_start 0, cpu_id RSEQ_CPU_ID_UNINITIALIZED, the rest 0.
    ".long 0",
    ".long 0xffffffff",
    ".zero 248",
    ".popsection",
    options(att_syntax)
);
#[cfg(all(restartable_asm, feature = "initial-exec-tls"))]
const _: () = {
    let r = Rseq::new();
    assert!(r.cpu_id_start == 0 && r.cpu_id == 0xffff_ffff && abi::OFFSET_CPU_ID == 4);
    assert!(r.rseq_cs == 0 && r.flags == 0 && r.node_id == 0 && r.mm_cid == 0);
    assert!(OWN_AREA_SIZE == 256 && OWN_AREA_ALIGN == 64);
};

/// This thread's library-owned area, the initial-exec thread-local defined above:
/// its offset from the GOT plus the thread pointer (in an executable the linker
/// turns the GOT load into a constant).
#[cfg(all(restartable_asm, feature = "initial-exec-tls"))]
#[inline(always)]
fn own_rseq() -> *mut Rseq {
    let p: *mut Rseq;
    // SAFETY: computes the address of this thread's instance of the area (reads the
    // GOT entry the dynamic linker filled and the TCB's self pointer at %fs:0).
    unsafe {
        core::arch::asm!(
            concat!("movq ", own_symbol!(), "@gottpoff(%rip), {p}"),
            "addq %fs:0, {p}",
            p = out(reg) p,
            options(att_syntax, nostack, pure, readonly)
        );
    }
    p
}

/// Unregisters the library-owned area when the thread exits, before its TLS block can
/// be freed or reused. Its destructor is armed only by a successful registration.
struct Unregister;

impl Drop for Unregister {
    fn drop(&mut self) {
        if STATE.try_with(|s| s.get()).ok() != Some(T_REGISTERED) {
            return;
        }
        // The state first: from here on (a signal handler included) nobody gets this
        // area from `ThreadArea::current`, before the kernel stops protecting it.
        imp::forget_area();
        let _ = STATE.try_with(|s| s.set(T_DESTROYED));
        let _ = REASON.try_with(|r| r.set(Some(Reason::ThreadExiting)));
        let len = OWN_LEN.try_with(|l| l.get()).unwrap_or(0);
        // `OWN` has no destructor, so it is still accessible during TLS teardown.
        // SAFETY: this is the area this thread registered with `len` and the standard
        // signature; after unregistering, the kernel no longer touches it.
        let _ = unsafe { sys::rseq(own_rseq(), len, abi::FLAG_UNREGISTER, abi::SIGNATURE) };
    }
}

/// Length to register the library-owned area with: at least `max(32, feature size)`,
/// rounded up to the kernel's alignment, or the original 32 bytes where that does
/// not fit our area.
fn own_registration_len() -> u32 {
    let feature = FEATURE_SIZE.load(Ordering::Relaxed);
    let align = sys::getauxval(abi::AT_RSEQ_ALIGN).max(32);
    if feature <= abi::ORIGINAL_SIZE || align > OWN_AREA_ALIGN {
        return abi::ORIGINAL_SIZE;
    }
    let len = (u64::from(feature)).div_ceil(align) * align;
    if len <= u64::from(OWN_AREA_SIZE) {
        len as u32
    } else {
        abi::ORIGINAL_SIZE
    }
}

#[cfg(restartable_asm)]
mod imp {
    use super::*;

    /// glibc's area for this thread.
    #[inline(always)]
    pub(super) fn libc_area(offset: isize) -> *mut Rseq {
        sys::thread_pointer().wrapping_offset(offset).cast::<Rseq>()
    }

    #[inline(always)]
    pub(super) fn thread_pointer() -> *mut u8 {
        sys::thread_pointer()
    }

    #[inline(always)]
    fn own_area() -> *mut Rseq {
        own_rseq()
    }

    /// The library-owned area's offset from the thread pointer where it is the same
    /// in every thread: where [`OWN`] is in the main program's thread-local block
    /// (this library is linked into the executable, as for any Rust program). `None`
    /// otherwise: a shared object's thread-locals may be allocated per thread, on
    /// demand, anywhere (`dlopen`).
    ///
    /// Every thread of the process then has its own [`OWN`] at this offset, mapped
    /// for the thread's lifetime, with a `cpu_id` that reads "uninitialized" until the
    /// thread registers it (its `const` initializer) and again once it unregistered
    /// it (the kernel resets the field): what a fast path needs to take the area
    /// unchecked, as it takes glibc's (see [`AreaOffset`]).
    ///
    /// With the `initial-exec-tls` feature the area is in static TLS by construction
    /// (see `own_rseq`), in an executable or a shared object alike.
    pub(super) fn own_static_offset() -> Option<isize> {
        let own = own_area() as usize;
        #[cfg(not(feature = "initial-exec-tls"))]
        {
            let (start, len) = sys::main_program_tls()?;
            if own < start || own + OWN_AREA_SIZE as usize > start + len {
                return None;
            }
        }
        // Below the thread pointer (x86_64 keeps static TLS there), so never 0.
        let off = (own as isize).wrapping_sub(thread_pointer() as isize);
        (off != 0).then_some(off)
    }

    /// What [`AREA`] points at while no area is validated: an area no kernel maintains,
    /// whose `cpu_id` reads "uninitialized", so the fast paths need no null test (the
    /// `cpu_id` check, or a container's bounds check, sends them to the slow path).
    /// Only ever read.
    static UNREGISTERED: Rseq = Rseq::new();

    /// [`UNREGISTERED`]'s address, as [`AREA`] holds it.
    #[inline(always)]
    fn unregistered() -> *mut Rseq {
        (&UNREGISTERED as *const Rseq).cast_mut()
    }

    thread_local! {
        /// This thread's usable area (glibc's or our own), [`UNREGISTERED`] until the
        /// cold path has validated it. No destructor and a const initializer: in an
        /// executable reading it is one `%fs`-relative load.
        static AREA: Cell<*mut Rseq> = const { Cell::new((&UNREGISTERED as *const Rseq).cast_mut()) };
    }

    /// This thread's area (as its offset from the thread pointer) and its `cpu_id`,
    /// unchecked: `cpu_id` is [`CPU_ID_UNINITIALIZED`](abi::CPU_ID_UNINITIALIZED) or
    /// [`CPU_ID_REGISTRATION_FAILED`](abi::CPU_ID_REGISTRATION_FAILED) when the area
    /// is not one the kernel maintains for this thread (including [`UNREGISTERED`],
    /// and glibc's area of a thread whose registration failed).
    ///
    /// In libc mode this is `%fs:4(__rseq_offset)`: the offset from a static, one
    /// load from the area, no thread-local. Otherwise (one predictable branch) the
    /// cached area pointer from the thread-local [`AREA`].
    #[inline(always)]
    fn raw() -> (isize, u64) {
        let off = FS_OFFSET.load(Ordering::Relaxed);
        if off != 0 {
            // SAFETY: a non-zero FS_OFFSET is where every thread of the process has
            // its area: glibc's `__rseq_offset` (in its thread descriptor, reserved
            // and its `cpu_id` initialized even when its registration failed or is
            // disabled) or the library's own in the executable's static TLS block
            // (`const`-initialized), mapped for the thread's lifetime; volatile
            // because the kernel updates it.
            let cpu = unsafe { sys::read_fs_u32::<{ abi::OFFSET_CPU_ID }>(off) };
            (off, cpu)
        } else {
            raw_tls()
        }
    }

    /// [`raw`] where no process-wide offset serves: the thread-local [`AREA`].
    /// (Code that must keep a shared object's `__tls_get_addr` call out of its fast
    /// path branches on [`AreaOffset::get`] itself.)
    #[inline(always)]
    fn raw_tls() -> (isize, u64) {
        let area = AREA.with(|a| a.get());
        // SAFETY: AREA is never null: it starts as UNREGISTERED and is only ever set
        // to a validated area or back to UNREGISTERED.
        unsafe { core::hint::assert_unchecked(!area.is_null()) };
        // SAFETY: AREA is this thread's libc or own area, mapped for the thread's
        // lifetime, or UNREGISTERED; volatile because the kernel updates it.
        let cpu = unsafe { core::ptr::addr_of!((*area).cpu_id).read_volatile() };
        (
            (area as isize).wrapping_sub(sys::thread_pointer() as isize),
            u64::from(cpu),
        )
    }

    /// The cached area pointer and its `cpu_id`, if both are usable.
    #[inline(always)]
    fn fast() -> Option<(isize, u32)> {
        let (area, cpu) = raw();
        // Compared as the 32-bit field (one `cmp $-3, %e..`).
        let cpu = cpu as u32;
        (cpu < abi::CPU_ID_REGISTRATION_FAILED).then_some((area, cpu))
    }

    /// This thread's area and `cpu_id` when `cpu_id < bound`, with no other test:
    /// the fast path of the containers, whose slot count is the bound (a CPU beyond
    /// it, not registered yet, or no rseq at all: `None`, and the caller's slow path
    /// calls [`current_with_cpu`]).
    ///
    /// # Safety
    /// `bound` must be at most [`CPU_ID_REGISTRATION_FAILED`](abi::CPU_ID_REGISTRATION_FAILED):
    /// then a `cpu_id` below it is a CPU number, which the kernel writes only into an
    /// area it maintains for this thread.
    #[inline(always)]
    pub(crate) unsafe fn area_with_cpu_below(bound: usize) -> Option<(ThreadArea, u32)> {
        // `cpu` as 64 bits (zero-extended on both of `raw`'s paths): compared with
        // `bound` without another zero-extension.
        let (area, cpu) = raw();
        // SAFETY: `bound` is at most CPU_ID_REGISTRATION_FAILED (caller) and `cpu` was
        // read from this thread's area at `area`.
        unsafe { area_if_cpu_below(area, cpu, bound) }
    }

    /// As [`area_with_cpu_below`], from the thread-local [`AREA`] only (no test of
    /// the mode): the containers' path once their cached libc offset did not serve
    /// (library mode; or libc mode before the storage is set up, or on a CPU without
    /// a slot, where `AREA` holds glibc's area once validated, else `UNREGISTERED`).
    ///
    /// # Safety
    /// As for [`area_with_cpu_below`].
    #[inline(always)]
    pub(crate) unsafe fn tls_area_with_cpu_below(bound: usize) -> Option<(ThreadArea, u32)> {
        let (area, cpu) = raw_tls();
        // SAFETY: `bound` is at most CPU_ID_REGISTRATION_FAILED (caller) and `cpu` was
        // read from this thread's area at `area`.
        unsafe { area_if_cpu_below(area, cpu, bound) }
    }

    /// The cached area, if usable; never the cold path.
    #[inline(always)]
    pub(super) fn current_if_registered() -> Option<ThreadArea> {
        // SAFETY: a valid cpu_id means the kernel maintains this area.
        fast().map(|(area, _)| unsafe { ThreadArea::from_offset(area) })
    }

    /// The registered area, if this thread has one right now; otherwise the cold path.
    #[inline]
    pub(super) fn current() -> Result<ThreadArea, Reason> {
        current_with_cpu().map(|(area, _)| area)
    }

    /// As [`current`], also returning the `cpu_id` it validated.
    #[inline(always)]
    pub(super) fn current_with_cpu() -> Result<(ThreadArea, u32), Reason> {
        match fast() {
            // SAFETY: a valid cpu_id means the kernel maintains this area.
            Some((area, cpu)) => Ok((unsafe { ThreadArea::from_offset(area) }, cpu)),
            None => {
                let r = current_with_cpu_slow();
                if let Ok((_, cpu)) = r {
                    // SAFETY: the slow path returns only a CPU it checked is one.
                    // Known on both paths, an op's own check of the index
                    // (`arch::valid_index`) compiles to nothing.
                    unsafe { core::hint::assert_unchecked(cpu < abi::CPU_ID_REGISTRATION_FAILED) };
                }
                r
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn current_with_cpu_slow() -> Result<(ThreadArea, u32), Reason> {
        let area = current_slow()?;
        let cpu = area.cpu_id();
        if cpu < abi::CPU_ID_REGISTRATION_FAILED {
            Ok((area, cpu))
        } else {
            // Unregistered since (a signal handler disabled the thread).
            Err(unregistered_reason())
        }
    }

    /// Why this thread's area is not (or no longer) registered.
    #[cold]
    fn unregistered_reason() -> Reason {
        match STATE.try_with(|s| s.get()) {
            Ok(T_DISABLED) => Reason::Disabled,
            Ok(T_UNAVAILABLE) => REASON
                .try_with(|r| r.get())
                .ok()
                .flatten()
                .unwrap_or(Reason::ThreadExiting),
            _ => Reason::ThreadExiting,
        }
    }

    #[cold]
    #[inline(never)]
    fn current_slow() -> Result<ThreadArea, Reason> {
        match decide_mode() {
            MODE_LIBC => {
                let area = libc_area(FS_OFFSET.load(Ordering::Relaxed));
                // SAFETY: glibc's area of this thread.
                let cpu = unsafe { core::ptr::addr_of!((*area).cpu_id).read_volatile() };
                if cpu < abi::CPU_ID_REGISTRATION_FAILED {
                    let _ = AREA.try_with(|a| a.set(area));
                    // SAFETY: as above; the kernel maintains it.
                    Ok(unsafe { ThreadArea::new(area) })
                } else {
                    Err(Reason::LibcNotRegistered)
                }
            }
            MODE_NONE => Err(Reason::from_errno(NONE_ERRNO.load(Ordering::Relaxed) as i32)),
            _ => register_own(),
        }
    }

    /// Library mode: register this thread's own area (once).
    fn register_own() -> Result<ThreadArea, Reason> {
        let state = match STATE.try_with(|s| s.get()) {
            Ok(s) => s,
            Err(_) => return Err(Reason::ThreadExiting),
        };
        match state {
            T_REGISTERED => {
                let area = own_area();
                // SAFETY: this thread's own TLS area (read only).
                let cpu = unsafe { core::ptr::addr_of!((*area).cpu_id).read_volatile() };
                // The state changes before the unregistration, so a registered state
                // has a registered area; the kernel's `cpu_id` says so too.
                if cpu >= abi::CPU_ID_REGISTRATION_FAILED {
                    return Err(unregistered_reason());
                }
                // SAFETY: registered by this thread and not yet unregistered.
                return Ok(unsafe { ThreadArea::new(area) });
            }
            T_UNINIT => {}
            T_DESTROYED => return Err(Reason::ThreadExiting),
            T_DISABLED => return Err(Reason::Disabled),
            _ => return Err(REASON.with(|r| r.get()).unwrap_or(Reason::ThreadExiting)),
        }
        // Arm the destructor first: if that is impossible the thread is exiting, and a
        // registration we could not undo must not be made.
        if UNREGISTER.try_with(|_| ()).is_err() {
            STATE.with(|s| s.set(T_UNAVAILABLE));
            REASON.with(|r| r.set(Some(Reason::ThreadExiting)));
            return Err(Reason::ThreadExiting);
        }
        let len = own_registration_len();
        let area = own_area();
        // SAFETY: `area` is this thread's TLS area, aligned to 64 and 256 bytes long; it
        // stays valid until the `Unregister` destructor armed above unregisters it.
        match unsafe { sys::rseq(area, len, 0, abi::SIGNATURE) } {
            Ok(()) => {
                OWN_LEN.with(|l| l.set(len));
                STATE.with(|s| s.set(T_REGISTERED));
                let _ = AREA.try_with(|a| a.set(area));
                // SAFETY: just registered.
                Ok(unsafe { ThreadArea::new(area) })
            }
            Err(errno) => {
                let reason = Reason::from_errno(errno);
                if matches!(errno, libc::ENOSYS | libc::EPERM) {
                    // The whole process lacks the call: later threads skip the attempt.
                    NONE_ERRNO.store(errno as u32, Ordering::Relaxed);
                    let _ = MODE.compare_exchange(
                        MODE_LIBRARY,
                        MODE_NONE,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                }
                STATE.with(|s| s.set(T_UNAVAILABLE));
                REASON.with(|r| r.set(Some(reason)));
                Err(reason)
            }
        }
    }

    /// See [`super::disable_current_thread`].
    pub(super) fn disable() -> Result<(), DisableError> {
        match decide_mode() {
            // glibc's registration cannot be undone, and checking an opt-out flag
            // would cost every sequence a TLS load: refuse.
            MODE_LIBC => Err(DisableError::LibcOwned),
            _ => {
                let state = STATE
                    .try_with(|s| s.get())
                    .map_err(|_| DisableError::ThreadExiting)?;
                // The state first: from here on (a signal handler included) nobody
                // gets this area from `ThreadArea::current`, before the kernel stops
                // protecting it.
                STATE.with(|s| s.set(T_DISABLED));
                let area = AREA.try_with(|a| a.replace(unregistered()));
                if state == T_REGISTERED {
                    // SAFETY: the area this thread registered with these arguments.
                    let r = unsafe {
                        sys::rseq(
                            own_area(),
                            OWN_LEN.with(|l| l.get()),
                            abi::FLAG_UNREGISTER,
                            abi::SIGNATURE,
                        )
                    };
                    if r.is_err() {
                        // Still registered: back to the registered state.
                        STATE.with(|s| s.set(T_REGISTERED));
                        if let Ok(area) = area {
                            let _ = AREA.try_with(|a| a.set(area));
                        }
                        return Err(DisableError::ThreadExiting);
                    }
                }
                Ok(())
            }
        }
    }

    /// The CPU this thread runs on: one TLS load (the area pointer) and the load of
    /// `cpu_id` when registered.
    #[inline]
    pub(crate) fn current_cpu() -> u32 {
        match fast() {
            Some((_, cpu)) => cpu,
            None => current_cpu_slow(),
        }
    }

    /// See [`super::prepare_unload`].
    pub(super) fn prepare_unload() {
        let area = match fast() {
            // The area the fast path finds (glibc's, or the cached own area).
            Some((off, _)) => libc_area(off),
            None => AREA.try_with(|a| a.get()).unwrap_or(unregistered()),
        };
        if area != unregistered() {
            // SAFETY: an AREA other than UNREGISTERED is this thread's area, mapped for the thread's
            // lifetime; `rseq_cs` is the field user space writes (the kernel only
            // reads it, and clears it), 8-byte aligned.
            unsafe { core::ptr::addr_of_mut!((*area).rseq_cs).write_volatile(0) };
        }
    }

    /// Forgets the cached area (thread exit).
    pub(super) fn forget_area() {
        let _ = AREA.try_with(|a| a.set(unregistered()));
    }

    #[cold]
    #[inline(never)]
    fn current_cpu_slow() -> u32 {
        match current() {
            Ok(area) => {
                let cpu = area.cpu_id();
                if cpu < abi::CPU_ID_REGISTRATION_FAILED {
                    cpu
                } else {
                    sys::getcpu_fallback()
                }
            }
            Err(_) => sys::getcpu_fallback(),
        }
    }
}

#[cfg(not(restartable_asm))]
mod imp {
    use super::*;

    pub(super) fn current() -> Result<ThreadArea, Reason> {
        Err(Reason::UnsupportedTarget)
    }

    pub(super) fn current_with_cpu() -> Result<(ThreadArea, u32), Reason> {
        Err(Reason::UnsupportedTarget)
    }

    pub(super) fn current_if_registered() -> Option<ThreadArea> {
        None
    }

    pub(super) fn disable() -> Result<(), DisableError> {
        let _ = STATE.try_with(|s| s.set(T_DISABLED));
        Ok(())
    }

    #[inline]
    pub(crate) fn current_cpu() -> u32 {
        sys::getcpu_fallback()
    }

    pub(super) fn forget_area() {}

    pub(super) fn prepare_unload() {}

    /// No thread pointer is used on this target (no `ThreadArea` exists).
    #[inline(always)]
    pub(super) fn thread_pointer() -> *mut u8 {
        core::ptr::null_mut()
    }

    /// No area exists on this target.
    ///
    /// # Safety
    /// None needed here; `unsafe` to match the rseq target's contract.
    #[inline(always)]
    pub(crate) unsafe fn area_with_cpu_below(_bound: usize) -> Option<(ThreadArea, u32)> {
        None
    }

    /// No area exists on this target.
    ///
    /// # Safety
    /// None needed here; `unsafe` to match the rseq target's contract.
    #[inline(always)]
    pub(crate) unsafe fn tls_area_with_cpu_below(_bound: usize) -> Option<(ThreadArea, u32)> {
        None
    }
}

pub(crate) use imp::{area_with_cpu_below, current_cpu, tls_area_with_cpu_below};

/// This thread's registration state, registering on first use.
pub fn current_registration() -> Registration {
    match ThreadArea::current() {
        Ok(_) => Registration::Registered(match decide_mode() {
            MODE_LIBC => Owner::Libc,
            _ => Owner::Library,
        }),
        Err(reason) => Registration::Unavailable(reason),
    }
}

/// Why [`disable_current_thread`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisableError {
    /// The C library owns this thread's registration; it cannot be given up.
    LibcOwned,
    /// The thread is exiting.
    ThreadExiting,
}

impl fmt::Display for DisableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisableError::LibcOwned => f.write_str(
                "the C library owns rseq registrations (set GLIBC_TUNABLES=glibc.pthread.rseq=0 to let the library own them)",
            ),
            DisableError::ThreadExiting => f.write_str("the thread is exiting"),
        }
    }
}

impl std::error::Error for DisableError {}

/// Stops this thread from using rseq through this library: afterwards
/// [`ThreadArea::current`] reports [`Reason::Disabled`] and every container takes its
/// shared fallback path on this thread. Only in library-owned mode: the thread's own
/// area is unregistered (or never registered). Where the C library owns the
/// registration it returns [`DisableError::LibcOwned`]. Meant for tests of mixed mode
/// (the reference stress test's `-D`) and for threads that must not run sequences.
///
/// A [`ThreadArea`] obtained before stays harmless: the thread leaves the registered
/// state before its area is unregistered, and every op given the old area aborts.
pub fn disable_current_thread() -> Result<(), DisableError> {
    imp::disable()
}

/// Clears this thread's `rseq_cs`, which still points to the descriptor of the last
/// sequence the thread ran (until the kernel clears it at the thread's next
/// preemption or signal, or another sequence replaces it). Call it on every thread
/// that ran sequences of a shared object, after its last one and from code that stays
/// loaded, before the object is unloaded (`dlclose`): otherwise the kernel may read a
/// descriptor from unmapped memory and kill the thread (see the crate docs,
/// "Soundness"). Harmless anywhere else: a sequence stores its own descriptor again.
#[doc(alias = "rseq_prepare_unload")]
#[doc(alias = "rseq_clear_rseq_cs")]
pub fn prepare_unload() {
    imp::prepare_unload()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_codes_and_messages() {
        for r in [
            Reason::NoSyscall,
            Reason::NotPermitted,
            Reason::ForeignOwner { errno: libc::EBUSY },
            Reason::LibcNotRegistered,
            Reason::ThreadExiting,
            Reason::Disabled,
            Reason::UnsupportedTarget,
            Reason::Error { errno: 5 },
        ] {
            assert!(!r.code().is_empty());
            assert!(!r.to_string().is_empty());
        }
        // Under valgrind the kernel has the call: the text must not say it has not.
        let enosys = Reason::NoSyscall.to_string();
        assert!(
            enosys.contains("(ENOSYS)")
                && enosys.contains("valgrind")
                && !enosys.contains("the kernel has no"),
            "{enosys}"
        );
        assert_eq!(Reason::from_errno(libc::ENOSYS), Reason::NoSyscall);
        assert_eq!(Reason::from_errno(libc::EPERM), Reason::NotPermitted);
        assert_eq!(
            Reason::from_errno(libc::EINVAL),
            Reason::ForeignOwner {
                errno: libc::EINVAL
            }
        );
    }

    #[test]
    fn disabled_thread_reports_disabled() {
        std::thread::spawn(|| {
            if process_owner() == Some(Owner::Libc) {
                assert_eq!(disable_current_thread(), Err(DisableError::LibcOwned));
                return;
            }
            disable_current_thread().unwrap();
            assert!(ThreadArea::current().is_err());
            // current_cpu keeps working through the fallback.
            let cpu = crate::current_cpu() as usize;
            assert!(cpu < crate::possible_cpus());
        })
        .join()
        .unwrap();
    }

    /// A thread whose glibc registration failed reads -2 (or -1) at glibc's offset:
    /// the offset's fast path must refuse it (any bound allowed), and accept a CPU.
    /// Simulated with an area of this test's own, at its offset from the thread
    /// pointer, since glibc never fails on this machine.
    #[cfg(restartable_asm)]
    #[test]
    fn area_offset_refuses_an_unregistered_area() {
        thread_local! {
            static FAKE: UnsafeCell<Rseq> = const { UnsafeCell::new(Rseq::new()) };
        }
        std::thread::spawn(|| {
            let area = FAKE.with(|f| f.get());
            let off = (area as isize).wrapping_sub(sys::thread_pointer() as isize);
            // SAFETY: a test offset to memory of this thread that stays mapped while
            // the thread runs (only read through it here).
            let fake = unsafe { AreaOffset::from_bytes(off) };
            let max = abi::CPU_ID_REGISTRATION_FAILED as usize;
            for cpu in [abi::CPU_ID_REGISTRATION_FAILED, abi::CPU_ID_UNINITIALIZED] {
                // SAFETY: this thread's own test area.
                unsafe { core::ptr::addr_of_mut!((*area).cpu_id).write_volatile(cpu) };
                assert!(
                    fake.current_if_registered().is_none(),
                    "cpu_id {cpu:#x} accepted"
                );
                // SAFETY: the largest bound the contract allows.
                assert!(unsafe { fake.current_with_cpu_below(max) }.is_none());
            }
            // SAFETY: as above.
            unsafe { core::ptr::addr_of_mut!((*area).cpu_id).write_volatile(3) };
            // SAFETY: as above.
            let (found, cpu) = unsafe { fake.current_with_cpu_below(max) }.expect("a CPU");
            assert_eq!((found.as_ptr(), cpu, found.cpu_id()), (area, 3, 3));
            // SAFETY: a bound below the contract's limit.
            let below_3 = unsafe { fake.current_with_cpu_below(3) };
            assert!(below_3.is_none(), "bound not checked");
        })
        .join()
        .unwrap();
    }

    /// Where glibc owns registration, and in library mode in an executable, the
    /// offset path and the general one find the same area, in every thread.
    #[test]
    fn area_offset_matches_the_registered_area() {
        let check = || {
            let general = ThreadArea::current().ok().map(|a| a.as_ptr());
            match (process_owner(), AreaOffset::get()) {
                (Some(Owner::Libc), Some(off)) => {
                    assert_eq!(off.current_if_registered().map(|a| a.as_ptr()), general);
                    let glibc = sys::libc_rseq().expect("libc mode: glibc's symbols");
                    assert_eq!(off.bytes(), glibc.offset);
                }
                (Some(Owner::Libc), None) => panic!("libc mode without an offset"),
                // This test binary is an executable: the library's own areas are in
                // its static TLS block, at one offset.
                (Some(Owner::Library), Some(off)) => {
                    assert_eq!(off.current_if_registered().map(|a| a.as_ptr()), general);
                    #[cfg(restartable_asm)]
                    assert_eq!(imp::own_static_offset(), Some(off.bytes()));
                }
                // Without the asm backend nothing registers, and no offset is kept.
                (Some(Owner::Library), None) => {
                    #[cfg(restartable_asm)]
                    panic!("library mode without an offset");
                }
                // No rseq for the process (decided after library mode: the offset
                // may exist), and no area there registered.
                (None, off) => assert!(off.and_then(|o| o.current_if_registered()).is_none()),
            }
        };
        check();
        std::thread::spawn(check).join().unwrap();
    }

    #[test]
    fn current_if_registered_never_registers() {
        std::thread::spawn(|| {
            // A fresh thread in library-owned mode has no area until `current`.
            if process_owner() == Some(Owner::Library) {
                assert!(ThreadArea::current_if_registered().is_none());
                assert_eq!(STATE.with(|s| s.get()), T_UNINIT, "the accessor registered");
            }
            let registered = ThreadArea::current();
            match registered {
                Ok(area) => {
                    let found = ThreadArea::current_if_registered().expect("registered");
                    assert_eq!(found.as_ptr(), area.as_ptr());
                }
                Err(_) => assert!(ThreadArea::current_if_registered().is_none()),
            }
        })
        .join()
        .unwrap();
    }
}
