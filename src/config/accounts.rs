//! `[[accounts]]` and `[organization]`: the member accounts read through agencies.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::raw::{RawConfig, RawOrganization};
use super::{DDM_REGIONS, Problems, default_endpoint, validate_endpoint};
use crate::accounts::{AccountSource, ListedAccount, Members, Organization, ProjectScope};
use crate::callers::Patterns;
use crate::ddm::organizations::DEFAULT_ORGANIZATIONS_ENDPOINT;
use crate::ddm::{AccountRef, Credential, CredentialKind};
use crate::discovery::region_of;

/// The account sources the configuration asks for.
pub(super) fn sources(
    raw: &RawConfig,
    endpoints: &BTreeMap<String, String>,
    credentials: &BTreeMap<String, Arc<Credential>>,
    p: &mut Problems,
) -> Vec<Arc<AccountSource>> {
    let mut sources = Vec::new();
    let listed = listed_accounts(raw, endpoints, credentials, p);
    if !listed.is_empty() {
        sources.push(Arc::new(AccountSource::new(
            Members::Listed(listed),
            Duration::from_secs(raw.discovery.interval_seconds.max(1)),
        )));
    }
    if let Some(org) = &raw.organization
        && let Some(organization) = organization(org, raw, endpoints, credentials, p)
    {
        sources.push(Arc::new(AccountSource::new(
            Members::Organization(organization),
            Duration::from_secs(org.refresh_seconds.max(1)),
        )));
    }
    sources
}

/// `[[accounts]]`: the member accounts named one by one.
fn listed_accounts(
    raw: &RawConfig,
    endpoints: &BTreeMap<String, String>,
    credentials: &BTreeMap<String, Arc<Credential>>,
    p: &mut Problems,
) -> Vec<ListedAccount> {
    let mut listed = Vec::new();
    let mut names = HashSet::new();
    for (i, a) in raw.accounts.iter().enumerate() {
        let key = format!("accounts[{i}]");
        if a.name.trim().is_empty() {
            p.push(format!("{key}.name"), "must not be empty");
        } else if !names.insert(a.name.clone()) {
            p.push(
                format!("{key}.name"),
                format!("account {:?} is listed twice", a.name),
            );
        }
        let reference = match (&a.domain_id, &a.domain_name) {
            (Some(id), None) if !id.trim().is_empty() => Some(AccountRef::Id(id.clone())),
            (None, Some(name)) if !name.trim().is_empty() => Some(AccountRef::Name(name.clone())),
            _ => {
                p.push(&key, "give exactly one of domain_id or domain_name");
                None
            }
        };
        if a.agency.trim().is_empty() {
            p.push(format!("{key}.agency"), "must not be empty");
        }
        let central = central(
            &a.credential,
            &format!("{key}.credential"),
            raw,
            credentials,
            p,
        );
        let scopes = scopes(&key, a.regions.as_deref(), &a.sub_projects, endpoints, p);
        if let (Some(reference), Some(central), Some(scopes)) = (reference, central, scopes) {
            listed.push(ListedAccount {
                name: a.name.clone(),
                reference,
                agency: a.agency.clone(),
                central,
                scopes,
            });
        }
    }
    listed
}

/// `[organization]`: every member account Organizations lists.
fn organization(
    org: &RawOrganization,
    raw: &RawConfig,
    endpoints: &BTreeMap<String, String>,
    credentials: &BTreeMap<String, Arc<Credential>>,
    p: &mut Problems,
) -> Option<Organization> {
    let central = central(
        &org.credential,
        "organization.credential",
        raw,
        credentials,
        p,
    );
    if org.agency.trim().is_empty() {
        p.push("organization.agency", "must not be empty");
    }
    if org.refresh_seconds == 0 {
        p.push("organization.refresh_seconds", "must be at least 1");
    }
    if !(1..=2000).contains(&org.page_size) {
        p.push("organization.page_size", "must be 1 to 2000");
    }
    let exclude = if org.exclude_accounts.is_empty() {
        Some(None)
    } else {
        p.take(
            Patterns::new(&org.exclude_accounts),
            "organization.exclude_accounts",
        )
        .map(Some)
    };
    let endpoint = match &org.endpoint {
        Some(e) => p.keep(validate_endpoint("organization.endpoint", e)),
        None => Some(DEFAULT_ORGANIZATIONS_ENDPOINT.to_owned()),
    };
    let scopes = scopes("organization", org.regions.as_deref(), &[], endpoints, p);
    Some(Organization {
        central: central?,
        endpoint: endpoint?,
        page_size: org.page_size.clamp(1, 2000),
        agency: org.agency.clone(),
        scopes: scopes?,
        exclude: exclude?,
    })
}

/// The central credential that assumes the agencies: an IAM user.
fn central(
    name: &str,
    key: &str,
    raw: &RawConfig,
    credentials: &BTreeMap<String, Arc<Credential>>,
    p: &mut Problems,
) -> Option<Arc<Credential>> {
    match credentials.get(name) {
        Some(c) if matches!(c.kind(), CredentialKind::IamPassword(_)) => Some(Arc::clone(c)),
        Some(c) => {
            p.push(
                key,
                format!(
                    "credential {name:?} is {}: agencies are assumed with an IAM user's token, so give an iam_password credential (temporary AK/SK through an agency is not supported)",
                    c.kind_name()
                ),
            );
            None
        }
        // A credential that is defined but broken was reported already.
        None if raw.credentials.contains_key(name) => None,
        None => {
            p.push(key, format!("no [credentials.{name}] is defined"));
            None
        }
    }
}

/// The projects to read in each account: the built-in project of every region the globs match
/// (among the `[regions]` tables, or every DDM region without them), and the sub-projects named.
fn scopes(
    key: &str,
    regions: Option<&[String]>,
    sub_projects: &[String],
    endpoints: &BTreeMap<String, String>,
    p: &mut Problems,
) -> Option<Vec<ProjectScope>> {
    let known: Vec<&str> = if endpoints.is_empty() {
        DDM_REGIONS.to_vec()
    } else {
        endpoints.keys().map(String::as_str).collect()
    };
    let endpoint_of = |region: &str| {
        endpoints
            .get(region)
            .cloned()
            .or_else(|| default_endpoint(region))
    };
    let patterns = match regions {
        None => Some(Patterns::any()),
        Some(r) if r.is_empty() && !sub_projects.is_empty() => None,
        Some(r) => p.take(Patterns::new(r), format!("{key}.regions")),
    };
    let mut scopes = Vec::new();
    if let Some(patterns) = &patterns {
        for region in known.iter().filter(|r| patterns.matches(r)) {
            if let Some(endpoint) = endpoint_of(region) {
                scopes.push(ProjectScope {
                    project: (*region).to_owned(),
                    region: (*region).into(),
                    endpoint: endpoint.into(),
                });
            }
        }
    }
    let mut ok = true;
    if patterns.as_ref().is_some_and(|_| scopes.is_empty()) {
        ok = false;
        p.push(
            format!("{key}.regions"),
            format!("matches none of the known regions ({})", known.join(", ")),
        );
    }
    for (i, name) in sub_projects.iter().enumerate() {
        let region = region_of(name);
        match endpoint_of(region) {
            Some(endpoint) if name.len() > region.len() + 1 => scopes.push(ProjectScope {
                project: name.clone(),
                region: region.into(),
                endpoint: endpoint.into(),
            }),
            _ => {
                ok = false;
                p.push(
                    format!("{key}.sub_projects[{i}]"),
                    format!("{name:?} is not a sub-project name like cn-north-4_payments in a known region"),
                );
            }
        }
    }
    ok.then_some(scopes)
}
