//! A small ELF32 file, as `esptool elf2image` reads it.

use super::placement::{EM_XTENSA, Section};
use super::*;

pub(super) const SHF_WRITE: u32 = 1;
pub(super) const SHF_ALLOC: u32 = 2;
pub(super) const SHF_EXECINSTR: u32 = 4;

pub(super) fn write_elf(machine: u16, entry: u32, sections: &[Section]) -> Vec<u8> {
    const EHDR_LEN: usize = 52;
    const PHDR_LEN: usize = 32;
    const SHDR_LEN: usize = 40;
    let flags: u32 = if machine == EM_XTENSA { 0x300 } else { 0x1 };

    let mut shstrtab = vec![0u8];
    let mut name_offsets = Vec::with_capacity(sections.len());
    for section in sections {
        name_offsets.push(shstrtab.len() as u32);
        shstrtab.extend_from_slice(section.name.as_bytes());
        shstrtab.push(0);
    }
    let shstrtab_name = shstrtab.len() as u32;
    shstrtab.extend_from_slice(b".shstrtab\0");

    let phoff = EHDR_LEN;
    let mut out = vec![0u8; phoff + PHDR_LEN * sections.len()];
    let mut offsets = Vec::with_capacity(sections.len());
    for section in sections {
        out.resize(align_up(out.len(), 16), 0);
        offsets.push(out.len() as u32);
        out.extend_from_slice(&section.data);
    }
    let shstrtab_offset = out.len() as u32;
    out.extend_from_slice(&shstrtab);
    out.resize(align_up(out.len(), 4), 0);
    let shoff = out.len();
    let shnum = sections.len() + 2;

    let mut header = Vec::with_capacity(EHDR_LEN);
    header.extend_from_slice(&[0x7F, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    put_u16s(&mut header, &[2, machine]);
    put_u32s(&mut header, &[1, entry, phoff as u32, shoff as u32, flags]);
    put_u16s(&mut header, &[EHDR_LEN as u16, PHDR_LEN as u16, sections.len() as u16]);
    put_u16s(&mut header, &[SHDR_LEN as u16, shnum as u16, (shnum - 1) as u16]);
    out[..EHDR_LEN].copy_from_slice(&header);

    for (n, (section, &offset)) in sections.iter().zip(&offsets).enumerate() {
        let len = section.data.len() as u32;
        let writable = if section.flags & SHF_WRITE != 0 { 2 } else { 0 };
        let executable = if section.flags & SHF_EXECINSTR != 0 { 1 } else { 0 };
        let mut phdr = Vec::with_capacity(PHDR_LEN);
        put_u32s(
            &mut phdr,
            &[
                1,
                offset,
                section.addr,
                section.addr,
                len,
                len,
                4 | writable | executable,
                4,
            ],
        );
        let at = phoff + n * PHDR_LEN;
        out[at..at + PHDR_LEN].copy_from_slice(&phdr);
    }

    out.extend_from_slice(&[0; SHDR_LEN]);
    for ((section, &offset), &name) in sections.iter().zip(&offsets).zip(&name_offsets) {
        let len = section.data.len() as u32;
        put_u32s(
            &mut out,
            &[name, 1, section.flags, section.addr, offset, len, 0, 0, 4, 0],
        );
    }
    put_u32s(
        &mut out,
        &[
            shstrtab_name,
            3,
            0,
            0,
            shstrtab_offset,
            shstrtab.len() as u32,
            0,
            0,
            1,
            0,
        ],
    );
    out
}
