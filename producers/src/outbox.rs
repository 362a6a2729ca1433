//! Durable outbox: accepted events are on disk (fsync'd) before they are sent, and leave the
//! disk only once Kafka has acknowledged them. An office offline for days loses nothing: the
//! next `publish` or `flush` delivers what waits.
//!
//! The outbox is a directory of segment files. A segment is written as `*.tmp`, fsync'd, then
//! renamed to `*.seg` (and the directory fsync'd), so a crash leaves either a whole segment or
//! none. After a delivery attempt a segment is rewritten the same way with only the records
//! Kafka did not acknowledge, or deleted when all were. A crash between an acknowledgement and
//! that rewrite re-sends some records: they carry the same event ids and are counted once.
//!
//! Records hold only encoded events (pseudonymous ids), never an office's raw numbers.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"OWSUOB01";

/// One message waiting for Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Full topic name, the `--topic-prefix` included.
    pub topic: String,
    /// Message key: the event's unit code, which picks its partition.
    pub key: String,
    /// The event in Avro single-object encoding, as it goes to Kafka.
    pub payload: Vec<u8>,
}

/// An open outbox. It holds an exclusive lock on `<dir>/.lock` while open: two producers
/// sending from one outbox would send each other's segments and rewrite them under each other.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    _lock: File,
}

/// Takes the outbox's lock, or says which process holds it.
fn lock(dir: &Path) -> io::Result<File> {
    let path = dir.join(".lock");
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    match f.try_lock() {
        Ok(()) => {
            f.set_len(0)?;
            write!(f, "{}", std::process::id())?;
            Ok(f)
        }
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "the outbox {} is in use by another producer (process {}): one outbox \
                     serves one producer at a time; wait for it to finish, or give this one \
                     its own --outbox",
                    dir.display(),
                    if holder.trim().is_empty() {
                        "?"
                    } else {
                        holder.trim()
                    }
                ),
            ))
        }
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn put(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    w.write_all(&(bytes.len() as u32).to_le_bytes())?;
    w.write_all(bytes)
}

fn get(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

impl Outbox {
    /// Opens (creating) an outbox directory. Leftover `*.tmp` files are segments whose write
    /// never completed; their events were never acknowledged to the caller, so they go.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        let lock = lock(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let p = entry?.path();
            if p.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&p)?;
            }
        }
        Ok(Outbox { dir, _lock: lock })
    }

    /// The outbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_atomically(&self, target: &Path, records: &[OutboxRecord]) -> io::Result<()> {
        let tmp = target.with_extension("tmp");
        {
            let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
            w.write_all(MAGIC)?;
            for r in records {
                put(&mut w, r.topic.as_bytes())?;
                put(&mut w, r.key.as_bytes())?;
                put(&mut w, &r.payload)?;
            }
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        fs::rename(&tmp, target)?;
        fsync_dir(&self.dir)
    }

    /// Makes records durable as a new segment (written, fsync'd and renamed before this returns);
    /// returns its path. Segments are named by wall-clock nanoseconds and process id.
    pub fn append(&self, records: &[OutboxRecord]) -> io::Result<PathBuf> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let path = self
            .dir
            .join(format!("{stamp:024}-{}.seg", std::process::id()));
        self.write_atomically(&path, records)?;
        Ok(path)
    }

    /// Paths of the complete segments (`*.seg`), in the order they were written (by name).
    pub(crate) fn segments(&self) -> io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        Ok(v)
    }

    /// The records of one segment in the order they were appended. `InvalidData` when the file
    /// does not start with the segment magic or a record lacks its key or payload.
    pub fn read(path: &Path) -> io::Result<Vec<OutboxRecord>> {
        let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not an outbox segment", path.display()),
            ));
        }
        let mut out = Vec::new();
        while let Some(topic) = get(&mut r)? {
            let bad = |what: &str| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: truncated record ({what})", path.display()),
                )
            };
            let key = get(&mut r)?.ok_or_else(|| bad("key"))?;
            let payload = get(&mut r)?.ok_or_else(|| bad("payload"))?;
            out.push(OutboxRecord {
                topic: String::from_utf8(topic).map_err(|_| bad("topic"))?,
                key: String::from_utf8(key).map_err(|_| bad("key"))?,
                payload,
            });
        }
        Ok(out)
    }

    /// Rewrites segment `path` with only the `records[i]` whose `keep[i]` is true (atomically,
    /// as [`append`](Self::append) writes), or deletes it when none is. Returns how many remain.
    pub fn retain(
        &self,
        path: &Path,
        records: Vec<OutboxRecord>,
        keep: &[bool],
    ) -> io::Result<usize> {
        let left: Vec<OutboxRecord> = records
            .into_iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(r, _)| r)
            .collect();
        if left.is_empty() {
            fs::remove_file(path)?;
            fsync_dir(&self.dir)?;
        } else {
            self.write_atomically(path, &left)?;
        }
        Ok(left.len())
    }

    /// Records waiting in all segments (reads every segment).
    pub fn pending(&self) -> io::Result<usize> {
        let mut n = 0;
        for s in self.segments()? {
            n += Self::read(&s)?.len();
        }
        Ok(n)
    }
}

/// How full an outbox is: what an operator watches while an office is offline.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct OutboxStatus {
    /// Events waiting for Kafka's acknowledgement.
    pub events: u64,
    /// Segment files holding them.
    pub segments: u64,
    /// Age of the oldest segment, in seconds (0 when the outbox is empty).
    pub oldest_age_seconds: f64,
}

impl OutboxStatus {
    /// The outbox `dir` now (reads every segment; takes no lock, so a running producer's
    /// outbox can be looked at).
    pub(crate) fn of(dir: &Path) -> io::Result<OutboxStatus> {
        let mut v: Vec<PathBuf> = match fs::read_dir(dir) {
            Ok(r) => r
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "seg"))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        v.sort();
        let mut status = OutboxStatus {
            segments: v.len() as u64,
            ..OutboxStatus::default()
        };
        for s in &v {
            status.events += Outbox::read(s)?.len() as u64;
        }
        if let Some(first) = v.first() {
            // Segments are named by the wall-clock nanoseconds they were written at.
            let written = first
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split('-').next())
                .and_then(|n| n.parse::<u128>().ok());
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            if let Some(w) = written {
                status.oldest_age_seconds = now.saturating_sub(w) as f64 / 1e9;
            }
        }
        Ok(status)
    }

    /// The status in the Prometheus text format, for node_exporter's textfile collector
    /// (a batch command has no endpoint to scrape), labelled with the outbox directory.
    pub(crate) fn prometheus_text(&self, dir: &Path) -> String {
        use prometheus_client::encoding::EncodeLabelSet;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::gauge::Gauge;
        use std::sync::atomic::AtomicU64;

        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct OutboxLabel {
            outbox: String,
        }
        let label = OutboxLabel {
            outbox: dir.display().to_string(),
        };
        let mut registry = prometheus_client::registry::Registry::with_prefix("owsu_outbox");
        let mut gauge = |name: &str, help: &str, v: f64| {
            let f = Family::<OutboxLabel, Gauge<f64, AtomicU64>>::default();
            f.get_or_create(&label).set(v);
            registry.register(name, help, f);
        };
        gauge(
            "events",
            "Events waiting in the outbox for Kafka's acknowledgement",
            self.events as f64,
        );
        gauge("segments", "Outbox segment files", self.segments as f64);
        gauge(
            "oldest_age_seconds",
            "Age of the oldest waiting segment (0: the outbox is empty)",
            self.oldest_age_seconds,
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Writes [`Self::prometheus_text`] to `file` atomically (a collector never reads half).
    pub(crate) fn write_metrics(&self, dir: &Path, file: &Path) -> io::Result<()> {
        let tmp = file.with_extension("prom.tmp");
        fs::write(&tmp, self.prometheus_text(dir))?;
        fs::rename(&tmp, file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u8) -> OutboxRecord {
        OutboxRecord {
            topic: "t".into(),
            key: format!("k{i}"),
            payload: vec![i; i as usize],
        }
    }

    #[test]
    fn segments_survive_reopen_and_shrink_to_unacknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(dir.path()).unwrap();
        let seg = ob.append(&[rec(1), rec(2), rec(3)]).unwrap();
        std::fs::write(dir.path().join("half-written.tmp"), b"junk").unwrap();
        drop(ob);
        let ob = Outbox::open(dir.path()).unwrap();
        assert_eq!(ob.pending().unwrap(), 3);
        assert!(!dir.path().join("half-written.tmp").exists());
        let records = Outbox::read(&seg).unwrap();
        assert_eq!(records, vec![rec(1), rec(2), rec(3)]);
        assert_eq!(ob.retain(&seg, records, &[false, true, false]).unwrap(), 1);
        assert_eq!(Outbox::read(&seg).unwrap(), vec![rec(2)]);
        assert_eq!(ob.retain(&seg, vec![rec(2)], &[false]).unwrap(), 0);
        assert!(ob.segments().unwrap().is_empty());
    }

    #[test]
    fn the_status_counts_what_waits_and_how_old_it_is() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            OutboxStatus::of(&dir.path().join("absent")).unwrap(),
            OutboxStatus::default()
        );
        let ob = Outbox::open(dir.path()).unwrap();
        ob.append(&[rec(1), rec(2)]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        ob.append(&[rec(3)]).unwrap();
        let s = OutboxStatus::of(dir.path()).unwrap();
        assert_eq!((s.events, s.segments), (3, 2));
        assert!(
            s.oldest_age_seconds >= 0.02 && s.oldest_age_seconds < 60.0,
            "{s:?}"
        );
        let file = dir.path().join("outbox.prom");
        s.write_metrics(dir.path(), &file).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("owsu_outbox_events{outbox="), "{text}");
        assert!(text.contains("} 3"), "{text}");
        assert!(
            text.contains("# TYPE owsu_outbox_oldest_age_seconds gauge"),
            "{text}"
        );
    }

    #[test]
    fn a_second_producer_on_one_outbox_is_refused_until_the_first_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let first = Outbox::open(dir.path()).unwrap();
        let e = Outbox::open(dir.path()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let msg = e.to_string();
        assert!(
            msg.contains("in use by another producer")
                && msg.contains(&std::process::id().to_string()),
            "{msg}"
        );
        drop(first);
        Outbox::open(dir.path()).expect("free once the first producer is done");
    }
}
