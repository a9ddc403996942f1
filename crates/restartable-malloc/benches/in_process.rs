//! The C churn workload (`benches/c/churn.c`: random sizes 16-256 bytes, a window of
//! 64 live objects) run in-process on `restartable_alloc::raw`, the same calls the
//! shared library makes, but linked into an executable: its thread-locals are
//! `%fs`-relative loads instead of `__tls_get_addr` calls (a `cdylib`'s model on
//! stable Rust), and there is no PLT call. Against `churn 1` under `LD_PRELOAD`, it
//! shows what the shared library's own layer costs.
//!
//! ```sh
//! cargo bench -p restartable-malloc --bench in_process -- [pairs] [runs]
//! ```

use std::time::Instant;

use restartable_alloc::raw;

fn run(pairs: u64) -> f64 {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut win = [std::ptr::null_mut::<u8>(); 64];
    let mut sum = 0u64;
    let t = Instant::now();
    for i in 0..pairs {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let k = (i & 63) as usize;
        if !win[k].is_null() {
            // SAFETY: an object of `raw`, freed once.
            unsafe { raw::free(win[k], raw::lookup(win[k])) };
        }
        let n = 16 + (s & 0xf0) as usize;
        let p = raw::alloc(n, 16);
        assert!(!p.is_null());
        // SAFETY: `n` bytes of a live object.
        unsafe {
            *p = i as u8;
            sum += u64::from(*p.add(n - 1 - (s & 7) as usize));
        }
        win[k] = p;
    }
    let ns = t.elapsed().as_nanos() as f64 / pairs as f64;
    std::hint::black_box(sum);
    for p in win {
        // SAFETY: the live objects left.
        unsafe { raw::free(p, raw::lookup(p)) };
    }
    ns
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let pairs = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000_000);
    let runs = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5usize);
    let mut v: Vec<f64> = (0..runs).map(|_| run(pairs)).collect();
    v.sort_by(f64::total_cmp);
    println!(
        "in-process churn on restartable_alloc::raw, 1 thread: {:.2} ns per pair (median of {runs}; all: {:?})",
        v[v.len() / 2],
        v.iter().map(|x| (x * 100.0).round() / 100.0).collect::<Vec<_>>()
    );
}
