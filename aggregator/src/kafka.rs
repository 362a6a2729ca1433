//! How to reach Kafka: the settings shared with the other processes live in `owsu-runtime`.

pub(crate) use owsu_runtime::kafka::KafkaArgs;
