//! A minimal backupgw client: every backup of some regions, and the targets that failed.
//!
//!     cargo run --example list_backups -- http://127.0.0.1:50051 cn-north-4
//!
//! Set BACKUPGW_API_KEY when the gateway has [[callers]].

use backupgw::pb::ListBackupsRequest;
use backupgw::pb::backup_gateway_client::BackupGatewayClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let regions: Vec<String> = args.collect();

    let mut client = BackupGatewayClient::connect(addr).await?;
    let mut request = tonic::Request::new(ListBackupsRequest {
        regions,
        ..Default::default()
    });
    request.set_timeout(std::time::Duration::from_secs(60));
    if let Ok(key) = std::env::var("BACKUPGW_API_KEY") {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse()?);
    }

    let mut stream = client.list_backups(request).await?.into_inner();
    while let Some(message) = stream.message().await? {
        for b in &message.backups {
            let created = b.created.map(|t| t.to_string()).unwrap_or_default();
            println!(
                "{}\t{}\t{}\t{}\t{created}",
                b.region, b.instance_name, b.name, b.status
            );
        }
        for t in message.targets.iter().filter(|t| !t.ok) {
            let e = t.error.clone().unwrap_or_default();
            eprintln!(
                "failed: {} ({}): {} {}",
                t.project_id, t.region, e.kind, e.message
            );
        }
        if let Some(s) = message.summary {
            eprintln!(
                "{} backups; {} targets ok, {} failed",
                s.backups, s.targets_ok, s.targets_failed
            );
        }
    }
    Ok(())
}
