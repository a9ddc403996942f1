//! Per-thread handle caches: what keeps `counter!(...)` (a registry lookup on every
//! call) off shared cache lines.
//!
//! A `metrics::Counter` is an `Arc`; handing out the registry's own `Arc` on every
//! lookup would make every call bump one shared reference count, after taking the
//! registry shard's read lock (another shared write). Instead each thread keeps, per
//! recorder and key, its own `Arc` around the shared cell: a lookup that hits is a
//! thread-local hash-map probe (the key's hash is precomputed) and an increment of a
//! reference count only this thread uses. The cell, and so the value, is still the
//! one in the registry.
//!
//! Entries live as long as the thread. When a thread first uses a new recorder, the
//! entries of recorders that have been dropped are freed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Weak};

use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key};
use metrics_util::KeyHasher;

use crate::Inner;

type KeyMap<V> = HashMap<Key, V, BuildHasherDefault<KeyHasher>>;

/// One thread's handles for one recorder.
struct Handles {
    id: u64,
    recorder: Weak<Inner>,
    counters: KeyMap<Counter>,
    gauges: KeyMap<Gauge>,
    histograms: KeyMap<Histogram>,
}

thread_local! {
    /// Usually one recorder: a vector scan beats hashing the id.
    static LOCAL: RefCell<Vec<Handles>> = const { RefCell::new(Vec::new()) };
}

/// A thread's own `Arc` around a shared cell, forwarding every operation to it.
pub(crate) struct Local<T>(pub(crate) Arc<T>);

impl<T: CounterFn> CounterFn for Local<T> {
    #[inline]
    fn increment(&self, value: u64) {
        self.0.increment(value)
    }

    fn absolute(&self, value: u64) {
        self.0.absolute(value)
    }
}

impl<T: GaugeFn> GaugeFn for Local<T> {
    #[inline]
    fn increment(&self, value: f64) {
        self.0.increment(value)
    }

    #[inline]
    fn decrement(&self, value: f64) {
        self.0.decrement(value)
    }

    fn set(&self, value: f64) {
        self.0.set(value)
    }
}

impl<T: HistogramFn> HistogramFn for Local<T> {
    #[inline]
    fn record(&self, value: f64) {
        self.0.record(value)
    }
}

/// The cached handle for `key` in `pick`'s map, or `make()`'s (then cached). Without
/// thread-local storage (a thread being torn down), `make()`'s, uncached.
fn cached<V: Clone>(
    recorder: &Arc<Inner>,
    key: &Key,
    pick: fn(&mut Handles) -> &mut KeyMap<V>,
    make: impl FnOnce() -> V,
) -> V {
    let mut make = Some(make);
    let got = LOCAL.try_with(|local| {
        let mut local = local.borrow_mut();
        let i = match local.iter().position(|h| h.id == recorder.id) {
            Some(i) => i,
            None => {
                local.retain(|h| h.recorder.strong_count() > 0);
                local.push(Handles {
                    id: recorder.id,
                    recorder: Arc::downgrade(recorder),
                    counters: KeyMap::default(),
                    gauges: KeyMap::default(),
                    histograms: KeyMap::default(),
                });
                local.len() - 1
            }
        };
        let map = pick(&mut local[i]);
        if let Some(h) = map.get(key) {
            return h.clone();
        }
        let h = (make.take().expect("called once"))();
        map.insert(key.clone(), h.clone());
        h
    });
    match got {
        Ok(h) => h,
        Err(_) => (make.take().expect("not called yet"))(),
    }
}

pub(crate) fn counter(r: &Arc<Inner>, key: &Key, make: impl FnOnce() -> Counter) -> Counter {
    cached(r, key, |h| &mut h.counters, make)
}

pub(crate) fn gauge(r: &Arc<Inner>, key: &Key, make: impl FnOnce() -> Gauge) -> Gauge {
    cached(r, key, |h| &mut h.gauges, make)
}

pub(crate) fn histogram(r: &Arc<Inner>, key: &Key, make: impl FnOnce() -> Histogram) -> Histogram {
    cached(r, key, |h| &mut h.histograms, make)
}

#[cfg(test)]
mod tests {
    use metrics::{Level, Metadata, Recorder};

    use crate::PerCpuBuilder;

    static META: Metadata<'static> = Metadata::new("t", Level::INFO, None);

    #[test]
    fn lookups_from_many_threads_reach_one_cell() {
        let rec = PerCpuBuilder::new().build_recorder();
        let key = metrics::Key::from_parts("hits", vec![metrics::Label::new("a", "b")]);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        rec.register_counter(&key, &META).increment(1);
                        rec.register_gauge(&key, &META).increment(1.0);
                        rec.register_histogram(&key, &META).record(1.0);
                    }
                });
            }
        });
        let text = rec.handle().render();
        // The counter and the gauge.
        assert_eq!(text.matches("\nhits{a=\"b\"} 40000\n").count(), 2, "{text}");
        assert!(text.contains("hits_count{a=\"b\"} 40000\n"), "{text}");
    }

    #[test]
    fn a_new_recorder_never_gets_an_old_recorders_handles() {
        let key = metrics::Key::from_name("n");
        for round in 1..=50u64 {
            // Same thread, same key; a recorder is often allocated where the last one
            // was freed.
            let rec = PerCpuBuilder::new().build_recorder();
            rec.register_counter(&key, &META).increment(round);
            let text = rec.handle().render();
            assert!(
                text.contains(&format!("\nn {round}\n")),
                "round {round}: {text}"
            );
        }
        // Dropped recorders' entries were freed along the way.
        let live = super::LOCAL.with(|l| l.borrow().len());
        assert!(live <= 2, "{live} recorders cached");
    }
}
