//! `ListBackupsResponse` on the wire, with its backups already encoded.
//!
//! A page of backups is encoded to protobuf once, when it is fetched, and kept so in the cache;
//! a warm answer then sends those bytes as they are instead of cloning and re-encoding every
//! backup. The wire format is exactly that of `backupgw.v1.ListBackupsResponse` (field 1 is a
//! repeated `Backup`), so clients and reflection see the contract unchanged; this type replaces
//! the generated one (see `extern_path` in build.rs).

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType, message, skip_field};

use crate::pb;

mod build;
mod page;

pub use build::{Owner, PageBuilder};
pub use page::{BackupFacts, BackupMeta, EncodedPage, backup_facts};

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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use prost::Message as _;

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
}
