//! Ordered answers. The upstream does not document the order of its lists, so an ordered answer
//! is collected whole, then sorted by `created` (ties by project, then id) and streamed in
//! batches. Target results are passed on as they come; the batches follow once every target
//! finished (or the deadline ran out), then the summary.
//!
//! Memory: the batches collected are the encoded pages (shared with the page cache while it
//! keeps them) plus 40 bytes a backup for sorting; an answer larger than the bound (the cache's
//! size) ends with `AnswerTooLarge` rather than growing without end.

use std::cmp::Ordering;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use prost::encoding::{WireType, decode_key, decode_varint, skip_field};

use super::{EncodedBatch, Event, EventStream, InventoryError};

/// The order of `ListBackups` answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// As pages arrive: the fastest.
    #[default]
    Arrival,
    NewestFirst,
    OldestFirst,
}

/// Backups in one batch sent in order.
const BATCH: usize = 128;
/// What sorting costs per backup, beside its encoded bytes.
const PER_BACKUP: usize = std::mem::size_of::<Entry>();

/// One backup of a collected batch, and what it sorts by.
struct Entry {
    batch: u32,
    /// The framed backup within its batch.
    start: u32,
    end: u32,
    /// `None` sorts after every time, in both orders.
    created: Option<(i64, i32)>,
    project: (u32, u32),
    id: (u32, u32),
}

pub struct Ordered {
    inner: Option<EventStream>,
    order: Order,
    max_bytes: usize,
    batches: Vec<Bytes>,
    entries: Vec<Entry>,
    bytes: usize,
    /// Once sorted: what is left to send, in order (entries reversed, so `pop` takes the next).
    sorted: bool,
    /// The summary and anything after it, held until the backups are out.
    tail: Vec<Result<Event, InventoryError>>,
}

impl Ordered {
    pub fn new(inner: EventStream, order: Order, max_bytes: usize) -> Self {
        Ordered {
            inner: Some(inner),
            order,
            max_bytes,
            batches: Vec::new(),
            entries: Vec::new(),
            bytes: 0,
            sorted: false,
            tail: Vec::new(),
        }
    }

    fn collect(&mut self, batch: EncodedBatch) -> Result<(), InventoryError> {
        self.bytes += batch.encoded.len() + batch.count * PER_BACKUP;
        if self.bytes > self.max_bytes {
            return Err(InventoryError::AnswerTooLarge {
                limit_bytes: self.max_bytes as u64,
            });
        }
        let index = self.batches.len() as u32;
        let mut at = 0;
        let data = &batch.encoded[..];
        while at < data.len() {
            let entry = scan(index, data, at).ok_or_else(|| {
                InventoryError::Internal("a batch of backups could not be read back".into())
            })?;
            at = entry.end as usize;
            self.entries.push(entry);
        }
        self.batches.push(batch.encoded);
        Ok(())
    }

    fn sort(&mut self) {
        let batches = &self.batches;
        let text = |e: &Entry, (start, end): (u32, u32)| -> &[u8] {
            &batches[e.batch as usize][start as usize..end as usize]
        };
        let newest = self.order == Order::NewestFirst;
        self.entries.sort_unstable_by(|a, b| {
            let by_time = match (a.created, b.created) {
                (Some(x), Some(y)) if newest => y.cmp(&x),
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            };
            by_time
                .then_with(|| text(a, a.project).cmp(text(b, b.project)))
                .then_with(|| text(a, a.id).cmp(text(b, b.id)))
        });
        self.entries.reverse();
        self.sorted = true;
    }

    /// The next batch of the sorted backups.
    fn next_batch(&mut self) -> Option<EncodedBatch> {
        let take = self.entries.len().min(BATCH);
        if take == 0 {
            return None;
        }
        let mut out = BytesMut::new();
        for _ in 0..take {
            let e = self.entries.pop()?;
            out.extend_from_slice(
                &self.batches[e.batch as usize][e.start as usize..e.end as usize],
            );
        }
        Some(EncodedBatch {
            encoded: out.freeze(),
            count: take,
        })
    }
}

impl Stream for Ordered {
    type Item = Result<Event, InventoryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        while !this.sorted {
            let Some(inner) = this.inner.as_mut() else {
                break;
            };
            match Pin::new(inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(Event::Backups(batch)))) => {
                    if let Err(e) = this.collect(batch) {
                        // Dropping the fan-out stops its upstream work.
                        this.inner = None;
                        this.entries.clear();
                        this.batches.clear();
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Ready(Some(Ok(done @ Event::TargetDone(_)))) => {
                    return Poll::Ready(Some(Ok(done)));
                }
                Poll::Ready(Some(rest)) => this.tail.push(rest),
                Poll::Ready(None) => {
                    this.inner = None;
                    this.sort();
                    this.tail.reverse();
                }
            }
        }
        if let Some(batch) = this.next_batch() {
            return Poll::Ready(Some(Ok(Event::Backups(batch))));
        }
        Poll::Ready(this.tail.pop())
    }
}

/// Reads back where one framed backup (field 1 of `ListBackupsResponse`) starting at `at` ends,
/// and its `created`, `project_id` and `id`.
fn scan(batch: u32, data: &[u8], at: usize) -> Option<Entry> {
    let mut buf = &data[at..];
    let (tag, wire_type) = decode_key(&mut buf).ok()?;
    if tag != 1 || wire_type != WireType::LengthDelimited {
        return None;
    }
    let len = decode_varint(&mut buf).ok()? as usize;
    let body_start = data.len() - buf.len();
    let end = body_start.checked_add(len).filter(|e| *e <= data.len())?;
    let mut entry = Entry {
        batch,
        start: at as u32,
        end: end as u32,
        created: None,
        project: (0, 0),
        id: (0, 0),
    };
    let mut body = &data[body_start..end];
    while !body.is_empty() {
        let (tag, wire_type) = decode_key(&mut body).ok()?;
        match (tag, wire_type) {
            (1 | 12, WireType::LengthDelimited) => {
                let n = decode_varint(&mut body).ok()? as usize;
                let start = end - body.len();
                let range = (start as u32, (start + n) as u32);
                body = body.get(n..)?;
                if tag == 1 {
                    entry.id = range;
                } else {
                    entry.project = range;
                }
            }
            (9, WireType::LengthDelimited) => {
                let n = decode_varint(&mut body).ok()? as usize;
                let mut time = body.get(..n)?;
                body = &body[n..];
                let (mut seconds, mut nanos) = (0i64, 0i32);
                while !time.is_empty() {
                    match decode_key(&mut time).ok()? {
                        (1, WireType::Varint) => seconds = decode_varint(&mut time).ok()? as i64,
                        (2, WireType::Varint) => nanos = decode_varint(&mut time).ok()? as i32,
                        (t, w) => skip_field(w, t, &mut time, Default::default()).ok()?,
                    }
                }
                entry.created = Some((seconds, nanos));
            }
            (t, w) => skip_field(w, t, &mut body, Default::default()).ok()?,
        }
    }
    Some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use prost::Message as _;

    fn framed(backups: &[pb::Backup]) -> Bytes {
        let mut out = BytesMut::new();
        for b in backups {
            prost::encoding::message::encode(1, b, &mut out);
        }
        out.freeze()
    }

    fn backup(project: &str, id: &str, seconds: Option<i64>) -> pb::Backup {
        pb::Backup {
            id: id.into(),
            name: format!("name of {id}"),
            project_id: project.into(),
            created: seconds.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
            ..Default::default()
        }
    }

    #[test]
    fn backups_are_read_back_and_sorted_with_ties_by_project_then_id() {
        let batch = framed(&[
            backup("p2", "b", Some(20)),
            backup("p1", "z", Some(10)),
            backup("p1", "a", None),
            backup("p1", "c", Some(20)),
            backup("p2", "a", Some(20)),
        ]);
        let order_of = |order: Order| {
            let (_tx, rx) = tokio::sync::mpsc::channel(1);
            let mut ordered = Ordered::new(EventStream::detached(rx), order, 1 << 20);
            ordered
                .collect(EncodedBatch {
                    encoded: batch.clone(),
                    count: 5,
                })
                .unwrap();
            ordered.sort();
            let sorted = ordered.next_batch().unwrap();
            let decoded = crate::wire::ListBackupsResponse::decode(sorted.encoded).unwrap();
            decoded
                .backups
                .iter()
                .map(|b| format!("{}/{}", b.project_id, b.id))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            order_of(Order::NewestFirst),
            ["p1/c", "p2/a", "p2/b", "p1/z", "p1/a"]
        );
        assert_eq!(
            order_of(Order::OldestFirst),
            ["p1/z", "p1/c", "p2/a", "p2/b", "p1/a"]
        );
    }

    #[test]
    fn an_answer_over_the_bound_is_refused() {
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        let mut ordered = Ordered::new(EventStream::detached(rx), Order::NewestFirst, 100);
        let big = framed(&vec![backup("p", "b", Some(1)); 10]);
        let e = ordered
            .collect(EncodedBatch {
                encoded: big,
                count: 10,
            })
            .unwrap_err();
        assert!(matches!(
            e,
            InventoryError::AnswerTooLarge { limit_bytes: 100 }
        ));
    }
}
