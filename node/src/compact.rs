//! Opening the services' sled databases: made with segments of [`SEGMENT_SIZE`], and rewritten
//! first when they were made with sled's default segments or, for the sequencer's, when most of
//! the file is garbage.
//!
//! Under the sequencer's churn of small records (log entries written and removed, the state's
//! leaves rewritten), sled 0.34's segment cleaner, with its default segments of 512 KiB, did
//! not reclaim what they left behind: the file grew 700–1 240 bytes a settled transaction while
//! the live data stays the state and the index's window, about 160 with the settled state saved
//! every 10 000 transactions rather than every block, about 60 with the index of settled hashes
//! out of sled. With segments of 4 MiB it stayed bounded while the live data stayed steady, and
//! followed it at about twice its size while it grew (BENCHMARKS.md). The settlement node's
//! database only grows, a block of about 230 KB at a time; with the default segments its file
//! was four times its blocks, with about 1.3 files under `blobs/` a block; with 4 MiB, 1.3 to
//! 1.5 times, and one such file per nine blocks.
//!
//! The rewrite at the sequencer's open remains for what the cleaner still leaves, and moves a
//! database of either service from the default segments: the open measures the live data, and
//! where the file is [`GARBAGE_RATIO`] times larger (and [`MIN_GARBAGE`] more; [`open`] only),
//! or its segments are sled's default, rewrites it into a fresh directory and puts that in its
//! place, a step a kill at any moment leaves either undone or done:
//!
//! 1. `<dir>.compact` is written from the database, tree by tree, checked against it (sled's
//!    checksum), flushed and closed;
//! 2. the marker `<dir>.compacted` is created: from here on the rewrite is complete;
//! 3. `<dir>` becomes `<dir>.old`, `<dir>.compact` becomes `<dir>`;
//! 4. the marker and `<dir>.old` are removed.
//!
//! [`open`] and [`open_history`] first finish or undo whatever a killed process left: with the
//! marker, steps 3 and 4; without it, they remove `<dir>.compact` and keep `<dir>` (or put back
//! `<dir>.old`, which step 3 moved only after the marker existed).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tracing::{info, warn};

/// sled's segment size (its io buffer's) for the services' databases, set when a database is
/// made. Under the sequencer's writes, sled 0.34's default of 512 KiB let the file grow about 60
/// bytes a settled transaction without bound (87 MB after 1.3 million, with about 1 MB live),
/// the log's appends most of it; with 4 MiB it stayed between 21 and 29 MB over a million
/// (BENCHMARKS.md). Larger segments cost more a flush: 8 MiB stayed flat at 42 MB, but nearly
/// tripled a settled block's flush, where 4 MiB added about 0.2 ms. A database made with the
/// default is rewritten with this size at its next open. The settlement node's, appending blocks
/// of about 230 KB, measured the same with 2 MiB and 4 MiB and four times the blocks with 512 KiB.
pub const SEGMENT_SIZE: usize = 4 << 20;

/// The file is rewritten when it is this many times the live data's size ...
pub const GARBAGE_RATIO: u64 = 4;
/// ... and at least this much larger (16 segments: a file is at least a few).
pub const MIN_GARBAGE: u64 = 64 << 20;

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// What [`open`] did, for its log line and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    /// The file's size and the live data's, before (the live data 0 where it was neither
    /// weighed nor copied).
    pub before: u64,
    pub live: u64,
    /// The file's size after, if it was rewritten.
    pub after: Option<u64>,
    /// Whether it was rewritten because it was made with sled's default segment size.
    pub resized: bool,
}

/// Opens the sequencer's database in `dir`, rewriting it first if most of its file is garbage
/// or it was made with sled's default segments.
pub fn open(dir: &Path) -> Result<(sled::Db, Compaction)> {
    open_with(dir, Some(MIN_GARBAGE))
}

/// Opens a database that keeps what it is given (the settlement node's blocks), rewriting it
/// first only if it was made with sled's default segments. Its live data is its whole history,
/// so it is not read through at every open to weigh its garbage, which stays a fraction of it.
pub fn open_history(dir: &Path) -> Result<(sled::Db, Compaction)> {
    open_with(dir, None)
}

/// `min_garbage`: how much more than the live data the file must be for a rewrite, if garbage
/// is a reason for one.
fn open_with(dir: &Path, min_garbage: Option<u64>) -> Result<(sled::Db, Compaction)> {
    // A data directory that names a file (or lies under one) failed deep in the first step
    // with only "Not a directory"; say which path is wrong, and touch nothing.
    if let Some(file) = dir.ancestors().find(|p| p.exists()).filter(|p| !p.is_dir()) {
        bail!("{} is not a directory", file.display());
    }
    recover(dir)?;
    let (db, segments) = open_sized(dir)?;
    let before = db.size_on_disk()?;
    let resize = segments != Segments::Ours;
    // A small file is not worth reading through, nor a history at every open (`None`); one
    // rewritten anyway has its live data counted by the copy.
    let weighed = min_garbage.filter(|&m| before >= m);
    let live = if weighed.is_some() { live_bytes(&db)? } else { 0 };
    let mut done = Compaction { before, live, after: None, resized: resize };
    let garbage =
        weighed.is_some_and(|m| before >= live.saturating_mul(GARBAGE_RATIO) && before >= live.saturating_add(m));
    if !garbage && !resize {
        return Ok((db, done));
    }
    let t0 = Instant::now();
    let (compact, marker) = (sibling(dir, ".compact"), sibling(dir, ".compacted"));
    match rewrite(&db, &compact) {
        Ok(copied) => done.live = copied,
        Err(e) => {
            // The database is as it was: go on with it (a full disk, say, is no reason not to
            // start).
            warn!(error = format!("{e:#}"), "the database could not be rewritten; going on with it as it is");
            remove(&compact).ok();
            done.resized = false;
            return Ok((db, done));
        }
    }
    drop(db);
    std::fs::File::create(&marker).and_then(|f| f.sync_all()).context("marking the rewrite complete")?;
    sync_parent(dir)?;
    recover(dir)?;
    let db = open_waiting(dir)?;
    done.after = Some(db.size_on_disk()?);
    info!(
        before_mb = before >> 20,
        live_mb = done.live >> 20,
        after_mb = done.after.unwrap_or(0) >> 20,
        seconds = t0.elapsed().as_secs_f64(),
        segment_size_kib = SEGMENT_SIZE >> 10,
        "{}",
        if resize { "database rewritten with larger segments" } else { "database rewritten without its garbage" }
    );
    Ok((db, done))
}

/// Finishes a rewrite that was complete (the marker exists), or undoes one that was not.
fn recover(dir: &Path) -> Result<()> {
    let (compact, old, marker) = (sibling(dir, ".compact"), sibling(dir, ".old"), sibling(dir, ".compacted"));
    if marker.exists() {
        if compact.exists() {
            if dir.exists() {
                std::fs::rename(dir, &old).context("moving the database aside")?;
            }
            std::fs::rename(&compact, dir).context("putting the rewritten database in place")?;
            sync_parent(dir)?;
        }
        std::fs::remove_file(&marker)?;
        sync_parent(dir)?;
    } else {
        remove(&compact).context("removing an unfinished rewrite")?;
    }
    // The database moved aside is removed only once another stands in its place.
    if !dir.exists() && old.exists() {
        std::fs::rename(&old, dir).context("putting the database back")?;
    } else {
        remove(&old).context("removing the database replaced")?;
    }
    Ok(())
}

/// Removes `path`, a directory or a file, if it is there.
fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `db`'s records into a fresh database in `to`, checks it and flushes it; the keys'
/// and values' bytes copied.
fn rewrite(db: &sled::Db, to: &Path) -> Result<u64> {
    remove(to).context("removing an unfinished rewrite")?;
    let fresh = config(to).open().context("opening the rewrite")?;
    let copied = copy(db, &fresh)?;
    if fresh.checksum()? != db.checksum()? {
        bail!("the rewritten database's checksum differs from the database's");
    }
    fresh.flush()?;
    Ok(copied)
}

/// Copies every tree of `from` into `to`, in writes of at most 16 384 records and about a
/// segment's bytes. Bounded by records alone, the settlement node's blocks of about 230 KB went
/// in writes of hundreds of megabytes, and the copy of 438 MiB of blocks made a file of 1 102 MiB;
/// bounded by a segment's bytes too, 613–631 MiB, in less time (BENCHMARKS.md). Returns the
/// keys' and values' bytes copied, as [`live_bytes`] counts them.
fn copy(from: &sled::Db, to: &sled::Db) -> Result<u64> {
    let mut total = 0;
    for name in from.tree_names() {
        let target = to.open_tree(&name)?;
        let mut w = sled::Batch::default();
        let (mut records, mut bytes) = (0, 0);
        for r in from.open_tree(&name)?.iter() {
            let (k, v) = r?;
            bytes += k.len() + v.len();
            total += (k.len() + v.len()) as u64;
            w.insert(k, v);
            records += 1;
            if records == 16_384 || bytes >= SEGMENT_SIZE {
                target.apply_batch(std::mem::take(&mut w))?;
                (records, bytes) = (0, 0);
            }
        }
        target.apply_batch(w)?;
    }
    Ok(total)
}

/// The keys' and values' bytes of every tree.
fn live_bytes(db: &sled::Db) -> Result<u64> {
    let mut n = 0;
    for name in db.tree_names() {
        for r in db.open_tree(name)?.iter() {
            let (k, v) = r?;
            n += (k.len() + v.len()) as u64;
        }
    }
    Ok(n)
}

/// The services' databases' sled configuration: [`SEGMENT_SIZE`].
fn config(dir: &Path) -> sled::Config {
    sled::Config::new().path(dir).segment_size(SEGMENT_SIZE)
}

/// The segment size a database was made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Segments {
    /// [`SEGMENT_SIZE`].
    Ours,
    /// sled's default, as every version before [`SEGMENT_SIZE`] made them.
    Default,
}

/// Opens `dir`, waiting a moment for a `Db` of it just dropped: sled's flusher thread lets go of
/// the file's lock shortly after. A new database gets [`SEGMENT_SIZE`]; one made with sled's
/// default segment size is opened with that.
pub(crate) fn open_waiting(dir: &Path) -> Result<sled::Db> {
    Ok(open_sized(dir)?.0)
}

fn open_sized(dir: &Path) -> Result<(sled::Db, Segments)> {
    for _ in 0..200 {
        // sled refuses to open a database with a segment size other than the one it was made
        // with (`Unsupported`, as it refuses other changes of its stored parameters).
        let opened = match config(dir).open() {
            Err(sled::Error::Unsupported(ours)) => match sled::Config::new().path(dir).open() {
                Ok(db) => Ok((db, Segments::Default)),
                Err(e @ sled::Error::Io(_)) => Err(e),
                Err(e) => bail!("opening {}: {ours}; with sled's defaults: {e}", dir.display()),
            },
            opened => opened.map(|db| (db, Segments::Ours)),
        };
        match opened {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(Duration::from_millis(10))
            }
            opened => return Ok(opened?),
        }
    }
    bail!("{} is locked by another process", dir.display())
}

fn sync_parent(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent).and_then(|f| f.sync_all()).context("syncing the data directory")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            for suffix in ["", ".compact", ".old", ".compacted"] {
                let p = sibling(&self.0, suffix);
                std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p)).ok();
            }
        }
    }

    fn dir(name: &str) -> Dir {
        let d = Dir(std::env::temp_dir().join(format!("rollup-compact-{name}-{}", std::process::id())));
        drop(Dir(d.0.clone()));
        d
    }

    /// A database holding `keys` small records under `tag`.
    fn fill(path: &Path, tag: u8, keys: u32) {
        let db = open_waiting(path).expect("open");
        for i in 0..keys {
            db.insert(i.to_be_bytes(), vec![tag; 100]).expect("insert");
        }
        db.flush().expect("flush");
    }

    fn contents(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
        let db = open_waiting(path).expect("open");
        db.iter().map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("read")).collect()
    }

    /// Fills `path` with records written and removed over and over, as the log's are, and a few
    /// kept: 800 in the default tree and one in another.
    fn churn(path: &Path) {
        let db = open_waiting(path).expect("open");
        let other = db.open_tree("other").expect("tree");
        other.insert(b"kept", b"in another tree").expect("insert");
        for round in 0..40u32 {
            for i in 0..2_000u32 {
                db.insert([round.to_be_bytes(), i.to_be_bytes()].concat(), vec![7u8; 200]).expect("insert");
            }
            for i in 0..2_000u32 {
                if i % 100 != 0 {
                    db.remove([round.to_be_bytes(), i.to_be_bytes()].concat()).expect("remove");
                }
            }
            db.flush().expect("flush");
        }
    }

    /// A data directory that is a file, or lies under one, is refused by the file's name, and the
    /// file is left as it was.
    #[test]
    fn a_data_directory_that_is_a_file_is_refused_by_name() {
        let d = dir("file");
        std::fs::write(&d.0, b"not a database").expect("write");
        let e = open_history(&d.0).expect_err("a file is no database directory");
        assert_eq!(format!("{e:#}"), format!("{} is not a directory", d.0.display()));
        // As a service opens it: its own folder under `--data-dir`.
        let e = open(&d.0.join("settlement")).expect_err("nor is a path under a file");
        assert_eq!(format!("{e:#}"), format!("{} is not a directory", d.0.display()));
        assert_eq!(std::fs::read(&d.0).expect("read"), b"not a database");
        for leftover in [".compact", ".old", ".compacted"] {
            assert!(!sibling(&d.0, leftover).exists(), "{leftover} made");
        }
    }

    /// A file mostly garbage is rewritten, the same records in it; one that is not is left.
    #[test]
    fn a_database_mostly_garbage_is_rewritten_with_the_same_records() {
        let d = dir("garbage");
        churn(&d.0);
        let before = contents(&d.0);
        assert_eq!(before.len(), 800);
        // A file is at least a segment: less garbage than one is not worth a rewrite.
        let min_garbage = SEGMENT_SIZE as u64;
        let (db, done) = open_with(&d.0, Some(min_garbage)).expect("opened");
        let after = done.after.expect("rewritten");
        assert!(!done.resized, "{done:?}");
        assert!(done.before >= done.live * GARBAGE_RATIO, "{done:?}");
        assert!(after < done.before / 2, "{done:?}");
        let other = db.open_tree("other").expect("tree").get(b"kept").expect("read");
        assert_eq!(other.as_deref(), Some(&b"in another tree"[..]));
        drop(db);
        assert_eq!(contents(&d.0), before);
        for leftover in [".compact", ".old", ".compacted"] {
            assert!(!sibling(&d.0, leftover).exists(), "{leftover} left");
        }
        // Not again: it is mostly live now.
        let (_, done) = open_with(&d.0, Some(min_garbage)).expect("opened");
        assert_eq!(done.after, None, "{done:?}");
    }

    /// A database made with sled's default segment size, as every version before
    /// [`SEGMENT_SIZE`] made them, is rewritten with [`SEGMENT_SIZE`] at its first open however
    /// little garbage it holds, the same records in it; then it opens as it is.
    #[test]
    fn a_database_with_default_segments_is_rewritten_with_ours() {
        let d = dir("segments");
        {
            let db = sled::open(&d.0).expect("open with sled's defaults");
            db.open_tree("other").expect("tree").insert(b"kept", b"in another tree").expect("insert");
            for i in 0..1_000u32 {
                db.insert(i.to_be_bytes(), vec![3u8; 100]).expect("insert");
            }
            db.flush().expect("flush");
        }
        let conf = |p: &Path| String::from_utf8_lossy(&std::fs::read(p.join("conf")).expect("conf")).into_owned();
        assert!(conf(&d.0).contains("segment_size: 524288"), "{}", conf(&d.0));
        let before = contents(&d.0);
        let (db, done) = open(&d.0).expect("opened");
        assert!(done.resized && done.after.is_some(), "{done:?}");
        assert!(conf(&d.0).contains(&format!("segment_size: {SEGMENT_SIZE}")), "{}", conf(&d.0));
        let other = db.open_tree("other").expect("tree").get(b"kept").expect("read");
        assert_eq!(other.as_deref(), Some(&b"in another tree"[..]));
        drop(db);
        assert_eq!(contents(&d.0), before);
        let (_, done) = open(&d.0).expect("opened");
        assert!(!done.resized && done.after.is_none(), "{done:?}");
        for leftover in [".compact", ".old", ".compacted"] {
            assert!(!sibling(&d.0, leftover).exists(), "{leftover} left");
        }
    }

    /// A database that keeps its history (the settlement node's) is rewritten for sled's default
    /// segments, the same records in it, but not for its garbage, and is not read through to
    /// weigh it: the same file mostly garbage is left as it is.
    #[test]
    fn a_history_database_is_rewritten_for_its_segments_only() {
        let d = dir("history");
        churn(&d.0);
        let before = contents(&d.0);
        let (db, done) = open_history(&d.0).expect("opened");
        assert_eq!((done.live, done.after, done.resized), (0, None, false), "{done:?}");
        drop(db);
        assert_eq!(contents(&d.0), before);
        // What the sequencer's open, weighing it, would do to the same file.
        let (_, weighed) = open_with(&d.0, Some(SEGMENT_SIZE as u64)).expect("opened");
        assert!(weighed.after.is_some(), "{weighed:?}");

        let d = dir("history-segments");
        {
            let db = sled::open(&d.0).expect("open with sled's defaults");
            for h in 0..64u64 {
                db.insert(h.to_be_bytes(), vec![5u8; 200_000]).expect("insert");
            }
            db.flush().expect("flush");
        }
        let before = contents(&d.0);
        let (db, done) = open_history(&d.0).expect("opened");
        assert!(done.resized && done.after.is_some(), "{done:?}");
        assert_eq!(done.live, 64 * (8 + 200_000), "{done:?}");
        drop(db);
        assert_eq!(contents(&d.0), before);
        let (_, done) = open_history(&d.0).expect("opened");
        assert_eq!((done.live, done.after, done.resized), (0, None, false), "{done:?}");
    }

    /// Whatever step a rewrite was killed at, the open finds one whole database: the rewrite if
    /// it was marked complete, the database before it if not.
    #[test]
    fn a_rewrite_killed_at_any_step_is_finished_or_undone() {
        let d = dir("killed");
        let (compact, old, marker) = (sibling(&d.0, ".compact"), sibling(&d.0, ".old"), sibling(&d.0, ".compacted"));
        let tagged = |tag: u8| (0..3u32).map(|i| (i.to_be_bytes().to_vec(), vec![tag; 100])).collect::<Vec<_>>();
        // (the database, the rewrite, the database moved aside, marked complete) → what is kept
        let cases = [
            ((true, true, false, false), 1), // killed writing the rewrite
            ((true, true, false, true), 2),  // marked, nothing moved
            ((false, true, true, true), 2),  // moved aside, the rewrite not yet in place
            ((true, false, true, true), 2),  // in place, the marker and the old one left
            ((true, false, true, false), 2), // in place, the old one left
            ((false, false, true, true), 1), // only the one moved aside (not by a rewrite): put back
        ];
        for ((live, rewrite, aside, marked), kept) in cases {
            drop(Dir(d.0.clone()));
            // Tag 1 is the database before the rewrite, tag 2 the rewrite.
            match (live, aside) {
                (true, true) => {
                    fill(&d.0, 2, 3);
                    fill(&old, 1, 3)
                }
                (true, false) => fill(&d.0, 1, 3),
                (false, true) => fill(&old, 1, 3),
                (false, false) => {}
            }
            if rewrite {
                fill(&compact, 2, 3);
            }
            if marked {
                std::fs::File::create(&marker).expect("marker");
            }
            recover(&d.0).expect("recovered");
            assert_eq!(contents(&d.0), tagged(kept), "{:?}", (live, rewrite, aside, marked));
            for leftover in [&compact, &old, &marker] {
                assert!(!leftover.exists(), "{leftover:?} left in {:?}", (live, rewrite, aside, marked));
            }
        }
    }
}
