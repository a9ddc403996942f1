//! `alloc_zeroed`'s shortcut for objects of fresh spans, in its own binary without
//! libtest's harness (`harness = false`): the test runs on the main thread, the
//! process's only thread, in a process whose heap nothing else has used. The
//! shortcut hands out objects only while the class's central list holds no span with
//! free objects that were used before, and only from spans whose pages were never
//! used; under libtest, the other tests of `raw.rs` freed objects and spans of the
//! same class meanwhile, and the shortcut rightly declined (CI, 27 Nov: "7 objects
//! from fresh spans").

mod common;

use std::alloc::{GlobalAlloc, Layout};

use restartable_alloc::raw::{self, Block};
use restartable_alloc::size_class::{class_for, size};
use restartable_alloc::PerCpuAlloc;

fn main() {
    common::run_alone(
        "zeroed_objects_of_fresh_spans_sit_at_their_spans_heads",
        zeroed_objects_of_fresh_spans_sit_at_their_spans_heads,
    );
}

/// `alloc_zeroed`'s shortcut (objects of fresh spans, never written) carves each
/// span at its own head (`size_class::span_offset`), as the ordinary path does and
/// as the page map says: 40 spans' worth of the 4,480-byte class (sqlite's page
/// cache, coloured), half of them zeroed, each object found again by `raw::lookup`
/// at `start + span_offset + i * size` of its span (`i < objects_per_span`), zero,
/// and no two overlapping. (Review of the colour branch: no test failed when the
/// shortcut carved at `first_offset`, where the page map does not look.)
fn zeroed_objects_of_fresh_spans_sit_at_their_spans_heads() {
    use restartable_alloc::backend::pagemap;
    use restartable_alloc::size_class::{objects_per_span, span_offset};
    let a = PerCpuAlloc::new();
    let l = Layout::from_size_align(4368, 8).unwrap();
    let c = class_for(l);
    let before = restartable_alloc::stats().zeroed_without_memset;
    let mut ps: Vec<(usize, bool)> = (0..40 * objects_per_span(c))
        .map(|i| {
            let zeroed = i % 2 == 0;
            // SAFETY: (test) a valid layout of non-zero size.
            let p = unsafe {
                if zeroed {
                    a.alloc_zeroed(l)
                } else {
                    a.alloc(l)
                }
            };
            assert!(!p.is_null());
            (p as usize, zeroed)
        })
        .collect();
    let fresh = restartable_alloc::stats().zeroed_without_memset - before;
    assert!(fresh >= 100, "{fresh} objects from fresh spans");
    for &(p, zeroed) in &ps {
        assert_eq!(
            raw::lookup(p as *const u8),
            Block::Small { class: c },
            "{p:#x}"
        );
        let s = pagemap::get(p);
        assert!(!s.is_null());
        // SAFETY: the span of a live object, not freed while it is held.
        let start = unsafe { (*s).start };
        let head = span_offset(c, start);
        assert!(
            p >= start + head,
            "{p:#x}: in span {start:#x}'s head ({head})"
        );
        let off = p - start - head;
        assert!(
            off.is_multiple_of(size(c)) && off / size(c) < objects_per_span(c),
            "{p:#x}: span {start:#x}, head {head}"
        );
        if zeroed {
            // SAFETY: (test) `l.size()` bytes of a live object.
            let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, l.size()) };
            assert!(bytes.iter().all(|&b| b == 0), "{p:#x}: not zero");
        }
        // SAFETY: (test) a live object of `l.size()` bytes, ours.
        unsafe { (p as *mut u8).write_bytes(0xa5, l.size()) };
    }
    ps.sort_unstable();
    for w in ps.windows(2) {
        assert!(
            w[1].0 - w[0].0 >= size(c),
            "{:#x} and {:#x} overlap",
            w[0].0,
            w[1].0
        );
    }
    for (p, _) in ps {
        // SAFETY: (test) allocated above with `l`, freed once.
        unsafe { a.dealloc(p as *mut u8, l) };
    }
}
