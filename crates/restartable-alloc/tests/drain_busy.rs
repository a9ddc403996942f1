//! A slot whose stop halves are cleared after every fence (`front::race_stops`: what
//! a commit that began before the stop leaves) is reopened untouched after
//! `MAX_STOP_FENCES` fences (`DrainError::Busy`: no class left stopped, not a byte
//! moved, capacities kept), and one fence fewer of such clears still drains it
//! whole. Its own binary without libtest's harness (`harness = false`): the test runs
//! on the main thread, the process's only thread, so nothing else allocates on the
//! slot while it compares the slot's figures before and after. (Under libtest the
//! test ran on a thread of its own while the harness's main thread, late under load
//! in its bookkeeping after the spawn, could free on the same slot: once the slot's
//! capacity grew by a batch, 611,264 bytes against 590,784.)
//!
//! Like the other tests of the caches, it runs on x86_64 Linux, where the library
//! has its rseq fast paths; elsewhere the binary does nothing (a `harness = false`
//! binary needs its `main` on every target).

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod common;

fn main() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    on_x86_64::main();
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod on_x86_64 {
    use super::common;

    use restartable_alloc::front::{self, DrainError, MAX_STOP_FENCES};
    use restartable_alloc::PerCpuAlloc;

    #[global_allocator]
    static A: PerCpuAlloc = PerCpuAlloc::new();

    /// Fills this thread's cache with objects of several classes; returns a slot that
    /// holds some (the one the thread ran on).
    fn fill_a_slot() -> usize {
        let (slots, _) = front::mode().expect("the caches are set up by now");
        for _ in 0..1000 {
            let v: Vec<Box<[u8]>> = (0..64)
                .map(|i| vec![1u8; 16 + 24 * (i % 8)].into_boxed_slice())
                .collect();
            drop(v);
            if let Some(slot) = (0..slots).find(|&s| front::cached_bytes(s) > 0) {
                return slot;
            }
        }
        panic!("no slot holds objects after 1000 rounds of 64 frees");
    }

    /// Slot `slot`'s (cached bytes, capacity bytes, classes stopped).
    fn figures(slot: usize) -> (usize, usize, usize) {
        (
            front::cached_bytes(slot),
            front::capacity_bytes(slot),
            front::stopped_classes(slot),
        )
    }

    pub fn main() {
        common::run_alone(
            "a_slot_stopped_in_vain_through_every_fence_is_reopened_untouched",
            a_slot_stopped_in_vain_through_every_fence_is_reopened_untouched,
        );
    }

    fn a_slot_stopped_in_vain_through_every_fence_is_reopened_untouched() {
        if !restartable::fences_supported() || !restartable::status().is_registered() {
            common::child::shared::skip("no rseq or no membarrier rseq fences here: drain test");
            return;
        }
        let slot = fill_a_slot();
        let (cached, capacity) = (front::cached_bytes(slot), front::capacity_bytes(slot));

        // A cleared stop half after each of the stop's fences: it gives up.
        front::race_stops(MAX_STOP_FENCES);
        let r = front::drain_slot(slot);
        let after = figures(slot);
        front::race_stops(0);
        assert_eq!(r, Err(DrainError::Busy), "{MAX_STOP_FENCES} cleared stops");
        assert_eq!(
            after,
            (cached, capacity, 0),
            "after Busy: (cached bytes, capacity bytes, stopped classes) of slot {slot}"
        );

        // One clear fewer: the last fence finds every half set and the slot is drained.
        let slot = fill_a_slot();
        let cached = front::cached_bytes(slot);
        front::race_stops(MAX_STOP_FENCES - 1);
        let r = front::drain_slot(slot);
        let after = figures(slot);
        front::race_stops(0);
        assert_eq!(r, Ok(cached), "{} cleared stops", MAX_STOP_FENCES - 1);
        assert_eq!(after, (0, 0, 0), "after the drain: slot {slot}");
    }
}
