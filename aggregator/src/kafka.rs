//! Kafka client options shared by every producer command: bootstrap servers, security
//! (TLS, SASL/SCRAM) and an escape hatch for any raw librdkafka setting.
//!
//! The producer has its own copy of this small struct on purpose: processes share the wire
//! format (`owsu-schemas`) and nothing else, so each can be deployed and upgraded alone.

use rdkafka::ClientConfig;

/// How to reach Kafka.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, host:port[,host:port]. Default: a local broker started by
    /// `infra/kafka/kafka.sh start` on 127.0.0.1:9092.
    #[arg(long, env = "OWSU_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

    /// Prefix put before every topic name (e.g. `test-42.`); empty in production.
    #[arg(long, env = "OWSU_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,

    /// security.protocol: plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(
        long,
        env = "OWSU_KAFKA_SECURITY_PROTOCOL",
        default_value = "plaintext"
    )]
    pub security_protocol: String,

    /// sasl.mechanism when SASL is used (SCRAM-SHA-512 recommended).
    #[arg(long, env = "OWSU_KAFKA_SASL_MECHANISM")]
    pub sasl_mechanism: Option<String>,

    /// SASL user name.
    #[arg(long, env = "OWSU_KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,

    /// SASL password (prefer the environment variable over the flag).
    #[arg(long, env = "OWSU_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub sasl_password: Option<String>,

    /// CA certificate (PEM) to verify the brokers' TLS certificates.
    #[arg(long, env = "OWSU_KAFKA_SSL_CA")]
    pub ssl_ca_location: Option<String>,

    /// Any librdkafka setting as key=value, repeatable (e.g. `-X linger.ms=50`). Applied last.
    #[arg(short = 'X', long = "kafka-option", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub options: Vec<(String, String)>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

impl KafkaArgs {
    /// Arguments for a broker at `brokers` with defaults for everything else.
    pub fn local(brokers: &str, topic_prefix: &str) -> Self {
        KafkaArgs {
            brokers: brokers.into(),
            topic_prefix: topic_prefix.into(),
            security_protocol: "plaintext".into(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            options: Vec::new(),
        }
    }

    /// The full topic name for a base name.
    pub fn topic(&self, base: &str) -> String {
        format!("{}{}", self.topic_prefix, base)
    }

    /// Client config with connection and security settings applied.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("security.protocol", &self.security_protocol);
        if let Some(m) = &self.sasl_mechanism {
            c.set("sasl.mechanism", m);
        }
        if let Some(u) = &self.sasl_username {
            c.set("sasl.username", u);
        }
        if let Some(p) = &self.sasl_password {
            c.set("sasl.password", p);
        }
        if let Some(ca) = &self.ssl_ca_location {
            c.set("ssl.ca.location", ca);
        }
        c
    }

    /// Applies the `-X key=value` passthrough; call after the command's own settings.
    pub fn apply_overrides(&self, c: &mut ClientConfig) {
        for (k, v) in &self.options {
            c.set(k, v);
        }
    }
}
