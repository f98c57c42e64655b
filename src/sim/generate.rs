//! Generating the simulator's data set (`data.rs`): member accounts, projects, their instances
//! and backups, each from its own random stream seeded by the data set's seed and its name.

use super::data::{
    BackupKind, Class, DataSpec, SIM_AGENCY, SimAccount, SimAgency, SimBackup, SimInstance,
    SimProject,
};

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

/// Our project `p` of `region`: the built-in one (named after the region), then sub-projects.
pub(super) fn project_name(region: &str, p: usize) -> String {
    match p {
        0 => region.to_owned(),
        p => {
            let base = SUB_PROJECT_NAMES[(p - 1) % SUB_PROJECT_NAMES.len()];
            match (p - 1) / SUB_PROJECT_NAMES.len() {
                0 => format!("{region}_{base}"),
                round => format!("{region}_{base}{}", round + 1),
            }
        }
    }
}

const INSTANCE_STATUSES: &[&str] = &[
    "RUNNING", "RUNNING", "RUNNING", "RUNNING", "normal", "FROZEN",
];

/// Member accounts' names, in order; then `member-07`, `member-08`, …
const ACCOUNT_NAMES: &[&str] = &[
    "payments-prod",
    "orders-prod",
    "analytics-prod",
    "legacy-erp",
    "sandbox-dev",
    "billing-prod",
];

/// The organization's member accounts.
pub(super) fn accounts(spec: &DataSpec, regions: &[String]) -> Vec<SimAccount> {
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
fn instances(
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

/// A project of `account` (ours: `None`) in `region`: its instances and their backups.
pub(super) fn project(
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
    let mut instances = instances(rng, spec, &short, window);
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
