//! DDM's instance list, `GET /v1/{project_id}/instances` (ddm-list-instances.md), through the
//! same request path as backup pages (limits, retries, auth).
//!
//! Its published docs disagree on whether `offset` counts items or pages, so the client follows
//! the contract's rule: it finds out which reading the server applies, stops under either,
//! de-duplicates by id, and marks a list it could not read whole as incomplete rather than
//! guess (an instance missing from an incomplete list may well exist).

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::AtomicU64;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::auth::Credential;
use super::client::{Call, DdmClient, Gate};
use super::error::DdmError;

/// Instances asked for in one page (the most the upstream serves).
pub const INSTANCE_PAGE: u64 = 128;
/// Pages read at most, whatever `total_record` claims.
const MAX_CALLS: u64 = 1000;

/// One DDM instance, as far as the gateway needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub status: String,
}

/// A project's instances, and whether that is all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceList {
    pub instances: Vec<Instance>,
    /// False when fewer distinct instances could be read than the upstream says exist: an
    /// instance missing from the list may then still exist.
    pub complete: bool,
    /// What the upstream says exists (`total_record`), when it says.
    pub total: Option<u64>,
    pub warnings: Vec<String>,
}

/// One page as the upstream writes it. Every field may be missing; numbers may be strings.
#[derive(Debug, Default, Deserialize)]
pub struct InstancePage {
    #[serde(default)]
    instances: Option<Vec<RawInstance>>,
    #[serde(default, deserialize_with = "lenient_number")]
    total_record: Option<u64>,
    #[serde(default, deserialize_with = "lenient_number")]
    page_no: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawInstance {
    id: Option<String>,
    name: Option<String>,
    status: Option<String>,
}

fn lenient_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Reads a body as an instance page.
pub fn decode_instance_page(body: &[u8]) -> Result<InstancePage, String> {
    serde_json::from_slice(body).map_err(|e| format!("not an instance list page: {e}"))
}

/// The instances of one project to read.
pub struct InstancesRequest<'a> {
    /// `scheme://host[:port]`, no trailing slash.
    pub endpoint: &'a str,
    pub project_id: &'a str,
    pub region: &'a str,
    pub deadline: Option<Instant>,
    pub sent: &'a AtomicU64,
    pub gate: Gate<'a>,
    pub backoff_until: Option<&'a AtomicU64>,
}

impl DdmClient {
    /// Every instance of a project, paging as the contract's client rule says.
    pub async fn list_instances(
        &self,
        r: &InstancesRequest<'_>,
        credential: &Credential,
    ) -> Result<InstanceList, DdmError> {
        let fetch = |offset: u64| async move {
            let call = Call {
                url: format!(
                    "{}/v1/{}/instances?limit={INSTANCE_PAGE}&offset={offset}",
                    r.endpoint, r.project_id
                ),
                project_id: r.project_id,
                region: r.region,
                offset,
                deadline: r.deadline,
                sent: r.sent,
                gate: r.gate,
                backoff_until: r.backoff_until,
            };
            self.get(&call, credential, &decode_instance_page).await
        };
        page_through(fetch).await
    }
}

/// How the server reads `offset`, once found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// `offset` counts items: the next page starts after the items received.
    Items,
    /// `offset` counts pages: the next page is the next number.
    Pages,
}

/// The distinct instances read so far.
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    list: Vec<Instance>,
}

impl Seen {
    /// Adds a page's instances; how many were new.
    fn add(&mut self, page: &InstancePage) -> usize {
        let mut new = 0;
        for raw in page.instances.iter().flatten() {
            let Some(id) = raw.id.as_deref().filter(|id| !id.is_empty()) else {
                continue;
            };
            if self.ids.insert(id.to_owned()) {
                new += 1;
                self.list.push(Instance {
                    id: id.to_owned(),
                    name: raw.name.clone().unwrap_or_default(),
                    status: raw.status.clone().unwrap_or_default(),
                });
            }
        }
        new
    }
}

fn items(page: &InstancePage) -> u64 {
    page.instances.as_ref().map_or(0, |i| i.len() as u64)
}

/// The contract's client rule, over any way of fetching the page at an `offset`.
pub(crate) async fn page_through<F, Fut>(mut fetch: F) -> Result<InstanceList, DdmError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<InstancePage, DdmError>>,
{
    let mut seen = Seen::default();
    let mut warnings = Vec::new();
    // 1. The first page; most projects end here.
    let first = fetch(0).await?;
    let mut total = first.total_record;
    seen.add(&first);
    let mut calls = 1u64;
    let enough =
        |seen: &Seen, total: Option<u64>| total.is_some_and(|t| seen.list.len() as u64 >= t);
    if items(&first) < INSTANCE_PAGE || enough(&seen, total) {
        return Ok(finish(seen, total, warnings));
    }
    // 2. Which reading? Items first (offset 128), then pages, 0-based (1) and 1-based (2).
    let mut next = None;
    for (offset, reading) in [
        (INSTANCE_PAGE, Reading::Items),
        (1, Reading::Pages),
        (2, Reading::Pages),
    ] {
        let page = fetch(offset).await?;
        calls += 1;
        total = total.or(page.total_record);
        let item_reading_denied =
            reading == Reading::Items && page.page_no == Some(INSTANCE_PAGE + 1);
        if !item_reading_denied && seen.add(&page) > 0 {
            next = Some(match reading {
                Reading::Items => (reading, offset + items(&page)),
                Reading::Pages => (reading, offset + 1),
            });
            break;
        }
    }
    let Some((reading, mut offset)) = next else {
        warnings.push(
            "the upstream's instance list did not page under either reading of offset".to_owned(),
        );
        return Ok(finish(seen, total, warnings));
    };
    // 3.–4. Onwards in that reading, until a page is empty or brings nothing new, every
    // instance is in, or the calls run out.
    let cap = total
        .map_or(MAX_CALLS, |t| t.div_ceil(INSTANCE_PAGE) + 3)
        .min(MAX_CALLS);
    while !enough(&seen, total) && calls < cap {
        let page = fetch(offset).await?;
        calls += 1;
        let received = items(&page);
        if received == 0 || seen.add(&page) == 0 {
            break;
        }
        offset += match reading {
            Reading::Items => received,
            Reading::Pages => 1,
        };
    }
    Ok(finish(seen, total, warnings))
}

fn finish(seen: Seen, total: Option<u64>, mut warnings: Vec<String>) -> InstanceList {
    let read = seen.list.len() as u64;
    let complete = total.is_none_or(|t| read >= t);
    if !complete {
        warnings.push(format!(
            "the instance list is incomplete: {read} of the {} instances the upstream counts were read",
            total.unwrap_or_default()
        ));
    }
    InstanceList {
        instances: seen.list,
        complete,
        total,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;

    /// A server of `n` instances, newest first, reading offset `as_pages` or as items; pages
    /// numbered from `first_page` under the page reading.
    fn server(
        n: u64,
        as_pages: bool,
        first_page: u64,
    ) -> impl FnMut(u64) -> std::future::Ready<Result<InstancePage, DdmError>> {
        move |offset| {
            let start = if as_pages {
                offset.saturating_sub(first_page) * INSTANCE_PAGE
            } else {
                offset
            };
            let ids: Vec<u64> = (start..n.min(start + INSTANCE_PAGE)).collect();
            let page_no = if as_pages {
                offset + 1 - first_page
            } else {
                offset / INSTANCE_PAGE + 1
            };
            std::future::ready(Ok(page(&ids, Some(n), Some(page_no))))
        }
    }

    fn page(ids: &[u64], total: Option<u64>, page_no: Option<u64>) -> InstancePage {
        InstancePage {
            instances: (!ids.is_empty()).then(|| {
                ids.iter()
                    .map(|i| RawInstance {
                        id: Some(format!("{i:032x}in09")),
                        name: Some(format!("ddm-{i}")),
                        status: Some("RUNNING".into()),
                    })
                    .collect()
            }),
            total_record: total,
            page_no,
        }
    }

    fn read(
        fetch: impl FnMut(u64) -> std::future::Ready<Result<InstancePage, DdmError>>,
    ) -> (InstanceList, Vec<u64>) {
        let mut asked = Vec::new();
        let mut fetch = fetch;
        let list = page_through(|offset| {
            asked.push(offset);
            fetch(offset)
        })
        .now_or_never()
        .unwrap()
        .unwrap();
        (list, asked)
    }

    #[test]
    fn one_page_is_one_call() {
        let (list, asked) = read(server(3, false, 0));
        assert_eq!(
            (list.instances.len(), list.complete, asked),
            (3, true, vec![0])
        );
    }

    #[test]
    fn items_pages_from_zero_and_pages_from_one_are_all_read_whole() {
        for (as_pages, first_page, expected_offsets) in [
            (false, 0, vec![0, 128, 256]),
            (true, 0, vec![0, 128, 1, 2]),
            (true, 1, vec![0, 128, 1, 2, 3]),
        ] {
            let (list, asked) = read(server(300, as_pages, first_page));
            assert_eq!(list.instances.len(), 300, "{as_pages} {first_page}");
            assert!(list.complete && list.warnings.is_empty());
            assert_eq!(asked, expected_offsets, "{as_pages} {first_page}");
            let ids: HashSet<_> = list.instances.iter().map(|i| &i.id).collect();
            assert_eq!(ids.len(), 300);
        }
    }

    #[test]
    fn a_server_that_ignores_offset_gives_an_incomplete_list_not_a_loop() {
        let (list, asked) = read(|_| {
            std::future::ready(Ok(page(&(0..128).collect::<Vec<_>>(), Some(300), Some(1))))
        });
        assert_eq!(list.instances.len(), 128);
        assert!(!list.complete);
        assert!(
            list.warnings.iter().any(|w| w.contains("128 of the 300")),
            "{:?}",
            list.warnings
        );
        assert_eq!(asked, vec![0, 128, 1, 2]);
    }

    #[test]
    fn a_total_that_lies_is_bounded_by_the_cap() {
        // Claims 10,000; has 300, then repeats its last page forever.
        let (list, asked) = read(|offset| {
            let start = offset.min(256);
            let ids: Vec<u64> = (start..(start + 128).min(300)).collect();
            std::future::ready(Ok(page(&ids, Some(10_000), None)))
        });
        assert_eq!(list.instances.len(), 300);
        assert!(!list.complete);
        assert!(asked.len() <= 10_000 / 128 + 4, "{}", asked.len());
    }

    #[test]
    fn a_page_without_instances_is_an_empty_complete_list() {
        let (list, _) = read(|_| {
            std::future::ready(decode_instance_page(br#"{"instance_num":0,"page_no":1,"page_size":128,"total_record":0,"total_page":0}"#).map_err(DdmError::Transport))
        });
        assert_eq!(
            list,
            InstanceList {
                complete: true,
                total: Some(0),
                ..InstanceList::default()
            }
        );
    }

    #[test]
    fn numbers_may_be_strings_and_unknown_fields_are_ignored() {
        let page = decode_instance_page(
            br#"{"instances":[{"id":"ain09","name":"n","status":"RESIZING","access_port":"5066","core_count":"4","node_count":2}],"total_record":"1","page_no":"1","extra":true}"#,
        )
        .unwrap();
        assert_eq!((page.total_record, page.page_no), (Some(1), Some(1)));
        assert!(decode_instance_page(b"<html>").is_err());
    }
}
