//! Facts about the running kernel that change what the probes' figures mean.

/// Whether the kernel keeps interrupt time out of threads' CPU time (`CONFIG_IRQ_TIME_ACCOUNTING`), read from
/// the kernel's own configuration: `/proc/config.gz` (where the kernel exposes it) or
/// `/boot/config-$(uname -r)`. `None` when neither can be read.
///
/// Without it, interrupt and softirq work is charged to whichever thread it interrupts: a thread's CPU clock
/// (and so a stalled poll's "on CPU" time) can include time the thread did not run. Measured on a 2-vCPU KVM
/// guest without it: up to 9.6 ms in one gap while a test suite ran beside a spinning thread.
///
/// ```
/// match loopscope_probes::kernel::irq_time_accounting() {
///     Some(true) => println!("interrupt time is kept out of threads' CPU time"),
///     Some(false) => println!("interrupt time counts as the interrupted thread's CPU time"),
///     None => println!("the kernel's configuration is not readable"),
/// }
/// ```
pub fn irq_time_accounting() -> Option<bool> {
    let config = proc_config().or_else(boot_config)?;
    Some(config_has(&config, "CONFIG_IRQ_TIME_ACCOUNTING"))
}

/// Whether `option=y` is set in a kernel configuration's text.
fn config_has(config: &str, option: &str) -> bool {
    config
        .lines()
        .any(|l| l.strip_prefix(option).and_then(|rest| rest.strip_prefix('=')).is_some_and(|v| v.trim() == "y"))
}

/// `/proc/config.gz`, decompressed. Bounded: a kernel configuration is some 200–300 KB.
fn proc_config() -> Option<String> {
    let gz = std::fs::read("/proc/config.gz").ok()?;
    let deflate = gzip_body(&gz)?;
    let bytes = miniz_oxide::inflate::decompress_to_vec_with_limit(deflate, 8 << 20).ok()?;
    String::from_utf8(bytes).ok()
}

fn boot_config() -> Option<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()
}

/// The DEFLATE stream inside a gzip member (RFC 1952): after the 10-byte header and the optional fields its
/// flags announce. `miniz_oxide` reads raw DEFLATE, not the gzip wrapper.
fn gzip_body(gz: &[u8]) -> Option<&[u8]> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if gz.get(..3)? != [0x1f, 0x8b, 8] {
        return None;
    }
    let flags = *gz.get(3)?;
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let len = usize::from(u16::from_le_bytes([*gz.get(at)?, *gz.get(at + 1)?]));
        at += 2 + len;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            at += gz.get(at..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    gz.get(at..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_exactly() {
        let text = "# CONFIG_IRQ_TIME_ACCOUNTING is not set\nCONFIG_HAVE_IRQ_TIME_ACCOUNTING=y\n";
        assert!(!config_has(text, "CONFIG_IRQ_TIME_ACCOUNTING"));
        assert!(config_has("CONFIG_IRQ_TIME_ACCOUNTING=y\n", "CONFIG_IRQ_TIME_ACCOUNTING"));
        assert!(!config_has("CONFIG_IRQ_TIME_ACCOUNTING=m\n", "CONFIG_IRQ_TIME_ACCOUNTING"));
    }

    #[test]
    fn a_gzip_member_is_unwrapped() {
        // "hello" compressed by gzip(1) with a file name in the header.
        let raw = miniz_oxide::deflate::compress_to_vec(b"hello", 6);
        let mut gz = vec![0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3];
        gz.extend_from_slice(b"name\0");
        gz.extend_from_slice(&raw);
        let body = gzip_body(&gz).unwrap();
        assert_eq!(miniz_oxide::inflate::decompress_to_vec(body).unwrap(), b"hello");
        assert!(gzip_body(b"not gzip").is_none());
    }

    #[test]
    fn this_kernel_answers_when_its_config_is_readable() {
        let readable = std::path::Path::new("/proc/config.gz").exists();
        if readable {
            assert!(irq_time_accounting().is_some(), "/proc/config.gz exists but was not read");
        }
    }
}
