//! Commits on a real local Delta table: offsets recorded in txn actions, fencing of a writer
//! whose partition moved, replacement of files, time travel, and the reader's snapshot.

use std::collections::HashMap;

use owsu_lake::tables::PROCESSING_TIMES;
use owsu_lake::{app_id, CommitKind, LakeTable, Snapshot, Store};
use polars::prelude::*;

fn rows(unit: &str, secs: &[i64]) -> DataFrame {
    let n = secs.len();
    let df = df!(
        "date" => vec![18_700i32; n],
        "unit_code" => vec![unit; n],
        "province_code" => vec!["KH-01"; n],
        "level" => vec!["district"; n],
        "sector_code" => vec!["COM"; n],
        "service_code" => vec!["COM-TRADE-LIC"; n],
        "processing_seconds" => secs.to_vec(),
        "processing_days" => secs.iter().map(|s| *s as f64 / 86_400.0).collect::<Vec<_>>(),
        "received_date" => vec![18_699i32; n],
    )
    .unwrap();
    df.lazy()
        .with_columns([
            col("date").cast(DataType::Date),
            col("received_date").cast(DataType::Date),
        ])
        .collect()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_fence_replace_and_time_travel() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    let mut a = LakeTable::open_or_create(&store, &PROCESSING_TIMES)
        .await
        .unwrap();
    let mut b = LakeTable::open_or_create(&store, &PROCESSING_TIMES)
        .await
        .unwrap();
    assert_eq!(a.version(), 0);
    let app = app_id("t.owsu.service-events.v1", 3);

    // Writer A commits offsets 0..=9 of partition 3.
    let add = a
        .write_file("a1.parquet", rows("KH-0101", &[86_400, 3_600]))
        .await
        .unwrap();
    let v1 = a
        .commit(
            vec![deltalake::kernel::Action::Add(add)],
            &HashMap::from([(app.clone(), 9)]),
            &HashMap::from([(app.clone(), None)]),
            CommitKind::Write,
        )
        .await
        .unwrap();
    assert_eq!(v1, 1);
    assert_eq!(a.txn_version(&app).await.unwrap(), Some(9));

    // Writer B still believes the partition is new: it is fenced, and nothing is written.
    let add = b
        .write_file("b1.parquet", rows("KH-0101", &[60]))
        .await
        .unwrap();
    let e = b
        .commit(
            vec![deltalake::kernel::Action::Add(add)],
            &HashMap::from([(app.clone(), 5)]),
            &HashMap::from([(app.clone(), None)]),
            CommitKind::Write,
        )
        .await
        .unwrap_err();
    assert!(e.is_fenced(), "{e}");
    assert_eq!(b.version(), 1);
    assert_eq!(b.txn_version(&app).await.unwrap(), Some(9));

    // A replaces its file (a summary rewritten): one file stays active.
    let old = a.files().await.unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].rows, Some(2));
    let add = a
        .write_file("a2.parquet", rows("KH-0101", &[86_400, 3_600, 7_200]))
        .await
        .unwrap();
    let mut actions = vec![LakeTable::remove(&old[0], true)];
    actions.push(deltalake::kernel::Action::Add(add));
    a.commit(
        actions,
        &HashMap::from([(app.clone(), 19)]),
        &HashMap::from([(app.clone(), Some(9))]),
        CommitKind::Write,
    )
    .await
    .unwrap();

    let snap = Snapshot::open(&store, &[&PROCESSING_TIMES], None)
        .await
        .unwrap();
    assert_eq!(snap.versions().0["processing_times"], 2);
    let df = snap.read(&PROCESSING_TIMES, None, None).await.unwrap();
    assert_eq!(df.height(), 3);
    assert_eq!(
        df.column("processing_seconds")
            .unwrap()
            .i64()
            .unwrap()
            .sum(),
        Some(97_200)
    );
    // Time travel: version 1 still reads the first file.
    let old = owsu_lake::snapshot::Versions([("processing_times".to_owned(), 1)].into());
    let snap1 = Snapshot::open(&store, &[&PROCESSING_TIMES], Some(&old))
        .await
        .unwrap();
    assert_eq!(
        snap1
            .read(&PROCESSING_TIMES, None, None)
            .await
            .unwrap()
            .height(),
        2
    );
    // Date statistics prune files outside the range asked for.
    let d = chrono::NaiveDate::from_ymd_opt(2021, 3, 15).unwrap();
    assert!(snap
        .files(&PROCESSING_TIMES, Some(d), None)
        .await
        .unwrap()
        .is_empty());
}

/// Two writers creating one object: the first create wins and the second learns it (what keeps
/// two aggregators starting together on one lake id).
#[tokio::test]
async fn a_create_only_put_keeps_the_first_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    assert!(store
        .put_new("state/lake-id", b"first".to_vec())
        .await
        .unwrap());
    assert!(!store
        .put_new("state/lake-id", b"second".to_vec())
        .await
        .unwrap());
    assert_eq!(store.get("state/lake-id").await.unwrap().as_ref(), b"first");
}
