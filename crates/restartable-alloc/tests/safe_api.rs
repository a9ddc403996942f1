//! The crate's safe public functions reach no undefined behaviour whatever their
//! arguments (an audit's findings): a class number that is no class gets a null
//! pointer (or a panic), never a write outside the front-end's slots. Each case runs
//! in a child process, so that a crash fails the test with its signal.
//! (The page map's writers, which took any address and span, are no longer public:
//! `compile_fail` examples in the crate's docs.)

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use common::child::{in_child, Spec};
use restartable::hooks::NoHooks;
use restartable_alloc::size_class::CLASSES;
use restartable_alloc::{front, PerCpuAlloc};

#[global_allocator]
static A: PerCpuAlloc = PerCpuAlloc::new();

/// Classes that are none: one past the last, and far past it (a write at
/// `8 * c` bytes into a slot would leave the region).
const NOT_CLASSES: [usize; 3] = [1 << 40, 1 << 20, CLASSES + 1];

/// `front::alloc_slow` and `front::alloc_after_abort`, safe functions, with a class
/// that is none: null. Before, the slow path counted a miss at `8 * c` bytes into
/// the thread's slot (for `c = CLASSES + 1`, just below class 1's header; for the
/// others, outside the region: SIGSEGV) and read a header past the slot's
/// table. The caches are set up first (an allocation and a free on this thread),
/// so that the slow path reaches them.
#[test]
fn slow_paths_with_a_class_that_is_none_give_null() {
    in_child(
        "slow_paths_with_a_class_that_is_none_give_null",
        "not-a-class",
        Spec::within(60),
        || {
            let v: Vec<u64> = (0..1000).collect();
            drop(std::hint::black_box(v));
            let before = restartable_alloc::stats();
            for c in NOT_CLASSES {
                assert!(front::alloc_slow::<NoHooks>(c).is_null(), "alloc_slow({c})");
                assert!(
                    front::alloc_after_abort::<NoHooks>(c).is_null(),
                    "alloc_after_abort({c})"
                );
            }
            assert!(front::alloc_slow::<NoHooks>(0).is_null(), "alloc_slow(0)");
            // Nothing was taken from the heap (but `before`'s own vector), and it
            // works as before.
            let after = restartable_alloc::stats();
            assert!(
                after.in_use_bytes < before.in_use_bytes + 1024,
                "{before:?}\n{after:?}"
            );
            let v: Vec<u64> = (0..100_000).collect();
            assert_eq!(v.iter().sum::<u64>(), 4_999_950_000);
        },
    );
}
