//! A three-node Kafka cluster of a test's own (`infra/kafka/kafka.sh start --brokers 3`, the
//! command the README gives), for the fault suite: nodes killed, hung and restarted while the
//! pipeline runs. Topics have replication factor 3 and `min.insync.replicas=2`, so a write
//! acknowledged with `acks=all` is on two nodes.
//!
//! The state is in `$OWSU_CACHE/test-private/<name>-<pid>`; the cluster is stopped and its
//! state removed when the [`Cluster`] is dropped.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::{cache_dir, create_topics_replicated, repo_root};

/// Nodes of the cluster.
pub const NODES: u32 = 3;

/// A running three-node cluster (see the module docs).
pub struct Cluster {
    state: PathBuf,
    /// Node i listens on `port + 2(i-1)`, its controller on the port after.
    port: u16,
}

impl Cluster {
    /// Starts a fresh cluster on six consecutive free loopback ports. Panics, with
    /// `kafka.sh`'s output, if it cannot.
    pub fn start(name: &str) -> Self {
        let state = cache_dir()
            .join("test-private")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let c = Cluster {
            state,
            port: free_port_run(2 * NODES as u16),
        };
        c.sh_ok(&["start", "--brokers", "3"]);
        c
    }

    /// Every node's address, comma-separated: what clients bootstrap from.
    pub fn bootstrap(&self) -> String {
        (1..=NODES)
            .map(|i| format!("127.0.0.1:{}", self.node_port(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn node_port(&self, node: u32) -> u16 {
        self.port + 2 * (node as u16 - 1)
    }

    /// Creates the four pipeline topics under `prefix`, `partitions` each, replication 3.
    pub fn create_topics(&self, prefix: &str, partitions: i32) {
        create_topics_replicated(&self.bootstrap(), prefix, partitions, 3)
    }

    /// The process id of node `node` (1..=3), if it has one recorded.
    pub fn pid(&self, node: u32) -> Option<u32> {
        std::fs::read_to_string(self.state.join(format!("node-{node}/broker.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`) to node `node`. Panics if it has no
    /// process.
    pub fn signal(&self, node: u32, signal: &str) {
        let pid = self
            .pid(node)
            .unwrap_or_else(|| panic!("node {node} has no process"));
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{signal} {pid} (node {node}) failed");
    }

    /// `kill -9` of node `node`: no chance to hand anything over.
    pub fn kill(&self, node: u32) {
        self.signal(node, "KILL");
    }

    /// Starts the nodes that are down (`kafka.sh start` again) and waits until the cluster
    /// serves its topics; returns how long that took.
    pub fn heal(&self) -> Duration {
        let t = Instant::now();
        // A node that is only paused would never come back by itself.
        for node in 1..=NODES {
            if self.pid(node).is_some() {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(self.pid(node).unwrap().to_string())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        self.sh_ok(&["start"]);
        self.await_in_sync(Duration::from_secs(120));
        t.elapsed()
    }

    /// Waits until every partition of every topic has all three replicas in sync again
    /// (after a node came back), so the next fault starts from a whole cluster.
    pub fn await_in_sync(&self, limit: Duration) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("metadata client");
        let start = Instant::now();
        loop {
            let behind = match consumer.fetch_metadata(None, Duration::from_secs(10)) {
                Ok(md) => md
                    .topics()
                    .iter()
                    .flat_map(|t| t.partitions())
                    .filter(|p| p.isr().len() < NODES as usize || p.leader() < 0)
                    .count(),
                Err(_) => usize::MAX,
            };
            if behind == 0 {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "{behind} partitions still without three in-sync replicas after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The node leading `topic`'s partition `partition`.
    pub fn leader_of(&self, topic: &str, partition: i32) -> u32 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("metadata client");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let leader = md.topics()[0]
            .partitions()
            .iter()
            .find(|p| p.id() == partition)
            .unwrap_or_else(|| panic!("{topic} has no partition {partition}"))
            .leader();
        u32::try_from(leader).unwrap_or_else(|_| panic!("{topic}/{partition} has no leader"))
    }

    /// The node leading the KRaft quorum (the active controller).
    pub fn quorum_leader(&self) -> u32 {
        let out = self.sh_ok(&["leader"]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("kafka.sh leader printed {out:?}"))
    }

    fn sh(&self, args: &[&str]) -> std::process::Output {
        Command::new("bash")
            .arg(repo_root().join("infra/kafka/kafka.sh"))
            .args(args)
            .env("OWSU_KAFKA_HOME", &self.state)
            .env("OWSU_KAFKA_PORT", self.port.to_string())
            .env("OWSU_KAFKA_TOPIC_PREFIX", "harness.")
            .env("OWSU_KAFKA_PARTITIONS", "1")
            .env("OWSU_KAFKA_HEAP", "384M")
            .output()
            .expect("run kafka.sh")
    }

    fn sh_ok(&self, args: &[&str]) -> String {
        let out = self.sh(args);
        assert!(
            out.status.success(),
            "infra/kafka/kafka.sh {} (cluster in {}) failed:\n{}{}",
            args.join(" "),
            self.state.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in 1..=NODES {
            if let Some(pid) = self.pid(node) {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(pid.to_string())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        let _ = self.sh(&["stop"]);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// The first of `n` consecutive loopback ports that are all free now.
fn free_port_run(n: u16) -> u16 {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..200 {
        let base: u16 = rng.gen_range(20_000..60_000);
        let all_free = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("found no {n} consecutive free ports between 20000 and 60000");
}
