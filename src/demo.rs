//! The embedded default: the gateway pointed at the built-in simulator, reaching it the ways a
//! real deployment does (static token, IAM password, access key, IAM discovery, and the
//! organization's member accounts through agencies).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use secrecy::SecretString;

use crate::accounts::{AccountSource, Members, Organization, ProjectScope};
use crate::callers::Patterns;
use crate::ddm::auth::{AccessKey, IamPassword};
use crate::ddm::{Credential, CredentialKind};
use crate::discovery::Discovery;
use crate::inventory::{Target, TargetSource};
use crate::sim::data::SIM_AGENCY;
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

/// How the demo gateway reaches the simulator.
pub struct DemoSetup {
    pub targets: Vec<Target>,
    pub discoveries: Vec<Discovery>,
    /// The organization's member accounts (when the simulator has any).
    pub accounts: Option<Arc<AccountSource>>,
}

/// The demo gateway's view of the simulator: the first region through a static token, the
/// second through an IAM password, the third through an access key, every other region's
/// projects discovered through IAM, and the member accounts' projects through their agencies.
pub fn demo_setup(sim: &Simulator, c: &DemoCredentials) -> DemoSetup {
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
                .filter(|t| *t.region == **region),
        );
    }
    let rest: Vec<String> = regions.iter().skip(by_region.len()).cloned().collect();
    let discoveries = if rest.is_empty() {
        Vec::new()
    } else {
        vec![Discovery {
            credential: Arc::clone(&iam),
            regions: Patterns::new(&rest).expect("region names are globs"),
            endpoints: sim
                .endpoints()
                .iter()
                .map(|(r, a)| (r.clone(), format!("http://{a}")))
                .collect(),
        }]
    };
    let accounts = (!sim.data().accounts.is_empty()).then(|| {
        Arc::new(AccountSource::new(
            Members::Organization(Organization {
                central: iam,
                endpoint: sim.endpoint(&regions[0]).unwrap_or_default(),
                page_size: 200,
                agency: SIM_AGENCY.to_owned(),
                scopes: sim
                    .endpoints()
                    .iter()
                    .map(|(r, a)| ProjectScope {
                        project: r.clone(),
                        region: r.as_str().into(),
                        endpoint: format!("http://{a}").into(),
                    })
                    .collect(),
                exclude: None,
            }),
            std::time::Duration::from_secs(600),
        ))
    });
    DemoSetup {
        targets,
        discoveries,
        accounts,
    }
}

/// A target for every project of a running simulator's own account (not its members'), all
/// with one credential.
pub fn sim_targets(sim: &Simulator, credential: Arc<Credential>) -> Vec<Target> {
    sim.data()
        .projects
        .iter()
        .filter(|p| p.account == 0)
        .map(|p| Target {
            project_id: p.id.as_str().into(),
            project_name: p.name.clone(),
            region: p.region.as_str().into(),
            endpoint: sim.endpoint(&p.region).unwrap_or_default().into(),
            credential: Arc::clone(&credential),
            source: TargetSource::Config,
            account: None,
        })
        .collect()
}

/// A gateway configuration file for a running simulator: its own projects with the token read
/// from `token_file` and, when it has member accounts, `[organization]` with the IAM user whose
/// password is in `password_file`.
pub fn sim_config_toml(
    sim: &Simulator,
    listen: &str,
    token_file: &Path,
    central: Option<(&DemoCredentials, &Path)>,
) -> String {
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
    if let Some((c, password_file)) = central
        && !sim.data().accounts.is_empty()
    {
        let iam = sim.endpoint(&sim.data().regions[0]).unwrap_or_default();
        let _ = writeln!(
            out,
            "[credentials.central]\nkind = \"iam_password\"\niam_endpoint = \"{iam}\"\ndomain = {:?}\nuser = {:?}\npassword_file = {:?}\n",
            c.domain,
            c.user,
            password_file.display().to_string()
        );
        let _ = writeln!(
            out,
            "[organization]\ncredential = \"central\"\nendpoint = \"{iam}\"\nagency = \"{SIM_AGENCY}\"\nregions = [\"*\"]\nrefresh_seconds = 600\n"
        );
    }
    for p in sim.data().projects.iter().filter(|p| p.account == 0) {
        let _ = writeln!(
            out,
            "[[projects]]\nid = \"{}\"\nname = \"{}\"\nregion = \"{}\"\ncredential = \"sim\"\n",
            p.id, p.name, p.region
        );
    }
    out
}
