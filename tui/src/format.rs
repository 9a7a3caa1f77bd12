//! Times as an operator reads them: ages ("2 min 14 s ago") and UTC
//! timestamps, computed from Unix milliseconds without a time-zone
//! database (the controller sends UTC; so do we).

/// "2 min 14 s", "3 h 5 min", "4 d 2 h": the two largest units.
pub(crate) fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// "2 min 14 s ago"; "never" for a time that was not set; "just now"
/// when `then` is in the (clock-skewed) future.
pub(crate) fn ago(now_unix_ms: i64, then_unix_ms: i64) -> String {
    if then_unix_ms <= 0 {
        return "never".to_owned();
    }
    match u64::try_from(now_unix_ms.saturating_sub(then_unix_ms)) {
        Ok(ms) if ms >= 1000 => format!("{} ago", duration(ms)),
        _ => "just now".to_owned(),
    }
}

/// "2026-11-23 14:02:11 UTC"; "-" for a time that was not set.
pub(crate) fn utc(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".to_owned();
    }
    let secs = unix_ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        (rest % 3600) / 60,
        rest % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// "1.5 GiB", "512 MiB".
pub(crate) fn bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = b as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.0} MiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_an_operator_expects() {
        let cases: &[(u64, &str)] = &[
            (0, "0 s"),
            (59_999, "59 s"),
            (134_000, "2 min 14 s"),
            (3_600_000 * 3 + 300_000, "3 h 5 min"),
            (86_400_000 * 4 + 7_200_000, "4 d 2 h"),
        ];
        for (ms, text) in cases {
            assert_eq!(duration(*ms), *text, "{ms} ms");
        }
        assert_eq!(ago(10_000, 0), "never");
        assert_eq!(ago(10_000, 20_000), "just now");
        assert_eq!(ago(200_000, 66_000), "2 min 14 s ago");
        assert_eq!(utc(1_795_442_531_000), "2026-11-23 14:02:11 UTC");
        assert_eq!(utc(0), "-");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
    }
}
