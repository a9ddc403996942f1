//! Misuses that the types forbid, as compile-fail tests (trybuild): each file in
//! `tests/ui/` must fail to compile with the error kept in its `.stderr` file.
//!
//! - `guard_is_not_send`: a `PerCpuLockGuard` cannot move to another thread (it is
//!   released by the thread that took it).
//! - `guard_cannot_outlive_its_lock`: a guard borrows its lock.
//! - `lock_iter_mut_while_a_guard_is_held`: no `&mut` to every instance while a guard
//!   gives access to one.
//! - `stack_drain_while_shared`: `drain` needs exclusive access; another thread cannot
//!   be pushing meanwhile.
//! - `stack_of_rc_is_not_sync`: a `PerCpuStack<Rc<_>>` cannot be shared between
//!   threads (its values move between them).
//! - `thread_area_is_not_send`: a `ThreadArea` (this thread's rseq registration)
//!   cannot leave its thread.
//! - `counter_borrowed_by_an_unscoped_thread`: a thread spawned with
//!   `std::thread::spawn` cannot borrow a local counter (`'static`).
//! - `percpu_get_mut_twice`: two `&mut` to slots of one `PerCpu` at once.
//! - `memcpy_buffer_needs_copy`: the memcpy buffer copies bytes, so only `Copy` items.
//! - `pool_handle_cannot_outlive_its_pool`: a `Pooled` handle borrows its pool.
//! - `pool_handle_of_rc_is_not_send`: a handle to a pooled `Rc` cannot move to another
//!   thread.
//! - `word_buffer_value_not_duplicated`: a value pushed into a buffer (stored in the
//!   slot itself) moved there: it cannot be pushed twice.
//! - `stack_node_pushed_twice`: an owned `StackNode` moves into the stack on push.
//! - `stack_node_of_rc_is_not_send`: a node holding an `Rc` cannot move to another
//!   thread.
//! - `skip_cpu_check_needs_unsafe`: the switch that breaks every `TestHooks` sequence
//!   (`hooks::set_skip_cpu_check`) is an `unsafe fn`.
//! - `hook_switches_are_private`: the switch bytes and loop counts the hooked
//!   sequences read (`hooks::FLAGS`, `hooks::LOOPS`) cannot be written from outside.
//!
//! Regenerate the expected output after a deliberate change with
//! `TRYBUILD=overwrite cargo test -p restartable --test compile_fail`, then check that
//! each `.stderr` still shows the intended error.

#[test]
fn misuses_do_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
