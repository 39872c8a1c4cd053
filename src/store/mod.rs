//! Durable state: one redb file holding every instance, template and service group as a record.
//!
//! The controller writes the records a batch of commands changed in one write transaction and
//! commits it (fsync) before it carries out the batch's effects or answers the API, so an
//! acknowledged change survives `kill -9`. Deadlines are not stored separately: each record keeps
//! the wall-clock instants they derive from (`stopped_at`, `last_used`, `empty_since`,
//! `restart_at`), and the controller re-arms every timer from them at start.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const INSTANCES: TableDefinition<u128, &[u8]> = TableDefinition::new("instances");
const GROUPS: TableDefinition<u128, &[u8]> = TableDefinition::new("service_groups");

/// From this many stored instances on, a start reads them on two threads.
const PARALLEL_READ_FROM: usize = 4096;
/// redb's page cache. Its default (1 GiB) keeps every page a batch of creations wrote or a
/// start read, about 600 bytes per stored instance on top of the state itself, though the
/// state is read once, at start, and a commit touches a few pages per record (the kernel's
/// page cache holds the file as well). 16 MiB measured no slower for PATCH writes at
/// 100,000 records.
const CACHE_SIZE: usize = 16 << 20;
/// How long opening waits for another process's lock on the file to go (see [`Store::open`]).
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Errors of the store, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened, created or written.
    #[error("store {path}: {message}")]
    Io {
        /// The store file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The file was written by a newer autokill.
    #[error(
        "store {path} has schema version {found}, but this autokill reads version {supported}; refusing to touch it (use a newer autokill, or another store.path)"
    )]
    NewerSchema {
        /// The store file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
        /// The version this build supports.
        supported: u32,
    },
    /// A record could not be decoded.
    #[error("store {path}: record {key} is corrupt: {message}")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// The record.
        key: Uuid,
        /// What is wrong.
        message: String,
    },
}

/// An instance or template as stored. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Identity.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Image key.
    pub image: String,
    /// Memory limit in MiB.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Group.
    pub group: Option<Uuid>,
    /// Template it was cloned from.
    pub template: Option<Uuid>,
    /// That template's name.
    pub template_name: Option<String>,
    /// `autokill.num_requests`: the budget the instance was given (drawn, with jitter).
    pub num_requests: u64,
    /// The `num_requests` asked for, when `autokill.jitter` drew a lower budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_num_requests: Option<u64>,
    /// `autokill.time` in ms.
    pub time_ms: Option<u64>,
    /// `never`, `always`, `on-failure`.
    pub restart_policy: String,
    /// `OFF`, `ON_FAILURE`, `ON_SUCCESS`, `ALWAYS`.
    pub autodestroy: String,
    /// Lifecycle state as the API names it.
    pub state: String,
    /// Last exit code.
    pub exit_code: Option<i32>,
    /// Why it last stopped.
    pub stop_reason: Option<String>,
    /// When it last stopped.
    pub stopped_at: Option<u64>,
    /// When it was created.
    pub created_at: u64,
    /// Delete lock.
    pub delete_lock: bool,
    /// Templates: made or last cloned.
    pub last_used: u64,
    /// Templates: the unused time in ms.
    #[serde(default)]
    pub unused_ms: Option<u64>,
    /// Consecutive restarts (back-off).
    pub restarts: u32,
    /// A scheduled restart.
    pub restart_at: Option<u64>,
    /// An autodestroy held back by the delete lock.
    pub destroy_due: bool,
    /// A delete in progress, with the kill reason if any (`""` for a user's delete).
    pub deleting: Option<String>,
    /// Requests the proxy may have forwarded: the meter restarts here after a crash.
    pub reserved: u64,
    /// Declared by the configuration file.
    pub from_config: bool,
}

/// A service group as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Identity.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Host names.
    pub domains: Vec<String>,
    /// Empty-time autokill in ms.
    pub time_ms: Option<u64>,
    /// Delete lock.
    pub delete_lock: bool,
    /// Created.
    pub created_at: u64,
    /// Empty since.
    pub empty_since: Option<u64>,
    /// Shown.
    pub soft_limit: Option<u64>,
    /// Shown.
    pub hard_limit: Option<u64>,
    /// Shown.
    pub services: serde_json::Value,
    /// Declared by the configuration file.
    pub from_config: bool,
    /// A Tutum service's spec; absent for a plain group (and in stores written before services).
    #[serde(default)]
    pub service: Option<ServiceRecord>,
}

/// A Tutum service's spec, as stored with its group. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Image key its containers are made from.
    pub image: String,
    /// `target_num_containers`.
    pub target: u32,
    /// Containers' restart policy: `never`, `always`, `on-failure`.
    pub restart_policy: String,
    /// Containers' autodestroy: `OFF`, `ON_FAILURE`, `ON_SUCCESS`, `ALWAYS`.
    pub autodestroy: String,
    /// Containers' `autokill.num_requests`.
    pub num_requests: u64,
    /// Containers' `autokill.time` in ms.
    pub time_ms: Option<u64>,
    /// Started and not stopped since: new containers are started too.
    pub run: bool,
    /// The containers are made from the current spec (false after the image changed).
    pub synchronized: bool,
    /// `Scaling`, `Redeploying` or `Terminating` while that is under way.
    pub transition: Option<String>,
    /// Last deployment (create, redeploy).
    pub deployed_at: Option<u64>,
    /// Last start.
    pub started_at: Option<u64>,
    /// Last stop.
    pub stopped_at: Option<u64>,
}

/// One change to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Insert or replace an instance or template.
    PutInstance(InstanceRecord),
    /// Remove an instance or template.
    DeleteInstance(Uuid),
    /// Insert or replace a service group.
    PutGroup(GroupRecord),
    /// Remove a service group.
    DeleteGroup(Uuid),
}

/// Everything stored, as read at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Instances and templates.
    pub instances: Vec<InstanceRecord>,
    /// Service groups.
    pub groups: Vec<GroupRecord>,
}

/// The open store.
pub struct Store {
    db: Database,
    path: PathBuf,
    /// Each commit also saves redb's free-space map (see [`Store::open_with`]).
    quick_repair: bool,
    /// Opening found the file not closed cleanly and checked and repaired it whole.
    repaired: bool,
    /// Tests: how many of the next commits fail as a full disk would.
    #[cfg(test)]
    fail_commits: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store at `path` with quick repair and reads everything in it; see
    /// [`Store::open_with`].
    pub fn open(path: &Path) -> Result<(Store, Snapshot), StoreError> {
        Store::open_with(path, true)
    }

    /// Opens (or creates) the store at `path` and reads everything in it. A file of a newer schema
    /// version is refused and left untouched.
    ///
    /// With `quick_repair`, every commit also saves redb's map of free space and is made durable
    /// in two steps (a second `fdatasync`): a start after a crash or a power loss then loads that
    /// map, where otherwise redb walks and checksums the whole file to rebuild it (about 140 ms
    /// at 100,000 instances here, growing with the file). Without it a commit is one
    /// `fdatasync`. Either way a commit is durable once it returns.
    pub fn open_with(path: &Path, quick_repair: bool) -> Result<(Store, Snapshot), StoreError> {
        let io = |message: String| StoreError::Io {
            path: path.to_owned(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| io(format!("cannot create directory {}: {e}", dir.display())))?;
        }
        // A server killed while it was starting instance processes leaves its lock with the
        // children it had forked and not yet exec'd (they hold a copy of the file's descriptor
        // until then): a start right after it waits for them a moment.
        let waiting = std::time::Instant::now();
        let mut repaired;
        let db = loop {
            // Read the version before anything of ours is written to the file. A file left by
            // a crash needs redb's repair, which a read-only open cannot do; then the repair
            // (redb's own bookkeeping, none of our records) happens first and the version is
            // checked after.
            // redb also "repairs" the empty file it has just made: not a repair to report.
            let existed = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
            let readonly = if existed {
                redb::ReadOnlyDatabase::open(path).ok()
            } else {
                None
            };
            if let Some(db) = readonly {
                let found = read_version(&db).map_err(|e| io(e.to_string()))?;
                drop(db);
                check_version(path, found)?;
            }
            let repairing = Arc::new(AtomicBool::new(false));
            let noted = Arc::clone(&repairing);
            let opened = redb::Builder::new()
                .set_cache_size(CACHE_SIZE)
                .set_repair_callback(move |_| noted.store(true, Ordering::Relaxed))
                .create(path);
            repaired = existed && repairing.load(Ordering::Relaxed);
            match opened {
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if waiting.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(io(format!(
                        "the file is locked by another process (another autokill serving this \
                         store?); waited {} s",
                        LOCK_WAIT.as_secs()
                    )));
                }
                opened => break opened.map_err(|e| io(e.to_string()))?,
            }
        };
        let store = Store {
            db,
            path: path.to_owned(),
            quick_repair,
            repaired,
            #[cfg(test)]
            fail_commits: std::sync::atomic::AtomicU32::new(0),
        };
        store.init().map_err(|e| io(e.to_string()))?;
        let snapshot = store.read_all()?;
        Ok((store, snapshot))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opening found the file not closed cleanly (a crash or power loss while it was open, with
    /// the last commit made without quick repair) and checked and repaired the whole file.
    pub fn repaired(&self) -> bool {
        self.repaired
    }

    /// A write transaction, saving the free-space map when quick repair is on.
    fn begin_write(&self) -> Result<redb::WriteTransaction, redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_quick_repair(self.quick_repair);
        Ok(txn)
    }

    fn init(&self) -> Result<(), redb::Error> {
        // A store already set up is not written to: a commit without anything in it would
        // still cost a sync.
        if read_version(&self.db)?.is_some() {
            let txn = self.db.begin_read()?;
            let made = |t: Result<_, redb::TableError>| match t {
                Ok(_) => Ok(true),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
                Err(e) => Err(e),
            };
            if made(txn.open_table(INSTANCES).map(drop))? && made(txn.open_table(GROUPS).map(drop))?
            {
                return Ok(());
            }
        }
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            if meta.get("schema_version")?.is_none() {
                meta.insert("schema_version", u64::from(SCHEMA_VERSION))?;
            }
            txn.open_table(INSTANCES)?;
            txn.open_table(GROUPS)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn read_all(&self) -> Result<Snapshot, StoreError> {
        let io = |e: redb::Error| StoreError::Io {
            path: self.path.clone(),
            message: e.to_string(),
        };
        let txn = self.db.begin_read().map_err(|e| io(e.into()))?;
        let mut snapshot = Snapshot::default();
        let instances = txn.open_table(INSTANCES).map_err(|e| io(e.into()))?;
        // Decoding is most of a start's read: a large store is read in two halves of the key
        // space at once (keys are random UUIDs, so the halves are about even), the lower half
        // on a thread of its own. The records stay in key order.
        let count = instances.len().map_err(|e| io(e.into()))? as usize;
        let read = |range: (Bound<u128>, Bound<u128>), capacity: usize| {
            let mut out = Vec::with_capacity(capacity);
            for entry in instances.range(range).map_err(|e| io(e.into()))? {
                let (k, v) = entry.map_err(|e| io(e.into()))?;
                out.push(self.decode(k.value(), v.value())?);
            }
            Ok::<_, StoreError>(out)
        };
        let all = (Bound::Unbounded, Bound::Unbounded);
        snapshot.instances = if count < PARALLEL_READ_FROM {
            read(all, count)?
        } else {
            const MIDDLE: u128 = 1 << 127;
            let half = count / 2 + count / 16;
            let (lower, upper) = crate::par::join(
                "autokill-read",
                || read((Bound::Unbounded, Bound::Excluded(MIDDLE)), half),
                || read((Bound::Included(MIDDLE), Bound::Unbounded), half),
            );
            let mut records = lower?;
            records.append(&mut upper?);
            records
        };
        let groups = txn.open_table(GROUPS).map_err(|e| io(e.into()))?;
        for entry in groups.iter().map_err(|e| io(e.into()))? {
            let (k, v) = entry.map_err(|e| io(e.into()))?;
            snapshot.groups.push(self.decode(k.value(), v.value())?);
        }
        Ok(snapshot)
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        key: u128,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            key: Uuid::from_u128(key),
            message: e.to_string(),
        })
    }

    /// Writes `changes` in one transaction and returns once it is durable.
    pub fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        #[cfg(test)]
        if self
            .fail_commits
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            return Err(StoreError::Io {
                path: self.path.clone(),
                message: "No space left on device (injected by a test)".into(),
            });
        }
        self.write(changes).map_err(|e| StoreError::Io {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    fn write(&self, changes: &[Change]) -> Result<(), redb::Error> {
        let txn = self.begin_write()?;
        {
            let mut instances = txn.open_table(INSTANCES)?;
            let mut groups = txn.open_table(GROUPS)?;
            for change in changes {
                match change {
                    Change::PutInstance(r) => {
                        instances.insert(r.id.as_u128(), encode(r).as_slice())?;
                    }
                    Change::DeleteInstance(id) => {
                        instances.remove(id.as_u128())?;
                    }
                    Change::PutGroup(r) => {
                        groups.insert(r.id.as_u128(), encode(r).as_slice())?;
                    }
                    Change::DeleteGroup(id) => {
                        groups.remove(id.as_u128())?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Tests: the next `n` commits fail.
    #[cfg(test)]
    pub(crate) fn fail_next_commits(&self, n: u32) {
        self.fail_commits
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Test support: sets the schema version in the file, as a newer build would.
    #[doc(hidden)]
    pub fn set_schema_version(&self, version: u64) -> Result<(), StoreError> {
        let io = |e: redb::Error| StoreError::Io {
            path: self.path.clone(),
            message: e.to_string(),
        };
        let txn = self.db.begin_write().map_err(|e| io(e.into()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| io(e.into()))?;
            meta.insert("schema_version", version)
                .map_err(|e| io(e.into()))?;
        }
        txn.commit().map_err(|e| io(e.into()))
    }
}

fn check_version(path: &Path, found: Option<u64>) -> Result<(), StoreError> {
    match found {
        Some(found) if found > u64::from(SCHEMA_VERSION) => Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        }),
        _ => Ok(()),
    }
}

fn read_version(db: &impl ReadableDatabase) -> Result<Option<u64>, redb::Error> {
    let txn = db.begin_read()?;
    match txn.open_table(META) {
        Ok(meta) => Ok(meta.get("schema_version")?.map(|v| v.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Serialising plain structs of strings and numbers to JSON cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> InstanceRecord {
        InstanceRecord {
            id: Uuid::new_v4(),
            name: name.into(),
            image: "hello".into(),
            memory_mb: None,
            group: None,
            template: None,
            template_name: None,
            num_requests: 5,
            asked_num_requests: None,
            time_ms: Some(300),
            restart_policy: "never".into(),
            autodestroy: "OFF".into(),
            state: "running".into(),
            exit_code: None,
            stop_reason: None,
            stopped_at: None,
            created_at: 1,
            delete_lock: false,
            last_used: 1,
            unused_ms: None,
            restarts: 0,
            restart_at: None,
            destroy_due: false,
            deleting: None,
            reserved: 2,
            from_config: false,
        }
    }

    #[test]
    fn changes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("sub/autokill.redb");
        let a = record("a");
        let b = record("b");
        {
            let (store, snap) = Store::open(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(snap.instances.is_empty());
            store
                .commit(&[
                    Change::PutInstance(a.clone()),
                    Change::PutInstance(b.clone()),
                ])
                .unwrap_or_else(|e| panic!("{e}"));
            store
                .commit(&[Change::DeleteInstance(b.id)])
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let (_, snap) = Store::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(snap.instances, vec![a]);
    }

    /// A store large enough to be read on two threads gives every record once, in key order,
    /// with the ids on both sides of the split (the middle of the key space) among them.
    #[test]
    fn a_large_store_is_read_whole_and_in_key_order() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("autokill.redb");
        let mut records: Vec<InstanceRecord> = (0..PARALLEL_READ_FROM + 100)
            .map(|i| record(&format!("i{i}")))
            .collect();
        // The keys next to the split.
        records[0].id = Uuid::from_u128((1 << 127) - 1);
        records[1].id = Uuid::from_u128(1 << 127);
        {
            let (store, _) = Store::open(&path).unwrap_or_else(|e| panic!("{e}"));
            let changes: Vec<Change> = records.iter().cloned().map(Change::PutInstance).collect();
            store.commit(&changes).unwrap_or_else(|e| panic!("{e}"));
        }
        let (_, snap) = Store::open(&path).unwrap_or_else(|e| panic!("{e}"));
        records.sort_by_key(|r| r.id);
        assert_eq!(snap.instances.len(), records.len());
        assert!(
            snap.instances == records,
            "records lost, doubled or out of order"
        );
    }

    /// A lock that goes within the wait (a crashed server's forked child exec'ing) is waited
    /// for; one that stays (another server on the same file) is refused, naming the lock.
    #[test]
    fn a_lock_held_a_moment_is_waited_for_and_one_that_stays_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("autokill.redb");
        let (held, _) = Store::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let (store, _) = Store::open(&path).unwrap_or_else(|e| panic!("{e}"));
        release
            .join()
            .unwrap_or_else(|_| panic!("the releasing thread"));
        match Store::open(&path) {
            Err(err) => assert!(
                err.to_string().contains("locked by another process"),
                "{err}"
            ),
            Ok(_) => panic!("opened a store another holds"),
        }
        drop(store);
    }

    #[test]
    fn a_newer_schema_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("autokill.redb");
        {
            let (store, _) = Store::open(&path).unwrap_or_else(|e| panic!("{e}"));
            store
                .commit(&[Change::PutInstance(record("a"))])
                .unwrap_or_else(|e| panic!("{e}"));
            store
                .set_schema_version(7)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let before = std::fs::read(&path).unwrap_or_default();
        let err = Store::open(&path)
            .map(|_| ())
            .expect_err("newer schema refused")
            .to_string();
        assert!(
            err.contains("schema version 7") && err.contains(&format!("version {SCHEMA_VERSION}")),
            "{err}"
        );
        assert!(
            std::fs::read(&path).unwrap_or_default() == before,
            "the file is not touched"
        );
    }
}
