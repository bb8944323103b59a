//! Benchmark figures and how they are printed.
//!
//! Every figure is a [`Record`]. Without `--tsv` the records are printed as an aligned table;
//! with `--tsv` each is one tab-separated line on stdout:
//!
//! ```text
//! suite <TAB> figure <TAB> value <TAB> unit <TAB> target <TAB> verdict
//! ```
//!
//! `value` and `target` are already formatted for people (`1,234,567`, `>= 1,000,000`),
//! `target` is empty for informational figures, and `verdict` is `PASS`, `MISS` or `-`.
//! `bench/run` collects these lines from every suite into one table, so any future suite (for
//! example a Python/Dask comparison) only has to print the same six columns.

/// How a figure is compared with its target.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// Informational: no target.
    None,
    /// Must be at least this.
    AtLeast(f64),
    /// Must be below this.
    Below(f64),
}

#[derive(Clone, Debug)]
pub struct Record {
    pub suite: String,
    pub figure: String,
    pub value: f64,
    pub unit: String,
    pub target: Target,
}

impl Record {
    pub fn new(suite: &str, figure: impl Into<String>, value: f64, unit: &str) -> Record {
        Record {
            suite: suite.to_string(),
            figure: figure.into(),
            value,
            unit: unit.to_string(),
            target: Target::None,
        }
    }

    pub fn target(mut self, target: Target) -> Record {
        self.target = target;
        self
    }

    pub fn verdict(&self) -> &'static str {
        match self.target {
            Target::None => "-",
            Target::AtLeast(t) if self.value >= t => "PASS",
            Target::Below(t) if self.value < t => "PASS",
            _ => "MISS",
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::None => String::new(),
            Target::AtLeast(t) => format!(">= {}", human(t)),
            Target::Below(t) => format!("< {}", human(t)),
        }
    }

    fn columns(&self) -> [String; 6] {
        [
            self.suite.clone(),
            self.figure.clone(),
            human(self.value),
            self.unit.clone(),
            self.target_text(),
            self.verdict().to_string(),
        ]
    }
}

/// A number for people: thousands separators; integers above 100 lose their fraction, smaller
/// values keep enough digits to be meaningful.
pub fn human(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.abs() >= 100.0 {
        let n = v.round() as i128;
        let digits = n.unsigned_abs().to_string();
        // Groups of three from the right; the first group takes the remainder.
        let first = match digits.len() % 3 {
            0 => 3,
            r => r,
        };
        let mut out = String::from(if n < 0 { "-" } else { "" });
        out.push_str(&digits[..first]);
        for group in digits.as_bytes()[first..].chunks(3) {
            out.push(',');
            out.push_str(std::str::from_utf8(group).unwrap_or_default());
        }
        out
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Print the records, as TSV lines or as a table.
pub fn print(records: &[Record], tsv: bool) {
    if tsv {
        for r in records {
            println!("{}", r.columns().join("\t"));
        }
        return;
    }
    let header = ["suite", "figure", "value", "unit", "target", "verdict"].map(String::from);
    let rows: Vec<[String; 6]> = std::iter::once(header)
        .chain(records.iter().map(Record::columns))
        .collect();
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == 2 {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// Median of a non-empty list (the mean of the middle two for an even length).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_numbers() {
        assert_eq!(human(1_234_567.4), "1,234,567");
        assert_eq!(human(100.0), "100");
        assert_eq!(human(999_999.0), "999,999");
        assert_eq!(human(1_000.0), "1,000");
        assert_eq!(human(-1000.0), "-1,000");
        assert_eq!(human(12.34), "12.3");
        assert_eq!(human(0.5), "0.500");
    }

    #[test]
    fn verdicts() {
        let r = Record::new("s", "f", 10.0, "x");
        assert_eq!(r.clone().verdict(), "-");
        assert_eq!(r.clone().target(Target::AtLeast(10.0)).verdict(), "PASS");
        assert_eq!(r.clone().target(Target::AtLeast(11.0)).verdict(), "MISS");
        assert_eq!(r.clone().target(Target::Below(10.0)).verdict(), "MISS");
        assert_eq!(r.target(Target::Below(10.5)).verdict(), "PASS");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
