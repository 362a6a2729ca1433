//! Offsets behind Kafka's log start: events deleted (retention passed while no aggregator ran)
//! before the lake held them.
//!
//! Left alone, the consumer would meet "offset out of range" and librdkafka would reset to the
//! earliest offset it still has, skipping those events without a word. Instead a partition whose
//! next offset is gone stops the aggregator with an error naming it, unless an operator accepts
//! the loss (`--accept-gaps-by NAME`): then it resumes at the log start and the gap is appended
//! to the lake's `audit/offset_gaps` table, where reports find it. A gap already recorded (the
//! aggregator stopped again before its first commit past it) is not asked about twice.

use owsu_lake::tables::OFFSET_GAPS;
use owsu_lake::{LakeTable, Snapshot, Store};
use polars::prelude::*;

/// Events of one partition that Kafka no longer has and the lake never held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gap {
    /// Topic of the partition.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Last offset the lake held (`None`: none).
    pub lake_offset: Option<i64>,
    /// First offset Kafka still has.
    pub log_start: i64,
}

impl Gap {
    /// The gap between the lake's next offset and Kafka's log start, if there is one.
    pub(crate) fn between(
        topic: &str,
        partition: i32,
        lake_offset: Option<i64>,
        log_start: i64,
    ) -> Option<Gap> {
        let next = lake_offset.map_or(0, |o| o + 1);
        (next < log_start).then(|| Gap {
            topic: topic.to_owned(),
            partition,
            lake_offset,
            log_start,
        })
    }

    /// Offsets never read: from the lake's next offset to the log start.
    pub(crate) fn events_lost(&self) -> i64 {
        self.log_start - self.lake_offset.map_or(0, |o| o + 1)
    }

    /// The error the aggregator stops with when nobody accepted the gap.
    pub(crate) fn refusal(gaps: &[Gap]) -> String {
        let list: Vec<String> = gaps
            .iter()
            .map(|g| {
                format!(
                    "{}/{}: the lake holds offsets up to {}, Kafka's log now starts at {} ({} events deleted before they were counted)",
                    g.topic,
                    g.partition,
                    g.lake_offset.map_or("none".to_owned(), |o| o.to_string()),
                    g.log_start,
                    g.events_lost()
                )
            })
            .collect();
        format!(
            "committed offsets fall behind Kafka's log start (retention passed while no aggregator ran):\n  {}\n\
             Nothing was skipped. Either publish the offices' exports of that period again \
             (owsu-producer publish), or accept the loss with --accept-gaps-by NAME: the aggregator \
             then resumes at the log start and records each gap, with NAME, in audit/offset_gaps.",
            list.join("\n  ")
        )
    }
}

/// What of `gaps` no operator accepted yet: a gap recorded before (the aggregator stopped again
/// before a commit took the partition past it) is left out, and the part of a gap beyond one
/// recorded before (retention deleted more since) starts where that one ended, so no lost event
/// is recorded twice.
pub(crate) async fn unaccepted(store: &Store, gaps: Vec<Gap>) -> anyhow::Result<Vec<Gap>> {
    let snapshot = Snapshot::open(store, &[&OFFSET_GAPS], None).await?;
    let recorded = owsu_lake::audit::offset_gaps(&snapshot).await?;
    Ok(gaps
        .into_iter()
        .filter_map(|g| {
            // The furthest log start accepted by a recorded gap that spans the lake's next
            // offset (it began at or before it and ended after it).
            let held = g.lake_offset.unwrap_or(-1);
            let accepted = recorded
                .iter()
                .filter(|r| {
                    r.topic == g.topic
                        && r.partition == g.partition
                        && r.lake_offset.unwrap_or(-1) <= held
                })
                .map(|r| r.log_start)
                .filter(|&s| s > held + 1)
                .max();
            match accepted {
                Some(s) if s >= g.log_start => None,
                Some(s) => Some(Gap {
                    lake_offset: Some(s - 1),
                    ..g
                }),
                None => Some(g),
            }
        })
        .collect())
}

/// Appends `gaps` to `audit/offset_gaps` in one commit, accepted by `by` for `group`.
pub(crate) async fn record(
    store: &Store,
    gaps: &[Gap],
    group: &str,
    by: &str,
) -> anyhow::Result<()> {
    let now_us = chrono::Utc::now().timestamp_micros();
    let n = gaps.len();
    let df = DataFrame::new_infer_height(vec![
        Column::new(
            "topic".into(),
            gaps.iter().map(|g| g.topic.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "kafka_partition".into(),
            gaps.iter().map(|g| g.partition).collect::<Vec<_>>(),
        ),
        Column::new(
            "lake_offset".into(),
            gaps.iter().map(|g| g.lake_offset).collect::<Vec<_>>(),
        ),
        Column::new(
            "log_start".into(),
            gaps.iter().map(|g| g.log_start).collect::<Vec<_>>(),
        ),
        Column::new(
            "events_lost".into(),
            gaps.iter().map(Gap::events_lost).collect::<Vec<_>>(),
        ),
        Column::new("group_id".into(), vec![group; n]),
        Column::new("accepted_by".into(), vec![by; n]),
        Column::new("accepted_at".into(), vec![now_us; n]),
    ])?;
    LakeTable::append(store, &OFFSET_GAPS, df).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_only_offsets_kafka_deleted_before_the_lake_held_them() {
        assert_eq!(Gap::between("t", 0, Some(9), 10), None);
        assert_eq!(Gap::between("t", 0, Some(20), 10), None);
        assert_eq!(Gap::between("t", 0, None, 0), None);
        let g = Gap::between("t", 3, Some(9), 15).expect("a gap");
        assert_eq!(g.events_lost(), 5);
        let fresh = Gap::between("t", 1, None, 7).expect("a gap");
        assert_eq!(fresh.events_lost(), 7);
        let msg = Gap::refusal(&[g]);
        assert!(
            msg.contains("t/3") && msg.contains("5 events") && msg.contains("--accept-gaps-by")
        );
    }
}
