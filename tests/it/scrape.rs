//! Scraping the service's metrics endpoint as Prometheus would, and checking
//! the exposition with `promtool check metrics` (Debian's `prometheus`
//! package, installed by `scripts/services.sh install`). Shared by the `it`
//! and `outage` binaries.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// How long a scrape may take before the test fails: the endpoint must answer
/// at once whatever the broker and the database do.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// The address the service says it serves its metrics on (the config says
/// port 0, so the system chose one).
pub fn metrics_address(service: &Service) -> SocketAddr {
    wait_until("the log line 'metrics: serving'", PROCESS_DEADLINE, || {
        let log = service.log_text();
        log.lines()
            .find_map(|line| {
                let rest = line.split("metrics: serving http://").nth(1)?;
                rest.strip_suffix("/metrics")?.trim().parse().ok()
            })
            .ok_or_else(|| format!("no such line in the log:\n{log}"))
    })
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status_line: String,
    pub head: String,
    pub body: String,
}

/// `GET path` over a plain TCP connection, as an HTTP/1.1 client that sends
/// the request and reads to the end; fails when it takes `SCRAPE_TIMEOUT`.
pub fn http_get(address: SocketAddr, path: &str) -> Result<Answer, String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&address, SCRAPE_TIMEOUT)
        .map_err(|e| format!("connect to {address}: {e}"))?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: text/plain\r\nUser-Agent: kafka2mysql-it\r\n\r\n"
    )
    .map_err(|e| format!("send to {address}: {e}"))?;
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read from {address} after {:?}: {e}", started.elapsed()))?;
    if started.elapsed() > SCRAPE_TIMEOUT {
        return Err(format!("the answer took {:?}", started.elapsed()));
    }
    let text = String::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of the head in {text:?}"))?;
    Ok(Answer {
        status_line: head.lines().next().unwrap_or("").to_string(),
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// Scrapes `/metrics` and checks the answer with `promtool check metrics`
/// (which also lints names, types and help). The test fails at once, not
/// at a wait's deadline, unless the endpoint answers 200 in the 0.0.4 text
/// format within `SCRAPE_TIMEOUT`.
pub fn scrape(address: SocketAddr) -> Samples {
    let answer = http_get(address, "/metrics")
        .unwrap_or_else(|e| panic!("scrape of http://{address}/metrics: {e}"));
    assert_eq!(answer.status_line, "HTTP/1.1 200 OK", "{answer:?}");
    assert!(
        answer
            .head
            .contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "not the 0.0.4 text format: {}",
        answer.head
    );
    promtool_check_metrics(&answer.body);
    Samples::parse(&answer.body)
}

/// Runs `promtool ARGS` with `stdin`; the test fails with its output unless
/// it exits 0.
pub fn promtool(args: &[&str], stdin: &str) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}); install it with scripts/services.sh install")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool {} failed ({}):\n{}{}\ninput:\n{stdin}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn promtool_check_metrics(exposition: &str) {
    promtool(&["check", "metrics"], exposition);
}

/// The samples of one scrape: series (name and labels) to value.
#[derive(Debug, Clone)]
pub struct Samples(Vec<(String, BTreeMap<String, String>, f64)>);

impl Samples {
    /// Reads the text format as this service writes it: one sample a line,
    /// label values without commas.
    pub fn parse(text: &str) -> Samples {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("name and value");
            let value: f64 = value.parse().expect("a number");
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split(',')
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').expect("label=value");
                            (k.to_string(), v.trim_matches('"').to_string())
                        })
                        .collect();
                    (name, labels)
                }
            };
            samples.push((name.to_string(), labels, value));
        }
        Samples(samples)
    }

    /// The value of the series `name` whose labels include `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    /// `get` for partition `p`, as an integer; `None` when absent.
    pub fn partition(&self, name: &str, p: i32) -> Option<i64> {
        self.get(name, &[("partition", &p.to_string())])
            .map(|v| v as i64)
    }

    /// 1 when partition `p` is in `state`.
    pub fn state(&self, p: i32, state: &str) -> Option<i64> {
        self.get(
            "kafka2mysql_partition_state",
            &[("partition", &p.to_string()), ("state", state)],
        )
        .map(|v| v as i64)
    }

    /// The sum of `name` over every partition.
    pub fn total(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, v)| v)
            .sum()
    }
}
