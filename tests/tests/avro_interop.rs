//! Interoperability with a standard Avro library that is not ours (Python fastavro): it decodes
//! what our code encoded using only the `.avsc` files, and we decode what it wrote.

use owsu_schemas::record::{
    ComplaintEvent, ComplaintStage, Event, ServiceEvent, ServiceStage, UnitDayClosed,
};
use uuid::Uuid;

const PY: &str = r#"
import sys, json, glob, io, os
import fastavro
from fastavro.schema import parse_schema, fingerprint, to_parsing_canonical_form

avro_dir, messages = sys.argv[1], sys.argv[2]
by_fp, by_name = {}, {}
for path in sorted(glob.glob(os.path.join(avro_dir, "*.avsc"))):
    parsed = parse_schema(json.load(open(path)))
    # fastavro prints CRC-64-AVRO as the 8 bytes single-object encoding carries.
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    by_fp[fp] = (os.path.basename(path), parsed)
    by_name[os.path.basename(path)] = (fp, parsed)

out = []
for line in open(messages):
    raw = bytes.fromhex(line.strip())
    assert raw[:2] == b"\xc3\x01", "single-object marker"
    name, writer = by_fp[raw[2:10]]
    rec = fastavro.schemaless_reader(io.BytesIO(raw[10:]), writer, None)
    for k, v in list(rec.items()):
        if hasattr(v, "isoformat"):
            rec[k] = v.isoformat()
    out.append({"schema": name, "record": rec})

# One record written by fastavro, for our decoder.
fp, complaint = by_name["complaint_event.v1.avsc"]
buf = io.BytesIO()
fastavro.schemaless_writer(buf, complaint, {
    "event_id": "00000000-0000-4000-8000-00000000abcd", "unit_code": "KH-12", "complaint_id": "f00d",
    "sector_code": "LMC", "stage": "RESOLVED", "occurred_at": 1625097600000, "recorded_at": 1625097660000,
    "supersedes_event_id": None})
print(json.dumps({"decoded": out, "written": (b"\xc3\x01" + fp + buf.getvalue()).hex()}))
"#;

#[test]
fn fastavro_reads_ours_and_we_read_fastavros() {
    let service = ServiceEvent {
        event_id: Uuid::from_u128(0xa1),
        unit_code: "KH-0203".into(),
        request_id: "0123456789abcdef0123456789abcdef".into(),
        sector_code: "LMC".into(),
        service_code: "LMC-DEMOLITION".into(),
        stage: ServiceStage::FeePaid,
        fee_riel: Some(-50_000),
        channel: "online".into(),
        occurred_at: 1_625_097_600_123,
        recorded_at: 1_625_184_000_456,
        supersedes_event_id: Some(Uuid::from_u128(0xb2)),
        window_no: Some(4),
    };
    let complaint = ComplaintEvent {
        event_id: Uuid::from_u128(0xc3),
        unit_code: "KH-17".into(),
        complaint_id: "feedbeef".into(),
        sector_code: None,
        stage: ComplaintStage::MoreInfoRequired,
        occurred_at: 1_625_097_600_000,
        recorded_at: 1_625_097_600_000,
        supersedes_event_id: None,
    };
    let day = UnitDayClosed {
        unit_code: "KH-1701".into(),
        date: chrono::NaiveDate::from_ymd_opt(2021, 7, 1).unwrap(),
        services_recorded: 42,
        complaints_recorded: 3,
        closed_at: 1_625_133_600_000,
    };
    let set = owsu_schemas::avro::schema_set();
    let messages = [
        set.encode(&Event::Service(service.clone())).unwrap(),
        set.encode_version(&Event::Service(service.clone()), 1)
            .unwrap(),
        set.encode(&Event::Complaint(complaint.clone())).unwrap(),
        set.encode(&Event::UnitDay(day.clone())).unwrap(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("messages.hex");
    std::fs::write(
        &file,
        messages
            .iter()
            .map(|m| format!("{}\n", hex(m)))
            .collect::<String>(),
    )
    .unwrap();
    let avro_dir = owsu_tests::repo_root().join("schemas/avro");
    let out = owsu_tests::run_python(PY, &[avro_dir.to_str().unwrap(), file.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let decoded = v["decoded"].as_array().unwrap();

    // fastavro picked the right writer schema by fingerprint and got every field.
    assert_eq!(decoded[0]["schema"], "service_event.v2.avsc");
    let r = &decoded[0]["record"];
    assert_eq!(r["event_id"], service.event_id.to_string());
    assert_eq!(r["request_id"], service.request_id);
    assert_eq!(r["stage"], "FEE_PAID");
    assert_eq!(r["fee_riel"], -50_000);
    assert_eq!(r["window_no"], 4);
    assert_eq!(r["supersedes_event_id"], Uuid::from_u128(0xb2).to_string());
    assert!(
        r["occurred_at"]
            .as_str()
            .unwrap()
            .starts_with("2021-07-01T00:00:00.123"),
        "{}",
        r["occurred_at"]
    );
    assert_eq!(decoded[1]["schema"], "service_event.v1.avsc");
    assert!(
        decoded[1]["record"].get("window_no").is_none(),
        "v1 has no window_no"
    );
    assert_eq!(decoded[2]["record"]["stage"], "MORE_INFO_REQUIRED");
    assert!(decoded[2]["record"]["sector_code"].is_null());
    assert_eq!(decoded[3]["record"]["date"], "2021-07-01");
    assert_eq!(decoded[3]["record"]["services_recorded"], 42);

    // And our decoder reads what fastavro wrote, with only the schema files in common.
    let written = unhex(v["written"].as_str().unwrap());
    let Event::Complaint(c) = owsu_schemas::decode(&written).unwrap() else {
        panic!("a complaint")
    };
    assert_eq!(
        c.event_id,
        Uuid::parse_str("00000000-0000-4000-8000-00000000abcd").unwrap()
    );
    assert_eq!(
        (c.unit_code.as_str(), c.stage, c.sector_code.as_deref()),
        ("KH-12", ComplaintStage::Resolved, Some("LMC"))
    );
    assert_eq!(
        (c.occurred_at, c.recorded_at),
        (1_625_097_600_000, 1_625_097_660_000)
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
