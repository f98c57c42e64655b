//! The simulator's data set: deterministic from a seed, shaped like a real DDM estate.
//!
//! Each region has its built-in project (named after the region) and sub-projects
//! (`{region}_{name}`); each project has DDM instances. The data set is relative to `now`
//! (the real clock unless pinned): an instance has one `auto_metadata` backup a day, taken
//! between 02:00 and 03:00 GMT+08:00, up to the latest such window before `now`, and now and then
//! a `metadata` backup taken on a key operation, in addition to that day's. Backups are stored
//! compactly and rendered on request.
//!
//! Every data set holds each protection class, deterministically (see `Class`): most instances
//! are backed up daily; some stopped days ago; some were deleted (gone from the instance list, a
//! `metadata` backup taken at deletion, their backups kept); one project in three has an
//! instance created recently, with no backup yet; one backup in fifty is not `normal`. Project
//! ids depend on the seed and the project's name only, not on the data set's sizes.

use std::collections::HashMap;

use super::generate;
use crate::config::DDM_REGIONS;
use crate::ddm::model::BackupInfo;
use crate::ddm::time::format_upstream_time;

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

/// The real clock, to the hour: data sets made moments apart are the same.
pub fn current_hour() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    now - now.rem_euclid(3600)
}

/// Why an instance has the backups it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Backed up every day, up to the latest daily window.
    Protected,
    /// Its daily backups stopped this many days ago.
    Stale { days: u32 },
    /// Deleted this many days ago: no longer listed, its backups kept.
    Deleted { days: u32 },
    /// Created recently (or its backups keep failing): listed, no backup.
    Unprotected,
}

/// How big the data set is, and its seed.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSpec {
    pub regions: usize,
    pub projects_per_region: usize,
    pub instances_per_project: usize,
    pub backups_per_instance: usize,
    pub seed: u64,
    /// Unix seconds the data set is relative to (the real clock to the hour by default).
    pub now: i64,
    /// Member accounts of the organization besides our own, each with projects shaped like
    /// ours (see `SimAccount` for the ones in trouble).
    pub accounts: usize,
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
            now: current_hour(),
            accounts: 0,
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
        if self.accounts > 1000 {
            return Err(SpecError(format!(
                "accounts must be at most 1000, not {}",
                self.accounts
            )));
        }
        let total = (self.accounts as u128 + 1)
            * self.regions as u128
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
        (self.accounts + 1)
            * self.regions
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
    pub class: Class,
}

impl SimInstance {
    /// Whether the instance list shows it.
    pub fn listed(&self) -> bool {
        !matches!(self.class, Class::Deleted { .. })
    }
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
    /// `normal`, but now and then not.
    pub status: &'static str,
}

#[derive(Debug, Clone)]
pub struct SimProject {
    /// The account it belongs to: 0 is ours, members from 1 (`DataSet::accounts[i - 1]`).
    pub account: u32,
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
        let mut listed: Vec<&SimInstance> = self.instances.iter().filter(|i| i.listed()).collect();
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
            status: Some(b.status.into()),
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

/// The agency every member account creates for us (the name Organizations' landing zones use).
pub const SIM_AGENCY: &str = "OrganizationAccountAccessAgency";

/// A member account of the organization. Deterministic trouble: the third member's agency
/// covers only the first region, the fourth has no agency, the fifth is suspended.
#[derive(Debug, Clone)]
pub struct SimAccount {
    pub id: String,
    pub name: String,
    /// `active` or `suspended`.
    pub status: &'static str,
    /// The agency trusting our account; `None`: the account never created it.
    pub agency: Option<SimAgency>,
}

#[derive(Debug, Clone)]
pub struct SimAgency {
    pub name: String,
    /// Regions the agency's permissions cover; `None`: every region.
    pub regions: Option<Vec<String>>,
}

/// All projects of all regions, ours and the member accounts'.
#[derive(Debug, Clone)]
pub struct DataSet {
    pub regions: Vec<String>,
    pub projects: Vec<SimProject>,
    /// The organization's member accounts (ours is not among them).
    pub accounts: Vec<SimAccount>,
    by_id: HashMap<String, usize>,
}

impl DataSet {
    pub fn generate(spec: &DataSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        let regions: Vec<String> = (0..spec.regions)
            .filter_map(region_name)
            .map(str::to_owned)
            .collect();
        let accounts = generate::accounts(spec, &regions);
        let mut projects = Vec::new();
        for account in 0..=accounts.len() {
            // Our own projects' ids depend on the seed and the name only, as they always did.
            let owner = account.checked_sub(1).map(|i| accounts[i].name.as_str());
            for region in &regions {
                for p in 0..spec.projects_per_region {
                    let name = generate::project_name(region, p);
                    let mut project = generate::project(spec, owner, region, name);
                    project.account = account as u32;
                    projects.push(project);
                }
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
            accounts,
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
    fn every_protection_class_is_there_and_ids_do_not_move_with_sizes() {
        let spec = DataSpec::default();
        let set = DataSet::generate(&spec).unwrap();
        let mut seen = [0usize; 4];
        for p in &set.projects {
            for (index, i) in p.instances.iter().enumerate() {
                let own: Vec<_> = p
                    .backups
                    .iter()
                    .filter(|b| b.instance as usize == index)
                    .collect();
                let newest_auto = own
                    .iter()
                    .filter(|b| b.kind == BackupKind::AutoMetadata)
                    .map(|b| b.created)
                    .max();
                match i.class {
                    Class::Protected => {
                        seen[0] += 1;
                        assert!(spec.now - newest_auto.unwrap() < 25 * 3600, "{i:?}");
                    }
                    Class::Stale { .. } => {
                        seen[1] += 1;
                        assert!(spec.now - own[0].created > 26 * 3600, "{i:?}");
                    }
                    Class::Deleted { .. } => {
                        seen[2] += 1;
                        assert!(!i.listed());
                        assert_eq!(own[0].kind, BackupKind::Metadata, "taken at deletion");
                    }
                    Class::Unprotected => {
                        seen[3] += 1;
                        assert!(own.is_empty() && i.listed());
                    }
                }
            }
        }
        assert!(seen.iter().all(|n| *n > 0), "{seen:?}");
        assert!(
            seen[0] > seen[1] + seen[2] + seen[3],
            "most are protected: {seen:?}"
        );
        let statuses: std::collections::HashSet<_> = set
            .projects
            .iter()
            .flat_map(|p| p.backups.iter().map(|b| b.status))
            .collect();
        assert!(
            statuses.len() > 1 && statuses.contains("normal"),
            "{statuses:?}"
        );

        let bigger = DataSpec {
            instances_per_project: 7,
            backups_per_instance: 50,
            projects_per_region: 8,
            ..spec.clone()
        };
        let other = DataSet::generate(&bigger).unwrap();
        for p in &set.projects {
            assert_eq!(other.project(&p.id).map(|o| &o.name), Some(&p.name));
        }
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
