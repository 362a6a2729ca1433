//! Test harness: one real Apache Kafka broker for the whole test run, random topic names per
//! test, and a Python environment with independent readers (fastavro, DuckDB, pandas, polars).
//!
//! The broker is started through `infra/kafka/kafka.sh` (the same script the README uses) on
//! free loopback ports, with its state in `$OWSU_CACHE/test-kafka` (default
//! `~/.cache/owsu/test-kafka`), unless `OWSU_KAFKA_BOOTSTRAP` names a running broker. Test
//! binaries run one after another and find the broker the first one started; `.ci/run` stops it
//! at the end (`OWSU_KAFKA_HOME=~/.cache/owsu/test-kafka infra/kafka/kafka.sh stop`).
//! Nothing here skips a test: if Kafka cannot be had, the test fails and says how to fix it.
//!
//! Every function panics on failure, saying what went wrong: the harness is for tests only. Shared resources (broker, Python environment, S3 server binary) are set up
//! under a file lock, so parallel test processes set each up once.

pub mod cluster;
pub mod oracle;

pub use cluster::Cluster;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

/// The partition Kafka's Java client gives a record with this key (`Utils.murmur2`, then
/// `toPositive(h) % partitions`): the reference our producer must agree with. `partitions`
/// must be positive.
pub fn java_partition(key: &[u8], partitions: i32) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    ((h & 0x7fff_ffff) % partitions as u32) as i32
}

/// The repository root (for scripts and reference data). Cargo names the package directory
/// to the test process at run time; that wins over the one compiled in, because cargo does not
/// rebuild an unchanged crate for a new checkout path: with a target directory shared between
/// clones (CI's cache), the compiled-in path can be another clone's, or gone.
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// Cache root shared with infra/kafka/kafka.sh and .ci/run: `$OWSU_CACHE`, else
/// `$HOME/.cache/owsu` (`/tmp/.cache/owsu` without `HOME`).
pub(crate) fn cache_dir() -> PathBuf {
    std::env::var_os("OWSU_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".cache/owsu")
        })
}

/// Holds an exclusive lock on a file for as long as it lives (across test processes).
struct FileLock(std::fs::File);

impl FileLock {
    fn acquire(path: &Path) -> Self {
        std::fs::create_dir_all(path.parent().expect("lock has a parent"))
            .expect("create cache dir");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .expect("open lock file");
        f.lock().expect("lock");
        FileLock(f)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300))
        .is_ok()
}

/// The shared broker's bootstrap address, `host:port`. `OWSU_KAFKA_BOOTSTRAP` when set;
/// otherwise the broker an earlier test process started, if it still answers, or a new one on a
/// free port (first use only: the answer is kept for the process).
pub fn bootstrap() -> &'static str {
    static BOOTSTRAP: OnceLock<String> = OnceLock::new();
    BOOTSTRAP.get_or_init(|| {
        if let Ok(b) = std::env::var("OWSU_KAFKA_BOOTSTRAP") {
            return b;
        }
        let state = cache_dir().join("test-kafka");
        let _lock = FileLock::acquire(&cache_dir().join("test-kafka.lock"));
        let port_file = state.join("port");
        if let Some(port) = std::fs::read_to_string(&port_file).ok().and_then(|s| s.trim().parse::<u16>().ok()) {
            let alive = state.join("broker.pid").exists()
                && kafka_sh(&state, port, &["status"]).map(|o| o.status.success()).unwrap_or(false)
                && port_open(port);
            if alive {
                return format!("127.0.0.1:{port}");
            }
        }
        let port = free_port();
        let out = kafka_sh(&state, port, &["start"]).unwrap_or_else(|e| {
            panic!("could not run infra/kafka/kafka.sh ({e}). Fix: make sure bash is installed, or set OWSU_KAFKA_BOOTSTRAP=host:port of a running Kafka 4.x broker.")
        });
        if !out.status.success() {
            panic!(
                "infra/kafka/kafka.sh start failed:\n{}{}\nFix the machine as it says (JDK 17+ and Maven with access to Maven Central), \
                 or set OWSU_KAFKA_BOOTSTRAP=host:port of a running Kafka 4.x broker.",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::write(&port_file, port.to_string()).expect("write port file");
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        format!("127.0.0.1:{port}")
    })
}

fn kafka_sh(state: &Path, port: u16, args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("bash")
        .arg(repo_root().join("infra/kafka/kafka.sh"))
        .args(args)
        .env("OWSU_KAFKA_HOME", state)
        .env("OWSU_KAFKA_PORT", port.to_string())
        .env("OWSU_KAFKA_CONTROLLER_PORT", free_port().to_string())
        .env("OWSU_KAFKA_TOPIC_PREFIX", "harness.")
        .env("OWSU_KAFKA_PARTITIONS", "1")
        .output()
}

/// Runs a Kafka tool class (e.g. `org.apache.kafka.tools.GetOffsetShell`) with the broker's
/// jars; returns stdout. Panics when the tool fails.
pub fn kafka_tool(class: &str, args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("infra/kafka/kafka.sh"))
        .arg("tool")
        .arg(class)
        .args(args)
        .output()
        .expect("run kafka.sh tool");
    assert!(
        out.status.success(),
        "{class} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A fresh topic prefix, so tests share one broker without seeing each other's messages:
/// `t<10 random hex digits>-<test>.`.
pub fn random_prefix(test: &str) -> String {
    format!(
        "t{}-{}.",
        &uuid::Uuid::new_v4().simple().to_string()[..10],
        test
    )
}

/// Creates the four pipeline topics (service, complaint, unit-day, dead letter) under `prefix`
/// on the shared broker, `partitions` partitions each, replication 1. Panics if a topic exists.
pub fn create_topics(prefix: &str, partitions: i32) {
    create_topics_on(bootstrap(), prefix, partitions)
}

/// Path of the Python interpreter with fastavro, DuckDB, pandas, pyarrow, polars and deltalake
/// (pinned versions): independent readers of our output. Installed once into
/// `$OWSU_CACHE/pyenv` from PyPI.
pub fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = cache_dir().join("pyenv");
        let _lock = FileLock::acquire(&cache_dir().join("pyenv.lock"));
        let py = venv.join("bin/python");
        let marker = venv.join(".owsu-ready-2");
        if marker.exists() {
            return py;
        }
        let run = |cmd: &mut Command, what: &str| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}. Fix: install python3 with venv and pip."));
            assert!(
                out.status.success(),
                "{what} failed:\n{}\n{}\nFix: install python3 with the venv module (Debian: apt-get install python3-venv) and allow PyPI access.",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv");
        run(
            Command::new(&py).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "fastavro==1.13.1", "duckdb==2.0.0", "pandas==3.1.1", "pyarrow==26.0.1", "polars==2.1.0", "deltalake==1.6.6"]),
            "pip install fastavro duckdb pandas pyarrow polars deltalake",
        );
        std::fs::write(&marker, b"ok").expect("marker");
        py
    })
}

/// Runs `infra/validate` (a Go program: compose-go for compose files, BuildKit for Dockerfiles,
/// Prometheus's rule parser for alert rules) on `args` in the repository root; returns
/// (success, stdout and stderr). Built once per process by the machine's Go into
/// `$OWSU_CACHE/bin`, with its modules from the Go module proxy cached under
/// `$OWSU_CACHE/gomod` and `gobuild`.
pub fn validate_deployment(args: &[&str]) -> (bool, String) {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let bin = BUILT.get_or_init(|| {
        let cache = cache_dir();
        let _lock = FileLock::acquire(&cache.join("gobuild.lock"));
        let bin = cache.join("bin/owsu-validate");
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(repo_root().join("infra/validate"))
            .env("GOMODCACHE", cache.join("gomod"))
            .env("GOCACHE", cache.join("gobuild"))
            .env("GOFLAGS", "-mod=readonly")
            .output()
            .unwrap_or_else(|e| panic!("running `go build` in infra/validate: {e}. Fix: install Go 1.26 or newer (https://go.dev/dl) and put `go` on PATH."));
        assert!(
            out.status.success(),
            "building infra/validate failed:\n{}\nFix: Go 1.26 or newer, with access to the Go module proxy (GOPROXY).",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    });
    let out = Command::new(bin)
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run owsu-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Headless Chromium from Debian (`chromium`) with a Khmer font (`fonts-noto-core`): the real
/// browser the dashboard is tested in. Found on `PATH`, or installed once with `apt-get` (the
/// tests run as root in CI); otherwise the test fails and says how to install it.
pub fn chromium() -> &'static Path {
    static BROWSER: OnceLock<PathBuf> = OnceLock::new();
    BROWSER.get_or_init(|| {
        let _lock = FileLock::acquire(&cache_dir().join("chromium.lock"));
        let find = || {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("chromium"))
                    .find(|p| p.is_file())
            })
        };
        let khmer_font = || {
            Command::new("fc-list")
                .arg(":lang=km")
                .output()
                .is_ok_and(|o| !o.stdout.is_empty())
        };
        if find().is_none() || !khmer_font() {
            let fix = "Fix: apt-get install chromium fonts-noto-core (Debian), as root";
            let run = |args: &[&str]| {
                let out = Command::new("apt-get")
                    .args(args)
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .output()
                    .unwrap_or_else(|e| panic!("apt-get: {e}. {fix}"));
                assert!(
                    out.status.success(),
                    "apt-get {} failed:\n{}\n{fix}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            run(&["update", "-qq"]);
            run(&[
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "chromium",
                "fonts-noto-core",
            ]);
        }
        assert!(
            khmer_font(),
            "no Khmer font after installing fonts-noto-core"
        );
        find().expect("chromium on PATH after apt-get install chromium")
    })
}

/// Runs headless Chromium on `url` with `args` (`--dump-dom`, `--screenshot=FILE`, …) and a
/// profile of its own, without network access beyond the page; its standard output. Fails
/// after 90 s.
pub fn browse(url: &str, args: &[&str]) -> String {
    let profile = std::env::temp_dir().join(format!("owsu-chromium-{}", uuid::Uuid::new_v4()));
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chromium");
    let start = std::time::Instant::now();
    while child.try_wait().expect("chromium").is_none() {
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("chromium did not finish {url} within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("chromium output");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(out.status.success(), "chromium failed on {url}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a Python script with the test environment; panics with its output on failure.
///
/// A script that ran to its end leaves with `os._exit(0)` after flushing: the Python `deltalake`
/// package's native threads can abort the interpreter's own shutdown ("terminate called without
/// an active exception", seen about once in ten runs after every line was printed correctly). A
/// script that fails raises before that line and keeps its non-zero exit.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let script = format!(
        "{script}\nimport os as _os, sys as _sys\n_sys.stdout.flush(); _sys.stderr.flush(); _os._exit(0)\n"
    );
    let out = Command::new(python())
        .arg("-c")
        .arg(&script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A broker of a test's own, for tests that stop and start Kafka (the shared one must stay up
/// for the tests running beside them). Its state is in `$OWSU_CACHE/test-private/<name>-<pid>`.
/// Stopped, and its state removed, when dropped.
pub struct PrivateBroker {
    state: PathBuf,
    port: u16,
    controller_port: u16,
    /// Topic prefix and partitions of the four pipeline topics `kafka.sh start` creates.
    prefix: String,
    partitions: i32,
    /// TLS + SASL/SCRAM + ACLs (`kafka.sh start --secure`).
    secure: bool,
}

impl PrivateBroker {
    /// Starts a fresh single-node plaintext broker with the four pipeline topics under the prefix
    /// `harness.`, 1 partition each (create others with [`create_topics_on`]).
    pub fn start(name: &str) -> Self {
        Self::fresh(name, "harness.", 1, false)
    }

    /// A broker in secure mode (TLS, SASL/SCRAM-SHA-512, ACLs) with the four topics under
    /// `prefix`, `partitions` each.
    pub fn start_secure(name: &str, prefix: &str, partitions: i32) -> Self {
        Self::fresh(name, prefix, partitions, true)
    }

    /// A broker on free ports with an empty state directory of its own, started.
    fn fresh(name: &str, prefix: &str, partitions: i32, secure: bool) -> Self {
        let state = cache_dir()
            .join("test-private")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let b = PrivateBroker {
            state,
            port: free_port(),
            controller_port: free_port(),
            prefix: prefix.into(),
            partitions,
            secure,
        };
        b.resume();
        b
    }

    /// The CA certificate of a secure broker.
    pub fn ca(&self) -> PathBuf {
        self.state.join("tls/ca.pem")
    }

    /// `kafka.sh user ARGS...` on this broker; its output (panics on failure).
    pub fn user(&self, args: &[&str]) -> String {
        let mut all = vec!["user"];
        all.extend_from_slice(args);
        let out = self.sh_args(&all);
        assert!(
            out.status.success(),
            "kafka.sh user {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The password file `kafka.sh user add` wrote for `name`.
    pub fn password_file(&self, name: &str) -> PathBuf {
        self.state.join("users").join(format!("{name}.password"))
    }

    /// Its bootstrap address, `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A secure broker's password file of `user` (`admin`: the super user `kafka.sh` made).
    fn password_path(&self, user: &str) -> PathBuf {
        if user == "admin" {
            self.state.join("admin.password")
        } else {
            self.password_file(user)
        }
    }

    /// librdkafka settings for `user` on this secure broker (TLS, SCRAM-SHA-512). Panics if the
    /// user has no password file.
    pub fn client_config(&self, user: &str) -> ClientConfig {
        let password = std::fs::read_to_string(self.password_path(user))
            .unwrap_or_else(|e| panic!("password of {user}: {e}"));
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap())
            .set("security.protocol", "sasl_ssl")
            .set("sasl.mechanism", "SCRAM-SHA-512")
            .set("sasl.username", user)
            .set("sasl.password", password.trim())
            .set("ssl.ca.location", self.ca().to_string_lossy());
        c
    }

    /// The connection flags of `owsu-producer` and `owsu-aggregator run` for `user` on this
    /// secure broker, topics under its prefix.
    pub fn cli_args(&self, user: &str) -> Vec<String> {
        [
            "--brokers",
            &self.bootstrap(),
            "--security-protocol",
            "sasl_ssl",
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            user,
            "--sasl-password-file",
            &self.password_path(user).to_string_lossy(),
            "--ssl-ca-location",
            &self.ca().to_string_lossy(),
            "--topic-prefix",
            &self.prefix,
        ]
        .map(String::from)
        .to_vec()
    }

    fn sh(&self, cmd: &str) -> std::process::Output {
        if cmd == "start" && self.secure {
            return self.sh_args(&["start", "--secure"]);
        }
        self.sh_args(&[cmd])
    }

    fn sh_args(&self, args: &[&str]) -> std::process::Output {
        Command::new("bash")
            .arg(repo_root().join("infra/kafka/kafka.sh"))
            .args(args)
            .env("OWSU_KAFKA_HOME", &self.state)
            .env("OWSU_KAFKA_PORT", self.port.to_string())
            .env(
                "OWSU_KAFKA_CONTROLLER_PORT",
                self.controller_port.to_string(),
            )
            .env("OWSU_KAFKA_TOPIC_PREFIX", &self.prefix)
            .env("OWSU_KAFKA_PARTITIONS", self.partitions.to_string())
            .output()
            .expect("run kafka.sh")
    }

    /// Stops the broker (its data stays). Panics if `kafka.sh stop` fails.
    pub fn stop(&self) {
        let out = self.sh("stop");
        assert!(
            out.status.success(),
            "stopping the private broker: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts it again on the same ports and data. Panics if `kafka.sh start` fails.
    pub fn resume(&self) {
        let out = self.sh("start");
        assert!(
            out.status.success(),
            "infra/kafka/kafka.sh start (private broker) failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.sh("stop");
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Like [`create_topics`], on any broker.
pub fn create_topics_on(bootstrap: &str, prefix: &str, partitions: i32) {
    create_topics_replicated(bootstrap, prefix, partitions, 1)
}

/// The pipeline's topics and their settings, as `infra/kafka/topics.conf` (the one definition
/// `kafka.sh` also reads) lists them: (name, [(config, value)]).
pub fn topic_settings() -> Vec<(String, Vec<(String, String)>)> {
    let path = repo_root().join("infra/kafka/topics.conf");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, configs) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("{}: no tab in {l:?}", path.display()));
            let configs = configs
                .split(',')
                .filter(|c| !c.is_empty())
                .map(|c| {
                    let (k, v) = c
                        .split_once('=')
                        .unwrap_or_else(|| panic!("{}: {c:?} is not key=value", path.display()));
                    (k.to_owned(), v.to_owned())
                })
                .collect();
            (name.to_owned(), configs)
        })
        .collect()
}

/// Creates the four pipeline topics under `prefix` with `topics.conf`'s settings,
/// `partitions` each and `replication` copies (3: `min.insync.replicas=2`, as `kafka.sh
/// start --brokers 3` makes them). Panics if a topic exists.
pub fn create_topics_replicated(bootstrap: &str, prefix: &str, partitions: i32, replication: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let settings = topic_settings();
    let names: Vec<String> = settings
        .iter()
        .map(|(t, _)| format!("{prefix}{t}"))
        .collect();
    let min_isr = if replication >= 3 { "2" } else { "1" };
    let topics: Vec<NewTopic> = names
        .iter()
        .zip(&settings)
        .map(|(n, (_, configs))| {
            let mut t = NewTopic::new(n, partitions, TopicReplication::Fixed(replication))
                .set("min.insync.replicas", min_isr);
            for (k, v) in configs {
                t = t.set(k, v);
            }
            t
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for r in rt
        .block_on(admin.create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .expect("create topics")
    {
        if let Err((name, e)) = r {
            panic!("creating topic {name}: {e}");
        }
    }
}

/// A real S3-compatible server on loopback (s3s-fs from crates.io, a file-system-backed S3
/// implementation that honours `If-None-Match`), built once into `$OWSU_CACHE/s3s-fs`. Stopped
/// when dropped.
pub struct S3Server {
    child: std::process::Child,
    bin: PathBuf,
    port: u16,
    /// The server's URL, `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The directory the server serves (one subdirectory per bucket); removed on drop.
    pub root: PathBuf,
    /// The access key the server accepts.
    pub access_key: &'static str,
    /// The secret key the server accepts.
    pub secret_key: &'static str,
}

impl S3Server {
    /// Starts a server with bucket `bucket`, its data in a fresh directory
    /// (`$OWSU_CACHE/test-s3/<bucket>-<pid>`), and waits up to 30 s for it to listen. The first
    /// run installs s3s-fs 0.14.1 with `cargo install` (needs crates.io).
    pub fn start(bucket: &str) -> Self {
        let install = cache_dir().join("s3s-fs");
        let bin = install.join("bin/s3s-fs");
        {
            let _lock = FileLock::acquire(&cache_dir().join("s3s-fs.lock"));
            if !bin.exists() {
                let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                    .args([
                        "install",
                        "--locked",
                        "--quiet",
                        "s3s-fs",
                        "--version",
                        "0.14.1",
                        "--features",
                        "binary",
                        "--root",
                    ])
                    .arg(&install)
                    .arg("--target-dir")
                    .arg(cache_dir().join("s3s-fs-build"))
                    .output()
                    .unwrap_or_else(|e| panic!("cargo install s3s-fs: {e}"));
                assert!(
                    out.status.success(),
                    "installing the S3 test server (cargo install s3s-fs) failed:\n{}\nFix: allow crates.io access, or put an s3s-fs 0.14 binary at {}",
                    String::from_utf8_lossy(&out.stderr),
                    bin.display()
                );
            }
        }
        let root = cache_dir()
            .join("test-s3")
            .join(format!("{bucket}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join(bucket)).expect("create the bucket directory");
        let port = free_port();
        let (access_key, secret_key) = ("owsutest", "owsu-test-secret-key");
        let child = Self::spawn(&bin, port, &root, access_key, secret_key);
        S3Server {
            child,
            bin,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            root,
            access_key,
            secret_key,
        }
    }

    /// Starts the server binary on `port` serving `root`; waits up to 30 s for it to listen.
    fn spawn(
        bin: &Path,
        port: u16,
        root: &Path,
        access_key: &str,
        secret_key: &str,
    ) -> std::process::Child {
        let child = Command::new(bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                access_key,
                "--secret-key",
                secret_key,
            ])
            .arg(root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let started = std::time::Instant::now();
        while !port_open(port) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "s3s-fs did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        child
    }

    /// Kills the server (`kill -9`): the store stops answering; its data stays.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and data, after [`S3Server::kill`].
    pub fn restart(&mut self) {
        self.child = Self::spawn(
            &self.bin,
            self.port,
            &self.root,
            self.access_key,
            self.secret_key,
        );
    }

    /// The `AWS_*` variables that point a client at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", self.access_key.into()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Whether the consumer group `group` on `bootstrap` has committed, on every partition
/// (`0..partitions`) of the event topics under `prefix`, the partition's current end: a live
/// aggregator has landed everything published so far (it commits Kafka offsets after the lake).
pub fn group_done(bootstrap: &str, group: &str, prefix: &str, partitions: i32) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("a consumer for the group's offsets");
    let mut tpl = TopicPartitionList::new();
    let mut highs = Vec::new();
    for k in owsu_schemas::RecordKind::ALL {
        let t = format!("{prefix}{}", k.topic());
        for p in 0..partitions {
            let Ok((_, high)) = c.fetch_watermarks(&t, p, Duration::from_secs(10)) else {
                return false;
            };
            tpl.add_partition(&t, p);
            highs.push(high);
        }
    }
    let Ok(committed) = c.committed_offsets(tpl, Duration::from_secs(10)) else {
        return false;
    };
    committed
        .elements()
        .iter()
        .zip(highs)
        .all(|(e, high)| match e.offset() {
            Offset::Offset(o) => o >= high,
            _ => high == 0,
        })
}

/// `GET http://addr/path`: the status code and the whole response (headers and body); `None`
/// while nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

/// The value of the metric `name` (a gauge or counter without labels) that the process
/// serving `http://addr/metrics` reports now; `None` while it does not answer or lacks it.
pub fn scrape(addr: &str, name: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics")?;
    body.lines().find_map(|l| {
        let (metric, value) = l.split_once(' ')?;
        (metric == name).then(|| value.trim().parse().ok())?
    })
}

/// A free loopback address (`127.0.0.1:PORT`) for a process's metrics endpoint.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[cfg(test)]
mod tests {
    /// topics.conf (read by kafka.sh and the harness) names exactly the topics of the schemas.
    #[test]
    fn topics_conf_lists_the_schemas_topics() {
        use owsu_schemas::topics::*;
        let names: Vec<String> = super::topic_settings()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [SERVICE_EVENTS, COMPLAINT_EVENTS, UNIT_DAYS, DEAD_LETTER]
        );
    }

    /// Computed with Kafka's own `Utils.murmur2` (kafka-clients 4.1.1, in jshell), 12 partitions.
    #[test]
    fn java_partition_matches_kafka_clients() {
        for (key, p) in [
            ("KH-01", 2),
            ("KH-0101", 10),
            ("KH-12", 0),
            ("KH-1204", 6),
            ("KH-25", 1),
            ("KH-2503", 5),
            ("", 9),
        ] {
            assert_eq!(super::java_partition(key.as_bytes(), 12), p, "{key:?}");
        }
    }
}
