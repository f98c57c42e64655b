//! The backup ids a target read has seen, for de-duplication across its pages and reads.

use std::hash::BuildHasher;

use hashbrown::{HashTable, hash_table};

use crate::cache::CachedPage;

/// The backup ids seen so far, each with the read it was first seen in. Ids are kept one after
/// the other in one growing buffer and found through a table of their indexes, compared in
/// full (a hash collision never hides a backup): no allocation per backup, and ≈ 50 bytes for an
/// id of 36 characters. Ids are bytes here, as they lie in a page's encoding: equal bytes are
/// equal ids, and no backup's id is checked as UTF-8 again on its way through.
pub(super) struct SeenIds<S = foldhash::fast::RandomState> {
    /// Seeded per target: crafted ids cannot collide on purpose (and a collision only costs time).
    hasher: S,
    ids: Vec<u8>,
    /// For each id in order: where it ends in `ids` (it starts where the one before ends), and
    /// the read it was first seen in.
    seen: Vec<(u32, u32)>,
    /// Indexes into `seen`.
    table: HashTable<u32>,
}

impl<S: Default> Default for SeenIds<S> {
    fn default() -> Self {
        SeenIds {
            hasher: S::default(),
            ids: Vec::new(),
            seen: Vec::new(),
            table: HashTable::new(),
        }
    }
}

impl<S: BuildHasher> SeenIds<S> {
    /// The read an id was first seen in; records it as seen in `read` if it is new.
    pub(super) fn first_seen(&mut self, id: impl AsRef<[u8]>, read: u32) -> Option<u32> {
        let id = id.as_ref();
        let hash = self.hasher.hash_one(id);
        let entry = self.table.entry(
            hash,
            |&i| id_at(&self.ids, &self.seen, i) == id,
            |&i| self.hasher.hash_one(id_at(&self.ids, &self.seen, i)),
        );
        match entry {
            hash_table::Entry::Occupied(found) => Some(self.seen[*found.get() as usize].1),
            hash_table::Entry::Vacant(slot) => {
                self.ids.extend_from_slice(id);
                self.seen.push((self.ids.len() as u32, read));
                slot.insert((self.seen.len() - 1) as u32);
                None
            }
        }
    }

    /// Room for a page's ids, their text included, at once: instead of growing id by id (the
    /// text from nothing by doubling). Only for the page at hand, not for the `total` it
    /// announces: a target read that is cancelled after its first page (a storm of them) then
    /// holds one page's ids, not a whole list's.
    pub(super) fn reserve_for(&mut self, page: &CachedPage) {
        let bytes: usize = (0..page.len()).map(|i| page.id_bytes(i).len()).sum();
        self.ids.reserve(bytes);
        self.seen.reserve(page.len());
        self.table.reserve(page.len(), |&i| {
            self.hasher.hash_one(id_at(&self.ids, &self.seen, i))
        });
    }
}

/// Id `i` of a `SeenIds`.
fn id_at<'a>(ids: &'a [u8], seen: &[(u32, u32)], i: u32) -> &'a [u8] {
    let i = i as usize;
    let start = if i == 0 { 0 } else { seen[i - 1].0 as usize };
    &ids[start..seen[i].0 as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Owner;

    #[test]
    fn seen_ids_are_exact() {
        let mut seen: SeenIds = SeenIds::default();
        assert_eq!(seen.first_seen("a", 1), None);
        assert_eq!(seen.first_seen("b", 1), None);
        assert_eq!(seen.first_seen("a", 2), Some(1));
        assert_eq!(seen.first_seen("b", 1), Some(1));
    }

    /// Every id hashes the same.
    #[derive(Default)]
    struct Collide;

    impl std::hash::Hasher for Collide {
        fn finish(&self) -> u64 {
            7
        }
        fn write(&mut self, _: &[u8]) {}
    }

    #[test]
    fn a_hash_collision_never_hides_a_backup() {
        let mut seen = SeenIds::<std::hash::BuildHasherDefault<Collide>>::default();
        let ids: Vec<String> = (0..300).map(|i| format!("backup-{i}")).collect();
        for id in &ids {
            assert_eq!(seen.first_seen(id, 1), None, "{id} is new");
        }
        for id in &ids {
            assert_eq!(seen.first_seen(id, 2), Some(1), "{id} was seen");
        }
        assert_eq!(seen.first_seen("backup-300", 2), None);
    }

    fn page_announcing(total: u64) -> CachedPage {
        let mut builder = crate::wire::PageBuilder::new(Owner::default(), 128);
        for i in 0..128 {
            let info = crate::ddm::model::BackupInfo {
                id: Some(format!("backup-{i:04}").into()),
                ..Default::default()
            };
            builder.push(&info).unwrap();
        }
        CachedPage {
            value: builder.finish(total, 128),
            fetched_at: tokio::time::Instant::now(),
        }
    }

    #[test]
    fn a_page_makes_room_for_its_ids_at_once_and_only_for_its_own() {
        let mut seen: SeenIds = SeenIds::default();
        // A first page announcing a list of 10,000.
        seen.reserve_for(&page_announcing(10_000));
        let text = 128 * "backup-0000".len();
        assert!(seen.ids.capacity() >= text, "{}", seen.ids.capacity());
        assert!(seen.ids.capacity() < 2 * text, "{}", seen.ids.capacity());
        assert!((128..256).contains(&seen.seen.capacity()));
        assert!((128..256).contains(&seen.table.capacity()));
        let reserved = (seen.ids.capacity(), seen.table.capacity());
        for i in 0..128 {
            seen.first_seen(format!("backup-{i:04}"), 1);
        }
        assert_eq!((seen.ids.capacity(), seen.table.capacity()), reserved);
    }
}
