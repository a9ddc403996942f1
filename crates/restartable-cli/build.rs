//! Records the compiler's version for `rseq bench`'s machine description.

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| String::from("rustc"));
    if let Ok(out) = std::process::Command::new(rustc).arg("--version").output() {
        if let Ok(v) = String::from_utf8(out.stdout) {
            println!("cargo:rustc-env=RSEQ_BENCH_RUSTC={}", v.trim());
        }
    }
    println!("cargo:rerun-if-env-changed=RUSTC");
    println!("cargo:rerun-if-changed=build.rs");
}
