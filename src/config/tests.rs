//! The configuration's validation, key by key.

use super::*;

const PID: &str = "0123456789abcdef0123456789abcdef";

fn parse(text: &str) -> Result<Settings, ConfigErrors> {
    Settings::parse(text, Path::new("."))
}

fn with_project(extra: &str) -> String {
    format!(
        r#"
[credentials.ops]
kind = "token"
token_env = "BACKUPGW_TEST_CONFIG_TOKEN"
[[projects]]
id = "{PID}"
region = "cn-north-4"
credential = "ops"
{extra}"#
    )
}

#[test]
fn a_good_file_loads() {
    // SAFETY: this variable is read by this module's tests only.
    unsafe { std::env::set_var("BACKUPGW_TEST_CONFIG_TOKEN", "t0k3n") };
    let s = parse(&with_project("")).unwrap();
    assert_eq!(s.targets.len(), 1);
    assert_eq!(
        &*s.targets[0].endpoint,
        "https://ddm.cn-north-4.myhuaweicloud.com"
    );
    assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("t0k3n"), "{dbg}");
}

#[test]
fn problems_name_their_key() {
    unsafe { std::env::set_var("BACKUPGW_TEST_CONFIG_TOKEN", "t0k3n") };
    let cases = [
        (with_project("").replace(PID, "XYZ"), "projects[0].id"),
        (
            with_project("").replace("cn-north-4", "mars-1"),
            "projects[0].region",
        ),
        (
            with_project("").replace("credential = \"ops\"", "credential = \"nope\""),
            "projects[0].credential",
        ),
        (
            with_project("").replace("BACKUPGW_TEST_CONFIG_TOKEN", "BACKUPGW_UNSET_VAR_XYZ"),
            "credentials.ops.token_env",
        ),
        (
            with_project("").replace("kind = \"token\"", "kind = \"magic\""),
            "credentials.ops.kind",
        ),
        (
            format!("listen = \"nowhere\"\n{}", with_project("")),
            "listen",
        ),
        (
            format!(
                "[limits]\nmax_concurrent_requests = 0\n{}",
                with_project("")
            ),
            "limits.max_concurrent_requests",
        ),
        (
            format!("[regions.x]\nendpoint = \"ftp://a\"\n{}", with_project("")),
            "regions.x.endpoint",
        ),
        (format!("bogus = 1\n{}", with_project("")), "bogus"),
        ("".to_owned(), "projects"),
        (with_project("").replace("kind = \"token\"", "kind = \"iam_password\""), "credentials.ops.token_env"),
        (
            "[credentials.k]\nkind = \"aksk\"\nsecret_key_env = \"BACKUPGW_TEST_CONFIG_TOKEN\"\ndiscover = true\n".to_owned(),
            "credentials.k.access_key",
        ),
        (
            "[credentials.k]\nkind = \"aksk\"\naccess_key = \"AK\"\nsecret_key_env = \"BACKUPGW_TEST_CONFIG_TOKEN\"\ndiscover = true\n[discovery]\ninterval_seconds = 0\n".to_owned(),
            "discovery.interval_seconds",
        ),
    ];
    for (text, key) in cases {
        let err = parse(&text).unwrap_err();
        assert_eq!(err.first().key, key, "{err}");
    }
    let twice = with_project(&format!(
        "[[projects]]\nid = \"{PID}\"\nregion = \"cn-north-4\"\ncredential = \"ops\"\n"
    ));
    assert_eq!(parse(&twice).unwrap_err().first().key, "projects[1].id");
}

#[test]
fn discovery_alone_is_enough() {
    unsafe { std::env::set_var("BACKUPGW_TEST_CONFIG_TOKEN", "t0k3n") };
    let text = "[regions.cn-north-4]\nendpoint = \"http://127.0.0.1:1\"\n[credentials.iam]\nkind = \"iam_password\"\ndomain = \"d\"\nuser = \"u\"\npassword_env = \"BACKUPGW_TEST_CONFIG_TOKEN\"\ndiscover = true\n";
    let s = parse(text).unwrap();
    assert!(s.targets.is_empty());
    assert_eq!(s.discoveries.len(), 1);
    assert_eq!(
        s.discoveries[0].regions.as_strings(),
        ["cn-north-4"],
        "configured regions by default"
    );
    assert!(!format!("{s:?}").contains("t0k3n"));
}

#[test]
fn region_limits_default_and_override() {
    unsafe { std::env::set_var("BACKUPGW_TEST_CONFIG_TOKEN", "t0k3n") };
    let text = format!(
        "[limits]\nregion_requests_per_second = 20.0\nregion_max_concurrent_requests = 8\n[regions.cn-north-4]\nrequests_per_second = 5.0\nburst = 2\n{}",
        with_project("")
    );
    let s = parse(&text).unwrap();
    assert_eq!(
        s.limits.region,
        RegionLimits {
            max_concurrent_requests: Some(8),
            requests_per_second: Some(20.0),
            burst: 10
        }
    );
    assert_eq!(
        s.limits.regions["cn-north-4"],
        RegionLimits {
            max_concurrent_requests: Some(8),
            requests_per_second: Some(5.0),
            burst: 2
        }
    );
    let bad = format!(
        "[regions.cn-north-4]\nrequests_per_second = -1.0\n{}",
        with_project("")
    );
    assert_eq!(
        parse(&bad).unwrap_err().first().key,
        "regions.cn-north-4.requests_per_second"
    );
}

#[test]
fn endpoints_can_be_overridden() {
    unsafe { std::env::set_var("BACKUPGW_TEST_CONFIG_TOKEN", "t0k3n") };
    let text = format!(
        "[regions.cn-north-4]\nendpoint = \"http://127.0.0.1:8080/\"\n{}",
        with_project("")
    );
    assert_eq!(
        &*parse(&text).unwrap().targets[0].endpoint,
        "http://127.0.0.1:8080"
    );
}
