//! Telemetry as typed events: each thing worth counting is a small struct that both logs
//! (through `tracing`) and updates the metrics, so logs and metrics agree. `/metrics` serves
//! them in the OpenMetrics text format (which Prometheus scrapes), encoded by
//! `prometheus-client` rather than written by hand.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use owsu_schemas::record::RecordKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: i32,
}

/// Seconds: from a tenth of a second (a live batch) to an hour (a catch-up of history).
const SECONDS_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Process-wide metrics, registered once.
pub(crate) struct Metrics {
    registry: Registry,
    accepted: Family<KindLabel, Counter>,
    duplicates: Counter,
    dead_lettered: Counter,
    batches: Counter,
    files_written: Counter,
    batch_latency: Histogram,
    freshness_seconds: Histogram,
    lag: Family<PartitionLabels, Gauge>,
    /// Topic partitions this instance holds (the three event topics count separately).
    assigned: Gauge,
    /// 1 while the object store fails and consuming is stopped, else 0.
    store_unavailable: Gauge,
    /// Attempts to reach the store again after it failed.
    store_retries: Counter,
    /// Kafka requests (metadata, offsets) retried after a broker or leader failure.
    kafka_retries: Counter,
    /// Event topic partitions whose in-sync replicas are fewer than their replicas.
    under_replicated: Gauge,
    /// When the consume loop last went round (Unix milliseconds; 0: not yet), for liveness.
    heartbeat_ms: AtomicI64,
    /// Milliseconds from each message's Kafka timestamp (when its producer sent it) to the
    /// commit that put it in the summaries, exactly (for the p50/p99 the run logs at its end).
    freshness: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

/// How long the consume loop may go without turning before the process counts as stalled: a
/// large catch-up batch (collect, land, summarise, commit) takes seconds, never minutes.
pub(crate) const STALL: Duration = Duration::from_secs(120);

/// What `/health/live` and `/health/ready` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Health {
    /// The consume loop went round within [`STALL`].
    pub live: bool,
    /// Live and holding at least one topic partition.
    pub ready: bool,
}

/// Event-to-summary freshness so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Freshness {
    /// Messages measured (0: none committed to the summaries yet).
    pub events: u64,
    /// Median, in milliseconds.
    pub p50_ms: u64,
    /// 99th percentile, in milliseconds.
    pub p99_ms: u64,
    /// Largest, in milliseconds.
    pub max_ms: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("owsu");
        let accepted = Family::<KindLabel, Counter>::default();
        registry.register(
            "events_accepted",
            "Events decoded, validated and landed, by record kind (duplicates included)",
            accepted.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let duplicates = counter(
            &mut registry,
            "events_duplicate",
            "Events whose event_id was already counted",
        );
        let dead_lettered = counter(
            &mut registry,
            "events_dead_lettered",
            "Messages sent to the dead-letter topic",
        );
        let batches = counter(
            &mut registry,
            "batches_committed",
            "Batches whose files were durable and offsets committed",
        );
        let files_written = counter(
            &mut registry,
            "files_written",
            "Raw and summary files written to the object store",
        );
        let batch_latency = Histogram::new(SECONDS_BUCKETS);
        registry.register(
            "batch_latency_seconds",
            "Time from a batch's first message to its commit",
            batch_latency.clone(),
        );
        let freshness_seconds = Histogram::new(SECONDS_BUCKETS);
        registry.register(
            "freshness_seconds",
            "From a message's Kafka timestamp to the commit that put it in the summaries",
            freshness_seconds.clone(),
        );
        let lag = Family::<PartitionLabels, Gauge>::default();
        registry.register(
            "consumer_lag",
            "Messages behind the partition's end (from librdkafka statistics)",
            lag.clone(),
        );
        let assigned = Gauge::default();
        registry.register(
            "assigned_partitions",
            "Topic partitions this instance holds",
            assigned.clone(),
        );
        let store_unavailable = Gauge::default();
        registry.register(
            "store_unavailable",
            "1 while the object store fails and consuming is stopped (the batch in hand is dropped and read again)",
            store_unavailable.clone(),
        );
        let store_retries = counter(
            &mut registry,
            "store_retries",
            "Attempts to reach the object store again after it failed",
        );
        let kafka_retries = counter(
            &mut registry,
            "kafka_request_retries",
            "Kafka metadata and offset requests retried after a broker or leader failure",
        );
        let under_replicated = Gauge::default();
        registry.register(
            "under_replicated_partitions",
            "Event topic partitions whose in-sync replicas are fewer than their replicas, in the metadata this client sees (every 30 s)",
            under_replicated.clone(),
        );
        Metrics {
            registry,
            under_replicated,
            assigned,
            store_unavailable,
            store_retries,
            kafka_retries,
            heartbeat_ms: AtomicI64::new(0),
            accepted,
            duplicates,
            dead_lettered,
            batches,
            files_written,
            batch_latency,
            freshness_seconds,
            lag,
            freshness: Mutex::new(None),
        }
    }
}

impl Metrics {
    /// Sets the consumer lag of one topic partition, in messages.
    pub(crate) fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .get_or_create(&PartitionLabels {
                topic: topic.to_owned(),
                partition,
            })
            .set(lag);
    }

    /// Sets how many topic partitions this instance holds (readiness needs at least one).
    pub(crate) fn set_assigned(&self, partitions: usize) {
        self.assigned.set(partitions as i64);
    }

    /// The consume loop went round (called once per iteration, at least every few seconds
    /// while the process is healthy; a batch in progress can take longer).
    pub(crate) fn beat(&self) {
        self.heartbeat_ms
            .store(owsu_schemas::time::now_millis(), Ordering::Relaxed);
    }

    /// The object store failed (`true`) or answers again (`false`).
    pub(crate) fn set_store_unavailable(&self, unavailable: bool) {
        self.store_unavailable.set(i64::from(unavailable));
    }

    /// One more attempt to reach the failed store.
    pub(crate) fn store_retry(&self) {
        self.store_retries.inc();
    }

    /// Sets how many event topic partitions are under-replicated.
    pub(crate) fn set_under_replicated(&self, partitions: usize) {
        self.under_replicated.set(partitions as i64);
    }

    /// One more Kafka request retried.
    pub(crate) fn kafka_retry(&self) {
        self.kafka_retries.inc();
    }

    /// Liveness and readiness: live while the consume loop went round within [`STALL`];
    /// ready when live, holding partitions and the object store answers.
    pub(crate) fn health(&self) -> Health {
        let beat = self.heartbeat_ms.load(Ordering::Relaxed);
        let live = beat > 0
            && owsu_schemas::time::now_millis().saturating_sub(beat) < STALL.as_millis() as i64;
        Health {
            live,
            ready: live && self.assigned.get() > 0 && self.store_unavailable.get() == 0,
        }
    }

    /// Records the freshness of a committed batch's messages (milliseconds each).
    pub(crate) fn record_freshness(&self, millis: impl IntoIterator<Item = u64>) {
        let mut h = self.freshness.lock().expect("freshness lock");
        let h = h.get_or_insert_with(|| {
            // 1 ms to a day, 3 significant digits.
            hdrhistogram::Histogram::new_with_bounds(1, 86_400_000, 3).expect("valid bounds")
        });
        for ms in millis {
            h.saturating_record(ms.max(1));
            self.freshness_seconds.observe(ms as f64 / 1e3);
        }
    }

    /// Freshness percentiles of every message recorded so far (all zero before the first).
    pub(crate) fn freshness(&self) -> Freshness {
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

    /// The OpenMetrics text exposition.
    pub(crate) fn render(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String cannot fail");
        s
    }
}

/// A batch was processed: applied to the state, what was due flushed to the lake, its offsets
/// committed to Kafka.
pub(crate) struct BatchCommitted {
    /// Messages in the batch, good and bad.
    pub messages: usize,
    /// Valid events, by record kind in [`RecordKind::ALL`] order (duplicates included).
    pub accepted: [u64; 3],
    /// Events the state already held with the same content (and day closes no newer than the
    /// one held).
    pub duplicates: u64,
    /// Messages sent to the dead-letter topic: bad records and events the state refused.
    pub dead_lettered: u64,
    /// Files the flushes after this batch wrote (raw and summary; 0 when none was due).
    pub files: u64,
    /// From the start of processing (messages collected) to the Kafka offset commit.
    pub(crate) latency: Duration,
}

impl BatchCommitted {
    /// Adds the batch to the counters and the latency histogram, and logs it at debug level.
    pub(crate) fn emit(&self, m: &Metrics) {
        for (kind, n) in RecordKind::ALL.iter().zip(self.accepted) {
            m.accepted
                .get_or_create(&KindLabel {
                    kind: kind.as_str(),
                })
                .inc_by(n);
        }
        m.duplicates.inc_by(self.duplicates);
        m.dead_lettered.inc_by(self.dead_lettered);
        m.files_written.inc_by(self.files);
        m.batches.inc();
        m.batch_latency.observe(self.latency.as_secs_f64());
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
pub(crate) struct DeadLettered<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Offset in the source partition.
    pub offset: i64,
    /// Why it was refused.
    pub reason: &'a str,
}

impl DeadLettered<'_> {
    /// Logs it as a warning (the counter is updated by [`BatchCommitted::emit`]).
    pub(crate) fn emit(&self) {
        tracing::warn!(
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            reason = self.reason,
            "dead-lettered"
        );
    }
}

/// Serves `GET /metrics` (OpenMetrics), `GET /health/live` and `GET /health/ready` (200 or
/// 503, for an orchestrator's probes) until the process ends.
pub(crate) async fn serve(
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let status = |ok: bool| {
        if ok {
            (StatusCode::OK, "ok\n")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "not yet, or stalled\n")
        }
    };
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(m): axum::extract::State<Arc<Metrics>>| async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.render(),
                    )
                },
            ),
        )
        .route(
            "/health/live",
            get(
                move |axum::extract::State(m): axum::extract::State<Arc<Metrics>>| async move {
                    status(m.health().live)
                },
            ),
        )
        .route(
            "/health/ready",
            get(
                move |axum::extract::State(m): axum::extract::State<Arc<Metrics>>| async move {
                    status(m.health().ready)
                },
            ),
        )
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics on http://{addr}/metrics, probes on /health/live and /health/ready");
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// `GET path` over a plain TCP connection; the whole response.
    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = loop {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[test]
    fn metrics_and_health_endpoints_answer() {
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
        m.record_freshness([300, 1_500, 4_000]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
            tokio::spawn(serve(addr, m.clone()));

            let body = get(addr, "/metrics").await;
            assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
            assert!(
                body.contains("owsu_events_accepted_total{kind=\"service\"} 5"),
                "{body}"
            );
            assert!(body.contains("owsu_events_duplicate_total 1"));
            assert!(body.contains("owsu_batches_committed_total 1"));
            assert!(body.contains(
                "owsu_consumer_lag{topic=\"owsu.service-events.v1\",partition=\"2\"} 17"
            ));
            // Histograms: the 40 ms batch in the first bucket; freshness 0.3 s, 1.5 s and 4 s.
            assert!(
                body.contains("owsu_batch_latency_seconds_count 1"),
                "{body}"
            );
            assert!(
                body.contains("owsu_batch_latency_seconds_bucket{le=\"0.1\"} 1"),
                "{body}"
            );
            assert!(body.contains("owsu_freshness_seconds_count 3"), "{body}");
            assert!(
                body.contains("owsu_freshness_seconds_bucket{le=\"2.0\"} 2"),
                "{body}"
            );
            assert!(
                body.trim_end().ends_with("# EOF"),
                "OpenMetrics ends with # EOF"
            );

            // Before the consume loop turns: neither live nor ready.
            assert!(get(addr, "/health/live").await.starts_with("HTTP/1.1 503"));
            m.beat();
            assert!(get(addr, "/health/live").await.starts_with("HTTP/1.1 200"));
            // Live but holding no partition: not ready.
            assert!(get(addr, "/health/ready").await.starts_with("HTTP/1.1 503"));
            m.set_assigned(3);
            assert!(get(addr, "/health/ready").await.starts_with("HTTP/1.1 200"));
            assert!(get(addr, "/nowhere").await.starts_with("HTTP/1.1 404"));
        });
        // A loop that stopped turning is not live.
        m.heartbeat_ms.store(
            owsu_schemas::time::now_millis() - STALL.as_millis() as i64 - 1,
            Ordering::Relaxed,
        );
        assert_eq!(
            m.health(),
            Health {
                live: false,
                ready: false
            }
        );
    }
}
