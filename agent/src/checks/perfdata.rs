//! Output of Nagios plugins: the summary line and performance data, as the
//! Monitoring Plugins Development Guidelines define them.
//!
//! ```text
//! TEXT OUTPUT | OPTIONAL PERFDATA
//! LONG TEXT LINE 1
//! LONG TEXT LINE N | PERFDATA LINE 2
//! PERFDATA LINE 3
//! ```
//!
//! Perf entries are `'label'=value[UOM];[warn];[crit];[min];[max]`,
//! separated by spaces. A label may be single-quoted to hold spaces or
//! `=`, with `''` for a quote. Value `U` (undetermined) skips the entry.
//! Thresholds are Nagios ranges (`10`, `10:20`, `@10:20`, `~:5`); only a
//! plain number fits the wire's `warn`/`crit`, so ranges are left out.
//! Whatever cannot be read is skipped, never an error: plugin output is
//! untrusted text.

use leitstand_proto::domain::bounds::MAX_PERF_DATA;
use leitstand_proto::v1::PerfDatum;

/// The summary (first line, before any `|`) and the perf data of plugin
/// output. Bounds (summary length, label and unit lengths) are applied by
/// the caller; at most [`MAX_PERF_DATA`] entries are returned.
pub(crate) fn parse_plugin_output(output: &str) -> (String, Vec<PerfDatum>) {
    let mut lines = output.lines();
    let first = lines.next().unwrap_or("");
    let (summary, first_perf) = match first.split_once('|') {
        Some((text, perf)) => (text, perf),
        None => (first, ""),
    };
    let mut perf = Vec::new();
    parse_perf_line(first_perf, &mut perf);
    // Long output: perf data starts after the first '|' in a later line and
    // runs to the end of the output.
    let mut in_perf = false;
    for line in lines {
        if in_perf {
            parse_perf_line(line, &mut perf);
        } else if let Some((_, rest)) = line.split_once('|') {
            in_perf = true;
            parse_perf_line(rest, &mut perf);
        }
    }
    (summary.trim().to_owned(), perf)
}

fn parse_perf_line(line: &str, out: &mut Vec<PerfDatum>) {
    let mut rest = line;
    while out.len() < MAX_PERF_DATA {
        rest = rest.trim_start();
        if rest.is_empty() {
            return;
        }
        let (entry, after) = split_entry(rest);
        rest = after;
        if let Some(datum) = entry.and_then(|(label, data)| parse_entry(label, data)) {
            out.push(datum);
        }
    }
}

/// Splits off the first entry of `text` (which starts with no space):
/// `Some((label, data))` if it has the form `label=data`, and the rest.
fn split_entry(text: &str) -> (Option<(String, &str)>, &str) {
    let (label, after_label) = if let Some(quoted) = text.strip_prefix('\'') {
        match quoted_label(quoted) {
            Some((label, after)) => (label, after),
            // An unterminated quote: nothing after it can be read.
            None => return (None, ""),
        }
    } else {
        let end = text
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(text.len());
        (text[..end].to_owned(), &text[end..])
    };
    let Some(after_eq) = after_label.strip_prefix('=') else {
        // Not `label=…`: skip this word.
        let end = after_label
            .find(char::is_whitespace)
            .unwrap_or(after_label.len());
        return (None, &after_label[end..]);
    };
    let end = after_eq.find(char::is_whitespace).unwrap_or(after_eq.len());
    (Some((label, &after_eq[..end])), &after_eq[end..])
}

/// A quoted label after its opening quote: the label (with `''` read as
/// `'`) and the text after the closing quote.
fn quoted_label(text: &str) -> Option<(String, &str)> {
    let mut label = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '\'' {
            label.push(c);
            continue;
        }
        if text[i + 1..].starts_with('\'') {
            label.push('\'');
            chars.next();
        } else {
            return Some((label, &text[i + 1..]));
        }
    }
    None
}

/// `value[UOM];[warn];[crit];[min];[max]`.
fn parse_entry(label: String, data: &str) -> Option<PerfDatum> {
    if label.is_empty() {
        return None;
    }
    let mut fields = data.split(';');
    let (value, unit) = split_number(fields.next().unwrap_or(""))?;
    let mut plain = || fields.next().and_then(plain_number);
    let (warn, crit, min, max) = (plain(), plain(), plain(), plain());
    Some(PerfDatum {
        label,
        value,
        unit: unit.to_owned(),
        warn,
        crit,
        min,
        max,
    })
}

/// A number followed by its unit of measure: "2643MB" → (2643, "MB").
/// `None` for "U" and anything that does not start with a finite number.
fn split_number(text: &str) -> Option<(f64, &str)> {
    let bytes = text.as_bytes();
    let mut end = 0;
    if matches!(bytes.first(), Some(b'-' | b'+')) {
        end += 1;
    }
    let digits_start = end;
    while end < bytes.len() && (bytes[end].is_ascii_digit() || bytes[end] == b'.') {
        end += 1;
    }
    if end == digits_start {
        return None;
    }
    // An exponent only when digits follow: "1e3" is a number, "5e" is not.
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let mut exp = end + 1;
        if matches!(bytes.get(exp), Some(b'-' | b'+')) {
            exp += 1;
        }
        if bytes.get(exp).is_some_and(u8::is_ascii_digit) {
            while bytes.get(exp).is_some_and(u8::is_ascii_digit) {
                exp += 1;
            }
            end = exp;
        }
    }
    let value: f64 = text[..end].parse().ok()?;
    value.is_finite().then_some((value, &text[end..]))
}

/// A threshold or limit that is a plain number; ranges and empty fields
/// give `None`.
fn plain_number(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.is_empty() || text.contains([':', '@', '~']) {
        return None;
    }
    // A unit after a threshold is tolerated ("80%" from some plugins).
    split_number(text).map(|(value, _)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One expected perf entry: label, value, unit, warn, crit, min, max.
    type Expected<'a> = (
        &'a str,
        f64,
        &'a str,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
    );

    fn check(output: &str, summary: &str, perf: &[Expected<'_>]) {
        let (got_summary, got_perf) = parse_plugin_output(output);
        assert_eq!(got_summary, summary, "summary of {output:?}");
        let got: Vec<Expected<'_>> = got_perf
            .iter()
            .map(|p| {
                (
                    p.label.as_str(),
                    p.value,
                    p.unit.as_str(),
                    p.warn,
                    p.crit,
                    p.min,
                    p.max,
                )
            })
            .collect();
        assert_eq!(got, perf, "perf data of {output:?}");
    }

    const N: Option<f64> = None;

    #[test]
    fn plugin_output() {
        // Real lines from Debian's monitoring-plugins.
        check(
            "DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n",
            "DISK OK - free space: / 3326 MB (56%);",
            &[(
                "/",
                2643.0,
                "MB",
                Some(5948.0),
                Some(5958.0),
                Some(0.0),
                Some(5968.0),
            )],
        );
        check(
            "PING OK - Packet loss = 0%, RTA = 0.04 ms|rta=0.040000ms;100.000000;500.000000;0.000000 pl=0%;20;60;0",
            "PING OK - Packet loss = 0%, RTA = 0.04 ms",
            &[
                ("rta", 0.04, "ms", Some(100.0), Some(500.0), Some(0.0), N),
                ("pl", 0.0, "%", Some(20.0), Some(60.0), Some(0.0), N),
            ],
        );
        check(
            "OK - load average: 0.01, 0.03, 0.00|load1=0.010;5.000;10.000;0; load5=0.030;4.000;6.000;0; load15=0.000;3.000;4.000;0; \n",
            "OK - load average: 0.01, 0.03, 0.00",
            &[
                ("load1", 0.01, "", Some(5.0), Some(10.0), Some(0.0), N),
                ("load5", 0.03, "", Some(4.0), Some(6.0), Some(0.0), N),
                ("load15", 0.0, "", Some(3.0), Some(4.0), Some(0.0), N),
            ],
        );
        check(
            "TCP OK - 0.000 second response time on 127.0.0.1 port 22|time=0.000123s;;;0.000000;10.000000\n",
            "TCP OK - 0.000 second response time on 127.0.0.1 port 22",
            &[("time", 0.000123, "s", N, N, Some(0.0), Some(10.0))],
        );
        check(
            "SWAP OK - 100% free (2047 MB out of 2047 MB) |swap=2147479552B;0;0;0;2147479552",
            "SWAP OK - 100% free (2047 MB out of 2047 MB)",
            &[(
                "swap",
                2147479552.0,
                "B",
                Some(0.0),
                Some(0.0),
                Some(0.0),
                Some(2147479552.0),
            )],
        );
        check(
            "PROCS OK: 97 processes | procs=97;;;0;",
            "PROCS OK: 97 processes",
            &[("procs", 97.0, "", N, N, Some(0.0), N)],
        );
        check("OK: all fine\n", "OK: all fine", &[]);
        // Ranges are not plain numbers: kept out of warn/crit.
        check(
            "USERS WARNING | users=5;@3:10;~:20;0 temp=21.5C;10:;20 x=1c;3",
            "USERS WARNING",
            &[
                ("users", 5.0, "", N, N, Some(0.0), N),
                ("temp", 21.5, "C", N, Some(20.0), N, N),
                ("x", 1.0, "c", Some(3.0), N, N, N),
            ],
        );
        // Quoted labels with spaces, '=' and an escaped quote.
        check(
            "OK | 'C:\\ Used Space'=10.5GB;30;35;0;40 'it''s =x'=3",
            "OK",
            &[
                (
                    "C:\\ Used Space",
                    10.5,
                    "GB",
                    Some(30.0),
                    Some(35.0),
                    Some(0.0),
                    Some(40.0),
                ),
                ("it's =x", 3.0, "", N, N, N, N),
            ],
        );
        // "U" skips the entry; garbage is skipped, the rest still read.
        check(
            "UNKNOWN | a=U;1;2 junk b= c=abc d=-1.5e3ms;;;-1e4 =4 e=7",
            "UNKNOWN",
            &[
                ("d", -1500.0, "ms", N, N, Some(-10000.0), N),
                ("e", 7.0, "", N, N, N, N),
            ],
        );
        // Long output: perf data from the '|' of a later line to the end.
        check(
            "DISK OK - all fine | /=1MB;;;0\nchecked /\nchecked /var | /var=2MB;;;0\n/home=3MB;;;0\n",
            "DISK OK - all fine",
            &[
                ("/", 1.0, "MB", N, N, Some(0.0), N),
                ("/var", 2.0, "MB", N, N, Some(0.0), N),
                ("/home", 3.0, "MB", N, N, Some(0.0), N),
            ],
        );
        check(
            "first line\nlong text\nmore | x=1\n",
            "first line",
            &[("x", 1.0, "", N, N, N, N)],
        );
        // Nothing readable, never a panic.
        check("", "", &[]);
        check("|", "", &[]);
        check("  spaced out  ", "spaced out", &[]);
        check("x | 'unterminated=5 y=1", "x", &[]);
        check("x | ''=1 é=2€", "x", &[("é", 2.0, "€", N, N, N, N)]);
        check(
            "x | a=1e b=+2 c=.5",
            "x",
            &[
                ("a", 1.0, "e", N, N, N, N),
                ("b", 2.0, "", N, N, N, N),
                ("c", 0.5, "", N, N, N, N),
            ],
        );
        check("x | big=1e999 n=nan", "x", &[]);
    }

    /// Random text from the characters that matter to the parser: never
    /// a panic, and whatever comes out is within the wire's bounds once
    /// `bounded_perf` has seen it.
    #[test]
    fn arbitrary_output_never_panics() {
        const ALPHABET: &[char] = &[
            '\'', '=', ';', '|', '\n', ' ', '\t', 'U', 'e', 'E', '.', '-', '+', ':', '@', '~', '0',
            '7', 'a', 'é', '€', '\r',
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..5000 {
            let len = rng.usize(0..80);
            let text: String = (0..len)
                .map(|_| ALPHABET[rng.usize(..ALPHABET.len())])
                .collect();
            let (summary, perf) = parse_plugin_output(&text);
            assert!(!summary.contains('\n'), "{text:?}");
            assert!(perf.len() <= MAX_PERF_DATA);
            for p in perf {
                assert!(
                    !p.label.is_empty() && p.value.is_finite(),
                    "{text:?}: {p:?}"
                );
            }
        }
    }

    #[test]
    fn at_most_32_entries() {
        let output = format!(
            "OK |{}",
            (0..100).map(|i| format!(" m{i}={i}")).collect::<String>()
        );
        let (_, perf) = parse_plugin_output(&output);
        assert_eq!(perf.len(), MAX_PERF_DATA);
        assert_eq!(perf[31].label, "m31");
    }
}
