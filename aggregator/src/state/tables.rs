//! The tables of a partition's state, behind one interface with two stores: redb on disk
//! ([`Disk`], what the aggregator keeps per partition) and plain maps in memory ([`Mem`], what a
//! rebuild folds the raw tables into when they fit its memory budget). The state's logic
//! (`state::apply_in`, `state::period_rows`) is written once against [`Tables`], so both stores
//! give the same figures by construction.
//!
//! Keys and values are owned Rust values; the redb tables encode them as the definitions in
//! `state` say (fixed-width tuples, and byte strings for a request's events and a cell's
//! figures).

use std::collections::{BTreeMap, HashMap};

use owsu_schemas::FastMap;
use redb::ReadableTable;

use super::{
    agg_bytes, agg_from, EventRow, Waiter, ARRIVED, CLOSES, COMPLAINTS, COMPLAINT_CELLS,
    COMPLAINT_EVENTS, EXTRA, EXTRA_NAMES, MONTHS, OFFSETS, PENDING, PROCESSING, REQUESTS, ROOTS,
    SERVICE_CELLS, SERVICE_EVENTS, WINNERS,
};

type R<T> = Result<T, redb::Error>;

/// Point reads and writes of one table by owned keys and values.
pub(crate) trait Tab<K, V> {
    fn get(&self, k: K) -> R<Option<V>>;
    /// Writes `v` under `k`; returns what was there.
    fn put(&mut self, k: K, v: V) -> R<Option<V>>;
    /// Writes `v` under `k` when what was there does not matter: a [`Buffered`] table then does
    /// not read its B-tree for the old row (a request's row is read once per batch, by `get`,
    /// before it is rewritten).
    fn set(&mut self, k: K, v: V) -> R<()> {
        self.put(k, v).map(drop)
    }
    fn del(&mut self, k: K) -> R<()>;
}

/// A table also read by key ranges: the rows from `lo` to `hi` (both included), in key order.
pub(crate) trait Ranged<K, V>: Tab<K, V> {
    fn range(&self, lo: K, hi: K) -> R<Vec<(K, V)>>;
}

/// Corrections held until the event they name arrives, by that event's id.
pub(crate) trait Waiting {
    fn hold(&mut self, target: u128, w: Waiter) -> R<()>;
    /// Takes every correction waiting for `target`.
    fn take(&mut self, target: u128) -> R<Vec<Waiter>>;
    /// Whether any correction waits at all.
    fn any(&self) -> R<bool>;
}

/// A number given to an unknown code: (what, number) → (code, sector code of a service).
pub(crate) type NamedCode = ((u8, u16), (String, String));

/// Numbers given to codes the catalogue does not know (`what`: 0 service, 1 sector).
pub(crate) trait Names {
    fn number(&self, what: u8, code: &str) -> R<Option<u16>>;
    /// The highest number given so far in `lo..=hi`.
    fn last_number(&self, what: u8, lo: u16, hi: u16) -> R<Option<u16>>;
    fn name(&mut self, what: u8, code: &str, sector: &str, n: u16) -> R<()>;
    /// Every number given: (what, number) → (code, sector code of a service).
    fn all(&self) -> R<Vec<NamedCode>>;
}

/// The last offset applied per topic.
pub(crate) trait Offsets {
    fn offset(&self, topic: &str) -> R<Option<i64>>;
    fn set_offset(&mut self, topic: &str, o: i64) -> R<()>;
}

/// A store of the state's tables.
pub(crate) trait Backend {
    type Events: Tab<u128, EventRow>;
    type Owners: Tab<u128, Vec<u8>>;
    type Roots: Tab<u128, u128>;
    type Winners: Tab<u128, (i64, u128)>;
    type Pending: Waiting;
    type Closes: Ranged<(i32, u16), (i64, i32, i32)>;
    type Arrived: Ranged<(i32, u16), (i64, i64)>;
    type Cells: Ranged<(i32, u16, u16), [i64; 9]>;
    type Processing: Ranged<(i32, u16, u16, u128), (i64, i32)>;
    type Names: Names;
    type Offsets: Offsets;
    type Months: Ranged<(i32, u32), ()>;
}

/// Every table of a partition's state (see the definitions in `state` for what each holds).
pub(crate) struct Tables<B: Backend> {
    /// By kind: service, complaint.
    pub events: [B::Events; 2],
    /// Requests' and complaints' events, by kind.
    pub owners: [B::Owners; 2],
    pub(crate) roots: B::Roots,
    pub winners: B::Winners,
    pub pending: B::Pending,
    pub closes: B::Closes,
    pub arrived: B::Arrived,
    /// Service cells, complaint cells.
    pub cells: [B::Cells; 2],
    pub processing: B::Processing,
    pub names: B::Names,
    pub offsets: B::Offsets,
    pub months: B::Months,
}

// ---- redb ----------------------------------------------------------------------------------

/// The tables of a redb write transaction.
pub(crate) struct Disk<'t>(std::marker::PhantomData<&'t ()>);

impl<'t> Backend for Disk<'t> {
    type Events = Buffered<'t, EventRow, EventRow>;
    type Owners = Buffered<'t, &'static [u8], Vec<u8>>;
    type Roots = redb::Table<'t, u128, u128>;
    type Winners = redb::Table<'t, u128, (i64, u128)>;
    type Pending = redb::MultimapTable<'t, u128, Waiter>;
    type Closes = redb::Table<'t, (i32, u16), (i64, i32, i32)>;
    type Arrived = redb::Table<'t, (i32, u16), (i64, i64)>;
    type Cells = redb::Table<'t, (i32, u16, u16), &'static [u8]>;
    type Processing = redb::Table<'t, (i32, u16, u16, u128), (i64, i32)>;
    type Names = (
        redb::Table<'t, (u8, &'static str), u16>,
        redb::Table<'t, (u8, u16), (&'static str, &'static str)>,
    );
    type Offsets = redb::Table<'t, &'static str, i64>;
    type Months = redb::Table<'t, (i32, u32), ()>;
}

impl<'t> Tables<Disk<'t>> {
    /// Opens every table in `tx`, the id-keyed ones through `back` and `ids`.
    pub(super) fn open(
        tx: &'t redb::WriteTransaction,
        back: &'t mut WriteBack,
        ids: &'t Ids,
    ) -> R<Self> {
        let WriteBack {
            events: [service, complaint],
            owners: [requests, complaints],
        } = back;
        Ok(Tables {
            events: [
                Buffered::open(tx, SERVICE_EVENTS, service, ids, 0)?,
                Buffered::open(tx, COMPLAINT_EVENTS, complaint, ids, 1)?,
            ],
            owners: [
                Buffered::open(tx, REQUESTS, requests, ids, 2)?,
                Buffered::open(tx, COMPLAINTS, complaints, ids, 3)?,
            ],
            roots: tx.open_table(ROOTS)?,
            winners: tx.open_table(WINNERS)?,
            pending: tx.open_multimap_table(PENDING)?,
            closes: tx.open_table(CLOSES)?,
            arrived: tx.open_table(ARRIVED)?,
            cells: [
                tx.open_table(SERVICE_CELLS)?,
                tx.open_table(COMPLAINT_CELLS)?,
            ],
            processing: tx.open_table(PROCESSING)?,
            names: (tx.open_table(EXTRA)?, tx.open_table(EXTRA_NAMES)?),
            offsets: tx.open_table(OFFSETS)?,
            months: tx.open_table(MONTHS)?,
        })
    }
}

/// Rows of the id-keyed tables (events and requests' or complaints' events, by kind) written
/// since they were last moved into the transaction: nearly every event adds a row under a random
/// 128-bit id, and written straight into the B-tree each dirtied a random leaf, which the small
/// page cache evicted (written out) and read back mid-transaction. Held here, a request's later
/// events find its row in memory, and [`WriteBack::write`] inserts the rows in key order: each
/// leaf is written once, in file order.
#[derive(Default)]
pub(crate) struct WriteBack {
    events: [FastMap<u128, EventRow>; 2],
    owners: [FastMap<u128, Vec<u8>>; 2],
}

impl WriteBack {
    /// Rows held.
    pub(crate) fn len(&self) -> usize {
        self.events.iter().map(HashMap::len).sum::<usize>()
            + self.owners.iter().map(HashMap::len).sum::<usize>()
    }

    /// Inserts every row held into `tx`'s tables, in key order, and empties this.
    pub(crate) fn write(&mut self, tx: &redb::WriteTransaction) -> R<()> {
        for (rows, def) in self
            .events
            .iter_mut()
            .zip([SERVICE_EVENTS, COMPLAINT_EVENTS])
        {
            let mut table = tx.open_table(def)?;
            let mut rows: Vec<_> = rows.drain().collect();
            rows.sort_unstable_by_key(|(k, _)| *k);
            for (k, v) in rows {
                table.insert(k, v)?;
            }
        }
        for (rows, def) in self.owners.iter_mut().zip([REQUESTS, COMPLAINTS]) {
            let mut table = tx.open_table(def)?;
            let mut rows: Vec<_> = rows.drain().collect();
            rows.sort_unstable_by_key(|(k, _)| *k);
            for (k, v) in rows {
                table.insert(k, v.as_slice())?;
            }
        }
        Ok(())
    }
}

/// Which ids the id-keyed tables may hold: a Bloom filter of fixed size over every id in them
/// (and in the [`WriteBack`]), so that a new id, which is nearly every event's and every new
/// request's, is known absent without reading the B-tree. A false "may hold" costs a read; there
/// are no false "absent". Its size does not grow with history: past about a tenth of its bits
/// in ids the false positives rise, and lookups fall back to reads as before it.
pub(crate) struct Ids {
    bits: Box<[std::sync::atomic::AtomicU64]>,
}

impl Ids {
    /// Bits set per id, all in one 512-bit block (one cache line): split-block Bloom filter,
    /// as Parquet's, a little less exact than one spread over the whole filter but one memory
    /// access per lookup.
    const PROBES: u32 = 8;

    /// An empty filter of `bytes` (rounded up to a power of two, at least 4 KiB).
    pub(crate) fn new(bytes: usize) -> Self {
        let words = (bytes.max(4096) / 8).next_power_of_two();
        Ids {
            bits: (0..words).map(|_| Default::default()).collect(),
        }
    }

    /// The first word of `id`'s block in table number `table`, and one bit in each of the
    /// block's 8 words. The ids are hashes already (HMACs and FNV digests), but a hand-made
    /// message could use any: mixed again so that no id pattern crowds a few blocks.
    fn probes(&self, table: u8, id: u128) -> (usize, [u64; Self::PROBES as usize]) {
        fn mix(mut x: u64) -> u64 {
            // splitmix64's finaliser.
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        }
        // Both halves of the id and the table number go through the mixer before the block is
        // chosen: XORing the table into the id's low bits made (table 3, id 5) the same as
        // (table 0, id 6) for sequential ids.
        let high = mix((id >> 64) as u64 ^ (u64::from(table) << 56) ^ 0x243f_6a88_85a3_08d3);
        let h1 = mix(id as u64 ^ high);
        let h2 = mix(h1 ^ 0x1319_8a2e_0370_7344);
        let blocks = self.bits.len() / 8;
        let block = (h1 as usize) & (blocks - 1);
        let mut masks = [0u64; Self::PROBES as usize];
        for (i, m) in masks.iter_mut().enumerate() {
            *m = 1 << ((h2 >> (6 * i)) & 63);
        }
        (block * 8, masks)
    }

    pub(crate) fn insert(&self, table: u8, id: u128) {
        use std::sync::atomic::Ordering::Relaxed;
        let (first, masks) = self.probes(table, id);
        for (w, m) in self.bits[first..first + 8].iter().zip(masks) {
            if w.load(Relaxed) & m == 0 {
                w.fetch_or(m, Relaxed);
            }
        }
    }

    pub(crate) fn may_hold(&self, table: u8, id: u128) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let (first, masks) = self.probes(table, id);
        self.bits[first..first + 8]
            .iter()
            .zip(masks)
            .all(|(w, m)| w.load(Relaxed) & m != 0)
    }
}

/// An id-keyed table of the write transaction: rows written since the last
/// [`WriteBack::write`] in `rows`, the others in `table`; `ids` says which ids it may hold.
pub(crate) struct Buffered<'t, S: redb::Value + 'static, V> {
    table: redb::Table<'t, u128, S>,
    rows: &'t mut FastMap<u128, V>,
    ids: &'t Ids,
    /// Which of the four tables, for `ids`.
    table_no: u8,
}

/// How a buffered table's values are stored in redb.
pub(crate) trait StoredAs<S: redb::Value> {
    fn from_stored(v: S::SelfType<'_>) -> Self;
}

impl StoredAs<EventRow> for EventRow {
    fn from_stored(v: EventRow) -> Self {
        v
    }
}

impl StoredAs<&'static [u8]> for Vec<u8> {
    fn from_stored(v: &[u8]) -> Self {
        v.to_vec()
    }
}

impl<'t, S: redb::Value + 'static, V: Clone + StoredAs<S>> Buffered<'t, S, V> {
    /// Table `def` of `tx`, its rows not yet inserted in `rows`; `table_no` numbers it in `ids`.
    fn open(
        tx: &'t redb::WriteTransaction,
        def: redb::TableDefinition<'static, u128, S>,
        rows: &'t mut FastMap<u128, V>,
        ids: &'t Ids,
        table_no: u8,
    ) -> R<Self> {
        Ok(Buffered {
            table: tx.open_table(def)?,
            rows,
            ids,
            table_no,
        })
    }

    /// What the B-tree holds under `k`, unless the filter says it holds nothing.
    fn stored(&self, k: u128) -> R<Option<V>> {
        if !self.ids.may_hold(self.table_no, k) {
            return Ok(None);
        }
        Ok(ReadableTable::get(&self.table, k)?.map(|v| V::from_stored(v.value())))
    }
}

impl<S: redb::Value + 'static, V: Clone + StoredAs<S>> Tab<u128, V> for Buffered<'_, S, V> {
    fn get(&self, k: u128) -> R<Option<V>> {
        match self.rows.get(&k) {
            Some(v) => Ok(Some(v.clone())),
            None => self.stored(k),
        }
    }
    fn put(&mut self, k: u128, v: V) -> R<Option<V>> {
        let old = match self.rows.insert(k, v) {
            Some(old) => Some(old),
            None => self.stored(k)?,
        };
        self.ids.insert(self.table_no, k);
        Ok(old)
    }
    fn set(&mut self, k: u128, v: V) -> R<()> {
        self.rows.insert(k, v);
        self.ids.insert(self.table_no, k);
        Ok(())
    }
    fn del(&mut self, k: u128) -> R<()> {
        self.rows.remove(&k);
        self.table.remove(k)?;
        Ok(())
    }
}

/// The fixed-width tables: a key or value type is its own redb encoding.
macro_rules! plain_redb {
    ($k:ty, $v:ty) => {
        impl Tab<$k, $v> for redb::Table<'_, $k, $v> {
            fn get(&self, k: $k) -> R<Option<$v>> {
                Ok(ReadableTable::get(self, k)?.map(|v| v.value()))
            }
            fn put(&mut self, k: $k, v: $v) -> R<Option<$v>> {
                Ok(self.insert(k, v)?.map(|v| v.value()))
            }
            fn del(&mut self, k: $k) -> R<()> {
                self.remove(k)?;
                Ok(())
            }
        }
    };
    ($k:ty, $v:ty, ranged) => {
        plain_redb!($k, $v);
        impl Ranged<$k, $v> for redb::Table<'_, $k, $v> {
            fn range(&self, lo: $k, hi: $k) -> R<Vec<($k, $v)>> {
                let mut out = Vec::new();
                for r in ReadableTable::range(self, lo..=hi)? {
                    let (k, v) = r?;
                    out.push((k.value(), v.value()));
                }
                Ok(out)
            }
        }
    };
}

plain_redb!(u128, u128);
plain_redb!(u128, (i64, u128));
plain_redb!((i32, u16), (i64, i32, i32), ranged);
plain_redb!((i32, u16), (i64, i64), ranged);
plain_redb!((i32, u16, u16, u128), (i64, i32), ranged);
plain_redb!((i32, u32), (), ranged);

impl Tab<(i32, u16, u16), [i64; 9]> for redb::Table<'_, (i32, u16, u16), &'static [u8]> {
    fn get(&self, k: (i32, u16, u16)) -> R<Option<[i64; 9]>> {
        Ok(ReadableTable::get(self, k)?.map(|v| agg_from(v.value())))
    }
    fn put(&mut self, k: (i32, u16, u16), v: [i64; 9]) -> R<Option<[i64; 9]>> {
        Ok(self
            .insert(k, agg_bytes(&v).as_slice())?
            .map(|v| agg_from(v.value())))
    }
    fn del(&mut self, k: (i32, u16, u16)) -> R<()> {
        self.remove(k)?;
        Ok(())
    }
}

impl Ranged<(i32, u16, u16), [i64; 9]> for redb::Table<'_, (i32, u16, u16), &'static [u8]> {
    fn range(
        &self,
        lo: (i32, u16, u16),
        hi: (i32, u16, u16),
    ) -> R<Vec<((i32, u16, u16), [i64; 9])>> {
        let mut out = Vec::new();
        for r in ReadableTable::range(self, lo..=hi)? {
            let (k, v) = r?;
            out.push((k.value(), agg_from(v.value())));
        }
        Ok(out)
    }
}

impl Waiting for redb::MultimapTable<'_, u128, Waiter> {
    fn hold(&mut self, target: u128, w: Waiter) -> R<()> {
        self.insert(target, w)?;
        Ok(())
    }
    fn take(&mut self, target: u128) -> R<Vec<Waiter>> {
        self.remove_all(target)?
            .map(|v| v.map(|v| v.value()).map_err(redb::Error::from))
            .collect()
    }
    fn any(&self) -> R<bool> {
        use redb::ReadableTableMetadata;
        Ok(!self.is_empty()?)
    }
}

impl Names
    for (
        redb::Table<'_, (u8, &'static str), u16>,
        redb::Table<'_, (u8, u16), (&'static str, &'static str)>,
    )
{
    fn number(&self, what: u8, code: &str) -> R<Option<u16>> {
        Ok(ReadableTable::get(&self.0, (what, code))?.map(|v| v.value()))
    }
    fn last_number(&self, what: u8, lo: u16, hi: u16) -> R<Option<u16>> {
        match ReadableTable::range(&self.1, (what, lo)..=(what, hi))?.next_back() {
            Some(r) => Ok(Some(r?.0.value().1)),
            None => Ok(None),
        }
    }
    fn name(&mut self, what: u8, code: &str, sector: &str, n: u16) -> R<()> {
        self.0.insert((what, code), n)?;
        self.1.insert((what, n), (code, sector))?;
        Ok(())
    }
    fn all(&self) -> R<Vec<NamedCode>> {
        let mut out = Vec::new();
        for r in ReadableTable::iter(&self.1)? {
            let (k, v) = r?;
            let (code, sector) = v.value();
            out.push((k.value(), (code.to_owned(), sector.to_owned())));
        }
        Ok(out)
    }
}

impl Offsets for redb::Table<'_, &'static str, i64> {
    fn offset(&self, topic: &str) -> R<Option<i64>> {
        Ok(ReadableTable::get(self, topic)?.map(|v| v.value()))
    }
    fn set_offset(&mut self, topic: &str, o: i64) -> R<()> {
        self.insert(topic, o)?;
        Ok(())
    }
}

// ---- memory --------------------------------------------------------------------------------

/// Plain maps in memory.
pub(crate) struct Mem;

impl Backend for Mem {
    type Events = FastMap<u128, EventRow>;
    type Owners = FastMap<u128, Vec<u8>>;
    type Roots = FastMap<u128, u128>;
    type Winners = FastMap<u128, (i64, u128)>;
    type Pending = FastMap<u128, Vec<Waiter>>;
    type Closes = BTreeMap<(i32, u16), (i64, i32, i32)>;
    type Arrived = BTreeMap<(i32, u16), (i64, i64)>;
    type Cells = BTreeMap<(i32, u16, u16), [i64; 9]>;
    type Processing = BTreeMap<(i32, u16, u16, u128), (i64, i32)>;
    type Names = MemNames;
    type Offsets = HashMap<String, i64>;
    type Months = BTreeMap<(i32, u32), ()>;
}

impl Default for Tables<Mem> {
    fn default() -> Self {
        Tables {
            events: Default::default(),
            owners: Default::default(),
            roots: Default::default(),
            winners: Default::default(),
            pending: Default::default(),
            closes: Default::default(),
            arrived: Default::default(),
            cells: Default::default(),
            processing: Default::default(),
            names: Default::default(),
            offsets: Default::default(),
            months: Default::default(),
        }
    }
}

impl<K: Copy + Eq + std::hash::Hash, V: Clone> Tab<K, V> for FastMap<K, V> {
    fn get(&self, k: K) -> R<Option<V>> {
        Ok(HashMap::get(self, &k).cloned())
    }
    fn put(&mut self, k: K, v: V) -> R<Option<V>> {
        Ok(self.insert(k, v))
    }
    fn del(&mut self, k: K) -> R<()> {
        self.remove(&k);
        Ok(())
    }
}

impl<K: Copy + Ord, V: Clone> Tab<K, V> for BTreeMap<K, V> {
    fn get(&self, k: K) -> R<Option<V>> {
        Ok(BTreeMap::get(self, &k).cloned())
    }
    fn put(&mut self, k: K, v: V) -> R<Option<V>> {
        Ok(self.insert(k, v))
    }
    fn del(&mut self, k: K) -> R<()> {
        self.remove(&k);
        Ok(())
    }
}

impl<K: Copy + Ord, V: Clone> Ranged<K, V> for BTreeMap<K, V> {
    fn range(&self, lo: K, hi: K) -> R<Vec<(K, V)>> {
        Ok(BTreeMap::range(self, lo..=hi)
            .map(|(k, v)| (*k, v.clone()))
            .collect())
    }
}

impl Waiting for FastMap<u128, Vec<Waiter>> {
    fn hold(&mut self, target: u128, w: Waiter) -> R<()> {
        let v = self.entry(target).or_default();
        // A multimap holds each value once.
        if !v.contains(&w) {
            v.push(w);
            v.sort_unstable();
        }
        Ok(())
    }
    fn take(&mut self, target: u128) -> R<Vec<Waiter>> {
        Ok(self.remove(&target).unwrap_or_default())
    }
    fn any(&self) -> R<bool> {
        Ok(!self.is_empty())
    }
}

/// [`Names`] in memory.
#[derive(Default)]
pub(crate) struct MemNames {
    numbers: HashMap<(u8, String), u16>,
    names: BTreeMap<(u8, u16), (String, String)>,
}

impl Names for MemNames {
    fn number(&self, what: u8, code: &str) -> R<Option<u16>> {
        Ok(self.numbers.get(&(what, code.to_owned())).copied())
    }
    fn last_number(&self, what: u8, lo: u16, hi: u16) -> R<Option<u16>> {
        Ok(self
            .names
            .range((what, lo)..=(what, hi))
            .next_back()
            .map(|((_, n), _)| *n))
    }
    fn name(&mut self, what: u8, code: &str, sector: &str, n: u16) -> R<()> {
        self.numbers.insert((what, code.to_owned()), n);
        self.names
            .insert((what, n), (code.to_owned(), sector.to_owned()));
        Ok(())
    }
    fn all(&self) -> R<Vec<NamedCode>> {
        Ok(self.names.iter().map(|(k, v)| (*k, v.clone())).collect())
    }
}

impl Offsets for HashMap<String, i64> {
    fn offset(&self, topic: &str) -> R<Option<i64>> {
        Ok(self.get(topic).copied())
    }
    fn set_offset(&mut self, topic: &str, o: i64) -> R<()> {
        self.insert(topic.to_owned(), o);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Ids;

    #[test]
    fn the_id_filter_never_forgets_an_id_and_rarely_invents_one() {
        let ids = Ids::new(1 << 20);
        // Sequential ids (a hand-made stream) and hashed-looking ones, in two tables.
        let held: Vec<(u8, u128)> = (0..300_000u128)
            .map(|i| ((i % 2) as u8, i))
            .chain(
                (0..300_000u128)
                    .map(|i| (2, i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))),
            )
            .collect();
        for (t, id) in &held {
            ids.insert(*t, *id);
        }
        assert!(held.iter().all(|(t, id)| ids.may_hold(*t, *id)));
        // The same ids under another table number, and ids never inserted.
        let false_positives = (0..100_000u128)
            .filter(|i| ids.may_hold(3, *i) || ids.may_hold(0, 1_000_000 + i))
            .count();
        assert!(
            false_positives < 2_000,
            "{false_positives} false positives in 200,000 lookups"
        );
    }
}
