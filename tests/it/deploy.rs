//! deploy/ is part of the product: its example configuration is valid, and the Kubernetes
//! ConfigMap carries exactly that file. (CI also validates the manifests and the Dockerfile.)

use std::path::Path;

use backupgw::config::Settings;

fn deploy(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// The block under `backupgw.toml: |` in the ConfigMap, de-indented.
fn configmap_toml() -> String {
    let yaml = std::fs::read_to_string(deploy("k8s/configmap.yaml")).unwrap();
    let (_, block) = yaml.split_once("  backupgw.toml: |\n").unwrap();
    block
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn the_example_configuration_is_valid_and_guarded() {
    let settings = Settings::check(&deploy("backupgw.toml"), false).unwrap();
    assert!(
        !settings.callers.is_open(),
        "a public listener needs callers"
    );
    assert!(settings.tls_files.is_some() && settings.metrics_listen.is_some());
    assert!(settings.log.json);
    assert!(!settings.listen.ip().is_loopback());
}

#[test]
fn the_configmap_carries_the_example_configuration() {
    let example = std::fs::read_to_string(deploy("backupgw.toml")).unwrap();
    assert_eq!(
        configmap_toml(),
        example,
        "deploy/k8s/configmap.yaml drifted"
    );
}

/// The first TOML block after `heading` in README.md.
fn readme_toml(heading: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split_once(heading).unwrap().1;
    let toml = section.split_once("```toml\n").unwrap().1;
    toml.split_once("```").unwrap().0.to_owned()
}

fn check_toml(name: &str, toml: &str) {
    let dir = std::env::temp_dir().join(format!("backupgw-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, toml).unwrap();
    let checked = Settings::check(&file, false);
    assert!(checked.is_ok(), "{}", checked.unwrap_err());
}

#[test]
fn the_readmes_configuration_example_is_valid() {
    check_toml(
        "example.toml",
        &readme_toml("## Configuration (`backupgw serve --config FILE`)"),
    );
}

#[test]
fn the_readmes_many_accounts_example_is_valid() {
    let toml = readme_toml("## Many accounts");
    assert!(toml.contains("[[accounts]]") && toml.contains("[organization]"));
    check_toml("accounts.toml", &toml);
}

#[test]
fn the_readmes_faults_example_is_valid() {
    let text = readme_toml("Faults are injected from a TOML file");
    let plan: backupgw::sim::FaultPlan = toml::from_str(&text).unwrap();
    assert_eq!(
        plan.regions["cn-south-1"].fail_with,
        Some(backupgw::sim::FailWith::Unavailable)
    );
    // Every kind the example lists by name is one the simulator knows.
    let (_, listed) = text.split_once("fail_with = ").unwrap();
    let names: Vec<&str> = listed
        .lines()
        .take_while(|l| !l.starts_with('#'))
        .flat_map(|l| l.split_once('#').map_or("", |(_, c)| c).split('|'))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    assert!(names.len() >= 16, "{names:?}");
    for name in names {
        let one: Result<backupgw::sim::Faults, _> =
            toml::from_str(&format!("fail_with = {name:?}"));
        assert!(one.is_ok(), "{name}: {one:?}");
    }
}
