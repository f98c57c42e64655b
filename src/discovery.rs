//! Target discovery: a credential that says "all my projects" has them listed through IAM, each
//! project placed in the region its name says (`cn-north-4_payments` → `cn-north-4`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::callers::Patterns;
use crate::config::default_endpoint;
use crate::ddm::{Credential, DdmError};
use crate::inventory::{Found, Inventory, Target, TargetSource};

/// Which projects of a credential become targets.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub credential: Arc<Credential>,
    /// Regions to keep (globs).
    pub regions: Patterns,
    /// Endpoint overrides by region; other regions use DDM's public endpoint.
    pub endpoints: BTreeMap<String, String>,
}

/// The region a project lives in: its name up to the first `_`.
pub fn region_of(project_name: &str) -> &str {
    project_name.split('_').next().unwrap_or(project_name)
}

impl Discovery {
    /// Lists the credential's projects and turns the ones in wanted regions into targets.
    pub async fn targets(&self, http: &reqwest::Client) -> Result<Vec<Target>, DdmError> {
        let projects = self.credential.list_projects(http).await?;
        let mut targets = Vec::new();
        // One region name and one endpoint per region, however many projects it has.
        let mut interned: std::collections::HashMap<String, (Arc<str>, Arc<str>)> =
            std::collections::HashMap::new();
        for p in projects {
            // MOS is the object store's built-in project, not a region.
            if !p.enabled || p.name == "MOS" || !crate::config::is_project_id(&p.id) {
                continue;
            }
            let region = region_of(&p.name);
            if !self.regions.matches(region) {
                continue;
            }
            let Some(endpoint) = self
                .endpoints
                .get(region)
                .cloned()
                .or_else(|| default_endpoint(region))
            else {
                tracing::warn!(project = %p.id, region, "discovered a project in a region without a known endpoint; skipped");
                continue;
            };
            let (region, endpoint) = interned
                .entry(region.to_owned())
                .or_insert_with(|| (region.into(), endpoint.into()))
                .clone();
            targets.push(Target {
                project_id: p.id.as_str().into(),
                project_name: p.name.clone(),
                region,
                endpoint,
                credential: Arc::clone(&self.credential),
                source: TargetSource::Discovered,
                account: None,
            });
        }
        Ok(targets)
    }

    /// Discovers once and updates the inventory; a failure keeps the previous list.
    pub async fn refresh(&self, inventory: &Inventory) -> Result<usize, DdmError> {
        let http = inventory.client().http().clone();
        let found = match tokio::time::timeout(IAM_TIMEOUT, self.targets(&http)).await {
            Ok(found) => found,
            Err(_) => Err(DdmError::Timeout(IAM_TIMEOUT)),
        };
        inventory.record_discovery(
            self.credential.name(),
            "iam_projects",
            found
                .as_ref()
                .map(|f| Found {
                    targets: f.len(),
                    accounts: 0,
                })
                .map_err(ToString::to_string),
        );
        match found {
            Ok(found) => {
                let n = found.len();
                inventory.set_discovered(self.credential.name(), found);
                tracing::info!(
                    credential = self.credential.name(),
                    targets = n,
                    "discovered targets"
                );
                Ok(n)
            }
            Err(e) => {
                tracing::warn!(credential = self.credential.name(), error = %e, "discovery failed; keeping the previous targets");
                Err(e)
            }
        }
    }
}

/// How long one discovery (IAM token and project list) may take.
const IAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs every discovery now and again every `interval`, in the background: nothing waits for
/// IAM. Its outcome shows in the log and in `ListTargets`.
pub fn start(
    inventory: Arc<Inventory>,
    discoveries: Vec<Discovery>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for d in &discoveries {
                let _ = d.refresh(&inventory).await;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_from_names() {
        assert_eq!(region_of("cn-north-4"), "cn-north-4");
        assert_eq!(region_of("cn-north-4_payments"), "cn-north-4");
        assert_eq!(region_of("cn-north-4_a_b"), "cn-north-4");
    }
}
