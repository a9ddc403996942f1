//! [`Zeroable`]: types for which all-zero bytes are a valid value.

use core::cell::{Cell, UnsafeCell};
use core::marker::PhantomData;
use core::mem::{ManuallyDrop, MaybeUninit};
use core::num::{
    NonZeroI128, NonZeroI16, NonZeroI32, NonZeroI64, NonZeroI8, NonZeroIsize, NonZeroU128,
    NonZeroU16, NonZeroU32, NonZeroU64, NonZeroU8, NonZeroUsize, Wrapping,
};
use core::ptr::NonNull;
#[cfg(target_has_atomic = "8")]
use core::sync::atomic::{AtomicBool, AtomicI8, AtomicU8};
#[cfg(target_has_atomic = "16")]
use core::sync::atomic::{AtomicI16, AtomicU16};
#[cfg(target_has_atomic = "32")]
use core::sync::atomic::{AtomicI32, AtomicU32};
#[cfg(target_has_atomic = "64")]
use core::sync::atomic::{AtomicI64, AtomicU64};
#[cfg(target_has_atomic = "ptr")]
use core::sync::atomic::{AtomicIsize, AtomicPtr, AtomicUsize};

/// A type for which a value whose bytes are all zero is valid.
///
/// [`PerCpu`](super::PerCpu) hands out slots that start as fresh anonymous memory,
/// which reads as zero without being touched; it treats those bytes as a `T` without
/// ever writing a value first, and drops them as a `T` (when `T` needs dropping)
/// whether or not they were written.
///
/// Implemented for the integers, floats, `bool`, `char`, the atomics, raw pointers,
/// `Option` of non-null pointers, references, `Box` and `NonZero*`, the cells,
/// `MaybeUninit`, `ManuallyDrop`, `Wrapping`, `PhantomData`, arrays and small tuples
/// of `Zeroable` types, and `()`.
///
/// # Safety
/// Implementing `Zeroable` for a type promises that memory of `size_of::<T>()` zero
/// bytes (padding included) is a valid, initialized value of that type, which safe
/// code may read, use and drop like any other (so `core::mem::zeroed::<T>()` is
/// sound). Types with a non-null or non-zero invariant (references, `Box`, `NonNull`,
/// `NonZero*`, function pointers), enums without a variant whose representation is all
/// zeros, and types whose `Drop` cannot cope with their zero value must not implement
/// it. For a struct, every field must be `Zeroable`.
///
/// # Examples
/// ```
/// use core::sync::atomic::AtomicU64;
/// use restartable::percpu::storage::Zeroable;
///
/// // Every field is Zeroable, so all-zero bytes are a valid `Stats`.
/// #[repr(C)]
/// struct Stats {
///     hits: AtomicU64,
///     misses: AtomicU64,
/// }
/// // SAFETY: both fields are atomics, for which zero bytes are a valid value.
/// unsafe impl Zeroable for Stats {}
/// ```
pub unsafe trait Zeroable {}

macro_rules! zeroable {
    ($($(#[$m:meta])* $t:ty),* $(,)?) => {$(
        $(#[$m])*
        // SAFETY: zero bytes are this type's zero (or `false`, `'\0'`, `None`, null).
        unsafe impl Zeroable for $t {}
    )*};
}

zeroable!(
    (),
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    bool,
    char,
    Option<NonZeroU8>,
    Option<NonZeroU16>,
    Option<NonZeroU32>,
    Option<NonZeroU64>,
    Option<NonZeroU128>,
    Option<NonZeroUsize>,
    Option<NonZeroI8>,
    Option<NonZeroI16>,
    Option<NonZeroI32>,
    Option<NonZeroI64>,
    Option<NonZeroI128>,
    Option<NonZeroIsize>,
    #[cfg(target_has_atomic = "8")]
    AtomicBool,
    #[cfg(target_has_atomic = "8")]
    AtomicU8,
    #[cfg(target_has_atomic = "8")]
    AtomicI8,
    #[cfg(target_has_atomic = "16")]
    AtomicU16,
    #[cfg(target_has_atomic = "16")]
    AtomicI16,
    #[cfg(target_has_atomic = "32")]
    AtomicU32,
    #[cfg(target_has_atomic = "32")]
    AtomicI32,
    #[cfg(target_has_atomic = "64")]
    AtomicU64,
    #[cfg(target_has_atomic = "64")]
    AtomicI64,
    #[cfg(target_has_atomic = "ptr")]
    AtomicUsize,
    #[cfg(target_has_atomic = "ptr")]
    AtomicIsize,
);

// SAFETY: a null pointer is a valid `AtomicPtr`.
#[cfg(target_has_atomic = "ptr")]
unsafe impl<T> Zeroable for AtomicPtr<T> {}
// SAFETY: a null raw pointer to a sized type is valid (it only must not be used).
unsafe impl<T> Zeroable for *const T {}
// SAFETY: as for `*const T`.
unsafe impl<T> Zeroable for *mut T {}
// SAFETY: `Option<NonNull<T>>` is guaranteed to be a nullable pointer; null is `None`.
unsafe impl<T> Zeroable for Option<NonNull<T>> {}
// SAFETY: `Option<&T>` is guaranteed to be a nullable pointer; null is `None`.
unsafe impl<T> Zeroable for Option<&T> {}
// SAFETY: `Option<&mut T>` is guaranteed to be a nullable pointer; null is `None`.
unsafe impl<T> Zeroable for Option<&mut T> {}
// SAFETY: `Option<Box<T>>` (sized `T`, global allocator) is guaranteed to be a nullable
// pointer; null is `None`, whose drop does nothing.
unsafe impl<T> Zeroable for Option<Box<T>> {}
// SAFETY: `UnsafeCell<T>` has the same in-memory representation as `T`.
unsafe impl<T: Zeroable> Zeroable for UnsafeCell<T> {}
// SAFETY: `Cell<T>` has the same in-memory representation as `T`.
unsafe impl<T: Zeroable> Zeroable for Cell<T> {}
// SAFETY: every byte pattern is a valid `MaybeUninit<T>`.
unsafe impl<T> Zeroable for MaybeUninit<T> {}
// SAFETY: `ManuallyDrop<T>` has the same representation as `T`.
unsafe impl<T: Zeroable> Zeroable for ManuallyDrop<T> {}
// SAFETY: `Wrapping<T>` is `repr(transparent)` over `T`.
unsafe impl<T: Zeroable> Zeroable for Wrapping<T> {}
// SAFETY: a zero-sized type has no bytes.
unsafe impl<T: ?Sized> Zeroable for PhantomData<T> {}
// SAFETY: an array's bytes are its elements' bytes, each zero and so valid.
unsafe impl<T: Zeroable, const N: usize> Zeroable for [T; N] {}

macro_rules! zeroable_tuples {
    ($(($($t:ident),+)),* $(,)?) => {$(
        // SAFETY: every field is `Zeroable`; the bytes of padding may be anything.
        unsafe impl<$($t: Zeroable),+> Zeroable for ($($t,)+) {}
    )*};
}

zeroable_tuples!((A), (A, B), (A, B, C), (A, B, C, D));

#[cfg(test)]
mod tests {
    use super::*;

    fn zeroed<T: Zeroable>() -> T {
        // SAFETY: `T: Zeroable` promises that zero bytes are a valid `T`.
        unsafe { core::mem::zeroed() }
    }

    #[test]
    fn zero_values() {
        assert_eq!(zeroed::<u64>(), 0);
        assert!(!zeroed::<bool>());
        assert_eq!(zeroed::<char>(), '\0');
        assert_eq!(zeroed::<Option<NonZeroU32>>(), None);
        assert!(zeroed::<Option<NonNull<u8>>>().is_none());
        assert!(zeroed::<Option<Box<[u8; 3]>>>().is_none());
        assert!(zeroed::<Option<&u8>>().is_none());
        assert!(zeroed::<*const u8>().is_null());
        assert_eq!(zeroed::<[(u8, u64); 3]>(), [(0, 0); 3]);
        assert_eq!(zeroed::<AtomicU64>().into_inner(), 0);
        assert!(zeroed::<AtomicPtr<u8>>().into_inner().is_null());
    }
}
