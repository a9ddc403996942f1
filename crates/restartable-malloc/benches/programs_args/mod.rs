//! The programs benchmark's command line (`benches/programs.rs`), in a file of its
//! own so that `tests/bench_args.rs` can check it without running the benchmark.

use clap::Parser;

/// Runs per program and allocator without `--runs`.
pub const DEFAULT_RUNS: usize = 5;
/// Runs per program and allocator with `--quick` and without `--runs`.
pub const QUICK_RUNS: usize = 1;

#[derive(Parser, Debug)]
#[command(about = "Real programs and C workloads under LD_PRELOAD of several allocators")]
pub struct Args {
    /// Runs per program and allocator, at least 1 (the median is reported)
    /// [default: 5, or 1 with --quick].
    #[arg(long, value_parser = at_least_one::<usize>)]
    runs: Option<usize>,
    /// Small workloads, and 1 run unless --runs says otherwise: checks that
    /// everything works.
    #[arg(long)]
    pub quick: bool,
    /// Only programs whose name contains one of these.
    #[arg(long)]
    pub only: Vec<String>,
    /// Only these of mimalloc, jemalloc and tcmalloc (those whose name contains one
    /// of these; `none`: none of them). glibc's, restartable's and `--lib`'s columns
    /// always run.
    #[arg(long)]
    pub alloc: Vec<String>,
    /// One more column, `NAME=PATH`: a library to preload (another build of this
    /// one, for instance), run in the same rotation as the others.
    #[arg(long, value_name = "NAME=PATH")]
    pub lib: Vec<String>,
    /// Time limit per run, in seconds, at least 1 (a run past it is killed and the
    /// benchmark fails).
    #[arg(long, default_value_t = 600, value_parser = at_least_one::<u64>)]
    pub limit: u64,
    /// Ignored (cargo bench passes it).
    #[arg(long, hide = true)]
    pub bench: bool,
}

impl Args {
    /// Runs per program and allocator: `--runs` if given, else 1 with `--quick` and
    /// 5 without.
    pub fn runs(&self) -> usize {
        self.runs
            .unwrap_or(if self.quick { QUICK_RUNS } else { DEFAULT_RUNS })
    }
}

/// A whole number of at least 1 (a count of runs or seconds: 0 would measure
/// nothing).
fn at_least_one<T: std::str::FromStr + PartialOrd + From<u8>>(s: &str) -> Result<T, String> {
    match s.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        Ok(_) => Err("must be at least 1".to_string()),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}
