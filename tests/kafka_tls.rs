//! The Kafka transport over TLS (issue 4: "TLS and SASL settings passed through to librdkafka
//! from the config file"): the configured `security.protocol` and `ssl.ca.location` reach the
//! bundled librdkafka and its OpenSSL, a broker whose certificate the configured CA did not
//! sign is refused, and with the right CA a site's batches travel to HQ over TLS exactly once.
//!
//! The broker is tansu behind a TLS front (socat with a certificate from a CA the test makes),
//! so the handshake and the certificate check are real.

use anyhow::{Context, Result};
use std::path::Path;
use tributary::dataset::{self, PatientShape};
use tributary_suite::Tansu;
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions, run_ok};
use tributary_suite::tls::{TlsCertificates, free_port, tls_front};

const TOPIC: &str = "tributary.batches";

/// Appends the TLS settings to a configuration that already has its `[transport.kafka]`.
fn with_tls(config: &Path, ca: &Path, into: &Path) -> Result<()> {
    let text = std::fs::read_to_string(config)?;
    std::fs::write(
        into,
        format!(
            "{text}\n[transport.kafka.librdkafka]\n\"security.protocol\" = \"ssl\"\n\
             \"ssl.ca.location\" = \"{}\"\n",
            ca.display()
        ),
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_travel_over_tls_and_an_untrusted_broker_is_refused() -> Result<()> {
    let p = Pipeline::start(
        "kafka-tls",
        PipelineOptions {
            max_batch_rows: 200,
            ..PipelineOptions::default()
        },
    )
    .await?;
    let tls_dir = p.work.join("tls");
    let trusted = TlsCertificates::make(&tls_dir, "tributary")?;
    let stranger = TlsCertificates::make(&tls_dir, "stranger")?;
    let port = free_port()?;
    let tansu = Tansu::start("kafka-tls", Some(port))?;
    let _front = tls_front(port, tansu.port(), &trusted, &p.work.join("logs")).await?;
    p.use_kafka(&format!("127.0.0.1:{port}"), TOPIC, 2)?;

    // A client trusting another CA does not talk to this broker.
    let untrusted = p.work.join("untrusted.toml");
    with_tls(&p.config, &stranger.ca, &untrusted)?;
    let refused = p.run_with(&untrusted, &["kafka", "init"])?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("certificate verify failed"), "{said}");

    // With the broker's CA everything goes over TLS.
    with_tls(&p.config.clone(), &trusted.ca, &p.config)?;
    let init = run_ok(p.run(&["kafka", "init"])?).context(tansu.log_tail())?;
    assert!(init.contains("created topic"), "{init}");
    let mut capture = p.spawn("capture", "capture")?;
    let mut ship = p.spawn("ship", "ship")?;
    let mut apply = p.spawn("apply", "apply")?;
    p.wait_capture_started("state", &capture).await?;
    let shape = PatientShape::default();
    let rows =
        dataset::load_patients(&mut p.site.conn().await?, CLINIC, "clinic-a", 0, 30, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut ship, &mut apply])
        .await?;
    p.verify()?;
    let applied = p.rows_applied_at_hq().await?;
    assert_eq!(applied, Some(rows), "every row change applied exactly once");
    Ok(())
}
