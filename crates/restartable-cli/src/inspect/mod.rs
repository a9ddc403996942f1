//! `rseq inspect FILE [--json]`: list the restartable sequences of an ELF binary.
//!
//! Reads the reference tables (`__rseq_cs`, `__rseq_cs_ptr_array`,
//! `__rseq_exit_point_array`, the layout of librseq and the kernel selftests, which
//! the `restartable` crate emits too) with the parser in [`elf`], and prints each
//! critical section's start, post-commit and abort addresses, its exit points and the
//! function it lies in, sorted by start address.
//!
//! Exit status: 0 when the tables were read and passed every check (or the file has
//! none); 1 when the file cannot be read (the reason goes to stderr) **or** when a
//! check found a problem. Problems are printed with the listing (and in the JSON), and
//! counted on stderr. A table that the kernel or a debugger would misread is a defect
//! of the binary, so `rseq inspect` fails on it and can guard a build in CI; the same
//! status covers the "pointers that land outside the file: exit 1".

pub mod elf;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

use self::elf::{inspect_elf, Sequence, Tables};

/// Arguments of `rseq inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The ELF file to read (an executable or a shared object).
    file: PathBuf,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// Runs `rseq inspect`.
pub fn run(args: &InspectArgs) -> ExitCode {
    let name = args.file.display().to_string();
    let result = read_regular_file(&args.file)
        .and_then(|data| inspect_elf(&data).map_err(|err| err.to_string()));
    let tables = match result {
        Ok(tables) => tables,
        Err(message) => {
            errln!("rseq inspect: {}: {}", shown(&name), shown(&message));
            if args.json {
                outln!("{}", json!({ "file": name, "error": message }));
            }
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        outln!("{}", to_json(&name, &tables));
    } else {
        out!("{}", to_text(&name, &tables));
    }
    let problems = tables.problem_count();
    if problems > 0 {
        errln!(
            "rseq inspect: {}: {problems} problem{} found in the restartable-sequence tables",
            shown(&name),
            plural(problems)
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Reads the whole of `path`, which must be a regular file (after symlinks).
///
/// It is opened with `O_NONBLOCK` and checked with `fstat` before anything is read:
/// opening a FIFO for reading would otherwise wait for a writer forever, and reading a
/// character device such as `/dev/zero` never ends. At most the size `fstat` gave is
/// read: a regular file can be endless too (`/proc/self/pagemap` says 0 bytes and
/// reads hundreds of gigabytes), and one that grows while read is read as it was. A
/// file is read past its first four bytes only if they are ELF's magic number, and
/// only if it fits in the machine's memory.
fn read_regular_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| format!("cannot read the file: {err}"))?;
    let metadata = file
        .metadata()
        .map_err(|err| format!("cannot read the file: {err}"))?;
    if !metadata.is_file() {
        let kind = metadata.file_type();
        let what = if kind.is_dir() {
            "a directory"
        } else {
            "a special file"
        };
        return Err(format!("cannot read the file: not a regular file ({what})"));
    }
    let len = metadata.len();
    let mut file = file.take(len);
    // The magic number first: a file that is not ELF is not read further (its
    // first bytes are enough for `inspect_elf` to say so), however large it is.
    let mut data = Vec::new();
    (&mut file)
        .take(object::elf::ELFMAG.len() as u64)
        .read_to_end(&mut data)
        .map_err(|err| format!("cannot read the file: {err}"))?;
    if data != object::elf::ELFMAG {
        return Ok(data);
    }
    // The whole file is held in memory: one larger than the machine's memory (a
    // sparse file can claim terabytes) is refused rather than read until the kernel
    // kills the process.
    // SAFETY: sysconf has no preconditions.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let memory = u64::try_from(pages)
        .unwrap_or(0)
        .saturating_mul(u64::try_from(page).unwrap_or(0));
    let too_large =
        || format!("cannot read the file: {len} bytes, more than this machine's memory holds");
    if memory > 0 && len > memory {
        return Err(too_large());
    }
    let len = usize::try_from(len).map_err(|_| too_large())?;
    data.try_reserve_exact(len.saturating_sub(data.len()))
        .map_err(|_| too_large())?;
    file.read_to_end(&mut data)
        .map_err(|err| format!("cannot read the file: {err}"))?;
    Ok(data)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The listing as JSON: `{"file", "sequences": [...], "problems": [...]}`.
pub fn to_json(file: &str, tables: &Tables) -> Value {
    let sequences: Vec<Value> = tables.sequences.iter().map(sequence_json).collect();
    let problems: Vec<String> = tables.problems.iter().map(|p| p.to_string()).collect();
    json!({
        "file": file,
        "has_tables": tables.has_tables,
        "sequences": sequences,
        "problems": problems,
        "problem_count": tables.problem_count(),
    })
}

fn hex(value: u64) -> String {
    format!("{value:#x}")
}

fn sequence_json(seq: &Sequence) -> Value {
    let exits: Vec<Value> = seq
        .exit_points
        .iter()
        .map(|e| json!({ "exit_ip": e.exit_ip, "exit_ip_hex": hex(e.exit_ip), "function": e.function }))
        .collect();
    let problems: Vec<String> = seq.problems.iter().map(|p| p.to_string()).collect();
    json!({
        "descriptor": seq.descriptor,
        "descriptor_hex": hex(seq.descriptor),
        "version": seq.version,
        "flags": seq.flags,
        "start_ip": seq.start_ip,
        "start_ip_hex": hex(seq.start_ip),
        "post_commit_offset": seq.post_commit_offset,
        "post_commit_ip": seq.post_commit_ip(),
        "post_commit_ip_hex": hex(seq.post_commit_ip()),
        "abort_ip": seq.abort_ip,
        "abort_ip_hex": hex(seq.abort_ip),
        "in_pointer_array": seq.in_pointer_array,
        "function": seq.function,
        "exit_points": exits,
        "problems": problems,
    })
}

/// `text` with its control characters escaped (`\u{1b}`, `\r`, `\n`...): names and
/// messages taken from the file are printed through it, so that a crafted binary
/// cannot send escape sequences to the terminal or break the table's lines.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(escaped) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Whether [`shown`] escapes `c`: control characters (C0, DEL, C1) and the
/// bidirectional formatting ones, which reorder what a terminal shows ("Trojan
/// Source").
fn escaped(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The listing as a readable table (names from the file escaped by [`shown`]).
pub fn to_text(file: &str, tables: &Tables) -> String {
    let file = &*shown(file);
    let mut out = String::new();
    if tables.sequences.is_empty() && tables.problems.is_empty() {
        if tables.has_tables {
            let _ = writeln!(
                out,
                "no restartable sequences in {file} (its rseq sections are empty)"
            );
        } else {
            let _ = writeln!(out, "no restartable sequences in {file}");
        }
        return out;
    }
    let count = tables.sequences.len();
    let _ = writeln!(out, "{file}: {count} restartable sequence{}", plural(count));
    if count > 0 {
        let _ = writeln!(
            out,
            "  {:<18}  {:<18}  {:<18}  function",
            "start", "post-commit", "abort"
        );
    }
    for seq in &tables.sequences {
        let _ = writeln!(
            out,
            "  {:#018x}  {:#018x}  {:#018x}  {}",
            seq.start_ip,
            seq.post_commit_ip(),
            seq.abort_ip,
            shown(seq.function.as_deref().unwrap_or("??"))
        );
        for exit in &seq.exit_points {
            let _ = writeln!(
                out,
                "      exit point {:#018x}  {}",
                exit.exit_ip,
                shown(exit.function.as_deref().unwrap_or("??"))
            );
        }
        for problem in &seq.problems {
            let _ = writeln!(out, "      PROBLEM: {}", shown(&problem.0));
        }
    }
    if !tables.problems.is_empty() {
        let _ = writeln!(out, "problems in the tables:");
        for problem in &tables.problems {
            let _ = writeln!(out, "  PROBLEM: {}", shown(&problem.0));
        }
    }
    out
}
