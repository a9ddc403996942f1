//! The one place that decides whether the rseq asm backend is used: Linux, x86_64,
//! and not under Miri. Every other file asks `cfg(restartable_asm)`.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(restartable_asm)");
    println!("cargo:rustc-check-cfg=cfg(restartable_broken_cpu_check)");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RESTARTABLE_FORCE_FALLBACK");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let miri = std::env::var_os("CARGO_CFG_MIRI").is_some();
    let forced_off = std::env::var_os("RESTARTABLE_FORCE_FALLBACK").is_some();
    if os == "linux" && arch == "x86_64" && !miri && !forced_off {
        println!("cargo:rustc-cfg=restartable_asm");
    }
}
