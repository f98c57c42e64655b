//! The configuration's validation, key by key.

use super::*;
use crate::inventory::RegionLimits;

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
            format!(
                "[limits]\nmax_concurrent_targets = 4611686018427387904\n{}",
                with_project("")
            ),
            "limits.max_concurrent_targets",
        ),
        (
            format!(
                "[regions.cn-north-4]\nmax_concurrent_requests = 4611686018427387904\n{}",
                with_project("")
            ),
            "regions.cn-north-4.max_concurrent_requests",
        ),
        (
            format!("[cache]\nttl_seconds = 4611686018427387904\n{}", with_project("")),
            "cache.ttl_seconds",
        ),
        (
            format!(
                "[server]\nmax_connections = 4611686018427387904\n{}",
                with_project("")
            ),
            "server.max_connections",
        ),
        (
            format!(
                "[limits]\nregion_requests_per_second = 1e-300\n{}",
                with_project("")
            ),
            "limits.region_requests_per_second",
        ),
        (
            format!(
                "[regions.cn-north-4]\nrequests_per_second = 1e-300\n{}",
                with_project("")
            ),
            "regions.cn-north-4.requests_per_second",
        ),
        (
            format!(
                "[limits]\nthrottle_delay_ms = 4611686018427387904\n{}",
                with_project("")
            ),
            "limits.throttle_delay_ms",
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

#[cfg(unix)]
#[test]
fn secret_files_others_may_read_are_warned_about_or_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("backupgw-config-perm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "t0k3n\n").unwrap();
    // Readable by others: whatever the group.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o604)).unwrap();
    let text = with_project("").replace(
        "token_env = \"BACKUPGW_TEST_CONFIG_TOKEN\"",
        "token_file = \"token\"",
    );
    let s = Settings::parse(&text, &dir).unwrap();
    assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    assert!(
        s.warnings[0].contains("credentials.ops.token_file"),
        "{:?}",
        s.warnings
    );
    let strict = format!("secret_files_must_be_private = true\n{text}");
    let err = Settings::parse(&strict, &dir).unwrap_err();
    assert_eq!(err.first().key, "credentials.ops.token_file", "{err}");
    // Readable by our own group (how Kubernetes projects Secrets with fsGroup): fine.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let s = Settings::parse(&strict, &dir).unwrap();
    assert!(s.warnings.is_empty());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = Settings::parse(&strict, &dir).unwrap();
    assert!(s.warnings.is_empty());
    assert!(!format!("{s:?}").contains("t0k3n"));
}

#[test]
fn every_problem_is_reported_at_once() {
    unsafe { std::env::set_var("BACKUPGW_TEST_CONFIG_TOKEN", "t0k3n") };
    let text = format!(
        "[limits]\nmax_attempts = \"four\"\nmax_concurrent_requests = 0\n[cache]\nttl_seconds = -1\n[regions.mars-1]\nendpoint = \"http://127.0.0.1:1\"\n[credentials.spare]\nkind = \"token\"\ntoken_env = \"BACKUPGW_TEST_CONFIG_TOKEN\"\n{}",
        with_project("").replace(PID, "XYZ")
    );
    let err = parse(&text).unwrap_err();
    let keys = err.keys();
    for key in [
        "limits.max_attempts",
        "cache.ttl_seconds",
        "limits.max_concurrent_requests",
        "projects[0].id",
        "regions.mars-1",
        "credentials.spare",
    ] {
        assert!(keys.contains(&key), "{key} not in {keys:?}");
    }
}

#[test]
fn an_open_gateway_listens_on_loopback_only_unless_told() {
    unsafe { std::env::set_var("BACKUPGW_TEST_CONFIG_TOKEN", "t0k3n") };
    let open = format!("listen = \"0.0.0.0:50051\"\n{}", with_project(""));
    assert_eq!(parse(&open).unwrap_err().first().key, "callers");
    let allowed = format!("allow_unauthenticated = true\n{open}");
    let s = parse(&allowed).unwrap();
    let warning = s.exposure_warning(s.listen).expect("a warning at start-up");
    assert!(warning.contains("0.0.0.0:50051"), "{warning}");
    assert!(s.exposure_warning("127.0.0.1:1".parse().unwrap()).is_none());
    let hash = crate::callers::api_key_sha256("k");
    let guarded = format!(
        "{open}\n[[callers]]\nname = \"billing\"\napi_key_sha256 = \"{hash}\"\nprojects = [\"*\"]\n"
    );
    assert!(parse(&guarded).is_ok());
}

#[test]
fn callers_are_checked_key_by_key() {
    unsafe { std::env::set_var("BACKUPGW_TEST_CONFIG_TOKEN", "t0k3n") };
    let text = format!(
        "{}\n[[callers]]\nname = \"a\"\napi_key_sha256 = \"nothex\"\nprojects = [\"*\"]\n[[callers]]\nname = \"b\"\nclient_cert_subject = \"CN=b\"\nprojects = []\n",
        with_project("")
    );
    let err = parse(&text).unwrap_err();
    assert_eq!(
        err.keys(),
        [
            "callers[0].api_key_sha256",
            "callers[1].client_cert_subject",
            "callers[1].projects"
        ],
        "{err}"
    );
}

#[test]
fn shared_state_needs_a_redis_url_and_keeps_its_password_out_of_sight() {
    // SAFETY: these variables are read by this module's tests only.
    unsafe {
        std::env::set_var("BACKUPGW_TEST_CONFIG_TOKEN", "t0k3n");
        std::env::set_var("BACKUPGW_TEST_REDIS_PASSWORD", "r3dis-pw");
    };
    let s = parse(&with_project(
        "[shared]\nredis_url = \"redis://127.0.0.1:6379/0\"\npassword_env = \"BACKUPGW_TEST_REDIS_PASSWORD\"\n",
    ))
    .unwrap();
    let shared = s.shared.as_ref().unwrap();
    assert_eq!(shared.key_prefix, "backupgw:");
    assert_eq!(shared.timeout, Duration::from_millis(250));
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("r3dis-pw"), "{dbg}");
    for (shared, key, says) in [
        (
            "redis_url = \"redis://h:6380\"\nca_file = \"ca.pem\"",
            "shared.ca_file",
            "rediss://",
        ),
        (
            "redis_url = \"rediss://h:6380\"\nca_file = \"no-such-ca.pem\"",
            "shared.ca_file",
            "cannot read",
        ),
        (
            "redis_url = \"redis://:pw@h:6379\"",
            "shared.redis_url",
            "password_file",
        ),
        ("redis_url = \"http://h\"", "shared.redis_url", "redis://"),
        (
            "redis_url = \"redis://h\"\ntimeout_ms = 0",
            "shared.timeout_ms",
            "at least 1",
        ),
        (
            "redis_url = \"redis://h\"\npassword_env = \"BACKUPGW_TEST_UNSET\"",
            "shared.password_env",
            "BACKUPGW_TEST_UNSET",
        ),
    ] {
        let e = parse(&with_project(&format!("[shared]\n{shared}\n"))).unwrap_err();
        let found = e.0.iter().find(|e| e.key == key);
        assert!(
            found.is_some_and(|e| e.problem.contains(says)),
            "{shared}: {e}"
        );
        assert!(!e.to_string().contains(":pw@"), "{e}");
    }
}
