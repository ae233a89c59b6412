//! Whether DWARF unwinding may run inside the signal handler on this system.
//!
//! libgcc's `_Unwind_Backtrace` is not async-signal-safe in general. It is acceptable in the handler only on the
//! baseline the README argues for: glibc >= 2.35 (which provides `_dl_find_object`, async-signal-safe and
//! lock-free) and libgcc >= 12 (which uses it for the FDE lookup instead of `dl_iterate_phdr`, which takes the
//! loader lock: a deadlock if the interrupted thread is inside `dlopen`). [`dwarf_in_handler`] decides from what
//! [`Platform::detect`] finds; on anything else the sampler unwinds with frame pointers and says why. Not
//! detectable here: code that registered unwind info with `__register_frame` (JITs), which makes libgcc take its
//! object mutex (see the README's residual risks).

/// What the C runtime of this process is, as far as the DWARF-in-handler decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Platform {
    /// glibc's `(major, minor)` version from `gnu_get_libc_version`, `None` if not glibc (or unparsable).
    pub(crate) glibc: Option<(u32, u32)>,
    /// `_dl_find_object` resolves (`dlsym(RTLD_DEFAULT, ..)`).
    pub(crate) dl_find_object: bool,
    /// The loaded libgcc_s defines the `GCC_12.0.0` symbol version; `None` when that cannot be checked on this
    /// architecture.
    pub(crate) libgcc_12: Option<bool>,
}

/// The glibc baseline for DWARF unwinding in the handler.
const GLIBC_MIN: (u32, u32) = (2, 35);

/// `Ok` if DWARF unwinding in the signal handler is within the supported baseline, otherwise why not.
pub(crate) fn dwarf_in_handler(p: &Platform) -> Result<(), String> {
    let Some((major, minor)) = p.glibc else {
        return Err("not glibc (or its version is unknown): the DWARF unwinder's lock-free FDE lookup \
                    (_dl_find_object, glibc >= 2.35) cannot be relied on"
            .into());
    };
    if (major, minor) < GLIBC_MIN {
        return Err(format!(
            "glibc {major}.{minor} < 2.35: libgcc would find unwind tables through dl_iterate_phdr, which takes the \
             loader lock (deadlock in the signal handler if the thread was in dlopen)"
        ));
    }
    if !p.dl_find_object {
        return Err(format!("glibc {major}.{minor} but _dl_find_object does not resolve"));
    }
    if p.libgcc_12 == Some(false) {
        return Err("libgcc_s older than 12 (no GCC_12.0.0 symbols): its FDE lookup does not use _dl_find_object \
                    and may take the loader lock in the signal handler"
            .into());
    }
    Ok(())
}

/// Parses `"2.36"` (or `"2.36.1"`) into `(2, 36)`.
pub(crate) fn parse_glibc_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()?;
    Some((major, minor))
}

impl Platform {
    /// Looks at the running process.
    pub(crate) fn detect() -> Platform {
        Platform { glibc: glibc_version(), dl_find_object: resolves(c"_dl_find_object"), libgcc_12: libgcc_12() }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_version() -> Option<(u32, u32)> {
    // SAFETY: gnu_get_libc_version takes no arguments and returns a pointer to a static NUL-terminated string.
    let ptr = unsafe { libc::gnu_get_libc_version() };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null, static and NUL-terminated (see above).
    let text = unsafe { std::ffi::CStr::from_ptr(ptr) };
    parse_glibc_version(&text.to_string_lossy())
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_version() -> Option<(u32, u32)> {
    None
}

fn resolves(name: &std::ffi::CStr) -> bool {
    // SAFETY: `name` is NUL-terminated; dlsym with RTLD_DEFAULT only looks the symbol up.
    !unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }.is_null()
}

#[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
fn libgcc_12() -> Option<bool> {
    // A function libgcc_s 12 added on x86_64 (half-precision float support), under the GCC_12.0.0 version.
    // SAFETY: both strings are NUL-terminated; dlvsym only looks the symbol up.
    let f = unsafe { libc::dlvsym(libc::RTLD_DEFAULT, c"__extendhfsf2".as_ptr(), c"GCC_12.0.0".as_ptr()) };
    Some(!f.is_null())
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64")))]
fn libgcc_12() -> Option<bool> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(glibc: Option<(u32, u32)>, dl_find_object: bool, libgcc_12: Option<bool>) -> Platform {
        Platform { glibc, dl_find_object, libgcc_12 }
    }

    #[test]
    fn the_supported_baseline_is_accepted() {
        assert_eq!(dwarf_in_handler(&platform(Some((2, 35)), true, Some(true))), Ok(()));
        assert_eq!(dwarf_in_handler(&platform(Some((2, 36)), true, Some(true))), Ok(()));
        assert_eq!(dwarf_in_handler(&platform(Some((3, 0)), true, None)), Ok(()));
    }

    #[test]
    fn anything_older_or_unknown_is_refused_with_a_reason() {
        let old = dwarf_in_handler(&platform(Some((2, 31)), false, Some(true))).unwrap_err();
        assert!(old.contains("2.31 < 2.35") && old.contains("loader lock"), "{old}");
        let no_dfo = dwarf_in_handler(&platform(Some((2, 36)), false, Some(true))).unwrap_err();
        assert!(no_dfo.contains("_dl_find_object"), "{no_dfo}");
        let old_gcc = dwarf_in_handler(&platform(Some((2, 36)), true, Some(false))).unwrap_err();
        assert!(old_gcc.contains("libgcc_s older than 12"), "{old_gcc}");
        let musl = dwarf_in_handler(&platform(None, false, None)).unwrap_err();
        assert!(musl.contains("not glibc"), "{musl}");
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_glibc_version("2.36"), Some((2, 36)));
        assert_eq!(parse_glibc_version("2.35.1\n"), Some((2, 35)));
        assert_eq!(parse_glibc_version("2.28-pre"), Some((2, 28)));
        assert_eq!(parse_glibc_version("x"), None);
    }

    #[test]
    fn this_machine_is_on_the_baseline() {
        // Debian bookworm: glibc 2.36, libgcc 12.2 (the README's measurements).
        let p = Platform::detect();
        assert_eq!(dwarf_in_handler(&p), Ok(()), "{p:?}");
    }
}
