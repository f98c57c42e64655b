//! The simulator's data set: deterministic from a seed, shaped like a real DDM estate.
//!
//! Each region has its built-in project (named after the region) and sub-projects
//! (`{region}_{name}`); each project has DDM instances; each instance has one `auto_metadata`
//! backup a day, taken between 02:00 and 03:00 GMT+08:00, and now and then a `metadata` backup
//! taken on a key operation. Backups are stored compactly and rendered on request.

use std::collections::HashMap;

use crate::config::DDM_REGIONS;
use crate::ddm::model::{BackupInfo, format_upstream_time};

/// The regions the simulator hands out first; then the rest of DDM's, in the SDK's order.
const FIRST_REGIONS: &[&str] = &[
    "cn-north-4",
    "cn-east-3",
    "cn-south-1",
    "ap-southeast-1",
    "eu-west-101",
];

/// The name of the simulator's region `i` (from 0), if DDM has that many.
pub fn region_name(i: usize) -> Option<&'static str> {
    let rest = DDM_REGIONS.iter().filter(|r| !FIRST_REGIONS.contains(r));
    FIRST_REGIONS.iter().chain(rest).nth(i).copied()
}

const SUB_PROJECT_NAMES: &[&str] = &[
    "payments",
    "orders",
    "analytics",
    "billing",
    "search",
    "identity",
    "inventory",
    "logistics",
];

const INSTANCE_STATUSES: &[&str] = &[
    "RUNNING", "RUNNING", "RUNNING", "RUNNING", "normal", "FROZEN",
];

/// 2026-11-01T00:00:00Z: the data set's "today" unless told otherwise.
pub const DEFAULT_NOW: i64 = 1_793_491_200;

/// How big the data set is, and its seed.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSpec {
    pub regions: usize,
    pub projects_per_region: usize,
    pub instances_per_project: usize,
    pub backups_per_instance: usize,
    pub seed: u64,
    /// Unix seconds of the newest day in the data set.
    pub now: i64,
}

impl Default for DataSpec {
    /// The demo: 4 regions × 6 projects × 3 instances × 30 backups.
    fn default() -> Self {
        DataSpec {
            regions: 4,
            projects_per_region: 6,
            instances_per_project: 3,
            backups_per_instance: 30,
            seed: 42,
            now: DEFAULT_NOW,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(String);

impl DataSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.regions == 0 || self.regions > DDM_REGIONS.len() {
            return Err(SpecError(format!(
                "regions must be 1 to {}, not {}",
                DDM_REGIONS.len(),
                self.regions
            )));
        }
        if self.projects_per_region == 0 {
            return Err(SpecError("projects per region must be at least 1".into()));
        }
        let total = self.regions as u128
            * self.projects_per_region as u128
            * self.instances_per_project as u128
            * self.backups_per_instance as u128;
        if total > 20_000_000 {
            return Err(SpecError(format!(
                "{total} backups is more than the 20,000,000 the simulator holds"
            )));
        }
        Ok(())
    }

    pub fn total_backups(&self) -> usize {
        self.regions
            * self.projects_per_region
            * self.instances_per_project
            * self.backups_per_instance
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    AutoMetadata,
    Metadata,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::AutoMetadata => "auto_metadata",
            BackupKind::Metadata => "metadata",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimInstance {
    pub id: String,
    pub name: String,
    pub status: &'static str,
    /// Unix seconds.
    pub created: i64,
}

/// One backup, compact: strings are rendered on request.
#[derive(Debug, Clone, PartialEq)]
pub struct SimBackup {
    pub id: u128,
    pub instance: u32,
    pub kind: BackupKind,
    pub created: i64,
    pub updated: i64,
    pub size_kb: f64,
}

#[derive(Debug, Clone)]
pub struct SimProject {
    pub id: String,
    pub name: String,
    pub region: String,
    /// Minutes east of UTC in which this project's times are written (0 or 480).
    pub utc_offset_minutes: i32,
    pub instances: Vec<SimInstance>,
    /// Newest first.
    pub backups: Vec<SimBackup>,
    /// `backups[i]` as JSON, rendered once so that serving a page costs little.
    pub rendered: Vec<Box<str>>,
}

impl SimProject {
    /// The instances the instance list shows: newest `created` first, ties by id.
    pub fn listed_instances(&self) -> Vec<&SimInstance> {
        let mut listed: Vec<&SimInstance> = self.instances.iter().collect();
        listed.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        listed
    }

    pub fn backup_id(b: &SimBackup) -> String {
        format!("{:032x}br09", b.id)
    }

    /// The backup as the upstream writes it.
    pub fn render(&self, b: &SimBackup) -> BackupInfo<'static> {
        let instance = &self.instances[b.instance as usize];
        let day = format_upstream_time(b.created, self.utc_offset_minutes);
        let (name, description) = match b.kind {
            BackupKind::AutoMetadata => (
                format!("{}-auto-{}", instance.name, &day[..10].replace('-', "")),
                "auto metadata backup".to_owned(),
            ),
            BackupKind::Metadata => (
                format!(
                    "{}-{}",
                    instance.name,
                    day[..19].replace(['-', ':', 'T'], "")
                ),
                "metadata backup before a key operation".to_owned(),
            ),
        };
        BackupInfo {
            id: Some(Self::backup_id(b).into()),
            name: Some(name.into()),
            description: Some(description.into()),
            status: Some("normal".into()),
            instance_id: Some(instance.id.clone().into()),
            instance_name: Some(instance.name.clone().into()),
            instance_status: Some(instance.status.into()),
            file_size: Some(b.size_kb),
            created: Some(day.into()),
            updated: Some(format_upstream_time(b.updated, self.utc_offset_minutes).into()),
            backup_type: Some(b.kind.as_str().into()),
        }
    }

    /// The backup's JSON, as the upstream writes it.
    pub fn render_json(&self, b: &SimBackup) -> Box<str> {
        serde_json::to_string(&self.render(b))
            .unwrap_or_default()
            .into()
    }
}

/// All projects of all regions.
#[derive(Debug, Clone)]
pub struct DataSet {
    pub regions: Vec<String>,
    pub projects: Vec<SimProject>,
    by_id: HashMap<String, usize>,
}

impl DataSet {
    pub fn generate(spec: &DataSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        let mut rng = fastrand::Rng::with_seed(spec.seed);
        let regions: Vec<String> = (0..spec.regions)
            .filter_map(region_name)
            .map(str::to_owned)
            .collect();
        let mut projects = Vec::new();
        for region in &regions {
            for p in 0..spec.projects_per_region {
                let name = match p {
                    0 => region.clone(),
                    p => {
                        let base = SUB_PROJECT_NAMES[(p - 1) % SUB_PROJECT_NAMES.len()];
                        match (p - 1) / SUB_PROJECT_NAMES.len() {
                            0 => format!("{region}_{base}"),
                            round => format!("{region}_{base}{}", round + 1),
                        }
                    }
                };
                projects.push(generate_project(&mut rng, spec, region, name));
            }
        }
        let by_id = projects
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect();
        Ok(DataSet {
            regions,
            projects,
            by_id,
        })
    }

    pub fn project(&self, id: &str) -> Option<&SimProject> {
        self.by_id.get(id).map(|&i| &self.projects[i])
    }

    pub fn project_index(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }
}

fn generate_project(
    rng: &mut fastrand::Rng,
    spec: &DataSpec,
    region: &str,
    name: String,
) -> SimProject {
    let id = format!("{:032x}", rng.u128(..));
    let utc_offset_minutes = if rng.u8(..3) == 0 { 480 } else { 0 };
    let short = name.rsplit('_').next().unwrap_or(&name).to_owned();
    let instances: Vec<SimInstance> = (0..spec.instances_per_project)
        .map(|i| {
            let id = rng.u128(..);
            SimInstance {
                id: format!("{id:032x}in09"),
                name: format!("ddm-{short}-{:02}", i + 1),
                status: INSTANCE_STATUSES[rng.usize(..INSTANCE_STATUSES.len())],
                // Older than its backups (from the id: the data set's other draws stay as
                // they were).
                created: spec.now
                    - (spec.backups_per_instance as i64 + 10) * 86_400
                    - (id % (400 * 86_400)) as i64,
            }
        })
        .collect();
    let today = spec.now - spec.now.rem_euclid(86_400);
    let mut backups = Vec::with_capacity(spec.instances_per_project * spec.backups_per_instance);
    for instance in 0..instances.len() {
        // The daily job runs 02:00–03:00 GMT+08:00, i.e. 18:00–19:00 UTC the day before.
        let minute = i64::from(rng.u16(..60));
        let base_size = 2.0 + rng.f64() * 10.0;
        for n in 0..spec.backups_per_instance {
            let day = today - 86_400 * n as i64;
            let (kind, created) = if rng.u8(..8) == 0 {
                (BackupKind::Metadata, day - 86_400 + rng.i64(0..86_400))
            } else {
                (
                    BackupKind::AutoMetadata,
                    day - 6 * 3600 + minute * 60 + rng.i64(0..60),
                )
            };
            // Whole sizes are written as integers by the upstream: keep some.
            let size_kb = if rng.u8(..16) == 0 {
                base_size.round()
            } else {
                ((base_size + rng.f64()) * 1e6).round() / 1e6
            };
            backups.push(SimBackup {
                id: rng.u128(..),
                instance: instance as u32,
                kind,
                created,
                updated: created + rng.i64(5..60),
                size_kb,
            });
        }
    }
    backups.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
    let mut project = SimProject {
        id,
        name,
        region: region.to_owned(),
        utc_offset_minutes,
        instances,
        backups,
        rendered: Vec::new(),
    };
    project.rendered = project
        .backups
        .iter()
        .map(|b| project.render_json(b))
        .collect();
    project
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sized_as_asked() {
        let spec = DataSpec {
            regions: 2,
            projects_per_region: 10,
            instances_per_project: 2,
            backups_per_instance: 5,
            ..Default::default()
        };
        let a = DataSet::generate(&spec).unwrap();
        let b = DataSet::generate(&spec).unwrap();
        assert_eq!(a.projects.len(), 20);
        assert_eq!(
            a.projects.iter().map(|p| p.backups.len()).sum::<usize>(),
            spec.total_backups()
        );
        for (pa, pb) in a.projects.iter().zip(&b.projects) {
            assert_eq!((&pa.id, &pa.backups), (&pb.id, &pb.backups));
        }
        assert_eq!(a.projects[0].name, "cn-north-4");
        assert_eq!(a.projects[1].name, "cn-north-4_payments");
        assert_eq!(a.projects[9].name, "cn-north-4_payments2");
        assert!(a.projects.iter().all(|p| {
            p.id.len() == 32
                && p.id
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        }));
        let p = &a.projects[0];
        assert!(
            p.backups.windows(2).all(|w| w[0].created >= w[1].created),
            "newest first"
        );
        let info = p.render(&p.backups[0]);
        assert!(info.id.unwrap().ends_with("br09"));
        assert!(info.instance_id.unwrap().ends_with("in09"));
    }

    #[test]
    fn every_region_handed_out_is_a_ddm_region_once() {
        let names: Vec<_> = (0..DDM_REGIONS.len())
            .map(|i| region_name(i).unwrap())
            .collect();
        assert_eq!(
            &names[..4],
            ["cn-north-4", "cn-east-3", "cn-south-1", "ap-southeast-1"]
        );
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), DDM_REGIONS.len());
        assert!(
            names
                .iter()
                .all(|r| crate::config::default_endpoint(r).is_some())
        );
        assert_eq!(region_name(DDM_REGIONS.len()), None);
    }

    #[test]
    fn bad_sizes_are_refused() {
        for spec in [
            DataSpec {
                regions: 0,
                ..Default::default()
            },
            DataSpec {
                regions: 99,
                ..Default::default()
            },
            DataSpec {
                projects_per_region: 0,
                ..Default::default()
            },
            DataSpec {
                backups_per_instance: 1 << 40,
                ..Default::default()
            },
        ] {
            assert!(DataSet::generate(&spec).is_err());
        }
    }
}
