//! An integration consumer: reads one of Tributary's integration topics from the beginning
//! and prints each change event's operation, row identity and columns (names only: values
//! are health data). docs/integration-topics.md describes the events.
//!
//! ```text
//! cargo run --example integration_consumer -- 127.0.0.1:9092 tributary.openmrs.encounter
//! ```

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(brokers), Some(topic)) = (args.next(), args.next()) else {
        eprintln!("usage: integration_consumer BROKERS TOPIC");
        std::process::exit(2);
    };
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "integration-consumer-example")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[&topic])?;
    loop {
        let message = consumer.recv().await?;
        let key: Value = serde_json::from_slice(message.key().unwrap_or_default())?;
        let event: Value = serde_json::from_slice(message.payload().unwrap_or_default())?;
        let row = if event["op"] == "d" {
            &event["before"]
        } else {
            &event["after"]
        };
        let columns: Vec<&str> = row
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        println!(
            "{} {} from {} (transaction {}): {}",
            event["op"].as_str().unwrap_or("?"),
            key["identity"].as_str().unwrap_or("?"),
            event["source"]["site"].as_str().unwrap_or("?"),
            event["transaction"]["id"].as_str().unwrap_or("?"),
            columns.join(", ")
        );
        // Write to your system first, then commit: at least once, idempotent by identity.
        consumer.commit_message(&message, CommitMode::Sync)?;
    }
}
