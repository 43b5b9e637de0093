//! `GET /metrics`: the Prometheus text exposition of every metric registered in the process
//! (each crate owns and registers its own: `tributary_capture::metrics`,
//! `tributary_apply::metrics`, `tributary_kafka::metrics`), served by axum on a task the
//! command owns while it runs.
//!
//! The endpoint is off unless `[metrics] listen` or `--metrics-listen` names an address. It
//! binds before the command starts its work, so a taken or unusable address stops the command
//! at once with the address and the remedy. It serves counters only (no row values, keys or
//! secrets), but they describe the sites: bind it to loopback or a private interface.

use anyhow::{Context, Result};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The running endpoint. Dropping it stops the server; [`MetricsEndpoint::stop`] also waits
/// for the task to end.
pub struct MetricsEndpoint {
    address: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl MetricsEndpoint {
    /// Binds `address` and serves `/metrics` on a task until stopped.
    pub async fn start(address: SocketAddr) -> Result<MetricsEndpoint> {
        let cannot = || {
            format!(
                "cannot serve metrics on {address}; choose a free address with [metrics] \
                 listen or --metrics-listen (capture and ship reading the same configuration \
                 file need one each), or stop what holds it"
            )
        };
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(cannot)?;
        let bound = listener.local_addr().with_context(cannot)?;
        let shutdown = CancellationToken::new();
        let stopped = shutdown.clone().cancelled_owned();
        let router = Router::new().route("/metrics", get(scrape));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(address = %bound, error = %e, "the metrics endpoint stopped");
            }
        });
        tracing::info!("serving metrics on http://{bound}/metrics");
        Ok(MetricsEndpoint {
            address: bound,
            shutdown,
            task: Some(task),
        })
    }

    /// Starts the endpoint when an address is configured.
    pub async fn start_if(address: Option<SocketAddr>) -> Result<Option<MetricsEndpoint>> {
        match address {
            Some(address) => Ok(Some(MetricsEndpoint::start(address).await?)),
            None => Ok(None),
        }
    }

    /// The address it listens on (the port chosen by the system when `:0` was asked).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops serving and waits for the server task to end.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "the metrics endpoint task failed");
        }
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The registry in the text format (`text/plain; version=0.0.4`).
async fn scrape() -> impl IntoResponse {
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&prometheus::gather()) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode the metrics: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(address: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_the_registry_in_the_text_format_and_nothing_else() {
        tributary_capture::metrics::register();
        let endpoint = MetricsEndpoint::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let response = get(endpoint.address(), "/metrics").await;
        assert!(response.starts_with("HTTP/1.0 200"), "{response}");
        assert!(
            response.contains("content-type: text/plain; version=0.0.4"),
            "{response}"
        );
        assert!(
            response.contains("# TYPE tributary_capture_batches_total counter"),
            "{response}"
        );
        let response = get(endpoint.address(), "/").await;
        assert!(response.starts_with("HTTP/1.0 404"), "{response}");
        endpoint.stop().await;
    }

    #[tokio::test]
    async fn a_taken_address_is_an_error_naming_it_and_the_remedy() {
        let first = MetricsEndpoint::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let err = match MetricsEndpoint::start(first.address()).await {
            Ok(_) => panic!("two endpoints bound {}", first.address()),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(&first.address().to_string()), "{err}");
        assert!(err.contains("--metrics-listen"), "{err}");
    }
}
