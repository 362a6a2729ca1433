//! The secure local deployment that `owsu demo --secure` and `owsu bench` run on: the project's
//! Kafka in secure mode (TLS with a private CA, SASL/SCRAM-SHA-512, every request authorised by
//! ACL), one principal for the simulated offices and one for the aggregator with the ACLs of
//! `kafka.sh user add`, an Ed25519 key for every unit of the registry, and a reference
//! directory whose `keys.csv` lists their public keys, so the aggregator can require
//! signatures.
//!
//! The demo plays all 228 offices from one process, so its offices share one Kafka principal;
//! each office still signs with its own unit's key, which is what stops one office writing as
//! another. In production every office has its own principal (README, "Secure mode").

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use owsu_runtime::kafka::KafkaArgs;
use owsu_schemas::reference::Reference;
use owsu_schemas::signing::{Keyring, OfficeKey};

/// Client port of the secure local broker (its controller listens on the next port). Not the
/// plaintext broker's 9092, so both can run at once (the bench compares them).
pub(crate) const DEFAULT_PORT: u16 = 9192;

/// A Kafka principal and the 0600 file holding its password.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The SCRAM user name (the ACLs' principal `User:<name>`).
    pub name: String,
    /// Its password, mode 0600.
    pub password_file: PathBuf,
}

/// What the producer and the aggregator need to run on the secure broker.
#[derive(Debug, Clone)]
pub struct Secure {
    /// Pass as `--brokers`.
    pub bootstrap: String,
    port: u16,
    /// The broker's state directory (`OWSU_KAFKA_HOME` of kafka.sh).
    state: PathBuf,
    /// The private CA's certificate, which clients trust.
    pub ca: PathBuf,
    /// The principal every simulated office publishes as (write to the event topics only).
    pub offices: Principal,
    /// The aggregator's principal (read the event topics in its group, write the dead-letter topic).
    pub aggregator: Principal,
    /// One private key file per unit (`<unit>.key`, mode 0600).
    pub(crate) keys_dir: PathBuf,
    /// The reference data with every unit's public key in `keys.csv`.
    pub reference_dir: PathBuf,
}

impl Secure {
    /// How `who` connects: TLS against the private CA, SCRAM-SHA-512 with its password file,
    /// topics under `prefix`.
    pub fn kafka(&self, who: &Principal, prefix: &str) -> KafkaArgs {
        KafkaArgs {
            security_protocol: "sasl_ssl".into(),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some(who.name.clone()),
            sasl_password_file: Some(who.password_file.clone()),
            ssl_ca_location: Some(self.ca.to_string_lossy().into_owned()),
            ..KafkaArgs::local(&self.bootstrap, prefix)
        }
    }

    /// Every unit's signing key, for a publisher that plays all the offices.
    pub fn keyring(&self) -> anyhow::Result<Keyring> {
        Ok(Keyring::read_dir(&self.keys_dir)?)
    }

    /// Security arguments of `who` (flags of the producer's and aggregator's `KafkaArgs`;
    /// `--brokers` [`Secure::bootstrap`] goes with them), for a process started from the command
    /// line.
    pub(crate) fn client_args(&self, who: &Principal) -> Vec<String> {
        [
            "--security-protocol",
            "sasl_ssl",
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            &who.name,
            "--sasl-password-file",
            &who.password_file.to_string_lossy(),
            "--ssl-ca-location",
            &self.ca.to_string_lossy(),
        ]
        .map(String::from)
        .to_vec()
    }

    /// Arguments of `owsu-aggregator run`: the aggregator's principal, signatures required
    /// against the keys of [`Secure::reference_dir`].
    pub(crate) fn aggregator_args(&self) -> Vec<String> {
        let mut a = self.client_args(&self.aggregator);
        a.extend(
            [
                "--signatures",
                "required",
                "--reference-dir",
                &self.reference_dir.to_string_lossy(),
            ]
            .map(String::from),
        );
        a
    }
}

impl Secure {
    /// Stops the broker (its state stays for the next start).
    pub fn stop(&self) -> anyhow::Result<()> {
        kafka_sh(self.port, &self.state, "", 1, &["stop"]).map(drop)
    }
}

/// Where kafka.sh keeps the state of the broker on `port` by default:
/// `$OWSU_CACHE/kafka-run/<port>` (`$OWSU_CACHE` defaults to `~/.cache/owsu`).
pub(crate) fn default_state(port: u16) -> anyhow::Result<PathBuf> {
    let cache = match std::env::var_os("OWSU_CACHE") {
        Some(c) => PathBuf::from(c),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set (or set OWSU_CACHE)")?)
                .join(".cache/owsu")
        }
    };
    Ok(cache.join("kafka-run").join(port.to_string()))
}

/// Runs `infra/kafka/kafka.sh ARGS` against the secure broker on `port`, for topics under
/// `prefix`; returns its standard output.
fn kafka_sh(
    port: u16,
    state: &Path,
    prefix: &str,
    partitions: i32,
    args: &[&str],
) -> anyhow::Result<String> {
    let root = crate::demo::repo_root()
        .context("infra/kafka/kafka.sh not found: run from the repository")?;
    let out = Command::new("bash")
        .arg(root.join("infra/kafka/kafka.sh"))
        .args(args)
        .env("OWSU_KAFKA_PORT", port.to_string())
        .env("OWSU_KAFKA_HOME", state)
        .env("OWSU_KAFKA_TOPIC_PREFIX", prefix)
        .env("OWSU_KAFKA_PARTITIONS", partitions.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running infra/kafka/kafka.sh")?;
    anyhow::ensure!(
        out.status.success(),
        "infra/kafka/kafka.sh {} failed (see above)",
        args.join(" ")
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts (or reuses) the secure broker on `port` with its state in `state`, creates the topics
/// under `prefix`, the two principals (the aggregator's allowed `group`), and (once per `dir`) a
/// key per unit of `reference` with the reference directory that publishes them.
pub fn start(
    port: u16,
    state: &Path,
    prefix: &str,
    partitions: i32,
    group: &str,
    dir: &Path,
    reference: &Reference,
) -> anyhow::Result<Secure> {
    let sh = |args: &[&str]| kafka_sh(port, state, prefix, partitions, args);
    let started = sh(&["start", "--secure"])?;
    if let Some(line) = started.lines().find(|l| l.contains("listening")) {
        println!("{line}");
    }
    // `user add` again on a later run only renews the password and re-adds the same ACLs.
    let (offices, aggregator) = ("owsu-demo-offices", "owsu-demo-aggregator");
    sh(&["user", "add", offices, "--role", "office"])?;
    sh(&[
        "user",
        "add",
        aggregator,
        "--role",
        "aggregator",
        "--group",
        group,
    ])?;
    let principal = |name: &str| Principal {
        name: name.to_owned(),
        password_file: state.join("users").join(format!("{name}.password")),
    };
    let keys_dir = dir.join("keys");
    let reference_dir = dir.join("reference");
    write_keys(reference, &keys_dir, &reference_dir)?;
    println!(
        "principals {offices} (office ACLs) and {aggregator} (aggregator ACLs, group {group}); \
         {} signing keys in {}",
        reference.registry.units.len(),
        keys_dir.display()
    );
    Ok(Secure {
        bootstrap: format!("127.0.0.1:{port}"),
        port,
        state: state.to_owned(),
        ca: state.join("tls/ca.pem"),
        offices: principal(offices),
        aggregator: principal(aggregator),
        keys_dir,
        reference_dir,
    })
}

/// A key per unit into `keys_dir` and a copy of the reference data with their public keys
/// into `reference_dir`, unless an earlier run made them.
pub fn write_keys(
    reference: &Reference,
    keys_dir: &Path,
    reference_dir: &Path,
) -> anyhow::Result<()> {
    if reference_dir.join("keys.csv").is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(keys_dir)?;
    std::fs::create_dir_all(reference_dir)?;
    let today = chrono::Utc::now().date_naive();
    let mut csv = String::from("unit_code,public_key,valid_from,valid_until\n");
    for unit in &reference.registry.units {
        let key = OfficeKey::generate(&unit.code);
        key.write(&keys_dir.join(format!("{}.key", unit.code)))?;
        csv.push_str(&key.keys_csv_line(today));
        csv.push('\n');
    }
    for (name, text) in reference.source_files()? {
        std::fs::write(reference_dir.join(name), text)?;
    }
    // Written last: its presence says the directory is complete.
    std::fs::write(reference_dir.join("keys.csv"), csv)?;
    Ok(())
}
