//! One connection type over both topologies.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::{RedisGateConfig, Topology};

/// A multiplexed connection to a standalone server (reconnecting on its own) or to a
/// cluster. Cheap to clone: clones share the underlying sockets and pipeline requests.
#[derive(Clone)]
pub enum Connection {
    /// Standalone.
    Standalone(ConnectionManager),
    /// Cluster.
    Cluster(ClusterConnection),
}

impl Connection {
    /// Connects as `config` says.
    pub async fn connect(config: &RedisGateConfig) -> RedisResult<Self> {
        match &config.topology {
            Topology::Standalone(url) => {
                let client = match &config.root_certificate {
                    #[cfg(feature = "tls-rustls")]
                    Some(pem) => redis::Client::build_with_tls(url.as_str(), certificates(pem))?,
                    _ => redis::Client::open(url.as_str())?,
                };
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connection_timeout))
                    .set_response_timeout(Some(config.response_timeout))
                    // One reconnect attempt per failure: a command never waits through a
                    // long reconnect loop (fail fast), the next command tries again.
                    .set_number_of_retries(1)
                    .set_min_delay(std::time::Duration::from_millis(10))
                    .set_max_delay(config.connection_timeout);
                Ok(Connection::Standalone(
                    ConnectionManager::new_with_config(client, manager).await?,
                ))
            }
            Topology::Cluster(nodes) => {
                let builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str));
                #[cfg(feature = "tls-rustls")]
                let builder = match &config.root_certificate {
                    Some(pem) => builder.certs(certificates(pem)),
                    None => builder,
                };
                let client = builder
                    .connection_timeout(config.connection_timeout)
                    .response_timeout(config.response_timeout)
                    // No client-side retries: a retry after a dropped connection would run a
                    // write twice. Redirects (MOVED/ASK) surface as retryable errors instead.
                    .retries(0)
                    .build()?;
                Ok(Connection::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

/// Trust `pem` as the root for the servers' certificates (no client certificate).
#[cfg(feature = "tls-rustls")]
fn certificates(pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Standalone(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Standalone(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}
