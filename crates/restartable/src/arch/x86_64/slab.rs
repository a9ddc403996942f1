//! The slab ops ([`super::super::slab`]) in x86_64 inline asm.
//!
//! The push and the batch copy leave by `label` operands (asm goto), like the other
//! ops. The pop needs its item out, and Rust's `asm!` takes no output operand together
//! with a `label` one: its block is a plain one with two outputs, the item and the
//! count register, which the committed path leaves holding the new count (the first
//! word of an open header less one: below 2^32, never negative) and every other exit
//! (the compare failures, the abort handler, the hooked build's compare-twice) sets
//! to a negative code in a stub out of line
//! before jumping back to the post-commit address. The committed path so keeps the
//! item in a register (no store to the caller's stack and reload) and costs one sign
//! test of a register it writes anyway. The descriptor, the debugger tables and the
//! hooked build's injection points and switches are the other ops' (`start!`,
//! `cpu_check!`, `inj!`, `exit_point!`; `rseq_asm!`, `twice!` and `abort_handler!` for
//! the push and the copy).
//!
//! Each op loads the header's first word whole (64 bits: count and stop half), so the
//! one load and the test it needs anyway also catch a stopped slab: the pop's
//! `count - 1` is negative or overflows (`jl`), the push's count is above any capacity
//! unsigned (`jae`), the batch copy compares the word with the count alone (and a
//! batch in checks its new count against the capacity). Every
//! commit stores the whole word too (the new count and the stop half of 0 the sequence
//! read): a 32-bit store of the count half alone would make the next op's 64-bit load
//! of the word wait for the store to leave the store buffer (a load wider than the
//! store it would forward from: measured, a pop and push of the same class went from
//! 4.6-5.4 to 15.6-16.1 ns per pair). Such a commit can overwrite a stop flag set
//! after its sequence read the word: the stopping thread re-checks its flags after the
//! fence and stops again if one is gone (see the module docs of `slab`). The hooked
//! build's compare-twice reads the count half alone (32 bits): a stop flag set in the
//! window is not a failure of the sequence's own assumptions. The capacity (the second
//! word) is only read, by the push and by a batch in.

use core::arch::asm;

use super::super::{Index, Order, Outcome};
use crate::hooks::Hooks;
use crate::registration::ThreadArea;

/// What the pop's block leaves in its count register when it did not commit (which
/// exit it took): negative, where a committed pop leaves the new count (a 32-bit
/// value, zero-extended).
const POP_CMPFAIL: isize = -1;
const POP_ABORTED: isize = -2;
const POP_TWICE: isize = -3;

/// The pops' post-commit label and the stubs both builds share: aborted (6) and
/// compare failed (7) set their code in the count register `{n}` and jump back to
/// the post-commit address (5).
macro_rules! pop_exits {
    () => {
        concat!(
            "5:\n",
            abort_label!(),
            "movq ${aborted}, {n}\n",
            "jmp 5b\n",
            "7:\n",
            "movq ${cmpfail}, {n}\n",
            "jmp 5b\n",
        )
    };
}

#[allow(clippy::too_many_arguments)]
pub(in crate::arch) unsafe fn load_cbne_slab_pop<I: Index, H: Hooks, K>(
    area: ThreadArea,
    cpu: u32,
    v: *mut isize,
    out: *mut isize,
    k: impl Outcome<K>,
) -> K {
    let a = area.fs_offset();
    let item: isize;
    let status: isize;
    // Not an `asm goto` (which takes no output operand): the item comes out in a
    // register, and the count register says which exit the block took: the new count
    // (at least 0) when it committed; every other exit goes to a stub out of line
    // (with the abort handler, after the signature) that sets it to a negative code
    // and jumps back to the post-commit address (5). So the committed path stores
    // nothing to memory but the header, sets no status, and the caller has no frame
    // to set up for it (the stubs: `pop_exits!`).
    macro_rules! go {
        (plain) => {
            asm!(
                exit_point!("7f"),
                start!(plain),
                cpu_check!(plain),
                // The first word whole: count and stop half.
                "movq ({v}), {n}\n",
                // The new count; the array was empty if that is negative, stopped if
                // the word was negative already (or the subtraction overflowed it):
                // `jl` takes both.
                "subq $1, {n}\n",
                "jl 7f\n",
                "movq 16({v},{n},8), {item}\n",
                // The whole word: the new count, and the stop half of 0 read above.
                "movq {n}, ({v})\n",
                pop_exits!(),
                ".popsection\n",
                tmp = out(reg) _,
                n = out(reg) status,
                item = out(reg) item,
                v = in(reg) v,
                area = in(reg) a,
                cpu = in(reg) cpu,
                cpuoff = const I::OFFSET,
                ckcpu = const I::CHECK_CPU_ID as u8,
                aborted = const POP_ABORTED,
                cmpfail = const POP_CMPFAIL,
                options(att_syntax, nostack)
            )
        };
        (hooked) => {
            asm!(
                exit_point!("7f"),
                exit_point!("85f"),
                start!(hooked),
                cpu_check!(hooked),
                "movq ({v}), {n}\n",
                // Empty (0) or stopped (negative).
                "testq {n}, {n}\n",
                "jle 7f\n",
                inj!(hooked, "16"),
                // The count half alone: the stop half is not re-checked, another
                // thread may set it at any time, and it is the fence that follows
                // which aborts this sequence.
                "cmpb $0, {flags}+0(%rip)\n",
                "je 86f\n",
                "cmpl {cpu:e}, %fs:{cpuoff}({area})\n",
                "jnz 85f\n",
                "cmpl {n:e}, ({v})\n",
                "jnz 85f\n",
                "86:\n",
                "movq 8({v},{n},8), {item}\n",
                "decq {n}\n",
                "movq {n}, ({v})\n",
                pop_exits!(),
                "85:\n",
                "movq ${twice}, {n}\n",
                "jmp 5b\n",
                ".popsection\n",
                tmp = out(reg) _,
                n = out(reg) status,
                item = out(reg) item,
                v = in(reg) v,
                area = in(reg) a,
                cpu = in(reg) cpu,
                cpuoff = const I::OFFSET,
                ckcpu = const I::CHECK_CPU_ID as u8,
                aborted = const POP_ABORTED,
                cmpfail = const POP_CMPFAIL,
                twice = const POP_TWICE,
                loops = sym crate::hooks::LOOPS,
                flags = sym crate::hooks::FLAGS,
                options(att_syntax, nostack)
            )
        };
    }
    // SAFETY: the caller upholds the contract (area registered for this thread, `v` a
    // slab header whose count half is written only by sequences for `cpu`, with its
    // items readable up to its count); the block writes only `area->rseq_cs`, the
    // first word of `*v` and the registers it declares. Its abort handler (label 6)
    // sits after the signature, as every op's.
    unsafe { plain_or_hooked!(H, go) }
    match status {
        0.. => {
            // SAFETY: `out` is the caller's slot for the item (contract).
            unsafe { out.write(item) };
            k.committed()
        }
        POP_CMPFAIL => k.compare_failed(),
        POP_ABORTED => k.aborted(),
        POP_TWICE if H::INJECT => crate::hooks::compare_twice_failed(
            "the CPU or a compared value changed before the commit",
        ),
        _ => k.aborted(),
    }
}

pub(in crate::arch) unsafe fn load_cbne_slab_push<I: Index, H: Hooks, K>(
    area: ThreadArea,
    cpu: u32,
    v: *mut isize,
    item: isize,
    k: impl Outcome<K>,
) -> K {
    let a = area.fs_offset();
    macro_rules! go {
        ($m:tt) => {
            rseq_asm!($m, I, a, cpu, k, [
                exit_point!("{cmpfail}"),
                hooked_exits!($m),
                start!($m),
                cpu_check!($m),
                // The first word whole (count and stop half) against the capacity,
                // the second word (the same line): a stopped slab's word is above any
                // capacity, unsigned.
                "movq ({v}), {n}\n",
                "cmpq 8({v}), {n}\n",
                "jae {cmpfail}\n",
                inj!($m, "16"),
                // The count half alone: the stop half is not re-checked, another
                // thread may set it at any time, and it is the fence that follows
                // which aborts this sequence.
                twice!($m, "cmpl {n:e}, ({v})\njnz {twice}\n"),
                "movq {item}, 16({v},{n},8)\n",
                inj!($m, "20"),
                // The whole word: the new count, and the stop half of 0 read above.
                "incq {n}\n",
                "movq {n}, ({v})\n",
                "5:\n",
                abort_handler!(),
            ],
            tmp = out(reg) _,
            n = out(reg) _,
            v = in(reg) v,
            item = in(reg) item,
            cmpfail = label { return k.compare_failed() },
            )
        };
    }
    // SAFETY: as in `load_cbne_slab_pop`; the speculative store is to the item past
    // the count, below the capacity (checked in the sequence), which nobody reads
    // until the commit publishes it.
    unsafe { plain_or_hooked!(H, go) }
    k.committed()
}

#[allow(clippy::too_many_arguments)]
pub(in crate::arch) unsafe fn load_cbne_slab_memcpy_store<I: Index, O: Order, H: Hooks, K>(
    area: ThreadArea,
    cpu: u32,
    v: *mut isize,
    expect: u32,
    dst: *mut u8,
    src: *const u8,
    len: usize,
    newcount: u32,
    k: impl Outcome<K>,
) -> K {
    // x86_64 stores are release stores (TSO): both orderings are the same code.
    let _ = O::RELEASE;
    let a = area.fs_offset();
    macro_rules! go {
        ($m:tt) => {
            rseq_asm!($m, I, a, cpu, k, [
                exit_point!("{cmpfail}"),
                hooked_exits!($m),
                start!($m),
                cpu_check!($m),
                // The first word whole: the count, and a stop half of 0.
                "cmpq {expect}, ({v})\n",
                "jnz {cmpfail}\n",
                // A batch in may not take the count past the capacity (a second word,
                // which a resize may have lowered since the caller read it); a batch
                // out may (it leaves a slab that was over its capacity less so).
                "cmpq 8({v}), {newcount}\n",
                "jbe 41f\n",
                "cmpq {expect}, {newcount}\n",
                "ja {cmpfail}\n",
                "41:\n",
                inj!($m, "16"),
                // The count half alone: see `load_cbne_slab_pop`.
                twice!($m, "cmpl {expect:e}, ({v})\njnz {twice}\n"),
                // `rep movsb` can be interrupted between bytes; the kernel then aborts
                // the sequence and nothing is committed.
                "rep movsb\n",
                inj!($m, "20"),
                // The whole word: the new count, and the stop half of 0 compared above.
                "movq {newcount}, ({v})\n",
                "5:\n",
                abort_handler!(),
            ],
            tmp = out(reg) _,
            v = in(reg) v,
            // Zero-extended: the stop half must be 0.
            expect = in(reg) expect as u64,
            // Zero-extended: the stop half stays 0.
            newcount = in(reg) newcount as u64,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            inout("rcx") len => _,
            cmpfail = label { return k.compare_failed() },
            )
        };
    }
    // SAFETY: as in `load_cbne_memcpy_store`; the commit writes the header's first
    // word.
    unsafe { plain_or_hooked!(H, go) }
    k.committed()
}

/// The index read of the in-sequence ops ([`load_index_slab_pop`],
/// [`load_index_slab_push`]): the area's index field (`{idxoff}`) into `{$reg:e}`,
/// zero-extended, as its low byte (`{lowbyte}` set: one `movzbl`) or whole (`movl`).
macro_rules! index_read {
    ($reg:literal) => {
        concat!(
            ".if {lowbyte}\n",
            "movzbl %fs:{idxoff}({area}), {",
            $reg,
            ":e}\n",
            ".else\n",
            "movl %fs:{idxoff}({area}), {",
            $reg,
            ":e}\n",
            ".endif\n",
        )
    };
}

/// The in-sequence ops' read of `cpu_id` before the sequence (before the store of its
/// descriptor), into the count register `{n}`, which the sequence writes only after
/// [`registered_always`] has used it.
macro_rules! registered_before {
    () => {
        "movl %fs:4({area}), {n:e}\n"
    };
}

/// The registration check of the in-sequence ops, whatever the index: abort unless
/// `cpu_id` was a CPU both before the sequence ([`registered_before`], in `{n}`) and
/// now, inside it (see `registered_check!`; here there is no prepared index whose
/// compare would fail on an unregistered area, so it is assembled by CPU too). A CPU
/// number is below 2^31, and `RSEQ_CPU_ID_UNINITIALIZED` (-1) and
/// `RSEQ_CPU_ID_REGISTRATION_FAILED` (-2) have the sign bit set: the sign of the two
/// values or-ed is the check, one instruction as the compare alone was.
///
/// Why both: a thread that was not registered before the descriptor store may be
/// registered by a signal handler inside the sequence (library-owned registration
/// at first use); the registration's return to user space then clears `rseq_cs`
/// (the thread is in the handler, outside the sequence), and the sequence would go
/// on after the handler without the kernel's protection, its read inside passing.
/// With the read before, such a sequence aborts. A thread registered at that read
/// and unregistered before the store (a handler's `disable_current_thread`) stays
/// unregistered for good (the library never registers it again), so the read
/// inside catches it; one registered at the store stays protected to the commit (a
/// signal inside the sequence aborts it before any handler runs).
macro_rules! registered_always {
    () => {
        concat!("orl %fs:4({area}), {n:e}\n", "js 6f\n")
    };
}

/// The hooked build's index read: at injection point 2, inside the sequence; with
/// the "skip the CPU check" switch on, the sequence uses the index read before it
/// instead (`early_index` in `slab`, before injection point 9, in `{idx}` on entry),
/// the deliberately broken order (an index read outside the sequence and never
/// compared). Then the registration check, the trap switch and injection point 3.
macro_rules! index_hooked {
    () => {
        concat!(
            inj!(hooked, "8"),
            "cmpb $0, {flags}+1(%rip)\n",
            "jne 81f\n",
            index_read!("idx"),
            "81:\n",
            registered_always!(),
            "cmpb $0, {flags}+2(%rip)\n",
            "je 88f\n",
            "int3\n",
            "88:\n",
            inj!(hooked, "12"),
        )
    };
}

/// The plain build's start of both in-sequence ops, after the descriptor store: the
/// index, read now (a preemption, migration or signal from here to the commit
/// aborts, so it stays the thread's until then), the registration check, the slot's
/// address (`base + (index << SHIFT)` in `{tmp}`), then the header's first word in
/// `{n}` and the header's address in `{tmp}`. The load adds `off` in its address, so
/// the header offset reaches the count with no `add` in between; the `lea` beside it,
/// for the items' addresses, is off that path.
macro_rules! index_header_plain {
    () => {
        concat!(
            index_read!("tmp"),
            registered_always!(),
            "shlq ${shift}, {tmp}\n",
            "addq {base}, {tmp}\n",
            "movq ({tmp},{off},1), {n}\n",
            "leaq ({tmp},{off},1), {tmp}\n",
        )
    };
}

/// The hooked build's counterpart (after `index_hooked!`, the index in `{idx}`): the
/// header's address in `{v}`, its first word in `{n}`.
macro_rules! index_header_hooked {
    () => {
        concat!(
            "movq {idx}, {v}\n",
            "shlq ${shift}, {v}\n",
            "addq {base}, {v}\n",
            "addq {off}, {v}\n",
            "movq ({v}), {n}\n",
        )
    };
}

/// Compare-twice of the in-sequence ops (hooked build, switch on): the index field
/// still holds the index read inside the sequence, and the header's count half is
/// still `{n}`; a mismatch exits to `$fail`.
macro_rules! index_twice {
    ($fail:literal) => {
        concat!(
            "cmpb $0, {flags}+0(%rip)\n",
            "je 86f\n",
            "cmpl {idx:e}, %fs:{idxoff}({area})\n",
            "jnz ",
            $fail,
            "\n",
            "cmpl {n:e}, ({v})\n",
            "jnz ",
            $fail,
            "\n",
            "86:\n",
        )
    };
}

pub(in crate::arch) unsafe fn load_index_slab_pop<
    I: Index,
    H: Hooks,
    K,
    const SHIFT: u32,
    const LOW_BYTE: bool,
>(
    area: ThreadArea,
    base: *mut u8,
    off: usize,
    early: u64,
    out: *mut isize,
    k: impl Outcome<K>,
) -> K {
    let a = area.fs_offset();
    let item: isize;
    let status: isize;
    // The shape of `load_cbne_slab_pop`'s block (see there for the exits), with the
    // index read inside the sequence and the header's address computed from it
    // instead of a CPU compare.
    // SAFETY: the caller upholds the contract of `slab::load_index_slab_pop` (area
    // this thread's; `base + (index << SHIFT)` a slab header for every index the
    // field can hold while the thread is registered, its count half written only by
    // sequences that read that index, its items readable up to the count); the block
    // writes only `area->rseq_cs`, the first word of that header and the registers it
    // declares. Its abort handler (label 6) sits after the signature.
    unsafe {
        if H::INJECT {
            asm!(
                exit_point!("7f"),
                exit_point!("85f"),
                registered_before!(),
                start!(hooked),
                index_hooked!(),
                index_header_hooked!(),
                // Empty (0) or stopped (negative).
                "testq {n}, {n}\n",
                "jle 7f\n",
                inj!(hooked, "16"),
                index_twice!("85f"),
                "movq 8({v},{n},8), {item}\n",
                "decq {n}\n",
                "movq {n}, ({v})\n",
                pop_exits!(),
                "85:\n",
                "movq ${twice}, {n}\n",
                "jmp 5b\n",
                ".popsection\n",
                tmp = out(reg) _,
                // The index read before the sequence (`early_index`), which the
                // switch makes it use; overwritten inside otherwise.
                idx = inout(reg) early => _,
                v = out(reg) _,
                n = out(reg) status,
                item = out(reg) item,
                base = in(reg) base,
                off = in(reg) off,
                area = in(reg) a,
                idxoff = const I::OFFSET,
                lowbyte = const LOW_BYTE as u8,
                shift = const SHIFT,
                aborted = const POP_ABORTED,
                cmpfail = const POP_CMPFAIL,
                twice = const POP_TWICE,
                loops = sym crate::hooks::LOOPS,
                flags = sym crate::hooks::FLAGS,
                options(att_syntax, nostack)
            )
        } else {
            asm!(
                exit_point!("7f"),
                registered_before!(),
                start!(plain),
                // As `load_cbne_slab_pop` from the header's first word on: `jl` for
                // empty or stopped, the whole word stored back.
                index_header_plain!(),
                "subq $1, {n}\n",
                "jl 7f\n",
                "movq 16({tmp},{n},8), {item}\n",
                "movq {n}, ({tmp})\n",
                pop_exits!(),
                ".popsection\n",
                tmp = out(reg) _,
                n = out(reg) status,
                item = out(reg) item,
                base = in(reg) base,
                off = in(reg) off,
                area = in(reg) a,
                idxoff = const I::OFFSET,
                lowbyte = const LOW_BYTE as u8,
                shift = const SHIFT,
                aborted = const POP_ABORTED,
                cmpfail = const POP_CMPFAIL,
                options(att_syntax, nostack)
            )
        }
    }
    match status {
        0.. => {
            // SAFETY: `out` is the caller's slot for the item (contract).
            unsafe { out.write(item) };
            k.committed()
        }
        POP_CMPFAIL => k.compare_failed(),
        POP_ABORTED => k.aborted(),
        POP_TWICE if H::INJECT => {
            crate::hooks::compare_twice_failed("the index or the count changed before the commit")
        }
        _ => k.aborted(),
    }
}

pub(in crate::arch) unsafe fn load_index_slab_push<
    I: Index,
    H: Hooks,
    K,
    const SHIFT: u32,
    const LOW_BYTE: bool,
>(
    area: ThreadArea,
    base: *mut u8,
    off: usize,
    early: u64,
    item: isize,
    k: impl Outcome<K>,
) -> K {
    let a = area.fs_offset();
    // SAFETY: as in `load_index_slab_pop`; the speculative store is to the item past
    // the count, below the capacity (checked in the sequence), which nobody reads
    // until the commit publishes it.
    unsafe {
        if H::INJECT {
            asm!(
                exit_point!("{cmpfail}"),
                exit_point!("{twice}"),
                registered_before!(),
                start!(hooked),
                index_hooked!(),
                index_header_hooked!(),
                "cmpq 8({v}), {n}\n",
                "jae {cmpfail}\n",
                inj!(hooked, "16"),
                index_twice!("{twice}"),
                "movq {item}, 16({v},{n},8)\n",
                inj!(hooked, "20"),
                "incq {n}\n",
                "movq {n}, ({v})\n",
                "5:\n",
                abort_handler!(),
                tmp = out(reg) _,
                // The index read before the sequence (`early_index`), which the
                // switch makes it use; overwritten inside otherwise.
                idx = inout(reg) early => _,
                v = out(reg) _,
                n = out(reg) _,
                base = in(reg) base,
                off = in(reg) off,
                item = in(reg) item,
                area = in(reg) a,
                idxoff = const I::OFFSET,
                lowbyte = const LOW_BYTE as u8,
                shift = const SHIFT,
                loops = sym crate::hooks::LOOPS,
                flags = sym crate::hooks::FLAGS,
                cmpfail = label { return k.compare_failed() },
                abort = label { return k.aborted() },
                twice = label { crate::hooks::compare_twice_failed("the index or the count changed before the commit") },
                options(att_syntax, nostack)
            )
        } else {
            asm!(
                exit_point!("{cmpfail}"),
                registered_before!(),
                start!(plain),
                // As `load_cbne_slab_push` from the header's first word on.
                index_header_plain!(),
                "cmpq 8({tmp}), {n}\n",
                "jae {cmpfail}\n",
                "movq {item}, 16({tmp},{n},8)\n",
                "incq {n}\n",
                "movq {n}, ({tmp})\n",
                "5:\n",
                abort_handler!(),
                tmp = out(reg) _,
                n = out(reg) _,
                base = in(reg) base,
                off = in(reg) off,
                item = in(reg) item,
                area = in(reg) a,
                idxoff = const I::OFFSET,
                lowbyte = const LOW_BYTE as u8,
                shift = const SHIFT,
                cmpfail = label { return k.compare_failed() },
                abort = label { return k.aborted() },
                options(att_syntax, nostack)
            )
        }
    }
    k.committed()
}
