//! A page as the cache keeps it: its backups encoded for the wire, what the gateway looks at in
//! each kept apart, and how it is stored for other replicas.

use bytes::Bytes;
use prost::Message as _;
use prost::encoding::WireType;

use super::ListBackupsResponse;
use super::build::Spans;
use crate::pb;

/// A page of readable backups, encoded for the wire, with what the gateway itself looks at in
/// each (its id, type, status and creation time) kept apart.
#[derive(Debug, Clone, Default)]
pub struct EncodedPage {
    /// The backups as `ListBackupsResponse` field 1 entries; backup i ends at `ends[i]`.
    pub encoded: Bytes,
    pub ends: Vec<u32>,
    /// What the gateway looks at in each backup; its strings are read in `encoded`.
    pub(super) metas: Vec<Meta>,
    /// The upstream's `total`.
    pub total: u64,
    /// Items the upstream sent, readable or not (tells a short page).
    pub items: usize,
    /// Why unreadable items were skipped.
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Meta {
    pub(super) id: (u32, u32),
    pub(super) backup_type_name: (u32, u32),
    pub(super) status: (u32, u32),
    pub(super) created: Option<prost_types::Timestamp>,
}

/// What filters and de-duplication need of a backup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackupMeta<'a> {
    pub id: &'a str,
    pub backup_type_name: &'a str,
    pub status: &'a str,
    pub created: Option<prost_types::Timestamp>,
}

impl EncodedPage {
    /// Readable backups.
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    pub fn meta(&self, i: usize) -> BackupMeta<'_> {
        let m = &self.metas[i];
        BackupMeta {
            id: self.text(m.id),
            backup_type_name: self.text(m.backup_type_name),
            status: self.text(m.status),
            created: m.created,
        }
    }

    /// Backup `i`'s id as it lies in `encoded` (all that de-duplication needs of it, compared
    /// as bytes: not checked as UTF-8 again for each backup served).
    pub fn id_bytes(&self, i: usize) -> &[u8] {
        let (start, end) = self.metas[i].id;
        &self.encoded[start as usize..end as usize]
    }

    /// A string field in `encoded`: written from a string, or checked when read back
    /// (`from_stored`), so valid UTF-8.
    fn text(&self, (start, end): (u32, u32)) -> &str {
        std::str::from_utf8(&self.encoded[start as usize..end as usize]).unwrap_or_default()
    }

    /// Backup `i`, encoded.
    pub fn encoded_at(&self, i: usize) -> Bytes {
        self.encoded.slice(self.start_of(i)..self.end_of(i))
    }

    /// Where backup `i` starts in `encoded`: where the one before it ends.
    pub fn start_of(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.end_of(i - 1) }
    }

    /// Where backup `i` ends in `encoded`.
    pub fn end_of(&self, i: usize) -> usize {
        self.ends[i] as usize
    }

    /// The backups, decoded (for tests and tools; the gateway sends `encoded`).
    pub fn backups(&self) -> Vec<pb::Backup> {
        let framed = ListBackupsResponse::decode(self.encoded.clone()).unwrap_or_default();
        framed.backups
    }

    /// Heap bytes held, roughly.
    pub fn heap_size(&self) -> usize {
        self.encoded.len()
            + self.ends.capacity() * 4
            + self.metas.capacity() * std::mem::size_of::<Meta>()
            + self.skipped.iter().map(String::len).sum::<usize>()
    }
}

/// How a page is stored for other replicas (`shared`): its encoded backups as they are, after a
/// small header. Version 1: `1`, `total` and `items` (u64 LE), the skipped reasons (u32 count,
/// then u32 length and UTF-8 each), then the encoded backups.
const STORED_VERSION: u8 = 1;

impl EncodedPage {
    /// The page as another replica reads it back with `from_stored`.
    pub fn to_stored(&self) -> Vec<u8> {
        let skipped: usize = self.skipped.iter().map(|s| 4 + s.len()).sum();
        let mut out = Vec::with_capacity(1 + 16 + 4 + skipped + self.encoded.len());
        out.push(STORED_VERSION);
        out.extend_from_slice(&self.total.to_le_bytes());
        out.extend_from_slice(&(self.items as u64).to_le_bytes());
        out.extend_from_slice(&(self.skipped.len() as u32).to_le_bytes());
        for why in &self.skipped {
            out.extend_from_slice(&(why.len() as u32).to_le_bytes());
            out.extend_from_slice(why.as_bytes());
        }
        out.extend_from_slice(&self.encoded);
        out
    }

    /// A page stored by `to_stored`; the filters' view of each backup is read back from its
    /// encoding. Anything else is an error (never a wrong page).
    pub fn from_stored(stored: &[u8]) -> Result<Self, String> {
        let mut buf = stored;
        let mut take = |n: usize| -> Result<&[u8], String> {
            if buf.len() < n {
                return Err("cut short".into());
            }
            let (head, rest) = buf.split_at(n);
            buf = rest;
            Ok(head)
        };
        if take(1)? != [STORED_VERSION] {
            return Err("not a stored page of this version".into());
        }
        let u64_at = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default());
        let total = u64_at(take(8)?);
        let items = u64_at(take(8)?) as usize;
        let count = u32_at(take(4)?) as usize;
        let mut skipped = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let len = u32_at(take(4)?) as usize;
            let why = std::str::from_utf8(take(len)?).map_err(|e| e.to_string())?;
            skipped.push(why.to_owned());
        }
        let encoded = Bytes::copy_from_slice(buf);
        let mut page = EncodedPage {
            total,
            items,
            skipped,
            ..EncodedPage::default()
        };
        let mut rest = &encoded[..];
        while !rest.is_empty() {
            let (tag, wire_type) =
                prost::encoding::decode_key(&mut rest).map_err(|e| e.to_string())?;
            if tag != 1 || wire_type != WireType::LengthDelimited {
                return Err(format!("field {tag} where backups were expected"));
            }
            let len = prost::encoding::decode_varint(&mut rest).map_err(|e| e.to_string())?;
            let len = usize::try_from(len).map_err(|e| e.to_string())?;
            if rest.len() < len {
                return Err("a backup is cut short".into());
            }
            let base = encoded.len() - rest.len();
            // Decoded whole to check it (its strings' UTF-8 too); its spans found in place.
            let backup = pb::Backup::decode(&rest[..len]).map_err(|e| e.to_string())?;
            let spans = spans_of(&rest[..len], base)?;
            rest = &rest[len..];
            let meta = Meta {
                id: spans.id,
                backup_type_name: spans.backup_type_name,
                status: spans.status,
                created: backup.created,
            };
            page.metas.push(meta);
            page.ends.push((encoded.len() - rest.len()) as u32);
        }
        page.encoded = encoded;
        Ok(page)
    }
}

/// Where an encoded backup's id, status and type name lie, `base` being where it starts in its
/// page (the last of a repeated field, as a decoder takes it).
fn spans_of(backup: &[u8], base: usize) -> Result<Spans, String> {
    let mut spans = Spans::default();
    let mut rest = backup;
    while !rest.is_empty() {
        let (tag, wire_type) = prost::encoding::decode_key(&mut rest).map_err(|e| e.to_string())?;
        if wire_type != WireType::LengthDelimited {
            prost::encoding::skip_field(wire_type, tag, &mut rest, Default::default())
                .map_err(|e| e.to_string())?;
            continue;
        }
        let len = prost::encoding::decode_varint(&mut rest).map_err(|e| e.to_string())?;
        let len = usize::try_from(len).map_err(|e| e.to_string())?;
        if rest.len() < len {
            return Err("a field is cut short".into());
        }
        let start = (base + backup.len() - rest.len()) as u32;
        spans.note(tag, (start, start + len as u32));
        rest = &rest[len..];
    }
    Ok(spans)
}

/// What the protection report needs of one backup, read back from an encoded batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupFacts {
    pub project_id: std::sync::Arc<str>,
    pub instance_id: String,
    pub instance_name: String,
    pub size_kb: f64,
    pub created: Option<prost_types::Timestamp>,
    /// An `auto_metadata` (daily) backup.
    pub auto: bool,
}

/// The backups of an encoded batch (`ListBackupsResponse` field 1 entries); a batch that does
/// not decode gives none (it was encoded here).
pub fn backup_facts(encoded: &Bytes) -> Vec<BackupFacts> {
    let Ok(response) = ListBackupsResponse::decode(encoded.clone()) else {
        return Vec::new();
    };
    let mut project: Option<std::sync::Arc<str>> = None;
    response
        .backups
        .into_iter()
        .map(|b| {
            let project_id = match &project {
                Some(p) if **p == *b.project_id => std::sync::Arc::clone(p),
                _ => {
                    let p: std::sync::Arc<str> = b.project_id.as_str().into();
                    project = Some(std::sync::Arc::clone(&p));
                    p
                }
            };
            BackupFacts {
                project_id,
                auto: b.backup_type() == pb::BackupType::AutoMetadata,
                instance_id: b.instance_id,
                instance_name: b.instance_name,
                size_kb: b.file_size_kb,
                created: b.created,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ddm::model::BackupInfo;
    use crate::wire::{Owner, PageBuilder};

    #[test]
    fn a_cached_backup_costs_its_encoding_and_a_few_positions() {
        let spec = crate::sim::data::DataSpec {
            regions: 1,
            projects_per_region: 1,
            ..Default::default()
        };
        let set = crate::sim::data::DataSet::generate(&spec).unwrap();
        let p = &set.projects[0];
        let owner = Owner {
            project_id: &p.id,
            project_name: &p.name,
            region: &p.region,
            ..Owner::default()
        };
        let mut builder = PageBuilder::new(owner, p.backups.len());
        for b in &p.backups {
            builder.push(&p.render(b)).unwrap();
        }
        let page = builder.finish(p.backups.len() as u64, p.backups.len());
        let beside = (page.heap_size() - page.encoded.len()) / page.len();
        // Where its id, type and status lie in `encoded`, its creation time, where it ends.
        assert!(beside <= 56, "{beside} bytes a backup beside its encoding");
        let id = page.meta(0).id;
        assert_eq!(id, page.backups()[0].id, "read in place");
    }

    #[test]
    fn a_stored_page_reads_back_as_it_was() {
        let info = |id: &str, status: &str| BackupInfo {
            id: Some(id.to_owned().into()),
            status: Some(status.to_owned().into()),
            backup_type: Some("auto_metadata".into()),
            created: Some("2025-02-19T10:50:20+0800".into()),
            file_size: Some(1.5),
            ..Default::default()
        };
        let mut builder = PageBuilder::new(Owner::default(), 3);
        builder.push(&info("a1", "normal")).unwrap();
        builder.push(&info("a2", "failed")).unwrap();
        builder.skip("no id".into());
        let page = builder.finish(300, 3);
        let back = EncodedPage::from_stored(&page.to_stored()).unwrap();
        assert_eq!(back.encoded, page.encoded);
        assert_eq!(back.ends, page.ends);
        assert_eq!(
            (back.total, back.items, &back.skipped),
            (300, 3, &page.skipped)
        );
        for i in 0..page.len() {
            assert_eq!(back.meta(i), page.meta(i));
        }
        // Anything else is refused, never read as a wrong page.
        let stored = page.to_stored();
        for bad in [
            &stored[..stored.len() - 3],
            &stored[..10],
            b"\x02abc".as_slice(),
            &[],
        ] {
            assert!(EncodedPage::from_stored(bad).is_err());
        }
    }
}
