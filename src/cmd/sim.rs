//! `backupgw sim`: the simulator alone, one listener per region.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use backupgw::config::DEFAULT_LISTEN;
use backupgw::sim::{DataSet, SimOptions, Simulator};

use super::shutdown_signal;
use crate::SimArgs;

pub async fn run_sim(args: SimArgs) -> Result<()> {
    // Whatever is not given is made up, and printed below.
    let random = backupgw::demo::DemoCredentials::random();
    let credentials = backupgw::demo::DemoCredentials {
        token: args.token.clone().unwrap_or(random.token),
        domain: args.iam_domain.clone(),
        user: args.iam_user.clone(),
        password: args.iam_password.clone().unwrap_or(random.password),
        access_key: args.access_key.clone().unwrap_or(random.access_key),
        secret_key: args.secret_key.clone().unwrap_or(random.secret_key),
    };
    if args.token_lifetime_seconds == 0 {
        anyhow::bail!("--token-lifetime-seconds must be at least 1");
    }
    let set = DataSet::generate(&args.data.spec()).context("simulator data set")?;
    let options = SimOptions {
        auth: backupgw::sim::AuthOptions {
            token_lifetime: Duration::from_secs(args.token_lifetime_seconds),
            ..credentials.sim_auth()
        },
        ..args.data.sim_options()?
    };
    let sim = Simulator::bind_from(set, options, args.host, args.base_port).await?;
    if let Some(path) = &args.write_config {
        let token_path = PathBuf::from(format!("{}.token", path.display()));
        write_private(&token_path, &credentials.token)?;
        let password_path = PathBuf::from(format!("{}.password", path.display()));
        write_private(&password_path, &credentials.password)?;
        let password_path = std::path::absolute(&password_path)?;
        let text = backupgw::demo::sim_config_toml(
            &sim,
            DEFAULT_LISTEN,
            &std::path::absolute(&token_path)?,
            Some((&credentials, &password_path)),
        );
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let set = sim.data();
    println!(
        "backupgw sim: {} regions, {} accounts, {} projects, {} backups",
        set.regions.len(),
        set.accounts.len() + 1,
        set.projects.len(),
        set.projects.iter().map(|p| p.backups.len()).sum::<usize>()
    );
    if args.token.is_none() {
        println!("  X-Auth-Token  {}", credentials.token);
    }
    if args.iam_password.is_none() {
        println!(
            "  IAM user      {} / {} in domain {}",
            credentials.user, credentials.password, credentials.domain
        );
    }
    if args.access_key.is_none() || args.secret_key.is_none() {
        println!(
            "  AK/SK         {} / {}",
            credentials.access_key, credentials.secret_key
        );
    }
    for (region, addr) in sim.endpoints() {
        println!("  {region:<16} http://{addr}  (DDM, IAM and Organizations)");
    }
    println!("sim ready");
    shutdown_signal().await;
    Ok(())
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
