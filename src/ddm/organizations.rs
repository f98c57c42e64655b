//! Organizations `ListAccounts` (iam-agency.md §3): the member accounts of the organization,
//! page by page (`marker`), called as the management account (or a delegated administrator).

use std::collections::HashSet;

use serde::Deserialize;

use super::Credential;
use super::error::{DdmError, upstream_error};

/// The global Organizations endpoint, used when the configuration names none.
pub const DEFAULT_ORGANIZATIONS_ENDPOINT: &str = "https://organizations.myhuaweicloud.com";

/// An organization larger than this many pages is not followed further (a marker that never
/// ends is a broken upstream, not an organization).
const MAX_PAGES: usize = 10_000;

/// A member account as Organizations lists it; `status` in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OrgAccount {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub status: String,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    accounts: Vec<OrgAccount>,
    page_info: Option<PageInfo>,
}

#[derive(Deserialize)]
struct PageInfo {
    next_marker: Option<String>,
}

/// Every member account, following `next_marker` until it is absent, null or repeats.
pub async fn list_accounts(
    http: &reqwest::Client,
    credential: &Credential,
    endpoint: &str,
    page_size: u32,
) -> Result<Vec<OrgAccount>, DdmError> {
    let mut accounts = Vec::new();
    let mut markers = HashSet::new();
    let mut marker: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut url = format!("{endpoint}/v1/organizations/accounts?limit={page_size}");
        if let Some(m) = &marker {
            url.push_str("&marker=");
            url.extend(form_urlencoded::byte_serialize(m.as_bytes()));
        }
        let page = page(http, credential, &url).await?;
        accounts.extend(page.accounts.into_iter().map(|mut a| {
            a.status = a.status.to_ascii_lowercase();
            a
        }));
        match page.page_info.and_then(|p| p.next_marker) {
            Some(next) if !next.is_empty() && markers.insert(next.clone()) => marker = Some(next),
            _ => return Ok(accounts),
        }
    }
    Err(DdmError::Decode {
        status: 200,
        message: format!("Organizations kept paging past {MAX_PAGES} pages"),
        request_id: None,
    })
}

async fn page(
    http: &reqwest::Client,
    credential: &Credential,
    url: &str,
) -> Result<Page, DdmError> {
    let (status, request_id, bytes) = credential.get_as_user(http, url).await?;
    if !(200..300).contains(&status) {
        let upstream = upstream_error(status, &bytes, request_id, None);
        if !matches!(status, 401 | 403) {
            return Err(upstream);
        }
        return Err(DdmError::Auth {
            credential: credential.name().to_owned(),
            message: "Organizations would not list the accounts (is this the management account \
                      or a delegated administrator?)"
                .into(),
            upstream: Some(Box::new(upstream)),
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| DdmError::Decode {
        status,
        message: format!("not an account list: {e}"),
        request_id,
    })
}
