//! Topic creation and description, for the server and consumer at start (and tests).

use std::sync::Arc;
use std::time::Duration;

use coupon_core::{BackendError, Component, ErrorKind};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::errors::backend_error;

/// How [`ensure_topics`] creates the topics when they do not exist (an existing topic
/// is left as it is, and described).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    /// Partitions (default 6): the most recorders of one group that share the load.
    pub partitions: i32,
    /// Copies of each partition (default 3). Below 2, losing one broker's disk loses
    /// acknowledged events.
    pub replication_factor: i32,
    /// `min.insync.replicas` (default 2): with `acks=all`, a publish is acknowledged
    /// only once this many copies hold it.
    pub min_insync_replicas: i32,
}

impl Default for TopicSettings {
    fn default() -> Self {
        Self {
            partitions: 6,
            replication_factor: 3,
            min_insync_replicas: 2,
        }
    }
}

impl TopicSettings {
    /// One copy of everything: for a single broker (development, tests), where
    /// nothing survives the loss of that broker's disk.
    pub fn single_broker(partitions: i32) -> Self {
        Self {
            partitions,
            replication_factor: 1,
            min_insync_replicas: 1,
        }
    }

    /// Sets the partitions.
    pub fn with_partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions;
        self
    }
}

/// What the broker says of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// The topic.
    pub topic: String,
    /// Its partitions.
    pub partitions: usize,
    /// The fewest replicas any of its partitions has.
    pub replication_factor: usize,
    /// Its `min.insync.replicas`, when the broker answers `DescribeConfigs`.
    pub min_insync_replicas: Option<i32>,
}

impl TopicDescription {
    /// Whether an acknowledged event survives the loss of one broker: two copies at
    /// least, and (when the broker says) two of them in sync before `acks=all` answers.
    pub fn survives_one_broker_loss(&self) -> bool {
        self.replication_factor >= 2 && self.min_insync_replicas.is_none_or(|n| n >= 2)
    }

    /// Logs what the broker said (info), and warns when one broker's lost disk would
    /// lose events not yet stored.
    pub fn log(&self) {
        tracing::info!(
            topic = %self.topic,
            partitions = self.partitions,
            replication_factor = self.replication_factor,
            min_insync_replicas = ?self.min_insync_replicas,
            "described the Kafka topic"
        );
        if !self.survives_one_broker_loss() {
            tracing::warn!("{self}: one broker's lost disk loses events not yet stored");
        }
    }
}

/// "topic T has replication factor N and min.insync.replicas M".
impl std::fmt::Display for TopicDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "topic {} has replication factor {} and min.insync.replicas ",
            self.topic, self.replication_factor
        )?;
        match self.min_insync_replicas {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("unknown"),
        }
    }
}

/// Creates the event topic and the dead-letter topic if they do not exist, then
/// describes both (event topic first).
pub async fn ensure_topics(
    config: &KafkaConfig,
    settings: &TopicSettings,
) -> Result<Vec<TopicDescription>, BackendError> {
    let admin: Arc<AdminClient<DefaultClientContext>> = Arc::new(
        config
            .client_config()
            .create()
            .map_err(|e| backend_error("create_topics", e))?,
    );
    let min_insync = settings.min_insync_replicas.to_string();
    let names = [config.topic.clone(), config.dead_letter_topic()];
    let topics = names.each_ref().map(|name| {
        NewTopic::new(
            name,
            settings.partitions,
            TopicReplication::Fixed(settings.replication_factor),
        )
        .set("min.insync.replicas", &min_insync)
    });
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(topics.iter(), &options)
        .await
        .map_err(|e| backend_error("create_topics", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(BackendError::new(
                    Component::Log,
                    "kafka",
                    "create_topics",
                    ErrorKind::Rejected,
                    format!("could not create topic {topic}: {code}"),
                ));
            }
        }
    }
    let mut described = Vec::with_capacity(2);
    for topic in &names {
        described.push(describe(&admin, topic, &options).await?);
    }
    Ok(described)
}

async fn describe(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    topic: &str,
    options: &AdminOptions,
) -> Result<TopicDescription, BackendError> {
    let metadata = {
        let (admin, name) = (admin.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(Some(&name), Duration::from_secs(10)))
            .await
            .expect("metadata task")
            .map_err(|e| backend_error("describe_topic", e))?
    };
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(BackendError::new(
            Component::Log,
            "kafka",
            "describe_topic",
            ErrorKind::Unavailable,
            format!("the broker's metadata does not list topic {topic}"),
        ));
    };
    // A broker that does not answer DescribeConfigs leaves the setting unknown (logged).
    let min_insync_replicas = match admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], options)
        .await
    {
        Ok(results) => results.into_iter().flatten().find_map(|r| {
            r.get("min.insync.replicas")
                .and_then(|e| e.value.as_deref()?.parse().ok())
        }),
        Err(e) => {
            tracing::warn!(topic, error = %e, "the broker did not describe the topic's configuration");
            None
        }
    };
    Ok(TopicDescription {
        topic: topic.to_owned(),
        partitions: found.partitions().len(),
        replication_factor: found.partitions().iter().map(|p| p.replicas().len()).min().unwrap_or(0),
        min_insync_replicas,
    })
}
