//! `tributary kafka init`: creates the sync topic with the configured partitions and
//! replication factor. Idempotent: an existing topic is fine; one with fewer partitions than
//! configured is reported (sites then spread over fewer appliers; adding partitions moves
//! sites between partitions, which is safe because the applier holds a site at a gap until
//! its older batches, still in the old partition, are applied).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::client_config;
use crate::context::{Reachability, TransportContext};
use crate::error::KafkaTransportError;
use crate::settings::{DEFAULT_MAX_RECORD_BYTES, KafkaSettings};

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one connection attempt of [`check_connection`] waits.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// What `init_topic` found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicInit {
    Created {
        partitions: i32,
    },
    Existed {
        partitions: i32,
    },
    /// The topic exists with fewer partitions than configured.
    FewerPartitions {
        partitions: i32,
        configured: i32,
    },
}

pub async fn init_topic(settings: &KafkaSettings) -> Result<TopicInit, KafkaTransportError> {
    settings.validate()?;
    let admin = connect_admin(settings)?;
    let created = create(&admin, settings, std::slice::from_ref(&settings.topic)).await? > 0;
    let partitions = partition_count(&admin, &settings.topic)?;
    Ok(if created {
        TopicInit::Created { partitions }
    } else if partitions < settings.partitions {
        TopicInit::FewerPartitions {
            partitions,
            configured: settings.partitions,
        }
    } else {
        TopicInit::Existed { partitions }
    })
}

/// Creates the topics that do not exist yet with the settings' partitions and replication
/// factor (the integration topics); returns how many were created.
pub async fn create_topics(
    settings: &KafkaSettings,
    topics: &[String],
) -> Result<usize, KafkaTransportError> {
    settings.validate()?;
    let admin = connect_admin(settings)?;
    create(&admin, settings, topics).await
}

fn connect_admin(
    settings: &KafkaSettings,
) -> Result<AdminClient<TransportContext>, KafkaTransportError> {
    check_connection(settings)?;
    AdminClient::from_config_and_context(
        &client_config::admin(settings),
        TransportContext::new("admin", Default::default()),
    )
    .map_err(|e| KafkaTransportError::Config(format!("cannot create the admin client: {e}")))
}

/// Creates `topics`; an existing one is fine. Returns how many were created.
async fn create(
    admin: &AdminClient<TransportContext>,
    settings: &KafkaSettings,
    topics: &[String],
) -> Result<usize, KafkaTransportError> {
    let max_bytes = DEFAULT_MAX_RECORD_BYTES.to_string();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                settings.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
            .set("max.message.bytes", &max_bytes)
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(KafkaTransportError::client("create the topic"))?;
    let mut created = 0;
    for result in results {
        match result {
            Ok(_) => created += 1,
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaTransportError::Topic {
                    topic: name,
                    problem: format!("cannot be created: {code}"),
                });
            }
        }
    }
    Ok(created)
}

/// Reaches the brokers once before any admin request. The admin client does not serve
/// librdkafka's error events, so without this a refused TLS handshake or SASL login would
/// only show as a timeout; here it fails at once with librdkafka's reason.
fn check_connection(settings: &KafkaSettings) -> Result<(), KafkaTransportError> {
    let reachability = Arc::new(Reachability::default());
    let probe: BaseProducer<TransportContext> = BaseProducer::from_config_and_context(
        &client_config::admin(settings),
        TransportContext::new("admin", reachability.clone()),
    )
    .map_err(|e| KafkaTransportError::Config(format!("cannot create the admin client: {e}")))?;
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    loop {
        let attempt = probe.client().fetch_metadata(None, PROBE_INTERVAL);
        probe.poll(Duration::ZERO);
        if let Some(refusal) = reachability.refusal() {
            return Err(KafkaTransportError::Config(format!(
                "the broker refused the connection: {refusal}; check security.protocol and \
                 the ssl.* and sasl.* properties under [transport.kafka.librdkafka]"
            )));
        }
        match attempt {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(KafkaTransportError::client("reach the brokers")(e));
            }
            Err(_) => {}
        }
    }
}

fn partition_count(
    admin: &AdminClient<TransportContext>,
    topic: &str,
) -> Result<i32, KafkaTransportError> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
        .map_err(KafkaTransportError::client("read the topic's metadata"))?;
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    Ok(i32::try_from(count).unwrap_or(i32::MAX))
}
