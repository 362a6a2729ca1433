//! A partition's state on disk: what the aggregator needs to count each event once, apply
//! corrections, classify complaints by their latest state and compute processing times — and
//! the summary cells themselves.
//!
//! One [redb](https://docs.rs/redb) file per Kafka partition (all three topics' partition N hold
//! the same units). redb was chosen for being pure Rust (no C++ build), a single file (a snapshot
//! is a copy of it between transactions), ACID with one writer, and a page cache of fixed size,
//! so memory does not grow with history.
//!
//! A batch is one write transaction: for every request and complaint it touches, the old
//! contribution to the summary cells is subtracted and the new one added, so a batch changes only
//! the cells its events touch; the summary file of a (partition, month) is then written from that
//! month's cells. The cells are a pure function of the set of events applied (duplicates by
//! `event_id` change nothing, corrections replace their target in any arrival order), which is
//! what makes live figures equal `rebuild`'s and replays harmless.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use owsu_schemas::record::{ComplaintStage, Event, RecordKind, ServiceStage};
use owsu_schemas::time::{date_to_epoch_day, epoch_day_to_date, local_date, Millis};
use owsu_schemas::FastMap;
use redb::{MultimapTableDefinition, ReadableDatabase, ReadableTable, TableDefinition};

use crate::summary::{quarter_months, ComplaintAgg, Month, PeriodRows, ProcessingRow, Quarter};
use crate::summary::{Codes, DayClose, ExtraCodes, EXTRA_BASE};
use crate::summary::{ServiceAgg, UnitDayRow};

mod tables;
use tables::{Backend, Disk, Ids, Mem, Names, Offsets, Ranged, Tab, Tables, Waiting, WriteBack};

/// Facts about the file: `lake_id`, the lake it belongs to.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Last offset applied, per topic.
const OFFSETS: TableDefinition<&str, i64> = TableDefinition::new("offsets");
/// Event id → what later events need to know of it: (owner, unit, content digest, status,
/// smallest offset it arrived at), one table per kind: an id names a service event or a complaint event, and the two topics are
/// read in no fixed order relative to each other, so each kind has its own namespace.
const SERVICE_EVENTS: TableDefinition<u128, EventRow> = TableDefinition::new("service_events");
const COMPLAINT_EVENTS: TableDefinition<u128, EventRow> = TableDefinition::new("complaint_events");
type EventRow = (u128, u16, u64, u8, i64);
/// Request key → its events, [`Entry`] after [`Entry`]: one read and one write per request a
/// batch touches, however many events it has.
const REQUESTS: TableDefinition<u128, &[u8]> = TableDefinition::new("requests");
/// Complaint key → its events, likewise.
const COMPLAINTS: TableDefinition<u128, &[u8]> = TableDefinition::new("complaints");
/// (day, unit) → latest close: closed_at, services, complaints.
const CLOSES: TableDefinition<(i32, u16), (i64, i32, i32)> = TableDefinition::new("closes");
/// (day recorded, unit) → distinct service and complaint events that arrived.
const ARRIVED: TableDefinition<(i32, u16), (i64, i64)> = TableDefinition::new("arrived");
/// Summary cells: (day, unit, service) → services_daily figures.
const SERVICE_CELLS: TableDefinition<(i32, u16, u16), &[u8]> =
    TableDefinition::new("service_cells");
/// (day, unit, sector or NO_SECTOR) → complaints_daily figures.
const COMPLAINT_CELLS: TableDefinition<(i32, u16, u16), &[u8]> =
    TableDefinition::new("complaint_cells");
/// (day delivered, unit, service, request) → (processing seconds, day received).
const PROCESSING: TableDefinition<(i32, u16, u16, u128), (i64, i32)> =
    TableDefinition::new("processing");
/// First event of a correction chain (the original) → the correction that wins for it so far:
/// (recorded_at, event id). Of all corrections in one chain (a correction of a correction
/// belongs to its target's chain), the one recorded last wins (ties: the larger event id), so
/// every arrival order gives one answer; the original and every other correction are superseded.
const WINNERS: TableDefinition<u128, (i64, u128)> = TableDefinition::new("winners");
/// Applied correction → the original its chain starts from.
const ROOTS: TableDefinition<u128, u128> = TableDefinition::new("roots");
/// Event id → corrections held until it arrives (or, if it is itself a held correction, until
/// it is applied): (correction id, kind, unit, recorded_at, offset).
const PENDING: MultimapTableDefinition<u128, Waiter> = MultimapTableDefinition::new("pending");
/// A correction held in [`PENDING`]: (correction id, kind, unit, recorded_at, offset).
type Waiter = (u128, u8, u16, i64, i64);
/// (0 service / 1 sector, code) → number, for codes the catalogue does not know (numbered from
/// [`EXTRA_BASE`] in order of arrival), and the way back: (0 / 1, number) → (code, sector code
/// of a service).
const EXTRA: TableDefinition<(u8, &str), u16> = TableDefinition::new("extra_codes");
const EXTRA_NAMES: TableDefinition<(u8, u16), (&str, &str)> = TableDefinition::new("extra_names");
/// Months holding any figure.
const MONTHS: TableDefinition<(i32, u32), ()> = TableDefinition::new("months");

const NO_SECTOR: u16 = u16::MAX;

/// Status of an event in [`SERVICE_EVENTS`] / [`COMPLAINT_EVENTS`].
const PLAIN: u8 = 0; // not a correction
const APPLIED: u8 = 1; // a correction in its chain ([`ROOTS`])
const HELD: u8 = 2; // a correction waiting for its target ([`PENDING`])
const REFUSED: u8 = 3; // a correction rejected: it names another unit's or kind's event

/// What an event does to the figures ([`Entry::state`]).
const COUNTED: u8 = 0;
const SUPERSEDED: u8 = 1;
const WAITING: u8 = 2;
const REJECTED: u8 = 3;

/// Layout of the file: a file of another format is not read (its partition is restored from
/// the lake's snapshot or raw tables instead).
const FORMAT: &str = "6";

/// Why a partition state cannot be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// redb failed on the file (also a figure that would leave the 64-bit range).
    #[error("partition state {path}: {source}")]
    Db {
        /// The state file.
        path: PathBuf,
        /// The redb error.
        #[source]
        source: Box<redb::Error>,
    },
    /// The file cannot be used: another state format, a directory that cannot be created, or an
    /// earlier apply that failed halfway (the state must be opened again).
    #[error("partition state {path}: {problem}")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

fn day_of(ms: Millis) -> i32 {
    date_to_epoch_day(local_date(ms))
}

fn month_of_day(day: i32) -> Month {
    use chrono::Datelike;
    let d = epoch_day_to_date(day);
    (d.year(), d.month())
}

fn month_days((y, m): Month) -> (i32, i32) {
    let first = chrono::NaiveDate::from_ymd_opt(y, m, 1).expect("valid month");
    let next = if m == 12 {
        chrono::NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        chrono::NaiveDate::from_ymd_opt(y, m + 1, 1)
    }
    .expect("valid month");
    (date_to_epoch_day(first), date_to_epoch_day(next) - 1)
}

/// Key of a request or complaint: its id within its unit. The producer's pseudonyms already
/// differ between units, but a message written by hand could reuse another unit's request id;
/// keyed by unit too, it can never touch that unit's request.
fn owner_key(unit: u16, id: &str) -> u128 {
    fnv128(
        unit.to_le_bytes()
            .into_iter()
            .chain(id_key(id).to_le_bytes()),
    )
}

/// FNV-1a over 128 bits: stable across releases, unlike std's hasher.
fn fnv128(bytes: impl IntoIterator<Item = u8>) -> u128 {
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in bytes {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    h
}

/// 128-bit key of a pseudonymous id (it is 32 hex characters; anything else is hashed).
pub(crate) fn id_key(s: &str) -> u128 {
    if s.len() == 32 {
        if let Ok(v) = u128::from_str_radix(s, 16) {
            return v;
        }
    }
    fnv128(s.bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Svc {
    unit: u16,
    service: u16,
    request: u128,
    stage: ServiceStage,
    fee: Option<i64>,
    occurred: Millis,
    recorded: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cmp {
    unit: u16,
    complaint: u128,
    sector: Option<u16>,
    stage: ComplaintStage,
    occurred: Millis,
    recorded: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Svc(Svc),
    Cmp(Cmp),
}

impl Stored {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(48);
        match self {
            Stored::Svc(s) => {
                b.push(0);
                b.extend_from_slice(&s.unit.to_le_bytes());
                b.extend_from_slice(&s.service.to_le_bytes());
                b.extend_from_slice(&s.request.to_le_bytes());
                b.push(s.stage.index() as u8);
                b.push(u8::from(s.fee.is_some()));
                b.extend_from_slice(&s.fee.unwrap_or(0).to_le_bytes());
                b.extend_from_slice(&s.occurred.to_le_bytes());
                b.extend_from_slice(&s.recorded.to_le_bytes());
            }
            Stored::Cmp(c) => {
                b.push(1);
                b.extend_from_slice(&c.unit.to_le_bytes());
                b.extend_from_slice(&c.sector.unwrap_or(NO_SECTOR).to_le_bytes());
                b.extend_from_slice(&c.complaint.to_le_bytes());
                b.push(c.stage.index() as u8);
                b.extend_from_slice(&c.occurred.to_le_bytes());
                b.extend_from_slice(&c.recorded.to_le_bytes());
            }
        }
        b
    }

    fn decode(b: &[u8]) -> Option<Stored> {
        let u16_at = |i: usize| Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?));
        let i64_at = |i: usize| Some(i64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?));
        let u128_at = |i: usize| Some(u128::from_le_bytes(b.get(i..i + 16)?.try_into().ok()?));
        match b.first()? {
            0 => Some(Stored::Svc(Svc {
                unit: u16_at(1)?,
                service: u16_at(3)?,
                request: u128_at(5)?,
                stage: *ServiceStage::ALL.get(usize::from(*b.get(21)?))?,
                fee: (*b.get(22)? == 1).then_some(i64_at(23)?),
                occurred: i64_at(31)?,
                recorded: i64_at(39)?,
            })),
            1 => Some(Stored::Cmp(Cmp {
                unit: u16_at(1)?,
                sector: Some(u16_at(3)?).filter(|s| *s != NO_SECTOR),
                complaint: u128_at(5)?,
                stage: *ComplaintStage::ALL.get(usize::from(*b.get(21)?))?,
                occurred: i64_at(22)?,
                recorded: i64_at(30)?,
            })),
            _ => None,
        }
    }
}

fn agg_bytes(v: &[i64; 9]) -> [u8; 72] {
    let mut b = [0u8; 72];
    for (i, x) in v.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&x.to_le_bytes());
    }
    b
}

fn agg_from(b: &[u8]) -> [i64; 9] {
    let mut v = [0i64; 9];
    for (i, x) in v.iter_mut().enumerate() {
        if let Some(s) = b.get(i * 8..i * 8 + 8) {
            *x = i64::from_le_bytes(s.try_into().expect("8 bytes"));
        }
    }
    v
}

fn svc_agg(v: [i64; 9]) -> ServiceAgg {
    ServiceAgg {
        received: v[0],
        delivered: v[1],
        rejected: v[2],
        cancelled: v[3],
        fee_payments: v[4],
        refunds: v[5],
        revenue_riel: v[6],
        processing_seconds_sum: v[7],
        processing_count: v[8],
    }
}

fn cmp_agg(v: [i64; 9]) -> ComplaintAgg {
    ComplaintAgg {
        received: v[0],
        within: v[1],
        outside: v[2],
        undecided: v[3],
        resolved: v[4],
        more_info: v[5],
        open: v[6],
        withdrawn: v[7],
        open_within: v[8],
    }
}

/// What one request or complaint adds to the summary cells.
#[derive(Debug, Default, PartialEq, Eq)]
struct Contribution {
    services: BTreeMap<(i32, u16, u16), [i64; 9]>,
    processing: BTreeMap<(i32, u16, u16, u128), (i64, i32)>,
    complaints: BTreeMap<(i32, u16, u16), [i64; 9]>,
    /// A sum left i64's range (only a forged stream can do this: money is bounded per event).
    overflow: bool,
}

/// An event the partition's state refuses to count, for the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its record kind.
    pub kind: RecordKind,
    /// Its offset in its topic's partition (this state's partition).
    pub offset: i64,
    /// Its `event_id`, as a number.
    pub event_id: u128,
    /// The field at fault.
    pub field: &'static str,
    /// Why it is refused (the dead letter's reason).
    pub reason: String,
}

/// Why a correction is refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    OtherUnit(u16),
    OtherKind,
    NamesRefused,
}

/// An event that arrived under the id of an earlier one, with other content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    /// Record kind of the two arrivals.
    pub kind: RecordKind,
    /// The `event_id` they share, as a number.
    pub event_id: u128,
    /// Offset of the arrival that met other content held (or decided) under the id.
    pub offset: i64,
    digest: u64,
}

/// (kind, event id) → digest of the content that arrived first under it.
pub type FirstArrivals = HashMap<(RecordKind, u128), u64>;

/// What applying a batch did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Conflicting duplicates (also in `rejected`).
    pub conflicts: Vec<Conflict>,
    /// A conflicting duplicate came before the first arrival of its id (only a rebuild reading
    /// files out of offset order can do this): the result is not the offset-order one.
    pub inverted: bool,
    /// Events already held with the same content, and day closes no newer than the one held:
    /// they change nothing.
    pub duplicates: u64,
    /// Events refused in this batch: conflicting duplicates, and corrections naming another
    /// unit's or kind's event (also those held earlier whose target arrived now).
    pub rejected: Vec<Rejected>,
    /// Months whose summary files must be written (also for duplicates: a replayed batch's
    /// files may never have been committed).
    pub months: BTreeSet<Month>,
}

/// One partition's state.
///
/// Batches are applied in one write transaction that stays open across batches and is
/// committed by [`commit`](Self::commit) (the pipeline does so every `--state-commit-interval`,
/// before every snapshot and at shutdown). A B-tree keyed by random event and request ids
/// copies every leaf a transaction touches: committed per batch, each batch rewrote nearly
/// every leaf of the state (1.3 GB written for a 1-million-event year); committed every few
/// seconds, a leaf is copied once however many batches touch it. Dirty pages beyond the page
/// cache are written out by redb before the commit, so memory stays bounded.
///
/// The state may lag the lake: a crash loses what was applied since the last commit, and the
/// consumer resumes after the lower of the state's and the tables' offsets, so the lost batches
/// are replayed (their raw rows are not appended again, the state counts them once).
pub struct PartitionState {
    db: redb::Database,
    path: PathBuf,
    /// The write transaction batches are applied in, until the next commit.
    open: std::sync::Mutex<Open>,
    /// Which ids the id-keyed tables may hold: filled from the file on first use, not at
    /// opening, since a restore opens a local file only to read its offsets and may drop it.
    ids: std::sync::OnceLock<Ids>,
}

/// Size of each partition's filter of the ids its state holds ([`Ids`]): 1 MiB keeps false
/// positives under 1 % up to about 700,000 ids a partition (with 12 partitions, two national
/// years at the simulation's 19 % scale: a new id is then nearly never read); past that they
/// rise, and lookups fall back to reading the B-tree, as without the filter.
const ID_FILTER_BYTES: usize = 1 << 20;

/// Rows held in a partition's [`WriteBack`] before they are written into the transaction:
/// about 1 MiB a partition (16,384 measured no faster, with more memory).
const WRITE_BACK_ROWS: usize = 8_192;

/// A write transaction and the id-keyed rows written in it but not yet inserted.
struct Txn {
    tx: redb::WriteTransaction,
    back: WriteBack,
}

/// The state of [`PartitionState::open`]'s transaction.
#[derive(Default)]
enum Open {
    /// No transaction: the file holds everything applied.
    #[default]
    Committed,
    /// Batches applied since the last commit (boxed: a transaction is large, the other
    /// states are nothing).
    Pending(Box<Txn>),
    /// An apply failed halfway: what the open transaction held is dropped, and the state must
    /// be restored (opened again) before it is used.
    Failed,
}

/// Tables opened for reading in either kind of transaction.
trait Reader {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<impl ReadableTable<K, V> + '_, redb::Error>;
}

impl Reader for redb::ReadTransaction {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<impl ReadableTable<K, V> + '_, redb::Error> {
        Ok(self.open_table(def)?)
    }
}

impl Reader for redb::WriteTransaction {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<impl ReadableTable<K, V> + '_, redb::Error> {
        Ok(self.open_table(def)?)
    }
}

/// Runs `$body` with `$r` bound to the open write transaction (a read there sees what is not
/// committed yet) or, when none is open, to a read transaction. A macro, not a function: the
/// body is generic over [`Reader`], which has no object-safe form.
macro_rules! read_with {
    ($state:expr, |$r:ident| $body:expr) => {{
        let state = $state;
        let open = state.lock();
        match &*open {
            Open::Pending(txn) => {
                let $r: &redb::WriteTransaction = &txn.tx;
                ($body).map_err(|e: redb::Error| state.err(e))
            }
            Open::Committed => {
                let tx = state.db.begin_read().map_err(|e| state.err(e))?;
                let $r = &tx;
                ($body).map_err(|e: redb::Error| state.err(e))
            }
            Open::Failed => Err(state.failed()),
        }
    }};
}

impl PartitionState {
    /// Opens (or creates) the state file, with a page cache of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, StateError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StateError::Corrupt {
                path: path.to_owned(),
                problem: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| StateError::Db {
                path: path.to_owned(),
                source: Box::new(e.into()),
            })?;
        let s = PartitionState {
            db,
            path: path.to_owned(),
            open: Default::default(),
            ids: std::sync::OnceLock::new(),
        };
        // Create every table so readers never meet a missing one.
        let other = s.write(|tx| {
            tx.open_table(OFFSETS)?;
            let mut meta = tx.open_table(META)?;
            let format = meta.get("format")?.map(|v| v.value().to_owned());
            match format {
                Some(f) if f != FORMAT => return Ok(Some(f)),
                Some(_) => {}
                None => {
                    if tx
                        .list_tables()?
                        .any(|t| redb::TableHandle::name(&t) == "request_events")
                    {
                        return Ok(Some("1".to_owned()));
                    }
                    meta.insert("format", FORMAT)?;
                }
            }
            drop(meta);
            tx.open_table(SERVICE_EVENTS)?;
            tx.open_table(COMPLAINT_EVENTS)?;
            tx.open_table(ROOTS)?;
            tx.open_multimap_table(PENDING)?;
            tx.open_table(REQUESTS)?;
            tx.open_table(COMPLAINTS)?;
            tx.open_table(CLOSES)?;
            tx.open_table(ARRIVED)?;
            tx.open_table(SERVICE_CELLS)?;
            tx.open_table(COMPLAINT_CELLS)?;
            tx.open_table(PROCESSING)?;
            tx.open_table(WINNERS)?;
            tx.open_table(MONTHS)?;
            tx.open_table(EXTRA)?;
            tx.open_table(EXTRA_NAMES)?;
            Ok(None)
        })?;
        if let Some(f) = other {
            return Err(StateError::Corrupt {
                path: path.to_owned(),
                problem: format!("state format {f}, this build reads format {FORMAT}"),
            });
        }
        Ok(s)
    }

    /// The filter of the ids the id-keyed tables hold, filled from their committed rows the
    /// first time (numbered as [`Tables::open`] numbers them). Called before any row of those
    /// tables is written, so the committed rows are all there are; every later write adds its
    /// id.
    fn ids(&self) -> Result<&Ids, redb::Error> {
        if let Some(ids) = self.ids.get() {
            return Ok(ids);
        }
        let ids = Ids::new(ID_FILTER_BYTES);
        let r = self.db.begin_read()?;
        for (no, def) in [(0, SERVICE_EVENTS), (1, COMPLAINT_EVENTS)] {
            for row in r.open_table(def)?.iter()? {
                ids.insert(no, row?.0.value());
            }
        }
        for (no, def) in [(2, REQUESTS), (3, COMPLAINTS)] {
            for row in r.open_table(def)?.iter()? {
                ids.insert(no, row?.0.value());
            }
        }
        Ok(self.ids.get_or_init(|| ids))
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl Into<redb::Error>) -> StateError {
        StateError::Db {
            path: self.path.clone(),
            source: Box::new(e.into()),
        }
    }

    /// Runs `f` in the open write transaction (beginning one if none is open) and commits it.
    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StateError> {
        let out = self.pending(|t| f(&t.tx))?;
        self.commit()?;
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // A panic while applying leaves the transaction half done: treated as failed below.
        self.open.lock().unwrap_or_else(|p| {
            let mut g = p.into_inner();
            *g = Open::Failed;
            g
        })
    }

    fn failed(&self) -> StateError {
        StateError::Corrupt {
            path: self.path.clone(),
            problem: "an earlier apply failed halfway; the state must be opened again (it \
                      restores to its last commit and the consumer replays from there)"
                .to_owned(),
        }
    }

    /// Runs `f` in the open write transaction, beginning one if none is open, and leaves it open.
    /// If `f` fails, the transaction is dropped with everything applied since the last commit.
    fn pending<T>(
        &self,
        f: impl FnOnce(&mut Txn) -> Result<T, redb::Error>,
    ) -> Result<T, StateError> {
        let mut open = self.lock();
        let mut tx = match std::mem::take(&mut *open) {
            Open::Pending(tx) => tx,
            Open::Committed => Box::new(Txn {
                tx: self.db.begin_write().map_err(|e| self.err(e))?,
                back: WriteBack::default(),
            }),
            Open::Failed => {
                *open = Open::Failed;
                return Err(self.failed());
            }
        };
        match f(&mut tx) {
            Ok(out) => {
                *open = Open::Pending(tx);
                Ok(out)
            }
            Err(e) => {
                *open = Open::Failed;
                drop(tx);
                Err(self.err(e))
            }
        }
    }

    /// Makes everything applied so far durable in the file (a no-op when nothing is pending).
    pub fn commit(&self) -> Result<(), StateError> {
        let mut open = self.lock();
        match std::mem::take(&mut *open) {
            Open::Pending(txn) => {
                let Txn { tx, mut back } = *txn;
                back.write(&tx)
                    .and_then(|()| tx.commit().map_err(redb::Error::from))
                    .map_err(|e| {
                        *open = Open::Failed;
                        self.err(e)
                    })
            }
            Open::Committed => Ok(()),
            Open::Failed => {
                *open = Open::Failed;
                Err(self.failed())
            }
        }
    }

    /// A fact recorded in the file.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        read_with!(self, |r| (|| Ok(r
            .table(META)?
            .get(key)?
            .map(|v| v.value().to_owned())))())
    }

    /// Records a fact in the file and commits (with everything applied so far).
    pub(crate) fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.write(|tx| {
            tx.open_table(META)?.insert(key, value)?;
            Ok(())
        })
    }

    /// The last offset applied of each topic.
    pub fn offsets(&self) -> Result<HashMap<String, i64>, StateError> {
        read_with!(self, |r| offsets_in(r))
    }

    /// Applies events (with the topic and offset each came from) in one transaction, and
    /// records the last offset of each topic.
    pub fn apply(
        &self,
        events: &[(&str, i64, &Event)],
        codes: &Codes,
    ) -> Result<Applied, StateError> {
        self.apply_with(events, codes, &FirstArrivals::new())
    }

    /// The rows of every summary table for one month.
    #[cfg(test)]
    pub fn month(&self, m: Month) -> Result<PeriodRows, StateError> {
        let (lo, hi) = month_days(m);
        self.with_tables(|t| period_rows(t, lo, hi))
    }

    /// Distinct events held.
    #[cfg(test)]
    pub fn events(&self) -> Result<u64, StateError> {
        use redb::ReadableTableMetadata;
        // The rows held in memory are in the tables once committed.
        self.commit()?;
        read_with!(self, |r| (|| {
            let mut n = 0;
            for t in [SERVICE_EVENTS, COMPLAINT_EVENTS] {
                n += r.table(t)?.len()?;
            }
            Ok(n + r.table(CLOSES)?.len()?)
        })())
    }

    /// Runs `f` on the tables of the open write transaction (beginning one if none is open):
    /// what it reads includes what is not committed yet.
    fn with_tables<T>(
        &self,
        f: impl FnOnce(&mut Tables<Disk<'_>>) -> Result<T, redb::Error>,
    ) -> Result<T, StateError> {
        self.pending(|txn| {
            let Txn { tx, back } = txn;
            let out = f(&mut Tables::open(tx, back, self.ids()?)?)?;
            if back.len() >= WRITE_BACK_ROWS {
                back.write(tx)?;
            }
            Ok(out)
        })
    }
}

/// A partition's state in plain maps, nothing durable: what `rebuild` folds raw into while the
/// partitions fit its memory budget (a map read costs a hash, where a redb read walks a B-tree
/// and copies pages). The logic is [`PartitionState`]'s, written once against both stores, so
/// the figures are the same by construction ([`Fold`]); [`MemState::spill`] moves it to disk.
#[derive(Default)]
pub struct MemState(std::sync::Mutex<Tables<Mem>>);

impl MemState {
    /// Rough bytes held: what a rebuild weighs against its memory budget.
    pub fn bytes(&self) -> usize {
        let t = self.0.lock().expect("state lock");
        let owners: usize = t.owners.iter().map(|o| o.len() * 32).sum::<usize>()
            + t.owners
                .iter()
                .flat_map(|o| o.values())
                .map(Vec::len)
                .sum::<usize>();
        t.events.iter().map(|e| e.len() * 64).sum::<usize>()
            + owners
            + (t.roots.len() + t.winners.len()) * 64
            + (t.cells[0].len() + t.cells[1].len() + t.processing.len()) * 128
    }

    /// Writes every table into `disk` (committed) and empties this state: a partition too
    /// large for memory goes on there.
    pub fn spill(&self, disk: &PartitionState) -> Result<(), StateError> {
        let mem = std::mem::take(&mut *self.0.lock().expect("state lock"));
        disk.with_tables(|d| {
            for (m, d) in mem.events.into_iter().zip(d.events.iter_mut()) {
                for (id, row) in m {
                    d.set(id, row)?;
                }
            }
            for (m, d) in mem.owners.into_iter().zip(d.owners.iter_mut()) {
                for (id, entries) in m {
                    d.set(id, entries)?;
                }
            }
            for (k, v) in mem.roots {
                d.roots.put(k, v)?;
            }
            for (k, v) in mem.winners {
                d.winners.put(k, v)?;
            }
            for (k, ws) in mem.pending {
                for w in ws {
                    d.pending.hold(k, w)?;
                }
            }
            for (k, v) in mem.closes {
                d.closes.put(k, v)?;
            }
            for (k, v) in mem.arrived {
                d.arrived.put(k, v)?;
            }
            for (m, d) in mem.cells.into_iter().zip(d.cells.iter_mut()) {
                for (k, v) in m {
                    d.put(k, v)?;
                }
            }
            for (k, v) in mem.processing {
                d.processing.put(k, v)?;
            }
            for ((what, n), (code, sector)) in mem.names.all()? {
                d.names.name(what, &code, &sector, n)?;
            }
            for (topic, o) in mem.offsets {
                d.offsets.set_offset(&topic, o)?;
            }
            for (k, ()) in mem.months {
                d.months.put(k, ())?;
            }
            Ok(())
        })?;
        disk.commit()
    }

    fn with_tables<T>(
        &self,
        f: impl FnOnce(&mut Tables<Mem>) -> Result<T, redb::Error>,
    ) -> Result<T, StateError> {
        f(&mut self.0.lock().expect("state lock")).map_err(|e| StateError::Db {
            path: "(rebuild state in memory)".into(),
            source: Box::new(e),
        })
    }
}

/// What a partition's state does, whichever store holds it ([`PartitionState`] on disk,
/// [`MemState`] in memory). Each store gives its tables to one generic body per operation
/// (`apply_in`, `period_rows`, …), so both answer alike by construction.
pub trait Fold: Sync {
    /// Applies events (with the topic and offset each came from) and records the last offset of
    /// each topic, with the first arrival of some event ids decided beforehand: any other
    /// content under those ids is a conflicting duplicate, whatever the order.
    fn apply_with(
        &self,
        events: &[(&str, i64, &Event)],
        codes: &Codes,
        first: &FirstArrivals,
    ) -> Result<Applied, StateError>;

    /// Which content arrived first (smallest offset) under each id of `conflicts`, from what
    /// this state holds and the conflicts themselves: what a rebuild that met a conflicting
    /// duplicate before its first arrival ([`Applied::inverted`]) is redone with.
    fn first_arrivals(&self, conflicts: &[Conflict]) -> Result<FirstArrivals, StateError>;

    /// The rows of every summary table for one quarter (what one summary file holds).
    fn quarter(&self, q: Quarter) -> Result<PeriodRows, StateError>;

    /// Every month holding any figure.
    fn months(&self) -> Result<BTreeSet<Month>, StateError>;
}

/// The first and last day of a quarter.
fn quarter_days(q: Quarter) -> (i32, i32) {
    let [first, _, last] = quarter_months(q);
    (month_days(first).0, month_days(last).1)
}

/// [`Fold`] for a store with a `with_tables`: the operations, written once.
macro_rules! fold_by_tables {
    ($store:ty) => {
        impl Fold for $store {
            fn apply_with(
                &self,
                events: &[(&str, i64, &Event)],
                codes: &Codes,
                first: &FirstArrivals,
            ) -> Result<Applied, StateError> {
                self.with_tables(|t| apply_in(t, events, codes, first))
            }
            fn first_arrivals(&self, conflicts: &[Conflict]) -> Result<FirstArrivals, StateError> {
                self.with_tables(|t| first_arrivals_in(t, conflicts))
            }
            fn quarter(&self, q: Quarter) -> Result<PeriodRows, StateError> {
                let (lo, hi) = quarter_days(q);
                self.with_tables(|t| period_rows(t, lo, hi))
            }
            fn months(&self) -> Result<BTreeSet<Month>, StateError> {
                self.with_tables(|t| months_in(t))
            }
        }
    };
}

fold_by_tables!(PartitionState);
fold_by_tables!(MemState);

/// The last offset applied of each topic.
fn offsets_in(r: &impl Reader) -> Result<HashMap<String, i64>, redb::Error> {
    let mut out = HashMap::new();
    for row in r.table(OFFSETS)?.iter()? {
        let (k, v) = row?;
        out.insert(k.value().to_owned(), v.value());
    }
    Ok(out)
}

/// See [`PartitionState::first_arrivals`].
fn first_arrivals_in<B: Backend>(
    t: &Tables<B>,
    conflicts: &[Conflict],
) -> Result<FirstArrivals, redb::Error> {
    let mut best: HashMap<(RecordKind, u128), (i64, u64)> = HashMap::new();
    for c in conflicts {
        let k = usize::from(c.kind == RecordKind::Complaint);
        let stored = t.events[k].get(c.event_id)?;
        let b = best.entry((c.kind, c.event_id)).or_insert((i64::MAX, 0));
        for (offset, digest) in stored
            .map(|s| (s.4, s.2))
            .into_iter()
            .chain([(c.offset, c.digest)])
        {
            if offset < b.0 {
                *b = (offset, digest);
            }
        }
    }
    Ok(best.into_iter().map(|(k, (_, d))| (k, d)).collect())
}

/// One event of a request or complaint, as kept in its [`REQUESTS`] / [`COMPLAINTS`] value:
/// id (16 bytes), state (1), length (1), the [`Stored`] encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    id: u128,
    /// [`COUNTED`], [`SUPERSEDED`], [`WAITING`] or [`REJECTED`]: only counted events add to
    /// the figures.
    state: u8,
    event: Stored,
}

fn encode_entries(entries: &[Entry]) -> Vec<u8> {
    let mut b = Vec::with_capacity(entries.len() * 66);
    for e in entries {
        let body = e.event.encode();
        b.extend_from_slice(&e.id.to_le_bytes());
        b.push(e.state);
        b.push(body.len() as u8);
        b.extend_from_slice(&body);
    }
    b
}

fn decode_entries(mut b: &[u8]) -> Option<Vec<Entry>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let id = u128::from_le_bytes(b.get(..16)?.try_into().ok()?);
        let state = *b.get(16)?;
        let len = usize::from(*b.get(17)?);
        let event = Stored::decode(b.get(18..18 + len)?)?;
        out.push(Entry { id, state, event });
        b = &b[18 + len..];
    }
    Some(out)
}

/// What a request adds to the cells, from its events that no correction names.
fn request_contribution(r: u128, entries: &[Entry], c: &mut Contribution) {
    let mut evs: Vec<(u128, Svc)> = entries
        .iter()
        .filter(|e| e.state == COUNTED)
        .filter_map(|e| match e.event {
            Stored::Svc(s) => Some((e.id, s)),
            Stored::Cmp(_) => None,
        })
        .collect();
    evs.sort_by_key(|(id, e)| (e.occurred, e.recorded, *id));
    let first = |st: ServiceStage| evs.iter().find(|(_, e)| e.stage == st).map(|(_, e)| *e);
    let received = first(ServiceStage::Received);
    for (stage, field) in [
        (ServiceStage::Received, 0usize),
        (ServiceStage::Delivered, 1),
        (ServiceStage::Rejected, 2),
        (ServiceStage::Cancelled, 3),
    ] {
        if let Some(e) = first(stage) {
            let key = (day_of(e.occurred), e.unit, e.service);
            let cell = c.services.entry(key).or_default();
            cell[field] += 1;
            if field == 1 {
                if let Some(rcv) = received {
                    let secs = (e.occurred - rcv.occurred).div_euclid(1000);
                    if secs >= 0 {
                        cell[7] += secs;
                        cell[8] += 1;
                        c.processing
                            .insert((key.0, key.1, key.2, r), (secs, day_of(rcv.occurred)));
                    }
                }
            }
        }
    }
    let mut overflow = false;
    for (_, e) in evs.iter().filter(|(_, e)| e.stage == ServiceStage::FeePaid) {
        let fee = e.fee.unwrap_or(0);
        let cell = c
            .services
            .entry((day_of(e.occurred), e.unit, e.service))
            .or_default();
        // Counts grow by one per event; only money sums could leave i64's range.
        match cell[6].checked_add(fee) {
            Some(v) => cell[6] = v,
            None => overflow = true,
        }
        match fee.cmp(&0) {
            std::cmp::Ordering::Greater => cell[4] += 1,
            std::cmp::Ordering::Less => cell[5] += 1,
            std::cmp::Ordering::Equal => {}
        }
    }
    c.overflow |= overflow;
}

/// What a complaint adds to the cells, from its events that no correction names.
fn complaint_contribution(entries: &[Entry], c: &mut Contribution) {
    let mut evs: Vec<(u128, Cmp)> = entries
        .iter()
        .filter(|e| e.state == COUNTED)
        .filter_map(|e| match e.event {
            Stored::Cmp(x) => Some((e.id, x)),
            Stored::Svc(_) => None,
        })
        .collect();
    evs.sort_by_key(|(id, e)| (e.occurred, e.recorded, *id));
    let Some((_, rcv)) = evs
        .iter()
        .find(|(_, e)| e.stage == ComplaintStage::Received)
    else {
        return;
    };
    let sector = rcv
        .sector
        .or_else(|| evs.iter().find_map(|(_, e)| e.sector));
    let latest = |stages: &[ComplaintStage]| {
        evs.iter()
            .rev()
            .find(|(_, e)| stages.contains(&e.stage))
            .map(|(_, e)| e.stage)
    };
    let status = latest(&[
        ComplaintStage::Resolved,
        ComplaintStage::MoreInfoRequired,
        ComplaintStage::Withdrawn,
    ]);
    let jurisdiction = if status == Some(ComplaintStage::Resolved) {
        Some(ComplaintStage::WithinJurisdiction)
    } else {
        latest(&[
            ComplaintStage::WithinJurisdiction,
            ComplaintStage::OutsideJurisdiction,
        ])
    };
    let cell = c
        .complaints
        .entry((day_of(rcv.occurred), rcv.unit, sector.unwrap_or(NO_SECTOR)))
        .or_default();
    cell[0] += 1;
    match jurisdiction {
        Some(ComplaintStage::WithinJurisdiction) => cell[1] += 1,
        Some(_) => cell[2] += 1,
        None => cell[3] += 1,
    }
    match status {
        Some(ComplaintStage::Resolved) => cell[4] += 1,
        Some(ComplaintStage::MoreInfoRequired) => cell[5] += 1,
        Some(_) => cell[7] += 1,
        None => cell[6] += 1,
    }
    if status.is_none() && jurisdiction == Some(ComplaintStage::WithinJurisdiction) {
        cell[8] += 1;
    }
}

/// The change a batch makes to one request or complaint: events added, then new states of its
/// events (in the order they were decided; the last one holds).
#[derive(Default)]
struct Edit {
    added: Vec<Entry>,
    states: Vec<(u128, u8)>,
}

/// Index of a kind's table in [`Chains::events`].
const SVC: usize = 0;
const CMP: usize = 1;
const KINDS: [RecordKind; 2] = [RecordKind::Service, RecordKind::Complaint];

/// Adds `sign` × `cells` to `delta`, noting the months touched; `false` if a sum overflowed.
fn add_to(
    delta: &mut FastMap<(i32, u16, u16), [i64; 9]>,
    cells: &BTreeMap<(i32, u16, u16), [i64; 9]>,
    sign: i64,
    months: &mut BTreeSet<Month>,
) -> bool {
    let mut ok = true;
    let mut last_day = None;
    for (k, v) in cells {
        let d = delta.entry(*k).or_default();
        for i in 0..9 {
            match v[i].checked_mul(sign).and_then(|x| d[i].checked_add(x)) {
                Some(x) => d[i] = x,
                None => ok = false,
            }
        }
        if last_day != Some(k.0) {
            // Cells come in key order, day first: one date conversion per day.
            last_day = Some(k.0);
            months.insert(month_of_day(k.0));
        }
    }
    ok
}

fn overflow(what: impl std::fmt::Display) -> redb::Error {
    redb::Error::Corrupted(format!(
        "a figure of {what} would leave the 64-bit range: refused rather than wrapped (money is \
         bounded per event, so only a forged stream gets here)"
    ))
}

/// Adds the batch's net change to cells held in `table` (a cell reaching zero is removed).
fn write_cells(
    t: &mut impl Tab<(i32, u16, u16), [i64; 9]>,
    delta: FastMap<(i32, u16, u16), [i64; 9]>,
) -> Result<(), redb::Error> {
    let mut keys: Vec<_> = delta
        .into_iter()
        .filter(|(_, v)| v.iter().any(|x| *x != 0))
        .collect();
    keys.sort_unstable_by_key(|(k, _)| *k);
    for (k, v) in keys {
        let mut cur = t.get(k)?.unwrap_or_default();
        for i in 0..9 {
            cur[i] = cur[i]
                .checked_add(v[i])
                .ok_or_else(|| overflow(format_args!("cell {k:?}")))?;
        }
        if cur.iter().all(|x| *x == 0) {
            t.del(k)?;
        } else {
            t.put(k, cur)?;
        }
    }
    Ok(())
}

/// 64-bit digest of an event's content, every field but its id: what tells a replay (same
/// content) from a conflicting duplicate (same id, other content). The fields are laid out as
/// bytes (strings length-prefixed, optional fields tagged, so that no two contents share a byte
/// sequence) and hashed at once with XXH3, whose output the algorithm's specification fixes:
/// digests stored in a state file stay valid across releases. (FNV-1a, before format 6, took a
/// multiply per byte: 6% of a rebuild.)
fn content_digest(e: &Event) -> u64 {
    struct H(Vec<u8>);
    impl H {
        fn bytes(&mut self, b: &[u8]) {
            self.0.extend_from_slice(b);
        }
        fn str(&mut self, s: &str) {
            self.bytes(&(s.len() as u64).to_le_bytes());
            self.bytes(s.as_bytes());
        }
        fn opt(&mut self, v: Option<i128>) {
            match v {
                Some(v) => {
                    self.bytes(&[1]);
                    self.bytes(&v.to_le_bytes());
                }
                None => self.bytes(&[0]),
            }
        }
        fn opt_str(&mut self, v: Option<&str>) {
            match v {
                Some(s) => {
                    self.bytes(&[1]);
                    self.str(s);
                }
                None => self.bytes(&[0]),
            }
        }
    }
    let mut h = H(Vec::with_capacity(192));
    match e {
        Event::Service(s) => {
            h.bytes(&[0]);
            h.str(&s.unit_code);
            h.str(&s.request_id);
            h.str(&s.sector_code);
            h.str(&s.service_code);
            h.bytes(&[s.stage.index() as u8]);
            h.opt(s.fee_riel.map(i128::from));
            h.str(&s.channel);
            h.bytes(&s.occurred_at.to_le_bytes());
            h.bytes(&s.recorded_at.to_le_bytes());
            h.opt(s.supersedes_event_id.map(|u| u.as_u128() as i128));
            h.opt(s.window_no.map(i128::from));
        }
        Event::Complaint(c) => {
            h.bytes(&[1]);
            h.str(&c.unit_code);
            h.str(&c.complaint_id);
            h.opt_str(c.sector_code.as_deref());
            h.bytes(&[c.stage.index() as u8]);
            h.bytes(&c.occurred_at.to_le_bytes());
            h.bytes(&c.recorded_at.to_le_bytes());
            h.opt(c.supersedes_event_id.map(|u| u.as_u128() as i128));
        }
        Event::UnitDay(_) => {}
    }
    xxhash_rust::xxh3::xxh3_64(&h.0)
}

/// The number of a service (`what` 0) or sector (1) code: its catalogue position, or the number
/// this partition gave it when it first arrived unknown; `None` when the numbers beyond the
/// catalogue are used up (the event is refused: the reference data wants updating).
fn intern(
    codes: &Codes,
    names: &mut impl Names,
    what: u8,
    code: &str,
    sector: &str,
) -> Result<Option<u16>, redb::Error> {
    let known = if what == 0 {
        codes.service(code)
    } else {
        codes.sector(code)
    };
    if known.is_some() {
        return Ok(known);
    }
    if let Some(n) = names.number(what, code)? {
        return Ok(Some(n));
    }
    let next = match names.last_number(what, EXTRA_BASE, u16::MAX - 1)? {
        Some(n) => n + 1,
        None => EXTRA_BASE,
    };
    if next == u16::MAX {
        return Ok(None);
    }
    names.name(what, code, sector, next)?;
    Ok(Some(next))
}

/// Why a correction is refused, in words for the dead-letter topic.
fn refusal_text(r: Refusal, target: u128, codes: &Codes) -> String {
    let target = uuid::Uuid::from_u128(target);
    match r {
        Refusal::OtherUnit(u) => format!(
            "correction names event {target} of unit {}: a unit corrects only its own events",
            codes
                .unit_code
                .get(usize::from(u))
                .map_or("?", String::as_str)
        ),
        Refusal::OtherKind => {
            format!("correction names event {target}, which is an event of the other kind")
        }
        Refusal::NamesRefused => {
            format!("correction names event {target}, a correction that was itself rejected")
        }
    }
}

/// What a correction does when it meets its target.
enum Verdict {
    /// Joins the target's chain.
    Join,
    /// Waits for the target (not arrived, or itself waiting).
    Hold,
    Refuse(Refusal),
}

/// The correction chains of one batch: the tables they live in and the edits they cause.
struct Chains<'a, B: Backend> {
    t: &'a mut Tables<B>,
    /// Whether `pending` holds any correction: when not (nearly always), an arrival has
    /// nothing to release and `pending` is not searched.
    any_pending: bool,
    edits: FastMap<(bool, u128), Edit>,
    rejected: Vec<Rejected>,
}

impl<B: Backend> Chains<'_, B> {
    fn entry(&self, k: usize, id: u128) -> Result<EventRow, redb::Error> {
        self.t.events[k]
            .get(id)?
            .ok_or_else(|| redb::Error::Corrupted(format!("event {id:032x} has no entry")))
    }

    /// Gives arrived event `id` a new [`Entry::state`].
    fn set_state(&mut self, k: usize, id: u128, state: u8) -> Result<(), redb::Error> {
        let (owner, ..) = self.entry(k, id)?;
        self.edits
            .entry((k == CMP, owner))
            .or_default()
            .states
            .push((id, state));
        Ok(())
    }

    fn set_status(&mut self, k: usize, id: u128, status: u8) -> Result<(), redb::Error> {
        let (owner, unit, digest, _, offset) = self.entry(k, id)?;
        self.t.events[k].set(id, (owner, unit, digest, status, offset))?;
        Ok(())
    }

    /// What correction of kind `k` and unit `unit` does with `target`, as things stand.
    fn verdict(&self, k: usize, unit: u16, target: u128) -> Result<Verdict, redb::Error> {
        Ok(match self.t.events[k].get(target)? {
            Some((_, u, ..)) if u != unit => Verdict::Refuse(Refusal::OtherUnit(u)),
            Some((_, _, _, HELD, _)) => Verdict::Hold,
            Some((_, _, _, REFUSED, _)) => Verdict::Refuse(Refusal::NamesRefused),
            Some(_) => Verdict::Join,
            None if self.t.events[1 - k].get(target)?.is_some() => {
                Verdict::Refuse(Refusal::OtherKind)
            }
            None => Verdict::Hold,
        })
    }

    /// Puts correction `c` (recorded at `recorded`) in the chain of `target` and says whether it
    /// is the chain's winner ([`COUNTED`]) or not ([`SUPERSEDED`]); the previous winner (or the
    /// original) is superseded.
    fn join(&mut self, k: usize, c: u128, recorded: i64, target: u128) -> Result<u8, redb::Error> {
        let root = self.t.roots.get(target)?.unwrap_or(target);
        self.t.roots.put(c, root)?;
        let before = self.t.winners.get(root)?;
        if before.is_none_or(|w| (recorded, c) > w) {
            self.t.winners.put(root, (recorded, c))?;
            self.set_state(k, before.map_or(root, |(_, id)| id), SUPERSEDED)?;
            Ok(COUNTED)
        } else {
            Ok(SUPERSEDED)
        }
    }

    /// Decides the corrections waiting for `id` (kind `k`, unit `unit`), which has just arrived
    /// or joined its chain (`refused` false) or been refused (`true`), and theirs in turn.
    fn release(
        &mut self,
        k: usize,
        id: u128,
        unit: u16,
        refused: bool,
        codes: &Codes,
    ) -> Result<(), redb::Error> {
        if !self.any_pending {
            return Ok(());
        }
        let mut queue = vec![(k, id, unit, refused)];
        while let Some((k, id, unit, refused)) = queue.pop() {
            let waiting = self.t.pending.take(id)?;
            for (c, ck, cu, recorded, offset) in waiting {
                let ck = usize::from(ck);
                let refusal = if refused {
                    Some(Refusal::NamesRefused)
                } else if ck != k {
                    Some(Refusal::OtherKind)
                } else if cu != unit {
                    Some(Refusal::OtherUnit(unit))
                } else {
                    None
                };
                match refusal {
                    None => {
                        let state = self.join(ck, c, recorded, id)?;
                        self.set_status(ck, c, APPLIED)?;
                        self.set_state(ck, c, state)?;
                    }
                    Some(r) => {
                        self.set_status(ck, c, REFUSED)?;
                        self.set_state(ck, c, REJECTED)?;
                        self.rejected.push(Rejected {
                            kind: KINDS[ck],
                            offset,
                            event_id: c,
                            field: "supersedes_event_id",
                            reason: refusal_text(r, id, codes),
                        });
                    }
                }
                queue.push((ck, c, cu, refusal.is_some()));
            }
        }
        Ok(())
    }
}

/// Applies a batch. Each event costs one lookup and one insert in its kind's events table; each
/// request or complaint it touches one read and one write of its events, whose contribution to
/// the cells before and after the batch gives the change; each cell changed one read and one
/// write. Corrections follow [`WINNERS`]: a correction is counted only once its target has
/// arrived and is of its own unit and kind.
fn apply_in<B: Backend>(
    t: &mut Tables<B>,
    events: &[(&str, i64, &Event)],
    codes: &Codes,
    first: &FirstArrivals,
) -> Result<Applied, redb::Error> {
    let mut out = Applied::default();
    let mut arrived_delta: FastMap<(i32, u16), (i64, i64)> = FastMap::default();
    // The last offset per topic: three topics at most, so a list (a SipHash map was 1.4% of a
    // rebuild).
    let mut last: Vec<(&str, i64)> = Vec::with_capacity(3);
    let any_pending = t.pending.any()?;
    let mut chains = Chains {
        t,
        any_pending,
        edits: FastMap::default(),
        rejected: Vec::new(),
    };
    {
        let full = |offset: i64, kind: RecordKind, id: uuid::Uuid, field: &'static str| Rejected {
            kind,
            offset,
            event_id: id.as_u128(),
            field,
            reason: format!(
                "this partition has numbered {} codes the catalogue does not know: update \
                 the reference data",
                u16::MAX - EXTRA_BASE
            ),
        };
        for (topic, offset, e) in events {
            match last.iter_mut().find(|(t, _)| t == topic) {
                Some((_, o)) => *o = (*o).max(*offset),
                None => last.push((topic, *offset)),
            }
            let (stored, id, supersedes, recorded) = match e {
                Event::Service(s) => {
                    let Some(unit) = codes.unit(&s.unit_code) else {
                        continue; // unreachable for validated events
                    };
                    let Some(service) = intern(
                        codes,
                        &mut chains.t.names,
                        0,
                        &s.service_code,
                        &s.sector_code,
                    )?
                    else {
                        let r = full(*offset, RecordKind::Service, s.event_id, "service_code");
                        chains.rejected.push(r);
                        continue;
                    };
                    (
                        Stored::Svc(Svc {
                            unit,
                            service,
                            request: owner_key(unit, &s.request_id),
                            stage: s.stage,
                            fee: s.fee_riel,
                            occurred: s.occurred_at,
                            recorded: s.recorded_at,
                        }),
                        s.event_id.as_u128(),
                        s.supersedes_event_id,
                        s.recorded_at,
                    )
                }
                Event::Complaint(c) => {
                    let Some(unit) = codes.unit(&c.unit_code) else {
                        continue;
                    };
                    let sector = match c.sector_code.as_deref() {
                        Some(code) => match intern(codes, &mut chains.t.names, 1, code, "")? {
                            Some(n) => Some(n),
                            None => {
                                let r =
                                    full(*offset, RecordKind::Complaint, c.event_id, "sector_code");
                                chains.rejected.push(r);
                                continue;
                            }
                        },
                        None => None,
                    };
                    (
                        Stored::Cmp(Cmp {
                            unit,
                            complaint: owner_key(unit, &c.complaint_id),
                            sector,
                            stage: c.stage,
                            occurred: c.occurred_at,
                            recorded: c.recorded_at,
                        }),
                        c.event_id.as_u128(),
                        c.supersedes_event_id,
                        c.recorded_at,
                    )
                }
                Event::UnitDay(u) => {
                    let Some(unit) = codes.unit(&u.unit_code) else {
                        continue;
                    };
                    let day = date_to_epoch_day(u.date);
                    out.months.insert(month_of_day(day));
                    let close = DayClose {
                        closed_at: u.closed_at,
                        services: u.services_recorded,
                        complaints: u.complaints_recorded,
                    };
                    let old = chains.t.closes.get((day, unit))?.map(|v| {
                        let (closed_at, services, complaints) = v;
                        DayClose {
                            closed_at,
                            services,
                            complaints,
                        }
                    });
                    // The latest close wins; ties broken by content, so order never matters.
                    if old.is_some_and(|o| o >= close) {
                        out.duplicates += 1;
                    } else {
                        chains.t.closes.put(
                            (day, unit),
                            (close.closed_at, close.services, close.complaints),
                        )?;
                    }
                    continue;
                }
            };
            let (k, unit, occurred, owner) = match stored {
                Stored::Svc(s) => (SVC, s.unit, s.occurred, s.request),
                Stored::Cmp(c) => (CMP, c.unit, c.occurred, c.complaint),
            };
            // Before the duplicate check: a batch replayed after a crash must still have its
            // months' summary files written (its first application may never have been committed).
            out.months.insert(month_of_day(day_of(occurred)));
            out.months.insert(month_of_day(day_of(recorded)));
            let digest = content_digest(e);
            let decided = first.get(&(KINDS[k], id)).is_some_and(|d| *d != digest);
            // A plain event (no correction, no first arrival decided for its id) is inserted at
            // once: the one descent of the tree says whether the id was taken (the old row comes
            // back, and is put back) and records it if not. Nearly every event is new, so this
            // halves the state's lookups.
            let inserted = supersedes.is_none() && !decided;
            let known = if inserted {
                let row = (owner, unit, digest, PLAIN, *offset);
                let old = chains.t.events[k].put(id, row)?;
                if let Some(old) = old {
                    chains.t.events[k].put(id, old)?;
                }
                old
            } else {
                chains.t.events[k].get(id)?
            };
            if known.is_some() || decided {
                let kept = known.map(|s| s.2);
                if kept == Some(digest) {
                    out.duplicates += 1;
                    let (o, u, d, st, at) = known.expect("kept");
                    if *offset < at {
                        chains.t.events[k].set(id, (o, u, d, st, *offset))?;
                    }
                    if st == REFUSED {
                        // A replay (say after a crash before its dead letter was acknowledged):
                        // dead-lettered again, at least once like every other refusal.
                        chains.rejected.push(Rejected {
                            kind: KINDS[k],
                            offset: *offset,
                            event_id: id,
                            field: "supersedes_event_id",
                            reason: "a correction refused when it first arrived (it names another \
                                     unit's or kind's event, or a refused correction)"
                                .to_owned(),
                        });
                    }
                } else {
                    // The first to arrive holds. Live reading meets a partition in offset
                    // order; a rebuild that met them the other way round says so, and is
                    // redone with `first` decided (see [`PartitionState::first_arrivals`]).
                    out.conflicts.push(Conflict {
                        kind: KINDS[k],
                        event_id: id,
                        offset: *offset,
                        digest,
                    });
                    out.inverted |= first.is_empty() && known.is_some_and(|s| *offset < s.4);
                    chains.rejected.push(Rejected {
                        kind: KINDS[k],
                        offset: *offset,
                        event_id: id,
                        field: "event_id",
                        reason: format!(
                            "conflicting duplicate: event {} arrived earlier with other \
                             content; the first is kept",
                            uuid::Uuid::from_u128(id)
                        ),
                    });
                }
                continue;
            }
            let target = supersedes.map(|t| t.as_u128());
            let verdict = match target {
                Some(t) => Some(chains.verdict(k, unit, t)?),
                None => None,
            };
            let status = match verdict {
                None => PLAIN,
                Some(Verdict::Join) => APPLIED,
                Some(Verdict::Hold) => HELD,
                Some(Verdict::Refuse(_)) => REFUSED,
            };
            if !inserted {
                chains.t.events[k].set(id, (owner, unit, digest, status, *offset))?;
            }
            let state = match (verdict, target) {
                (Some(Verdict::Join), Some(t)) => chains.join(k, id, recorded, t)?,
                (Some(Verdict::Hold), Some(t)) => {
                    chains
                        .t
                        .pending
                        .hold(t, (id, k as u8, unit, recorded, *offset))?;
                    chains.any_pending = true;
                    WAITING
                }
                (Some(Verdict::Refuse(r)), Some(t)) => {
                    chains.rejected.push(Rejected {
                        kind: KINDS[k],
                        offset: *offset,
                        event_id: id,
                        field: "supersedes_event_id",
                        reason: refusal_text(r, t, codes),
                    });
                    REJECTED
                }
                _ => COUNTED,
            };
            chains
                .edits
                .entry((k == CMP, owner))
                .or_default()
                .added
                .push(Entry {
                    id,
                    state,
                    event: stored,
                });
            if status != HELD {
                chains.release(k, id, unit, status == REFUSED, codes)?;
            }
            let a = arrived_delta.entry((day_of(recorded), unit)).or_default();
            match stored {
                Stored::Svc(_) => a.0 += 1,
                Stored::Cmp(_) => a.1 += 1,
            }
        }
    }
    let Chains {
        edits, rejected, ..
    } = chains;
    out.rejected = rejected;
    // Each touched request or complaint: its contribution before and after the batch.
    let mut services: FastMap<(i32, u16, u16), [i64; 9]> = FastMap::default();
    let mut complaints: FastMap<(i32, u16, u16), [i64; 9]> = FastMap::default();
    let mut proc_removed = Vec::new();
    let mut proc_added = Vec::new();
    {
        let mut edits: Vec<_> = edits.into_iter().collect();
        edits.sort_unstable_by_key(|(k, _)| *k);
        for ((is_complaint, owner), edit) in edits {
            let table = &mut t.owners[usize::from(is_complaint)];
            let mut entries = match table.get(owner)? {
                Some(v) => decode_entries(&v).ok_or_else(|| {
                    redb::Error::Corrupted(format!("events of {owner:032x} unreadable"))
                })?,
                None => Vec::new(),
            };
            let mut before = Contribution::default();
            let mut after = Contribution::default();
            let contribution = |entries: &[Entry], c: &mut Contribution| {
                if is_complaint {
                    complaint_contribution(entries, c)
                } else {
                    request_contribution(owner, entries, c)
                }
            };
            contribution(&entries, &mut before);
            // Added first: a correction may name an event of the same batch.
            entries.extend(edit.added);
            for (id, state) in &edit.states {
                for e in entries.iter_mut().filter(|e| e.id == *id) {
                    e.state = *state;
                }
            }
            contribution(&entries, &mut after);
            if before.overflow || after.overflow {
                return Err(overflow(format_args!("request {owner:032x}")));
            }
            table.set(owner, encode_entries(&entries))?;
            let ok = add_to(&mut services, &before.services, -1, &mut out.months)
                & add_to(&mut services, &after.services, 1, &mut out.months)
                & add_to(&mut complaints, &before.complaints, -1, &mut out.months)
                & add_to(&mut complaints, &after.complaints, 1, &mut out.months);
            if !ok {
                return Err(overflow("this batch"));
            }
            for (k, v) in &before.processing {
                if after.processing.get(k) != Some(v) {
                    proc_removed.push(*k);
                    out.months.insert(month_of_day(k.0));
                }
            }
            for (k, v) in after.processing {
                if before.processing.get(&k) != Some(&v) {
                    proc_added.push((k, v));
                    out.months.insert(month_of_day(k.0));
                }
            }
        }
    }
    // The net change, one read and one write per cell.
    write_cells(&mut t.cells[0], services)?;
    write_cells(&mut t.cells[1], complaints)?;
    for k in proc_removed {
        t.processing.del(k)?;
    }
    for (k, v) in proc_added {
        t.processing.put(k, v)?;
    }
    for (k, (s, c)) in arrived_delta {
        let (s0, c0) = t.arrived.get(k)?.unwrap_or((0, 0));
        t.arrived.put(k, (s0 + s, c0 + c))?;
    }
    for (topic, o) in last {
        if t.offsets.offset(topic)?.is_none_or(|l| o > l) {
            t.offsets.set_offset(topic, o)?;
        }
    }
    for m in &out.months {
        t.months.put(*m, ())?;
    }
    Ok(out)
}

fn extra_codes<B: Backend>(t: &Tables<B>) -> Result<ExtraCodes, redb::Error> {
    let mut out = ExtraCodes::default();
    for ((what, n), (code, sector)) in t.names.all()? {
        if what == 0 {
            out.services.insert(n, (code, sector));
        } else {
            out.sectors.insert(n, code);
        }
    }
    Ok(out)
}

fn period_rows<B: Backend>(t: &Tables<B>, lo: i32, hi: i32) -> Result<PeriodRows, redb::Error> {
    let mut rows = PeriodRows::default();
    for (k, v) in t.cells[0].range((lo, 0, 0), (hi, u16::MAX, u16::MAX))? {
        rows.services.insert(k, svc_agg(v));
    }
    for ((day, unit, sector), v) in t.cells[1].range((lo, 0, 0), (hi, u16::MAX, u16::MAX))? {
        rows.complaints.insert(
            (day, unit, Some(sector).filter(|s| *s != NO_SECTOR)),
            cmp_agg(v),
        );
    }
    for ((day, unit, service, _), (seconds, received_day)) in t
        .processing
        .range((lo, 0, 0, 0), (hi, u16::MAX, u16::MAX, u128::MAX))?
    {
        rows.processing.push(ProcessingRow {
            day,
            unit,
            service,
            seconds,
            received_day,
        });
    }
    rows.processing
        .sort_by_key(|p| (p.day, p.unit, p.service, p.seconds));
    let mut days: BTreeMap<(i32, u16), UnitDayRow> = BTreeMap::new();
    for ((day, unit), (closed_at, services, complaints)) in
        t.closes.range((lo, 0), (hi, u16::MAX))?
    {
        days.entry((day, unit))
            .or_insert_with(|| UnitDayRow::empty(day, unit))
            .close = Some(DayClose {
            closed_at,
            services,
            complaints,
        });
    }
    for ((day, unit), (s, c)) in t.arrived.range((lo, 0), (hi, u16::MAX))? {
        let row = days
            .entry((day, unit))
            .or_insert_with(|| UnitDayRow::empty(day, unit));
        row.arrived_services = s;
        row.arrived_complaints = c;
    }
    rows.unit_days = days.into_values().collect();
    rows.extra = extra_codes(t)?;
    Ok(rows)
}

/// Every month holding any figure.
fn months_in<B: Backend>(t: &Tables<B>) -> Result<BTreeSet<Month>, redb::Error> {
    Ok(t.months
        .range((i32::MIN, 0), (i32::MAX, u32::MAX))?
        .into_iter()
        .map(|(m, ())| m)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::Table;
    use owsu_schemas::record::{ComplaintEvent, ServiceEvent, UnitDayClosed};
    use owsu_schemas::reference::Reference;
    use owsu_schemas::time::parse_rfc3339;
    use uuid::Uuid;

    fn t(s: &str) -> Millis {
        parse_rfc3339(s).unwrap()
    }

    fn svc(
        id: u128,
        req: &str,
        stage: ServiceStage,
        at: &str,
        fee: Option<i64>,
        supersedes: Option<u128>,
    ) -> Event {
        Event::Service(ServiceEvent {
            event_id: Uuid::from_u128(id),
            unit_code: "KH-0101".into(),
            request_id: req.into(),
            sector_code: "COM".into(),
            service_code: "COM-TRADE-LIC".into(),
            stage,
            fee_riel: fee,
            channel: "counter".into(),
            occurred_at: t(at),
            recorded_at: t(at),
            supersedes_event_id: supersedes.map(Uuid::from_u128),
            window_no: None,
        })
    }

    fn cmp(id: u128, c: &str, stage: ComplaintStage, at: &str) -> Event {
        Event::Complaint(ComplaintEvent {
            event_id: Uuid::from_u128(id),
            unit_code: "KH-0101".into(),
            complaint_id: c.into(),
            sector_code: None,
            stage,
            occurred_at: t(at),
            recorded_at: t(at),
            supersedes_event_id: None,
        })
    }

    fn state(events: &[Event], batch: usize) -> (tempfile::TempDir, PartitionState, Codes) {
        let (dir, s, _) = run(events, batch);
        (dir, s, Codes::new(&Reference::builtin()))
    }

    /// Applies `events` in batches of `batch` (offset = position) and returns what was refused.
    fn run(events: &[Event], batch: usize) -> (tempfile::TempDir, PartitionState, Vec<Rejected>) {
        let codes = Codes::new(&Reference::builtin());
        let dir = tempfile::tempdir().unwrap();
        let s = PartitionState::open(&dir.path().join("p.redb"), 1 << 20).unwrap();
        let mut rejected = Vec::new();
        for (i, chunk) in events.chunks(batch).enumerate() {
            let evs: Vec<(&str, i64, &Event)> = chunk
                .iter()
                .enumerate()
                .map(|(j, e)| ("t", (i * batch + j) as i64, e))
                .collect();
            rejected.extend(s.apply(&evs, &codes).unwrap().rejected);
        }
        rejected.sort_by_key(|r| r.offset);
        (dir, s, rejected)
    }

    fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut out = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            let first = rest.remove(i);
            for mut p in permutations(&rest) {
                p.insert(0, first.clone());
                out.push(p);
            }
        }
        out
    }

    /// A fee payment of request r1 at one time, recorded at `recorded`, by `unit`.
    fn fee_of(unit: &str, id: u128, fee: i64, recorded: &str, supersedes: Option<u128>) -> Event {
        let Event::Service(mut e) = svc(
            id,
            "r1",
            ServiceStage::FeePaid,
            "2021-03-01T09:30:00+07:00",
            Some(fee),
            supersedes,
        ) else {
            unreachable!()
        };
        e.unit_code = unit.into();
        e.recorded_at = t(recorded);
        Event::Service(e)
    }

    /// Revenue per unit code in March 2021.
    fn revenue_by_unit(s: &PartitionState) -> BTreeMap<String, i64> {
        let codes = Codes::new(&Reference::builtin());
        let mut out = BTreeMap::new();
        for ((_, unit, _), v) in s.month((2021, 3)).unwrap().services {
            *out.entry(codes.unit_code[usize::from(unit)].clone())
                .or_default() += v.revenue_riel;
        }
        out.retain(|_, v| *v != 0);
        out
    }

    #[test]
    fn a_correction_of_a_correction_replaces_the_whole_chain_in_any_order() {
        let original = fee_of("KH-0101", 10, 9_000, "2021-03-01T09:30:00+07:00", None);
        let first = fee_of("KH-0101", 11, 5_000, "2021-03-02T09:00:00+07:00", Some(10));
        let second = fee_of("KH-0101", 12, 5_500, "2021-03-05T09:00:00+07:00", Some(11));
        // A correction of the losing `first`, recorded before `second`: still one chain, one
        // winner (the last recorded), never two corrections counted.
        let late_fix = fee_of("KH-0101", 13, 4_000, "2021-03-03T09:00:00+07:00", Some(11));
        for order in permutations(&[original, first, second, late_fix]) {
            for batch in [1, 2, 4] {
                let (_d, s, rejected) = run(&order, batch);
                assert_eq!(total_of(&s), 5_500, "batch {batch}");
                assert!(rejected.is_empty(), "{rejected:?}");
            }
        }
    }

    #[test]
    fn a_correction_waits_for_its_original_and_counts_only_then() {
        let original = fee_of("KH-0101", 10, 9_000, "2021-03-01T09:30:00+07:00", None);
        let fix = fee_of("KH-0101", 11, 5_000, "2021-03-02T09:00:00+07:00", Some(10));
        let (_d, s, _) = run(std::slice::from_ref(&fix), 1);
        assert_eq!(total_of(&s), 0, "held: its original has not arrived");
        let (_d, s, _) = run(&[fix, original], 1);
        assert_eq!(total_of(&s), 5_000);
    }

    #[test]
    fn a_correction_naming_another_units_or_kinds_event_is_refused_in_any_order() {
        let theirs = fee_of("KH-0101", 10, 9_000, "2021-03-01T09:30:00+07:00", None);
        // KH-0102 "corrects" KH-0101's payment: it must neither count as KH-0102's revenue nor
        // remove KH-0101's.
        let forged = fee_of("KH-0102", 11, 90_000, "2021-03-02T09:00:00+07:00", Some(10));
        let complaint = cmp(
            20,
            "c1",
            ComplaintStage::Received,
            "2021-03-01T10:00:00+07:00",
        );
        // A service correction naming a complaint event.
        let cross = fee_of("KH-0101", 12, 1_000, "2021-03-02T09:00:00+07:00", Some(20));
        // And a correction of the refused one.
        let chained = fee_of("KH-0102", 13, 7_000, "2021-03-03T09:00:00+07:00", Some(11));
        for order in permutations(&[theirs, forged, complaint, cross, chained]) {
            for batch in [1, 5] {
                let (_d, s, rejected) = run(&order, batch);
                assert_eq!(
                    revenue_by_unit(&s),
                    BTreeMap::from([("KH-0101".to_owned(), 9_000)]),
                    "batch {batch}"
                );
                let mut ids: Vec<u128> = rejected.iter().map(|r| r.event_id).collect();
                ids.sort();
                assert_eq!(ids, [11, 12, 13], "{rejected:?}");
                let forged = rejected.iter().find(|r| r.event_id == 11).unwrap();
                assert_eq!(forged.field, "supersedes_event_id");
                assert!(
                    forged.reason.contains("of unit KH-0101"),
                    "{}",
                    forged.reason
                );
                let cross = rejected.iter().find(|r| r.event_id == 12).unwrap();
                assert!(cross.reason.contains("other kind"), "{}", cross.reason);
            }
        }
    }

    #[test]
    fn of_two_events_with_one_id_and_different_content_the_first_holds() {
        let first = fee_of("KH-0101", 10, 9_000, "2021-03-01T09:30:00+07:00", None);
        let other = fee_of("KH-0101", 10, 1_000, "2021-03-01T09:30:00+07:00", None);
        for batch in [1, 2, 3] {
            let (_d, s, rejected) = run(&[first.clone(), other.clone(), first.clone()], batch);
            assert_eq!(total_of(&s), 9_000, "batch {batch}");
            assert_eq!(rejected.len(), 1, "a replay of the first is no conflict");
            assert_eq!((rejected[0].offset, rejected[0].field), (1, "event_id"));
            assert!(rejected[0].reason.contains("conflicting duplicate"));
        }
        let (_d, s, _) = run(&[other, first], 1);
        assert_eq!(total_of(&s), 1_000, "first by offset, whichever it is");
    }

    #[test]
    fn a_rebuild_meeting_a_conflict_before_the_first_arrival_knows_and_can_redo() {
        let first = fee_of("KH-0101", 10, 9_000, "2021-03-01T09:30:00+07:00", None);
        let other = fee_of("KH-0101", 10, 1_000, "2021-03-01T09:30:00+07:00", None);
        let codes = Codes::new(&Reference::builtin());
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| PartitionState::open(&dir.path().join(name), 1 << 20).unwrap();
        // Files read out of order: offset 7 (the conflicting copy) before offset 3.
        let s = open("a.redb");
        let a = s.apply(&[("t", 7, &other)], &codes).unwrap();
        let b = s.apply(&[("t", 3, &first)], &codes).unwrap();
        assert!(!a.inverted && b.inverted);
        let decided = s.first_arrivals(&b.conflicts).unwrap();
        let redo = open("b.redb");
        let mut rejected = Vec::new();
        for (o, e) in [(7, &other), (3, &first)] {
            let applied = redo.apply_with(&[("t", o, e)], &codes, &decided).unwrap();
            assert!(!applied.inverted);
            rejected.extend(applied.rejected);
        }
        assert_eq!(
            total_of(&redo),
            9_000,
            "the content at the smaller offset holds"
        );
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].offset, 7);
    }

    #[test]
    fn a_replayed_batch_still_names_its_months() {
        // After a crash between the state's commit and the summaries', the batch is read again:
        // all duplicates now, but its months' summary files must still be written.
        let codes = Codes::new(&Reference::builtin());
        let dir = tempfile::tempdir().unwrap();
        let s = PartitionState::open(&dir.path().join("p.redb"), 1 << 20).unwrap();
        let e = fee_of("KH-0101", 10, 9_000, "2021-03-01T09:30:00+07:00", None);
        let c = cmp(
            20,
            "c1",
            ComplaintStage::Received,
            "2021-05-01T10:00:00+07:00",
        );
        let batch = [("t", 0, &e), ("u", 0, &c)];
        let first = s.apply(&batch, &codes).unwrap();
        let again = s.apply(&batch, &codes).unwrap();
        assert_eq!(again.duplicates, 2);
        assert_eq!(again.months, first.months);
        assert!(again.months.contains(&(2021, 3)) && again.months.contains(&(2021, 5)));
    }

    #[test]
    fn sums_that_would_wrap_are_refused() {
        // 10 payments of the largest valid fee in one cell fit; i64::MAX / 10^12 ≈ 9.2 M do not.
        // Fees beyond the validation bound stand in for that many events.
        let codes = Codes::new(&Reference::builtin());
        let dir = tempfile::tempdir().unwrap();
        let s = PartitionState::open(&dir.path().join("p.redb"), 1 << 20).unwrap();
        let a = svc(
            1,
            "r1",
            ServiceStage::FeePaid,
            "2021-03-01T09:30:00+07:00",
            Some(i64::MAX - 5),
            None,
        );
        let b = svc(
            2,
            "r2",
            ServiceStage::FeePaid,
            "2021-03-01T09:31:00+07:00",
            Some(10),
            None,
        );
        s.apply(&[("t", 0, &a)], &codes).unwrap();
        s.commit().unwrap();
        let e = s.apply(&[("t", 1, &b)], &codes).unwrap_err().to_string();
        assert!(e.contains("64-bit range"), "{e}");
        // What the open transaction held is gone: the state refuses to go on until reopened...
        let again = s.apply(&[("t", 2, &a)], &codes).unwrap_err().to_string();
        assert!(again.contains("opened again"), "{again}");
        drop(s);
        // ...and reopened, it is the last commit: the failed batch changed nothing.
        let s = PartitionState::open(&dir.path().join("p.redb"), 1 << 20).unwrap();
        assert_eq!(total_of(&s), i64::MAX - 5);
    }

    #[test]
    fn what_is_not_committed_is_read_but_lost_at_a_crash() {
        let codes = Codes::new(&Reference::builtin());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.redb");
        let fee = |id, at| svc(id, "r1", ServiceStage::FeePaid, at, Some(1_000), None);
        let (a, b) = (
            fee(1, "2021-03-01T09:30:00+07:00"),
            fee(2, "2021-03-02T09:30:00+07:00"),
        );
        let s = PartitionState::open(&path, 1 << 20).unwrap();
        s.apply(&[("t", 0, &a)], &codes).unwrap();
        s.commit().unwrap();
        s.apply(&[("t", 1, &b)], &codes).unwrap();
        // Reads see the open transaction.
        assert_eq!(total_of(&s), 2_000);
        assert_eq!(s.offsets().unwrap()["t"], 1);
        // A process that dies here (the transaction never committed) restarts from the commit,
        // at offset 0: the consumer replays offset 1 and the state counts it once.
        std::mem::forget(s);
        let s = PartitionState::open(&path, 1 << 20);
        let s = match s {
            Ok(s) => s,
            // The forgotten handle still holds the file's lock in this process: copy it.
            Err(_) => {
                let copy = dir.path().join("copy.redb");
                std::fs::copy(&path, &copy).unwrap();
                PartitionState::open(&copy, 1 << 20).unwrap()
            }
        };
        assert_eq!(s.offsets().unwrap()["t"], 0);
        assert_eq!(total_of(&s), 1_000);
        s.apply(&[("t", 0, &a), ("t", 1, &b)], &codes).unwrap();
        assert_eq!(total_of(&s), 2_000);
    }

    #[test]
    fn rows_held_in_memory_past_the_limit_across_commits_and_reopening_are_found() {
        let codes = Codes::new(&Reference::builtin());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.redb");
        let n = WRITE_BACK_ROWS + 5_000;
        let events: Vec<Event> = (0..n)
            .map(|i| {
                svc(
                    i as u128 + 1,
                    &format!("r{i}"),
                    ServiceStage::Received,
                    "2021-03-01T09:30:00+07:00",
                    None,
                    None,
                )
            })
            .collect();
        let apply = |s: &PartitionState| -> u64 {
            let mut duplicates = 0;
            for (i, chunk) in events.chunks(1_000).enumerate() {
                let evs: Vec<(&str, i64, &Event)> = chunk
                    .iter()
                    .enumerate()
                    .map(|(j, e)| ("t", (i * 1_000 + j) as i64, e))
                    .collect();
                duplicates += s.apply(&evs, &codes).unwrap().duplicates;
                if i == 3 {
                    s.commit().unwrap();
                }
            }
            duplicates
        };
        let received = |s: &PartitionState| total(&s.month((2021, 3)).unwrap()).received;
        let s = PartitionState::open(&path, 1 << 20).unwrap();
        assert_eq!(apply(&s), 0);
        // Replayed in the same transaction: some rows in memory, some in the B-tree.
        assert_eq!(apply(&s), n as u64);
        assert_eq!(received(&s), n as i64);
        assert_eq!(s.events().unwrap(), n as u64);
        drop(s);
        // Opened again: the filter is rebuilt from the file, and still knows every id.
        let s = PartitionState::open(&path, 1 << 20).unwrap();
        assert_eq!(apply(&s), n as u64);
        assert_eq!(received(&s), n as i64);
    }

    fn total(rows: &PeriodRows) -> ServiceAgg {
        rows.services
            .values()
            .fold(ServiceAgg::default(), |mut a, v| {
                a.revenue_riel += v.revenue_riel;
                a.delivered += v.delivered;
                a.received += v.received;
                a.processing_seconds_sum += v.processing_seconds_sum;
                a
            })
    }

    #[test]
    fn duplicates_count_once_and_corrections_replace_in_any_order_and_batching() {
        let events = vec![
            svc(
                1,
                "r1",
                ServiceStage::Received,
                "2021-03-01T09:00:00+07:00",
                None,
                None,
            ),
            svc(
                2,
                "r1",
                ServiceStage::FeePaid,
                "2021-03-01T09:30:00+07:00",
                Some(5_000),
                None,
            ),
            svc(
                2,
                "r1",
                ServiceStage::FeePaid,
                "2021-03-01T09:30:00+07:00",
                Some(5_000),
                None,
            ),
            svc(
                4,
                "r1",
                ServiceStage::Delivered,
                "2021-03-03T10:00:00+07:00",
                None,
                None,
            ),
        ];
        let correction = svc(
            3,
            "r1",
            ServiceStage::FeePaid,
            "2021-03-01T09:30:00+07:00",
            Some(50_000),
            Some(2),
        );
        for order in [0, 1] {
            for batch in [1, 2, 10] {
                let mut evs = events.clone();
                if order == 0 {
                    evs.push(correction.clone())
                } else {
                    evs.insert(0, correction.clone())
                }
                let (_d, s, _) = state(&evs, batch);
                let rows = s.month((2021, 3)).unwrap();
                let total = total(&rows);
                assert_eq!(
                    total.revenue_riel, 50_000,
                    "the correction replaces the fee (order {order}, batch {batch})"
                );
                assert_eq!((total.received, total.delivered), (1, 1));
                assert_eq!(total.processing_seconds_sum, 2 * 86_400 + 3600);
                assert_eq!(rows.processing.len(), 1);
                assert_eq!(s.events().unwrap(), 4);
            }
        }
    }

    #[test]
    fn of_two_corrections_of_one_fee_the_later_recorded_wins_in_any_order() {
        let fee = |id: u128, fee: i64, recorded: &str, supersedes: Option<u128>| {
            let Event::Service(mut e) = svc(
                id,
                "r1",
                ServiceStage::FeePaid,
                "2021-03-01T09:30:00+07:00",
                Some(fee),
                supersedes,
            ) else {
                unreachable!()
            };
            e.recorded_at = t(recorded);
            Event::Service(e)
        };
        let original = fee(10, 9_000, "2021-03-01T09:30:00+07:00", None);
        let first = fee(11, 5_000, "2021-03-02T09:00:00+07:00", Some(10));
        let second = fee(12, 5_500, "2021-03-05T09:00:00+07:00", Some(10));
        // Recorded at the same instant as `second`: the larger event id wins the tie.
        let tie = fee(13, 6_000, "2021-03-05T09:00:00+07:00", Some(10));
        let orders: [[&Event; 3]; 6] = [
            [&original, &first, &second],
            [&original, &second, &first],
            [&first, &original, &second],
            [&first, &second, &original],
            [&second, &original, &first],
            [&second, &first, &original],
        ];
        for order in orders {
            for batch in [1, 2, 3] {
                let evs: Vec<Event> = order.iter().map(|e| (*e).clone()).collect();
                let (_d, s, _) = state(&evs, batch);
                let total = total(&s.month((2021, 3)).unwrap());
                assert_eq!(
                    total.revenue_riel, 5_500,
                    "the correction recorded last wins (batch {batch})"
                );
                let mut with_tie = evs.clone();
                with_tie.insert(1, tie.clone());
                let (_d, s, _) = state(&with_tie, batch);
                assert_eq!(total_of(&s), 6_000, "ties go to the larger event id");
            }
        }
    }

    fn total_of(s: &PartitionState) -> i64 {
        total(&s.month((2021, 3)).unwrap()).revenue_riel
    }

    #[test]
    fn complaints_follow_the_latest_state_on_both_axes() {
        let (_d, s, _) = state(
            &[
                cmp(
                    1,
                    "a",
                    ComplaintStage::Received,
                    "2021-05-03T09:00:00+07:00",
                ),
                cmp(
                    2,
                    "a",
                    ComplaintStage::WithinJurisdiction,
                    "2021-05-04T09:00:00+07:00",
                ),
                cmp(
                    3,
                    "a",
                    ComplaintStage::MoreInfoRequired,
                    "2021-05-05T09:00:00+07:00",
                ),
                cmp(
                    4,
                    "b",
                    ComplaintStage::Received,
                    "2021-05-03T10:00:00+07:00",
                ),
                cmp(
                    5,
                    "b",
                    ComplaintStage::MoreInfoRequired,
                    "2021-05-04T10:00:00+07:00",
                ),
                cmp(
                    6,
                    "b",
                    ComplaintStage::Resolved,
                    "2021-06-20T10:00:00+07:00",
                ),
                cmp(
                    7,
                    "c",
                    ComplaintStage::Received,
                    "2021-05-07T10:00:00+07:00",
                ),
                cmp(
                    8,
                    "c",
                    ComplaintStage::OutsideJurisdiction,
                    "2021-05-08T10:00:00+07:00",
                ),
            ],
            3,
        );
        let rows = s.month((2021, 5)).unwrap();
        let a = rows
            .complaints
            .values()
            .fold(ComplaintAgg::default(), |mut a, v| {
                a.received += v.received;
                a.within += v.within;
                a.outside += v.outside;
                a.undecided += v.undecided;
                a.resolved += v.resolved;
                a.more_info += v.more_info;
                a.open += v.open;
                a
            });
        // a: within + more info; b: resolved later in June, counted in May and within; c: outside + open.
        assert_eq!((a.received, a.within, a.outside, a.undecided), (3, 2, 1, 0));
        assert_eq!((a.resolved, a.more_info, a.open), (1, 1, 1));
        assert!(
            s.month((2021, 6)).unwrap().complaints.is_empty(),
            "counted where RECEIVED falls"
        );
        assert!(s.months().unwrap().contains(&(2021, 6)));
    }

    #[test]
    fn unit_days_reconcile_against_the_units_own_count() {
        let close = |n: i32, at: &str| {
            Event::UnitDay(UnitDayClosed {
                unit_code: "KH-0101".into(),
                date: chrono::NaiveDate::from_ymd_opt(2021, 3, 1).unwrap(),
                services_recorded: n,
                complaints_recorded: 0,
                closed_at: t(at),
            })
        };
        let codes = Codes::new(&Reference::builtin());
        let (_d, s, _) = state(
            &[
                svc(
                    1,
                    "r1",
                    ServiceStage::Received,
                    "2021-03-01T09:00:00+07:00",
                    None,
                    None,
                ),
                close(3, "2021-03-01T17:00:00+07:00"),
            ],
            5,
        );
        let df = s
            .month((2021, 3))
            .unwrap()
            .frame(Table::UnitDays, &codes)
            .unwrap();
        assert_eq!(
            df.column("status").unwrap().str().unwrap().get(0),
            Some("missing_events")
        );
        assert_eq!(
            df.column("services_gap").unwrap().i64().unwrap().get(0),
            Some(2)
        );
        // A later close replaces the earlier one.
        let later = close(1, "2021-03-02T08:00:00+07:00");
        s.apply(&[("u", 9, &later)], &codes).unwrap();
        let df = s
            .month((2021, 3))
            .unwrap()
            .frame(Table::UnitDays, &codes)
            .unwrap();
        assert_eq!(
            df.column("status").unwrap().str().unwrap().get(0),
            Some("ok")
        );
        assert_eq!(s.offsets().unwrap()["u"], 9);
    }

    #[test]
    fn events_encode_and_decode() {
        let s = Stored::Svc(Svc {
            unit: 3,
            service: 7,
            request: u128::MAX - 5,
            stage: ServiceStage::Cancelled,
            fee: Some(-4000),
            occurred: 1_614_820_000_000,
            recorded: -5,
        });
        assert_eq!(Stored::decode(&s.encode()), Some(s));
        let c = Stored::Cmp(Cmp {
            unit: 3,
            complaint: 9,
            sector: None,
            stage: ComplaintStage::Withdrawn,
            occurred: 1,
            recorded: 2,
        });
        assert_eq!(Stored::decode(&c.encode()), Some(c));
    }
}
