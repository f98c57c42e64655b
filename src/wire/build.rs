//! Building a page from the upstream's items: each is checked, then encoded straight from the
//! borrowed JSON strings.

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{WireType, message};

use super::page::{EncodedPage, Meta};
use crate::ddm::model::BackupInfo;
use crate::pb;

/// Whose backups a page holds: written into every one of them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Owner<'a> {
    pub project_id: &'a str,
    pub project_name: &'a str,
    pub region: &'a str,
    /// The member account reached through an agency (empty for our own projects).
    pub account_id: &'a str,
    pub account_name: &'a str,
}

/// Builds a `EncodedPage` from upstream items: each is checked, then encoded straight from the
/// borrowed JSON strings, with no `Backup` built in between.
pub struct PageBuilder<'p> {
    owner: Owner<'p>,
    /// Always `Some` until dropped.
    scratch: Option<Box<Scratch>>,
    skipped: Vec<String>,
}

/// Where a page is built before it is copied, at its exact size, into what the cache keeps.
/// One per thread, reused: decoding leaves no short-lived buffers between the long-lived cached
/// pages, which is what fragments the heap.
#[derive(Default)]
struct Scratch {
    encoded: BytesMut,
    ends: Vec<u32>,
    metas: Vec<Meta>,
}

/// Scratch space larger than this is not kept for the next page.
const MAX_KEPT_SCRATCH: usize = 4 << 20;

thread_local! {
    static SCRATCH: std::cell::Cell<Option<Box<Scratch>>> = const { std::cell::Cell::new(None) };
}

impl<'p> PageBuilder<'p> {
    pub fn new(owner: Owner<'p>, items: usize) -> Self {
        let mut scratch = SCRATCH
            .try_with(|s| s.take())
            .ok()
            .flatten()
            .unwrap_or_default();
        scratch.ends.reserve(items);
        scratch.metas.reserve(items);
        PageBuilder {
            owner,
            scratch: Some(scratch),
            skipped: Vec::new(),
        }
    }

    fn scratch(&mut self) -> &mut Scratch {
        self.scratch.as_mut().expect("present until dropped")
    }

    /// Adds a readable item, or says why it is not.
    pub fn push(&mut self, info: &BackupInfo<'_>) -> Result<(), String> {
        let checked = info.check()?;
        let backup_type_name = info.backup_type.as_deref().unwrap_or_default();
        let fields = BackupFields {
            id: info.id.as_deref().unwrap_or_default(),
            name: info.name.as_deref().unwrap_or_default(),
            description: info.description.as_deref().unwrap_or_default(),
            status: info.status.as_deref().unwrap_or_default(),
            instance_id: info.instance_id.as_deref().unwrap_or_default(),
            instance_name: info.instance_name.as_deref().unwrap_or_default(),
            instance_status: info.instance_status.as_deref().unwrap_or_default(),
            file_size_kb: checked.file_size_kb,
            created: checked.created,
            updated: checked.updated,
            backup_type: backup_type_of(backup_type_name) as i32,
            project_id: self.owner.project_id,
            region: self.owner.region,
            backup_type_name,
            project_name: self.owner.project_name,
            account_id: self.owner.account_id,
            account_name: self.owner.account_name,
        };
        let scratch = self.scratch();
        let spans = fields.encode_framed(&mut scratch.encoded);
        let end = scratch.encoded.len() as u32;
        scratch.ends.push(end);
        scratch.metas.push(Meta {
            id: spans.id,
            backup_type_name: spans.backup_type_name,
            status: spans.status,
            created: checked.created,
        });
        Ok(())
    }

    pub fn skip(&mut self, why: String) {
        self.skipped.push(why);
    }

    pub fn finish(mut self, total: u64, items: usize) -> EncodedPage {
        let skipped = std::mem::take(&mut self.skipped);
        let s = self.scratch();
        // Copies at their exact size: cached pages live long.
        EncodedPage {
            encoded: Bytes::copy_from_slice(&s.encoded),
            ends: s.ends.clone(),
            metas: s.metas.clone(),
            total,
            items,
            skipped,
        }
    }
}

impl Drop for PageBuilder<'_> {
    fn drop(&mut self) {
        let Some(mut s) = self.scratch.take() else {
            return;
        };
        let kept = s.encoded.capacity()
            + s.ends.capacity() * 4
            + s.metas.capacity() * std::mem::size_of::<Meta>();
        if kept <= MAX_KEPT_SCRATCH {
            s.encoded.clear();
            s.ends.clear();
            s.metas.clear();
            // Not while the thread is being torn down.
            let _ = SCRATCH.try_with(|slot| slot.set(Some(s)));
        }
    }
}

/// A `backupgw.v1.Backup`, by reference, encoded exactly as prost encodes `pb::Backup`.
struct BackupFields<'a> {
    id: &'a str,
    name: &'a str,
    description: &'a str,
    status: &'a str,
    instance_id: &'a str,
    instance_name: &'a str,
    instance_status: &'a str,
    file_size_kb: f64,
    created: Option<prost_types::Timestamp>,
    updated: Option<prost_types::Timestamp>,
    backup_type: i32,
    project_id: &'a str,
    region: &'a str,
    backup_type_name: &'a str,
    project_name: &'a str,
    account_id: &'a str,
    account_name: &'a str,
}

impl BackupFields<'_> {
    fn strings(&self) -> [(u32, &str); 13] {
        [
            (ID, self.id),
            (2, self.name),
            (3, self.description),
            (STATUS, self.status),
            (5, self.instance_id),
            (6, self.instance_name),
            (7, self.instance_status),
            (12, self.project_id),
            (13, self.region),
            (TYPE_NAME, self.backup_type_name),
            (15, self.project_name),
            (16, self.account_id),
            (17, self.account_name),
        ]
    }

    fn encoded_len(&self) -> usize {
        use prost::encoding::{encoded_len_varint, key_len};
        let strings: usize = self
            .strings()
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(tag, v)| key_len(*tag) + encoded_len_varint(v.len() as u64) + v.len())
            .sum();
        strings
            + if self.file_size_kb != 0.0 {
                key_len(8) + 8
            } else {
                0
            }
            + self
                .created
                .as_ref()
                .map_or(0, |t| message::encoded_len(9, t))
            + self
                .updated
                .as_ref()
                .map_or(0, |t| message::encoded_len(10, t))
            + if self.backup_type != 0 {
                key_len(11) + encoded_len_varint(self.backup_type as u64)
            } else {
                0
            }
    }

    /// Writes the backup as field 1 of `ListBackupsResponse`, fields in tag order. Returns
    /// where its id, status and type name lie in `buf`.
    fn encode_framed(&self, buf: &mut BytesMut) -> Spans {
        use prost::encoding::{encode_key, encode_varint};
        let mut spans = Spans::default();
        let mut string = |tag: u32, v: &str, buf: &mut BytesMut| {
            if !v.is_empty() {
                encode_key(tag, WireType::LengthDelimited, buf);
                encode_varint(v.len() as u64, buf);
                let start = buf.len() as u32;
                buf.put_slice(v.as_bytes());
                spans.note(tag, (start, buf.len() as u32));
            }
        };
        encode_key(1, WireType::LengthDelimited, buf);
        encode_varint(self.encoded_len() as u64, buf);
        // Tags 1–7, then 8–11 (not strings), then 12–17: in tag order, as prost writes them.
        let strings = self.strings();
        let (before, after) = strings.split_at(7);
        for &(tag, v) in before {
            string(tag, v, buf);
        }
        if self.file_size_kb != 0.0 {
            prost::encoding::double::encode(8, &self.file_size_kb, buf);
        }
        if let Some(t) = &self.created {
            message::encode(9, t, buf);
        }
        if let Some(t) = &self.updated {
            message::encode(10, t, buf);
        }
        if self.backup_type != 0 {
            prost::encoding::int32::encode(11, &self.backup_type, buf);
        }
        for &(tag, v) in after {
            string(tag, v, buf);
        }
        spans
    }
}

/// `backupgw.v1.Backup`'s fields that the gateway itself reads back (`Meta`).
const ID: u32 = 1;
const STATUS: u32 = 4;
const TYPE_NAME: u32 = 14;

/// Where a backup's id, status and type name lie in its page's encoded bytes (empty: `(0, 0)`).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Spans {
    pub id: (u32, u32),
    pub status: (u32, u32),
    pub backup_type_name: (u32, u32),
}

impl Spans {
    /// Where field `tag` lies, if it is one of the three.
    pub(super) fn note(&mut self, tag: u32, span: (u32, u32)) {
        match tag {
            ID => self.id = span,
            STATUS => self.status = span,
            TYPE_NAME => self.backup_type_name = span,
            _ => {}
        }
    }
}

/// The contract's enum for the upstream's `backup_type` (its name is kept verbatim beside it).
fn backup_type_of(name: &str) -> pb::BackupType {
    match name {
        "" => pb::BackupType::Unspecified,
        "auto_metadata" => pb::BackupType::AutoMetadata,
        "metadata" => pb::BackupType::Metadata,
        _ => pb::BackupType::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use crate::wire::BackupMeta;
    use std::borrow::Cow;

    #[test]
    fn the_page_builder_encodes_exactly_as_prost() {
        let info = BackupInfo {
            id: Some(Cow::Borrowed("a1")),
            name: Some(Cow::Owned("名前 with \"escapes\"".into())),
            description: None,
            status: Some("normal".into()),
            instance_id: Some("i".into()),
            instance_name: Some("".into()),
            instance_status: Some("RUNNING".into()),
            file_size: Some(5.419922),
            created: Some("2025-02-19T10:50:20+0800".into()),
            updated: None,
            backup_type: Some("auto_metadata".into()),
        };
        let mut builder = PageBuilder::new(
            Owner {
                project_id: "proj",
                project_name: "cn-north-4_payments",
                region: "cn-north-4",
                account_id: "",
                account_name: "",
            },
            2,
        );
        builder.push(&info).unwrap();
        builder
            .push(&BackupInfo {
                id: Some("a2".into()),
                file_size: Some(0.0),
                ..Default::default()
            })
            .unwrap();
        assert!(builder.push(&BackupInfo::default()).is_err());
        let page = builder.finish(3, 3);
        let expected = pb::Backup {
            id: "a1".into(),
            name: "名前 with \"escapes\"".into(),
            status: "normal".into(),
            instance_id: "i".into(),
            instance_status: "RUNNING".into(),
            file_size_kb: 5.419922,
            created: Some(prost_types::Timestamp {
                seconds: 1_739_933_420,
                nanos: 0,
            }),
            backup_type: pb::BackupType::AutoMetadata as i32,
            project_id: "proj".into(),
            region: "cn-north-4".into(),
            backup_type_name: "auto_metadata".into(),
            project_name: "cn-north-4_payments".into(),
            ..Default::default()
        };
        let mut prost_bytes = BytesMut::new();
        message::encode(1, &expected, &mut prost_bytes);
        assert_eq!(
            page.encoded_at(0),
            prost_bytes.freeze(),
            "byte for byte as prost"
        );
        let backups = page.backups();
        assert_eq!(backups[0], expected);
        assert_eq!(
            (backups[1].id.as_str(), backups[1].backup_type()),
            ("a2", pb::BackupType::Unspecified)
        );
        assert_eq!(
            page.meta(0),
            BackupMeta {
                id: "a1",
                backup_type_name: "auto_metadata",
                status: "normal",
                created: expected.created
            }
        );
        assert_eq!(page.meta(1).id, "a2");
        assert_eq!((page.len(), page.total, page.items), (2, 3, 3));
    }

    /// Every field of `backupgw.v1.Backup`, as the descriptor lists them: a field added to the
    /// proto and not to the page builder fails here.
    #[test]
    fn the_page_builder_writes_every_field_of_backup() {
        use prost::Message as _;
        let info = BackupInfo {
            id: Some("id".into()),
            name: Some("name".into()),
            description: Some("description".into()),
            status: Some("normal".into()),
            instance_id: Some("instance".into()),
            instance_name: Some("instance name".into()),
            instance_status: Some("RUNNING".into()),
            file_size: Some(1.5),
            created: Some("2025-02-19T10:50:20+0800".into()),
            updated: Some("2025-02-19T10:51:20+0800".into()),
            backup_type: Some("metadata".into()),
        };
        let mut builder = PageBuilder::new(
            Owner {
                project_id: "proj",
                project_name: "cn-north-4_payments",
                region: "cn-north-4",
                account_id: "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
                account_name: "payments-prod",
            },
            1,
        );
        builder.push(&info).unwrap();
        let page = builder.finish(1, 1);
        // Field 1 of ListBackupsResponse: a key, a length, the backup.
        let framed = page.encoded_at(0);
        let mut header = &framed[..];
        assert_eq!(prost::encoding::decode_key(&mut header).unwrap().0, 1);
        let len = prost::encoding::decode_varint(&mut header).unwrap() as usize;
        assert_eq!(header.len(), len);
        let written = pb::Backup::decode(header).unwrap();
        // Re-encoded by prost, the tags present are the fields the builder wrote.
        let mut present = std::collections::BTreeSet::new();
        let mut bytes = written.encode_to_vec();
        let mut buf = bytes.as_slice();
        while !buf.is_empty() {
            let (tag, wire_type) = prost::encoding::decode_key(&mut buf).unwrap();
            present.insert(tag);
            prost::encoding::skip_field(wire_type, tag, &mut buf, Default::default()).unwrap();
        }
        bytes.clear();
        let descriptors =
            prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET).unwrap();
        let backup = descriptors
            .file
            .iter()
            .flat_map(|f| &f.message_type)
            .find(|m| m.name() == "Backup")
            .unwrap();
        let declared: std::collections::BTreeSet<u32> =
            backup.field.iter().map(|f| f.number() as u32).collect();
        assert_eq!(present, declared, "fields written vs fields declared");
        assert_eq!(page.encoded_at(0), {
            let mut framed = BytesMut::new();
            message::encode(1, &written, &mut framed);
            framed.freeze()
        });
    }
}
