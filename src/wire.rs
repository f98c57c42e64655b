//! `ListBackupsResponse` on the wire, with its backups already encoded.
//!
//! A page of backups is encoded to protobuf once, when it is fetched, and kept so in the cache;
//! a warm answer then sends those bytes as they are instead of cloning and re-encoding every
//! backup. The wire format is exactly that of `backupgw.v1.ListBackupsResponse` (field 1 is a
//! repeated `Backup`), so clients and reflection see the contract unchanged; this type replaces
//! the generated one (see `extern_path` in build.rs).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{DecodeContext, WireType, message, skip_field};

use crate::ddm::model::{BackupInfo, backup_type_of};
use crate::pb;

#[derive(Clone, Default, PartialEq)]
pub struct ListBackupsResponse {
    /// A batch (decoded: what a client reads).
    pub backups: Vec<pb::Backup>,
    /// Targets that finished since the previous message.
    pub targets: Vec<pb::TargetResult>,
    /// Set on the last message of the stream only.
    pub summary: Option<pb::Summary>,
    /// A batch already encoded as field 1 entries (what the gateway sends); never decoded into.
    pub encoded_backups: Bytes,
}

impl std::fmt::Debug for ListBackupsResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListBackupsResponse")
            .field("backups", &self.backups)
            .field("targets", &self.targets)
            .field("summary", &self.summary)
            .field("encoded_backups", &self.encoded_backups.len())
            .finish()
    }
}

impl prost::Message for ListBackupsResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.encoded_backups);
        for b in &self.backups {
            message::encode(1, b, buf);
        }
        for t in &self.targets {
            message::encode(2, t, buf);
        }
        if let Some(s) = &self.summary {
            message::encode(3, s, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => message::merge_repeated(wire_type, &mut self.backups, buf, ctx),
            2 => message::merge_repeated(wire_type, &mut self.targets, buf, ctx),
            3 => message::merge(
                wire_type,
                self.summary.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        self.encoded_backups.len()
            + message::encoded_len_repeated(1, &self.backups)
            + message::encoded_len_repeated(2, &self.targets)
            + self
                .summary
                .as_ref()
                .map_or(0, |s| message::encoded_len(3, s))
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// A page of readable backups, encoded for the wire, with what the gateway itself looks at in
/// each (its id, type, status and creation time) kept apart.
#[derive(Debug, Clone, Default)]
pub struct EncodedPage {
    /// The backups as `ListBackupsResponse` field 1 entries; backup i ends at `ends[i]`.
    pub encoded: Bytes,
    pub ends: Vec<u32>,
    metas: Vec<Meta>,
    /// The metas' strings, one after the other.
    text: String,
    /// The upstream's `total`.
    pub total: u64,
    /// Items the upstream sent, readable or not (tells a short page).
    pub items: usize,
    /// Why unreadable items were skipped.
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    id: (u32, u32),
    backup_type_name: (u32, u32),
    status: (u32, u32),
    created: Option<prost_types::Timestamp>,
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
        let text = |(start, end): (u32, u32)| &self.text[start as usize..end as usize];
        BackupMeta {
            id: text(m.id),
            backup_type_name: text(m.backup_type_name),
            status: text(m.status),
            created: m.created,
        }
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
            + self.text.capacity()
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
            let backup = pb::Backup::decode(&rest[..len]).map_err(|e| e.to_string())?;
            rest = &rest[len..];
            let mut text = |s: &str| {
                let start = page.text.len() as u32;
                page.text.push_str(s);
                (start, page.text.len() as u32)
            };
            let meta = Meta {
                id: text(&backup.id),
                backup_type_name: text(&backup.backup_type_name),
                status: text(&backup.status),
                created: backup.created,
            };
            page.metas.push(meta);
            page.ends.push((encoded.len() - rest.len()) as u32);
        }
        page.encoded = encoded;
        Ok(page)
    }
}

use prost::Message as _;

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
    text: String,
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

    fn text(&mut self, s: &str) -> (u32, u32) {
        let text = &mut self.scratch().text;
        let start = text.len() as u32;
        text.push_str(s);
        (start, text.len() as u32)
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
        fields.encode_framed(&mut scratch.encoded);
        let end = scratch.encoded.len() as u32;
        scratch.ends.push(end);
        let meta = Meta {
            id: self.text(fields.id),
            backup_type_name: self.text(backup_type_name),
            status: self.text(fields.status),
            created: checked.created,
        };
        self.scratch().metas.push(meta);
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
            text: s.text.clone(),
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
            + s.metas.capacity() * std::mem::size_of::<Meta>()
            + s.text.capacity();
        if kept <= MAX_KEPT_SCRATCH {
            s.encoded.clear();
            s.ends.clear();
            s.metas.clear();
            s.text.clear();
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
            (1, self.id),
            (2, self.name),
            (3, self.description),
            (4, self.status),
            (5, self.instance_id),
            (6, self.instance_name),
            (7, self.instance_status),
            (12, self.project_id),
            (13, self.region),
            (14, self.backup_type_name),
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

    /// Writes the backup as field 1 of `ListBackupsResponse`, fields in tag order.
    fn encode_framed(&self, buf: &mut BytesMut) {
        use prost::encoding::{encode_key, encode_varint};
        let string = |tag: u32, v: &str, buf: &mut BytesMut| {
            if !v.is_empty() {
                encode_key(tag, WireType::LengthDelimited, buf);
                encode_varint(v.len() as u64, buf);
                buf.put_slice(v.as_bytes());
            }
        };
        encode_key(1, WireType::LengthDelimited, buf);
        encode_varint(self.encoded_len() as u64, buf);
        let [
            id,
            name,
            description,
            status,
            instance_id,
            instance_name,
            instance_status,
            project_id,
            region,
            type_name,
            project_name,
            account_id,
            account_name,
        ] = self.strings();
        for (tag, v) in [
            id,
            name,
            description,
            status,
            instance_id,
            instance_name,
            instance_status,
        ] {
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
        for (tag, v) in [
            project_id,
            region,
            type_name,
            project_name,
            account_id,
            account_name,
        ] {
            string(tag, v, buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn backup(id: &str) -> pb::Backup {
        pb::Backup {
            id: id.into(),
            name: "n".into(),
            file_size_kb: 5.5,
            created: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            backup_type: pb::BackupType::Other as i32,
            backup_type_name: "new_kind".into(),
            ..Default::default()
        }
    }

    #[test]
    fn encoded_and_decoded_backups_travel_together() {
        let framed = |b: &pb::Backup| {
            let mut buf = BytesMut::new();
            message::encode(1, b, &mut buf);
            buf.freeze()
        };
        let sent = ListBackupsResponse {
            encoded_backups: framed(&backup("b")),
            backups: vec![backup("c")],
            targets: vec![pb::TargetResult {
                project_id: "p".into(),
                ok: true,
                ..Default::default()
            }],
            summary: Some(pb::Summary {
                backups: 2,
                ..Default::default()
            }),
        };
        let wire = sent.encode_to_vec();
        assert_eq!(wire.len(), sent.encoded_len());
        let got = ListBackupsResponse::decode(wire.as_slice()).unwrap();
        assert_eq!(got.backups, vec![backup("b"), backup("c")]);
        assert_eq!(got.targets, sent.targets);
        assert_eq!(got.summary, sent.summary);
        assert!(got.encoded_backups.is_empty());
    }

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
