//! The slab ops ([`super::super::slab`]) in x86_64 inline asm.
//!
//! Unlike the other ops these return a value from inside the sequence (the popped
//! item), and Rust's `asm!` takes no output operand together with a `label` one, so
//! they leave through one end label (`8`) with a result register instead of asm goto
//! exits: 0 committed, 1 compare failed (guard set, array empty or full), 2 aborted
//! (the abort handler sets it), 3 compare-twice failed (hooked build). The descriptor,
//! the signature, the debugger tables and the hooked build's injection points and
//! switches are the other ops' (`start!`, `cpu_check!`, `inj!`, `exit_point!`).

use core::arch::asm;

use super::super::{AsResult, Index, OpResult, Order, Outcome as _};
use crate::hooks::Hooks;
use crate::registration::ThreadArea;

/// Result register values.
const COMMITTED: u32 = 0;
const COMPARE_FAILED: u32 = 1;
const ABORTED: u32 = 2;
const TWICE_FAILED: u32 = 3;

/// The abort handler (label 6, after the signature) and, in hooked builds, the
/// compare-twice exit (label 9): both set the result register and leave by label 8.
macro_rules! slab_tail {
    (plain) => {
        concat!(
            ".pushsection __rseq_failure, \"ax\"\n",
            ".byte 0x0f, 0xb9, 0x3d\n",
            ".long 0x53053053\n",
            "6:\n",
            "movl $2, {res:e}\n",
            "jmp 8b\n",
            ".popsection\n",
        )
    };
    (hooked) => {
        concat!(
            slab_tail!(plain),
            ".pushsection __rseq_failure, \"ax\"\n",
            "9:\n",
            "movl $3, {res:e}\n",
            "jmp 8b\n",
            ".popsection\n",
        )
    };
}

/// The compare-twice exit point of the hooked build (label 9).
macro_rules! slab_exits {
    (plain) => {
        ""
    };
    (hooked) => {
        exit_point!("9f")
    };
}

/// Compare-twice for the slab ops: re-check the CPU and `$extra` (which jumps to 9
/// on a mismatch) when the switch is on.
macro_rules! slab_twice {
    (plain, $extra:expr) => {
        ""
    };
    (hooked, $extra:expr) => {
        concat!(
            "cmpb $0, {flags}+0(%rip)\n",
            "je 86f\n",
            "cmpl {cpu:e}, {cpuoff}({area})\n",
            "jnz 9f\n",
            $extra,
            "86:\n",
        )
    };
}

/// One slab op's asm block: the templates, its operands, and the shared ones.
macro_rules! slab_asm {
    (plain, $I:ident, $area:ident, $cpu:ident, [$($t:expr),* $(,)?], $($ops:tt)*) => {
        asm!(
            $($t),*,
            $($ops)*
            area = in(reg) $area,
            cpu = in(reg) $cpu,
            cpuoff = const $I::OFFSET,
            ckcpu = const $I::CHECK_CPU_ID as u8,
            options(att_syntax, nostack)
        )
    };
    (hooked, $I:ident, $area:ident, $cpu:ident, [$($t:expr),* $(,)?], $($ops:tt)*) => {
        asm!(
            $($t),*,
            $($ops)*
            area = in(reg) $area,
            cpu = in(reg) $cpu,
            cpuoff = const $I::OFFSET,
            ckcpu = const $I::CHECK_CPU_ID as u8,
            loops = sym crate::hooks::LOOPS,
            flags = sym crate::hooks::FLAGS,
            options(att_syntax, nostack)
        )
    };
}

#[inline(always)]
fn result<H: Hooks>(res: u32, cpu: u32) -> OpResult {
    if res == COMMITTED {
        OpResult::Committed
    } else if H::INJECT {
        other_result::<H>(res, cpu)
    } else if res == COMPARE_FAILED {
        OpResult::CompareFailed
    } else {
        OpResult::Aborted { cpu }
    }
}

/// Every result but a commit in hooked builds (where a compare-twice failure ends
/// the process), out of line.
#[cold]
#[inline(never)]
fn other_result<H: Hooks>(res: u32, cpu: u32) -> OpResult {
    if res == COMPARE_FAILED {
        OpResult::CompareFailed
    } else if H::INJECT && res == TWICE_FAILED {
        crate::hooks::compare_twice_failed(
            "the CPU, the guard or the slab header changed before the commit",
        )
    } else {
        debug_assert_eq!(res, ABORTED);
        OpResult::Aborted { cpu }
    }
}

pub(in crate::arch) unsafe fn load_cbne_slab_pop<I: Index, H: Hooks>(
    area: ThreadArea,
    cpu: u32,
    g: *const isize,
    v: *mut isize,
) -> (OpResult, isize) {
    let a = area.as_ptr();
    let res: u32;
    let item: isize;
    macro_rules! go {
        ($m:tt) => {
            slab_asm!($m, I, a, cpu, [
                exit_point!("8f"),
                slab_exits!($m),
                "movl $1, {res:e}\n",
                start!($m),
                cpu_check!($m),
                "cmpq $0, ({g})\n",
                "jnz 8f\n",
                "movq ({v}), {n}\n",
                "testl {n:e}, {n:e}\n",
                "jz 8f\n",
                inj!($m, "16"),
                slab_twice!($m, "cmpq $0, ({g})\njnz 9f\ncmpq {n}, ({v})\njnz 9f\n"),
                // The scratch register (used by the descriptor store and the
                // injection loops before this point) becomes the item.
                "movl {n:e}, {tmp:e}\n",
                "movq ({v},{tmp},8), {tmp}\n",
                "decq {n}\n",
                "movq {n}, ({v})\n",
                "5:\n",
                "xorl {res:e}, {res:e}\n",
                "8:\n",
                slab_tail!($m),
            ],
            tmp = out(reg) item,
            res = out(reg) res,
            n = out(reg) _,
            g = in(reg) g,
            v = in(reg) v,
            )
        };
    }
    // SAFETY: the caller upholds the contract (area registered for this thread, `g`
    // readable, `v` a slab header written only by sequences for `cpu` with its items
    // readable up to its count); the block writes only `area->rseq_cs`, `*v` and the
    // registers it declares.
    unsafe {
        if H::INJECT {
            go!(hooked)
        } else {
            go!(plain)
        }
    }
    (result::<H>(res, cpu), item)
}

pub(in crate::arch) unsafe fn load_cbne_slab_push<I: Index, H: Hooks>(
    area: ThreadArea,
    cpu: u32,
    g: *const isize,
    v: *mut isize,
    item: isize,
) -> OpResult {
    let a = area.as_ptr();
    let res: u32;
    macro_rules! go {
        ($m:tt) => {
            slab_asm!($m, I, a, cpu, [
                exit_point!("8f"),
                slab_exits!($m),
                "movl $1, {res:e}\n",
                start!($m),
                cpu_check!($m),
                "cmpq $0, ({g})\n",
                "jnz 8f\n",
                "movq ({v}), {n}\n",
                // The scratch register is free between the descriptor store and the
                // injection loops: it holds the capacity, then the index.
                "movq {n}, {tmp}\n",
                "shrq $32, {tmp}\n",
                "cmpl {tmp:e}, {n:e}\n",
                "jae 8f\n",
                inj!($m, "16"),
                slab_twice!($m, "cmpq $0, ({g})\njnz 9f\ncmpq {n}, ({v})\njnz 9f\n"),
                "movl {n:e}, {tmp:e}\n",
                "movq {item}, 8({v},{tmp},8)\n",
                inj!($m, "20"),
                "incq {n}\n",
                "movq {n}, ({v})\n",
                "5:\n",
                "xorl {res:e}, {res:e}\n",
                "8:\n",
                slab_tail!($m),
            ],
            tmp = out(reg) _,
            res = out(reg) res,
            n = out(reg) _,
            g = in(reg) g,
            v = in(reg) v,
            item = in(reg) item,
            )
        };
    }
    // SAFETY: as in `load_cbne_slab_pop`; the speculative store is to the item past
    // the count, below the capacity (checked in the sequence), which nobody reads
    // until the commit publishes it.
    unsafe {
        if H::INJECT {
            go!(hooked)
        } else {
            go!(plain)
        }
    }
    result::<H>(res, cpu)
}

#[allow(clippy::too_many_arguments)]
pub(in crate::arch) unsafe fn load_cbne_load_cbne_memcpy_store<I: Index, O: Order, H: Hooks>(
    area: ThreadArea,
    cpu: u32,
    g: *const isize,
    gexpect: isize,
    v: *mut isize,
    expect: isize,
    dst: *mut u8,
    src: *const u8,
    len: usize,
    newv: isize,
) -> OpResult {
    // x86_64 stores are release stores (TSO): both orderings are the same code.
    let _ = O::RELEASE;
    let a = area.as_ptr();
    let k = AsResult(cpu);
    macro_rules! go {
        ($m:tt) => {
            rseq_asm!($m, I, a, cpu, k, [
                exit_point!("{cmpfail}"),
                hooked_exits!($m),
                start!($m),
                cpu_check!($m),
                "cmpq {gexpect}, ({g})\n",
                "jnz {cmpfail}\n",
                "cmpq {expect}, ({v})\n",
                "jnz {cmpfail}\n",
                inj!($m, "16"),
                twice!($m, "cmpq {gexpect}, ({g})\njnz {twice}\ncmpq {expect}, ({v})\njnz {twice}\n"),
                // `rep movsb` can be interrupted between bytes; the kernel then aborts
                // the sequence and nothing is committed.
                "rep movsb\n",
                inj!($m, "20"),
                "movq {newv}, ({v})\n",
                "5:\n",
                abort_handler!(),
            ],
            tmp = out(reg) _,
            g = in(reg) g,
            gexpect = in(reg) gexpect,
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
    // SAFETY: as in `load_cbne_memcpy_store`; `g` is readable (contract).
    unsafe { plain_or_hooked!(H, go) }
    k.committed()
}
