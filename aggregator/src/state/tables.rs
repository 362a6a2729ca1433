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
    type Events = redb::Table<'t, u128, EventRow>;
    type Owners = redb::Table<'t, u128, &'static [u8]>;
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
    /// Opens every table in `tx`.
    pub(super) fn open(tx: &'t redb::WriteTransaction) -> R<Self> {
        Ok(Tables {
            events: [
                tx.open_table(SERVICE_EVENTS)?,
                tx.open_table(COMPLAINT_EVENTS)?,
            ],
            owners: [tx.open_table(REQUESTS)?, tx.open_table(COMPLAINTS)?],
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

plain_redb!(u128, EventRow);
plain_redb!(u128, u128);
plain_redb!(u128, (i64, u128));
plain_redb!((i32, u16), (i64, i32, i32), ranged);
plain_redb!((i32, u16), (i64, i64), ranged);
plain_redb!((i32, u16, u16, u128), (i64, i32), ranged);
plain_redb!((i32, u32), (), ranged);

impl Tab<u128, Vec<u8>> for redb::Table<'_, u128, &'static [u8]> {
    fn get(&self, k: u128) -> R<Option<Vec<u8>>> {
        Ok(ReadableTable::get(self, k)?.map(|v| v.value().to_vec()))
    }
    fn put(&mut self, k: u128, v: Vec<u8>) -> R<Option<Vec<u8>>> {
        Ok(self.insert(k, v.as_slice())?.map(|v| v.value().to_vec()))
    }
    fn del(&mut self, k: u128) -> R<()> {
        self.remove(k)?;
        Ok(())
    }
}

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

/// A hash map with a fast, fixed hash (the state's keys are ids already spread by hashing).
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

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
