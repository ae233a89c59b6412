//! Lookups in an object's `.eh_frame_hdr` search table: where the function containing an address starts and
//! ends, and the pointer encodings the table uses. Split out of `outside.rs`; the frame-pointer search and
//! the copies of unwind information use it.

use super::Object;

/// The start of the function containing `addr`, from the object's `.eh_frame_hdr` search table.
pub(super) fn function_start(o: &Object, addr: u64) -> Option<u64> {
    let (table, count) = search_table(o)?;
    table_entry(o, table, entry_after(o, table, count, addr)?.checked_sub(1)?)
}

/// The start of the function after the one containing `addr`, from the same table (`None` after the last one).
pub(super) fn function_end(o: &Object, addr: u64) -> Option<u64> {
    let (table, count) = search_table(o)?;
    let i = entry_after(o, table, count, addr)?;
    if i < count { table_entry(o, table, i) } else { None }
}

/// The `.eh_frame_hdr` search table (pairs of initial location and FDE address) and its length.
fn search_table(o: &Object) -> Option<(&[u8], usize)> {
    let hdr = &o.hdr;
    let (&version, &ptr_enc, &count_enc, &table_enc) = (hdr.first()?, hdr.get(1)?, hdr.get(2)?, hdr.get(3)?);
    if version != 1 || count_enc != 0x03 || table_enc != 0x3b {
        return None; // not the layout every GNU and LLVM linker writes
    }
    let (_, ptr_len) = decode_pointer(hdr, 4, ptr_enc, o.hdr_avma)?;
    let count_at = 4 + ptr_len;
    let count = u32::from_le_bytes(hdr.get(count_at..count_at + 4)?.try_into().ok()?) as usize;
    let table = hdr.get(count_at + 4..count_at + 4 + count.checked_mul(8)?)?;
    Some((table, count))
}

/// The initial location of entry `i`.
fn table_entry(o: &Object, table: &[u8], i: usize) -> Option<u64> {
    let rel = i32::from_le_bytes(table.get(i * 8..i * 8 + 4)?.try_into().ok()?);
    Some(o.hdr_avma.wrapping_add_signed(i64::from(rel)))
}

/// The index of the first entry after `addr` (entries are sorted by initial location).
fn entry_after(o: &Object, table: &[u8], count: usize, addr: u64) -> Option<usize> {
    let (mut lo, mut hi) = (0usize, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if table_entry(o, table, mid)? <= addr { lo = mid + 1 } else { hi = mid }
    }
    Some(lo)
}

/// Decodes a `DW_EH_PE_*`-encoded pointer at `pos` of `bytes`, which are loaded at `avma`. Returns the value and
/// its size. Supports the absolute, pc-relative and data-relative fixed-size forms (what linkers write).
pub(super) fn decode_pointer(bytes: &[u8], pos: usize, enc: u8, avma: u64) -> Option<(u64, usize)> {
    if enc == 0xff {
        return None;
    }
    let field = |n: usize| bytes.get(pos..pos + n);
    let (raw, len): (i64, usize) = match enc & 0x0f {
        0x00 | 0x04 => (u64::from_le_bytes(field(8)?.try_into().ok()?) as i64, 8),
        0x02 => (i64::from(u16::from_le_bytes(field(2)?.try_into().ok()?)), 2),
        0x03 => (i64::from(u32::from_le_bytes(field(4)?.try_into().ok()?)), 4),
        0x0a => (i64::from(i16::from_le_bytes(field(2)?.try_into().ok()?)), 2),
        0x0b => (i64::from(i32::from_le_bytes(field(4)?.try_into().ok()?)), 4),
        0x0c => (i64::from_le_bytes(field(8)?.try_into().ok()?), 8),
        _ => return None,
    };
    let value = match enc & 0x70 {
        0x00 => raw as u64,
        0x10 => avma.wrapping_add(pos as u64).wrapping_add_signed(raw),
        0x30 => avma.wrapping_add_signed(raw),
        _ => return None,
    };
    Some((value, len))
}
