//! Bounded per-instance output logs in files: a process instance's stdout and stderr are
//! appended to `<dir>/<id>.log` by the process itself (no pipe to drain, nothing lost while
//! autokill is busy), and the file is cut back to its last [`KEEP`] bytes once it holds twice
//! that. Offsets count from the first byte the instance ever wrote: how many bytes were cut
//! is kept beside the log in `<id>.log.cut`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use uuid::Uuid;

use super::LogChunk;

/// How much of an instance's output is kept at least (1 MiB); a log is cut back to this once
/// it holds twice as much.
pub const KEEP: u64 = 1 << 20;

/// The log files of one runtime, in one directory.
#[derive(Debug, Clone)]
pub struct LogFiles {
    dir: PathBuf,
}

impl LogFiles {
    /// Logs kept in `dir` (created when the first log is).
    pub fn new(dir: impl Into<PathBuf>) -> LogFiles {
        LogFiles { dir: dir.into() }
    }

    fn path(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    fn cut_path(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.log.cut"))
    }

    /// Standard output and error for a new process of instance `id`, both appending to its log.
    pub fn stdio(&self, id: Uuid) -> io::Result<(Stdio, Stdio)> {
        std::fs::create_dir_all(&self.dir)?;
        self.trim(id)?;
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(id))?;
        let err = out.try_clone()?;
        Ok((Stdio::from(out), Stdio::from(err)))
    }

    /// How many bytes were cut from the start of the log so far.
    fn cut(&self, id: Uuid) -> u64 {
        std::fs::read_to_string(self.cut_path(id))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Cuts the log back to its last [`KEEP`] bytes once it holds more than twice that. The
    /// process keeps appending (its descriptor is in append mode), so what it writes during
    /// the cut lands after the kept part; at worst a few lines written in that instant are lost.
    pub fn trim(&self, id: Uuid) -> io::Result<()> {
        let path = self.path(id);
        let len = match std::fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        };
        if len <= 2 * KEEP {
            return Ok(());
        }
        let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
        file.seek(SeekFrom::Start(len - KEEP))?;
        let mut tail = Vec::with_capacity(KEEP as usize);
        Read::by_ref(&mut file).take(KEEP).read_to_end(&mut tail)?;
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&tail)?;
        let cut = self.cut(id) + (len - KEEP);
        std::fs::write(self.cut_path(id), cut.to_string())
    }

    /// Up to `limit` bytes from `offset` (counted from the first byte ever written; negative:
    /// back from the end), within what is kept.
    pub fn read(&self, id: Uuid, offset: i64, limit: Option<u64>) -> io::Result<LogChunk> {
        self.trim(id)?;
        let cut = self.cut(id);
        let mut file = match File::open(self.path(id)) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Ok(LogChunk {
                    data: Vec::new(),
                    available: (cut, cut),
                    range: (cut, cut),
                });
            }
            Err(err) => return Err(err),
        };
        let len = file.metadata()?.len();
        let end = cut + len;
        let start = if offset < 0 {
            end.saturating_sub(offset.unsigned_abs())
        } else {
            offset as u64
        }
        .clamp(cut, end);
        let want = limit.unwrap_or(end - start).min(end - start).min(2 * KEEP);
        file.seek(SeekFrom::Start(start - cut))?;
        let mut data = Vec::with_capacity(want as usize);
        file.take(want).read_to_end(&mut data)?;
        let got = data.len() as u64;
        Ok(LogChunk {
            data,
            available: (cut, end),
            range: (start, start + got),
        })
    }

    /// Removes the log of an instance that is deleted.
    pub fn remove(&self, id: Uuid) {
        for path in [self.path(id), self.cut_path(id)] {
            if let Err(err) = std::fs::remove_file(&path)
                && err.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), %err, "removing an instance log failed");
            }
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ranges_and_stays_bounded() {
        let dir = tempfile::tempdir().expect("dir");
        let logs = LogFiles::new(dir.path().join("logs"));
        let id = Uuid::from_u128(1);
        let empty = logs.read(id, 0, None).expect("read");
        assert!(empty.data.is_empty());
        drop(logs.stdio(id).expect("stdio"));
        std::fs::write(logs.path(id), b"hello world").expect("write");
        let all = logs.read(id, 0, None).expect("read");
        assert_eq!(
            (all.data.as_slice(), all.available, all.range),
            (&b"hello world"[..], (0, 11), (0, 11))
        );
        let tail = logs.read(id, -5, None).expect("read");
        assert_eq!(tail.data, b"world");
        let mid = logs.read(id, 2, Some(3)).expect("read");
        assert_eq!((mid.data.as_slice(), mid.range), (&b"llo"[..], (2, 5)));
        // Past twice the bound: cut back to the last KEEP bytes, offsets kept.
        let big = vec![b'x'; (2 * KEEP + 10) as usize];
        std::fs::write(logs.path(id), &big).expect("write");
        let chunk = logs.read(id, -3, None).expect("read");
        assert_eq!(chunk.available, (KEEP + 10, 2 * KEEP + 10));
        assert_eq!(chunk.range, (2 * KEEP + 7, 2 * KEEP + 10));
        assert_eq!(std::fs::metadata(logs.path(id)).expect("meta").len(), KEEP);
        let early = logs.read(id, 0, Some(1)).expect("read");
        assert_eq!(
            early.range.0,
            KEEP + 10,
            "a cut offset starts at what is kept"
        );
        logs.remove(id);
        assert!(!logs.path(id).exists());
        assert!(logs.dir().exists());
    }
}
