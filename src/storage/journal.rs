//! An append-only journal of changes in numbered files (`N.log`, frames of
//! `log_frame.rs`): the log engine's logs, and the disk engine's record of
//! what its write buffer holds.
//!
//! Writers add frames to a pending buffer under its lock, together with the
//! change to their maps, so the journal's order is the maps' order; a flush
//! hands the pending frames to the OS with one `write(2)`. A rotation cuts the
//! journal at a point its caller chooses (under the pending lock) and starts
//! file `N+1`: everything before the cut is in files up to `N`, which the
//! caller deletes once what they hold is kept elsewhere (a snapshot, fjall).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use super::log_frame::{self, Change};
use super::StorageError;

/// Pending frames are written at once from this size on, even if nobody
/// asks (a replica that is only told changes, under `fsync = "no"`).
pub const PENDING_MAX: usize = 4 << 20;

/// Journal files in one directory.
pub struct Journal {
    dir: PathBuf,
    /// Frames applied to the maps and not yet handed to the OS.
    pending: Mutex<Vec<u8>>,
    /// The file being appended to; its lock also orders the writes.
    log: Mutex<ActiveLog>,
}

/// The file being appended to.
pub struct ActiveLog {
    file: Arc<File>,
    number: u64,
    /// Length of the file's intact frames.
    len: u64,
    /// Bytes written since the last rotation (after opening: in the files replayed).
    pub since_rotation: u64,
    /// Frames taken from `pending` whose write has not succeeded yet.
    unwritten: Vec<u8>,
}

impl Journal {
    /// Replays logs `numbers` of `dir` (ascending) into `load`, cutting a torn
    /// tail off the last one, and appends to the last (or to a new log
    /// `fresh` if there is none). A torn log before the last is damage.
    pub fn open(
        dir: &Path,
        numbers: &[u64],
        fresh: u64,
        load: &mut dyn FnMut(Change<'_>),
    ) -> Result<Journal, StorageError> {
        let mut since_rotation = 0;
        let mut active = None;
        for (i, &number) in numbers.iter().enumerate() {
            let path = file_path(dir, number, "log");
            let end = log_frame::replay(&path, load)?;
            let last = i + 1 == numbers.len();
            if end.torn && !last {
                tracing::error!("log {} is damaged at byte {}", path.display(), end.valid_len);
                return Err(StorageError::Corrupt);
            }
            if end.torn {
                tracing::warn!(
                    "log {} ends in a torn write (the process or machine died during it): cut at byte {}",
                    path.display(),
                    end.valid_len
                );
            }
            since_rotation += end.valid_len;
            active = Some((number, end.valid_len));
        }
        let (number, len) = active.unwrap_or((fresh, 0));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(file_path(dir, number, "log"))?;
        file.set_len(len)?;
        sync_dir(dir)?;
        Ok(Journal {
            dir: dir.to_owned(),
            pending: Mutex::new(Vec::new()),
            log: Mutex::new(ActiveLog {
                file: Arc::new(file),
                number,
                len,
                since_rotation,
                unwritten: Vec::new(),
            }),
        })
    }

    /// The pending frames, locked: a writer appends its frame and changes its
    /// maps before letting go.
    pub fn pending(&self) -> MutexGuard<'_, Vec<u8>> {
        self.pending.lock()
    }

    /// Writes the pending frames to the active log; returns it, still locked.
    pub fn write_pending(&self) -> Result<MutexGuard<'_, ActiveLog>, StorageError> {
        let mut log = self.log.lock();
        {
            let mut pending = self.pending.lock();
            if log.unwritten.is_empty() {
                std::mem::swap(&mut *pending, &mut log.unwritten);
            } else {
                log.unwritten.append(&mut pending);
            }
        }
        log.write_unwritten()?;
        Ok(log)
    }

    /// Writes the pending frames and fsyncs the active log, outside the lock
    /// so writers are not stalled by it (a log rotated meanwhile was fsynced
    /// when it was).
    pub fn sync(&self) -> Result<(), StorageError> {
        let file = self.write_pending()?.file.clone();
        file.sync_data()?;
        Ok(())
    }

    /// Cuts the journal: `at_cut` runs under the pending lock, so every frame
    /// added before it lands in the logs up to the active one, which is
    /// written and fsynced, and every frame after it in the new log. Returns
    /// the new log's number, which `at_cut` is given too, and what `at_cut` returned.
    pub fn rotate<R>(&self, at_cut: impl FnOnce(u64) -> R) -> Result<(u64, R), StorageError> {
        let mut log = self.log.lock();
        let cut = {
            let mut pending = self.pending.lock();
            log.unwritten.append(&mut pending);
            at_cut(log.number + 1)
        };
        log.write_unwritten()?;
        // The old log must be durable before what replaces it is trusted.
        log.file.sync_data()?;
        let number = log.number + 1;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(file_path(&self.dir, number, "log"))?;
        sync_dir(&self.dir)?;
        log.file = Arc::new(file);
        (log.number, log.len) = (number, 0);
        log.since_rotation = 0;
        Ok((number, cut))
    }

    /// Bytes written since the last rotation.
    pub fn since_rotation(&self) -> u64 {
        self.log.lock().since_rotation
    }
}

impl ActiveLog {
    fn write_unwritten(&mut self) -> Result<(), StorageError> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        if let Err(e) = (&*self.file).write_all(&self.unwritten) {
            // Cut any part that made it, so the frames can be written again whole.
            let _ = self.file.set_len(self.len);
            return Err(e.into());
        }
        let written = self.unwritten.len() as u64;
        self.len += written;
        self.since_rotation += written;
        self.unwritten.clear();
        // A huge batch (a big MSET) must not pin its size in this buffer.
        self.unwritten.shrink_to(PENDING_MAX);
        Ok(())
    }
}

/// Each file of `dir` with the number its name starts with, and its extension.
pub fn numbered_files(dir: &Path) -> Result<Vec<(PathBuf, Option<u64>, String)>, StorageError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let (Some(stem), Some(ext)) = (path.file_stem(), path.extension()) else {
            continue;
        };
        let number = stem.to_str().and_then(|s| s.parse::<u64>().ok());
        let ext = ext.to_string_lossy().into_owned();
        files.push((path, number, ext));
    }
    Ok(files)
}

/// The numbers of the logs in `dir`, ascending.
pub fn logs_in(dir: &Path) -> Result<Vec<u64>, StorageError> {
    let mut logs: Vec<u64> = numbered_files(dir)?
        .into_iter()
        .filter_map(|(_, number, ext)| number.filter(|_| ext == "log"))
        .collect();
    logs.sort_unstable();
    Ok(logs)
}

/// Deletes the snapshots and logs numbered below `first`.
pub fn remove_before(dir: &Path, first: u64) -> Result<(), StorageError> {
    for (path, number, ext) in numbered_files(dir)? {
        if number.is_some_and(|n| n < first) && (ext == "snap" || ext == "log") {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// `dir/N.ext`, the number zero-padded so names sort as numbers do.
pub fn file_path(dir: &Path, number: u64, ext: &str) -> PathBuf {
    dir.join(format!("{number:020}.{ext}"))
}

/// Makes a directory's entries (created, renamed files) durable.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}
