//! Scraping a running `tributary` command's `/metrics` endpoint the way Prometheus does: one
//! HTTP GET over a plain TCP connection, then reading samples from the text exposition format
//! by metric name and exact label set.
//!
//! Tests start the command with `--metrics-listen 127.0.0.1:0` (or `[metrics] listen`) and
//! learn the port it bound from its log line, so no port is guessed and none can be taken by
//! another test in between.

use crate::{ChildGuard, wait_until};
use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The log line the endpoint writes once bound: `serving metrics on http://<addr>/metrics`.
const SERVING: &str = "serving metrics on http://";

/// Waits until `child` logs the address its metrics endpoint is bound to.
pub async fn wait_metrics_address(child: &ChildGuard) -> Result<SocketAddr> {
    wait_until(
        "the metrics endpoint to be served",
        Duration::from_secs(30),
        || {
            let found = metrics_address(&child.stderr()).is_some();
            async move { Ok(found) }
        },
    )
    .await
    .map_err(|e| e.context(child.logs()))?;
    metrics_address(&child.stderr()).context("the address was logged")
}

/// The address in the endpoint's log line, if `logs` has it.
pub fn metrics_address(logs: &str) -> Option<SocketAddr> {
    let start = logs.find(SERVING)? + SERVING.len();
    let rest = &logs[start..];
    rest[..rest.find("/metrics")?].parse().ok()
}

/// One scrape of `http://<address>/metrics`: the body of a 200 response.
pub fn scrape(address: SocketAddr) -> Result<Scrape> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .with_context(|| format!("connecting to the metrics endpoint {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!("not an HTTP response from {address}: {response:?}");
    };
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("GET /metrics on {address} answered {head:?}");
    }
    Ok(Scrape {
        text: body.to_owned(),
    })
}

/// A scraped exposition.
#[derive(Debug, Clone)]
pub struct Scrape {
    text: String,
}

impl Scrape {
    pub fn from_text(text: &str) -> Scrape {
        Scrape {
            text: text.to_owned(),
        }
    }

    /// The whole text, for error messages.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value of the sample `name` whose labels are exactly `labels` (in any order).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut wanted: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        wanted.sort();
        self.text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(parse_sample)
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, value)| value)
    }

    /// The sum of every sample of `name`, whatever its labels (0 when there is none).
    pub fn sum(&self, name: &str) -> f64 {
        self.text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(parse_sample)
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, value)| value)
            .sum()
    }

    /// [`Scrape::value`], or an error that shows the exposition.
    pub fn require(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        self.value(name, labels)
            .with_context(|| format!("no sample {name}{labels:?} in:\n{}", self.text))
    }
}

/// Label pairs, sorted by name.
type Labels = Vec<(String, String)>;

/// `name{k="v",...} value` (or `name value`) as (name, sorted labels, value).
fn parse_sample(line: &str) -> Option<(String, Labels, f64)> {
    let (series, value) = line.trim().rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some((series.to_owned(), Vec::new(), value));
    };
    let mut labels = Vec::new();
    let mut chars = rest.strip_suffix('}')?.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next() != Some('"') {
            return None;
        }
        let mut text = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => text.push('\n'),
                    other => text.push(other),
                },
                '"' => break,
                c => text.push(c),
            }
        }
        labels.push((key, text));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels.sort();
    Some((name.to_owned(), labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP tributary_apply_batches_rejected_total Batches HQ rejected.\n\
        # TYPE tributary_apply_batches_rejected_total counter\n\
        tributary_apply_batches_rejected_total{reason=\"authentication_failed\",site=\"clinic-a\"} 1\n\
        tributary_apply_batches_rejected_total{reason=\"misplaced_batch\",site=\"(unknown)\"} 0\n\
        tributary_capture_spool_bytes 1048000\n\
        tributary_odd{note=\"say \\\"hi\\\", then go\"} 2\n";

    #[test]
    fn samples_are_found_by_name_and_exact_labels() {
        let scrape = Scrape::from_text(TEXT);
        let rejected = "tributary_apply_batches_rejected_total";
        assert_eq!(
            scrape.value(
                rejected,
                &[("site", "clinic-a"), ("reason", "authentication_failed")]
            ),
            Some(1.0)
        );
        assert_eq!(
            scrape.value(
                rejected,
                &[("reason", "misplaced_batch"), ("site", "(unknown)")]
            ),
            Some(0.0)
        );
        assert_eq!(scrape.value(rejected, &[("site", "clinic-a")]), None);
        assert_eq!(
            scrape.value("tributary_capture_spool_bytes", &[]),
            Some(1_048_000.0)
        );
        assert_eq!(
            scrape.value("tributary_odd", &[("note", "say \"hi\", then go")]),
            Some(2.0)
        );
    }

    #[test]
    fn the_bound_address_is_read_from_the_log_line() {
        let logs = "\u{1b}[2m2026\u{1b}[0m INFO tributary::metrics_endpoint: serving metrics on \
                    http://127.0.0.1:40123/metrics\n";
        assert_eq!(
            metrics_address(logs),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(metrics_address("starting"), None);
    }
}
