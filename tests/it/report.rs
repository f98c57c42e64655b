//! SummarizeBackups: every protection class answered as the data set has it, under either
//! reading of the instance list's `offset`, and nothing guessed where a list failed.

use std::collections::{BTreeMap, HashMap};

use backupgw::pb;
use backupgw::sim::data::{Class, SimProject};
use backupgw::sim::instances::OffsetMode;
use backupgw::sim::{DataSpec, FaultPlan, Faults, Simulator};

use crate::common::*;

/// Two regions of three projects; 130 instances each, so instance lists take two pages.
fn spec() -> DataSpec {
    DataSpec {
        regions: 2,
        projects_per_region: 3,
        instances_per_project: 130,
        backups_per_instance: 3,
        ..DataSpec::default()
    }
}

/// What the report must say of each instance of a project, from the data set itself.
fn expected(p: &SimProject) -> BTreeMap<String, (pb::Protection, u64)> {
    p.instances
        .iter()
        .enumerate()
        .map(|(index, i)| {
            let backups = p
                .backups
                .iter()
                .filter(|b| b.instance as usize == index)
                .count();
            let protection = match i.class {
                Class::Protected => pb::Protection::Protected,
                Class::Stale { .. } => pb::Protection::Stale,
                Class::Deleted { .. } => pb::Protection::Orphaned,
                Class::Unprotected => pb::Protection::Unprotected,
            };
            (i.id.clone(), (protection, backups as u64))
        })
        .collect()
}

#[derive(Default)]
struct Report {
    rows: Vec<pb::InstanceSummary>,
    targets: Vec<pb::TargetResult>,
    totals: Vec<pb::ProtectionTotals>,
    status: Option<tonic::Status>,
}

async fn summarize(gw: &mut Gateway, request: pb::SummarizeBackupsRequest) -> Report {
    let mut stream = gw
        .client
        .summarize_backups(request)
        .await
        .unwrap()
        .into_inner();
    let mut out = Report::default();
    loop {
        match stream.message().await {
            Ok(Some(m)) => {
                assert!(out.totals.is_empty(), "a message after the totals");
                out.rows.extend(m.instances);
                out.targets.extend(m.targets);
                out.totals.extend(m.totals);
            }
            Ok(None) => break,
            Err(status) => {
                out.status = Some(status);
                break;
            }
        }
    }
    out
}

async fn sim_in(mode: OffsetMode, faults: FaultPlan) -> Simulator {
    let mut options = sim_options();
    options.instances_offset_mode = mode;
    options.faults = faults;
    start_sim(&spec(), options).await
}

#[tokio::test]
async fn every_class_is_answered_as_the_data_set_has_it_under_either_offset_reading() {
    for mode in [OffsetMode::Item, OffsetMode::Page] {
        let sim = sim_in(mode, FaultPlan::default()).await;
        let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
        let mut gw = start_gateway(targets, Default::default(), test_client_options()).await;
        let report = summarize(&mut gw, pb::SummarizeBackupsRequest::default()).await;
        assert!(report.status.is_none(), "{:?}", report.status);
        assert!(
            report.targets.iter().all(|t| t.ok && t.warnings.is_empty()),
            "{:?}",
            report.targets
        );

        let mut by_class: HashMap<pb::Protection, u32> = HashMap::new();
        for p in &sim.data().projects {
            let want = expected(p);
            let got: BTreeMap<String, (pb::Protection, u64)> = report
                .rows
                .iter()
                .filter(|r| r.project_id == p.id)
                .map(|r| (r.instance_id.clone(), (r.protection(), r.backup_count)))
                .collect();
            assert_eq!(got, want, "{mode:?} {}", p.name);
            for (protection, _) in want.values() {
                *by_class.entry(*protection).or_default() += 1;
            }
        }
        for class in [
            pb::Protection::Protected,
            pb::Protection::Stale,
            pb::Protection::Orphaned,
            pb::Protection::Unprotected,
        ] {
            assert!(
                by_class.get(&class).copied().unwrap_or(0) > 0,
                "{mode:?}: no {class:?}"
            );
        }
        // Rows carry what a backup owner asks: names, status from the list, times.
        let protected = report
            .rows
            .iter()
            .find(|r| r.protection() == pb::Protection::Protected)
            .unwrap();
        assert!(!protected.instance_name.is_empty() && !protected.instance_status.is_empty());
        assert!(
            protected.newest_auto_backup_time.is_some() && protected.oldest_backup_time.is_some()
        );
        let orphaned = report
            .rows
            .iter()
            .find(|r| r.protection() == pb::Protection::Orphaned)
            .unwrap();
        assert!(
            orphaned.instance_status.is_empty(),
            "not listed: no status from the list"
        );

        // Totals: one per region, then all together, counting every row.
        let all = report.totals.last().unwrap();
        assert_eq!(all.region, "");
        assert_eq!(report.totals.len(), 3);
        assert_eq!(all.protected, by_class[&pb::Protection::Protected]);
        assert_eq!(all.stale, by_class[&pb::Protection::Stale]);
        assert_eq!(all.orphaned, by_class[&pb::Protection::Orphaned]);
        assert_eq!(all.unprotected, by_class[&pb::Protection::Unprotected]);
        assert_eq!(all.backups, spec().total_backups() as u64);
        assert_eq!(
            report.totals[..2].iter().map(|t| t.protected).sum::<u32>(),
            all.protected
        );
    }
}

#[tokio::test]
async fn a_failed_instance_list_makes_its_rows_unknown_and_nothing_is_guessed() {
    let probe = backupgw::sim::DataSet::generate(&spec()).unwrap();
    let failing = probe.projects[2].id.clone();
    let faults = project_faults(
        &failing,
        Faults {
            fail_instances: true,
            ..Faults::default()
        },
    );
    let sim = sim_in(OffsetMode::Item, faults).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let mut gw = start_gateway(targets, Default::default(), test_client_options()).await;
    let report = summarize(&mut gw, pb::SummarizeBackupsRequest::default()).await;

    let t = report
        .targets
        .iter()
        .find(|t| t.project_id == failing)
        .unwrap();
    let e = t.error.as_ref().unwrap();
    assert_eq!(
        (t.ok, e.error_code.as_str(), e.http_status),
        (false, "DBS.200412", 500)
    );
    let rows: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.project_id == failing)
        .collect();
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r.protection() == pb::Protection::Unknown),
        "never ORPHANED or UNPROTECTED from a failed list"
    );
    // The others are unaffected.
    for p in sim.data().projects.iter().filter(|p| p.id != failing) {
        let got = report.rows.iter().filter(|r| r.project_id == p.id).count();
        assert_eq!(got, p.instances.len(), "{}", p.name);
    }
}

#[tokio::test]
async fn only_the_classes_asked_for_are_listed_but_totals_count_them_all() {
    let sim = sim_in(OffsetMode::Item, FaultPlan::default()).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let mut gw = start_gateway(targets, Default::default(), test_client_options()).await;
    let full = summarize(&mut gw, pb::SummarizeBackupsRequest::default()).await;
    let only = summarize(
        &mut gw,
        pb::SummarizeBackupsRequest {
            protections: vec![
                pb::Protection::Stale as i32,
                pb::Protection::Unprotected as i32,
            ],
            ..Default::default()
        },
    )
    .await;
    assert!(!only.rows.is_empty());
    assert!(only.rows.iter().all(|r| matches!(
        r.protection(),
        pb::Protection::Stale | pb::Protection::Unprotected
    )));
    let wanted = full
        .rows
        .iter()
        .filter(|r| {
            matches!(
                r.protection(),
                pb::Protection::Stale | pb::Protection::Unprotected
            )
        })
        .count();
    assert_eq!(only.rows.len(), wanted);
    assert_eq!(only.totals, full.totals);
    // A longer stale_after turns the stale into protected.
    let lenient = summarize(
        &mut gw,
        pb::SummarizeBackupsRequest {
            stale_after: Some(prost_types::Duration {
                seconds: 365 * 86_400,
                nanos: 0,
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(lenient.totals.last().unwrap().stale, 0);
    // Bad requests say which field.
    let status = gw
        .client
        .summarize_backups(pb::SummarizeBackupsRequest {
            protections: vec![42],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("protections[0]"), "{status:?}");
}
