//! The persistent autotuning cache: one JSON record per line in `<dir>/tune.jsonl`.
//!
//! The tuner appends a [`Record`] per measured candidate ([`RecordKind::Timing`]) and one per
//! decided kernel ([`RecordKind::Winner`]); a later build reads the winners back instead of
//! tuning again. Every record names the format and its version ([`FORMAT`], [`VERSION`]), the
//! device and compiler it was measured with ([`Scope`]) and a checksum of the template's
//! candidate set, so a record is only used where it is still meaningful.
//!
//! Guarantees:
//!
//! - **Appends are whole lines.** [`TuneCache::append`] takes an exclusive lock on
//!   `<dir>/tune.lock` and writes all its lines with one `write_all` of one buffer to a file
//!   opened in append mode, so concurrent writers (threads or processes) never interleave
//!   within a line.
//! - **Loading never fails on content.** [`TuneCache::load`] reads any bytes without panicking:
//!   lines that are not records (including non-UTF-8 ones) are counted as corrupt, a cut-off
//!   last line (a writer that crashed mid-write) as truncated, records of another format
//!   version or of another device or compiler are set aside and counted ([`Skipped`]); only an
//!   I/O error on the file itself is an error. A missing file is an empty cache.
//! - **A cut-off line never swallows new records.** An append to a file that does not end with
//!   a newline first terminates the cut-off line, so the new records start on their own line.
//! - **Compaction is atomic.** [`TuneCache::compact`] writes the cleaned file next to the old
//!   one, syncs it and renames it over the old one under the same lock, so a reader sees
//!   either the old or the new file, and no append is lost. Records of other devices and
//!   compilers are kept: they belong to other machines sharing the directory.

use crate::template::Config;
use crate::CodegenError;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Format tag written in every record.
pub const FORMAT: &str = "mmada-tune";
/// Format version written in every record; records of another version are ignored.
pub const VERSION: u32 = 1;
/// The cache file inside the directory.
pub const FILE_NAME: &str = "tune.jsonl";
/// The lock file inside the directory (a separate file, so compaction's rename keeps the lock).
const LOCK_FILE_NAME: &str = "tune.lock";

/// What a record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// The measurement of one candidate configuration.
    Timing,
    /// The configuration chosen for a kernel, with its recheck against the default.
    Winner,
}

/// How a measured candidate fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Measured to the end.
    Ok,
    /// Stopped early: clearly slower than the best so far.
    EarlyStop,
    /// Ran but failed the correctness gate.
    Wrong,
    /// Did not compile or did not run.
    Failed,
}

/// One line of the cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// Timing or winner.
    pub kind: RecordKind,
    /// The kernel's tune key, e.g. `elementwise:3fa2c1d09b7e:f32[1024,1024]`.
    pub key: String,
    /// The template key, e.g. `elementwise`.
    pub template: String,
    /// Checksum (hex) of the template's candidate set the record was made with.
    pub candidates: String,
    /// The device, e.g. `cpu:znver4:1a2b3c4d`.
    pub target: String,
    /// The compiler version, e.g. `mmada 0.1.0 llvm 22.1.0`.
    pub compiler: String,
    /// The configuration measured (timing) or chosen (winner).
    pub config: Config,
    /// Timing: median of `samples`; winner: the winner's median in the recheck (seconds).
    pub median_s: f64,
    /// The measured times, in seconds.
    pub samples: Vec<f64>,
    /// How the measurement went.
    pub status: Status,
    /// Winner: the default candidate's median in the recheck (seconds).
    #[serde(default)]
    pub default_s: Option<f64>,
    /// When the record was made (seconds since the Unix epoch).
    pub unix_time: u64,
    /// Winner: the search stopped at its budget before its candidates ran out. `compile`
    /// uses such a winner (it was rechecked against the default); `tune` searches the key
    /// again.
    #[serde(default)]
    pub partial: bool,
}

impl Record {
    /// A record with [`FORMAT`]/[`VERSION`] filled, `median_s` the median of `samples` (0.0 if
    /// empty), no `default_s` and `unix_time` now.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: RecordKind,
        scope: &Scope,
        template: &str,
        key: &str,
        candidates: &str,
        config: Config,
        samples: Vec<f64>,
        status: Status,
    ) -> Record {
        Record {
            format: FORMAT.to_string(),
            version: VERSION,
            kind,
            key: key.to_string(),
            template: template.to_string(),
            candidates: candidates.to_string(),
            target: scope.target.clone(),
            compiler: scope.compiler.clone(),
            config,
            median_s: median(&samples),
            samples,
            status,
            default_s: None,
            partial: false,
            unix_time: now_unix(),
        }
    }

    /// Whether every time in the record is finite (JSON cannot carry NaN or infinities).
    fn times_finite(&self) -> bool {
        self.median_s.is_finite()
            && self.samples.iter().all(|s| s.is_finite())
            && self.default_s.is_none_or(f64::is_finite)
    }
}

/// The median of `samples` (the mean of the middle two for an even count; 0.0 if empty).
fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Which records apply: the device (target) and the compiler version in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The device, e.g. `cpu:znver4:1a2b3c4d`.
    pub target: String,
    /// The compiler version, e.g. `mmada 0.1.0 llvm 22.1.0`.
    pub compiler: String,
}

/// Why lines were ignored when loading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Lines that are not records (not UTF-8, not JSON, or missing fields).
    pub corrupt: usize,
    /// A last line without a trailing newline that does not parse (a writer cut off).
    pub truncated: usize,
    /// Records of another format or format version.
    pub foreign_version: usize,
    /// Records of another device or compiler.
    pub foreign_scope: usize,
}

impl Skipped {
    /// All ignored lines.
    pub fn total(&self) -> usize {
        self.corrupt + self.truncated + self.foreign_version + self.foreign_scope
    }
}

/// The records of one scope, in file order.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The records of the scope, in file order (oldest append first).
    pub records: Vec<Record>,
    /// What was ignored.
    pub skipped: Skipped,
}

impl Loaded {
    /// One warning line describing what was skipped (None when nothing was), naming the file,
    /// e.g. `tune cache /x/tune.jsonl: ignored 3 of 10 lines (1 corrupt, 1 cut off, 1 of
    /// another format version, 0 of another device or compiler)`.
    pub fn warning(&self, file: &Path) -> Option<String> {
        let s = &self.skipped;
        let ignored = s.total();
        if ignored == 0 {
            return None;
        }
        Some(format!(
            "tune cache {}: ignored {} of {} lines ({} corrupt, {} cut off, {} of another format \
             version, {} of another device or compiler)",
            file.display(),
            ignored,
            ignored + self.records.len(),
            s.corrupt,
            s.truncated,
            s.foreign_version,
            s.foreign_scope
        ))
    }

    /// The newest Winner record for `key` made with candidate set `candidates` (newest by
    /// `unix_time`; of equal times, the one later in the file).
    pub fn winner(&self, key: &str, candidates: &str) -> Option<&Record> {
        let mut best: Option<&Record> = None;
        for r in &self.records {
            if r.kind == RecordKind::Winner
                && r.key == key
                && r.candidates == candidates
                && best.is_none_or(|b| r.unix_time >= b.unix_time)
            {
                best = Some(r);
            }
        }
        best
    }

    /// The Timing records of `key` with candidate set `candidates`, in file order.
    pub fn timings(&self, key: &str, candidates: &str) -> Vec<&Record> {
        self.records
            .iter()
            .filter(|r| r.kind == RecordKind::Timing && r.key == key && r.candidates == candidates)
            .collect()
    }

    /// Whether `key` with `candidates` has a Winner (i.e. it need not be tuned again).
    pub fn is_tuned(&self, key: &str, candidates: &str) -> bool {
        self.winner(key, candidates).is_some()
    }
}

/// What one line of the file is.
enum Line {
    /// A record of the current format version.
    Record(Box<Record>),
    /// Not a record.
    Corrupt,
    /// The unterminated last line, not a record.
    Truncated,
    /// A record of another format or an older version.
    ForeignVersion,
    /// A record of this format and a newer version (kept by compaction: a newer binary
    /// sharing the directory wrote it).
    NewerVersion,
}

/// Classifies one line (without its newline); `terminated` is false for a last line with no
/// newline after it.
fn classify(line: &[u8], terminated: bool) -> Line {
    let broken = if terminated {
        Line::Corrupt
    } else {
        Line::Truncated
    };
    let Ok(text) = std::str::from_utf8(line) else {
        return broken;
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return broken;
    };
    let (Some(format), Some(version)) = (
        value.get("format").and_then(serde_json::Value::as_str),
        value.get("version").and_then(serde_json::Value::as_u64),
    ) else {
        return broken;
    };
    if format == FORMAT && version > u64::from(VERSION) {
        return Line::NewerVersion;
    }
    if format != FORMAT || version != u64::from(VERSION) {
        return Line::ForeignVersion;
    }
    match serde_json::from_value::<Record>(value) {
        Ok(record) => Line::Record(Box::new(record)),
        Err(_) => broken,
    }
}

/// The lines of `bytes` with whether each is followed by a newline; empty lines are left out.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (&[u8], bool)> {
    let ends_with_newline = bytes.last() == Some(&b'\n');
    let mut parts: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // `split` yields one part after the last newline: empty when the file ends with one.
    let last = parts.pop();
    let unterminated = if ends_with_newline { None } else { last };
    parts
        .into_iter()
        .map(|p| (p, true))
        .chain(unterminated.map(|p| (p, false)))
        .filter(|(p, _)| !p.iter().all(u8::is_ascii_whitespace))
}

/// A persistent autotuning cache in one directory.
#[derive(Clone, Debug)]
pub struct TuneCache {
    dir: PathBuf,
}

impl TuneCache {
    /// `$MMADA_TUNE_CACHE` when set, else `$XDG_CACHE_HOME/mmada/tune`, else
    /// `$HOME/.cache/mmada/tune`, else `.mmada-tune` in the current directory (variables set
    /// to the empty string count as unset).
    pub fn default_dir() -> PathBuf {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = var("MMADA_TUNE_CACHE") {
            return PathBuf::from(dir);
        }
        if let Some(cache) = var("XDG_CACHE_HOME") {
            return PathBuf::from(cache).join("mmada").join("tune");
        }
        if let Some(home) = var("HOME") {
            return PathBuf::from(home)
                .join(".cache")
                .join("mmada")
                .join("tune");
        }
        PathBuf::from(".mmada-tune")
    }

    /// Opens (creating the directory) the cache in `dir`.
    pub fn open(dir: &Path) -> Result<TuneCache, CodegenError> {
        std::fs::create_dir_all(dir).map_err(|e| CodegenError::io(dir, e))?;
        Ok(TuneCache {
            dir: dir.to_path_buf(),
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache file, `dir/`[`FILE_NAME`].
    pub fn file(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The lock file, `dir/tune.lock`.
    fn lock_file(&self) -> PathBuf {
        self.dir.join(LOCK_FILE_NAME)
    }

    /// Reads every record of `scope` (a missing file is an empty cache). Lines that are not
    /// JSON records are `corrupt`; a last line without a trailing newline that does not parse
    /// is `truncated`; a record whose format or version differs is `foreign_version` (checked
    /// before the other fields, so a future version counts as such and not as corrupt); a
    /// record whose target or compiler differs from `scope` is `foreign_scope`. Blank lines are
    /// not counted. Never panics on any byte content.
    pub fn load(&self, scope: &Scope) -> Result<Loaded, CodegenError> {
        let file = self.file();
        let bytes = read_or_empty(&file)?;
        let mut loaded = Loaded::default();
        for (line, terminated) in lines(&bytes) {
            match classify(line, terminated) {
                Line::Record(r) if r.target == scope.target && r.compiler == scope.compiler => {
                    loaded.records.push(*r)
                }
                Line::Record(_) => loaded.skipped.foreign_scope += 1,
                Line::Corrupt => loaded.skipped.corrupt += 1,
                Line::Truncated => loaded.skipped.truncated += 1,
                Line::ForeignVersion | Line::NewerVersion => loaded.skipped.foreign_version += 1,
            }
        }
        Ok(loaded)
    }

    /// Appends records: under the exclusive lock on `dir/tune.lock`, opens the file with
    /// append+create, writes all lines in one `write_all` of one buffer (each line ends with
    /// a newline), flushes and unlocks. If the file does not end with a newline (a cut-off line
    /// from a crashed writer), a newline goes first so the new records start on their own line.
    /// Safe with concurrent writers in other threads and processes. A record with a
    /// non-finite time (which JSON cannot carry) is refused before anything is written.
    pub fn append(&self, records: &[Record]) -> Result<(), CodegenError> {
        let path = self.file();
        if let Some(bad) = records.iter().find(|r| !r.times_finite()) {
            return Err(CodegenError::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "refusing to write a tune record with a non-finite time (key {}, {})",
                        bad.key,
                        bad.config.describe()
                    ),
                ),
            ));
        }
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(|e| CodegenError::io(&path, e.into()))?;
            buf.push(b'\n');
        }
        let lock = self.lock()?;
        let result = (|| {
            let mut file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)?;
            if file.metadata()?.len() > 0 {
                let mut last = [0u8; 1];
                file.seek(SeekFrom::End(-1))?;
                file.read_exact(&mut last)?;
                if last[0] != b'\n' {
                    buf.insert(0, b'\n');
                }
            }
            file.write_all(&buf)?;
            file.flush()
        })()
        .map_err(|e| CodegenError::io(&path, e));
        let unlocked = self.unlock(lock);
        result.and(unlocked)
    }

    /// Rewrites the file without corrupt, truncated and foreign-version lines (records of other
    /// devices and compilers are kept: they belong to other machines), atomically: under the
    /// lock, writes a temporary file in the same directory, syncs it, renames it over the file
    /// and syncs the directory. Returns the (kept, dropped) line counts (blank lines are
    /// removed without being counted). A missing file stays missing: `(0, 0)`.
    pub fn compact(&self) -> Result<(usize, usize), CodegenError> {
        let lock = self.lock()?;
        let result = self.compact_locked();
        let unlocked = self.unlock(lock);
        let counts = result?;
        unlocked?;
        Ok(counts)
    }

    /// [`TuneCache::compact`] with the lock held.
    fn compact_locked(&self) -> Result<(usize, usize), CodegenError> {
        let path = self.file();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(CodegenError::io(&path, e)),
        };
        let mut kept_bytes = Vec::with_capacity(bytes.len() + 1);
        let (mut kept, mut dropped) = (0, 0);
        for (line, terminated) in lines(&bytes) {
            match classify(line, terminated) {
                Line::Record(_) | Line::NewerVersion => {
                    kept += 1;
                    kept_bytes.extend_from_slice(line);
                    kept_bytes.push(b'\n');
                }
                Line::Corrupt | Line::Truncated | Line::ForeignVersion => dropped += 1,
            }
        }
        let permissions = std::fs::metadata(&path)
            .map_err(|e| CodegenError::io(&path, e))?
            .permissions();
        let mut tmp = tempfile::Builder::new()
            .prefix(".tune.")
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .map_err(|e| CodegenError::io(&self.dir, e))?;
        let tmp_path = tmp.path().to_path_buf();
        (|| {
            tmp.write_all(&kept_bytes)?;
            tmp.as_file().sync_all()?;
            std::fs::set_permissions(tmp.path(), permissions)
        })()
        .map_err(|e| CodegenError::io(&tmp_path, e))?;
        tmp.persist(&path)
            .map_err(|e| CodegenError::io(&path, e.error))?;
        sync_dir(&self.dir)?;
        Ok((kept, dropped))
    }

    /// Takes the exclusive lock on `dir/tune.lock` (blocking until it is free; `File::lock`,
    /// Rust 1.89: the workspace's `rust-version`).
    fn lock(&self) -> Result<File, CodegenError> {
        let path = self.lock_file();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| CodegenError::io(&path, e))?;
        file.lock().map_err(|e| CodegenError::io(&path, e))?;
        Ok(file)
    }

    /// Releases the lock taken by [`TuneCache::lock`].
    fn unlock(&self, lock: File) -> Result<(), CodegenError> {
        lock.unlock()
            .map_err(|e| CodegenError::io(self.lock_file(), e))
    }
}

/// The bytes of `path`, or none when it does not exist.
fn read_or_empty(path: &Path) -> Result<Vec<u8>, CodegenError> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(CodegenError::io(path, e)),
    }
}

/// Makes a rename in `dir` durable (Unix; elsewhere directories cannot be opened for syncing).
fn sync_dir(dir: &Path) -> Result<(), CodegenError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| CodegenError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    fn scope() -> Scope {
        Scope {
            target: "cpu:znver4:1a2b3c4d".to_string(),
            compiler: "mmada 0.1.0 llvm 22.1.0".to_string(),
        }
    }

    fn config(pairs: &[(&str, u64)]) -> Config {
        Config(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    fn timing(key: &str, block: u64, samples: Vec<f64>) -> Record {
        Record::new(
            RecordKind::Timing,
            &scope(),
            "elementwise",
            key,
            "c0ffee",
            config(&[("block", block)]),
            samples,
            Status::Ok,
        )
    }

    fn winner(key: &str, candidates: &str, block: u64, unix_time: u64) -> Record {
        let mut r = Record::new(
            RecordKind::Winner,
            &scope(),
            "elementwise",
            key,
            candidates,
            config(&[("block", block)]),
            vec![1e-3, 2e-3, 3e-3],
            Status::Ok,
        );
        r.default_s = Some(4e-3);
        r.unix_time = unix_time;
        r
    }

    fn line(r: &Record) -> String {
        format!("{}\n", serde_json::to_string(r).unwrap())
    }

    /// Valid lines mixed with one of each kind of garbage, ending in a cut-off line; returns the
    /// two valid records of the scope and the two of other scopes.
    fn write_garbage(cache: &TuneCache) -> (Vec<Record>, Vec<Record>) {
        let good = vec![timing("k", 128, vec![1.0]), winner("k", "c0ffee", 128, 5)];
        let mut other_target = timing("k", 64, vec![2.0]);
        other_target.target = "cuda:sm_90:deadbeef".to_string();
        let mut other_compiler = timing("k", 32, vec![3.0]);
        other_compiler.compiler = "mmada 0.0.9 llvm 21.0.0".to_string();
        // Deterministic "random" bytes: never a newline, always invalid UTF-8.
        let mut state: u32 = 0x1234_5678;
        let mut noise = vec![0xff, 0xfe, 0xc3, 0x28];
        for _ in 0..200 {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let b = (state >> 24) as u8;
            noise.push(if b == b'\n' { 0x80 } else { b });
        }
        noise.push(b'\n');
        let full = line(&good[0]);
        let cut = &full[..full.len() / 2];
        let mut bytes = Vec::new();
        bytes.extend_from_slice(line(&good[0]).as_bytes());
        bytes.extend_from_slice(&noise);
        bytes.extend_from_slice(
            b"{\"format\":\"mmada-tune\",\"version\":99,\"shape\":[1,2],\"nested\":{\"x\":null}}\n",
        );
        bytes.extend_from_slice(line(&other_target).as_bytes());
        bytes.extend_from_slice(line(&good[1]).as_bytes());
        bytes.extend_from_slice(line(&other_compiler).as_bytes());
        bytes.extend_from_slice(cut.as_bytes());
        std::fs::write(cache.file(), bytes).unwrap();
        (good, vec![other_target, other_compiler])
    }

    #[test]
    fn round_trip_and_winner() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TuneCache::open(&dir.path().join("nested").join("cache")).unwrap();
        assert!(cache.dir().is_dir());
        assert_eq!(cache.file(), cache.dir().join(FILE_NAME));
        // An empty (missing) cache.
        let empty = cache.load(&scope()).unwrap();
        assert!(empty.records.is_empty());
        assert_eq!(empty.skipped, Skipped::default());
        assert_eq!(empty.warning(&cache.file()), None);

        let t = timing("k", 256, vec![3.0, 1.0, 2.0, 10.0]);
        assert_eq!(t.median_s, 2.5);
        assert_eq!(t.format, FORMAT);
        assert_eq!(t.version, VERSION);
        assert!(t.unix_time > 1_600_000_000);
        let records = vec![
            t,
            winner("k", "c0ffee", 128, 100),
            winner("k", "c0ffee", 64, 200),
        ];
        cache.append(&records[..1]).unwrap();
        cache.append(&records[1..]).unwrap();
        let loaded = cache.load(&scope()).unwrap();
        assert_eq!(loaded.records, records);
        assert_eq!(loaded.skipped.total(), 0);
        assert_eq!(loaded.warning(&cache.file()), None);

        // Newest by time, not by position; other keys and candidate sets do not count.
        cache
            .append(&[
                winner("k", "c0ffee", 32, 150),
                winner("other", "c0ffee", 16, 999),
                winner("k", "beef", 8, 999),
            ])
            .unwrap();
        let loaded = cache.load(&scope()).unwrap();
        assert_eq!(loaded.records.len(), 6);
        let w = loaded.winner("k", "c0ffee").unwrap();
        assert_eq!(w.config, config(&[("block", 64)]));
        assert_eq!(w.unix_time, 200);
        assert_eq!(w.default_s, Some(4e-3));
        assert_eq!(
            loaded.winner("k", "beef").unwrap().config,
            config(&[("block", 8)])
        );
        assert!(loaded.winner("k", "nope").is_none());
        assert!(loaded.winner("missing", "c0ffee").is_none());
        assert!(loaded.is_tuned("k", "c0ffee"));
        assert!(!loaded.is_tuned("k", "nope"));
        let timings = loaded.timings("k", "c0ffee");
        assert_eq!(timings.len(), 1);
        assert_eq!(timings[0].config, config(&[("block", 256)]));
        assert!(loaded.timings("k", "beef").is_empty());

        // Equal times: the later line wins.
        cache.append(&[winner("k", "c0ffee", 512, 200)]).unwrap();
        let loaded = cache.load(&scope()).unwrap();
        assert_eq!(
            loaded.winner("k", "c0ffee").unwrap().config,
            config(&[("block", 512)])
        );
    }

    #[test]
    fn median_of_samples() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[5.0]), 5.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn garbage_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TuneCache::open(dir.path()).unwrap();
        let (good, _) = write_garbage(&cache);
        let loaded = cache.load(&scope()).unwrap();
        assert_eq!(loaded.records, good);
        assert_eq!(
            loaded.skipped,
            Skipped {
                corrupt: 1,
                truncated: 1,
                foreign_version: 1,
                foreign_scope: 2
            }
        );
        assert_eq!(loaded.skipped.total(), 5);
        let warning = loaded.warning(&cache.file()).unwrap();
        assert!(
            warning.contains(&cache.file().display().to_string()),
            "{warning}"
        );
        assert!(warning.contains("ignored 5 of 7 lines"), "{warning}");
        assert!(warning.contains("1 corrupt, 1 cut off"), "{warning}");

        // The append terminates the cut-off line: it becomes one corrupt line, and the new
        // record is intact on its own line.
        let new = timing("k2", 1024, vec![0.5, 0.25]);
        cache.append(std::slice::from_ref(&new)).unwrap();
        let loaded = cache.load(&scope()).unwrap();
        let mut expected = good.clone();
        expected.push(new);
        assert_eq!(loaded.records, expected);
        assert_eq!(
            loaded.skipped,
            Skipped {
                corrupt: 2,
                truncated: 0,
                foreign_version: 1,
                foreign_scope: 2
            }
        );
        let bytes = std::fs::read(cache.file()).unwrap();
        assert_eq!(bytes.last(), Some(&b'\n'));
    }

    #[test]
    fn a_future_version_with_other_fields_is_foreign_not_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TuneCache::open(dir.path()).unwrap();
        std::fs::write(
            cache.file(),
            "{\"format\":\"mmada-tune\",\"version\":2,\"entirely\":\"different\"}\n\
             {\"format\":\"other-tool\",\"version\":1}\n\
             {\"format\":\"mmada-tune\",\"version\":1,\"kind\":\"timing\"}\n\
             [1,2,3]\n\
             \n\
             {\"version\":1}\n",
        )
        .unwrap();
        let loaded = cache.load(&scope()).unwrap();
        assert!(loaded.records.is_empty());
        assert_eq!(
            loaded.skipped,
            Skipped {
                corrupt: 3,
                truncated: 0,
                foreign_version: 2,
                foreign_scope: 0
            }
        );
    }

    #[test]
    fn an_intact_unterminated_last_line_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TuneCache::open(dir.path()).unwrap();
        let r = timing("k", 8, vec![1.0]);
        std::fs::write(cache.file(), line(&r).trim_end()).unwrap();
        let loaded = cache.load(&scope()).unwrap();
        assert_eq!(loaded.records, vec![r.clone()]);
        assert_eq!(loaded.skipped.total(), 0);
        // Appending after it keeps both records intact.
        cache.append(std::slice::from_ref(&r)).unwrap();
        let loaded = cache.load(&scope()).unwrap();
        assert_eq!(loaded.records, vec![r.clone(), r]);
        assert_eq!(loaded.skipped.total(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TuneCache::open(dir.path()).unwrap();
        let valid = line(&timing("k", 8, vec![1.0]));
        let mut state: u64 = 42;
        for round in 0..200 {
            let mut bytes = Vec::new();
            for _ in 0..(round % 13) {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                match state >> 61 {
                    0 => bytes.extend_from_slice(valid.as_bytes()),
                    1 => bytes.push(b'\n'),
                    2 => {
                        let cut = (state >> 8) as usize % valid.len();
                        bytes.extend_from_slice(&valid.as_bytes()[..cut]);
                    }
                    _ => bytes.extend((0..(state >> 40) % 40).map(|i| (state >> (i % 56)) as u8)),
                }
            }
            std::fs::write(cache.file(), &bytes).unwrap();
            let loaded = cache.load(&scope()).unwrap();
            let nonblank = bytes
                .split(|&b| b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .count();
            assert_eq!(loaded.records.len() + loaded.skipped.total(), nonblank);
            assert!(loaded.skipped.truncated <= 1);
            cache.compact().unwrap();
            let after = cache.load(&scope()).unwrap();
            assert_eq!(after.records, loaded.records);
            assert_eq!(after.skipped.total(), 0);
        }
    }

    #[test]
    fn concurrent_writers_do_not_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TuneCache::open(dir.path()).unwrap();
        let barrier = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (cache, barrier) = (&cache, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    for i in 0..50u64 {
                        let mut r = timing(
                            // A long key makes each line large, so interleaving would show.
                            &format!("thread{t}:{}", "x".repeat(4096)),
                            i,
                            vec![t as f64, i as f64],
                        );
                        r.config = config(&[("thread", t), ("i", i)]);
                        cache.append(&[r]).unwrap();
                    }
                });
            }
        });
        let loaded = cache.load(&scope()).unwrap();
        assert_eq!(loaded.records.len(), 200);
        assert_eq!(loaded.skipped.total(), 0);
        let pairs: HashSet<(u64, u64)> = loaded
            .records
            .iter()
            .map(|r| (r.config.get("thread"), r.config.get("i")))
            .collect();
        assert_eq!(pairs.len(), 200);
        for t in 0..4 {
            for i in 0..50 {
                assert!(pairs.contains(&(t, i)), "missing ({t}, {i})");
            }
        }
        // Each thread's records are in its own order.
        for t in 0..4 {
            let order: Vec<u64> = loaded
                .records
                .iter()
                .filter(|r| r.config.get("thread") == t)
                .map(|r| r.config.get("i"))
                .collect();
            assert_eq!(order, (0..50).collect::<Vec<_>>());
        }
    }

    #[test]
    fn compact_drops_garbage_and_keeps_other_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TuneCache::open(dir.path()).unwrap();
        let (good, foreign) = write_garbage(&cache);
        let (kept, dropped) = cache.compact().unwrap();
        // Kept: the 2 good records, 2 of other scopes and the newer version's line (a newer
        // binary sharing the directory wrote it); dropped: corrupt and cut-off lines.
        assert_eq!((kept, dropped), (5, 2));
        let loaded = cache.load(&scope()).unwrap();
        assert_eq!(loaded.records, good);
        assert_eq!(
            loaded.skipped,
            Skipped {
                corrupt: 0,
                truncated: 0,
                foreign_version: 1,
                foreign_scope: 2
            }
        );
        // The other scopes' records survive intact.
        let other = Scope {
            target: foreign[0].target.clone(),
            compiler: foreign[0].compiler.clone(),
        };
        assert_eq!(
            cache.load(&other).unwrap().records,
            vec![foreign[0].clone()]
        );
        // No temporary file is left behind.
        let mut names: Vec<String> = std::fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![FILE_NAME.to_string(), LOCK_FILE_NAME.to_string()]
        );
        // Compacting again changes nothing; appends still work after the rename.
        assert_eq!(cache.compact().unwrap(), (5, 0));
        let new = timing("k3", 2, vec![1.0]);
        cache.append(std::slice::from_ref(&new)).unwrap();
        let loaded = cache.load(&scope()).unwrap();
        assert_eq!(loaded.records.last(), Some(&new));
        assert_eq!(loaded.records.len(), 3);
        // A missing file stays missing.
        let empty = TuneCache::open(&dir.path().join("empty")).unwrap();
        assert_eq!(empty.compact().unwrap(), (0, 0));
        assert!(!empty.file().exists());
    }

    #[test]
    fn compact_races_with_appends_without_losing_records() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TuneCache::open(dir.path()).unwrap();
        let writing = std::sync::atomic::AtomicUsize::new(4);
        let compactions = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (cache, writing) = (&cache, &writing);
                s.spawn(move || {
                    for i in 0..200u64 {
                        let mut r = timing("k", i, vec![1.0]);
                        r.config = config(&[("thread", t), ("i", i)]);
                        cache.append(&[r]).unwrap();
                    }
                    writing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
            let (cache, writing, compactions) = (&cache, &writing, &compactions);
            s.spawn(move || {
                // Compact for as long as anyone writes: a compaction that read the file
                // before an append and renamed after it would lose that record.
                while writing.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                    cache.compact().unwrap();
                    compactions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        });
        assert!(compactions.into_inner() > 0);
        let loaded = cache.load(&scope()).unwrap();
        assert_eq!(loaded.records.len(), 800);
        assert_eq!(loaded.skipped.total(), 0);
    }

    #[test]
    fn non_finite_times_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TuneCache::open(dir.path()).unwrap();
        let ok = timing("k", 1, vec![1.0]);
        let bad = timing("k", 2, vec![f64::NAN]);
        let err = cache.append(&[ok, bad]).unwrap_err();
        assert!(matches!(err, CodegenError::Io { .. }), "{err}");
        assert!(!cache.file().exists(), "nothing may be written");
    }

    #[test]
    fn default_dir_honours_the_environment() {
        let saved: Vec<(&str, Option<std::ffi::OsString>)> = ["MMADA_TUNE_CACHE", "XDG_CACHE_HOME"]
            .into_iter()
            .map(|k| (k, std::env::var_os(k)))
            .collect();
        std::env::set_var("MMADA_TUNE_CACHE", "/somewhere/tune-here");
        std::env::set_var("XDG_CACHE_HOME", "/xdg");
        let explicit = TuneCache::default_dir();
        std::env::remove_var("MMADA_TUNE_CACHE");
        let xdg = TuneCache::default_dir();
        std::env::set_var("MMADA_TUNE_CACHE", "");
        let empty_is_unset = TuneCache::default_dir();
        for (k, v) in saved {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
        assert_eq!(explicit, PathBuf::from("/somewhere/tune-here"));
        assert_eq!(xdg, PathBuf::from("/xdg/mmada/tune"));
        assert_eq!(empty_is_unset, PathBuf::from("/xdg/mmada/tune"));
    }
}
