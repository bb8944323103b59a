//! For tests of the scheduler's HTTP server: a minimal HTTP/1.1 client (no dependency, loopback
//! only) and a strict parser of the Prometheus/OpenMetrics text exposition format.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", &self.body))
    }
}

/// `http://HOST:PORT/` of the dashboard, from the scheduler file.
pub fn dashboard_url(scheduler_file: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(scheduler_file) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                if let Some(d) = v["dashboard"].as_str() {
                    return d.trim_end_matches('/').to_string();
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no dashboard in {}",
            scheduler_file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("http:// URL");
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    }
}

/// GET `url` (`http://host:port/path`), reading the whole response.
pub fn get(url: &str) -> Response {
    let (host, path) = split_url(url);
    let mut s = TcpStream::connect(&host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = std::str::from_utf8(&b[..eol]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// Open `/api/stream` and return the first `n` server-sent events as (event, data).
pub fn first_stream_events(base: &str, n: usize, timeout: Duration) -> Vec<(String, String)> {
    let (host, _) = split_url(base);
    let mut s = TcpStream::connect(&host).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    write!(
        s,
        "GET /api/stream HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + timeout;
    loop {
        let text = String::from_utf8_lossy(&raw);
        let events = parse_sse(&text);
        if events.len() >= n {
            return events.into_iter().take(n).collect();
        }
        assert!(
            Instant::now() < deadline,
            "stream gave {} events",
            events.len()
        );
        let k = s.read(&mut buf).expect("stream read");
        assert!(k > 0, "stream closed");
        raw.extend_from_slice(&buf[..k]);
    }
}

/// Events of a (de-chunked enough) SSE text: chunk-size lines are skipped as they have no
/// `field:` shape.
fn parse_sse(text: &str) -> Vec<(String, String)> {
    let body = match text.find("\r\n\r\n") {
        Some(i) => &text[i + 4..],
        None => return Vec::new(),
    };
    let mut out = Vec::new();
    let (mut event, mut data) = (String::new(), String::new());
    for line in body.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            if !data.is_empty() {
                out.push((std::mem::take(&mut event), std::mem::take(&mut data)));
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    out
}

/// One parsed exposition: every series (`name{labels}` with labels sorted) and its value, and
/// each family's type.
#[derive(Debug, Default)]
pub struct Exposition {
    pub series: BTreeMap<String, f64>,
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// Value of `name` with exactly these labels (0 when absent: a counter not yet created).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .get(&series_key(name, labels))
            .copied()
            .unwrap_or(0.0)
    }

    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.series.contains_key(&series_key(name, labels))
    }

    /// Series of one metric name (any labels).
    pub fn of(&self, name: &str) -> Vec<(&String, f64)> {
        self.series
            .iter()
            .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
            .map(|(k, v)| (k, *v))
            .collect()
    }
}

pub fn series_key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    if l.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v
            .parse::<f64>()
            .map_err(|e| format!("bad value {v:?}: {e}")),
    }
}

/// A sample: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parse `name{a="x",b="y"} value [timestamp]` strictly.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value: {line:?}"))?;
    let name = &line[..name_end];
    if !is_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let b = line.as_bytes();
    let mut i = name_end;
    let mut labels: Vec<(String, String)> = Vec::new();
    if b[i] == b'{' {
        i += 1;
        loop {
            if b.get(i) == Some(&b'}') {
                i += 1;
                break;
            }
            let eq = line[i..].find('=').ok_or("label without =")? + i;
            let lname = &line[i..eq];
            if !is_name(lname) || lname.contains(':') {
                return Err(format!("bad label name {lname:?}"));
            }
            if b.get(eq + 1) != Some(&b'"') {
                return Err(format!("label {lname} value not quoted"));
            }
            i = eq + 2;
            let mut value = String::new();
            loop {
                match *b.get(i).ok_or("unterminated label value")? {
                    b'\\' => {
                        value.push(match *b.get(i + 1).ok_or("dangling escape")? {
                            b'\\' => '\\',
                            b'"' => '"',
                            b'n' => '\n',
                            e => return Err(format!("bad escape \\{}", e as char)),
                        });
                        i += 2;
                    }
                    b'"' => {
                        i += 1;
                        break;
                    }
                    _ => {
                        let ch = line[i..].chars().next().expect("in bounds");
                        value.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            if labels.iter().any(|(k, _)| k == lname) {
                return Err(format!("label {lname} twice"));
            }
            labels.push((lname.to_string(), value));
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return Err(format!("expected , or }} after label {lname}")),
            }
        }
    }
    let rest = line[i..]
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before the value: {line:?}"))?;
    let mut parts = rest.split(' ');
    let value = parse_value(parts.next().ok_or("no value")?)?;
    if let Some(ts) = parts.next() {
        ts.parse::<f64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if parts.next().is_some() {
        return Err(format!("trailing text: {line:?}"));
    }
    Ok((name.to_string(), labels, value))
}

/// Parse an exposition strictly: every line is a known comment or a well-formed sample of a
/// declared family, no series twice, histograms consistent, `# EOF` last (OpenMetrics).
pub fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut ex = Exposition::default();
    let mut helped = std::collections::BTreeSet::new();
    let mut eof = false;
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if eof {
            return Err(at("text after # EOF".into()));
        }
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        if let Some(c) = line.strip_prefix("# ") {
            let mut p = c.splitn(3, ' ');
            match (p.next(), p.next(), p.next()) {
                (Some("EOF"), None, None) => eof = true,
                (Some("HELP"), Some(name), Some(_)) if is_name(name) => {
                    if !helped.insert(name.to_string()) {
                        return Err(at("HELP twice".into()));
                    }
                }
                (Some("TYPE"), Some(name), Some(t)) if is_name(name) => {
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "info",
                        "stateset",
                        "gaugehistogram",
                        "unknown",
                        "untyped",
                    ];
                    if !known.contains(&t) {
                        return Err(at(format!("unknown type {t}")));
                    }
                    if ex.types.insert(name.to_string(), t.to_string()).is_some() {
                        return Err(at("TYPE twice".into()));
                    }
                }
                (Some("UNIT"), Some(name), Some(_)) if is_name(name) => {}
                _ => return Err(at("unknown comment".into())),
            }
            continue;
        }
        let (name, labels, value) = parse_sample(line).map_err(at)?;
        // Which family does the sample belong to?
        let family = [
            ("_total", "counter"),
            ("_created", "counter"),
            ("_bucket", "histogram"),
            ("_sum", "histogram"),
            ("_count", "histogram"),
            ("_info", "info"),
        ]
        .iter()
        .find_map(|(suffix, t)| {
            let base = name.strip_suffix(suffix)?;
            (ex.types.get(base).map(String::as_str) == Some(*t)).then_some(base)
        })
        .or_else(|| ex.types.contains_key(&name).then_some(name.as_str()))
        .ok_or_else(|| at(format!("sample of undeclared family {name}")))?
        .to_string();
        let t = ex.types[&family].clone();
        if t == "counter" && !(name.ends_with("_total") || name.ends_with("_created")) {
            return Err(at("counter sample without _total".into()));
        }
        if t == "histogram" && name.ends_with("_bucket") && !labels.iter().any(|(k, _)| k == "le") {
            return Err(at("bucket without le".into()));
        }
        if t == "counter" && value < 0.0 {
            return Err(at("negative counter".into()));
        }
        let l: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if ex.series.insert(series_key(&name, &l), value).is_some() {
            return Err(at("series twice".into()));
        }
    }
    if !eof {
        return Err("no # EOF at the end".into());
    }
    check_histograms(&ex)?;
    Ok(ex)
}

fn check_histograms(ex: &Exposition) -> Result<(), String> {
    for (family, t) in &ex.types {
        if t != "histogram" {
            continue;
        }
        // Group buckets by their labels other than `le`.
        let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        let prefix = format!("{family}_bucket{{");
        for (k, v) in &ex.series {
            let Some(inner) = k.strip_prefix(&prefix) else {
                continue;
            };
            let inner = inner.trim_end_matches('}');
            let mut le = None;
            let mut others = Vec::new();
            for kv in inner.split("\",") {
                let kv = kv.trim_end_matches('"');
                let (lk, lv) = kv.split_once("=\"").ok_or("bad bucket labels")?;
                if lk == "le" {
                    le = Some(parse_value(lv)?);
                } else {
                    others.push(format!("{lk}=\"{lv}\""));
                }
            }
            groups
                .entry(others.join(","))
                .or_default()
                .push((le.ok_or("bucket without le")?, *v));
        }
        for (labels, mut buckets) in groups {
            buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!("{family}{{{labels}}}: buckets not cumulative"));
            }
            let inf = buckets.last().filter(|b| b.0.is_infinite());
            let count_key = if labels.is_empty() {
                format!("{family}_count")
            } else {
                format!("{family}_count{{{labels}}}")
            };
            match (inf, ex.series.get(&count_key)) {
                (Some(b), Some(c)) if b.1 == *c => {}
                _ => return Err(format!("{family}{{{labels}}}: +Inf bucket != _count")),
            }
        }
    }
    Ok(())
}
