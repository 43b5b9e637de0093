//! The `tributary` binary's library half: configuration, the demo and its dataset,
//! verification, the reports printed for operators and the `/metrics` endpoint. `main.rs` is
//! only the command line.

pub mod allocator;
pub mod bulk_dataset;
pub mod config;
pub mod conflicts;
pub mod console;
pub mod dataset;
pub mod demo;
pub mod doctor;
pub mod export;
pub mod findings;
pub mod import;
pub mod integration_publisher;
pub mod kafka_apply;
pub mod metrics_endpoint;
pub mod parked;
pub mod progress;
pub mod report;
pub mod schema_report;
pub mod seed_progress;
pub mod status_command;
pub mod verify;
