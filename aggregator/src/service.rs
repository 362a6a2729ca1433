//! The aggregator as a long-running service: the consumer loop of [`crate::pipeline`] on a
//! blocking thread, with what a service needs around it — compaction on a schedule beside it,
//! the metrics and health endpoint, and SIGTERM/SIGINT finishing the current batch and committing
//! before exit (so a stop never leaves a half-written batch: the tables see it whole or not).
//!
//! `owsu-aggregator run` and the umbrella's `owsu demo` both start it through [`run`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use owsu_lake::Store;
use owsu_schemas::reference::Reference;

use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineConfig, RunReport};

/// Runs the aggregator loop on a blocking thread of `rt`, with SIGTERM/SIGINT finishing the
/// current batch and committing before exit.
pub fn run(
    rt: &tokio::runtime::Runtime,
    config: PipelineConfig,
    store: Store,
    reference: Reference,
    metrics_addr: Option<SocketAddr>,
) -> anyhow::Result<RunReport> {
    let metrics = Arc::new(Metrics::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    if let Some(every) = config.compact_interval {
        // Compaction commits change no data and do not conflict with appends, so it runs beside
        // the consumer loop rather than pausing it.
        let store = store.clone();
        let target = config.compact_target_bytes;
        std::thread::Builder::new()
            .name("compaction".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                loop {
                    std::thread::sleep(every);
                    match rt.block_on(crate::maintenance::compact(&store, target, 4)) {
                        Ok(r) => {
                            for (table, c) in r.tables.iter().filter(|(_, c)| c.files_removed > 0) {
                                tracing::info!(
                                    table,
                                    merged = c.files_removed,
                                    version = c.version,
                                    "raw files compacted"
                                );
                            }
                        }
                        Err(e) => tracing::warn!("compaction (tried again in {every:?}): {e:#}"),
                    }
                }
            })?;
    }
    if let Some(addr) = metrics_addr {
        let m = metrics.clone();
        rt.spawn(async move {
            if let Err(e) = crate::metrics::serve(addr, m).await {
                tracing::warn!("metrics endpoint on {addr} failed: {e}");
            }
        });
    }
    {
        let shutdown = shutdown.clone();
        rt.spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("signal received: finishing the current batch");
            shutdown.store(true, Ordering::SeqCst);
        });
    }
    let handle = rt.handle().clone();
    // rdkafka's FutureProducer wants a Tokio context when it is created.
    let _guard = rt.enter();
    let pipeline = Pipeline::new(config, store, reference, metrics, handle)?;
    rt.block_on(tokio::task::spawn_blocking(move || pipeline.run(shutdown)))?
}
