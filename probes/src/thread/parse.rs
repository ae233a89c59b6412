//! Pure parsers for `/proc/<pid>/task/<tid>/{stat,syscall,status}`. They take the file content as a string so
//! they can be unit-tested with hand-written input on any platform.

use std::time::Duration;

/// The fields of `/proc/.../stat` this crate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFields {
    /// The thread name between the parentheses (may itself contain spaces and parentheses).
    pub comm: String,
    /// The state letter (`R`, `S`, `D`, ...).
    pub state: char,
    /// Field 10: minor faults.
    pub minor_faults: u64,
    /// Field 12: major faults.
    pub major_faults: u64,
    /// Field 14: user time in clock ticks.
    pub utime_ticks: u64,
    /// Field 15: system time in clock ticks.
    pub stime_ticks: u64,
    /// Field 39: CPU last run on.
    pub processor: Option<u32>,
}

/// Parses `/proc/.../stat`.
///
/// The second field is the thread name in parentheses, and a thread may name itself `"a) b ("`; the name
/// therefore ends at the *last* `)` of the line, never at the first.
///
/// ```
/// use loopscope_probes::thread::parse_stat;
/// let line = "42 (evil) name (x) S 1 42 42 0 -1 4194304 100 0 3 0 5 6 0 0 20 0 1 0 1 0 0 0";
/// let stat = parse_stat(line).unwrap();
/// assert_eq!(stat.comm, "evil) name (x");
/// assert_eq!(stat.state, 'S');
/// assert_eq!((stat.minor_faults, stat.major_faults), (100, 3));
/// ```
pub fn parse_stat(text: &str) -> Result<StatFields, String> {
    let open = text.find('(').ok_or("no '(' before the thread name")?;
    let close = text.rfind(')').ok_or("no ')' after the thread name")?;
    if close < open {
        return Err("')' before '('".into());
    }
    let comm = text[open + 1..close].to_owned();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // `rest[0]` is field 3 (state), so field n is `rest[n - 3]`.
    let field =
        |n: usize| -> Result<&str, String> { rest.get(n - 3).copied().ok_or_else(|| format!("missing field {n}")) };
    let number = |n: usize| -> Result<u64, String> {
        let raw = field(n)?;
        raw.parse::<u64>().map_err(|e| format!("field {n} ({raw:?}): {e}"))
    };
    let state = field(3)?.chars().next().ok_or("empty state field")?;
    Ok(StatFields {
        comm,
        state,
        minor_faults: number(10)?,
        major_faults: number(12)?,
        utime_ticks: number(14)?,
        stime_ticks: number(15)?,
        processor: field(39).ok().and_then(|p| p.parse().ok()),
    })
}

/// One line of `/proc/.../syscall`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyscallLine {
    /// `running`: the thread is on a CPU, so the kernel cannot tell.
    Running,
    /// The thread is blocked. `number` is `-1` when it is blocked outside a system call (then `args` are 0).
    Blocked {
        /// System call number, or -1.
        number: i64,
        /// The six argument registers.
        args: [u64; 6],
        /// User stack pointer.
        stack_pointer: u64,
        /// User instruction pointer.
        instruction_pointer: u64,
    },
}

fn parse_hex(s: &str) -> Result<u64, String> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(digits, 16).map_err(|e| format!("{s:?}: {e}"))
}

/// Parses `/proc/.../syscall`: `running`, `-1 <sp> <pc>`, or `<nr> <a0> .. <a5> <sp> <pc>` (numbers after `nr`
/// in hex).
///
/// ```
/// use loopscope_probes::thread::{parse_syscall, SyscallLine};
/// assert_eq!(parse_syscall("running\n").unwrap(), SyscallLine::Running);
/// let line = "0 0x3 0x7ffd1000 0x1 0x0 0x0 0x0 0x7ffd0ff8 0x7f00aa";
/// match parse_syscall(line).unwrap() {
///     SyscallLine::Blocked { number, args, .. } => { assert_eq!(number, 0); assert_eq!(args[0], 3); }
///     other => panic!("{other:?}"),
/// }
/// ```
pub fn parse_syscall(text: &str) -> Result<SyscallLine, String> {
    let text = text.trim();
    if text == "running" {
        return Ok(SyscallLine::Running);
    }
    let parts: Vec<&str> = text.split_whitespace().collect();
    let number: i64 = parts.first().ok_or("empty syscall line")?.parse().map_err(|e| format!("syscall number: {e}"))?;
    let mut args = [0u64; 6];
    let (sp, pc) = if number < 0 {
        // "-1 sp pc": blocked, but not in a system call.
        if parts.len() != 3 {
            return Err(format!("expected 3 fields after -1, got {}", parts.len()));
        }
        (parts[1], parts[2])
    } else {
        if parts.len() != 9 {
            return Err(format!("expected 9 fields, got {}", parts.len()));
        }
        for (slot, raw) in args.iter_mut().zip(&parts[1..7]) {
            *slot = parse_hex(raw)?;
        }
        (parts[7], parts[8])
    };
    Ok(SyscallLine::Blocked { number, args, stack_pointer: parse_hex(sp)?, instruction_pointer: parse_hex(pc)? })
}

/// The fields of `/proc/.../status` this crate uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusFields {
    /// `voluntary_ctxt_switches`.
    pub voluntary_ctxt_switches: Option<u64>,
    /// `nonvoluntary_ctxt_switches`.
    pub nonvoluntary_ctxt_switches: Option<u64>,
}

/// Parses the `Key:\tvalue` lines of `/proc/.../status`; unknown keys are ignored.
///
/// ```
/// let s = loopscope_probes::thread::parse_status("Name:\tx\nvoluntary_ctxt_switches:\t7\nnonvoluntary_ctxt_switches:\t2\n");
/// assert_eq!(s.voluntary_ctxt_switches, Some(7));
/// assert_eq!(s.nonvoluntary_ctxt_switches, Some(2));
/// ```
pub fn parse_status(text: &str) -> StatusFields {
    let mut out = StatusFields::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().parse::<u64>().ok();
        match key {
            "voluntary_ctxt_switches" => out.voluntary_ctxt_switches = value,
            "nonvoluntary_ctxt_switches" => out.nonvoluntary_ctxt_switches = value,
            _ => {}
        }
    }
    out
}

/// Parses `/proc/.../schedstat`: `<ns on cpu> <ns waiting on a run queue> <timeslices>`.
///
/// ```
/// use std::time::Duration;
/// let (on_cpu, waiting) = loopscope_probes::thread::parse_schedstat("2500 700 3\n").unwrap();
/// assert_eq!((on_cpu, waiting), (Duration::from_nanos(2500), Duration::from_nanos(700)));
/// ```
pub fn parse_schedstat(text: &str) -> Option<(Duration, Duration)> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    let on_cpu = fields.next()??;
    let waiting = fields.next()??;
    Some((Duration::from_nanos(on_cpu), Duration::from_nanos(waiting)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const REAL_STAT: &str = "12345 (tokio-runtime-w) S 12000 12000 11000 34816 12000 4194368 1523 0 2 0 \
        150 37 0 0 20 0 9 0 123456 1234567890 2048 18446744073709551615 1 1 0 0 0 0 0 4096 17664 0 0 0 -1 1 0 0 0 0 0";

    #[test]
    fn stat_real_line() {
        let s = parse_stat(REAL_STAT).unwrap();
        assert_eq!(s.comm, "tokio-runtime-w");
        assert_eq!(s.state, 'S');
        assert_eq!(s.minor_faults, 1523);
        assert_eq!(s.major_faults, 2);
        assert_eq!(s.utime_ticks, 150);
        assert_eq!(s.stime_ticks, 37);
        assert_eq!(s.processor, Some(1));
    }

    #[test]
    fn stat_comm_with_spaces_and_parentheses() {
        let line = REAL_STAT.replace("(tokio-runtime-w)", "(a) R (b) 1 2)");
        let s = parse_stat(&line).unwrap();
        assert_eq!(s.comm, "a) R (b) 1 2");
        assert_eq!(s.state, 'S', "a fake state inside comm must not be picked up");
        assert_eq!(s.minor_faults, 1523);
    }

    #[test]
    fn stat_empty_comm_and_garbage() {
        let line = REAL_STAT.replace("(tokio-runtime-w)", "()");
        assert_eq!(parse_stat(&line).unwrap().comm, "");
        assert!(parse_stat("").is_err());
        assert!(parse_stat("1 (x) S 1 2").is_err(), "truncated line");
        assert!(parse_stat("1 ) x ( S").is_err());
        let bad = REAL_STAT.replace(" 1523 ", " many ");
        assert!(parse_stat(&bad).unwrap_err().contains("field 10"));
    }

    #[test]
    fn syscall_running() {
        assert_eq!(parse_syscall("running\n").unwrap(), SyscallLine::Running);
    }

    #[test]
    fn syscall_not_in_syscall() {
        assert_eq!(
            parse_syscall("-1 0x7ffc8e5a7b28 0x55d4c0a1b2c3\n").unwrap(),
            SyscallLine::Blocked {
                number: -1,
                args: [0; 6],
                stack_pointer: 0x7ffc8e5a7b28,
                instruction_pointer: 0x55d4c0a1b2c3
            }
        );
        assert!(parse_syscall("-1 0x1").is_err());
    }

    #[test]
    fn syscall_normal() {
        let line = "230 0x1 0x0 0x7f1c2b7fe9a0 0x7f1c2b7fe9a0 0x0 0x0 0x7f1c2b7fe968 0x7f1c2c0e1e35\n";
        assert_eq!(
            parse_syscall(line).unwrap(),
            SyscallLine::Blocked {
                number: 230,
                args: [1, 0, 0x7f1c2b7fe9a0, 0x7f1c2b7fe9a0, 0, 0],
                stack_pointer: 0x7f1c2b7fe968,
                instruction_pointer: 0x7f1c2c0e1e35
            }
        );
    }

    #[test]
    fn syscall_garbage() {
        assert!(parse_syscall("").is_err());
        assert!(parse_syscall("abc").is_err());
        assert!(parse_syscall("0 0x1 0x2").is_err());
        assert!(parse_syscall("0 0xZ 0x0 0x0 0x0 0x0 0x0 0x0 0x0").is_err());
    }

    #[test]
    fn schedstat() {
        assert_eq!(
            parse_schedstat("210858310 26342967 521\n"),
            Some((Duration::from_nanos(210858310), Duration::from_nanos(26342967)))
        );
        assert_eq!(parse_schedstat("12"), None);
        assert_eq!(parse_schedstat("x y z"), None);
    }

    #[test]
    fn status_fields() {
        let text = "Name:\tw\nState:\tS (sleeping)\nvoluntary_ctxt_switches:\t150\nnonvoluntary_ctxt_switches:\t3\n";
        let s = parse_status(text);
        assert_eq!(s.voluntary_ctxt_switches, Some(150));
        assert_eq!(s.nonvoluntary_ctxt_switches, Some(3));
        assert_eq!(parse_status(""), StatusFields::default());
    }
}
