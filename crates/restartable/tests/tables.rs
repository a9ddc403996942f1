//! The debugger tables of this very test binary (built in the profile under test,
//! release in CI): every `rseq_cs` descriptor is well formed, listed in
//! `__rseq_cs_ptr_array`, has the signature right before its abort handler, and every
//! exit point belongs to a sequence and lies outside it.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::collections::{BTreeMap, BTreeSet};

use object::read::elf::ElfFile64;
use object::{Object, ObjectSection, RelocationFlags, RelocationTarget};

use restartable::arch::{self, ByCpu, ByMmCid, NoHooks, OpResult, Relaxed, TestHooks};
use restartable::ThreadArea;

/// Use every op in both builds so that each has descriptors in this binary.
#[inline(never)]
fn use_every_op() {
    let Ok(a) = ThreadArea::current() else { return };
    let cpu = a.cpu_id();
    let mut v: isize = 0;
    let mut w: isize = 0;
    let p = &mut v as *mut isize;
    let q = &mut w as *mut isize;
    // An empty slab of capacity 0 (its header's two words) and one item's room.
    let mut slab = [0isize; 3];
    let s = slab.as_mut_ptr();
    // For load_add_load_load_add_store: ptr -> [entry] -> target.
    let mut target: isize = 0;
    let mut entry: isize = &mut target as *mut isize as isize;
    let mut list: isize = &mut entry as *mut isize as isize;
    // SAFETY: private data; every pointer an op follows is valid; results are
    // ignored (an abort is fine here).
    unsafe {
        let _ = arch::load_cbne_store::<ByCpu, NoHooks>(a, cpu, p, 1, 2);
        let _ = arch::load_cbne_store::<ByMmCid, TestHooks>(a, a.mm_cid(), p, 1, 2);
        // v == 0: the pops find an empty list.
        let _ = arch::load_cbeq_store_add_load_store::<ByCpu, NoHooks>(a, cpu, p, 0, 0, q);
        let _ = arch::load_cbne_load_cbeq_store_add_load_store::<ByCpu, NoHooks>(
            a, cpu, q, 0, p, 0, 0, q,
        );
        let _ = arch::load_add_load_load_add_store::<ByCpu, NoHooks>(a, cpu, &mut list, 0, 1);
        let _ = arch::load_add_store::<ByCpu, NoHooks>(a, cpu, p, 1);
        let _ = arch::load_cbne_store_store::<ByCpu, Relaxed, NoHooks>(a, cpu, p, 5, q, 0, 0);
        let _ = arch::load_cbne_load_cbne_store::<ByCpu, NoHooks>(a, cpu, p, 5, q, 1, 0);
        let r = arch::load_cbne_memcpy_store::<ByCpu, Relaxed, NoHooks>(
            a,
            cpu,
            p,
            5,
            q.cast(),
            p.cast(),
            0,
            0,
        );
        assert_ne!(r, OpResult::Committed);
        // The in-sequence index slab ops: a slot of 32 bytes for every index (each
        // an empty slab of capacity 0: every op fails its compare).
        let mut region = vec![0isize; restartable::possible_cpus().max(256) * 4];
        let r = region.as_mut_ptr().cast::<u8>();
        let _ = arch::load_index_slab_pop::<ByCpu, NoHooks, 5, false>(a, r, 0);
        let _ = arch::load_index_slab_push::<ByMmCid, TestHooks, 5, true>(a, r, 0, 1);
        let _ = arch::load_index_slab_pop::<ByMmCid, TestHooks, 5, true>(a, r, 0);
        let _ = arch::load_index_slab_push::<ByCpu, NoHooks, 5, false>(a, r, 0, 1);
        // The slab ops (an empty slab of capacity 0: every op fails its compare).
        let _ = arch::load_cbne_slab_pop::<ByCpu, NoHooks>(a, cpu, s);
        let _ = arch::load_cbne_slab_push::<ByMmCid, TestHooks>(a, a.mm_cid(), s, 1);
        let _ = arch::load_cbne_slab_memcpy_store::<ByCpu, Relaxed, NoHooks>(
            a,
            cpu,
            s,
            5,
            s.add(2).cast(),
            p.cast(),
            0,
            0,
        );
    }
}

struct Image<'a> {
    elf: ElfFile64<'a>,
    relocs: BTreeMap<u64, u64>,
}

impl<'a> Image<'a> {
    fn new(data: &'a [u8]) -> Image<'a> {
        let elf = ElfFile64::parse(data).expect("test binary is a 64-bit ELF");
        let mut relocs = BTreeMap::new();
        if let Some(iter) = elf.dynamic_relocations() {
            for (offset, r) in iter {
                if let RelocationFlags::Elf { r_type } = r.flags() {
                    if r_type == object::elf::R_X86_64_RELATIVE
                        && matches!(r.target(), RelocationTarget::Absolute)
                    {
                        relocs.insert(offset, r.addend() as u64);
                    }
                }
            }
        }
        Image { elf, relocs }
    }

    fn section(&self, name: &str) -> Option<(u64, &'a [u8])> {
        let s = self.elf.section_by_name(name)?;
        Some((s.address(), s.data().ok()?))
    }

    /// The 64-bit value at `addr` in `data` (loaded at `base`), relocated.
    fn u64_at(&self, base: u64, data: &[u8], addr: u64) -> u64 {
        let off = (addr - base) as usize;
        let raw = u64::from_le_bytes(data[off..off + 8].try_into().unwrap());
        self.relocs.get(&addr).copied().unwrap_or(raw)
    }

    /// `n` bytes of loaded code at `addr`.
    fn bytes_at(&self, addr: u64, n: usize) -> Option<&'a [u8]> {
        for s in self.elf.sections() {
            let (start, size) = (s.address(), s.size());
            if addr >= start && addr + n as u64 <= start + size {
                let d = s.data().ok()?;
                let off = (addr - start) as usize;
                return d.get(off..off + n);
            }
        }
        None
    }
}

#[test]
fn every_descriptor_is_well_formed_and_listed() {
    use_every_op();
    let path = std::env::current_exe().unwrap();
    let data = std::fs::read(&path).unwrap();
    let img = Image::new(&data);

    let (cs_base, cs) = img.section("__rseq_cs").expect("__rseq_cs section present");
    let (pa_base, pa) = img
        .section("__rseq_cs_ptr_array")
        .expect("__rseq_cs_ptr_array survives --gc-sections");
    let (ep_base, ep) = img
        .section("__rseq_exit_point_array")
        .expect("__rseq_exit_point_array survives --gc-sections");
    assert_eq!(cs_base % 32, 0, "__rseq_cs is 32-byte aligned");
    assert_eq!(cs.len() % 32, 0);
    assert_eq!(pa.len() % 8, 0);
    assert_eq!(ep.len() % 16, 0);

    let listed: BTreeSet<u64> = (0..pa.len() as u64 / 8)
        .map(|i| img.u64_at(pa_base, pa, pa_base + 8 * i))
        .collect();

    let mut ranges = BTreeMap::new();
    for i in 0..cs.len() as u64 / 32 {
        let d = cs_base + 32 * i;
        let version = u32::from_le_bytes(cs[32 * i as usize..][..4].try_into().unwrap());
        let flags = u32::from_le_bytes(cs[32 * i as usize + 4..][..4].try_into().unwrap());
        let start = img.u64_at(cs_base, cs, d + 8);
        let len = img.u64_at(cs_base, cs, d + 16);
        let abort = img.u64_at(cs_base, cs, d + 24);
        assert_eq!((version, flags), (0, 0), "descriptor {d:#x}");
        assert!(len > 0, "descriptor {d:#x}: start < post-commit");
        assert!(
            abort < start || abort >= start + len,
            "descriptor {d:#x}: abort {abort:#x} inside its own range"
        );
        let sig = img
            .bytes_at(abort - 4, 4)
            .expect("abort handler is in the image");
        assert_eq!(
            u32::from_le_bytes(sig.try_into().unwrap()),
            restartable::abi::SIGNATURE,
            "descriptor {d:#x}: signature before abort {abort:#x}"
        );
        assert!(
            listed.contains(&d),
            "descriptor {d:#x} missing from the pointer array"
        );
        ranges.insert(start, start + len);
    }
    assert!(
        ranges.len() >= 10,
        "every op has descriptors: {}",
        ranges.len()
    );
    assert_eq!(listed.len(), ranges.len(), "one pointer per descriptor");

    let mut with_exits = BTreeSet::new();
    for i in 0..ep.len() as u64 / 16 {
        let start = img.u64_at(ep_base, ep, ep_base + 16 * i);
        let exit = img.u64_at(ep_base, ep, ep_base + 16 * i + 8);
        let end = *ranges
            .get(&start)
            .unwrap_or_else(|| panic!("exit point {start:#x} -> {exit:#x} matches no sequence"));
        assert!(
            exit < start || exit >= end,
            "exit point {exit:#x} inside its sequence"
        );
        with_exits.insert(start);
    }
    // Every op with a compare has a compare-failure exit, and hooked builds a
    // compare-twice exit: most sequences have exit points.
    assert!(
        with_exits.len() * 2 > ranges.len(),
        "{} of {}",
        with_exits.len(),
        ranges.len()
    );
}
