//! CPU affinity masks of any size for the [`set_migrate`](super::set_migrate) move.
//!
//! `libc::cpu_set_t` holds `CPU_SETSIZE` (1024) CPUs: on a machine with more, the
//! kernel refuses it (`EINVAL`) and the move did nothing. A [`CpuMask`] is as large
//! as the kernel's mask: `sched_getaffinity` is asked again with twice the words
//! while it answers `EINVAL` (as glibc's `CPU_ALLOC` callers do). Up to
//! `CPU_SETSIZE` CPUs it is inline; above, in pages of its own (`mmap`, never
//! `malloc`: the move runs inside hooked sequences, in signal handlers and in the
//! allocator's own operations). The words are the kernel's layout: CPU `i` is bit
//! `i % BITS` of word `i / BITS`, in `unsigned long`s.

use core::ptr::NonNull;

/// A word of a mask, as the kernel reads and writes it.
pub(super) type Word = libc::c_ulong;

/// Bits per [`Word`].
pub(super) const BITS: usize = Word::BITS as usize;

/// Words of an inline mask: `CPU_SETSIZE` CPUs, as `cpu_set_t`.
const INLINE_WORDS: usize = 1024 / BITS;

/// The most words asked for (4 Mi CPUs): past it, the move gives up.
const MAX_WORDS: usize = (1 << 22) / BITS;

/// A CPU mask of `len` words (see the module docs).
pub(super) struct CpuMask {
    storage: Storage,
    len: usize,
}

enum Storage {
    Inline([Word; INLINE_WORDS]),
    /// `len` words (rounded up to pages) mapped for this mask alone.
    Mapped(NonNull<Word>),
}

impl CpuMask {
    /// An empty mask of `len` words; `None` if they cannot be mapped.
    fn zeroed(len: usize) -> Option<CpuMask> {
        let storage = if len <= INLINE_WORDS {
            Storage::Inline([0; INLINE_WORDS])
        } else {
            // SAFETY: an anonymous private mapping at an address of the kernel's
            // choice: no existing memory is touched. Zero-filled.
            let p = unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    len * core::mem::size_of::<Word>(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return None;
            }
            Storage::Mapped(NonNull::new(p.cast())?)
        };
        Some(CpuMask { storage, len })
    }

    /// A mask of `words`, copied exactly.
    #[cfg(test)]
    pub(super) fn from_words(words: &[Word]) -> Option<CpuMask> {
        let mut m = CpuMask::zeroed(words.len())?;
        m.words_mut().copy_from_slice(words);
        Some(m)
    }

    /// The mask with only `cpu` set, just long enough to hold it (the kernel takes a
    /// shorter mask than its own as zeros past its end).
    pub(super) fn only(cpu: usize) -> Option<CpuMask> {
        let mut m = CpuMask::zeroed((cpu / BITS + 1).max(1))?;
        m.words_mut()[cpu / BITS] = 1 << (cpu % BITS);
        Some(m)
    }

    /// This thread's affinity mask, as large as the kernel's; `None` if the kernel
    /// refuses for another reason than size, or past [`MAX_WORDS`].
    pub(super) fn of_this_thread() -> Option<CpuMask> {
        CpuMask::read_growing(INLINE_WORDS, |m| {
            // SAFETY: `m` is valid for writes of its length in bytes; 0 is this
            // thread.
            let r = unsafe {
                libc::sched_getaffinity(0, m.len * core::mem::size_of::<Word>(), m.as_mut_ptr())
            };
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
            }
        })
    }

    /// Reads a mask with `get` into `first` words, then twice as many each time it
    /// answers `EINVAL` (the mask is shorter than the kernel's).
    pub(super) fn read_growing(
        first: usize,
        mut get: impl FnMut(&mut CpuMask) -> Result<(), i32>,
    ) -> Option<CpuMask> {
        let mut len = first.max(1);
        loop {
            let mut m = CpuMask::zeroed(len)?;
            match get(&mut m) {
                Ok(()) => return Some(m),
                Err(libc::EINVAL) if len < MAX_WORDS => len *= 2,
                Err(_) => return None,
            }
        }
    }

    /// Makes this mask the calling thread's affinity; whether the kernel took it.
    pub(super) fn apply(&self) -> bool {
        // SAFETY: `self` is valid for reads of its length in bytes; 0 is this thread.
        // On success the kernel has moved the thread off a CPU outside the set on
        // return.
        unsafe {
            libc::sched_setaffinity(0, self.len * core::mem::size_of::<Word>(), self.as_ptr())
        }
        .eq(&0)
    }

    /// The words.
    pub(super) fn words(&self) -> &[Word] {
        match &self.storage {
            Storage::Inline(w) => &w[..self.len],
            // SAFETY: the mapping holds `len` words and lives as long as `self`.
            Storage::Mapped(p) => unsafe { core::slice::from_raw_parts(p.as_ptr(), self.len) },
        }
    }

    fn words_mut(&mut self) -> &mut [Word] {
        match &mut self.storage {
            Storage::Inline(w) => &mut w[..self.len],
            // SAFETY: the mapping holds `len` words, is this mask's alone and lives
            // as long as `self`.
            Storage::Mapped(p) => unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), self.len) },
        }
    }

    fn as_ptr(&self) -> *const libc::cpu_set_t {
        self.words().as_ptr().cast()
    }

    fn as_mut_ptr(&mut self) -> *mut libc::cpu_set_t {
        self.words_mut().as_mut_ptr().cast()
    }
}

impl Drop for CpuMask {
    fn drop(&mut self) {
        if let Storage::Mapped(p) = self.storage {
            // SAFETY: the mapping made in `zeroed` for `len` words, unmapped once.
            unsafe { libc::munmap(p.as_ptr().cast(), self.len * core::mem::size_of::<Word>()) };
        }
    }
}

/// The first CPU set in `words` after `avoid`, cyclically over the whole mask, other
/// than `avoid` itself; `None` if there is none.
pub(super) fn next_after(words: &[Word], avoid: usize) -> Option<usize> {
    let size = words.len() * BITS;
    let is_set = |c: usize| words[c / BITS] & (1 << (c % BITS)) != 0;
    (1..=size)
        .map(|k| (avoid % size.max(1) + k) % size)
        .find(|&c| c != avoid && is_set(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic mask of `len` words with `cpus` set.
    fn mask(len: usize, cpus: &[usize]) -> Vec<Word> {
        let mut w = vec![0; len];
        for &c in cpus {
            w[c / BITS] |= 1 << (c % BITS);
        }
        w
    }

    #[test]
    fn next_after_chooses_another_allowed_cpu_past_cpu_setsize() {
        // 4096 CPUs: bits past 1024 are searched, both ways round.
        let m = mask(4096 / BITS, &[5, 2000, 4095]);
        assert_eq!(next_after(&m, 5), Some(2000));
        assert_eq!(next_after(&m, 2000), Some(4095));
        assert_eq!(next_after(&m, 4095), Some(5));
        assert_eq!(next_after(&m, 1500), Some(2000));
        // Only the CPU read, or nothing: no move.
        assert_eq!(next_after(&mask(4096 / BITS, &[3000]), 3000), None);
        assert_eq!(next_after(&mask(4096 / BITS, &[]), 7), None);
        // The CPU read is past the mask (it was read before a shrink): any set one.
        assert_eq!(next_after(&mask(2, &[1]), 10_000), Some(1));
        assert_eq!(next_after(&[], 0), None);
    }

    #[test]
    fn only_sets_one_cpu_in_a_mask_just_long_enough() {
        for cpu in [0, 63, 64, 1023, 1024, 5000] {
            let m = CpuMask::only(cpu).expect("a mask");
            assert_eq!(m.words().len(), cpu / BITS + 1, "cpu {cpu}");
            assert_eq!(m.words(), mask(cpu / BITS + 1, &[cpu]), "cpu {cpu}");
            assert_eq!(next_after(m.words(), usize::MAX), Some(cpu));
        }
    }

    #[test]
    fn a_copied_mask_is_exact_inline_and_mapped() {
        for len in [
            1,
            INLINE_WORDS,
            INLINE_WORDS + 1,
            4096 / BITS,
            70_000 / BITS,
        ] {
            let cpus: Vec<usize> = (0..len * BITS).filter(|c| c % 7 == 3).collect();
            let w = mask(len, &cpus);
            let m = CpuMask::from_words(&w).expect("a mask");
            assert_eq!(m.words(), &w[..], "{len} words");
        }
    }

    /// A kernel with 3000 CPUs refuses shorter masks: the buffer grows (past the
    /// inline size, into a mapping) until it takes one.
    #[test]
    fn reading_grows_the_mask_while_the_kernel_says_einval() {
        let want = 3000usize.div_ceil(BITS);
        let mut asked = Vec::new();
        let m = CpuMask::read_growing(INLINE_WORDS, |m| {
            asked.push(m.words().len());
            if m.words().len() < want {
                return Err(libc::EINVAL);
            }
            m.words_mut()[2999 / BITS] |= 1 << (2999 % BITS);
            m.words_mut()[0] |= 1;
            Ok(())
        })
        .expect("a mask");
        assert_eq!(asked, [INLINE_WORDS, 2 * INLINE_WORDS, 4 * INLINE_WORDS]);
        assert_eq!(next_after(m.words(), 0), Some(2999));
        assert_eq!(next_after(m.words(), 2999), Some(0));
        // Another error: no mask (the move does nothing).
        assert!(CpuMask::read_growing(1, |_| Err(libc::EPERM)).is_none());
    }

    /// The real call, into a mapped mask larger than the kernel's: the kernel fills
    /// what it has, and the same mask applied back is taken unchanged.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn this_threads_mask_round_trips_through_a_mapped_mask() {
        let Some(own) = CpuMask::of_this_thread() else {
            return;
        };
        let big = CpuMask::read_growing(4 * INLINE_WORDS, |m| {
            // SAFETY: `m` is valid for writes of its length in bytes; 0 is this thread.
            let r = unsafe {
                libc::sched_getaffinity(0, m.len * core::mem::size_of::<Word>(), m.as_mut_ptr())
            };
            if r == 0 {
                Ok(())
            } else {
                Err(libc::EINVAL)
            }
        })
        .expect("a mapped mask");
        assert!(matches!(big.storage, Storage::Mapped(_)));
        let n = own.words().len().min(big.words().len());
        assert_eq!(own.words()[..n], big.words()[..n]);
        assert!(big.words()[n..].iter().all(|&w| w == 0));
        assert!(big.apply(), "the kernel refused this thread's own mask");
        let after = CpuMask::of_this_thread().expect("a mask");
        assert_eq!(after.words(), own.words());
    }
}
