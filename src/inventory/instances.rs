//! A target's instance list, read through the same limits, retries, auth and cache as its
//! backup pages.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::time::Instant;

use super::{Inventory, Target};
use crate::cache::{Fresh, InstancesKey, Origin};
use crate::ddm::{DdmError, Gate, InstanceList, InstancesRequest};

impl Inventory {
    /// The instances of `target`, from the cache when younger than `max_age`. Counts the HTTP
    /// requests sent in `sent`; whether it came from the cache is the second value.
    pub async fn instances(
        &self,
        target: &Target,
        max_age: Option<Duration>,
        deadline: Option<Instant>,
        sent: &AtomicU64,
    ) -> Result<(Arc<Fresh<InstanceList>>, Origin), DdmError> {
        let region = self.region_gate(&target.region);
        let health = self.health(target);
        let key = InstancesKey {
            endpoint: Arc::clone(&target.endpoint),
            target: target.key(),
        };
        let fetch = || async {
            let request = InstancesRequest {
                endpoint: &target.endpoint,
                project_id: &target.project_id,
                region: &target.region,
                deadline,
                sent,
                gate: Gate {
                    global: Some(&self.upstream_slots),
                    region: region.slots.as_ref(),
                    pace: region.pace.as_ref(),
                },
                backoff_until: Some(&health.backoff_until_ms),
            };
            self.client
                .list_instances(&request, &target.credential)
                .await
        };
        self.cache
            .instances_or_fetch(key, max_age, fetch)
            .await
            .map_err(|shared| (*shared).clone())
    }
}
