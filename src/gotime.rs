//! Time formats the Go daemon puts on the wire and in logs: RFC 3339 with
//! nanoseconds, `Duration.String()`, and the local-time log stamp.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2006-01-02T15:04:05.999999999Z` in UTC, trailing fractional zeros trimmed.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let (s, n) = (d.as_secs() as i64, d.subsec_nanos());
            if n == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000_000 - n)
            }
        }
    };
    let (date, tod) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, d) = civil_from_days(date);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    );
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Parses RFC 3339 (any offset, optional fraction) into nanoseconds since
/// the Unix epoch. Used to order advertisements, so only exactness matters.
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut nanos: i128 = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = s.get(start..i)?;
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        nanos = format!("{digits:0<9}").parse().ok()?;
    }
    let offset_secs = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6
            && matches!(tz.as_bytes()[0], b'+' | b'-')
            && tz.as_bytes()[3] == b':' =>
        {
            let mag = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if tz.as_bytes()[0] == b'-' { -mag } else { mag }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86400 + h * 3600 + mi * 60 + sec - offset_secs;
    Some(secs as i128 * 1_000_000_000 + nanos)
}

/// Go's `time.Duration.String()`: `0s`, `12ns`, `1.5µs`, `2.3ms`, `1m2.5s`.
pub fn duration_string(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", decimal(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", decimal(ns, 1_000_000));
    }
    let secs = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let sec_text = decimal(s * 1_000_000_000 + frac, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sec_text}s"),
        (0, m) => format!("{m}m{sec_text}s"),
        (h, m) => format!("{h}h{m}m{sec_text}s"),
    }
}

/// `value / unit` printed with the fraction's trailing zeros trimmed.
fn decimal(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Nanoseconds since the Unix epoch back to a `SystemTime`.
pub fn unix_nanos_to_system_time(nanos: i128) -> SystemTime {
    let secs = nanos.div_euclid(1_000_000_000);
    let sub = nanos.rem_euclid(1_000_000_000) as u32;
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, sub)
    } else {
        UNIX_EPOCH - Duration::new(secs.unsigned_abs() as u64, 0) + Duration::new(0, sub)
    }
}

/// Go's `Mon Jan 2 15:04:05` layout, in local time.
pub fn go_stamp(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let local = secs + local_offset_secs(secs);
    let days = local.div_euclid(86400);
    let (_, m, d) = civil_from_days(days);
    let tod = local.rem_euclid(86400);
    format!(
        "{} {} {d} {:02}:{:02}:{:02}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    )
}

/// The log line stamp `YYYY/MM/DD HH:MM:SS` in local time.
pub fn log_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let offset = local_offset_secs(secs);
    let local = secs + offset;
    let (y, m, d) = civil_from_days(local.div_euclid(86400));
    let tod = local.rem_euclid(86400);
    format!(
        "{y:04}/{m:02}/{d:02} {:02}:{:02}:{:02}",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    )
}

/// The local time zone's offset from UTC at `secs`, from the C library.
fn local_offset_secs(secs: i64) -> i64 {
    let t = secs as libc::time_t;
    // SAFETY: localtime_r only writes into the tm we own.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_go() {
        let cases = [
            (0, "0s"),
            (999, "999ns"),
            (315_561, "315.561µs"),
            (1_234_567, "1.234567ms"),
            (12_500, "12.5µs"),
            (10_000_527_289, "10.000527289s"),
            (123_500_000_000, "2m3.5s"),
            (3_600_000_000_000, "1h0m0s"),
            (1_000_000, "1ms"),
        ];
        for (ns, want) in cases {
            assert_eq!(duration_string(Duration::from_nanos(ns)), want);
        }
    }

    #[test]
    fn go_stamp_layout() {
        // 2026-11-23 was a Monday; TZ is whatever the machine has, so
        // only check the shape and the weekday/month names.
        let t = UNIX_EPOCH + Duration::from_secs(1_795_397_544);
        let s = go_stamp(t);
        assert!(
            s.starts_with("Mon Nov 23 ")
                || s.starts_with("Sun Nov 22 ")
                || s.starts_with("Tue Nov 24 "),
            "{s}"
        );
        assert_eq!(
            unix_nanos_to_system_time(1_000_000_001),
            UNIX_EPOCH + Duration::new(1, 1)
        );
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_795_397_544, 448_745_035);
        let s = rfc3339_nano(t);
        assert_eq!(s, "2026-11-23T01:32:24.448745035Z");
        assert_eq!(parse_rfc3339(&s), Some(1_795_397_544_448_745_035));
        assert_eq!(
            rfc3339_nano(UNIX_EPOCH + Duration::new(0, 320_000_000)),
            "1970-01-01T00:00:00.32Z"
        );
        assert_eq!(
            parse_rfc3339("2026-11-23T02:32:24.448745035+01:00"),
            Some(1_795_397_544_448_745_035)
        );
        assert_eq!(
            parse_rfc3339("0001-01-01T00:00:00Z").map(|n| n < 0),
            Some(true)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
        // Multi-byte characters where digits belong must not panic.
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00+0é:0"), None);
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00é00:00"), None);
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00.5é"), None);
        assert_eq!(parse_rfc3339("2026-11-23T01:32:24.Z"), None);
    }
}
