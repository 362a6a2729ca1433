//! Telemetry as typed events: each thing worth counting is a small struct that both logs
//! (through `tracing`) and updates the Prometheus counters, so logs and metrics agree.
//! `/metrics` serves them in Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use owsu_schemas::record::RecordKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Process-wide counters.
#[derive(Default)]
pub struct Metrics {
    accepted: [AtomicU64; 3],
    duplicates: AtomicU64,
    dead_lettered: AtomicU64,
    batches: AtomicU64,
    files_written: AtomicU64,
    batch_micros_sum: AtomicU64,
    batch_micros_max: AtomicU64,
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Milliseconds from each message's Kafka timestamp (when its producer sent it) to the
    /// commit that put it in the summaries.
    freshness: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

/// Event-to-summary freshness so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Freshness {
    pub events: u64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

impl Metrics {
    pub fn accepted(&self, kind: RecordKind) -> u64 {
        self.accepted[kind as usize].load(Ordering::Relaxed)
    }
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .lock()
            .expect("lag lock")
            .insert((topic.to_owned(), partition), lag);
    }

    /// Records the freshness of a committed batch's messages (milliseconds each).
    pub fn record_freshness(&self, millis: impl IntoIterator<Item = u64>) {
        let mut h = self.freshness.lock().expect("freshness lock");
        let h = h.get_or_insert_with(|| {
            // 1 ms to a day, 3 significant digits.
            hdrhistogram::Histogram::new_with_bounds(1, 86_400_000, 3).expect("valid bounds")
        });
        for ms in millis {
            h.saturating_record(ms.max(1));
        }
    }

    pub fn freshness(&self) -> Freshness {
        match &*self.freshness.lock().expect("freshness lock") {
            Some(h) if !h.is_empty() => Freshness {
                events: h.len(),
                p50_ms: h.value_at_quantile(0.5),
                p99_ms: h.value_at_quantile(0.99),
                max_ms: h.max(),
            },
            _ => Freshness::default(),
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# HELP owsu_events_accepted_total Events decoded, validated and landed, by record kind (duplicates included).");
        let _ = writeln!(s, "# TYPE owsu_events_accepted_total counter");
        for k in RecordKind::ALL {
            let _ = writeln!(
                s,
                "owsu_events_accepted_total{{kind=\"{}\"}} {}",
                k.as_str(),
                self.accepted(k)
            );
        }
        for (name, help, v) in [
            (
                "owsu_events_duplicate_total",
                "Events whose event_id was already counted.",
                &self.duplicates,
            ),
            (
                "owsu_events_dead_lettered_total",
                "Messages sent to the dead-letter topic.",
                &self.dead_lettered,
            ),
            (
                "owsu_batches_committed_total",
                "Batches whose files were durable and offsets committed.",
                &self.batches,
            ),
            (
                "owsu_files_written_total",
                "Raw and summary files written to the object store.",
                &self.files_written,
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let sum = self.batch_micros_sum.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            s,
            "# HELP owsu_batch_latency_seconds Time from a batch's first message to its commit."
        );
        let _ = writeln!(s, "# TYPE owsu_batch_latency_seconds summary");
        let _ = writeln!(s, "owsu_batch_latency_seconds_sum {sum}");
        let _ = writeln!(
            s,
            "owsu_batch_latency_seconds_count {}",
            self.batches.load(Ordering::Relaxed)
        );
        let _ = writeln!(s, "# HELP owsu_batch_latency_seconds_max Longest batch so far.\n# TYPE owsu_batch_latency_seconds_max gauge");
        let _ = writeln!(
            s,
            "owsu_batch_latency_seconds_max {}",
            self.batch_micros_max.load(Ordering::Relaxed) as f64 / 1e6
        );
        let f = self.freshness();
        let _ = writeln!(s, "# HELP owsu_freshness_seconds From a message's Kafka timestamp to the commit that put it in the summaries.\n# TYPE owsu_freshness_seconds summary");
        let _ = writeln!(
            s,
            "owsu_freshness_seconds{{quantile=\"0.5\"}} {}",
            f.p50_ms as f64 / 1e3
        );
        let _ = writeln!(
            s,
            "owsu_freshness_seconds{{quantile=\"0.99\"}} {}",
            f.p99_ms as f64 / 1e3
        );
        let _ = writeln!(
            s,
            "owsu_freshness_seconds{{quantile=\"1\"}} {}",
            f.max_ms as f64 / 1e3
        );
        let _ = writeln!(s, "owsu_freshness_seconds_count {}", f.events);
        let _ = writeln!(s, "# HELP owsu_consumer_lag Messages behind the partition's end (from librdkafka statistics).");
        let _ = writeln!(s, "# TYPE owsu_consumer_lag gauge");
        for ((t, p), lag) in self.lag.lock().expect("lag lock").iter() {
            let _ = writeln!(
                s,
                "owsu_consumer_lag{{topic=\"{t}\",partition=\"{p}\"}} {lag}"
            );
        }
        s
    }
}

/// A batch made it: files durable, offsets committed.
pub struct BatchCommitted {
    pub messages: usize,
    pub accepted: [u64; 3],
    pub duplicates: u64,
    pub dead_lettered: u64,
    pub files: u64,
    pub latency: Duration,
}

impl BatchCommitted {
    pub fn emit(&self, m: &Metrics) {
        for (i, n) in self.accepted.iter().enumerate() {
            m.accepted[i].fetch_add(*n, Ordering::Relaxed);
        }
        m.duplicates.fetch_add(self.duplicates, Ordering::Relaxed);
        m.dead_lettered
            .fetch_add(self.dead_lettered, Ordering::Relaxed);
        m.files_written.fetch_add(self.files, Ordering::Relaxed);
        m.batches.fetch_add(1, Ordering::Relaxed);
        let micros = self.latency.as_micros() as u64;
        m.batch_micros_sum.fetch_add(micros, Ordering::Relaxed);
        m.batch_micros_max.fetch_max(micros, Ordering::Relaxed);
        tracing::debug!(
            messages = self.messages,
            services = self.accepted[0],
            complaints = self.accepted[1],
            unit_days = self.accepted[2],
            duplicates = self.duplicates,
            dead_lettered = self.dead_lettered,
            files = self.files,
            latency_ms = self.latency.as_millis() as u64,
            "batch committed"
        );
    }
}

/// A message went to the dead-letter topic.
pub struct DeadLettered<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub reason: &'a str,
}

impl DeadLettered<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            reason = self.reason,
            "dead-lettered"
        );
    }
}

/// Serves `GET /metrics` until the process ends.
pub async fn serve(
    addr: std::net::SocketAddr,
    metrics: std::sync::Arc<Metrics>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    loop {
        let (mut sock, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if req.starts_with("GET /metrics") {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", "try /metrics\n".to_owned())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn metrics_endpoint_serves_prometheus_text() {
        let m = Arc::new(Metrics::default());
        BatchCommitted {
            messages: 7,
            accepted: [5, 1, 1],
            duplicates: 1,
            dead_lettered: 0,
            files: 3,
            latency: Duration::from_millis(40),
        }
        .emit(&m);
        m.set_lag("owsu.service-events.v1", 2, 17);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let body = rt.block_on(async {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
            tokio::spawn(serve(addr, m.clone()));
            let mut s = loop {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(s) => break s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        });
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(
            body.contains("owsu_events_accepted_total{kind=\"service\"} 5"),
            "{body}"
        );
        assert!(body.contains("owsu_events_duplicate_total 1"));
        assert!(body.contains("owsu_batches_committed_total 1"));
        assert!(
            body.contains("owsu_consumer_lag{topic=\"owsu.service-events.v1\",partition=\"2\"} 17")
        );
    }
}
