//! Durations as people write them (`10ms`, `250us`, `1.5s`), for settings, environment variables and the
//! macros' compile-time checks.

use std::time::Duration;

/// Parses `10ms`, `250us`, `250µs`, `1.5s`, `100ns`, `2m`. A bare number is rejected: the unit is too easy
/// to get wrong by a factor of 1000.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(loopscope_types::parse_duration("10ms"), Ok(Duration::from_millis(10)));
/// assert_eq!(loopscope_types::parse_duration("1.5ms"), Ok(Duration::from_micros(1500)));
/// assert!(loopscope_types::parse_duration("10").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let unit = unit.trim();
    if num.is_empty() {
        return Err("expected a number followed by a unit, e.g. 10ms, 250us, 1.5s".into());
    }
    let scale: f64 = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "" => return Err(format!("missing unit: write {num}ms, {num}us or {num}s")),
        other => return Err(format!("unknown unit {other:?}: use ns, us, ms, s or m")),
    };
    let n: f64 = num.parse().map_err(|_| format!("{num:?} is not a number"))?;
    let secs = n * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err("too large".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("100µs"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration(" 2s "), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2 ms"), Ok(Duration::from_millis(2)));
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(parse_duration("10 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("1e999s").is_err());
        assert!(parse_duration("1.2.3ms").is_err());
    }
}
