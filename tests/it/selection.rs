//! What a caller asks for: targets by name or glob, filters (pushed upstream or applied here),
//! order by creation time, and bad requests refused with the field that is wrong.

use std::collections::HashSet;

use backupgw::inventory::Limits;
use backupgw::pb;
use backupgw::sim::data::SimProject;
use tonic_types::StatusExt as _;

use crate::common::*;

#[tokio::test]
async fn selection_by_project_and_region() {
    let (sim, mut gw) = start_pair(&small_spec()).await;
    let data = sim.data();
    let region = data.regions[1].clone();
    let got = list(
        &mut gw.client,
        pb::ListBackupsRequest {
            regions: vec![region.clone()],
            ..Default::default()
        },
    )
    .await;
    let projects: HashSet<_> = got.backups.iter().map(|b| b.project_id.clone()).collect();
    let expected: HashSet<_> = data
        .projects
        .iter()
        .filter(|p| p.region == region)
        .map(|p| p.id.clone())
        .collect();
    assert_eq!(projects, expected);
    assert!(got.backups.iter().all(|b| b.region == region));

    let two = [data.projects[0].id.clone(), data.projects[7].id.clone()];
    let got = list(
        &mut gw.client,
        pb::ListBackupsRequest {
            project_ids: two.to_vec(),
            ..Default::default()
        },
    )
    .await;
    let projects: HashSet<_> = got.backups.iter().map(|b| b.project_id.clone()).collect();
    assert_eq!(projects, HashSet::from(two.clone()));
    assert_eq!(got.backups.len(), 600);

    // Both: the intersection.
    let got = list(
        &mut gw.client,
        pb::ListBackupsRequest {
            project_ids: two.to_vec(),
            regions: vec![data.projects[0].region.clone()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(got.targets.len(), 1);
    assert_eq!(got.targets[0].project_id, two[0]);

    let targets = gw
        .client
        .list_targets(pb::ListTargetsRequest {
            regions: vec![region.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(targets.targets.len(), 3);
    assert!(
        targets
            .targets
            .iter()
            .all(|t| t.region == region && t.credential == "test" && t.source == "config")
    );
    assert!(
        targets.targets.iter().any(|t| t.project_name == region),
        "the region's built-in project"
    );
}

#[tokio::test]
async fn filters_pushed_down_and_applied_here() {
    let (sim, mut gw) = start_pair(&small_spec()).await;
    let project = &sim.data().projects[4];
    let instance = &project.instances[1];
    let got = list(
        &mut gw.client,
        pb::ListBackupsRequest {
            project_ids: vec![project.id.clone()],
            instance_id: instance.id.clone(),
            backup_types: vec!["metadata".into()],
            ..Default::default()
        },
    )
    .await;
    let expected: HashSet<String> = project
        .backups
        .iter()
        .filter(|b| b.instance == 1 && b.kind.as_str() == "metadata")
        .map(SimProject::backup_id)
        .collect();
    assert!(!expected.is_empty());
    let ids: HashSet<String> = got.backups.iter().map(|b| b.id.clone()).collect();
    assert_eq!(ids, expected);
    // The upstream saw the instance filter: its total is one instance's backups.
    assert_eq!(got.targets[0].upstream_total, 100);

    let newest = project.backups[0].created;
    let got = list(
        &mut gw.client,
        pb::ListBackupsRequest {
            project_ids: vec![project.id.clone()],
            created_after: Some(prost_types::Timestamp {
                seconds: newest - 86_400 * 2,
                nanos: 0,
            }),
            ..Default::default()
        },
    )
    .await;
    let expected = project
        .backups
        .iter()
        .filter(|b| b.created >= newest - 86_400 * 2)
        .count();
    assert_eq!(got.backups.len(), expected);
}

#[tokio::test]
async fn bad_requests_get_invalid_argument_with_field_violations() {
    let (sim, mut gw) = start_pair(&small_spec()).await;
    let unknown = "ffffffffffffffffffffffffffffffff".to_owned();
    let cases = [
        (
            pb::ListBackupsRequest {
                project_ids: vec!["not-a-project".into()],
                ..Default::default()
            },
            "project_ids[0]",
            "no project this caller may see is named",
        ),
        (
            pb::ListBackupsRequest {
                project_ids: vec![unknown],
                ..Default::default()
            },
            "project_ids[0]",
            "no project this caller may see",
        ),
        (
            pb::ListBackupsRequest {
                regions: vec!["mars-1".into()],
                ..Default::default()
            },
            "regions[0]",
            "no project this caller may see is in a region named",
        ),
        (
            pb::ListBackupsRequest {
                backup_name: "x".repeat(1000),
                ..Default::default()
            },
            "backup_name",
            "at most 255",
        ),
        (
            pb::ListBackupsRequest {
                project_ids: vec![sim.data().projects[0].id.clone()],
                regions: vec![sim.data().regions[1].clone()],
                ..Default::default()
            },
            "regions",
            "none of the selected projects",
        ),
        (
            pb::ListBackupsRequest {
                max_age: Some(prost_types::Duration {
                    seconds: -5,
                    nanos: 0,
                }),
                ..Default::default()
            },
            "max_age",
            "negative",
        ),
    ];
    for (request, field, words) in cases {
        let status = gw.client.list_backups(request).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(words), "{status:?}");
        let violations = status
            .get_details_bad_request()
            .expect("field violations")
            .field_violations;
        assert_eq!(violations[0].field, field);
    }
    assert_eq!(
        sim.stats().list_requests,
        0,
        "bad requests never reach the upstream"
    );
}

#[tokio::test]
async fn projects_and_regions_by_name_or_glob_types_by_word_or_enum_name() {
    let (sim, mut gw) = start_pair(&small_spec()).await;
    let data = sim.data();
    let ids = |got: &Collected| -> HashSet<String> {
        got.backups.iter().map(|b| b.project_id.clone()).collect()
    };
    let wanted = |f: &dyn Fn(&SimProject) -> bool| -> HashSet<String> {
        data.projects
            .iter()
            .filter(|p| f(p))
            .map(|p| p.id.clone())
            .collect()
    };
    let ask = |project_ids: &[&str], regions: &[&str]| pb::ListBackupsRequest {
        project_ids: project_ids.iter().map(|s| s.to_string()).collect(),
        regions: regions.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    // A project by its name, and every backup carries its project's name.
    let by_name = list(&mut gw.client, ask(&["cn-north-4_payments"], &[])).await;
    assert_eq!(ids(&by_name), wanted(&|p| p.name == "cn-north-4_payments"));
    assert!(
        by_name
            .backups
            .iter()
            .all(|b| b.project_name == "cn-north-4_payments")
    );
    // Globs over names, and over regions.
    let payments = list(&mut gw.client, ask(&["*_payments"], &[])).await;
    assert_eq!(ids(&payments), wanted(&|p| p.name.ends_with("_payments")));
    let two = list(&mut gw.client, ask(&[], &["*-3", "cn-north-?"])).await;
    assert_eq!(
        ids(&two),
        wanted(&|p| p.region.ends_with("-3") || p.region == "cn-north-4")
    );
    assert!(ids(&two).len() < data.projects.len());
    // A glob that selects nothing is a caller error, as a name that names nothing is.
    let status = gw
        .client
        .list_backups(ask(&["*_nothing"], &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("project_ids[0]"), "{status:?}");

    // Types and statuses by the upstream's word or the enum's name, in any case.
    let mut by = Vec::new();
    for (types, statuses) in [
        (vec!["metadata"], vec!["normal"]),
        (vec!["BACKUP_TYPE_METADATA"], vec!["NORMAL"]),
        (vec!["Backup_Type_Metadata"], vec!["Normal"]),
    ] {
        let got = list(
            &mut gw.client,
            pb::ListBackupsRequest {
                backup_types: types.iter().map(|s| s.to_string()).collect(),
                statuses: statuses.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
        .await;
        let mut keys: Vec<_> = got.by_key().into_keys().collect();
        keys.sort();
        by.push(keys);
    }
    assert!(!by[0].is_empty());
    assert!(
        by.iter().all(|k| *k == by[0]),
        "the same backups, however named"
    );
}

/// (created, project, id) of each backup, in the order they came.
fn created_order(got: &Collected) -> Vec<((i64, i32), String, String)> {
    got.backups
        .iter()
        .map(|b| {
            let t = b.created.unwrap();
            ((t.seconds, t.nanos), b.project_id.clone(), b.id.clone())
        })
        .collect()
}

#[tokio::test]
async fn backups_in_order_across_every_target_both_ways() {
    let (_sim, mut gw) = start_pair(&small_spec()).await;
    let unordered = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    let mut expected = created_order(&unordered);
    expected.sort();
    // Every target contributes backups from the same days: their times interleave.
    let projects_of_first_day: HashSet<_> = expected[..50].iter().map(|(_, p, _)| p).collect();
    assert!(projects_of_first_day.len() > 1);

    let oldest = list(
        &mut gw.client,
        pb::ListBackupsRequest {
            order: pb::Order::OldestFirst as i32,
            ..Default::default()
        },
    )
    .await;
    assert!(oldest.status.is_none(), "{:?}", oldest.status);
    assert_eq!(created_order(&oldest), expected);
    let newest = list(
        &mut gw.client,
        pb::ListBackupsRequest {
            order: pb::Order::NewestFirst as i32,
            ..Default::default()
        },
    )
    .await;
    let got = created_order(&newest);
    let mut by_time_desc = expected.clone();
    by_time_desc.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| (&a.1, &a.2).cmp(&(&b.1, &b.2))));
    assert_eq!(got, by_time_desc);
    // Still streamed in batches, and every target reported.
    assert!(newest.messages > newest.backups.len() / 200);
    assert_eq!(newest.targets.len(), 9);
    assert_eq!(newest.summary.unwrap().backups, 2700);
}

#[tokio::test]
async fn an_ordered_answer_cut_short_by_the_deadline_keeps_what_arrived_in_order() {
    let (sim, targets) = with_region_faults(
        backupgw::sim::data::region_name(2).unwrap(),
        backupgw::sim::Faults {
            fail_with: Some(backupgw::sim::FailWith::Stall),
            ..Default::default()
        },
    )
    .await;
    let mut gw = start_gateway(targets, Limits::default(), test_client_options()).await;
    let mut request = tonic::Request::new(pb::ListBackupsRequest {
        order: pb::Order::NewestFirst as i32,
        ..Default::default()
    });
    request.set_timeout(std::time::Duration::from_secs(3));
    let got = try_list(&mut gw.client, request).await.unwrap();
    let stalled = &sim.data().regions[2];
    assert_eq!(
        got.backups.len(),
        6 * 300,
        "every backup of the targets that answered"
    );
    assert!(got.backups.iter().all(|b| &b.region != stalled));
    let order = created_order(&got);
    assert!(order.windows(2).all(|w| w[0].0 >= w[1].0), "newest first");
    for t in &got.targets {
        let timed_out = t
            .error
            .as_ref()
            .is_some_and(|e| e.kind == "deadline_exceeded");
        assert_eq!(timed_out, &t.region == stalled, "{t:?}");
    }
}
