//! The slab ops ([`super::super::slab`]) in x86_64 inline asm.
//!
//! Like the other ops these leave by `label` operands (asm goto) only: Rust's `asm!`
//! takes no output operand together with a `label` one, so the pop writes the item it
//! read to the caller's `out` slot inside the sequence (before the commit; the slot is
//! the caller's, usually a local on its stack, which no other thread reads, so the
//! store is harmless when the sequence aborts or fails), and the caller continues in
//! the committed, compare-failed or aborted branch with nothing to dispatch on. The
//! descriptor, the signature, the debugger tables and the hooked build's injection
//! points and switches are the other ops' (`rseq_asm!`, `start!`, `cpu_check!`,
//! `inj!`, `twice!`, `abort_handler!`).

use core::arch::asm;

use super::super::{Index, Order, Outcome};
use crate::hooks::Hooks;
use crate::registration::ThreadArea;

#[allow(clippy::too_many_arguments)]
pub(in crate::arch) unsafe fn load_cbne_slab_pop<I: Index, H: Hooks, K>(
    area: ThreadArea,
    cpu: u32,
    g: *const isize,
    v: *mut isize,
    out: *mut isize,
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
                "cmpq $0, ({g})\n",
                "jnz {cmpfail}\n",
                "movq ({v}), {n}\n",
                "testl {n:e}, {n:e}\n",
                "jz {cmpfail}\n",
                inj!($m, "16"),
                // The guard is not re-checked: another thread may set it at any
                // time, and it is the fence that follows which aborts this sequence.
                twice!($m, "cmpq {n}, ({v})\njnz {twice}\n"),
                // The scratch register (used by the descriptor store and the
                // injection loops before this point) carries the item to `out`.
                "movl {n:e}, {tmp:e}\n",
                "movq ({v},{tmp},8), {tmp}\n",
                "movq {tmp}, ({out})\n",
                "decq {n}\n",
                "movq {n}, ({v})\n",
                "5:\n",
                abort_handler!(),
            ],
            tmp = out(reg) _,
            n = out(reg) _,
            g = in(reg) g,
            v = in(reg) v,
            out = in(reg) out,
            cmpfail = label { return k.compare_failed() },
            )
        };
    }
    // SAFETY: the caller upholds the contract (area registered for this thread, `g`
    // readable, `v` a slab header written only by sequences for `cpu` with its items
    // readable up to its count, `out` writable and read by nobody else); the block
    // writes only `area->rseq_cs`, `*v`, `*out` and the registers it declares.
    unsafe { plain_or_hooked!(H, go) }
    k.committed()
}

pub(in crate::arch) unsafe fn load_cbne_slab_push<I: Index, H: Hooks, K>(
    area: ThreadArea,
    cpu: u32,
    g: *const isize,
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
                "cmpq $0, ({g})\n",
                "jnz {cmpfail}\n",
                "movq ({v}), {n}\n",
                // The scratch register is free between the descriptor store and the
                // injection loops: it holds the capacity, then the index.
                "movq {n}, {tmp}\n",
                "shrq $32, {tmp}\n",
                "cmpl {tmp:e}, {n:e}\n",
                "jae {cmpfail}\n",
                inj!($m, "16"),
                // The guard is not re-checked: another thread may set it at any
                // time, and it is the fence that follows which aborts this sequence.
                twice!($m, "cmpq {n}, ({v})\njnz {twice}\n"),
                "movl {n:e}, {tmp:e}\n",
                "movq {item}, 8({v},{tmp},8)\n",
                inj!($m, "20"),
                "incq {n}\n",
                "movq {n}, ({v})\n",
                "5:\n",
                abort_handler!(),
            ],
            tmp = out(reg) _,
            n = out(reg) _,
            g = in(reg) g,
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
pub(in crate::arch) unsafe fn load_cbne_load_cbne_memcpy_store<I: Index, O: Order, H: Hooks, K>(
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
                "cmpq {gexpect}, ({g})\n",
                "jnz {cmpfail}\n",
                "cmpq {expect}, ({v})\n",
                "jnz {cmpfail}\n",
                inj!($m, "16"),
                // Not the guard: see `load_cbne_slab_pop`.
                twice!($m, "cmpq {expect}, ({v})\njnz {twice}\n"),
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
