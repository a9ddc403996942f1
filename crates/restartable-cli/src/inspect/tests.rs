//! Unit and property tests of the ELF parser ([`super::elf::inspect_elf`]).
//!
//! The property tests feed the parser mutated copies of a real binary: the C fixture
//! `tests/inspect-fixtures/one_sequence.c` built as a PIE with `cc` (so the rseq
//! sections and their relocations are there to be damaged), or this test binary when
//! there is no C compiler. Whatever the bytes, the parser must return, not panic.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::elf::{demangle, inspect_elf, InspectError, Sequence};
use super::{to_json, to_text};

/// The bytes of a real binary with one restartable sequence (or without, see above).
fn real_binary() -> &'static [u8] {
    static BINARY: OnceLock<Vec<u8>> = OnceLock::new();
    BINARY.get_or_init(|| {
        // A directory of this process's own (unit tests have no CARGO_TARGET_TMPDIR),
        // removed when dropped below.
        let dir = restartable_test_support::scratch_in(&std::env::temp_dir(), "rseq-inspect-unit");
        let source =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inspect-fixtures/one_sequence.c");
        let out = dir.join("one_sequence");
        let built = Command::new("cc")
            .args(["-O0", "-pie", "-fPIE", "-o"])
            .arg(&out)
            .arg(&source)
            .status()
            .is_ok_and(|s| s.success());
        let path: PathBuf = if built {
            out
        } else {
            eprintln!("NOTICE: no `cc`: mutating this test binary instead of the C fixture");
            std::env::current_exe().expect("the test binary's path")
        };
        let data = std::fs::read(&path).expect("read the real binary");
        drop(dir);
        data
    })
}

fn elf64_header(machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2;
    h[5] = 1;
    h[6] = 1;
    h[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[52..54].copy_from_slice(&64u16.to_le_bytes());
    h[54..56].copy_from_slice(&56u16.to_le_bytes());
    h[58..60].copy_from_slice(&64u16.to_le_bytes());
    h
}

#[test]
fn rejects_what_is_not_a_64_bit_x86_64_elf() {
    assert_eq!(inspect_elf(b""), Err(InspectError::Empty));
    assert_eq!(inspect_elf(b"hello"), Err(InspectError::NotElf));
    assert!(matches!(
        inspect_elf(b"\x7fELF"),
        Err(InspectError::Malformed(_))
    ));
    let mut elf32 = elf64_header(3);
    elf32[4] = 1;
    assert_eq!(inspect_elf(&elf32), Err(InspectError::Elf32));
    let err = inspect_elf(&elf64_header(183)).unwrap_err();
    assert!(err.to_string().contains("aarch64"), "{err}");
    let mut relocatable = elf64_header(62);
    relocatable[16] = 1; // ET_REL
    assert_eq!(inspect_elf(&relocatable), Err(InspectError::Relocatable));
}

#[test]
fn a_bare_header_has_no_tables() {
    let tables = inspect_elf(&elf64_header(62)).expect("a valid empty ELF file");
    assert!(!tables.has_tables);
    assert!(tables.sequences.is_empty());
    assert_eq!(to_text("f", &tables), "no restartable sequences in f\n");
    assert_eq!(to_json("f", &tables)["sequences"], serde_json::json!([]));
}

#[test]
fn the_real_binary_reads_cleanly() {
    let tables = inspect_elf(real_binary()).expect("the unmutated binary reads");
    assert_eq!(tables.problem_count(), 0, "{tables:?}");
    if tables.has_tables {
        assert_eq!(tables.sequences.len(), 1);
        assert_eq!(tables.sequences[0].function.as_deref(), Some("percpu_inc"));
        assert_eq!(tables.sequences[0].exit_points.len(), 1);
    }
}

#[test]
fn sequence_range_is_half_open_and_never_overflows() {
    let seq = Sequence {
        descriptor: 0,
        version: 0,
        flags: 0,
        start_ip: u64::MAX - 1,
        post_commit_offset: 4,
        abort_ip: 0,
        in_pointer_array: true,
        function: None,
        exit_points: Vec::new(),
        problems: Vec::new(),
    };
    assert!(seq.contains(u64::MAX - 1));
    assert!(seq.contains(u64::MAX));
    assert!(!seq.contains(u64::MAX - 2));
    assert_eq!(seq.post_commit_ip(), 2);
}

#[test]
fn rust_names_are_demangled_without_hash() {
    assert_eq!(
        demangle("_ZN11restartable4arch6x86_6414load_add_store17h0123456789abcdefE"),
        "restartable::arch::x86_64::load_add_store"
    );
    assert_eq!(
        demangle("_RNvNtCs1234_11restartable4arch14load_add_store"),
        "restartable::arch::load_add_store"
    );
    assert_eq!(demangle("percpu_inc"), "percpu_inc");
    assert_eq!(demangle("_Z3foov"), "_Z3foov");
}

/// One way to damage a file.
#[derive(Debug, Clone)]
enum Damage {
    /// XOR a byte at a position (an index into the file) with a non-zero mask.
    Flip(prop::sample::Index, u8),
    /// Overwrite 8 bytes with a chosen value (a pointer, a size, an offset...).
    Word(prop::sample::Index, u64),
    /// Cut the file at a position.
    Truncate(prop::sample::Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<prop::sample::Index>(), 1..=255u8).prop_map(|(i, m)| Damage::Flip(i, m)),
        2 => (any::<prop::sample::Index>(), prop_oneof![
            any::<u64>(),
            Just(0u64),
            Just(u64::MAX),
            0..0x10000u64,
        ]).prop_map(|(i, v)| Damage::Word(i, v)),
        1 => any::<prop::sample::Index>().prop_map(Damage::Truncate),
    ]
}

/// Where damage goes: anywhere, or the headers (start and end of the file), where a
/// few flips change what the parser reads most.
fn apply(data: &mut Vec<u8>, damage: &Damage, near_headers: bool) {
    let position = |index: &prop::sample::Index, len: usize| {
        if near_headers && len > 4096 {
            let i = index.index(8192);
            if i < 4096 {
                i
            } else {
                len - 1 - (i - 4096)
            }
        } else {
            index.index(len)
        }
    };
    if data.is_empty() {
        return;
    }
    match damage {
        Damage::Flip(index, mask) => {
            let at = position(index, data.len());
            data[at] ^= mask;
        }
        Damage::Word(index, value) => {
            let at = position(index, data.len());
            let end = (at + 8).min(data.len());
            data[at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
        }
        Damage::Truncate(index) => {
            let at = position(index, data.len());
            data.truncate(at);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The parser returns (Ok or Err) on any damaged copy of a real binary, and what
    /// it returns renders as text and JSON.
    #[test]
    fn damaged_real_binaries_never_panic(
        damages in prop::collection::vec(damage(), 1..6),
        near_headers in any::<bool>(),
    ) {
        let mut data = real_binary().to_vec();
        for d in &damages {
            apply(&mut data, d, near_headers);
        }
        if let Ok(tables) = inspect_elf(&data) {
            let _ = to_text("damaged", &tables);
            let _ = to_json("damaged", &tables).to_string();
        }
    }

    /// Random bytes behind a valid x86_64 ELF header never make the parser panic.
    #[test]
    fn random_bytes_after_an_elf_header_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        shoff in 0u64..2200,
        shnum in 0u16..40,
        shstrndx in 0u16..40,
    ) {
        let mut data = elf64_header(62);
        data[40..48].copy_from_slice(&shoff.to_le_bytes());
        data[60..62].copy_from_slice(&shnum.to_le_bytes());
        data[62..64].copy_from_slice(&shstrndx.to_le_bytes());
        data.extend_from_slice(&body);
        let _ = inspect_elf(&data);
    }
}

/// Names the structured generator gives its sections.
const NAMES: &[u8] =
    b"\0__rseq_cs\0__rseq_cs_ptr_array\0__rseq_exit_point_array\0.rela.dyn\0.text\0.shstrtab\0";
/// Offsets of the names in [`NAMES`].
const NAME_OFFSETS: [u32; 7] = [0, 1, 11, 31, 55, 65, 71];

/// One generated section header: (name, type, flags, address, offset, size, link).
type GenSection = (usize, u32, u64, u64, u64, u64, u32);

fn gen_section() -> impl Strategy<Value = GenSection> {
    (
        0..NAME_OFFSETS.len(),
        prop_oneof![
            Just(1u32),
            Just(4u32),
            Just(8u32),
            Just(2u32),
            Just(11u32),
            any::<u32>()
        ],
        prop_oneof![Just(2u64), Just(3u64), Just(6u64), any::<u64>()],
        prop_oneof![0u64..0x3000, any::<u64>()],
        prop_oneof![0u64..0x1000, any::<u64>()],
        prop_oneof![0u64..0x200, any::<u64>()],
        0u32..12,
    )
}

/// Builds an x86_64 ELF file: header, random body, string table, section headers.
fn build_elf(body: &[u8], sections: &[GenSection]) -> Vec<u8> {
    let mut data = elf64_header(62);
    data.extend_from_slice(body);
    let names_at = data.len() as u64;
    data.extend_from_slice(NAMES);
    while !data.len().is_multiple_of(8) {
        data.push(0);
    }
    let shoff = data.len() as u64;
    // Section 0 (null), the string table, then the generated ones.
    let mut headers = vec![[0u8; 64]];
    let mut strtab = [0u8; 64];
    strtab[..4].copy_from_slice(&NAME_OFFSETS[6].to_le_bytes());
    strtab[4..8].copy_from_slice(&3u32.to_le_bytes());
    strtab[24..32].copy_from_slice(&names_at.to_le_bytes());
    strtab[32..40].copy_from_slice(&(NAMES.len() as u64).to_le_bytes());
    headers.push(strtab);
    for &(name, kind, flags, addr, offset, size, link) in sections {
        let mut h = [0u8; 64];
        h[..4].copy_from_slice(&NAME_OFFSETS[name].to_le_bytes());
        h[4..8].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&flags.to_le_bytes());
        h[16..24].copy_from_slice(&addr.to_le_bytes());
        h[24..32].copy_from_slice(&offset.to_le_bytes());
        h[32..40].copy_from_slice(&size.to_le_bytes());
        h[40..44].copy_from_slice(&link.to_le_bytes());
        h[48..56].copy_from_slice(&8u64.to_le_bytes());
        let entsize: u64 = if kind == 4 { 24 } else { 0 };
        h[56..64].copy_from_slice(&entsize.to_le_bytes());
        headers.push(h);
    }
    for h in &headers {
        data.extend_from_slice(h);
    }
    data[40..48].copy_from_slice(&shoff.to_le_bytes());
    data[60..62].copy_from_slice(&(headers.len() as u16).to_le_bytes());
    data[62..64].copy_from_slice(&1u16.to_le_bytes());
    data
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Random section tables that name the rseq sections and a relocation section,
    /// over random contents: the parser returns, and its output renders.
    #[test]
    fn random_rseq_section_tables_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..0x1000),
        sections in prop::collection::vec(gen_section(), 0..8),
    ) {
        let data = build_elf(&body, &sections);
        if let Ok(tables) = inspect_elf(&data) {
            let _ = to_text("generated", &tables);
            let _ = to_json("generated", &tables).to_string();
        }
    }
}

#[test]
fn generated_tables_are_read() {
    // A descriptor at 0x40 (section offset 64 + 64 header bytes), listed once, whose
    // abort signature check must fail cleanly (no loaded segment).
    let mut body = vec![0u8; 256];
    let descriptor: [u64; 4] = [0, 0x1000, 0x10, 0x2000];
    for (i, word) in descriptor.iter().enumerate() {
        body[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    body[32..40].copy_from_slice(&0x40u64.to_le_bytes());
    let sections = [(1, 1, 3, 0x40, 64, 32, 0), (2, 1, 3, 0x60, 96, 8, 0)];
    let tables = inspect_elf(&build_elf(&body, &sections)).expect("readable");
    assert_eq!(tables.sequences.len(), 1, "{tables:?}");
    let seq = &tables.sequences[0];
    assert_eq!(
        (seq.start_ip, seq.post_commit_ip(), seq.abort_ip),
        (0x1000, 0x1010, 0x2000)
    );
    assert!(seq.in_pointer_array);
    assert!(seq
        .problems
        .iter()
        .any(|p| p.0.contains("cannot check the abort signature")));
}

/// A minimal x86_64 executable with one sequence (start 0x401010, 0x20 bytes, abort
/// 0x401100 after its signature) and `exits` as its `__rseq_exit_point_array`; no
/// pointer array and no program headers (two problems: the descriptor is not listed,
/// the signature cannot be checked).
fn synthetic_elf(exits: &[(u64, u64)]) -> Vec<u8> {
    synthetic_elf_with(1, exits)
}

/// [`synthetic_elf`] with `copies` identical descriptors (all starting at 0x401010).
fn synthetic_elf_with(copies: usize, exits: &[(u64, u64)]) -> Vec<u8> {
    const TEXT_OFF: usize = 0x1000;
    const TEXT_ADDR: u64 = 0x40_1000;
    const TEXT_SIZE: usize = 0x1000;
    const CS_OFF: usize = TEXT_OFF + TEXT_SIZE;
    const CS_ADDR: u64 = 0x50_0000;
    let ex_off = CS_OFF + 32 * copies;
    let names: &[u8] = b"\0.text\0__rseq_cs\0__rseq_exit_point_array\0.shstrtab\0";
    let names_off = ex_off + 16 * exits.len();
    let shdr_off = (names_off + names.len()).div_ceil(8) * 8;
    let mut data = vec![0u8; shdr_off + 5 * 64];
    let put = |data: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        data[at..at + bytes.len()].copy_from_slice(bytes)
    };
    // ELF header: ET_EXEC, EM_X86_64, section headers at shdr_off, 5 of them,
    // .shstrtab at index 4.
    let mut header = elf64_header(62);
    header[16..18].copy_from_slice(&2u16.to_le_bytes());
    header[40..48].copy_from_slice(&(shdr_off as u64).to_le_bytes());
    header[60..62].copy_from_slice(&5u16.to_le_bytes());
    header[62..64].copy_from_slice(&4u16.to_le_bytes());
    put(&mut data, 0, &header);
    put(
        &mut data,
        TEXT_OFF + 0x100 - 4,
        &0x5305_3053u32.to_le_bytes(),
    );
    let mut cs = Vec::new();
    for _ in 0..copies {
        cs.extend_from_slice(&[0u8; 8]);
        for word in [TEXT_ADDR + 0x10, 0x20, TEXT_ADDR + 0x100] {
            cs.extend_from_slice(&word.to_le_bytes());
        }
    }
    put(&mut data, CS_OFF, &cs);
    for (i, (start, exit)) in exits.iter().enumerate() {
        put(&mut data, ex_off + 16 * i, &start.to_le_bytes());
        put(&mut data, ex_off + 16 * i + 8, &exit.to_le_bytes());
    }
    put(&mut data, names_off, names);
    let section = |name: u32, kind: u32, flags: u64, addr: u64, off: usize, size: usize| {
        let mut s = Vec::with_capacity(64);
        s.extend_from_slice(&name.to_le_bytes());
        s.extend_from_slice(&kind.to_le_bytes());
        // flags, addr, offset, size; link and info (0); addralign 1; entsize 0.
        for word in [flags, addr, off as u64, size as u64, 0, 1, 0] {
            s.extend_from_slice(&word.to_le_bytes());
        }
        s
    };
    let headers = [
        vec![0u8; 64],
        section(1, 1, 6, TEXT_ADDR, TEXT_OFF, TEXT_SIZE),
        section(7, 1, 2, CS_ADDR, CS_OFF, 32 * copies),
        section(
            17,
            1,
            2,
            CS_ADDR + 32 * copies as u64,
            ex_off,
            16 * exits.len(),
        ),
        section(41, 3, 0, 0, names_off, names.len()),
    ];
    for (i, h) in headers.iter().enumerate() {
        assert_eq!(h.len(), 64);
        put(&mut data, shdr_off + 64 * i, h);
    }
    data
}

#[test]
fn the_synthetic_elf_reads_cleanly() {
    let tables = inspect_elf(&synthetic_elf(&[(0x40_1010, 0x40_1200)])).expect("reads");
    assert_eq!(tables.sequences.len(), 1, "{tables:?}");
    let seq = &tables.sequences[0];
    assert_eq!((seq.start_ip, seq.abort_ip), (0x40_1010, 0x40_1100));
    assert_eq!(seq.exit_points.len(), 1);
    assert_eq!(tables.problem_count(), 2, "{tables:?}");
}

/// An exit point listed many times is shown once, also in a table of 100,000 entries
/// (50,000 distinct exits, each twice): the duplicates are found with a set. (They
/// were found by scanning the sequence's exits for each entry, quadratic: a crafted
/// 16 MB table took minutes; see the branch's report for the figures.)
#[test]
fn repeated_exit_points_are_listed_once_in_a_big_table() {
    let distinct = 50_000u64;
    let exits: Vec<(u64, u64)> = (0..2 * distinct)
        .map(|i| (0x40_1010, 0x40_1200 + i % distinct))
        .collect();
    let tables = inspect_elf(&synthetic_elf(&exits)).expect("reads");
    let seq = &tables.sequences[0];
    assert_eq!(seq.exit_points.len(), distinct as usize);
    assert!(seq
        .exit_points
        .windows(2)
        .all(|w| w[0].exit_ip < w[1].exit_ip));
    let outside_text = seq
        .exit_points
        .iter()
        .filter(|e| e.exit_ip >= 0x40_2000)
        .count();
    assert_eq!(tables.problem_count(), 2 + outside_text);
}

/// k descriptors sharing a start address each list the exit points of that start: k x
/// m points for m entries, which a small crafted file made billions of (4,000
/// descriptors and 4,000 entries, 200 KB, took 19 GB and minutes). The first
/// descriptor lists them all; the others share a budget of
/// [`super::elf::SHARED_START_EXIT_POINTS`], and a problem counts the rest.
#[test]
fn exit_points_of_shared_starts_are_bounded() {
    let limit = super::elf::SHARED_START_EXIT_POINTS as u64;
    let distinct = limit / 2 + 10_000;
    let exits: Vec<(u64, u64)> = (0..distinct).map(|i| (0x40_1010, 0x40_1200 + i)).collect();
    let tables = inspect_elf(&synthetic_elf_with(3, &exits)).expect("reads");
    assert_eq!(tables.sequences.len(), 3);
    let counts: Vec<usize> = tables
        .sequences
        .iter()
        .map(|s| s.exit_points.len())
        .collect();
    assert_eq!(counts[0], distinct as usize, "{counts:?}");
    assert_eq!(
        counts.iter().sum::<usize>() as u64,
        distinct + limit,
        "{counts:?}"
    );
    let not_listed = 2 * distinct - limit;
    assert!(
        tables.problems.iter().any(|p| p.0.starts_with(&format!(
            "{not_listed} entries of __rseq_exit_point_array not listed"
        ))),
        "{:?}",
        tables.problems
    );
}

/// Control characters (C0, tab included, DEL, C1) and bidirectional formatting
/// characters are escaped; other text is kept as it is.
#[test]
fn shown_escapes_controls_and_bidi_overrides() {
    use super::shown;
    assert_eq!(shown("percpu_inc ünïcode"), "percpu_inc ünïcode");
    assert!(matches!(shown("plain"), std::borrow::Cow::Borrowed(_)));
    assert_eq!(shown("a\x1b[2Jb"), "a\\u{1b}[2Jb");
    assert_eq!(shown("\x7f\u{9b}"), "\\u{7f}\\u{9b}");
    assert_eq!(shown("x\u{202e}cod.exe"), "x\\u{202e}cod.exe");
    assert_eq!(shown("\u{2066}\u{200f}"), "\\u{2066}\\u{200f}");
}
