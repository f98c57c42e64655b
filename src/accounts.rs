//! Many accounts: the projects of the organization's member accounts, reached through IAM
//! agencies (iam-agency.md). Two sources of members: the configuration's `[[accounts]]`, and
//! Organizations (`[organization]`). Each refresh lists the members, assumes each active
//! account's agency once per (account, project) — a token still fresh is reused, not asked for
//! again — and replaces the source's targets in the inventory. Open streams keep the targets
//! they started with.
//!
//! A suspended account's projects are listed (`account_status`) and never read. A project whose
//! agency IAM refuses stays a target without a project id: its reads fail at once with that
//! refusal, naming the account, the agency and the region, and IAM is not asked again before
//! the next refresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;

use crate::callers::Patterns;
use crate::ddm::organizations::{self, OrgAccount};
use crate::ddm::{AccountRef, Agency, Credential, CredentialKind, DdmError, Grant};
use crate::inventory::{Account, Found, Inventory, Target, TargetSource, target_error};

/// Agencies assumed at once during a refresh.
const CONCURRENT_ASSUMES: usize = 8;

/// One project of a member account to read: by region (`cn-north-4`) or sub-project name.
#[derive(Debug, Clone)]
pub struct ProjectScope {
    pub project: String,
    pub region: Arc<str>,
    pub endpoint: Arc<str>,
}

/// A member account named in `[[accounts]]`.
#[derive(Debug, Clone)]
pub struct ListedAccount {
    pub name: String,
    pub reference: AccountRef,
    pub agency: String,
    pub central: Arc<Credential>,
    pub scopes: Vec<ProjectScope>,
}

/// The organization's member accounts, from Organizations `ListAccounts`.
#[derive(Debug, Clone)]
pub struct Organization {
    pub central: Arc<Credential>,
    pub endpoint: String,
    pub page_size: u32,
    pub agency: String,
    pub scopes: Vec<ProjectScope>,
    /// Accounts (names or ids, globs) never read.
    pub exclude: Option<Patterns>,
}

#[derive(Debug, Clone)]
pub enum Members {
    Listed(Vec<ListedAccount>),
    Organization(Organization),
}

/// One source of member accounts and what it keeps between refreshes: the agency credentials,
/// each holding its (account, project)'s token.
pub struct AccountSource {
    members: Members,
    pub interval: Duration,
    agencies: Mutex<HashMap<AgencyKey, Arc<Credential>>>,
}

impl std::fmt::Debug for AccountSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountSource")
            .field("members", &self.members)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// What one refresh asked IAM for one (member, project) — nothing for a suspended member —
/// with the credential that holds the token.
type Assumed = (
    usize,
    usize,
    Option<Arc<Credential>>,
    Option<Result<Grant, DdmError>>,
);

/// (central credential, account, agency, project).
type AgencyKey = (String, String, String, String);

/// A member as one refresh found it.
struct Member {
    account: Account,
    reference: AccountRef,
    agency: String,
    central: Arc<Credential>,
    scopes: Vec<ProjectScope>,
}

impl AccountSource {
    pub fn new(members: Members, interval: Duration) -> Self {
        AccountSource {
            members,
            interval,
            agencies: Mutex::default(),
        }
    }

    /// What this source is called in `ListTargets` (`Target.source`, `DiscoveryState.source`).
    pub fn label(&self) -> &'static str {
        self.target_source().as_str()
    }

    fn target_source(&self) -> TargetSource {
        match self.members {
            Members::Listed(_) => TargetSource::Accounts,
            Members::Organization(_) => TargetSource::Organization,
        }
    }

    /// The credential that lists the members, or the first central one (for `ListTargets`).
    fn credential_name(&self) -> &str {
        match &self.members {
            Members::Listed(list) => list.first().map_or("", |a| a.central.name()),
            Members::Organization(org) => org.central.name(),
        }
    }

    /// The central credentials whose user tokens assume the agencies.
    pub fn centrals(&self) -> Vec<Arc<Credential>> {
        let mut out: Vec<Arc<Credential>> = Vec::new();
        let all: Vec<&Arc<Credential>> = match &self.members {
            Members::Listed(list) => list.iter().map(|a| &a.central).collect(),
            Members::Organization(org) => vec![&org.central],
        };
        for c in all {
            if !out.iter().any(|o| Arc::ptr_eq(o, c)) {
                out.push(Arc::clone(c));
            }
        }
        out
    }

    /// Lists the members, assumes their agencies and replaces this source's targets. A failure
    /// to list the members (or of a central credential) keeps the previous targets.
    pub async fn refresh(&self, inventory: &Inventory) -> Result<Found, DdmError> {
        let http = inventory.client().http().clone();
        let outcome = self.targets(&http).await;
        let found = outcome.as_ref().map(|(targets, accounts)| Found {
            targets: targets.len(),
            accounts: *accounts,
        });
        inventory.record_discovery(
            self.credential_name(),
            self.label(),
            found.map_err(|e| e.to_string()),
        );
        match outcome {
            Ok((targets, accounts)) => {
                let refused = targets
                    .iter()
                    .filter(|t| t.readable() && t.project_id.is_empty())
                    .count();
                let n = targets.len();
                for t in targets
                    .iter()
                    .filter(|t| t.readable() && t.project_id.is_empty())
                {
                    if let Some(refusal) = t.credential.refusal() {
                        inventory.health(t).record_failure(target_error(&refusal));
                    }
                }
                inventory.set_discovered(self.label(), targets);
                tracing::info!(
                    source = self.label(),
                    accounts,
                    targets = n,
                    refused,
                    "refreshed the member accounts"
                );
                Ok(Found {
                    targets: n,
                    accounts,
                })
            }
            Err(e) => {
                tracing::warn!(source = self.label(), error = %e, "could not refresh the member accounts; keeping the previous targets");
                Err(e)
            }
        }
    }

    /// Every member's targets, and how many members there are.
    async fn targets(&self, http: &reqwest::Client) -> Result<(Vec<Target>, usize), DdmError> {
        let members = self.members(http).await?;
        // A central credential that fails fails once here, not once per account and project
        // (IAM locks users after failed logins).
        for central in self.centrals() {
            central.user_token(http).await?;
        }
        let mut agencies = HashMap::new();
        let mut work = Vec::new();
        for (m, member) in members.iter().enumerate() {
            for (s, scope) in member.scopes.iter().enumerate() {
                if member.account.is_active() {
                    let credential = self.agency(member, scope);
                    agencies.insert(agency_key(member, scope), Arc::clone(&credential));
                    work.push((m, s, Some(credential)));
                } else {
                    work.push((m, s, None));
                }
            }
        }
        // Members that left take their agencies (and tokens) with them.
        *self.agencies.lock().unwrap_or_else(|e| e.into_inner()) = agencies;
        let grants: Vec<Assumed> = futures_util::stream::iter(work)
            .map(|(m, s, credential)| async move {
                let grant = match &credential {
                    Some(c) => Some(c.assume(http).await),
                    None => None,
                };
                (m, s, credential, grant)
            })
            .buffered(CONCURRENT_ASSUMES)
            .collect()
            .await;
        Ok((self.assemble(&members, grants), members.len()))
    }

    /// Targets from what each assume answered; a member's projects share one `Account`, with
    /// the id a token told when the configuration named the account alone.
    fn assemble(&self, members: &[Member], grants: Vec<Assumed>) -> Vec<Target> {
        let mut accounts: Vec<Arc<Account>> = members
            .iter()
            .map(|m| Arc::new(m.account.clone()))
            .collect();
        for (m, _, _, grant) in &grants {
            if let Some(Ok(g)) = grant
                && accounts[*m].id.is_empty()
                && !g.account_id.is_empty()
            {
                accounts[*m] = Arc::new(Account {
                    id: g.account_id.clone(),
                    ..members[*m].account.clone()
                });
            }
        }
        let mut targets = Vec::with_capacity(grants.len());
        for (m, s, credential, grant) in grants {
            let (member, scope) = (&members[m], &members[m].scopes[s]);
            let project_id = match &grant {
                Some(Ok(g)) => g.project_id.as_str(),
                Some(Err(e)) => {
                    tracing::warn!(source = self.label(), error = %e, "agency refused; its project is reported failed until the next refresh");
                    ""
                }
                None => "",
            };
            let credential = credential.unwrap_or_else(|| self.unused_agency(member, scope));
            targets.push(Target {
                project_id: project_id.into(),
                project_name: scope.project.clone(),
                region: Arc::clone(&scope.region),
                endpoint: Arc::clone(&scope.endpoint),
                credential,
                source: self.target_source(),
                account: Some(Arc::clone(&accounts[m])),
            });
        }
        targets
    }

    async fn members(&self, http: &reqwest::Client) -> Result<Vec<Member>, DdmError> {
        match &self.members {
            Members::Listed(list) => Ok(list
                .iter()
                .map(|a| Member {
                    account: Account {
                        id: match &a.reference {
                            AccountRef::Id(id) => id.clone(),
                            AccountRef::Name(_) => String::new(),
                        },
                        name: a.name.clone(),
                        status: "active".into(),
                    },
                    reference: a.reference.clone(),
                    agency: a.agency.clone(),
                    central: Arc::clone(&a.central),
                    scopes: a.scopes.clone(),
                })
                .collect()),
            Members::Organization(org) => {
                let listed =
                    organizations::list_accounts(http, &org.central, &org.endpoint, org.page_size)
                        .await?;
                Ok(listed
                    .into_iter()
                    .filter(|a| !excluded(org, a))
                    .map(|a| Member {
                        reference: AccountRef::Id(a.id.clone()),
                        account: Account {
                            id: a.id,
                            name: a.name,
                            status: a.status,
                        },
                        agency: org.agency.clone(),
                        central: Arc::clone(&org.central),
                        scopes: org.scopes.clone(),
                    })
                    .collect())
            }
        }
    }

    /// The credential of (member, project): the one kept since the last refresh (its token
    /// with it), or a new one.
    fn agency(&self, member: &Member, scope: &ProjectScope) -> Arc<Credential> {
        let agencies = self.agencies.lock().unwrap_or_else(|e| e.into_inner());
        match agencies.get(&agency_key(member, scope)) {
            Some(c) => Arc::clone(c),
            None => self.unused_agency(member, scope),
        }
    }

    /// A new agency credential for (member, project).
    fn unused_agency(&self, member: &Member, scope: &ProjectScope) -> Arc<Credential> {
        let iam_endpoint = match member.central.kind() {
            CredentialKind::IamPassword(p) => p.iam_endpoint.clone(),
            CredentialKind::AccessKey(k) => k.iam_endpoint.clone(),
            _ => crate::ddm::auth::DEFAULT_IAM_ENDPOINT.to_owned(),
        };
        Arc::new(Credential::new(
            member.central.name(),
            CredentialKind::Agency(Agency::new(
                Arc::clone(&member.central),
                iam_endpoint,
                member.account.name.clone(),
                member.reference.clone(),
                member.agency.clone(),
                scope.project.clone(),
                scope.region.to_string(),
            )),
        ))
    }
}

fn agency_key(member: &Member, scope: &ProjectScope) -> AgencyKey {
    (
        member.central.name().to_owned(),
        member.reference.to_string(),
        member.agency.clone(),
        scope.project.clone(),
    )
}

fn excluded(org: &Organization, account: &OrgAccount) -> bool {
    org.exclude
        .as_ref()
        .is_some_and(|p| p.matches(&account.name) || p.matches(&account.id))
}

/// Refreshes every source now and again at its interval, in the background.
pub fn start(
    inventory: Arc<Inventory>,
    sources: Vec<Arc<AccountSource>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let loops = sources.into_iter().map(|source| {
            let inventory = Arc::clone(&inventory);
            async move {
                let mut tick = tokio::time::interval(source.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let _ = source.refresh(&inventory).await;
                }
            }
        });
        futures_util::future::join_all(loops).await;
    })
}
