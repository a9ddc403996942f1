//! Tests of `rseq inspect` (and `rseq gdb-script`) through the built `rseq` binary.
//!
//! C fixtures under `tests/inspect-fixtures/` are compiled with `cc` into a temporary
//! directory; without `cc` those tests print a notice and pass.

#[path = "../../restartable/tests/support/child.rs"]
mod child;
#[path = "support/scratch.rs"]
mod scratch;

use child::OutputWithin as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const RSEQ: &str = env!("CARGO_BIN_EXE_rseq");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/inspect-fixtures")
        .join(name)
}

/// A fresh scratch directory of this process's own for one test (removed when
/// dropped, kept when the test panics).
fn scratch(test: &str) -> scratch::Scratch {
    scratch::scratch(&format!("inspect-{test}"))
}

/// Compiles `source` with `cc flags...` into `dir/out`; None (and a notice) without cc.
fn compile(source: &Path, dir: &Path, out: &str, flags: &[&str]) -> Option<PathBuf> {
    let output = dir.join(out);
    let result = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(&output)
        .arg(source)
        .try_output_within(child::SHORT);
    match result {
        Ok(o) if o.status.success() => Some(output),
        Ok(o) => panic!(
            "cc {flags:?} {} failed:\n{}",
            source.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(err) => {
            child::skip(format!("no C compiler (`cc`): {err}"));
            None
        }
    }
}

fn inspect(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(RSEQ)
        .arg("inspect")
        .args(args)
        .output_within(child::SHORT)
}

fn inspect_json(file: &Path) -> (Output, Value) {
    let output = inspect(&["--json".as_ref(), file.as_os_str()]);
    let json: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "rseq inspect --json {} printed no JSON ({err}):\n{}\n{}",
            file.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output, json)
}

/// The value of each local symbol named in `names`, from `nm` (None without nm).
fn nm_symbols(binary: &Path, names: &[&str]) -> Option<Vec<u64>> {
    let output = Command::new("nm")
        .arg(binary)
        .try_output_within(child::SHORT)
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let values = names
        .iter()
        .map(|name| {
            text.lines()
                .find_map(|line| {
                    let mut fields = line.split_whitespace();
                    let value = fields.next()?;
                    let _kind = fields.next()?;
                    (fields.next()? == *name).then(|| u64::from_str_radix(value, 16).ok())?
                })
                .unwrap_or_else(|| panic!("nm lists no symbol {name} in {}", binary.display()))
        })
        .collect();
    Some(values)
}

fn u64_field(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number in {value}"))
}

fn check_one_sequence(flags: &[&str], test: &str) {
    let dir = scratch(test);
    let Some(binary) = compile(&fixture("one_sequence.c"), &dir, "one_sequence", flags) else {
        return;
    };
    let (output, json) = inspect_json(&binary);
    assert!(output.status.success(), "exit status {:?}", output.status);
    assert_eq!(json["problems"], Value::Array(vec![]), "{json}");
    let sequences = json["sequences"].as_array().expect("a sequence list");
    assert_eq!(
        sequences.len(),
        1,
        "exactly the hand-written sequence: {json}"
    );
    let seq = &sequences[0];
    assert_eq!(seq["function"], "percpu_inc", "{seq}");
    assert_eq!(seq["problems"], Value::Array(vec![]), "{seq}");
    assert_eq!(seq["version"], 0);
    assert_eq!(seq["flags"], 0);
    assert_eq!(seq["in_pointer_array"], true);
    let start = u64_field(seq, "start_ip");
    let post_commit = u64_field(seq, "post_commit_ip");
    let abort = u64_field(seq, "abort_ip");
    assert_eq!(u64_field(seq, "post_commit_offset"), post_commit - start);
    assert_eq!(seq["start_ip_hex"], format!("{start:#x}"));
    let exits = seq["exit_points"].as_array().expect("an exit-point list");
    assert_eq!(exits.len(), 1, "one compare-fail exit: {seq}");
    let exit = u64_field(&exits[0], "exit_ip");
    assert_eq!(exits[0]["function"], "percpu_inc");
    assert!(
        exit >= post_commit,
        "the exit {exit:#x} is after the commit {post_commit:#x}"
    );
    if let Some(symbols) = nm_symbols(
        &binary,
        &["fixture_start", "fixture_post_commit", "fixture_abort"],
    ) {
        assert_eq!(
            symbols,
            vec![start, post_commit, abort],
            "addresses match nm"
        );
    } else {
        child::skip("no nm: addresses not cross-checked");
    }

    // The text listing names the file, the count, the addresses and the function.
    let text = inspect(&[binary.as_os_str()]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.starts_with(&format!("{}: 1 restartable sequence\n", binary.display())),
        "{text}"
    );
    for needle in [
        format!("{start:#018x}"),
        format!("{post_commit:#018x}"),
        format!("{abort:#018x}"),
        format!("exit point {exit:#018x}"),
        "percpu_inc".to_owned(),
    ] {
        assert!(text.contains(&needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn lists_the_hand_written_sequence_no_pie() {
    check_one_sequence(&["-g", "-O0", "-no-pie"], "one-no-pie");
}

#[test]
fn lists_the_hand_written_sequence_pie() {
    // The table values live in R_X86_64_RELATIVE relocations: the section bytes are 0.
    check_one_sequence(&["-g", "-O0", "-pie", "-fPIE"], "one-pie");
}

#[test]
fn lists_the_inlined_sequence_in_its_caller() {
    let dir = scratch("inlined");
    let flags = ["-g", "-O2", "-DINLINE_SEQUENCE"];
    let Some(binary) = compile(&fixture("one_sequence.c"), &dir, "inlined", &flags) else {
        return;
    };
    let (output, json) = inspect_json(&binary);
    assert!(output.status.success(), "{json}");
    let sequences = json["sequences"].as_array().expect("a sequence list");
    assert_eq!(sequences.len(), 1, "{json}");
    assert_eq!(sequences[0]["function"], "main");
}

#[test]
fn reports_each_broken_table() {
    for (flags, name) in [
        (["-O0", "-no-pie"], "broken-no-pie"),
        (["-O0", "-pie"], "broken-pie"),
    ] {
        let dir = scratch(name);
        let Some(binary) = compile(&fixture("broken_tables.c"), &dir, "broken", &flags) else {
            return;
        };
        let (output, json) = inspect_json(&binary);
        assert_eq!(output.status.code(), Some(1), "problems make exit status 1");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("9 problems found"), "{stderr}");
        let problems_of = |function: &str| -> Vec<String> {
            let seq = json["sequences"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["function"] == function)
                .unwrap_or_else(|| panic!("no sequence in {function}: {json}"));
            seq["problems"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_owned())
                .collect()
        };
        let expect = |function: &str, needles: &[&str]| {
            let problems = problems_of(function);
            assert_eq!(problems.len(), needles.len(), "{function}: {problems:?}");
            for needle in needles {
                assert!(
                    problems.iter().any(|p| p.contains(needle)),
                    "{function}: no problem mentioning {needle:?} in {problems:?}"
                );
            }
        };
        expect("good_seq", &[]);
        expect("unlisted_seq", &["not listed in __rseq_cs_ptr_array"]);
        expect("bad_version_seq", &["version is 1", "flags are 0x4"]);
        expect("no_signature_seq", &["no abort signature 0x53053053"]);
        expect(
            "abort_inside_seq",
            &["inside the critical section it aborts"],
        );
        expect("empty_seq", &["post_commit_offset is 0"]);
        expect("exit_inside_seq", &["is inside the critical section"]);
        let file_problems: Vec<&str> = json["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(file_problems.len(), 2, "{file_problems:?}");
        assert!(file_problems
            .iter()
            .any(|p| p.contains("0x7777770 lands outside any section")));
        assert!(file_problems
            .iter()
            .any(|p| p.contains("no sequence starts at 0x1234")));
        let good = json["sequences"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["function"] == "good_seq")
            .unwrap();
        assert_eq!(good["exit_points"].as_array().unwrap().len(), 1);
    }
}

#[test]
fn file_without_tables_is_not_an_error() {
    let dir = scratch("no-tables");
    let source = dir.join("plain.c");
    std::fs::write(&source, "int main(void) { return 0; }\n").unwrap();
    let Some(binary) = compile(&source, &dir, "plain", &["-O0"]) else {
        return;
    };
    let text = inspect(&[binary.as_os_str()]);
    assert!(text.status.success());
    assert_eq!(
        String::from_utf8_lossy(&text.stdout),
        format!("no restartable sequences in {}\n", binary.display())
    );
    let (output, json) = inspect_json(&binary);
    assert!(output.status.success());
    assert_eq!(json["sequences"], Value::Array(vec![]));
    assert_eq!(json["has_tables"], false);
}

/// The `rseq` binary itself: the JSON parses and, if the binary has sequences (the op
/// engine puts one in for every op it uses), every one passes every check.
#[test]
fn own_binary_tables_pass_the_checks() {
    let (output, json) = inspect_json(Path::new(RSEQ));
    assert_eq!(json["problems"], Value::Array(vec![]), "{json}");
    let sequences = json["sequences"].as_array().expect("a sequence list");
    for seq in sequences {
        assert_eq!(seq["problems"], Value::Array(vec![]), "{seq}");
        assert!(seq["function"].is_string(), "no function for {seq}");
    }
    assert!(output.status.success(), "{json}");
    eprintln!(
        "the rseq binary lists {} restartable sequences",
        sequences.len()
    );
}

/// Runs `rseq inspect` on `file` and checks it neither panicked nor died of a signal,
/// and that a failure says why. Returns the exit code.
fn assert_clean_exit(file: &Path, what: &str) -> i32 {
    let output = inspect(&[file.as_os_str()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let code = output
        .status
        .code()
        .unwrap_or_else(|| panic!("{what}: killed by a signal ({:?}); {stderr}", output.status));
    assert!(
        code == 0 || code == 1,
        "{what}: exit code {code} (101 is a panic):\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    if code == 1 {
        assert!(
            stderr.contains(&file.display().to_string()),
            "{what}: the message names the file: {stderr}"
        );
    }
    code
}

/// Runs `rseq inspect` (with `--json` if `json`) on `file` under a 1 GiB
/// address-space limit, so that a read that never ends (`/dev/zero` read to its end)
/// fails instead of filling the machine's memory if it ever comes back.
fn inspect_limited(file: &Path, json: bool) -> Output {
    Command::new("sh")
        .args([
            "-c",
            "ulimit -v 1048576 && exec \"$@\"",
            "sh",
            RSEQ,
            "inspect",
        ])
        .args(json.then_some("--json"))
        .arg(file)
        .output_within(child::SHORT)
}

/// `rseq inspect` on `file` fails with exit code 1 and a message on stderr that names
/// the file and contains `needle`; with `--json`, also an object on stdout whose
/// `error` contains `needle`.
fn expect_error(file: &Path, needle: &str) {
    for json in [false, true] {
        let output = inspect_limited(file, json);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let what = format!("{}{}", file.display(), if json { " (--json)" } else { "" });
        assert_eq!(output.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains(&file.display().to_string()) && stderr.contains(needle),
            "{what}: expected {needle:?} and the file name in: {stderr}"
        );
        if json {
            let value: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
                panic!(
                    "{what}: no JSON ({err}): {}",
                    String::from_utf8_lossy(&output.stdout)
                )
            });
            assert!(
                value["error"].as_str().is_some_and(|e| e.contains(needle)),
                "{what}: {value}"
            );
        }
    }
}

/// A 64-byte ELF64 little-endian header (no sections, no segments).
fn elf64_header(machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // ELFCLASS64
    h[5] = 1; // ELFDATA2LSB
    h[6] = 1; // EV_CURRENT
    h[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    h[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    h[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    h
}

/// A 52-byte ELF32 little-endian i386 header.
fn elf32_header() -> Vec<u8> {
    let mut h = vec![0u8; 52];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 1; // ELFCLASS32
    h[5] = 1;
    h[6] = 1;
    h[16..18].copy_from_slice(&2u16.to_le_bytes());
    h[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[40..42].copy_from_slice(&52u16.to_le_bytes());
    h[42..44].copy_from_slice(&32u16.to_le_bytes());
    h[46..48].copy_from_slice(&40u16.to_le_bytes());
    h
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = scratch("bad-inputs");
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    expect_error(&write("empty", b""), "the file is empty");
    expect_error(
        &write("text", b"#!/bin/sh\necho not an ELF\n"),
        "not an ELF file",
    );
    expect_error(&write("magic-only", b"\x7fELF"), "malformed ELF");
    expect_error(&write("elf32", &elf32_header()), "32-bit ELF");
    expect_error(&write("aarch64", &elf64_header(183)), "aarch64");
    expect_error(&write("riscv", &elf64_header(243)), "riscv");
    let mut big_endian = elf64_header(62);
    big_endian[5] = 2;
    big_endian[18..20].copy_from_slice(&62u16.to_be_bytes());
    expect_error(&write("big-endian", &big_endian), "big-endian");
    expect_error(&dir.join("does-not-exist"), "cannot read the file");

    // A real 32-bit binary where the toolchain has one.
    let source = dir.join("plain.c");
    std::fs::write(&source, "int main(void) { return 0; }\n").unwrap();
    let m32 = Command::new("cc")
        .args(["-m32", "-o"])
        .arg(dir.join("plain32"))
        .arg(&source)
        .try_output_within(child::SHORT);
    if m32.is_ok_and(|o| o.status.success()) {
        expect_error(&dir.join("plain32"), "32-bit ELF");
    } else {
        eprintln!("NOTICE: no `cc -m32`, only the hand-made ELF32 header is tested");
    }
}

/// Copies `binary` to `dir/patched` with every `percpu_inc` name in its string
/// tables (10 bytes, NUL-terminated) changed in place by `rename`; returns the copy.
fn rename_percpu_inc(
    binary: &std::path::Path,
    dir: &std::path::Path,
    rename: impl Fn(&mut [u8]),
) -> std::path::PathBuf {
    let mut data = std::fs::read(binary).unwrap();
    let mut renamed = 0;
    let mut at = 0;
    while let Some(i) = data[at..].windows(11).position(|w| w == b"percpu_inc\0") {
        rename(&mut data[at + i..at + i + 10]);
        renamed += 1;
        at += i + 11;
    }
    assert!(renamed > 0, "the symbol name was found");
    let patched = dir.join("patched");
    std::fs::write(&patched, &data).unwrap();
    patched
}

/// Names read from the file (symbols, section names) are printed with their control
/// characters escaped: a crafted binary whose function is named with terminal escape
/// sequences must not reach the user's terminal with them (the text listing used to
/// print them raw). The JSON output escapes them as JSON does.
#[test]
fn control_characters_in_names_are_escaped() {
    let dir = scratch("escapes");
    let Some(binary) = compile(&fixture("one_sequence.c"), &dir, "one", &["-O0", "-no-pie"]) else {
        return;
    };
    // Rename `percpu_inc` (10 bytes) in the string tables: ESC [ 2 J, BEL, CR...
    let patched = rename_percpu_inc(&binary, &dir, |name| {
        name.copy_from_slice(b"\x1b[2J\x07\rpwn!")
    });

    let output = inspect(&[patched.as_os_str()]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    for c in ['\x1b', '\x07', '\r'] {
        assert!(
            !text.contains(c),
            "a raw {c:?} reached the listing:\n{}",
            text.escape_debug()
        );
    }
    assert!(
        text.contains("\\u{1b}[2J\\u{7}\\rpwn!"),
        "the name is shown escaped:\n{text}"
    );
    let (_, json) = inspect_json(&patched);
    assert_eq!(
        json["sequences"][0]["function"].as_str(),
        Some("\x1b[2J\x07\rpwn!"),
        "JSON keeps the name as it is (JSON escapes it)"
    );
}

/// A function name that is not UTF-8 is shown with U+FFFD in place of the bad bytes,
/// in the listing and in JSON (the symbol used to be skipped: the function was `??`).
#[test]
fn names_that_are_not_utf8_are_shown_lossily() {
    let dir = scratch("not-utf8");
    let Some(binary) = compile(&fixture("one_sequence.c"), &dir, "one", &["-O0", "-no-pie"]) else {
        return;
    };
    let patched = rename_percpu_inc(&binary, &dir, |name| name[6] = 0xff);
    let output = inspect(&[patched.as_os_str()]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("percpu\u{fffd}inc"), "{text}");
    let (_, json) = inspect_json(&patched);
    assert_eq!(
        json["sequences"][0]["function"].as_str(),
        Some("percpu\u{fffd}inc")
    );
}

/// `rseq inspect` on something that is not a regular file (a FIFO nobody writes to,
/// an endless character device, a directory) fails at once with a clear message: it
/// used to block forever in `open` on the FIFO and to read `/dev/zero` until memory ran
/// out.
#[test]
fn special_files_are_refused_without_reading_them() {
    let dir = scratch("special-files");
    let fifo = dir.join("fifo");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let link = dir.join("link-to-fifo");
    std::os::unix::fs::symlink(&fifo, &link).expect("symlink");
    let zero = Path::new("/dev/zero");
    for file in [fifo.as_path(), link.as_path(), zero, dir.path()] {
        expect_error(file, "not a regular file");
    }
}

/// A regular file is read up to the size `fstat` gives, no further:
/// `/proc/self/pagemap` is a regular file of size 0 that reads on for hundreds of
/// gigabytes (it used to be read until memory ran out). Under a 1 GiB address-space
/// limit, where reading it to the end fails with "out of memory" instead.
#[test]
fn a_regular_file_is_read_only_up_to_its_size() {
    let pagemap = Path::new("/proc/self/pagemap");
    if !pagemap.exists() {
        return;
    }
    expect_error(pagemap, "the file is empty");
}

/// A file is read only as far as it must be (the audit's finding): a sparse file of
/// 1 TiB was read until memory ran out (killed, or an allocation failure under the
/// 1 GiB limit), even with no ELF magic number. Without the magic number nothing past
/// it is read; with it, a file larger than the machine's memory is refused.
#[test]
fn huge_files_are_refused_without_reading_them() {
    let dir = scratch("huge-files");
    let sparse = |name: &str, head: &[u8]| {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut &file, head).unwrap();
        file.set_len(1 << 40).expect("a sparse file of 1 TiB");
        path
    };
    expect_error(&sparse("zeros", b""), "not an ELF file");
    expect_error(
        &sparse("elf-header", &elf64_header(62)),
        "more than this machine's memory holds",
    );
}

#[test]
fn truncated_copies_never_panic() {
    let dir = scratch("truncated");
    let Some(binary) = compile(&fixture("one_sequence.c"), &dir, "one", &["-O0", "-pie"]) else {
        return;
    };
    let data = std::fs::read(&binary).unwrap();
    // Every length up to the program headers, then a stride over the rest, and the
    // lengths around the rseq sections' ends.
    let mut lengths: Vec<usize> = (0..128).chain((128..data.len()).step_by(211)).collect();
    lengths.extend((1..=64).map(|d| data.len() - d));
    let copy = dir.join("cut");
    let (mut ok, mut failed) = (0, 0);
    for len in lengths {
        std::fs::write(&copy, &data[..len]).unwrap();
        match assert_clean_exit(&copy, &format!("cut to {len} bytes")) {
            0 => ok += 1,
            _ => failed += 1,
        }
    }
    eprintln!("truncated copies: {ok} read, {failed} rejected");
    assert!(failed > 0);
}

/// A small deterministic generator (xorshift64*), so failures can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn bit_flipped_copies_never_panic() {
    let dir = scratch("bit-flips");
    let Some(binary) = compile(&fixture("one_sequence.c"), &dir, "one", &["-O0", "-pie"]) else {
        return;
    };
    let data = std::fs::read(&binary).unwrap();
    // Aim half the flips at the bytes inspect reads: the ELF header, the program
    // and section headers (at the start and the end of the file), the rseq sections
    // and relocations (in the first 16 KiB of this small binary).
    let hot = |rng: &mut Rng| -> usize {
        match rng.below(4) {
            0 => rng.below(64.min(data.len())),
            1 => data.len() - 1 - rng.below(2048.min(data.len())),
            2 => rng.below(16384.min(data.len())),
            _ => rng.below(data.len()),
        }
    };
    let mut rng = Rng(0x5EED_F1AB);
    let copy = dir.join("flipped");
    let (mut ok, mut failed) = (0, 0);
    for round in 0..300 {
        let mut mutated = data.clone();
        for _ in 0..=rng.below(4) {
            let at = hot(&mut rng);
            mutated[at] ^= 1 << rng.below(8);
        }
        std::fs::write(&copy, &mutated).unwrap();
        match assert_clean_exit(&copy, &format!("bit-flip round {round}")) {
            0 => ok += 1,
            _ => failed += 1,
        }
    }
    eprintln!("bit-flipped copies: {ok} read cleanly, {failed} rejected or with problems");
}

#[test]
fn gdb_script_prints_the_extension() {
    let output = Command::new(RSEQ)
        .arg("gdb-script")
        .output_within(child::SHORT);
    assert!(output.status.success());
    let shipped =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gdb/restartable-gdb.py"))
            .unwrap();
    assert_eq!(output.stdout, shipped);
}
