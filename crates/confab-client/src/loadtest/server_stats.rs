//! Server-side resource figures for a load test: CPU time and memory of a process from
//! `/proc/<pid>/stat` and `/proc/<pid>/status`, and counters scraped from Confab's `/metrics`
//! (forwarded RTP packets, process CPU seconds, resident memory).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why server figures could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// Reading `/proc` failed.
    #[error("cannot read /proc/{pid}: {source}")]
    Proc {
        /// The process.
        pid: u32,
        /// Why.
        source: std::io::Error,
    },
    /// A `/proc` file did not have the expected shape.
    #[error("unexpected format in /proc/{0}")]
    ProcFormat(u32),
    /// The metrics URL is not `http://host:port/path`.
    #[error("unsupported metrics URL {0:?} (expected http://host:port/path)")]
    Url(String),
    /// Fetching the metrics failed.
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
}

/// CPU and memory of one process at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Peak resident set size (VmHWM), bytes.
    pub rss_peak_bytes: u64,
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Parses the utime + stime fields of a `/proc/<pid>/stat` line, in clock ticks.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Reads a `kB` field (`VmRSS:`, `VmHWM:`) from `/proc/<pid>/status`, in bytes.
pub fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim();
        v.parse::<u64>().ok().map(|kb| kb * 1024)
    })
}

/// Samples a process's CPU time and memory.
pub fn sample_proc(pid: u32) -> Result<ProcSample, StatsError> {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .map_err(|source| StatsError::Proc { pid, source })
    };
    let stat = read("stat")?;
    let status = read("status")?;
    let ticks = parse_stat_ticks(&stat).ok_or(StatsError::ProcFormat(pid))?;
    Ok(ProcSample {
        cpu_seconds: ticks as f64 / clock_ticks_per_second(),
        rss_bytes: parse_status_kb(&status, "VmRSS:").ok_or(StatsError::ProcFormat(pid))?,
        rss_peak_bytes: parse_status_kb(&status, "VmHWM:").unwrap_or(0),
    })
}

/// This process's own figures.
pub fn sample_self() -> Option<ProcSample> {
    sample_proc(std::process::id()).ok()
}

/// Sums the `drops` column of `/proc/<pid>/net/udp{,6}` over the UDP sockets `pid` has open
/// (datagrams the kernel discarded because a socket's receive buffer was full).
pub fn udp_drops(pid: u32) -> Result<u64, StatsError> {
    let io = |source| StatsError::Proc { pid, source };
    let mut inodes = std::collections::HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(io)? {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
            inodes.insert(inode.to_owned());
        }
    }
    let mut drops = 0;
    for table in ["udp", "udp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        drops += sum_socket_drops(&text, &inodes);
    }
    Ok(drops)
}

/// The `drops` of the rows of a `/proc/net/udp` table whose inode is in `inodes`.
pub fn sum_socket_drops(table: &str, inodes: &std::collections::HashSet<String>) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let inode = f.get(9)?;
            if !inodes.contains(*inode) {
                return None;
            }
            f.get(12)?.parse::<u64>().ok()
        })
        .sum()
}

/// Figures scraped from Confab's `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MetricsSample {
    /// `confab_rtp_packets_total{direction="out"}`, summed over kinds.
    pub forwarded_packets: f64,
    /// `process_cpu_seconds_total`, if exported.
    pub cpu_seconds: Option<f64>,
    /// `process_resident_memory_bytes`, if exported.
    pub rss_bytes: Option<f64>,
}

/// Extracts the load-test figures from a Prometheus text exposition.
pub fn parse_metrics(text: &str) -> MetricsSample {
    let mut m = MetricsSample::default();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.find('{') {
            Some(i) => (&series[..i], &series[i..]),
            None => (series, ""),
        };
        match name {
            "confab_rtp_packets_total" if labels.contains(r#"direction="out""#) => {
                m.forwarded_packets += value;
            }
            "process_cpu_seconds_total" => m.cpu_seconds = Some(value),
            "process_resident_memory_bytes" => m.rss_bytes = Some(value),
            _ => {}
        }
    }
    m
}

/// Fetches `url` (plain `http://host:port/path`) and parses it.
pub async fn fetch_metrics(url: &str) -> Result<MetricsSample, StatsError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| StatsError::Url(url.to_owned()))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    if host.is_empty() {
        return Err(StatsError::Url(url.to_owned()));
    }
    let fail = |reason: String| StatsError::Fetch {
        url: url.to_owned(),
        reason,
    };
    let body = tokio::time::timeout(Duration::from_secs(5), async {
        let mut s = TcpStream::connect(host)
            .await
            .map_err(|e| fail(e.to_string()))?;
        // HTTP/1.0: the response is not chunked and ends when the server closes.
        let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: text/plain\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok::<_, StatsError>(buf)
    })
    .await
    .map_err(|_| fail("timed out".into()))??;
    let text = String::from_utf8_lossy(&body);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail("malformed HTTP response".into()))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(fail(format!("HTTP status line {status:?}")));
    }
    Ok(parse_metrics(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_command_with_spaces() {
        let stat = "1234 (my (odd) server) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(300));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_kb_fields() {
        let status = "Name:\tconfab\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kb(status, "VmRSS:"), Some(10 * 1024 * 1024));
        assert_eq!(parse_status_kb(status, "VmHWM:"), Some(20 * 1024 * 1024));
        assert_eq!(parse_status_kb(status, "VmSwap:"), None);
    }

    #[test]
    fn udp_drops_of_own_sockets_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            \x20 1: 0100007F:3A98 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 111 2 0000000000000000 5\n\
            \x20 2: 0100007F:3A99 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 222 2 0000000000000000 7\n";
        let ours = std::collections::HashSet::from(["222".to_owned()]);
        assert_eq!(sum_socket_drops(table, &ours), 7);
        assert!(udp_drops(std::process::id()).is_ok());
    }

    #[test]
    fn metrics_are_summed_by_direction() {
        let text = "# HELP confab_rtp_packets_total x\n\
            confab_rtp_packets_total{direction=\"in\",kind=\"audio\"} 10\n\
            confab_rtp_packets_total{direction=\"out\",kind=\"audio\"} 20\n\
            confab_rtp_packets_total{direction=\"out\",kind=\"video\"} 30\n\
            process_cpu_seconds_total 1.5\n\
            process_resident_memory_bytes 4096\n";
        let m = parse_metrics(text);
        assert_eq!(m.forwarded_packets, 50.0);
        assert_eq!(m.cpu_seconds, Some(1.5));
        assert_eq!(m.rss_bytes, Some(4096.0));
    }

    #[test]
    fn own_process_can_be_sampled() {
        let s = sample_self().expect("/proc/self is readable");
        assert!(s.rss_bytes > 0);
    }
}
