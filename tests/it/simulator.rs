//! The simulator speaks the upstream contract (ddm-list-backups.md, errors.md).

use backupgw::sim::DataSpec;
use serde_json::Value;

use crate::common::*;

async fn get(url: &str, token: Option<&str>) -> (u16, Option<String>, Value) {
    let client = reqwest::Client::new();
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.header("X-Auth-Token", t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, id, body)
}

#[tokio::test]
async fn list_backups_follows_the_contract() {
    let sim = start_sim(
        &DataSpec {
            regions: 2,
            projects_per_region: 2,
            ..DataSpec::default()
        },
        sim_options(),
    )
    .await;
    let data = sim.data();
    let p = &data.projects[0];
    let base = sim.endpoint(&p.region).unwrap();
    let url = format!("{base}/v3/{}/backups", p.id);

    let (status, id, body) = get(&url, Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(id.unwrap().len(), 32);
    assert_eq!(body["total"], 90);
    assert_eq!(
        (body["offset"].as_u64(), body["limit"].as_u64()),
        (Some(0), Some(10)),
        "documented defaults"
    );
    let items = body["backups"].as_array().unwrap();
    assert_eq!(items.len(), 10);
    let created: Vec<&str> = items
        .iter()
        .map(|b| b["created"].as_str().unwrap())
        .collect();
    let instants: Vec<i64> = created
        .iter()
        .map(|c| backupgw::ddm::time::parse_upstream_time(c).unwrap().seconds)
        .collect();
    assert!(
        instants.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {created:?}"
    );

    let (_, _, last) = get(&format!("{url}?offset=80&limit=128"), Some(TOKEN)).await;
    assert_eq!(last["backups"].as_array().unwrap().len(), 10);

    for bad in ["limit=0", "limit=129", "offset=-1", "limit=ten"] {
        let (status, id, body) = get(&format!("{url}?{bad}"), Some(TOKEN)).await;
        assert_eq!(status, 400, "{bad}");
        assert!(id.is_some());
        assert_eq!(
            body,
            serde_json::json!({"error_code": "DBS.280001", "error_msg": "Parameter error."})
        );
    }

    let (status, id, body) = get(&url, None).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (401, Some("APIGW.0301"))
    );
    assert_eq!(body["request_id"].as_str(), id.as_deref());
    let (status, _, body) = get(&url, Some("wrong")).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (401, Some("APIGW.0301"))
    );

    // A project of another region is refused at this region's endpoint.
    let other = data.projects.iter().find(|q| q.region != p.region).unwrap();
    let (status, _, body) = get(&format!("{base}/v3/{}/backups", other.id), Some(TOKEN)).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (403, Some("APIGW.0310"))
    );

    let (status, id, body) = get(&format!("{base}/v3/{}/instances", p.id), Some(TOKEN)).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("APIGW.0101"))
    );
    assert!(id.is_some());
}

#[tokio::test]
async fn pushdown_filters_match_as_documented() {
    let sim = start_sim(
        &DataSpec {
            regions: 1,
            projects_per_region: 1,
            ..DataSpec::default()
        },
        sim_options(),
    )
    .await;
    let p = &sim.data().projects[0];
    let base = format!("{}/v3/{}/backups", sim.endpoint(&p.region).unwrap(), p.id);
    let instance = &p.instances[2];
    let (_, _, by_id) = get(&format!("{base}?instance_id={}", instance.id), Some(TOKEN)).await;
    assert_eq!(by_id["total"], 30);
    let name = instance.name.replace(' ', "%20");
    let (_, _, by_name) = get(&format!("{base}?instance_name={name}"), Some(TOKEN)).await;
    assert_eq!(by_name["total"], 30);
    let (_, _, partial) = get(&format!("{base}?instance_name=ddm"), Some(TOKEN)).await;
    assert_eq!(partial["total"], 0, "instance_name matches exactly");
    let (_, _, backup) = get(&format!("{base}?backup_name=-auto-"), Some(TOKEN)).await;
    let autos = p
        .backups
        .iter()
        .filter(|b| b.kind.as_str() == "auto_metadata")
        .count();
    assert_eq!(
        backup["total"], autos as u64,
        "backup_name matches a substring"
    );
}

#[tokio::test]
async fn iam_issues_project_tokens_by_name_and_lists_projects() {
    let options = backupgw::sim::SimOptions {
        auth: backupgw::sim::AuthOptions {
            users: vec![backupgw::sim::SimUser {
                domain: "acme".into(),
                name: "bob".into(),
                password: secrecy::SecretString::from("pw"),
            }],
            ..backupgw::sim::AuthOptions::default()
        },
        ..backupgw::sim::SimOptions::default()
    };
    let sim = start_sim(
        &DataSpec {
            regions: 2,
            projects_per_region: 2,
            ..DataSpec::default()
        },
        options,
    )
    .await;
    let p = &sim.data().projects[1];
    let base = sim.endpoint(&p.region).unwrap();
    let http = reqwest::Client::new();
    let ask = |password: &str, scope: Value| {
        let body = serde_json::json!({"auth": {"identity": {"methods": ["password"],
            "password": {"user": {"name": "bob", "password": password, "domain": {"name": "acme"}}}},
            "scope": scope}});
        http.post(format!("{base}/v3/auth/tokens?nocatalog=true"))
            .body(body.to_string())
            .send()
    };
    let wrong = ask("nope", serde_json::json!({"project": {"name": p.name}}))
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = ask("pw", serde_json::json!({"project": {"name": p.name}}))
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
    let token = ok.headers()["x-subject-token"].to_str().unwrap().to_owned();
    let body: Value = serde_json::from_slice(&ok.bytes().await.unwrap()).unwrap();
    assert_eq!(body["token"]["project"]["id"], p.id.as_str());
    assert!(
        body["token"]["expires_at"]
            .as_str()
            .unwrap()
            .ends_with(".000000Z")
    );
    assert_eq!(sim.tokens_issued(&p.id), 1);

    let (status, _, _) = get(&format!("{base}/v3/{}/backups", p.id), Some(&token)).await;
    assert_eq!(status, 200);
    // Scoped to one project: refused for another.
    let other = &sim.data().projects[0];
    let (status, _, body) = get(&format!("{base}/v3/{}/backups", other.id), Some(&token)).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (401, Some("APIGW.0301"))
    );
    sim.expire_tokens();
    let (status, _, body) = get(&format!("{base}/v3/{}/backups", p.id), Some(&token)).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (401, Some("APIGW.0307"))
    );

    let fresh = ask("pw", serde_json::json!({"domain": {"name": "acme"}}))
        .await
        .unwrap();
    let token = fresh.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let (status, _, all) = get(&format!("{base}/v3/auth/projects"), Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        all["projects"].as_array().unwrap().len(),
        5,
        "4 projects and MOS"
    );
    let (_, _, mos) = get(&format!("{base}/v3/projects?name=MOS"), Some(&token)).await;
    assert_eq!(mos["projects"].as_array().unwrap().len(), 1);
    let (_, _, paged) = get(
        &format!("{base}/v3/projects?per_page=2&page=3"),
        Some(&token),
    )
    .await;
    assert_eq!(paged["projects"].as_array().unwrap().len(), 1);
    let (status, _, _) = get(&format!("{base}/v3/projects?per_page=0"), Some(&token)).await;
    assert_eq!(status, 400);
    let (status, _, _) = get(&format!("{base}/v3/auth/projects"), None).await;
    assert_eq!(status, 401);
}
