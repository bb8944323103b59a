//! The last log lines of this process, kept in memory for `Client.get_worker_logs` (served by
//! the worker's data server, `DataRequest::Logs`): a tee in front of the log writer. At most
//! [`LOG_LINES_KEPT_MAX`] lines of at most [`LOG_LINE_KEPT_BYTES_MAX`] bytes each.
use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;
use tracing_subscriber::fmt::MakeWriter;

/// Recent log lines kept per process.
pub const LOG_LINES_KEPT_MAX: usize = 1000;
/// A longer line is kept cut to this many bytes.
pub const LOG_LINE_KEPT_BYTES_MAX: usize = 4096;

static RECENT: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// The kept lines, oldest first, `(level, line)` (level as `ERROR`, `WARN`, `INFO`, `DEBUG`,
/// `TRACE`, or `INFO` when the line names none).
pub fn recent() -> Vec<(String, String)> {
    let lines = RECENT.lock().map(|r| r.clone()).unwrap_or_default();
    lines
        .into_iter()
        .map(|l| (level_of(&l).to_string(), l))
        .collect()
}

const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

/// The level of a line as the text format writes it (`<time> <LEVEL> ...`), or as the JSON
/// format does (`"level":"<LEVEL>"`).
fn level_of(line: &str) -> &'static str {
    if let Some(word) = line.split_whitespace().nth(1) {
        if let Some(l) = LEVELS.iter().find(|l| **l == word) {
            return l;
        }
    }
    for l in LEVELS {
        if line.contains(&format!("\"level\":\"{l}\"")) {
            return l;
        }
    }
    "INFO"
}

fn keep(bytes: &[u8]) {
    let text = strip_ansi(&String::from_utf8_lossy(bytes));
    let mut line = text.trim_end().to_string();
    if line.is_empty() {
        return;
    }
    if line.len() > LOG_LINE_KEPT_BYTES_MAX {
        let mut cut = LOG_LINE_KEPT_BYTES_MAX;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    if let Ok(mut r) = RECENT.lock() {
        if r.len() >= LOG_LINES_KEPT_MAX {
            r.pop_front();
        }
        r.push_back(line);
    }
}

/// Without terminal colour sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A `MakeWriter` that writes to `inner` and keeps each event's line.
pub struct Tee<M>(pub M);

pub struct TeeWriter<W: Write> {
    inner: W,
    line: Vec<u8>,
}

impl<W: Write> Write for TeeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for TeeWriter<W> {
    fn drop(&mut self) {
        keep(&self.line);
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Tee<M> {
    type Writer = TeeWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        TeeWriter {
            inner: self.0.make_writer(),
            line: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_bounded_and_without_colours() {
        keep(b"\x1b[2m2026-12-05T10:00:00Z\x1b[0m \x1b[32m WARN\x1b[0m worker: slow disk\n");
        let got = recent();
        let (level, line) = got.last().unwrap();
        assert_eq!(level, "WARN");
        assert_eq!(line, "2026-12-05T10:00:00Z  WARN worker: slow disk");
        keep(br#"{"timestamp":"t","level":"ERROR","fields":{"message":"INFO in text"}}"#);
        assert_eq!(recent().last().unwrap().0, "ERROR");
        keep(b"2026-12-05T10:00:00Z  INFO the word ERROR in a message");
        assert_eq!(recent().last().unwrap().0, "INFO");
        for i in 0..LOG_LINES_KEPT_MAX + 10 {
            keep(format!("INFO line {i}").as_bytes());
        }
        let got = recent();
        assert_eq!(got.len(), LOG_LINES_KEPT_MAX);
        assert_eq!(
            got.last().unwrap().1,
            format!("INFO line {}", LOG_LINES_KEPT_MAX + 9)
        );
        keep("x".repeat(LOG_LINE_KEPT_BYTES_MAX * 2).as_bytes());
        assert_eq!(recent().last().unwrap().1.len(), LOG_LINE_KEPT_BYTES_MAX);
    }
}
