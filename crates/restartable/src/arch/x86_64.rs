//! The op contract of [`super`] in x86_64 inline asm.
//!
//! Each op is one asm block that:
//! - emits its `struct rseq_cs` descriptor into `__rseq_cs` (32-byte aligned, version
//!   0, flags 0), the descriptor's address into `__rseq_cs_ptr_array`, and a
//!   `(start_ip, exit_ip)` pair into `__rseq_exit_point_array` for every exit that is
//!   not the post-commit address; the two arrays carry `SHF_GNU_RETAIN` (`"R"`) so
//!   that `--gc-sections` keeps them in release binaries;
//! - addresses the area relative to the thread pointer (`%fs:off(reg)`, the register
//!   holding [`ThreadArea::fs_offset`], as the reference library addresses glibc's
//!   area with `__rseq_offset`): no area pointer is computed or loaded;
//! - stores the descriptor's address into the area's `rseq_cs` (label `4` is the start
//!   of the sequence), compares the CPU (or mm_cid) field with the one the caller
//!   prepared for (for mm_cid, also checks that `cpu_id` is a CPU: the thread is
//!   still registered), loads and compares, and commits with one store followed by
//!   label `5` (the post-commit address);
//! - puts its abort handler (label `6`) in `__rseq_failure`, right after the
//!   signature, disguised as `ud1 0x53053053(%rip), %edi` like the reference library
//!   so disassemblers stay in sync;
//! - leaves by `label` operands (asm goto): compare failure and abort return their
//!   typed result without any flag or register to test afterwards.
//!
//! Labels are numeric and local (`3`..`9`, `77`, `86`-`89`) so the block survives
//! inlining and duplication: every copy emits its own descriptor. Each op has two
//! builds chosen at compile time by the [`Hooks`] type: `plain` (the bare sequence)
//! and `hooked` (injection loops at points 1-6, the test switches, compare-twice).

use core::arch::asm;

use super::{Index, Order, Outcome, WordArray};
use crate::hooks::Hooks;
use crate::registration::ThreadArea;

/// Delay loop at injection point `$off / 4` (hooked builds only): `LOOPS[n]`
/// iterations of `dec`/`jnz`, using the scratch register.
macro_rules! inj {
    (plain, $off:literal) => {
        ""
    };
    (hooked, $off:literal) => {
        concat!(
            "movl {loops}+",
            $off,
            "(%rip), {tmp:e}\n",
            "testl {tmp:e}, {tmp:e}\n",
            "jle 78f\n",
            "77:\n",
            "decl {tmp:e}\n",
            "jnz 77b\n",
            "78:\n"
        )
    };
}

/// The descriptor, its pointer-array entry, and the start of the sequence (label 4).
macro_rules! start {
    ($mode:tt) => {
        concat!(
            ".pushsection __rseq_cs, \"aw\"\n",
            ".balign 32\n",
            "3:\n",
            ".long 0x0, 0x0\n",
            ".quad 4f, (5f - 4f), 6f\n",
            ".popsection\n",
            ".pushsection __rseq_cs_ptr_array, \"awR\"\n",
            ".quad 3b\n",
            ".popsection\n",
            inj!($mode, "4"),
            "leaq 3b(%rip), {tmp}\n",
            "movq {tmp}, %fs:8({area})\n",
            "4:\n",
        )
    };
}

/// A `(start, exit)` pair for an exit that is not the post-commit address.
macro_rules! exit_point {
    ($label:literal) => {
        concat!(
            ".pushsection __rseq_exit_point_array, \"awR\"\n",
            ".quad 4f, ",
            $label,
            "\n",
            ".popsection\n",
        )
    };
}

/// The exit points every op has in its hooked build (compare-twice failure).
macro_rules! hooked_exits {
    (plain) => {
        ""
    };
    (hooked) => {
        exit_point!("{twice}")
    };
}

/// For an index whose field keeps a valid-looking value once the thread is no
/// longer registered (`mm_cid` reads 0 after unregistration: [`Index::CHECK_CPU_ID`]),
/// also abort unless `cpu_id` is a CPU (below `RSEQ_CPU_ID_REGISTRATION_FAILED`):
/// past the store of `rseq_cs`, a registered thread cannot lose its registration
/// without the kernel aborting the sequence (that takes a signal handler, and
/// delivering the signal aborts), so no commit happens without the kernel's
/// protection. Assembled only for such indexes (`.if`).
macro_rules! registered_check {
    () => {
        concat!(
            ".if {ckcpu}\n",
            "cmpl $0xfffffffe, %fs:4({area})\n",
            "jae 6f\n",
            ".endif\n",
        )
    };
}

/// The CPU check (and the registration check of [`registered_check`]), with the
/// hooked build's switches around it.
macro_rules! cpu_check {
    (plain) => {
        concat!(
            "cmpl {cpu:e}, %fs:{cpuoff}({area})\n",
            "jnz 6f\n",
            registered_check!(),
        )
    };
    (hooked) => {
        concat!(
            inj!(hooked, "8"),
            "cmpb $0, {flags}+1(%rip)\n",
            "jne 89f\n",
            "cmpl {cpu:e}, %fs:{cpuoff}({area})\n",
            "jnz 6f\n",
            "89:\n",
            registered_check!(),
            "cmpb $0, {flags}+2(%rip)\n",
            "je 88f\n",
            "int3\n",
            "88:\n",
            inj!(hooked, "12"),
        )
    };
}

/// Compare-twice: re-check the CPU, then `$extra` (which jumps to `{twice}` on a
/// mismatch), when the switch is on (hooked build only).
macro_rules! twice {
    (plain, $extra:expr) => {
        ""
    };
    (hooked, $extra:expr) => {
        concat!(
            "cmpb $0, {flags}+0(%rip)\n",
            "je 86f\n",
            "cmpl {cpu:e}, %fs:{cpuoff}({area})\n",
            "jnz {twice}\n",
            $extra,
            "86:\n",
        )
    };
}

/// The list pops: `*v` again into the scratch register, which holds it already
/// after the compare in the plain build; the hooked build's delay loop and
/// compare-twice use the register in between.
macro_rules! reload_v {
    (plain) => {
        ""
    };
    (hooked) => {
        "movq ({v}), {tmp}\n"
    };
}

/// Opens the out-of-line section and places the signature just before the abort
/// label (6), as the kernel checks it; the caller writes the handler and its other
/// exits, then `.popsection`.
macro_rules! abort_label {
    () => {
        concat!(
            ".pushsection __rseq_failure, \"ax\"\n",
            ".byte 0x0f, 0xb9, 0x3d\n",
            ".long 0x53053053\n",
            "6:\n",
        )
    };
}

/// The signature and the abort handler (label 6), out of line.
macro_rules! abort_handler {
    () => {
        concat!(abort_label!(), "jmp {abort}\n", ".popsection\n")
    };
}

// The signature literal above must be the registration signature.
const _: () = assert!(crate::abi::SIGNATURE == 0x5305_3053);
const _: () = assert!(crate::abi::OFFSET_RSEQ_CS == 8);
// The literals of `registered_check!`.
const _: () = assert!(crate::abi::OFFSET_CPU_ID == 4);
const _: () = assert!(crate::abi::CPU_ID_REGISTRATION_FAILED == 0xffff_fffe);
const _: () = assert!(crate::hooks::FLAG_COMPARE_TWICE == 0);
const _: () = assert!(crate::hooks::FLAG_SKIP_CPU_CHECK == 1);
const _: () = assert!(crate::hooks::FLAG_TRAP == 2);

/// Emits the asm block of one op for a build: the templates, the op's own operands,
/// and the operands every op shares (the area, the CPU and its field offset, the
/// scratch register, the abort exit), plus the hooked build's.
macro_rules! rseq_asm {
    (plain, $I:ident, $area:ident, $cpu:ident, $k:ident, [$($t:expr),* $(,)?], $($ops:tt)*) => {
        asm!(
            $($t),*,
            $($ops)*
            area = in(reg) $area,
            cpu = in(reg) $cpu,
            cpuoff = const $I::OFFSET,
            ckcpu = const $I::CHECK_CPU_ID as u8,
            abort = label { return $k.aborted() },
            options(att_syntax, nostack)
        )
    };
    (hooked, $I:ident, $area:ident, $cpu:ident, $k:ident, [$($t:expr),* $(,)?], $($ops:tt)*) => {
        asm!(
            $($t),*,
            $($ops)*
            area = in(reg) $area,
            cpu = in(reg) $cpu,
            cpuoff = const $I::OFFSET,
            ckcpu = const $I::CHECK_CPU_ID as u8,
            abort = label { return $k.aborted() },
            loops = sym crate::hooks::LOOPS,
            flags = sym crate::hooks::FLAGS,
            twice = label { crate::hooks::compare_twice_failed("the CPU or a compared value changed before the commit") },
            options(att_syntax, nostack)
        )
    };
}

/// Runs the op's `go!` in the build `H` selects.
macro_rules! plain_or_hooked {
    ($H:ident, $go:ident) => {
        if $H::INJECT {
            $go!(hooked)
        } else {
            $go!(plain)
        }
    };
}

pub(super) unsafe fn load_cbne_store<I: Index, H: Hooks, K>(
    area: ThreadArea,
    cpu: u32,
    v: *mut isize,
    expect: isize,
    newv: isize,
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
                "cmpq {expect}, ({v})\n",
                "jnz {cmpfail}\n",
                inj!($m, "16"),
                twice!($m, "cmpq {expect}, ({v})\njnz {twice}\n"),
                "movq {newv}, ({v})\n",
                "5:\n",
                inj!($m, "20"),
                abort_handler!(),
            ],
            tmp = out(reg) _,
            v = in(reg) v,
            expect = in(reg) expect,
            newv = in(reg) newv,
            cmpfail = label { return k.compare_failed() },
            )
        };
    }
    // SAFETY: the caller upholds the op contract (area registered for this thread,
    // `v` valid and only written by sequences for `cpu`); the block writes only
    // `area->rseq_cs`, `*v` and the scratch register it declares.
    unsafe { plain_or_hooked!(H, go) }
    k.committed()
}

pub(super) unsafe fn load_add_store<I: Index, H: Hooks, K>(
    area: ThreadArea,
    cpu: u32,
    v: *mut isize,
    count: isize,
    k: impl Outcome<K>,
) -> K {
    let a = area.fs_offset();
    // The commit instruction: `incq`/`decq` for the common +1/-1 (measured here at
    // about half the time of `addq %reg, (mem)` in a tight loop), `addq` otherwise.
    // When `count` is a constant (a counter's `inc`) only one variant is emitted.
    macro_rules! go {
        ($m:tt, $commit:literal) => {
            rseq_asm!($m, I, a, cpu, k, [
                hooked_exits!($m),
                start!($m),
                cpu_check!($m),
                twice!($m, ""),
                $commit,
                "5:\n",
                inj!($m, "20"),
                abort_handler!(),
            ],
            tmp = out(reg) _,
            v = in(reg) v,
            count = in(reg) count,
            )
        };
    }
    // SAFETY: as in `load_cbne_store`; the commit is the single `incq`, `decq` or
    // `addq` to `*v` (the `count` operand is unused by the first two).
    unsafe {
        match (H::INJECT, count) {
            (false, 1) => go!(plain, "incq ({v}) /* {count} */\n"),
            (false, -1) => go!(plain, "decq ({v}) /* {count} */\n"),
            (false, _) => go!(plain, "addq {count}, ({v})\n"),
            (true, _) => go!(hooked, "addq {count}, ({v})\n"),
        }
    }
    k.committed()
}

pub(super) unsafe fn load_cbeq_store_add_load_store<I: Index, H: Hooks, K>(
    area: ThreadArea,
    cpu: u32,
    v: *mut isize,
    expectnot: isize,
    voffp: isize,
    load: *mut isize,
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
                "movq ({v}), {tmp}\n",
                "cmpq {tmp}, {expectnot}\n",
                "je {cmpfail}\n",
                inj!($m, "16"),
                twice!($m, "movq ({v}), {tmp}\ncmpq {tmp}, {expectnot}\nje {twice}\n"),
                reload_v!($m),
                "movq {tmp}, ({load})\n",
                "addq {voffp}, {tmp}\n",
                "movq ({tmp}), {tmp}\n",
                "movq {tmp}, ({v})\n",
                "5:\n",
                inj!($m, "20"),
                abort_handler!(),
            ],
            tmp = out(reg) _,
            v = in(reg) v,
            expectnot = in(reg) expectnot,
            voffp = in(reg) voffp,
            load = in(reg) load,
            cmpfail = label { return k.compare_failed() },
            )
        };
    }
    // SAFETY: as in `load_cbne_store`; `*v` (when not `expectnot`) points to a node
    // readable at `voffp` and `load` is the caller's private output (contract).
    unsafe { plain_or_hooked!(H, go) }
    k.committed()
}

pub(super) unsafe fn load_add_load_load_add_store<I: Index, H: Hooks, K>(
    area: ThreadArea,
    cpu: u32,
    ptr: *mut isize,
    off: isize,
    inc: isize,
    k: impl Outcome<K>,
) -> K {
    let a = area.fs_offset();
    macro_rules! go {
        ($m:tt) => {
            rseq_asm!($m, I, a, cpu, k, [
                hooked_exits!($m),
                start!($m),
                cpu_check!($m),
                inj!($m, "16"),
                "movq ({ptr}), {tmp}\n",
                "addq {off}, {tmp}\n",
                "movq ({tmp}), {tmp}\n",
                twice!($m, ""),
                "addq {inc}, ({tmp})\n",
                "5:\n",
                inj!($m, "20"),
                abort_handler!(),
            ],
            tmp = out(reg) _,
            ptr = in(reg) ptr,
            off = in(reg) off,
            inc = in(reg) inc,
            )
        };
    }
    // SAFETY: as in `load_cbne_store`; the two loads follow pointers the contract
    // says are valid, the commit is the single `addq`.
    unsafe { plain_or_hooked!(H, go) }
    k.committed()
}

#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn load_cbne_store_store<I: Index, O: Order, H: Hooks, K>(
    area: ThreadArea,
    cpu: u32,
    v: *mut isize,
    expect: isize,
    v2: *mut isize,
    newv2: isize,
    newv: isize,
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
                "cmpq {expect}, ({v})\n",
                "jnz {cmpfail}\n",
                inj!($m, "16"),
                twice!($m, "cmpq {expect}, ({v})\njnz {twice}\n"),
                "movq {newv2}, ({v2})\n",
                inj!($m, "20"),
                "movq {newv}, ({v})\n",
                "5:\n",
                abort_handler!(),
            ],
            tmp = out(reg) _,
            v = in(reg) v,
            expect = in(reg) expect,
            v2 = in(reg) v2,
            newv2 = in(reg) newv2,
            newv = in(reg) newv,
            cmpfail = label { return k.compare_failed() },
            )
        };
    }
    // SAFETY: as in `load_cbne_store`; `*v2` is the caller's unpublished memory.
    unsafe { plain_or_hooked!(H, go) }
    k.committed()
}

#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn load_cbne_load_cbne_store<I: Index, H: Hooks, K>(
    area: ThreadArea,
    cpu: u32,
    v: *mut isize,
    expect: isize,
    v2: *const isize,
    expect2: isize,
    newv: isize,
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
                "cmpq {expect}, ({v})\n",
                "jnz {cmpfail}\n",
                inj!($m, "16"),
                "cmpq {expect2}, ({v2})\n",
                "jnz {cmpfail}\n",
                inj!($m, "24"),
                twice!($m, "cmpq {expect}, ({v})\njnz {twice}\ncmpq {expect2}, ({v2})\njnz {twice}\n"),
                "movq {newv}, ({v})\n",
                "5:\n",
                inj!($m, "20"),
                abort_handler!(),
            ],
            tmp = out(reg) _,
            v = in(reg) v,
            expect = in(reg) expect,
            v2 = in(reg) v2,
            expect2 = in(reg) expect2,
            newv = in(reg) newv,
            cmpfail = label { return k.compare_failed() },
            )
        };
    }
    // SAFETY: as in `load_cbne_store`; `v2` is readable (contract).
    unsafe { plain_or_hooked!(H, go) }
    k.committed()
}

#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn load_cbne_memcpy_store<I: Index, O: Order, H: Hooks, K>(
    area: ThreadArea,
    cpu: u32,
    v: *mut isize,
    expect: isize,
    dst: *mut u8,
    src: *const u8,
    len: usize,
    newv: isize,
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
                "cmpq {expect}, ({v})\n",
                "jnz {cmpfail}\n",
                inj!($m, "16"),
                twice!($m, "cmpq {expect}, ({v})\njnz {twice}\n"),
                // The copy: `rep movsb` can be interrupted between bytes; the kernel
                // then aborts the sequence and nothing is committed.
                "rep movsb\n",
                inj!($m, "20"),
                "movq {newv}, ({v})\n",
                "5:\n",
                abort_handler!(),
            ],
            tmp = out(reg) _,
            v = in(reg) v,
            expect = in(reg) expect,
            newv = in(reg) newv,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            inout("rcx") len => _,
            cmpfail = label { return k.compare_failed() },
            )
        };
    }
    // Items of 1, 2, 4 or 8 bytes (a word-sized value, a pointer: what the buffer
    // holds) are copied through the scratch register, two `mov`s instead of the
    // `rep movsb` start-up cost. `len` is a constant wherever the op is inlined into
    // a container, so only one variant is emitted.
    macro_rules! go_word {
        ($m:tt, $copy:literal) => {
            rseq_asm!($m, I, a, cpu, k, [
                exit_point!("{cmpfail}"),
                hooked_exits!($m),
                start!($m),
                cpu_check!($m),
                "cmpq {expect}, ({v})\n",
                "jnz {cmpfail}\n",
                inj!($m, "16"),
                twice!($m, "cmpq {expect}, ({v})\njnz {twice}\n"),
                $copy,
                inj!($m, "20"),
                "movq {newv}, ({v})\n",
                "5:\n",
                abort_handler!(),
            ],
            tmp = out(reg) _,
            v = in(reg) v,
            expect = in(reg) expect,
            newv = in(reg) newv,
            src = in(reg) src,
            dst = in(reg) dst,
            cmpfail = label { return k.compare_failed() },
            )
        };
    }
    macro_rules! by_len {
        ($m:tt) => {
            match len {
                8 => go_word!($m, "movq ({src}), {tmp}\nmovq {tmp}, ({dst})\n"),
                4 => go_word!($m, "movl ({src}), {tmp:e}\nmovl {tmp:e}, ({dst})\n"),
                2 => go_word!($m, "movw ({src}), {tmp:x}\nmovw {tmp:x}, ({dst})\n"),
                1 => go_word!($m, "movb ({src}), {tmp:l}\nmovb {tmp:l}, ({dst})\n"),
                _ => go!($m),
            }
        };
    }
    // SAFETY: as in `load_cbne_store`; `src`/`dst` valid for `len` bytes and `dst`
    // unpublished until the commit (contract). The register copies move exactly
    // `len` bytes (the asm reads and writes bytes, whatever they hold). The direction
    // flag is clear on entry to asm (ABI), so `rep movsb` copies forward.
    unsafe { plain_or_hooked!(H, by_len) }
    k.committed()
}

#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn load_cbne_load_cbeq_store_add_load_store<I: Index, H: Hooks, K>(
    area: ThreadArea,
    cpu: u32,
    g: *const isize,
    gexpect: isize,
    v: *mut isize,
    expectnot: isize,
    voffp: isize,
    load: *mut isize,
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
                "cmpq {gexpect}, ({g})\n",
                "jnz {cmpfail}\n",
                "movq ({v}), {tmp}\n",
                "cmpq {tmp}, {expectnot}\n",
                "je {cmpfail}\n",
                inj!($m, "16"),
                twice!($m, "cmpq {gexpect}, ({g})\njnz {twice}\nmovq ({v}), {tmp}\ncmpq {tmp}, {expectnot}\nje {twice}\n"),
                reload_v!($m),
                "movq {tmp}, ({load})\n",
                "addq {voffp}, {tmp}\n",
                "movq ({tmp}), {tmp}\n",
                "movq {tmp}, ({v})\n",
                "5:\n",
                inj!($m, "20"),
                abort_handler!(),
            ],
            tmp = out(reg) _,
            g = in(reg) g,
            gexpect = in(reg) gexpect,
            v = in(reg) v,
            expectnot = in(reg) expectnot,
            voffp = in(reg) voffp,
            load = in(reg) load,
            cmpfail = label { return k.compare_failed() },
            )
        };
    }
    // SAFETY: as in `load_cbeq_store_add_load_store`; `g` is readable (contract).
    unsafe { plain_or_hooked!(H, go) }
    k.committed()
}

/// The word copy of the slot ops: `$len` bytes (1, 2, 4 or 8) from `$from` to `$to`
/// through the scratch register (the asm reads and writes bytes, whatever they hold).
macro_rules! word_copy {
    (8, $from:literal, $to:literal) => {
        concat!("movq ", $from, ", {tmp}\n", "movq {tmp}, ", $to, "\n")
    };
    (4, $from:literal, $to:literal) => {
        concat!("movl ", $from, ", {tmp:e}\n", "movl {tmp:e}, ", $to, "\n")
    };
    (2, $from:literal, $to:literal) => {
        concat!("movw ", $from, ", {tmp:x}\n", "movw {tmp:x}, ", $to, "\n")
    };
    (1, $from:literal, $to:literal) => {
        concat!("movb ", $from, ", {tmp:l}\n", "movb {tmp:l}, ", $to, "\n")
    };
}

/// The guarded list pop on one slot, addressed from the slot's base with constant
/// displacements: `if *(s+GUARD) == 0 && *(s+HEAD) != 0 { *out = *(s+HEAD);
/// *(s+HEAD) = *(*(s+HEAD) + NEXT) }`. The head is loaded once, inside the sequence.
///
/// Unlike the other ops this one leaves through one exit with a register output (an
/// asm block cannot have both on stable Rust): the popped node, or 0 (the guard is
/// set, or the list is empty), 1 (aborted) or 2 (the hooked build's compare-twice
/// check failed); node addresses are never 0, 1 or 2. The node stays in a register
/// (the caller's `out` is a local the compiler keeps there), where a goto form would
/// pass it through memory.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn slot_list_pop<
    I: Index,
    H: Hooks,
    K,
    const GUARD: usize,
    const HEAD: usize,
    const NEXT: usize,
>(
    area: ThreadArea,
    cpu: u32,
    s: *mut u8,
    out: *mut isize,
    k: impl Outcome<K>,
) -> K {
    let a = area.fs_offset();
    let r: usize;
    macro_rules! body {
        ($m:tt, $twice:expr, $twice_exit:expr) => {
            concat!(
                exit_point!("91f"),
                $twice_exit,
                start!($m),
                cpu_check!($m),
                "cmpq $0, {guard}({s})\n",
                "jnz 91f\n",
                "movq {head}({s}), {r}\n",
                "testq {r}, {r}\n",
                "jz 90f\n",
                inj!($m, "16"),
                // Not the guard: a thief may set it at any time, and it is the fence
                // that follows which aborts this sequence.
                $twice,
                "movq {next}({r}), {n}\n",
                "movq {n}, {head}({s})\n",
                "5:\n",
                "90:\n",
                inj!($m, "20"),
                abort_label!(),
                "movl $1, {r:e}\n",
                "jmp 90b\n",
                "91:\n",
                "xorl {r:e}, {r:e}\n",
                "jmp 90b\n",
                "92:\n",
                "movl $2, {r:e}\n",
                "jmp 90b\n",
                ".popsection\n",
            )
        };
    }
    // SAFETY: the caller upholds the contract (area registered for this thread, the
    // slot's words written only by sequences for `cpu` or a thief that stopped it,
    // every non-zero head a node readable at NEXT); the block writes only
    // `area->rseq_cs`, the head and the registers it declares.
    unsafe {
        if H::INJECT {
            asm!(
                body!(
                    hooked,
                    concat!(
                        "cmpb $0, {flags}+0(%rip)\n",
                        "je 86f\n",
                        "cmpl {cpu:e}, %fs:{cpuoff}({area})\n",
                        "jnz 92f\n",
                        "cmpq {r}, {head}({s})\n",
                        "jnz 92f\n",
                        "86:\n",
                    ),
                    exit_point!("92f")
                ),
                tmp = out(reg) _,
                n = out(reg) _,
                r = out(reg) r,
                s = in(reg) s,
                guard = const GUARD,
                head = const HEAD,
                next = const NEXT,
                area = in(reg) a,
                cpu = in(reg) cpu,
                cpuoff = const I::OFFSET,
                ckcpu = const I::CHECK_CPU_ID as u8,
                loops = sym crate::hooks::LOOPS,
                flags = sym crate::hooks::FLAGS,
                options(att_syntax, nostack)
            )
        } else {
            asm!(
                body!(plain, "", ""),
                tmp = out(reg) _,
                n = out(reg) _,
                r = out(reg) r,
                s = in(reg) s,
                guard = const GUARD,
                head = const HEAD,
                next = const NEXT,
                area = in(reg) a,
                cpu = in(reg) cpu,
                cpuoff = const I::OFFSET,
                ckcpu = const I::CHECK_CPU_ID as u8,
                options(att_syntax, nostack)
            )
        }
    }
    if r > 2 {
        // SAFETY: `out` is the caller's private word (contract).
        unsafe { out.write(r as isize) };
        return k.committed();
    }
    match r {
        0 => k.compare_failed(),
        2 if H::INJECT => crate::hooks::compare_twice_failed(
            "the CPU or a compared value changed before the commit",
        ),
        _ => k.aborted(),
    }
}

/// The guarded list push on one slot: `if *(s+GUARD) == 0 { *(node+NEXT) = *(s+HEAD);
/// *(s+HEAD) = node }`, the head loaded inside the sequence.
pub(super) unsafe fn slot_list_push<
    I: Index,
    H: Hooks,
    K,
    const GUARD: usize,
    const HEAD: usize,
    const NEXT: usize,
>(
    area: ThreadArea,
    cpu: u32,
    s: *mut u8,
    node: *mut u8,
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
                "cmpq $0, {guard}({s})\n",
                "jnz {cmpfail}\n",
                inj!($m, "24"),
                "movq {head}({s}), {n}\n",
                // Speculative: the node is the caller's until the commit publishes it.
                "movq {n}, {next}({node})\n",
                inj!($m, "16"),
                twice!($m, "cmpq {n}, {head}({s})\njnz {twice}\n"),
                "movq {node}, {head}({s})\n",
                "5:\n",
                inj!($m, "20"),
                abort_handler!(),
            ],
            tmp = out(reg) _,
            n = out(reg) _,
            s = in(reg) s,
            node = in(reg) node,
            guard = const GUARD,
            head = const HEAD,
            next = const NEXT,
            cmpfail = label { return k.compare_failed() },
            )
        };
    }
    // SAFETY: as in `slot_list_pop`; `node` is the caller's (unpublished) node, whose
    // `next` word nobody reads until the commit publishes it.
    unsafe { plain_or_hooked!(H, go) }
    k.committed()
}

/// The word-array push on one slot: `n = *(s+OFF); if n < CAP { copy LEN bytes from
/// src to s+ITEMS+8n; *(s+OFF) = n + 1 }` (a negative offset, a thief's mark, fails
/// the unsigned compare like a full array).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn slot_word_push<I: Index, O: Order, H: Hooks, K, W: WordArray>(
    area: ThreadArea,
    cpu: u32,
    s: *mut u8,
    src: *const u8,
    k: impl Outcome<K>,
) -> K {
    // x86_64 stores are release stores (TSO): both orderings are the same code.
    let _ = O::RELEASE;
    let a = area.fs_offset();
    macro_rules! go {
        ($m:tt, $len:tt) => {
            rseq_asm!($m, I, a, cpu, k, [
                exit_point!("{cmpfail}"),
                hooked_exits!($m),
                start!($m),
                cpu_check!($m),
                "movq {off}({s}), {n}\n",
                "cmpq ${cap}, {n}\n",
                "jae {cmpfail}\n",
                inj!($m, "16"),
                twice!($m, "cmpq {n}, {off}({s})\njnz {twice}\n"),
                word_copy!($len, "({src})", "{items}({s},{n},8)"),
                inj!($m, "20"),
                "incq {n}\n",
                "movq {n}, {off}({s})\n",
                "5:\n",
                abort_handler!(),
            ],
            tmp = out(reg) _,
            n = out(reg) _,
            s = in(reg) s,
            src = in(reg) src,
            off = const W::OFF,
            items = const W::ITEMS,
            cap = const W::CAP,
            cmpfail = label { return k.compare_failed() },
            )
        };
    }
    macro_rules! by_len {
        ($m:tt) => {
            match W::LEN {
                8 => go!($m, 8),
                4 => go!($m, 4),
                2 => go!($m, 2),
                1 => go!($m, 1),
                _ => unreachable!("slot_word_push: {} bytes", W::LEN),
            }
        };
    }
    // SAFETY: the caller upholds the contract (area registered for this thread, the
    // slot's offset and items written only by sequences for `cpu` or a thief that
    // stopped it, `src` readable for LEN bytes); the copy goes to the item past the
    // published ones, below CAP (checked in the sequence), which nobody reads until
    // the commit publishes it.
    unsafe { plain_or_hooked!(H, by_len) }
    k.committed()
}

/// The word-array pop on one slot: `n = *(s+OFF) - 1; if n >= 0 { copy LEN bytes
/// from s+ITEMS+8n to dst; *(s+OFF) = n }` (an empty array and a thief's negative
/// mark both fail the sign test). The copy and the commit see the same item: no ABA.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn slot_word_pop<I: Index, H: Hooks, K, W: WordArray>(
    area: ThreadArea,
    cpu: u32,
    s: *mut u8,
    dst: *mut u8,
    k: impl Outcome<K>,
) -> K {
    let a = area.fs_offset();
    macro_rules! go {
        ($m:tt, $len:tt) => {
            rseq_asm!($m, I, a, cpu, k, [
                exit_point!("{cmpfail}"),
                hooked_exits!($m),
                start!($m),
                cpu_check!($m),
                "movq {off}({s}), {n}\n",
                "decq {n}\n",
                "js {cmpfail}\n",
                inj!($m, "16"),
                twice!($m, "leaq 1({n}), {tmp}\ncmpq {tmp}, {off}({s})\njnz {twice}\n"),
                word_copy!($len, "{items}({s},{n},8)", "({dst})"),
                inj!($m, "20"),
                "movq {n}, {off}({s})\n",
                "5:\n",
                abort_handler!(),
            ],
            tmp = out(reg) _,
            n = out(reg) _,
            s = in(reg) s,
            dst = in(reg) dst,
            off = const W::OFF,
            items = const W::ITEMS,
            cmpfail = label { return k.compare_failed() },
            )
        };
    }
    macro_rules! by_len {
        ($m:tt) => {
            match W::LEN {
                8 => go!($m, 8),
                4 => go!($m, 4),
                2 => go!($m, 2),
                1 => go!($m, 1),
                _ => unreachable!("slot_word_pop: {} bytes", W::LEN),
            }
        };
    }
    // SAFETY: as in `slot_word_push`; the item read is a published one (below the
    // offset, checked in the sequence) and `dst` is the caller's private space of
    // LEN bytes.
    unsafe { plain_or_hooked!(H, by_len) }
    k.committed()
}

/// [`slot_word_push`] of a word given in a register (a pointer: every byte is
/// initialised), stored with one `movq`.
pub(super) unsafe fn slot_word_push_reg<I: Index, O: Order, H: Hooks, K, W: WordArray>(
    area: ThreadArea,
    cpu: u32,
    s: *mut u8,
    word: usize,
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
                "movq {off}({s}), {n}\n",
                "cmpq ${cap}, {n}\n",
                "jae {cmpfail}\n",
                inj!($m, "16"),
                twice!($m, "cmpq {n}, {off}({s})\njnz {twice}\n"),
                "movq {word}, {items}({s},{n},8)\n",
                inj!($m, "20"),
                "incq {n}\n",
                "movq {n}, {off}({s})\n",
                "5:\n",
                abort_handler!(),
            ],
            tmp = out(reg) _,
            n = out(reg) _,
            s = in(reg) s,
            word = in(reg) word,
            off = const W::OFF,
            items = const W::ITEMS,
            cap = const W::CAP,
            cmpfail = label { return k.compare_failed() },
            )
        };
    }
    // SAFETY: as in `slot_word_push` (the word comes from a register).
    unsafe { plain_or_hooked!(H, go) }
    k.committed()
}

/// [`slot_word_pop`] of a word that is never 0, 1 or 2 (a pointer to a heap object
/// or to an aligned dangling place), returned in a register as [`slot_list_pop`]
/// returns its node: 0 when empty or stopped, 1 when aborted, 2 when the hooked
/// build's compare-twice check failed; `*out` is written on commit.
pub(super) unsafe fn slot_word_pop_reg<I: Index, H: Hooks, K, W: WordArray>(
    area: ThreadArea,
    cpu: u32,
    s: *mut u8,
    out: *mut usize,
    k: impl Outcome<K>,
) -> K {
    let a = area.fs_offset();
    let r: usize;
    macro_rules! body {
        ($m:tt, $twice:expr, $twice_exit:expr) => {
            concat!(
                exit_point!("91f"),
                $twice_exit,
                start!($m),
                cpu_check!($m),
                "movq {off}({s}), {n}\n",
                "decq {n}\n",
                "js 91f\n",
                "movq {items}({s},{n},8), {r}\n",
                inj!($m, "16"),
                $twice,
                inj!($m, "20"),
                "movq {n}, {off}({s})\n",
                "5:\n",
                "90:\n",
                abort_label!(),
                "movl $1, {r:e}\n",
                "jmp 90b\n",
                "91:\n",
                "xorl {r:e}, {r:e}\n",
                "jmp 90b\n",
                "92:\n",
                "movl $2, {r:e}\n",
                "jmp 90b\n",
                ".popsection\n",
            )
        };
    }
    // SAFETY: as in `slot_word_pop`; the block writes only `area->rseq_cs`, the
    // offset and the registers it declares.
    unsafe {
        if H::INJECT {
            asm!(
                body!(
                    hooked,
                    concat!(
                        "cmpb $0, {flags}+0(%rip)\n",
                        "je 86f\n",
                        "cmpl {cpu:e}, %fs:{cpuoff}({area})\n",
                        "jnz 92f\n",
                        "leaq 1({n}), {tmp}\n",
                        "cmpq {tmp}, {off}({s})\n",
                        "jnz 92f\n",
                        "86:\n",
                    ),
                    exit_point!("92f")
                ),
                tmp = out(reg) _,
                n = out(reg) _,
                r = out(reg) r,
                s = in(reg) s,
                off = const W::OFF,
                items = const W::ITEMS,
                area = in(reg) a,
                cpu = in(reg) cpu,
                cpuoff = const I::OFFSET,
                ckcpu = const I::CHECK_CPU_ID as u8,
                loops = sym crate::hooks::LOOPS,
                flags = sym crate::hooks::FLAGS,
                options(att_syntax, nostack)
            )
        } else {
            asm!(
                body!(plain, "", ""),
                tmp = out(reg) _,
                n = out(reg) _,
                r = out(reg) r,
                s = in(reg) s,
                off = const W::OFF,
                items = const W::ITEMS,
                area = in(reg) a,
                cpu = in(reg) cpu,
                cpuoff = const I::OFFSET,
                ckcpu = const I::CHECK_CPU_ID as u8,
                options(att_syntax, nostack)
            )
        }
    }
    if r > 2 {
        // SAFETY: `out` is the caller's private word (contract).
        unsafe { out.write(r) };
        return k.committed();
    }
    match r {
        0 => k.compare_failed(),
        2 if H::INJECT => crate::hooks::compare_twice_failed(
            "the CPU or a compared value changed before the commit",
        ),
        _ => k.aborted(),
    }
}

mod slab;
pub(super) use slab::{
    load_cbne_slab_memcpy_store, load_cbne_slab_pop, load_cbne_slab_push, load_index_slab_pop,
    load_index_slab_push,
};
