//! The demo (no command): the built-in simulator and the gateway in front of it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use backupgw::cache::PageCache;
use backupgw::callers::CallerBook;
use backupgw::config::DEFAULT_LISTEN;
use backupgw::ddm::{ClientOptions, DdmClient};
use backupgw::inventory::{Inventory, Limits};
use backupgw::metrics::Metrics;
use backupgw::server::{self, Generation, Live, ServerOptions};
use backupgw::sim::{DataSet, SimOptions, Simulator};
use tokio::net::TcpListener;

use super::signals;
use crate::DataArgs;

pub async fn run_demo(listen: SocketAddr, data: &DataArgs) -> Result<()> {
    let credentials = backupgw::demo::DemoCredentials::random();
    let set = DataSet::generate(&data.spec()).context("simulator data set")?;
    let options = SimOptions {
        auth: credentials.sim_auth(),
        ..data.sim_options()?
    };
    let sim = Simulator::bind(set, options, IpAddr::from([127, 0, 0, 1])).await?;
    let setup = backupgw::demo::demo_setup(&sim, &credentials);
    let metrics = Metrics::new();
    let inventory = Arc::new(
        Inventory::new(
            setup.targets,
            DdmClient::new(ClientOptions::default())?.with_metrics(metrics.clone()),
            PageCache::new(Duration::from_secs(60), 64 << 20).with_metrics(metrics.clone()),
            Limits::default(),
        )
        .with_metrics(metrics.clone()),
    );
    let _discovery = backupgw::discovery::start(
        Arc::clone(&inventory),
        setup.discoveries,
        Duration::from_secs(600),
    );
    let _accounts = setup
        .accounts
        .map(|source| backupgw::accounts::start(Arc::clone(&inventory), vec![source]));
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} (is another backupgw running? try --listen 127.0.0.1:0)")
    })?;
    let addr = listener.local_addr()?;
    print_banner(&sim, &credentials, addr);
    let live = Live::new(
        Generation {
            inventory,
            callers: Arc::new(CallerBook::open()),
            default_deadline: ServerOptions::default().default_deadline,
        },
        metrics,
    );
    let (_, stop) = signals();
    backupgw::memory::start_trimming();
    server::serve(listener, live, &ServerOptions::default(), stop).await?;
    Ok(())
}

/// What the demo runs, the credentials the simulator accepts, and what to try.
fn print_banner(sim: &Simulator, credentials: &backupgw::demo::DemoCredentials, addr: SocketAddr) {
    let set = sim.data();
    println!(
        "backupgw demo: the built-in DDM simulator with {} regions, {} accounts, {} projects, {} backups",
        set.regions.len(),
        set.accounts.len() + 1,
        set.projects.len(),
        set.projects.iter().map(|p| p.backups.len()).sum::<usize>()
    );
    for (region, sim_addr) in sim.endpoints() {
        println!("  simulator {region:<16} http://{sim_addr}  (DDM, IAM and Organizations)");
    }
    println!("  the simulator accepts (demo credentials, made up for this run):");
    println!("    X-Auth-Token  {}", credentials.token);
    println!(
        "    IAM user      {} / {} in domain {}",
        credentials.user, credentials.password, credentials.domain
    );
    println!(
        "    AK/SK         {} / {}",
        credentials.access_key, credentials.secret_key
    );
    let regions = &set.regions;
    println!(
        "  the gateway reaches {} by token, {} by IAM password, {} by AK/SK, and discovers the rest through IAM",
        regions[0],
        regions.get(1).map_or("-", String::as_str),
        regions.get(2).map_or("-", String::as_str)
    );
    if !set.accounts.is_empty() {
        println!(
            "  and the organization's {} member accounts through their agency {} ({}: no agency, {}: suspended, {}: only {})",
            set.accounts.len(),
            backupgw::sim::data::SIM_AGENCY,
            set.accounts.get(3).map_or("-", |a| a.name.as_str()),
            set.accounts.get(4).map_or("-", |a| a.name.as_str()),
            set.accounts.get(2).map_or("-", |a| a.name.as_str()),
            regions[0],
        );
    }
    println!("backupgw listening on {addr}");
    println!("\nTry:");
    println!("  grpcurl -plaintext {addr} list");
    println!("  grpcurl -plaintext {addr} backupgw.v1.BackupGateway/ListTargets");
    println!(
        "  grpcurl -plaintext -d '{{\"regions\":[\"{}\"]}}' {addr} backupgw.v1.BackupGateway/ListBackups",
        set.regions[0]
    );
    println!("  grpcurl -plaintext {addr} grpc.health.v1.Health/Check");
    let client = if addr.to_string() == DEFAULT_LISTEN {
        String::new()
    } else {
        format!(" --addr http://{addr}")
    };
    println!("  backupgw report{client} --only stale,unprotected,orphaned");
    if !set.accounts.is_empty() {
        println!("  backupgw targets{client} --account legacy-erp,sandbox-dev");
    }
    println!(
        "  backupgw ls{client} --region {} --newest-first",
        set.regions[0]
    );
}
