//! The embedded default: the gateway pointed at the built-in simulator.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use crate::ddm::Credential;
use crate::inventory::{Target, TargetSource};
use crate::sim::Simulator;

/// A target for every project of a running simulator, all with one credential.
pub fn sim_targets(sim: &Simulator, credential: Arc<Credential>) -> Vec<Target> {
    sim.data()
        .projects
        .iter()
        .map(|p| Target {
            project_id: p.id.as_str().into(),
            project_name: p.name.clone(),
            region: p.region.clone(),
            endpoint: sim.endpoint(&p.region).unwrap_or_default().into(),
            credential: Arc::clone(&credential),
            source: TargetSource::Config,
        })
        .collect()
}

/// A gateway configuration file for a running simulator; its token is read from `token_file`.
pub fn sim_config_toml(sim: &Simulator, listen: &str, token_file: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# A backupgw configuration for the simulator it was written by."
    );
    let _ = writeln!(out, "listen = \"{listen}\"\n");
    for (region, addr) in sim.endpoints() {
        let _ = writeln!(out, "[regions.{region}]\nendpoint = \"http://{addr}\"\n");
    }
    let _ = writeln!(
        out,
        "[credentials.sim]\nkind = \"token\"\ntoken_file = {:?}\n",
        token_file.display().to_string()
    );
    for p in &sim.data().projects {
        let _ = writeln!(
            out,
            "[[projects]]\nid = \"{}\"\nname = \"{}\"\nregion = \"{}\"\ncredential = \"sim\"\n",
            p.id, p.name, p.region
        );
    }
    out
}
