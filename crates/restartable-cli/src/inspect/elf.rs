//! Reading the restartable-sequence tables out of an ELF file.
//!
//! The tables have the layout of the reference C library (librseq) and the kernel
//! selftests, which the `restartable` crate also emits:
//!
//! - `__rseq_cs`: `struct rseq_cs` descriptors, 32 bytes each, 32-byte aligned:
//!   `u32 version, u32 flags, u64 start_ip, u64 post_commit_offset, u64 abort_ip`;
//! - `__rseq_cs_ptr_array`: one `u64` address per descriptor;
//! - `__rseq_exit_point_array`: `(u64 start_ip, u64 exit_ip)` pairs, one for every exit
//!   of a sequence other than its post-commit address.
//!
//! Position-independent executables and shared objects keep these addresses in
//! dynamic relocations (`R_X86_64_RELATIVE`: the addend is the value, the section bytes
//! are 0); [`inspect_elf`] applies the dynamic `RELA` relocations that land in the three
//! sections before reading them. Everything is read with bounds checks: malformed input
//! gives an [`InspectError`] or a [`Problem`], never a panic.

use std::collections::BTreeMap;
use std::fmt;

use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader, Rela, SectionHeader, Sym};
use object::{Endianness, FileKind, Object, ObjectSymbol, SymbolKind};

/// Section holding the `struct rseq_cs` descriptors.
pub const CS_SECTION: &str = "__rseq_cs";
/// Section holding one pointer per descriptor.
pub const PTR_SECTION: &str = "__rseq_cs_ptr_array";
/// Section holding `(start_ip, exit_ip)` pairs.
pub const EXIT_SECTION: &str = "__rseq_exit_point_array";

/// Size (and alignment) of one `struct rseq_cs` descriptor.
pub const CS_SIZE: usize = 32;
/// Size of one `__rseq_exit_point_array` entry.
pub const EXIT_ENTRY_SIZE: usize = 16;
/// The x86 abort signature: the 4 bytes right before every abort handler.
pub const X86_RSEQ_SIG: u32 = 0x5305_3053;

/// Why a file could not be read at all (the listing is not printed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InspectError {
    /// The file is empty.
    Empty,
    /// The file does not start with the ELF magic bytes.
    NotElf,
    /// A 32-bit ELF file: restartable-sequence tables are read from 64-bit files only.
    Elf32,
    /// An ELF file for another architecture than x86_64.
    OtherArch(String),
    /// A big-endian ELF file.
    BigEndian,
    /// A relocatable object (`.o`): its addresses are not final.
    Relocatable,
    /// The ELF structure is damaged (truncated, out-of-bounds offsets...).
    Malformed(String),
    /// One of the rseq sections is damaged.
    BadSection {
        /// The section's name.
        section: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl fmt::Display for InspectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the file is empty"),
            Self::NotElf => f.write_str("not an ELF file (no ELF magic number)"),
            Self::Elf32 => f.write_str(
                "32-bit ELF file: only 64-bit x86_64 files have restartable-sequence tables here",
            ),
            Self::OtherArch(arch) => write!(
                f,
                "ELF file for {arch}, not x86_64: only x86_64 tables and abort signatures are read"
            ),
            Self::BigEndian => f.write_str("big-endian ELF file: only x86_64 files are read"),
            Self::Relocatable => f.write_str(
                "relocatable object file (.o): addresses are not final, inspect the linked binary",
            ),
            Self::Malformed(why) => write!(f, "malformed ELF file: {why}"),
            Self::BadSection { section, problem } => write!(f, "section {section}: {problem}"),
        }
    }
}

impl std::error::Error for InspectError {}

/// Something wrong with the tables, found while reading them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One exit point of a sequence (an exit other than the post-commit address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitPoint {
    /// Where the exit jumps to.
    pub exit_ip: u64,
    /// The function that address lies in, if a symbol covers it.
    pub function: Option<String>,
}

/// One restartable sequence: a `struct rseq_cs` descriptor and what refers to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    /// Address of the descriptor.
    pub descriptor: u64,
    /// `rseq_cs.version` (must be 0).
    pub version: u32,
    /// `rseq_cs.flags` (must be 0).
    pub flags: u32,
    /// First instruction of the critical section.
    pub start_ip: u64,
    /// Length of the critical section: the commit is its last instruction.
    pub post_commit_offset: u64,
    /// Address of the abort handler.
    pub abort_ip: u64,
    /// Whether `__rseq_cs_ptr_array` lists this descriptor.
    pub in_pointer_array: bool,
    /// The function `start_ip` lies in (demangled).
    pub function: Option<String>,
    /// The exits listed for `start_ip` in `__rseq_exit_point_array`.
    pub exit_points: Vec<ExitPoint>,
    /// What is wrong with this sequence.
    pub problems: Vec<Problem>,
}

impl Sequence {
    /// The post-commit address, `start_ip + post_commit_offset` (wrapping).
    pub fn post_commit_ip(&self) -> u64 {
        self.start_ip.wrapping_add(self.post_commit_offset)
    }

    /// Whether `ip` is inside the critical section `[start_ip, post_commit_ip)`.
    pub fn contains(&self, ip: u64) -> bool {
        ip >= self.start_ip && ip - self.start_ip < self.post_commit_offset
    }
}

/// Everything [`inspect_elf`] found in a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    /// Whether the file has any of the three sections.
    pub has_tables: bool,
    /// The sequences, sorted by start address.
    pub sequences: Vec<Sequence>,
    /// Problems that belong to no single sequence.
    pub problems: Vec<Problem>,
}

impl Tables {
    /// The number of problems, file-level and per sequence.
    pub fn problem_count(&self) -> usize {
        self.problems.len()
            + self
                .sequences
                .iter()
                .map(|s| s.problems.len())
                .sum::<usize>()
    }
}

/// A copy of one rseq section with the dynamic relocations applied.
struct TableSection {
    name: &'static str,
    address: u64,
    bytes: Vec<u8>,
}

impl TableSection {
    fn contains(&self, address: u64, len: u64) -> bool {
        address >= self.address
            && address
                .checked_add(len)
                .is_some_and(|end| end - self.address <= self.bytes.len() as u64)
    }

    /// Reads `N` bytes at `address`, if they are inside the section.
    fn read<const N: usize>(&self, address: u64) -> Option<[u8; N]> {
        let offset = usize::try_from(address.checked_sub(self.address)?).ok()?;
        self.bytes
            .get(offset..offset.checked_add(N)?)?
            .try_into()
            .ok()
    }
}

/// A section header reduced to what the checks need.
struct SectionInfo {
    name: String,
    address: u64,
    size: u64,
    flags: u64,
    /// File-backed bytes (empty for `SHT_NOBITS`).
    data: Option<std::ops::Range<usize>>,
}

/// Reads the restartable-sequence tables of an x86_64 ELF file.
///
/// Returns `Ok` with an empty [`Tables`] (`has_tables == false`) for a file without
/// the sections, and an error for anything that is not a readable 64-bit x86_64 ELF
/// file or whose rseq sections are damaged. Never panics, whatever `data` holds.
pub fn inspect_elf(data: &[u8]) -> Result<Tables, InspectError> {
    if data.is_empty() {
        return Err(InspectError::Empty);
    }
    if !data.starts_with(&elf::ELFMAG) {
        return Err(InspectError::NotElf);
    }
    match FileKind::parse(data) {
        Ok(FileKind::Elf64) => {}
        Ok(FileKind::Elf32) => return Err(InspectError::Elf32),
        Ok(_) => return Err(InspectError::NotElf),
        Err(err) => return Err(InspectError::Malformed(err.to_string())),
    }
    let file = ElfFile64::<Endianness>::parse(data)
        .map_err(|err| InspectError::Malformed(err.to_string()))?;
    let endian = file.endian();
    let header = file.elf_header();
    if endian == Endianness::Big {
        return Err(InspectError::BigEndian);
    }
    let machine = header.e_machine(endian);
    if machine != elf::EM_X86_64 {
        return Err(InspectError::OtherArch(machine_name(machine)));
    }
    if header.e_type(endian) == elf::ET_REL {
        return Err(InspectError::Relocatable);
    }

    let sections = section_infos(&file, data)?;
    let mut tables = Tables::default();
    let cs = load_table(&file, data, &sections.list, CS_SECTION, CS_SIZE)?;
    let ptrs = load_table(&file, data, &sections.list, PTR_SECTION, 8)?;
    let exits = load_table(&file, data, &sections.list, EXIT_SECTION, EXIT_ENTRY_SIZE)?;
    tables.has_tables = cs.is_some() || ptrs.is_some() || exits.is_some();
    if !tables.has_tables {
        return Ok(tables);
    }
    let mut loaded: Vec<TableSection> = [cs, ptrs, exits].into_iter().flatten().collect();
    apply_dynamic_relocations(&file, data, &mut loaded, &mut tables.problems)?;
    let table = |name: &str| loaded.iter().find(|t| t.name == name);
    let (cs, ptrs, exits) = (table(CS_SECTION), table(PTR_SECTION), table(EXIT_SECTION));

    let symbols = FunctionSymbols::new(&file);
    let segments = Segments::new(&file, data);
    let mut sequences: BTreeMap<u64, Sequence> = BTreeMap::new();

    // 1. The descriptors the pointer array lists.
    if let Some(ptrs) = ptrs {
        for (index, chunk) in ptrs.bytes.chunks_exact(8).enumerate() {
            let pointer = u64_at(chunk, 0);
            let entry = format!("{PTR_SECTION}[{index}] = {pointer:#x}");
            if pointer == 0 {
                tables
                    .problems
                    .push(Problem(format!("{entry} is a null pointer")));
                continue;
            }
            let Some(bytes) = descriptor_bytes(pointer, cs, &sections, data) else {
                let place = match section_at(&sections, pointer) {
                    Some(s) => format!("lands in section {} but cannot be read there", s.name),
                    None => "lands outside any section".to_owned(),
                };
                tables.problems.push(Problem(format!("{entry} {place}")));
                continue;
            };
            if let Some(seq) = sequences.get_mut(&pointer) {
                if seq.in_pointer_array {
                    seq.problems.push(Problem(format!(
                        "descriptor listed more than once in {PTR_SECTION} (again at index {index})"
                    )));
                }
                continue;
            }
            let mut seq = decode_descriptor(pointer, &bytes);
            seq.in_pointer_array = true;
            if !cs.is_some_and(|cs| cs.contains(pointer, CS_SIZE as u64)) {
                let place = section_at(&sections, pointer)
                    .map_or_else(|| "no section".to_owned(), |s| s.name.clone());
                seq.problems.push(Problem(format!(
                    "descriptor is outside {CS_SECTION} (in {place})"
                )));
            }
            sequences.insert(pointer, seq);
        }
    }

    // 2. Descriptors in __rseq_cs that the pointer array misses.
    if let Some(cs) = cs {
        for (index, chunk) in cs.bytes.chunks_exact(CS_SIZE).enumerate() {
            let address = cs.address.wrapping_add((index * CS_SIZE) as u64);
            if chunk.iter().all(|&b| b == 0) || sequences.contains_key(&address) {
                continue;
            }
            let mut seq = decode_descriptor(address, chunk);
            seq.problems.push(Problem(format!(
                "descriptor is not listed in {PTR_SECTION}: debuggers and tools will not see it"
            )));
            sequences.insert(address, seq);
        }
    }

    // 3. Exit points, matched to their sequence by start address.
    let mut by_start: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for seq in sequences.values() {
        by_start
            .entry(seq.start_ip)
            .or_default()
            .push(seq.descriptor);
    }
    if let Some(exits) = exits {
        // (descriptor, exit) pairs already listed: one set lookup per entry (a scan of
        // the sequence's exits per entry was quadratic in a crafted table).
        let mut listed: std::collections::HashSet<(u64, u64)> = std::collections::HashSet::new();
        // Each exit point goes to every descriptor of its start address: k descriptors
        // sharing one start and m entries would be k x m points (a 200 KB file took
        // 19 GB and minutes). The first descriptor of a start gets all of its exit
        // points; the others share a budget, and what is beyond it is counted.
        let mut shared_left = SHARED_START_EXIT_POINTS;
        let mut not_listed = 0usize;
        for (index, chunk) in exits.bytes.chunks_exact(EXIT_ENTRY_SIZE).enumerate() {
            let (start_ip, exit_ip) = (u64_at(chunk, 0), u64_at(chunk, 8));
            let Some(descriptors) = by_start.get(&start_ip) else {
                tables.problems.push(Problem(format!(
                    "{EXIT_SECTION}[{index}] = ({start_ip:#x}, {exit_ip:#x}): no sequence starts at {start_ip:#x}"
                )));
                continue;
            };
            for (n, descriptor) in descriptors.iter().enumerate() {
                if n > 0 && shared_left == 0 {
                    not_listed += descriptors.len() - n;
                    break;
                }
                let Some(seq) = sequences.get_mut(descriptor) else {
                    continue;
                };
                if !listed.insert((*descriptor, exit_ip)) {
                    continue;
                }
                if n > 0 {
                    shared_left -= 1;
                }
                if seq.contains(exit_ip) {
                    seq.problems.push(Problem(format!(
                        "exit point {exit_ip:#x} is inside the critical section"
                    )));
                }
                check_code_address(&sections, "exit point", exit_ip, &mut seq.problems);
                seq.exit_points.push(ExitPoint {
                    exit_ip,
                    function: symbols.function_at(exit_ip),
                });
            }
        }
        if not_listed > 0 {
            tables.problems.push(Problem(format!(
                "{not_listed} entries of {EXIT_SECTION} not listed under the descriptors that \
                 share their start address with another (more than \
                 {SHARED_START_EXIT_POINTS} such exit points)"
            )));
        }
    }

    // 4. Per-sequence checks.
    let mut starts: BTreeMap<u64, usize> = BTreeMap::new();
    for seq in sequences.values() {
        *starts.entry(seq.start_ip).or_default() += 1;
    }
    for seq in sequences.values_mut() {
        check_sequence(seq, &sections, &segments);
        if starts.get(&seq.start_ip).copied().unwrap_or(0) > 1 {
            seq.problems.push(Problem(format!(
                "another descriptor has the same start address {:#x}",
                seq.start_ip
            )));
        }
        seq.function = symbols.function_at(seq.start_ip);
        seq.exit_points.sort_by_key(|e| e.exit_ip);
    }

    tables.sequences = sequences.into_values().collect();
    tables.sequences.sort_by_key(|s| (s.start_ip, s.descriptor));
    Ok(tables)
}

/// Exit points listed, in all, under descriptors that share their start address with
/// a lower one (each such descriptor repeats the first one's exit points).
pub(super) const SHARED_START_EXIT_POINTS: usize = 100_000;

fn check_sequence(seq: &mut Sequence, sections: &Sections, segments: &Segments<'_>) {
    let mut problems = Vec::new();
    if seq.version != 0 {
        problems.push(Problem(format!("version is {}, not 0", seq.version)));
    }
    if seq.flags != 0 {
        problems.push(Problem(format!(
            "flags are {:#x}, not 0 (the kernel rejects them)",
            seq.flags
        )));
    }
    if seq.post_commit_offset == 0 {
        problems.push(Problem(
            "post_commit_offset is 0: the critical section is empty".to_owned(),
        ));
    }
    if seq.start_ip.checked_add(seq.post_commit_offset).is_none() {
        problems.push(Problem(format!(
            "start_ip + post_commit_offset overflows ({:#x} + {:#x})",
            seq.start_ip, seq.post_commit_offset
        )));
    }
    if seq.contains(seq.abort_ip) {
        problems.push(Problem(format!(
            "abort_ip {:#x} is inside the critical section it aborts",
            seq.abort_ip
        )));
    }
    check_code_address(sections, "start_ip", seq.start_ip, &mut problems);
    check_code_address(sections, "abort_ip", seq.abort_ip, &mut problems);
    match seq
        .abort_ip
        .checked_sub(4)
        .and_then(|at| segments.read::<4>(at))
    {
        Some(bytes) if u32::from_le_bytes(bytes) == X86_RSEQ_SIG => {}
        Some(bytes) => problems.push(Problem(format!(
            "no abort signature {X86_RSEQ_SIG:#010x} before abort_ip {:#x} (found {:#010x}): \
             the kernel kills the thread on abort",
            seq.abort_ip,
            u32::from_le_bytes(bytes)
        ))),
        None => problems.push(Problem(format!(
            "the 4 bytes before abort_ip {:#x} are not in the file's loaded segments: \
             cannot check the abort signature",
            seq.abort_ip
        ))),
    }
    seq.problems.append(&mut problems);
}

/// Adds a problem if `address` is not inside an executable section.
fn check_code_address(sections: &Sections, what: &str, address: u64, problems: &mut Vec<Problem>) {
    match section_at(sections, address) {
        Some(s) if s.flags & u64::from(elf::SHF_EXECINSTR) != 0 => {}
        Some(s) => problems.push(Problem(format!(
            "{what} {address:#x} is in the non-executable section {}",
            s.name
        ))),
        None => problems.push(Problem(format!(
            "{what} {address:#x} lands outside any section"
        ))),
    }
}

fn decode_descriptor(address: u64, bytes: &[u8]) -> Sequence {
    Sequence {
        descriptor: address,
        version: u32_at(bytes, 0),
        flags: u32_at(bytes, 4),
        start_ip: u64_at(bytes, 8),
        post_commit_offset: u64_at(bytes, 16),
        abort_ip: u64_at(bytes, 24),
        in_pointer_array: false,
        function: None,
        exit_points: Vec::new(),
        problems: Vec::new(),
    }
}

/// The 32 descriptor bytes at `address`: from the relocated `__rseq_cs` copy, or from
/// another section's file bytes (a descriptor outside `__rseq_cs`, not relocated).
fn descriptor_bytes(
    address: u64,
    cs: Option<&TableSection>,
    sections: &Sections,
    data: &[u8],
) -> Option<[u8; CS_SIZE]> {
    if let Some(bytes) = cs.and_then(|cs| cs.read::<CS_SIZE>(address)) {
        return Some(bytes);
    }
    let section = section_at(sections, address)?;
    let range = section.data.clone()?;
    let offset = usize::try_from(address - section.address).ok()?;
    let start = range.start.checked_add(offset)?;
    let end = start.checked_add(CS_SIZE)?;
    if end > range.end {
        return None;
    }
    data.get(start..end)?.try_into().ok()
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0; 4];
    if let Some(src) = bytes.get(offset..offset + 4) {
        word.copy_from_slice(src);
    }
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0; 8];
    if let Some(src) = bytes.get(offset..offset + 8) {
        word.copy_from_slice(src);
    }
    u64::from_le_bytes(word)
}

fn section_infos(file: &ElfFile64<'_, Endianness>, data: &[u8]) -> Result<Sections, InspectError> {
    let endian = file.endian();
    let table = file.elf_section_table();
    let mut out = Vec::with_capacity(table.len());
    for header in table.iter() {
        let name = table
            .section_name(endian, header)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_else(|_| "<unnamed>".to_owned());
        let data_range = header.file_range(endian).and_then(|(offset, size)| {
            let start = usize::try_from(offset).ok()?;
            let end = start.checked_add(usize::try_from(size).ok()?)?;
            (end <= data.len()).then_some(start..end)
        });
        out.push(SectionInfo {
            name,
            address: header.sh_addr(endian),
            size: header.sh_size(endian),
            flags: header.sh_flags(endian),
            data: data_range,
        });
    }
    let at = RangeMap::new(out.iter().enumerate().filter_map(|(i, s)| {
        let start = u128::from(s.address);
        (s.flags & u64::from(elf::SHF_ALLOC) != 0 && s.size > 0)
            .then(|| (i, start, start + u128::from(s.size)))
    }));
    Ok(Sections { list: out, at })
}

/// The section headers, and which allocated section each address is in.
struct Sections {
    list: Vec<SectionInfo>,
    at: RangeMap,
}

/// The first allocated section (in header order) that contains `address`.
fn section_at(sections: &Sections, address: u64) -> Option<&SectionInfo> {
    sections.at.first_at(address).map(|i| &sections.list[i])
}

/// Numbered address ranges `[start, end)`, which may overlap (in a crafted file they
/// do), and for any address the lowest number of a range that contains it, in
/// O(log n): the lookups of every table entry must not scan every section or segment
/// (a crafted file has tens of thousands of each, and as many entries).
struct RangeMap {
    /// The points where the answer changes, sorted.
    bounds: Vec<u128>,
    /// The answer on `[bounds[j], bounds[j + 1])`.
    first: Vec<Option<usize>>,
}

impl RangeMap {
    /// From `(number, start, end)` triples with `start < end`.
    fn new(ranges: impl Iterator<Item = (usize, u128, u128)>) -> Self {
        let mut events: Vec<(u128, usize, bool)> = Vec::new();
        for (i, start, end) in ranges {
            events.push((start, i, true));
            events.push((end, i, false));
        }
        events.sort_unstable_by_key(|e| e.0);
        let mut open = std::collections::BinaryHeap::new();
        let mut closed = std::collections::HashSet::new();
        let (mut bounds, mut first) = (Vec::new(), Vec::new());
        let mut k = 0;
        while let Some(&(point, _, _)) = events.get(k) {
            while let Some(&(_, i, starts)) = events.get(k).filter(|e| e.0 == point) {
                if starts {
                    open.push(std::cmp::Reverse(i));
                } else {
                    closed.insert(i);
                }
                k += 1;
            }
            while open.peek().is_some_and(|r| closed.contains(&r.0)) {
                open.pop();
            }
            bounds.push(point);
            first.push(open.peek().map(|r| r.0));
        }
        RangeMap { bounds, first }
    }

    /// The lowest number of a range that contains `address`.
    fn first_at(&self, address: u64) -> Option<usize> {
        let j = self.bounds.partition_point(|&b| b <= u128::from(address));
        self.first.get(j.checked_sub(1)?).copied().flatten()
    }
}

/// Copies the rseq section `name`, checking that it is whole and a multiple of
/// `entry_size` bytes.
fn load_table(
    file: &ElfFile64<'_, Endianness>,
    data: &[u8],
    sections: &[SectionInfo],
    name: &'static str,
    entry_size: usize,
) -> Result<Option<TableSection>, InspectError> {
    let endian = file.endian();
    let mut found = None;
    for (index, header) in file.elf_section_table().iter().enumerate() {
        if sections.get(index).is_none_or(|s| s.name != name) {
            continue;
        }
        if found.is_some() {
            return Err(InspectError::BadSection {
                section: name,
                problem: "the file has more than one section of this name".to_owned(),
            });
        }
        if header.sh_type(endian) == elf::SHT_NOBITS {
            return Err(InspectError::BadSection {
                section: name,
                problem: "has no contents in the file (SHT_NOBITS)".to_owned(),
            });
        }
        let size = header.sh_size(endian);
        let offset = header.sh_offset(endian);
        let bytes = header
            .data(endian, data)
            .map_err(|_| InspectError::BadSection {
                section: name,
                problem: format!(
                    "its {size} bytes at file offset {offset:#x} go past the end of the file \
                     ({} bytes): the file is cut short",
                    data.len()
                ),
            })?;
        if bytes.len() % entry_size != 0 {
            return Err(InspectError::BadSection {
                section: name,
                problem: format!(
                    "its size {} is not a multiple of the {entry_size}-byte entry",
                    bytes.len()
                ),
            });
        }
        let address = header.sh_addr(endian);
        if address.checked_add(size).is_none() {
            return Err(InspectError::BadSection {
                section: name,
                problem: format!("address {address:#x} + size {size:#x} overflows"),
            });
        }
        found = Some(TableSection {
            name,
            address,
            bytes: bytes.to_vec(),
        });
    }
    Ok(found)
}

/// Applies the `RELA` relocations of the loaded (dynamic) relocation sections whose
/// offsets fall in the rseq sections: `R_X86_64_RELATIVE` (the addend) and
/// `R_X86_64_64` (symbol value + addend). `REL` and `RELR` relocations keep their
/// addend in the section bytes, which already hold the link-time address.
fn apply_dynamic_relocations(
    file: &ElfFile64<'_, Endianness>,
    data: &[u8],
    tables: &mut [TableSection],
    problems: &mut Vec<Problem>,
) -> Result<(), InspectError> {
    let endian = file.endian();
    let sections = file.elf_section_table();
    for header in sections.iter() {
        if header.sh_flags(endian) & u64::from(elf::SHF_ALLOC) == 0 {
            continue; // static relocations of a linked file: not applied at load time
        }
        let Ok(Some((relocations, link))) = header.rela(endian, data) else {
            continue;
        };
        let symtab = sections.symbol_table_by_index(endian, data, link).ok();
        for rela in relocations {
            let offset = rela.r_offset(endian);
            let Some(table) = tables.iter_mut().find(|t| t.contains(offset, 1)) else {
                continue;
            };
            let r_type = rela.r_type(endian, false);
            let addend = rela.r_addend(endian) as u64;
            let value = match r_type {
                elf::R_X86_64_RELATIVE => addend,
                elf::R_X86_64_64 => {
                    let index = object::SymbolIndex(rela.r_sym(endian, false) as usize);
                    let symbol = symtab.as_ref().and_then(|t| t.symbol(index).ok());
                    match symbol {
                        Some(sym) if sym.st_shndx(endian) != elf::SHN_UNDEF => {
                            sym.st_value(endian).wrapping_add(addend)
                        }
                        _ => {
                            problems.push(Problem(format!(
                                "{} at {offset:#x}: R_X86_64_64 against an undefined symbol, \
                                 resolved only at run time",
                                table.name
                            )));
                            continue;
                        }
                    }
                }
                elf::R_X86_64_NONE => continue,
                other => {
                    problems.push(Problem(format!(
                        "{} at {offset:#x}: unexpected relocation type {other}",
                        table.name
                    )));
                    continue;
                }
            };
            if !table.contains(offset, 8) {
                return Err(InspectError::BadSection {
                    section: table.name,
                    problem: format!("a relocation at {offset:#x} runs past the section's end"),
                });
            }
            // In bounds: `contains(offset, 8)` checked it.
            let start = (offset - table.address) as usize;
            if let Some(slot) = table.bytes.get_mut(start..start + 8) {
                slot.copy_from_slice(&value.to_le_bytes());
            }
        }
    }
    Ok(())
}

/// The file-backed parts of the `PT_LOAD` segments, to read code bytes by address.
struct Segments<'data> {
    /// (p_vaddr, p_filesz, the segment's bytes if they are in the file).
    list: Vec<(u64, u64, Option<&'data [u8]>)>,
    at: RangeMap,
}

impl<'data> Segments<'data> {
    fn new(file: &ElfFile64<'data, Endianness>, data: &'data [u8]) -> Self {
        let endian = file.endian();
        let list: Vec<_> = file
            .elf_program_headers()
            .iter()
            .filter(|segment| segment.p_type(endian) == elf::PT_LOAD)
            .map(|segment| {
                (
                    segment.p_vaddr(endian),
                    segment.p_filesz(endian),
                    segment.data(endian, data).ok(),
                )
            })
            .collect();
        let at = RangeMap::new(
            list.iter()
                .enumerate()
                .filter_map(|(i, &(vaddr, size, _))| {
                    let start = u128::from(vaddr);
                    (size > 0).then(|| (i, start, start + u128::from(size)))
                }),
        );
        Segments { list, at }
    }

    /// Reads `N` bytes at virtual address `address` from the file-backed part of the
    /// first `PT_LOAD` segment that contains `address`, if they are all in it.
    fn read<const N: usize>(&self, address: u64) -> Option<[u8; N]> {
        let (vaddr, filesz, bytes) = self.list[self.at.first_at(address)?];
        let offset = address - vaddr;
        if offset.checked_add(N as u64).is_none_or(|end| end > filesz) {
            return None;
        }
        let offset = usize::try_from(offset).ok()?;
        bytes?.get(offset..offset.checked_add(N)?)?.try_into().ok()
    }
}

/// The function symbols of a file, to name the function an address lies in.
struct FunctionSymbols {
    /// The demangled names, smallest function first (by size, then name length,
    /// then start, end and name).
    names: Vec<String>,
    /// Each function's range, numbered by its place in `names`.
    at: RangeMap,
}

impl FunctionSymbols {
    fn new(file: &ElfFile64<'_, Endianness>) -> Self {
        let mut ranges = Vec::new();
        for symbol in file.symbols().chain(file.dynamic_symbols()) {
            if symbol.kind() != SymbolKind::Text || symbol.size() == 0 {
                continue;
            }
            // Not UTF-8: shown with U+FFFD (skipping it named a larger function).
            let Ok(name) = symbol.name_bytes() else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            let start = symbol.address();
            let end = start.saturating_add(symbol.size());
            ranges.push((start, end, demangle(&String::from_utf8_lossy(name))));
        }
        Self::from_ranges(ranges)
    }

    /// From `(start, end, name)` triples.
    fn from_ranges(mut ranges: Vec<(u64, u64, String)>) -> Self {
        ranges.sort();
        ranges.dedup();
        // Stable: among equals, sorted order decides, as the first minimum did.
        ranges.sort_by_key(|r| (r.1 - r.0, r.2.len()));
        let at = RangeMap::new(
            ranges
                .iter()
                .enumerate()
                .filter(|(_, r)| r.0 < r.1)
                .map(|(i, r)| (i, u128::from(r.0), u128::from(r.1))),
        );
        let names = ranges.into_iter().map(|r| r.2).collect();
        Self { names, at }
    }

    /// The (smallest) function whose symbol covers `address`, in O(log n): a crafted
    /// file has as many symbols as table entries.
    fn function_at(&self, address: u64) -> Option<String> {
        self.at.first_at(address).map(|i| self.names[i].clone())
    }
}

/// Demangles a Rust symbol name (without its hash); other names are kept as they are.
pub fn demangle(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(demangled) => format!("{demangled:#}"),
        Err(_) => name.to_owned(),
    }
}

/// A readable name for an ELF `e_machine` value.
fn machine_name(machine: u16) -> String {
    let name = match machine {
        elf::EM_386 => "i386",
        elf::EM_AARCH64 => "aarch64",
        elf::EM_ARM => "arm",
        elf::EM_RISCV => "riscv",
        elf::EM_PPC64 => "powerpc64",
        elf::EM_PPC => "powerpc",
        elf::EM_S390 => "s390",
        elf::EM_MIPS => "mips",
        elf::EM_LOONGARCH => "loongarch",
        elf::EM_SPARCV9 => "sparc64",
        _ => return format!("machine type {machine}"),
    };
    format!("{name} (machine type {machine})")
}

#[cfg(test)]
mod range_map_tests {
    use super::RangeMap;
    use proptest::prelude::*;

    /// What [`RangeMap::first_at`] stands for: the first range, in order, that
    /// contains the address.
    fn first_by_scan(ranges: &[(u128, u128)], address: u64) -> Option<usize> {
        let a = u128::from(address);
        ranges.iter().position(|&(s, e)| s <= a && a < e)
    }

    fn check(ranges: &[(u128, u128)], queries: impl Iterator<Item = u64>) {
        let map = RangeMap::new(ranges.iter().enumerate().map(|(i, &(s, e))| (i, s, e)));
        for q in queries {
            assert_eq!(
                map.first_at(q),
                first_by_scan(ranges, q),
                "address {q} in {ranges:?}"
            );
        }
    }

    #[test]
    fn edges_and_the_top_of_the_address_space() {
        let top = u128::from(u64::MAX);
        check(&[], 0..4);
        check(&[(0, 1)], 0..4);
        check(&[(10, 20), (15, 30), (5, 12)], 0..40);
        check(&[(5, 40), (10, 20), (10, 20)], 0..45);
        check(
            &[(top - 1, top + 1), (0, top)],
            [0, 1, u64::MAX - 1, u64::MAX].into_iter(),
        );
    }

    /// The smallest function symbol covering an address, found by a scan (what
    /// `FunctionSymbols::function_at` stands for).
    fn smallest_by_scan(ranges: &[(u64, u64, String)], address: u64) -> Option<String> {
        let mut sorted = ranges.to_vec();
        sorted.sort();
        sorted.dedup();
        sorted
            .iter()
            .filter(|r| r.0 <= address && address < r.1)
            .min_by_key(|r| (r.1 - r.0, r.2.len()))
            .map(|r| r.2.clone())
    }

    proptest! {
        #[test]
        fn smallest_function_at(
            ranges in prop::collection::vec((0u64..64, 0u64..24, "[a-c]{1,3}"), 0..12),
        ) {
            let ranges: Vec<(u64, u64, String)> =
                ranges.into_iter().map(|(s, l, n)| (s, s + l, n)).collect();
            let symbols = super::FunctionSymbols::from_ranges(ranges.clone());
            for q in 0..96 {
                prop_assert_eq!(symbols.function_at(q), smallest_by_scan(&ranges, q), "at {}", q);
            }
        }

        #[test]
        fn lowest_containing_range(
            ranges in prop::collection::vec((0u128..64, 1u128..24), 0..12),
        ) {
            let ranges: Vec<(u128, u128)> = ranges.into_iter().map(|(s, l)| (s, s + l)).collect();
            check(&ranges, 0..96);
        }
    }
}
