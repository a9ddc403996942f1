//! The op contract on targets without rseq asm (everything but x86_64 Linux today).
//!
//! On these targets [`ThreadArea::current`] always reports
//! [`Reason::UnsupportedTarget`](crate::Reason::UnsupportedTarget), so no caller can
//! hold the `ThreadArea` these functions take, and containers always run their shared
//! fallback paths. The functions exist so that code written against the contract
//! builds everywhere; they commit nothing and report an abort.

use super::{Index, Order, Outcome, WordArray};
use crate::hooks::Hooks;
use crate::registration::ThreadArea;

macro_rules! unavailable_op {
    ($name:ident < $($g:ident : $b:ident),* > ( $($arg:ident : $ty:ty),* )) => {
        #[allow(clippy::too_many_arguments, clippy::extra_unused_type_parameters)]
        pub(super) unsafe fn $name<$($g: $b),*, K>(
            _area: ThreadArea, cpu: u32, $($arg: $ty,)* k: impl Outcome<K>,
        ) -> K {
            let _ = cpu;
            $(let _ = $arg;)*
            k.aborted()
        }
    };
}

unavailable_op!(load_cbne_store<I: Index, H: Hooks>(v: *mut isize, expect: isize, newv: isize));
unavailable_op!(load_add_store<I: Index, H: Hooks>(v: *mut isize, count: isize));
unavailable_op!(load_cbeq_store_add_load_store<I: Index, H: Hooks>(
    v: *mut isize, expectnot: isize, voffp: isize, load: *mut isize));
unavailable_op!(load_add_load_load_add_store<I: Index, H: Hooks>(ptr: *mut isize, off: isize, inc: isize));
unavailable_op!(load_cbne_store_store<I: Index, O: Order, H: Hooks>(
    v: *mut isize, expect: isize, v2: *mut isize, newv2: isize, newv: isize));
unavailable_op!(load_cbne_load_cbne_store<I: Index, H: Hooks>(
    v: *mut isize, expect: isize, v2: *const isize, expect2: isize, newv: isize));
unavailable_op!(load_cbne_memcpy_store<I: Index, O: Order, H: Hooks>(
    v: *mut isize, expect: isize, dst: *mut u8, src: *const u8, len: usize, newv: isize));
unavailable_op!(load_cbne_load_cbeq_store_add_load_store<I: Index, H: Hooks>(
    g: *const isize, gexpect: isize, v: *mut isize, expectnot: isize, voffp: isize, load: *mut isize));

unavailable_op!(load_cbne_slab_pop<I: Index, H: Hooks>(v: *mut isize, out: *mut isize));
unavailable_op!(load_cbne_slab_push<I: Index, H: Hooks>(v: *mut isize, item: isize));
unavailable_op!(load_cbne_slab_memcpy_store<I: Index, O: Order, H: Hooks>(
    v: *mut isize, expect: u32, dst: *mut u8, src: *const u8, len: usize, newcount: u32));

// The in-sequence index slab ops (no `cpu`: the index is read inside the sequence).
#[allow(clippy::extra_unused_type_parameters)]
pub(super) unsafe fn load_index_slab_pop<
    I: Index,
    H: Hooks,
    K,
    const SHIFT: u32,
    const LOW_BYTE: bool,
>(
    _area: ThreadArea,
    _base: *mut u8,
    _off: usize,
    _early: u32,
    _out: *mut isize,
    k: impl Outcome<K>,
) -> K {
    k.aborted()
}

#[allow(clippy::extra_unused_type_parameters)]
pub(super) unsafe fn load_index_slab_push<
    I: Index,
    H: Hooks,
    K,
    const SHIFT: u32,
    const LOW_BYTE: bool,
>(
    _area: ThreadArea,
    _base: *mut u8,
    _off: usize,
    _early: u32,
    _item: isize,
    k: impl Outcome<K>,
) -> K {
    k.aborted()
}

// The slot ops of the containers (their const parameters are layout constants).
#[allow(clippy::extra_unused_type_parameters)]
pub(super) unsafe fn slot_list_pop<
    I: Index,
    H: Hooks,
    K,
    const GUARD: usize,
    const HEAD: usize,
    const NEXT: usize,
>(
    _area: ThreadArea,
    _cpu: u32,
    _s: *mut u8,
    _out: *mut isize,
    k: impl Outcome<K>,
) -> K {
    k.aborted()
}

#[allow(clippy::extra_unused_type_parameters)]
pub(super) unsafe fn slot_list_push<
    I: Index,
    H: Hooks,
    K,
    const GUARD: usize,
    const HEAD: usize,
    const NEXT: usize,
>(
    _area: ThreadArea,
    _cpu: u32,
    _s: *mut u8,
    _node: *mut u8,
    k: impl Outcome<K>,
) -> K {
    k.aborted()
}

#[allow(clippy::extra_unused_type_parameters)]
pub(super) unsafe fn slot_word_push<I: Index, O: Order, H: Hooks, K, W: WordArray>(
    _area: ThreadArea,
    _cpu: u32,
    _s: *mut u8,
    _src: *const u8,
    k: impl Outcome<K>,
) -> K {
    k.aborted()
}

#[allow(clippy::extra_unused_type_parameters)]
pub(super) unsafe fn slot_word_pop<I: Index, H: Hooks, K, W: WordArray>(
    _area: ThreadArea,
    _cpu: u32,
    _s: *mut u8,
    _dst: *mut u8,
    k: impl Outcome<K>,
) -> K {
    k.aborted()
}

#[allow(clippy::extra_unused_type_parameters)]
pub(super) unsafe fn slot_word_push_reg<I: Index, O: Order, H: Hooks, K, W: WordArray>(
    _area: ThreadArea,
    _cpu: u32,
    _s: *mut u8,
    _word: usize,
    k: impl Outcome<K>,
) -> K {
    k.aborted()
}

#[allow(clippy::extra_unused_type_parameters)]
pub(super) unsafe fn slot_word_pop_reg<I: Index, H: Hooks, K, W: WordArray>(
    _area: ThreadArea,
    _cpu: u32,
    _s: *mut u8,
    _out: *mut usize,
    k: impl Outcome<K>,
) -> K {
    k.aborted()
}
