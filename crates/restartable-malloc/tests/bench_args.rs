//! The programs benchmark's command line (`benches/programs_args`), checked without
//! running the benchmark: what `--runs`, `--quick` and `--limit` mean together, and
//! that a count of 0 is refused rather than turned into something else.

#[path = "../benches/programs_args/mod.rs"]
mod programs_args;

use clap::{CommandFactory as _, Parser as _};
use programs_args::{Args, DEFAULT_RUNS, QUICK_RUNS};

fn parse(args: &[&str]) -> Result<Args, clap::Error> {
    Args::try_parse_from(std::iter::once("programs").chain(args.iter().copied()))
}

#[test]
fn the_command_line_is_well_formed() {
    Args::command().debug_assert();
}

#[test]
fn runs_given_explicitly_win_over_quick() {
    assert_eq!(parse(&[]).unwrap().runs(), DEFAULT_RUNS);
    assert_eq!(parse(&["--quick"]).unwrap().runs(), QUICK_RUNS);
    assert_eq!(parse(&["--runs", "7"]).unwrap().runs(), 7);
    assert_eq!(parse(&["--quick", "--runs", "3"]).unwrap().runs(), 3);
    assert_eq!(parse(&["--runs", "3", "--quick"]).unwrap().runs(), 3);
    assert_eq!(parse(&["--quick", "--runs", "1"]).unwrap().runs(), 1);
    // cargo bench passes --bench.
    assert_eq!(parse(&["--bench", "--runs", "2"]).unwrap().runs(), 2);
}

#[test]
fn zero_runs_or_seconds_are_refused() {
    for (flag, with) in [
        ("--runs", &[][..]),
        ("--runs", &["--quick"][..]),
        ("--limit", &[][..]),
    ] {
        let mut args = vec![flag, "0"];
        args.extend_from_slice(with);
        let err = match parse(&args) {
            Ok(a) => panic!("{args:?} was accepted: {a:?}"),
            Err(e) => e,
        };
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{err}");
        // Exits non-zero (clap's usage status, 2) with a message naming the flag.
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(msg.contains(flag) && msg.contains("at least 1"), "{msg}");
    }
    for bad in ["-1", "two", ""] {
        assert!(
            parse(&["--runs", bad]).is_err(),
            "--runs {bad:?} was accepted"
        );
    }
    assert_eq!(parse(&["--limit", "1"]).unwrap().limit, 1);
    assert_eq!(parse(&[]).unwrap().limit, 600);
}

#[test]
fn help_tells_the_defaults() {
    let help = Args::command().render_long_help().to_string();
    assert!(
        help.contains("[default: 5, or 1 with --quick]")
            && help.contains("1 run unless --runs says otherwise")
            && help.contains("[default: 600]"),
        "{help}"
    );
    assert_eq!(
        (DEFAULT_RUNS, QUICK_RUNS),
        (5, 1),
        "the help text says 5 and 1"
    );
}
