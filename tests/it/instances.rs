//! The instance list: the simulator serves it as the contract says, under either reading of
//! `offset`, and the client reads every instance under either, through the real HTTP path.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;

use backupgw::ddm::{DdmClient, InstancesRequest};
use backupgw::sim::instances::OffsetMode;
use backupgw::sim::{DataSpec, FaultPlan, Faults, Simulator};

use crate::common::*;

fn many_instances() -> DataSpec {
    DataSpec {
        regions: 1,
        projects_per_region: 2,
        instances_per_project: 300,
        backups_per_instance: 1,
        ..DataSpec::default()
    }
}

async fn sim_in(mode: OffsetMode, faults: FaultPlan) -> Simulator {
    let mut options = sim_options();
    options.instances_offset_mode = mode;
    options.faults = faults;
    start_sim(&many_instances(), options).await
}

async fn read(
    sim: &Simulator,
    project: usize,
) -> Result<backupgw::ddm::InstanceList, backupgw::ddm::DdmError> {
    let p = &sim.data().projects[project];
    let client = DdmClient::new(test_client_options()).unwrap();
    let sent = AtomicU64::new(0);
    let endpoint = sim.endpoint(&p.region).unwrap();
    let request = InstancesRequest {
        endpoint: &endpoint,
        project_id: &p.id,
        region: &p.region,
        deadline: None,
        sent: &sent,
        gate: Default::default(),
        backoff_until: None,
    };
    client
        .list_instances(&request, &token_credential("test", TOKEN))
        .await
}

#[tokio::test]
async fn the_client_reads_every_instance_under_either_reading_of_offset() {
    for (mode, requests) in [(OffsetMode::Item, 3), (OffsetMode::Page, 4)] {
        let sim = sim_in(mode, FaultPlan::default()).await;
        let list = read(&sim, 0).await.unwrap();
        assert!(
            list.complete && list.warnings.is_empty(),
            "{mode:?}: {:?}",
            list.warnings
        );
        let got: Vec<_> = list.instances.iter().map(|i| i.id.clone()).collect();
        let want: Vec<_> = sim.data().projects[0]
            .listed_instances()
            .iter()
            .map(|i| i.id.clone())
            .collect();
        assert_eq!(
            got, want,
            "{mode:?}: every instance once, in the upstream's order"
        );
        let listed = sim.data().projects[0].listed_instances().len();
        assert!(listed > 128 * 2, "three pages: {listed}");
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), listed);
        let first = &sim.data().projects[0].listed_instances()[0];
        assert_eq!(
            (
                list.instances[0].name.as_str(),
                list.instances[0].status.as_str()
            ),
            (first.name.as_str(), first.status)
        );
        assert_eq!(sim.stats().instance_requests, requests, "{mode:?}");
    }
}

#[tokio::test]
async fn the_simulator_pages_as_the_contract_says() {
    let sim = sim_in(OffsetMode::Item, FaultPlan::default()).await;
    let p = &sim.data().projects[0];
    let http = reqwest::Client::new();
    let get = |query: &str| {
        let url = format!(
            "{}/v1/{}/instances?{query}",
            sim.endpoint(&p.region).unwrap(),
            p.id
        );
        let request = http.get(url).header("X-Auth-Token", TOKEN);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.bytes().await.unwrap();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            )
        }
    };
    let listed = p.listed_instances().len() as u64;
    let (status, body) = get("offset=256&limit=128").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["instances"].as_array().unwrap().len() as u64,
        listed - 256
    );
    assert_eq!(
        (
            &body["page_no"],
            &body["page_size"],
            &body["total_record"],
            &body["total_page"],
            &body["instance_num"]
        ),
        (
            &3.into(),
            &128.into(),
            &listed.into(),
            &3.into(),
            &listed.into()
        )
    );
    let instance = &body["instances"][0];
    assert_eq!(instance["access_port"], "5066", "ports are strings");
    assert!(instance["created"].as_str().unwrap().ends_with("+0000"));
    // Past the end: no `instances` field at all.
    let (_, body) = get(&format!("offset={listed}&limit=128")).await;
    assert!(body.get("instances").is_none(), "{body}");
    // Out of range: the v1 error shape.
    let (status, body) = get("offset=0&limit=129").await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        serde_json::json!({"externalMessage": "Parameter error.", "errCode": "DBS.280001"})
    );
    // Auth as for backups.
    let url = format!("{}/v1/{}/instances", sim.endpoint(&p.region).unwrap(), p.id);
    let status = http.get(url).send().await.unwrap().status().as_u16();
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_failing_instance_list_is_a_typed_error_after_its_retries() {
    let probe = backupgw::sim::DataSet::generate(&many_instances()).unwrap();
    let failing = probe.projects[1].id.clone();
    let faults = project_faults(
        &failing,
        Faults {
            fail_instances: true,
            ..Faults::default()
        },
    );
    let sim = sim_in(OffsetMode::Item, faults).await;
    assert!(
        read(&sim, 0).await.unwrap().complete,
        "the other project reads"
    );
    let before = sim.stats().instance_requests;
    let e = read(&sim, 1).await.unwrap_err();
    assert_eq!((e.http_status(), e.code()), (500, "DBS.200412"), "{e}");
    assert!(e.is_retryable());
    assert_eq!(sim.stats().instance_requests - before, 3, "max_attempts");
}
