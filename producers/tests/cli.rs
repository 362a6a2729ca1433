//! `owsu-producer` as an office would run it, against real Kafka.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};

const BIN: &str = env!("CARGO_BIN_EXE_owsu-producer");

fn producer(args: &[&str], secret: Option<&Path>) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("OWSU_ID_SECRET").env(
        "OWSU_REFERENCE_DIR",
        owsu_tests::repo_root().join("schemas/reference"),
    );
    if let Some(s) = secret {
        c.arg("--id-secret-file").arg(s);
    }
    c.output().expect("run owsu-producer")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Reads every message of the event topics under `prefix`; returns payloads.
fn consume_all(bootstrap: &str, prefix: &str, expect_at_least: usize) -> Vec<Vec<u8>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{prefix}reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let topics: Vec<String> = owsu_schemas::RecordKind::ALL
        .iter()
        .map(|k| format!("{prefix}{}", k.topic()))
        .collect();
    c.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap();
    let mut out = Vec::new();
    let mut idle_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(300)) {
            Some(m) => {
                out.push(m.unwrap().payload().unwrap().to_vec());
                idle_since = Instant::now();
            }
            None if out.len() >= expect_at_least
                && idle_since.elapsed() > Duration::from_secs(3) =>
            {
                break
            }
            None => {}
        }
    }
    out
}

#[test]
fn csv_with_three_bad_records_publishes_the_rest_and_reports_them() {
    let prefix = owsu_tests::random_prefix("csv");
    owsu_tests::create_topics(&prefix, 3);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("export.csv");
    let mut s = String::from(
        "unit_code,request_id,sector_code,service_code,stage,fee_riel,occurred_at,recorded_at\n",
    );
    for i in 0..1000 {
        let line = match i {
            100 => "KH-0101,R-100,COM,COM-TRADE-LIC,RECEIVED,,2021-03-04T08:00:00+07:00,2021-03-04T08:00:00+07:00".to_owned(), // fee on RECEIVED? no: valid
            _ => format!("KH-0101,R-{i},COM,COM-TRADE-LIC,RECEIVED,,2021-03-04T08:{:02}:00+07:00,2021-03-04T09:00:00+07:00", i % 60),
        };
        s.push_str(&line);
        s.push('\n');
    }
    // Three structural faults: unknown unit (line 11), impossible stage (line 501), money beyond
    // any bound (line 701). Two business anomalies, published and flagged: a fee above the
    // schedule (line 201), recorded before it occurred (line 901).
    let mut lines: Vec<String> = s.lines().map(str::to_owned).collect();
    lines[10] = "KH-9999,R-bad1,COM,COM-TRADE-LIC,RECEIVED,,2021-03-04T08:00:00+07:00,2021-03-04T08:00:00+07:00".into();
    lines[500] = "KH-0101,R-bad2,COM,COM-TRADE-LIC,RESOLVED,,2021-03-04T08:00:00+07:00,2021-03-04T08:00:00+07:00".into();
    lines[700] = "KH-0101,R-bad3,COM,COM-TRADE-LIC,FEE_PAID,99999999999999,2021-03-04T08:00:00+07:00,2021-03-04T08:00:00+07:00".into();
    lines[200] = "KH-0101,R-odd1,COM,COM-TRADE-LIC,FEE_PAID,90000000,2021-03-04T08:00:00+07:00,2021-03-04T08:00:00+07:00".into();
    lines[900] = "KH-0101,R-odd2,COM,COM-TRADE-LIC,RECEIVED,,2021-03-04T08:00:00+07:00,2021-03-04T07:00:00+07:00".into();
    std::fs::write(&csv, lines.join("\n") + "\n").unwrap();
    let secret = dir.path().join("secret");
    owsu_schemas::ids::write_secret_file(&secret, b"csv-test-secret-0123456789").unwrap();
    let out = producer(
        &[
            "publish",
            "--input",
            csv.to_str().unwrap(),
            "--brokers",
            owsu_tests::bootstrap(),
            "--topic-prefix",
            &prefix,
            "--outbox",
            dir.path().join("ob").to_str().unwrap(),
        ],
        Some(&secret),
    );
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "rejections give exit code 2:\n{t}"
    );
    assert!(t.contains("published 997 of 997 valid records"), "{t}");
    assert!(t.contains("rejected 3"), "{t}");
    assert!(
        t.contains("FEE_ABOVE_SCHEDULE 1") && t.contains("RECORDED_BEFORE_OCCURRED 1"),
        "the anomalies are counted in the summary line:\n{t}"
    );
    for (line, field) in [(11, "unit_code"), (501, "stage"), (701, "fee_riel")] {
        assert!(
            t.contains(&format!("export.csv:{line}: field `{field}`")),
            "line {line} / {field} not reported:\n{t}"
        );
    }
    let rejects = std::fs::read_to_string(dir.path().join("export.csv.rejects.jsonl")).unwrap();
    assert_eq!(rejects.lines().count(), 3);
    assert!(rejects.contains("\"line\":501") && rejects.contains("\"field\":\"stage\""));
    // The office's own case numbers never appear in clear, not even in its rejects file.
    assert!(
        !rejects.contains("R-bad") && rejects.contains("(withheld)") && rejects.contains("KH-9999"),
        "{rejects}"
    );
    let payloads = consume_all(owsu_tests::bootstrap(), &prefix, 997);
    assert_eq!(
        payloads.len(),
        997,
        "exactly the valid records reached Kafka"
    );
}

#[test]
fn no_secret_no_run() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.jsonl");
    std::fs::write(&f, "").unwrap();
    let out = producer(&["publish", "--input", f.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no id secret"), "{}", text(&out));
}

/// Reference data is never taken from the working directory: a stray `schemas/reference`
/// there (here a broken one) changes nothing; `--reference-dir` still chooses explicitly.
#[test]
fn reference_data_is_not_looked_up_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let stray = dir.path().join("schemas/reference");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("units.csv"), "not,a,registry\n").unwrap();
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .args(["units", "--province", "KH-25"])
            .args(extra)
            .env_remove("OWSU_REFERENCE_DIR")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("source: built-in"), "{t}");
    let out = run(&["--reference-dir", stray.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("schemas/reference/") && t.contains("cannot read"),
        "{t}"
    );
    assert_eq!(
        t.matches("os error").count(),
        1,
        "the cause is said once: {t}"
    );
}

#[test]
fn a_secret_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.jsonl");
    std::fs::write(&f, "").unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "exposed-secret-0123456789").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = producer(&["publish", "--input", f.to_str().unwrap()], Some(&secret));
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("readable by group or others") && t.contains("chmod 600"),
        "{t}"
    );
    assert!(
        !t.contains("exposed-secret"),
        "the secret is never printed: {t}"
    );
}

/// An export with a byte-order mark, CRLF line ends, a line that is not UTF-8 and one over
/// 1 MiB: the good lines are published, the two bad ones rejected by line number; an empty
/// export publishes nothing and says so.
#[test]
fn awkward_exports_are_read_line_by_line() {
    let prefix = owsu_tests::random_prefix("awkward");
    owsu_tests::create_topics(&prefix, 3);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    owsu_schemas::ids::write_secret_file(&secret, b"awkward-test-secret-0123456789").unwrap();
    let rec = |n: u32| {
        format!(
            r#"{{"kind":"service","unit_code":"KH-0101","request_id":"R-{n}","sector_code":"COM","service_code":"COM-TRADE-LIC","stage":"RECEIVED","occurred_at":"2021-03-04T08:00:00+07:00","recorded_at":"2021-03-04T08:00:00+07:00"}}"#
        )
    };
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(format!("{}\r\n{}\r\n", rec(1), rec(2)).as_bytes());
    bytes.extend_from_slice(b"{\"kind\":\"service\",\"unit_code\":\"KH-01\xFF\"}\r\n");
    bytes.extend(std::iter::repeat_n(b' ', 2 << 20));
    bytes.extend_from_slice(format!("\r\n{}\r\n", rec(5)).as_bytes());
    let f = dir.path().join("awkward.jsonl");
    std::fs::write(&f, &bytes).unwrap();
    let args = |input: &Path| -> Vec<String> {
        [
            "publish",
            "--input",
            input.to_str().unwrap(),
            "--brokers",
            owsu_tests::bootstrap(),
            "--topic-prefix",
            &prefix,
            "--outbox",
            dir.path().join("ob").to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let a = args(&f);
    let out = producer(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        Some(&secret),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("published 3 of 3 valid records"), "{t}");
    assert!(
        t.contains("awkward.jsonl:3: unreadable line: not UTF-8"),
        "{t}"
    );
    assert!(
        t.contains("awkward.jsonl:4: unreadable line: line longer than"),
        "{t}"
    );
    assert_eq!(consume_all(owsu_tests::bootstrap(), &prefix, 3).len(), 3);

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let a = args(&empty);
    let out = producer(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        Some(&secret),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("holds no records"), "{t}");
}

#[test]
fn broker_stopped_mid_publish_then_flush_delivers_every_event_once() {
    let broker = owsu_tests::PrivateBroker::start("midpublish");
    let bootstrap = broker.bootstrap();
    let prefix = "mid.";
    owsu_tests::create_topics_on(&bootstrap, prefix, 3);
    let dir = tempfile::tempdir().unwrap();
    let year = dir.path().join("year.jsonl");
    assert!(producer(
        &[
            "simulate",
            "--year",
            "2021",
            "--scale",
            "0.01",
            "--seed",
            "4",
            "--no-noise",
            "--out",
            year.to_str().unwrap()
        ],
        None
    )
    .status
    .success());
    let input = dir.path().join("office.jsonl");
    let all = std::fs::read_to_string(&year).unwrap();
    // Raw office numbers must never leave the office: give them a shape we can grep for.
    let lines: Vec<String> = all
        .lines()
        .take(100_000)
        .map(|l| {
            l.replace("\"request_id\":\"", "\"request_id\":\"CITIZEN-")
                .replace("\"complaint_id\":\"", "\"complaint_id\":\"CITIZEN-")
        })
        .collect();
    assert_eq!(lines.len(), 100_000);
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let secret = dir.path().join("secret");
    owsu_schemas::ids::write_secret_file(&secret, b"mid-publish-secret-0123456789").unwrap();
    let outbox = dir.path().join("outbox");
    let args = |cmd: &str| -> Vec<String> {
        let mut v: Vec<String> = vec![cmd.into()];
        if cmd == "publish" {
            v.extend([
                "--input".into(),
                input.to_str().unwrap().into(),
                "--chunk".into(),
                "5000".into(),
                // At most 25,000 events a second: the 100,000 take 4 s, so the broker stopped
                // after 1.5 s always stops mid-publish, however fast the machine (at full speed
                // a run once finished first).
                "--rate".into(),
                "25000".into(),
            ]);
        }
        v.extend([
            "--brokers".into(),
            bootstrap.clone(),
            "--topic-prefix".into(),
            prefix.into(),
            "--outbox".into(),
            outbox.to_str().unwrap().into(),
            "--delivery-timeout-secs".into(),
            "5".into(),
        ]);
        v
    };
    let a = args("publish");
    let child = Command::new(BIN)
        .args(&a)
        .arg("--id-secret-file")
        .arg(&secret)
        .env_remove("OWSU_ID_SECRET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    broker.stop();
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "events wait in the outbox:\n{t}"
    );
    assert!(t.contains("owsu-producer flush"), "{t}");
    // Nothing in the outbox or the logs holds a raw office number.
    let mut waiting_bytes = Vec::new();
    for e in std::fs::read_dir(&outbox).unwrap() {
        waiting_bytes.extend(std::fs::read(e.unwrap().path()).unwrap());
    }
    assert!(!waiting_bytes.is_empty(), "some events were waiting");
    assert!(
        !String::from_utf8_lossy(&waiting_bytes).contains("CITIZEN-"),
        "raw ids in the outbox"
    );
    assert!(!t.contains("CITIZEN-"), "raw ids in the logs");

    broker.resume();
    let f = Command::new(BIN).args(args("flush")).output().unwrap();
    assert_eq!(f.status.code(), Some(0), "{}", text(&f));
    let payloads = consume_all(&bootstrap, prefix, 100_000);
    let ids: HashSet<String> = payloads
        .iter()
        .map(|p| owsu_schemas::decode(p).unwrap().identity())
        .collect();
    assert_eq!(
        ids.len(),
        100_000,
        "exactly 100,000 distinct events, none missing ({} messages)",
        payloads.len()
    );
    assert!(
        !payloads
            .iter()
            .any(|p| String::from_utf8_lossy(p).contains("CITIZEN-")),
        "raw ids in Kafka"
    );
}

#[test]
fn simulated_year_counts_per_topic_match_kafkas_own_tools() {
    let prefix = owsu_tests::random_prefix("counts");
    owsu_tests::create_topics(&prefix, 3);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    owsu_schemas::ids::write_secret_file(&secret, b"counts-test-secret-0123456789").unwrap();
    let out = producer(
        &[
            "simulate",
            "--year",
            "2021",
            "--scale",
            "0.005",
            "--brokers",
            owsu_tests::bootstrap(),
            "--topic-prefix",
            &prefix,
            "--outbox",
            dir.path().join("ob").to_str().unwrap(),
        ],
        Some(&secret),
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // "... (service N, complaint N, unit_day N; ..."
    let count = |kind: &str| -> u64 {
        let i = t.find(&format!("{kind} ")).unwrap() + kind.len() + 1;
        t[i..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    for (kind, topic) in [
        ("service", "owsu.service-events.v1"),
        ("complaint", "owsu.complaint-events.v1"),
        ("unit_day", "owsu.unit-days.v1"),
    ] {
        let shell = owsu_tests::kafka_tool(
            "org.apache.kafka.tools.GetOffsetShell",
            &[
                "--bootstrap-server",
                owsu_tests::bootstrap(),
                "--topic",
                &format!("{prefix}{topic}"),
            ],
        );
        let in_kafka: u64 = shell
            .lines()
            .filter_map(|l| l.rsplit(':').next()?.trim().parse::<u64>().ok())
            .sum();
        assert_eq!(
            in_kafka,
            count(kind),
            "{topic}: GetOffsetShell says {in_kafka}\n{shell}\n{t}"
        );
    }
}

#[test]
fn a_kafka_override_cannot_weaken_delivery_or_security_silently_and_no_password_flag_exists() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    owsu_schemas::ids::write_secret_file(&secret, b"cli-override-test-0123456789").unwrap();
    let input = dir.path().join("one.jsonl");
    std::fs::write(
        &input,
        r#"{"kind":"complaint","unit_code":"KH-0101","complaint_id":"C-1","stage":"RECEIVED","occurred_at":"2021-03-01T10:00:00+07:00"}
"#,
    )
    .unwrap();
    let outbox = dir.path().join("outbox");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "publish",
            "--input",
            input.to_str().unwrap(),
            "--outbox",
            outbox.to_str().unwrap(),
            "--brokers",
            "127.0.0.1:1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        producer(
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
            Some(&secret),
        )
    };
    for kv in [
        "acks=1",
        "enable.idempotence=false",
        "security.protocol=plaintext",
    ] {
        let o = run(&["-X", kv]);
        assert!(!o.status.success());
        let t = text(&o);
        assert!(
            t.contains(kv.split('=').next().unwrap()) && t.contains("--unsafe-kafka-options"),
            "{t}"
        );
    }
    // A password is never an argument (it would be visible in `ps`).
    let o = run(&["--sasl-password", "hunter2"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("unexpected argument"), "{}", text(&o));
}

#[test]
fn a_closed_pipe_ends_a_listing_quietly_with_status_0() {
    // As `owsu-producer units | head -1` when head has gone: the reading end is closed before
    // the listing is written, so its first write fails with EPIPE.
    let child = Command::new(BIN)
        .arg("units")
        .env(
            "OWSU_REFERENCE_DIR",
            owsu_tests::repo_root().join("schemas/reference"),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run owsu-producer");
    let mut child = child;
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "a closed pipe is not a failure: {}",
        text(&out)
    );
    assert!(out.stderr.is_empty(), "and says nothing: {}", text(&out));
}
