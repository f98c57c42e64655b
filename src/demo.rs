//! The embedded default: the gateway pointed at the built-in simulator, reaching it the ways a
//! real deployment does (static token, IAM password, access key, and IAM discovery).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use secrecy::SecretString;

use crate::callers::Patterns;
use crate::ddm::auth::{AccessKey, IamPassword};
use crate::ddm::{Credential, CredentialKind};
use crate::discovery::Discovery;
use crate::inventory::{Target, TargetSource};
use crate::sim::{AuthOptions, SimKey, SimUser, Simulator};

/// Credentials made up for one demo run; the simulator accepts them and nothing else does.
pub struct DemoCredentials {
    pub token: String,
    pub domain: String,
    pub user: String,
    pub password: String,
    pub access_key: String,
    pub secret_key: String,
}

impl DemoCredentials {
    pub fn random() -> Self {
        let hex = |n: usize| {
            (0..n)
                .map(|_| format!("{:x}", fastrand::u8(..16)))
                .collect::<String>()
        };
        DemoCredentials {
            token: format!("demo-token-{}", hex(24)),
            domain: "demo-domain".into(),
            user: "demo-reader".into(),
            password: format!("pw-{}", hex(16)),
            access_key: format!("DEMOAK{}", hex(14).to_uppercase()),
            secret_key: hex(40),
        }
    }

    pub fn sim_auth(&self) -> AuthOptions {
        AuthOptions {
            tokens: vec![SecretString::from(self.token.clone())],
            users: vec![SimUser {
                domain: self.domain.clone(),
                name: self.user.clone(),
                password: SecretString::from(self.password.clone()),
            }],
            keys: vec![SimKey {
                access_key: self.access_key.clone(),
                secret_key: SecretString::from(self.secret_key.clone()),
            }],
            ..AuthOptions::default()
        }
    }
}

/// The demo gateway's view of the simulator: the first region through a static token, the
/// second through an IAM password, the third through an access key, and every other region's
/// projects discovered through IAM.
pub fn demo_setup(sim: &Simulator, c: &DemoCredentials) -> (Vec<Target>, Vec<Discovery>) {
    let iam_endpoint = sim.endpoint(&sim.data().regions[0]).unwrap_or_default();
    let token = Arc::new(Credential::token(
        "demo-token",
        SecretString::from(c.token.clone()),
    ));
    let iam = Arc::new(Credential::new(
        "demo-iam",
        CredentialKind::IamPassword(IamPassword::new(
            iam_endpoint.clone(),
            c.domain.clone(),
            c.user.clone(),
            SecretString::from(c.password.clone()),
        )),
    ));
    let keys = Arc::new(Credential::new(
        "demo-aksk",
        CredentialKind::AccessKey(AccessKey {
            iam_endpoint,
            access_key: c.access_key.clone(),
            secret_key: SecretString::from(c.secret_key.clone()),
        }),
    ));
    let regions = &sim.data().regions;
    let by_region = [&token, &iam, &keys];
    let mut targets = Vec::new();
    for (i, region) in regions.iter().enumerate().take(by_region.len()) {
        targets.extend(
            sim_targets(sim, Arc::clone(by_region[i]))
                .into_iter()
                .filter(|t| &t.region == region),
        );
    }
    let rest: Vec<String> = regions.iter().skip(by_region.len()).cloned().collect();
    let discoveries = if rest.is_empty() {
        Vec::new()
    } else {
        vec![Discovery {
            credential: iam,
            regions: Patterns::new(&rest).expect("region names are globs"),
            endpoints: sim
                .endpoints()
                .iter()
                .map(|(r, a)| (r.clone(), format!("http://{a}")))
                .collect(),
        }]
    };
    (targets, discoveries)
}

/// A target for every project of a running simulator, all with one credential.
pub fn sim_targets(sim: &Simulator, credential: Arc<Credential>) -> Vec<Target> {
    sim.data()
        .projects
        .iter()
        .map(|p| Target {
            project_id: p.id.as_str().into(),
            project_name: p.name.clone(),
            region: p.region.clone(),
            endpoint: sim.endpoint(&p.region).unwrap_or_default().into(),
            credential: Arc::clone(&credential),
            source: TargetSource::Config,
        })
        .collect()
}

/// A gateway configuration file for a running simulator; its token is read from `token_file`.
pub fn sim_config_toml(sim: &Simulator, listen: &str, token_file: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# A backupgw configuration for the simulator it was written by."
    );
    let _ = writeln!(out, "listen = \"{listen}\"\n");
    for (region, addr) in sim.endpoints() {
        let _ = writeln!(out, "[regions.{region}]\nendpoint = \"http://{addr}\"\n");
    }
    let _ = writeln!(
        out,
        "[credentials.sim]\nkind = \"token\"\ntoken_file = {:?}\n",
        token_file.display().to_string()
    );
    for p in &sim.data().projects {
        let _ = writeln!(
            out,
            "[[projects]]\nid = \"{}\"\nname = \"{}\"\nregion = \"{}\"\ncredential = \"sim\"\n",
            p.id, p.name, p.region
        );
    }
    out
}
