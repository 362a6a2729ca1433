//! Kafka client options shared by the producer and the aggregator: bootstrap servers, security
//! (TLS, SASL/SCRAM) and an escape hatch for any raw librdkafka setting — one that cannot turn
//! security or delivery guarantees off by accident.

use std::path::PathBuf;

use rdkafka::ClientConfig;

/// Environment variable holding the SASL password (read by the process, never a flag: a flag is
/// visible to every user of the machine in `ps`).
pub const SASL_PASSWORD_ENV: &str = "OWSU_KAFKA_SASL_PASSWORD";

/// librdkafka settings that secure the connection or guarantee delivery: a `-X` override of one
/// is refused unless `--unsafe-kafka-options` is given (prefixes end with a dot).
pub const GUARDED: &[&str] = &[
    "security.protocol",
    "sasl.",
    "ssl.",
    "ssl_key",
    "enable.ssl.certificate.verification",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "enable.gapless.guarantee",
];

/// How to reach Kafka.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, `host:port[,host:port]`. Default: a local broker started by
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

    /// File holding the SASL password (readable by its owner only), or set
    /// OWSU_KAFKA_SASL_PASSWORD. There is no password flag: arguments are visible in `ps`.
    #[arg(long, env = "OWSU_KAFKA_SASL_PASSWORD_FILE", value_name = "FILE")]
    pub sasl_password_file: Option<PathBuf>,

    /// CA certificate (PEM) to verify the brokers' TLS certificates.
    #[arg(long, env = "OWSU_KAFKA_SSL_CA")]
    pub ssl_ca_location: Option<String>,

    /// Any librdkafka setting as key=value, repeatable (e.g. `-X linger.ms=50`). Applied last.
    /// Settings that secure the connection or guarantee delivery (security.protocol, sasl.*,
    /// ssl.*, enable.idempotence, acks) are refused here unless --unsafe-kafka-options.
    #[arg(short = 'X', long = "kafka-option", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub options: Vec<(String, String)>,

    /// Let `-X` override security and delivery settings (logged as a warning). For experiments
    /// only: with it, TLS, authentication, idempotence or acks=all can be turned off.
    #[arg(long)]
    pub unsafe_kafka_options: bool,
}

/// A Kafka setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    /// A `-X` override names a [`GUARDED`] setting and `--unsafe-kafka-options` was not given.
    #[error(
        "-X {key}={value}: `{key}` secures the connection or guarantees delivery, and an \
         override could turn that off silently; set it through its own option, or pass \
         --unsafe-kafka-options to override it knowingly"
    )]
    Guarded {
        /// The setting's name as given on the command line.
        key: String,
        /// The value the override would have set.
        value: String,
    },
    /// The `--sasl-password-file` could not be read, or group or others may read it.
    #[error("SASL password: {0}")]
    Password(#[from] owsu_schemas::ids::SecretFileError),
    /// A SASL user is set but neither `--sasl-password-file` nor [`SASL_PASSWORD_ENV`] is.
    #[error("SASL user {user} has no password: pass --sasl-password-file FILE or set {SASL_PASSWORD_ENV}")]
    NoPassword {
        /// The SASL user name that has no password.
        user: String,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// Whether a librdkafka setting is one of [`GUARDED`].
pub(crate) fn is_guarded(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    GUARDED.iter().any(|g| {
        if g.ends_with('.') {
            key.starts_with(g)
        } else {
            key == *g
        }
    })
}

impl KafkaArgs {
    /// Arguments for a plaintext broker at `brokers` with topics prefixed by `topic_prefix`: no
    /// SASL, no TLS CA, no `-X` overrides.
    pub fn local(brokers: &str, topic_prefix: &str) -> Self {
        KafkaArgs {
            brokers: brokers.into(),
            topic_prefix: topic_prefix.into(),
            security_protocol: "plaintext".into(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_file: None,
            ssl_ca_location: None,
            options: Vec::new(),
            unsafe_kafka_options: false,
        }
    }

    /// The full topic name for a base name: [`topic_prefix`](Self::topic_prefix) then `base`.
    pub fn topic(&self, base: &str) -> String {
        format!("{}{}", self.topic_prefix, base)
    }

    /// Client config with connection and security settings applied; the `-X` overrides are
    /// checked here too, so a command fails before it connects. The SASL password is read here.
    /// Errors: [`KafkaConfigError::Guarded`], [`KafkaConfigError::Password`],
    /// [`KafkaConfigError::NoPassword`]. The overrides themselves are not applied.
    pub fn client_config(&self) -> Result<ClientConfig, KafkaConfigError> {
        self.check_overrides()?;
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("security.protocol", &self.security_protocol);
        if let Some(m) = &self.sasl_mechanism {
            c.set("sasl.mechanism", m);
        }
        if let Some(u) = &self.sasl_username {
            c.set("sasl.username", u);
            let password = match &self.sasl_password_file {
                Some(f) => {
                    let bytes = owsu_schemas::ids::read_secret_file(f)?;
                    String::from_utf8_lossy(&bytes).trim().to_owned()
                }
                None => std::env::var(SASL_PASSWORD_ENV)
                    .map_err(|_| KafkaConfigError::NoPassword { user: u.clone() })?,
            };
            c.set("sasl.password", password);
        }
        if let Some(ca) = &self.ssl_ca_location {
            c.set("ssl.ca.location", ca);
        }
        Ok(c)
    }

    fn check_overrides(&self) -> Result<(), KafkaConfigError> {
        for (k, v) in &self.options {
            if is_guarded(k) {
                if !self.unsafe_kafka_options {
                    return Err(KafkaConfigError::Guarded {
                        key: k.clone(),
                        value: v.clone(),
                    });
                }
                tracing::warn!(
                    key = %k,
                    "-X overrides a security or delivery setting (--unsafe-kafka-options)"
                );
            }
        }
        Ok(())
    }

    /// Applies the `-X key=value` passthrough; call after the command's own settings (checked
    /// by [`client_config`](Self::client_config)).
    pub fn apply_overrides(&self, c: &mut ClientConfig) {
        for (k, v) in &self.options {
            c.set(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_of_security_and_delivery_settings_are_refused_unless_unsafe() {
        let mut a = KafkaArgs::local("127.0.0.1:9092", "");
        a.options = vec![("linger.ms".into(), "50".into())];
        assert!(a.client_config().is_ok());
        for (k, v) in [
            ("security.protocol", "plaintext"),
            ("enable.idempotence", "false"),
            ("acks", "1"),
            ("SASL.Mechanism", "PLAIN"),
            ("enable.ssl.certificate.verification", "false"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ] {
            a.options = vec![(k.into(), v.into())];
            let e = a.client_config().unwrap_err().to_string();
            assert!(e.contains(k) && e.contains("--unsafe-kafka-options"), "{e}");
            a.unsafe_kafka_options = true;
            assert!(a.client_config().is_ok());
            a.unsafe_kafka_options = false;
        }
    }

    #[test]
    fn the_sasl_password_comes_from_a_private_file_or_the_environment_never_debug() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        owsu_schemas::ids::write_secret_file(&f, b"s3cret-pass\n").unwrap();
        let mut a = KafkaArgs::local("127.0.0.1:9092", "");
        a.sasl_username = Some("office-kh-0101".into());
        a.sasl_password_file = Some(f.clone());
        let c = a.client_config().unwrap();
        assert_eq!(c.get("sasl.password"), Some("s3cret-pass"));
        assert!(!format!("{a:?}").contains("s3cret"), "Debug never shows it");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = a.client_config().unwrap_err().to_string();
            assert!(e.contains("chmod 600"), "{e}");
        }
    }
}
