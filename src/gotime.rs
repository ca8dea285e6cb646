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

/// Parses a time as Go's `time.Parse(time.RFC3339, s)` does (which is also
/// what its JSON decoding of a `time.Time` does) into nanoseconds since the
/// Unix epoch. Go's layout engine is looser than RFC 3339 in three ways we
/// copy: a one-digit hour, `,` before the fraction, and zone offsets up to
/// `+24:60`; it rejects `t`, `z`, a space for `T`, and a 60th second.
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let mut p = Fields(s.as_bytes());
    let year = p.fixed(4)?;
    p.literal(b'-')?;
    let month = p.fixed(2).filter(|m| (1..=12).contains(m))?;
    p.literal(b'-')?;
    let day = p.fixed(2)?;
    p.literal(b'T')?;
    let hour = p.hour().filter(|h| *h < 24)?;
    p.literal(b':')?;
    let min = p.fixed(2).filter(|m| *m < 60)?;
    p.literal(b':')?;
    let sec = p.fixed(2).filter(|s| *s < 60)?;
    let nanos = p.fraction();
    let offset_secs = p.zone()?;
    if !p.0.is_empty() || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86400 + hour * 3600 + min * 60 + sec - offset_secs;
    Some(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
}

/// The unparsed rest of a time being read field by field.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn literal(&mut self, c: u8) -> Option<()> {
        (self.take(1)? == [c]).then_some(())
    }

    /// Exactly `n` ASCII digits.
    fn fixed(&mut self, n: usize) -> Option<i64> {
        let digits = self.0.get(..n)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = &self.0[n..];
        Some(digits.iter().fold(0, |v, d| v * 10 + i64::from(d - b'0')))
    }

    /// Go reads the hour as one digit or two.
    fn hour(&mut self) -> Option<i64> {
        self.fixed(2).or_else(|| self.fixed(1))
    }

    /// An optional `.` or `,` and one or more digits, of which Go keeps
    /// the first nine.
    fn fraction(&mut self) -> u32 {
        let digits = match self.0 {
            [b'.' | b',', rest @ ..] => rest,
            _ => return 0,
        };
        let n = digits.iter().take_while(|d| d.is_ascii_digit()).count();
        if n == 0 {
            return 0;
        }
        self.0 = &digits[n..];
        (0..9).fold(0, |v, i| {
            v * 10 + digits[..n].get(i).map_or(0, |d| u32::from(d - b'0'))
        })
    }

    /// `Z` or `±hh:mm` as seconds east of UTC; Go allows up to 24 hours
    /// and 60 minutes ("some people do write offsets of 24 hours").
    fn zone(&mut self) -> Option<i64> {
        if self.0.first() == Some(&b'Z') {
            self.0 = &self.0[1..];
            return Some(0);
        }
        let sign = match self.take(1)? {
            b"+" => 1,
            b"-" => -1,
            _ => return None,
        };
        let hours = self.fixed(2).filter(|h| *h <= 24)?;
        self.literal(b':')?;
        let minutes = self.fixed(2).filter(|m| *m <= 60)?;
        Some(sign * (hours * 3600 + minutes * 60))
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
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
    // The C library's own integer type, whatever its width (musl's
    // `time_t` alias is deprecated while it moves to 64 bits).
    let t = secs as _;
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

    /// `time.Parse(time.RFC3339, input)` as Go ran it: nanoseconds since
    /// the epoch, or `None` for an error. Captured with Go 1.19; the two
    /// offsets beyond `+24:60` it still took are rejected since Go 1.20
    /// (its `time zone offset hour/minute out of range` checks), which is
    /// what the Go daemon is built with.
    const GO_RFC3339: &[(&str, Option<i128>)] = &[
        ("2024-99-99T99:99:99Z", None),
        ("2024-13-01T00:00:00Z", None),
        ("2024-00-01T00:00:00Z", None),
        ("2024-02-30T00:00:00Z", None),
        ("2024-02-29T00:00:00Z", Some(1_709_164_800_000_000_000)),
        ("2023-02-29T00:00:00Z", None),
        ("1900-02-29T00:00:00Z", None),
        ("2000-02-29T00:00:00Z", Some(951_782_400_000_000_000)),
        ("2024-04-31T00:00:00Z", None),
        ("2024-04-30T00:00:00Z", Some(1_714_435_200_000_000_000)),
        ("2024-01-00T00:00:00Z", None),
        ("2024-01-31T00:00:00Z", Some(1_706_659_200_000_000_000)),
        ("2024-12-32T00:00:00Z", None),
        ("2024-01-01T24:00:00Z", None),
        ("2024-01-01T23:59:59Z", Some(1_704_153_599_000_000_000)),
        ("2024-01-01T1:00:00Z", Some(1_704_070_800_000_000_000)),
        ("2024-01-01T1:00:00.5Z", Some(1_704_070_800_500_000_000)),
        ("2024-01-01T00:60:00Z", None),
        ("2024-01-01T00:00:60Z", None),
        ("2024-01-01T00:0:00Z", None),
        ("2024-01-01T00:00:0Z", None),
        ("2024-01-01T00:00:00+23:59", Some(1_703_980_860_000_000_000)),
        ("2024-01-01T00:00:00+24:00", Some(1_703_980_800_000_000_000)),
        ("2024-01-01T00:00:00+23:60", Some(1_703_980_800_000_000_000)),
        ("2024-01-01T00:00:00+25:00", None),
        ("2024-01-01T00:00:00-24:00", Some(1_704_153_600_000_000_000)),
        ("2024-01-01T00:00:00+00:61", None),
        ("2024-01-01T00:00:00+0100", None),
        ("2024-01-01T00:00:00+01", None),
        ("2024-01-01T00:00:00+01:00:00", None),
        ("2024-01-01T00:00:00-01:30", Some(1_704_072_600_000_000_000)),
        ("2024-01-01T00:00:00+1:00", None),
        ("2024-01-01t00:00:00Z", None),
        ("2024-01-01 00:00:00Z", None),
        ("2024-01-01T00:00:00z", None),
        ("2024-01-01T00:00:00.5Z", Some(1_704_067_200_500_000_000)),
        ("2024-01-01T00:00:00,5Z", Some(1_704_067_200_500_000_000)),
        (
            "2024-01-01T00:00:00.1234567891Z",
            Some(1_704_067_200_123_456_789),
        ),
        (
            "2024-01-01T00:00:00.123456789123Z",
            Some(1_704_067_200_123_456_789),
        ),
        ("2024-01-01T00:00:00.Z", None),
        (
            "2026-11-23T01:32:24.448745035Z",
            Some(1_795_397_544_448_745_035),
        ),
        (
            "2026-11-23T02:32:24.448745035+01:00",
            Some(1_795_397_544_448_745_035),
        ),
        (
            "2024-01-01T00:00:00.5+01:00",
            Some(1_704_063_600_500_000_000),
        ),
        ("0000-01-01T00:00:00Z", Some(-62_167_219_200_000_000_000)),
        ("0001-01-01T00:00:00Z", Some(-62_135_596_800_000_000_000)),
        ("9999-12-31T23:59:59Z", Some(253_402_300_799_000_000_000)),
        ("+024-01-01T00:00:00Z", None),
        ("-001-01-01T00:00:00Z", None),
        ("2024-01-01T00:00:00Zx", None),
        (" 2024-01-01T00:00:00Z", None),
        ("2024-01-01T00:00:00Z ", None),
        ("2024-1-01T00:00:00Z", None),
        ("2024-01-1T00:00:00Z", None),
        ("2024-01-01T00:00:00+0é:0", None),
        ("2024-01-01T00:00:00é00:00", None),
        ("2024-01-01T00:00:00.5é", None),
        ("garbage", None),
        ("", None),
        ("2024-01-01T00:00:00", None),
        ("2024-01-01T00:00Z", None),
        ("2024-01-01T00:00:00.5", None),
        ("1970-01-01T00:00:00Z", Some(0)),
        ("1969-12-31T23:59:59.5Z", Some(-500_000_000)),
        ("2024-01-01T00:00:00-00:00", Some(1_704_067_200_000_000_000)),
        ("2024-06-15T12:30:45+05:45", Some(1_718_433_945_000_000_000)),
        ("2024-01-01T00:00:00+24:60", Some(1_703_977_200_000_000_000)),
        ("2024-01-01T00:00:00+00:60", Some(1_704_063_600_000_000_000)),
        ("2024-01-01T00:00:00+2a:00", None),
        (
            "2024-01-01T00:00:00.0000000000Z",
            Some(1_704_067_200_000_000_000),
        ),
        ("2024-01-01T00:00:00.-5Z", None),
    ];

    #[test]
    fn rfc3339_accepts_exactly_what_go_time_parse_accepts() {
        for (input, want) in GO_RFC3339 {
            assert_eq!(parse_rfc3339(input), *want, "{input:?}");
        }
    }

    #[test]
    fn rfc3339_rejects_2024_99_99t99_99_99z() {
        assert_eq!(parse_rfc3339("2024-99-99T99:99:99Z"), None);
        assert_eq!(parse_rfc3339("2023-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2024-01-01T00:00:60Z"), None);
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
