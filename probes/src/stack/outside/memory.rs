//! Copying memory of this process without faulting: the target thread's stack ([`StackCopy`], grown on
//! demand) and each loaded object's unwind information ([`loaded_objects`]). Split out of `outside.rs`, which
//! unwinds from those copies.

use super::eh_frame_hdr::decode_pointer;
use super::{MAX_EH_FRAME, MAX_STACK_COPY, PAGE, STACK_CHUNK};

/// A copy of the target thread's stack from its stack pointer up, grown on demand.
#[derive(Default)]
pub(super) struct StackCopy {
    pub(super) base: u64,
    pub(super) bytes: Vec<u8>,
    pub(super) exhausted: bool,
}

impl StackCopy {
    pub(super) fn reset(&mut self, sp: u64) {
        self.base = sp & !7;
        self.bytes.clear();
        self.exhausted = false;
    }

    /// A copy taken elsewhere (a perf sample's), starting exactly at `sp`: read as is, never grown.
    pub(super) fn preset(&mut self, sp: u64, bytes: Vec<u8>) {
        self.base = sp;
        self.bytes = bytes;
        self.exhausted = true;
    }

    pub(super) fn read_u64(&mut self, addr: u64) -> Result<u64, ()> {
        let offset = usize::try_from(addr.checked_sub(self.base).ok_or(())?).map_err(|_| ())?;
        let end = offset.checked_add(8).ok_or(())?;
        while self.bytes.len() < end {
            if !self.grow() {
                return Err(());
            }
        }
        let word = self.bytes.get(offset..end).ok_or(())?;
        Ok(u64::from_le_bytes(word.try_into().map_err(|_| ())?))
    }

    /// Copies the next chunk of the stack. Page by page, so that a copy reaching an unmapped page (the end of
    /// the stack mapping) keeps the pages before it.
    pub(super) fn grow(&mut self) -> bool {
        if self.exhausted || self.bytes.len() >= MAX_STACK_COPY {
            return false;
        }
        let from = self.base + self.bytes.len() as u64;
        let to = ((from + STACK_CHUNK as u64) & !(PAGE - 1)).max(from + 8);
        let old = self.bytes.len();
        self.bytes.resize(old + (to - from) as usize, 0);
        let mut remote = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; STACK_CHUNK / PAGE as usize + 1];
        let mut n = 0;
        let mut at = from;
        while at < to && n < remote.len() {
            let page_end = ((at / PAGE) + 1) * PAGE;
            let len = page_end.min(to) - at;
            remote[n] = libc::iovec { iov_base: at as *mut libc::c_void, iov_len: len as usize };
            n += 1;
            at += len;
        }
        let local = libc::iovec { iov_base: self.bytes[old..].as_mut_ptr().cast(), iov_len: (to - from) as usize };
        // SAFETY: `local` describes the bytes just reserved in `self.bytes`, valid for writes; the remote iovecs
        // are only accessed by the kernel, which reports unmapped memory as a short read or EFAULT instead of
        // faulting. The result is checked below.
        let read = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, remote.as_ptr(), n as u64, 0) };
        let got = usize::try_from(read).unwrap_or(0);
        self.bytes.truncate(old + got);
        if got < (to - from) as usize {
            self.exhausted = true;
        }
        got > 0
    }
}

/// Copies `out.len()` bytes at `addr` of this process without ever faulting (`process_vm_readv` on ourselves).
pub(super) fn read_memory(addr: u64, out: &mut [u8]) -> bool {
    let local = libc::iovec { iov_base: out.as_mut_ptr().cast(), iov_len: out.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: out.len() };
    // SAFETY: `local` describes `out`, valid for writes of its length; `remote` is only accessed by the kernel,
    // which fails with EFAULT instead of faulting.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    usize::try_from(n).is_ok_and(|n| n == out.len())
}

/// A loaded object with a copy of its unwind information.
pub(super) struct LoadedObject {
    pub(super) name: String,
    pub(super) bias: u64,
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) exec: Vec<(u64, u64)>,
    pub(super) hdr_avma: u64,
    pub(super) hdr: Vec<u8>,
    pub(super) eh_frame_avma: u64,
    pub(super) eh_frame: Vec<u8>,
}

/// Every loaded object that has `.eh_frame_hdr`, with copies of its unwind information.
pub(super) fn loaded_objects() -> Vec<LoadedObject> {
    let mut out: Vec<LoadedObject> = Vec::new();
    // SAFETY: the callback only reads the `dl_phdr_info` glibc passes (valid during the call) and copies memory
    // with `process_vm_readv`; `data` is `&mut out`, which outlives the call and is used by nothing else meanwhile.
    unsafe {
        libc::dl_iterate_phdr(Some(collect_object), (&mut out as *mut Vec<LoadedObject>).cast());
    }
    out
}

/// `dl_iterate_phdr` callback: appends the object to the `Vec<LoadedObject>` behind `data`.
unsafe extern "C" fn collect_object(info: *mut libc::dl_phdr_info, _size: usize, data: *mut libc::c_void) -> i32 {
    // SAFETY: glibc passes a valid `dl_phdr_info`, and `data` is the `&mut Vec` of `loaded_objects`.
    let (info, out) = unsafe { (&*info, &mut *data.cast::<Vec<LoadedObject>>()) };
    if info.dlpi_phdr.is_null() {
        return 0;
    }
    // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers of the loaded object.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    let bias = info.dlpi_addr;
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: a non-null `dlpi_name` is a NUL-terminated string owned by the loader.
        unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }.to_string_lossy().into_owned()
    };
    if let Some(object) = object_from_headers(name, bias, phdrs) {
        out.push(object);
    }
    0
}

fn object_from_headers(name: String, bias: u64, phdrs: &[libc::Elf64_Phdr]) -> Option<LoadedObject> {
    const PT_GNU_EH_FRAME: u32 = 0x6474_e550;
    const PF_X: u32 = 1;
    let loads: Vec<&libc::Elf64_Phdr> = phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD).collect();
    let start = bias.wrapping_add(loads.iter().map(|p| p.p_vaddr).min()?);
    let end = bias.wrapping_add(loads.iter().map(|p| p.p_vaddr + p.p_memsz).max()?);
    let exec = loads
        .iter()
        .filter(|p| p.p_flags & PF_X != 0)
        .map(|p| (bias.wrapping_add(p.p_vaddr), bias.wrapping_add(p.p_vaddr + p.p_memsz)))
        .collect();
    let eh = phdrs.iter().find(|p| p.p_type == PT_GNU_EH_FRAME)?;
    let hdr_avma = bias.wrapping_add(eh.p_vaddr);
    let mut hdr = vec![0u8; usize::try_from(eh.p_memsz).ok()?];
    if hdr.len() < 8 || !read_memory(hdr_avma, &mut hdr) {
        return None;
    }
    let (eh_frame_avma, _) = decode_pointer(&hdr, 4, hdr[1], hdr_avma)?;
    // `.eh_frame` has no size of its own in the headers: take the rest of the segment that holds it.
    let segment = loads.iter().find(|p| {
        let s = bias.wrapping_add(p.p_vaddr);
        s <= eh_frame_avma && eh_frame_avma < s + p.p_filesz
    })?;
    let len = (bias.wrapping_add(segment.p_vaddr) + segment.p_filesz - eh_frame_avma).min(MAX_EH_FRAME);
    let mut eh_frame = vec![0u8; usize::try_from(len).ok()?];
    if !read_memory(eh_frame_avma, &mut eh_frame) {
        return None;
    }
    Some(LoadedObject { name, bias, start, end, exec, hdr_avma, hdr, eh_frame_avma, eh_frame })
}
