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

/// Member accounts' names, in order; then `member-07`, `member-08`, …
const ACCOUNT_NAMES: &[&str] = &[
    "payments-prod",
    "orders-prod",
    "analytics-prod",
    "legacy-erp",
    "sandbox-dev",
    "billing-prod",
];

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

fn generate_accounts(spec: &DataSpec, regions: &[String]) -> Vec<SimAccount> {
    (0..spec.accounts)
        .map(|i| {
            let name = match ACCOUNT_NAMES.get(i) {
                Some(n) => (*n).to_owned(),
                None => format!("member-{:02}", i + 1),
            };
            let half = |salt: &str| {
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&(spec.seed, salt, &name), &mut hasher);
                std::hash::Hasher::finish(&hasher)
            };
            let id = format!("{:016x}{:016x}", half("account"), half("account id"));
            let agency = |regions: Option<Vec<String>>| {
                Some(SimAgency {
                    name: SIM_AGENCY.to_owned(),
                    regions,
                })
            };
            let (status, agency) = match i {
                2 => ("active", agency(Some(regions[..1].to_vec()))),
                3 => ("active", None),
                4 => ("suspended", agency(None)),
                _ => ("active", agency(None)),
            };
            SimAccount {
                id,
                name,
                status,
                agency,
            }
        })
        .collect()
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
        let accounts = generate_accounts(spec, &regions);
        let mut projects = Vec::new();
        for account in 0..=accounts.len() {
            // Our own projects' ids depend on the seed and the name only, as they always did.
            let owner = account.checked_sub(1).map(|i| accounts[i].name.as_str());
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
                    let mut project = generate_project(spec, owner, region, name);
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

/// Adds an instance's backups (the project sorts them): a daily one from where its class says
/// they stop, a metadata one now and then, and one at deletion.
fn instance_backups(
    rng: &mut fastrand::Rng,
    spec: &DataSpec,
    window: i64,
    index: u32,
    class: Class,
    backups: &mut Vec<SimBackup>,
) {
    let minute = i64::from(rng.u16(..60));
    let base_size = 2.0 + rng.f64() * 10.0;
    let (skip_days, deleted_at) = match class {
        Class::Stale { days } => (i64::from(days), None),
        Class::Deleted { days } => (
            i64::from(days),
            Some(window - i64::from(days) * 86_400 + rng.i64(3600..20 * 3600)),
        ),
        _ => (0, None),
    };
    let mut push = |kind: BackupKind, created: i64, rng: &mut fastrand::Rng| {
        // Whole sizes are written as integers by the upstream: keep some.
        let size_kb = if rng.u8(..16) == 0 {
            base_size.round()
        } else {
            ((base_size + rng.f64()) * 1e6).round() / 1e6
        };
        let status = if rng.u8(..50) == 0 {
            ODD_BACKUP_STATUSES[rng.usize(..ODD_BACKUP_STATUSES.len())]
        } else {
            "normal"
        };
        backups.push(SimBackup {
            id: rng.u128(..),
            instance: index,
            kind,
            created,
            updated: created + rng.i64(5..60),
            size_kb,
            status,
        });
    };
    let mut left = spec.backups_per_instance;
    if let Some(at) = deleted_at
        && left > 0
    {
        // Deleting an instance takes a metadata backup first.
        push(BackupKind::Metadata, at, rng);
        left -= 1;
    }
    let mut day = skip_days;
    while left > 0 {
        let daily = window - day * 86_400 + minute * 60 + rng.i64(0..60);
        push(BackupKind::AutoMetadata, daily, rng);
        left -= 1;
        // Now and then a key operation that day, in addition to the daily backup.
        if left > 0 && rng.u8(..8) == 0 {
            push(BackupKind::Metadata, daily - rng.i64(3600..20 * 3600), rng);
            left -= 1;
        }
        day += 1;
    }
}

/// Statuses of the backups that are not `normal`.
const ODD_BACKUP_STATUSES: &[&str] = &["creating", "failed", "restoring"];

/// The latest daily backup window (02:00–03:00 GMT+08:00 is 18:00–19:00 UTC) that has passed
/// at `now`.
fn latest_window(now: i64) -> i64 {
    let today = now - now.rem_euclid(86_400) + 18 * 3600;
    if today + 3600 <= now {
        today
    } else {
        today - 86_400
    }
}

/// A project's instances, each of a class that decides its backups.
fn generate_instances(
    rng: &mut fastrand::Rng,
    spec: &DataSpec,
    short: &str,
    window: i64,
) -> Vec<SimInstance> {
    let mut instances = Vec::new();
    for i in 0..spec.instances_per_project {
        let id = rng.u128(..);
        let class = match rng.u8(..10) {
            0 => Class::Stale {
                days: rng.u32(3..=10),
            },
            1 => Class::Deleted {
                days: rng.u32(2..=20),
            },
            _ => Class::Protected,
        };
        instances.push(SimInstance {
            id: format!("{id:032x}in09"),
            name: format!("ddm-{short}-{:02}", i + 1),
            status: INSTANCE_STATUSES[rng.usize(..INSTANCE_STATUSES.len())],
            // Older than its backups.
            created: window
                - (spec.backups_per_instance as i64 + 30) * 86_400
                - rng.i64(0..400 * 86_400),
            class,
        });
    }
    instances
}

fn generate_project(
    spec: &DataSpec,
    account: Option<&str>,
    region: &str,
    name: String,
) -> SimProject {
    // Its own random stream, from the seed, its account and its name: a project's id does not
    // move when the data set grows.
    let mut hasher = std::hash::DefaultHasher::new();
    match account {
        None => std::hash::Hash::hash(&(spec.seed, &name), &mut hasher),
        Some(a) => std::hash::Hash::hash(&(spec.seed, a, &name), &mut hasher),
    }
    let rng = &mut fastrand::Rng::with_seed(std::hash::Hasher::finish(&hasher));
    let id = format!("{:032x}", rng.u128(..));
    let utc_offset_minutes = if rng.u8(..3) == 0 { 480 } else { 0 };
    let short = name.rsplit('_').next().unwrap_or(&name).to_owned();
    let window = latest_window(spec.now);
    let mut instances = generate_instances(rng, spec, &short, window);
    let mut backups = Vec::with_capacity(spec.instances_per_project * spec.backups_per_instance);
    for (index, instance) in instances.iter().enumerate() {
        instance_backups(
            rng,
            spec,
            window,
            index as u32,
            instance.class,
            &mut backups,
        );
    }
    // One project in three has a new instance without a backup yet.
    if rng.u8(..3) == 0 {
        let id = rng.u128(..);
        instances.push(SimInstance {
            id: format!("{id:032x}in09"),
            name: format!("ddm-{short}-new"),
            status: "RUNNING",
            created: spec.now - rng.i64(600..2 * 86_400),
            class: Class::Unprotected,
        });
    }
    backups.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
    let mut project = SimProject {
        account: 0,
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
