//! Agencies (iam-agency.md): a member account's project, read with a token that the central
//! account's IAM user obtains through `assume_role`. One credential per (account, project), so
//! each token is cached on its own, until shortly before it expires, and renewed once when DDM
//! rejects it. The project's id comes from the token (`token.project.id`).
//!
//! A refusal (no such agency, an agency that does not trust us or does not cover the region)
//! is remembered: the project's requests fail at once with it, and IAM is not asked again before
//! the next refresh of the accounts (`Credential::assume`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;
use tokio::time::Instant;

use super::Credential;
use super::auth::{Authorized, CredentialKind};
use super::error::{DdmError, upstream_error};
use super::token::{IamToken, TokenAnswer, TokenBody, TokenSlot, post_tokens};

/// Renew an agency token when less than this is left (iam-agency.md: our choice).
const RENEW_AHEAD: Duration = Duration::from_secs(3600);

/// How the configuration or Organizations names the member account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountRef {
    Id(String),
    Name(String),
}

impl std::fmt::Display for AccountRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccountRef::Id(id) => write!(f, "id {id}"),
            AccountRef::Name(name) => write!(f, "name {name:?}"),
        }
    }
}

pub struct Agency {
    /// The central account's IAM user, whose token assumes the agency.
    pub central: Arc<Credential>,
    pub iam_endpoint: String,
    /// The account's display name (the configuration's or Organizations').
    pub account_name: String,
    pub account: AccountRef,
    pub agency: String,
    /// The project scope: a region name (`cn-north-4`) or a sub-project name.
    pub project: String,
    pub region: String,
    slot: Arc<tokio::sync::Mutex<TokenSlot>>,
    /// What the cached token said.
    grant: Mutex<Option<Grant>>,
    /// What IAM answered at the last refresh, while it refuses.
    refused: Mutex<Option<DdmError>>,
}

/// What an agency token says about where it acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub project_id: String,
    pub account_id: String,
}

impl Agency {
    pub fn new(
        central: Arc<Credential>,
        iam_endpoint: String,
        account_name: String,
        account: AccountRef,
        agency: String,
        project: String,
        region: String,
    ) -> Self {
        Agency {
            central,
            iam_endpoint,
            account_name,
            account,
            agency,
            project,
            region,
            slot: Arc::default(),
            grant: Mutex::default(),
            refused: Mutex::default(),
        }
    }

    pub(super) fn slot(&self) -> Arc<tokio::sync::Mutex<TokenSlot>> {
        Arc::clone(&self.slot)
    }

    fn refused(&self) -> Option<DdmError> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_refused(&self, refusal: Option<DdmError>) {
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = refusal;
    }

    /// Where the agency acts, for error messages: account, agency, region and project.
    fn describe(&self) -> String {
        let project = if self.project == self.region {
            String::new()
        } else {
            format!(" (project {:?})", self.project)
        };
        format!(
            "account {:?} ({}), agency {:?}, region {}{project}",
            self.account_name, self.account, self.agency, self.region
        )
    }
}

impl Credential {
    /// Assumes the agency (at a refresh of the accounts): what the token says, or why IAM
    /// refused. A fresh cached token is used as it is; a refusal is remembered until the next
    /// call.
    pub async fn assume(&self, http: &reqwest::Client) -> Result<Grant, DdmError> {
        let CredentialKind::Agency(agency) = self.kind() else {
            return Err(self.auth_error("not an agency", None));
        };
        let mut slot = agency.slot.lock().await;
        let known = agency
            .grant
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let (Some(token), Some(grant)) = (&slot.token, known)
            && Instant::now() < token.refresh_at
        {
            return Ok(grant);
        }
        agency.set_refused(None);
        let outcome = match self.fetch_agency_token(http, agency).await {
            Ok((token, grant)) => {
                slot.token = Some(Arc::new(token));
                slot.failure = None;
                *agency.grant.lock().unwrap_or_else(|e| e.into_inner()) = Some(grant.clone());
                Ok(grant)
            }
            Err(e) => {
                slot.token = None;
                agency.set_refused(Some(e.clone()));
                Err(e)
            }
        };
        drop(slot);
        outcome
    }

    /// What IAM answered at the last refresh, while it refuses (agencies only).
    pub fn refusal(&self) -> Option<DdmError> {
        match self.kind() {
            CredentialKind::Agency(agency) => agency.refused(),
            _ => None,
        }
    }

    /// The cached agency token, or a new one; the refusal while IAM refuses.
    pub(super) async fn agency_token(
        &self,
        http: &reqwest::Client,
        agency: &Agency,
    ) -> Result<Arc<IamToken>, DdmError> {
        if let Some(refusal) = agency.refused() {
            return Err(refusal);
        }
        TokenSlot::fresh_or_fetch(&agency.slot, || async {
            let (token, grant) = self.fetch_agency_token(http, agency).await?;
            *agency.grant.lock().unwrap_or_else(|e| e.into_inner()) = Some(grant);
            Ok(token)
        })
        .await
    }

    /// `POST /v3/auth/tokens` with `assume_role`, scoped to the project by name. A rejected user
    /// token of the central account is renewed once.
    async fn fetch_agency_token(
        &self,
        http: &reqwest::Client,
        agency: &Agency,
    ) -> Result<(IamToken, Grant), DdmError> {
        let mut renewed = false;
        loop {
            let user = agency.central.user_token(http).await?;
            let header = user.header().map_err(|m| self.auth_error(m, None))?;
            let asked_at = Instant::now();
            let TokenAnswer {
                status,
                request_id,
                subject,
                body: bytes,
            } = post_assume_role(http, agency, header).await.map_err(|e| {
                self.auth_error(
                    format!(
                        "{}: IAM at {} did not answer",
                        agency.describe(),
                        agency.iam_endpoint
                    ),
                    Some(e),
                )
            })?;
            if status == 401 && !renewed {
                // The central user's token expired or was revoked: renew it, once.
                renewed = true;
                agency
                    .central
                    .refresh_after_rejection(None, &Authorized::IamToken(user))
                    .await;
                continue;
            }
            if status != 201 && status != 200 {
                let upstream = upstream_error(status, &bytes, request_id, None);
                let why = match status {
                    401 => "IAM rejected the central account's user token",
                    403 => {
                        "IAM refused the agency (one that does not trust us or does not cover \
                         this region, or a user without Agent Operator)"
                    }
                    404 => "IAM found no such account, agency or project",
                    _ => "IAM could not issue an agency token",
                };
                return Err(self.auth_error(
                    format!("{}: {why} ({upstream})", agency.describe()),
                    Some(upstream),
                ));
            }
            let Some(value) = subject else {
                return Err(self.auth_error(
                    format!(
                        "{}: IAM answered without an X-Subject-Token header",
                        agency.describe()
                    ),
                    None,
                ));
            };
            return self.read_agency_token(agency, value, asked_at, &bytes);
        }
    }

    fn read_agency_token(
        &self,
        agency: &Agency,
        value: SecretString,
        asked_at: Instant,
        bytes: &[u8],
    ) -> Result<(IamToken, Grant), DdmError> {
        let unreadable = |what: String| {
            self.auth_error(
                format!("{}: IAM's agency token answer {what}", agency.describe()),
                None,
            )
        };
        let body = TokenBody::read(bytes).map_err(unreadable)?;
        let token = body
            .token(value, asked_at, RENEW_AHEAD)
            .map_err(unreadable)?;
        let project = body
            .project
            .ok_or_else(|| unreadable("has no project (token.project)".into()))?;
        let project_id = project
            .id
            .filter(|id| crate::config::is_project_id(id))
            .ok_or_else(|| unreadable("has no project id (token.project.id)".into()))?;
        // The account's id: the project's domain, else the agency principal's.
        let account_id = project
            .domain
            .and_then(|d| d.id)
            .or_else(|| body.user.and_then(|u| u.domain).and_then(|d| d.id))
            .unwrap_or_default();
        Ok((
            token,
            Grant {
                project_id,
                account_id,
            },
        ))
    }
}

/// The `assume_role` request, sent as the central account's user.
async fn post_assume_role(
    http: &reqwest::Client,
    agency: &Agency,
    user_token: reqwest::header::HeaderValue,
) -> Result<TokenAnswer, DdmError> {
    let mut assume_role = match &agency.account {
        AccountRef::Id(id) => serde_json::json!({"domain_id": id}),
        AccountRef::Name(name) => serde_json::json!({"domain_name": name}),
    };
    assume_role["agency_name"] = agency.agency.clone().into();
    let body = serde_json::json!({"auth": {
        "identity": {"methods": ["assume_role"], "assume_role": assume_role},
        "scope": {"project": {"name": agency.project}}}});
    post_tokens(http, &agency.iam_endpoint, &body, Some(user_token)).await
}
