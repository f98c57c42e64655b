//! Wiring: builds the inventory from settings and serves the gRPC API with health and
//! reflection (v1 and v1alpha, from the same descriptor sets, so grpcurl of any age works).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::api::Gateway;
use crate::cache::PageCache;
use crate::config::Settings;
use crate::ddm::{DdmClient, DdmError};
use crate::inventory::Inventory;
use crate::pb;
use crate::pb::backup_gateway_server::BackupGatewayServer;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

pub use crate::ddm::client::install_crypto_provider;

pub fn build_inventory(settings: &Settings) -> Result<Arc<Inventory>, DdmError> {
    let client = DdmClient::new(settings.client.clone())?;
    let cache = PageCache::new(settings.cache_ttl, settings.cache_max_bytes);
    Ok(Arc::new(Inventory::new(
        settings.targets.clone(),
        client,
        cache,
        settings.limits.clone(),
    )))
}

/// Runs the configured discoveries once, then keeps them fresh in the background.
pub async fn start_discovery(
    inventory: &Arc<Inventory>,
    settings: &Settings,
) -> Option<tokio::task::JoinHandle<()>> {
    if settings.discoveries.is_empty() {
        return None;
    }
    Some(
        crate::discovery::start(
            Arc::clone(inventory),
            settings.discoveries.clone(),
            settings.discovery_interval,
        )
        .await,
    )
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    inventory: Arc<Inventory>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<BackupGatewayServer<Gateway>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc.BadRequest, so grpcurl can show field violations.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(BackupGatewayServer::new(Gateway::new(inventory)))
        // tonic's own `tcp_nodelay` applies only to listeners it binds: without it, Nagle holds
        // a stream's last frames back until the client's delayed ACK.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}
