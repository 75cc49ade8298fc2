//! Corrupt files on disk: a damaged data directory gives an error that says what is corrupt —
//! never a panic, never a silently wrong read.
#![cfg(feature = "rocksdb")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use meridian_storage::{Engine, Error, Mvcc, RocksEngine, WriteBatch, mvcc};
use meridian_truetime::Timestamp;

fn files_with(dir: &Path, pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&pred))
        .collect();
    out.sort();
    out
}

/// Writes 2,000 versions and flushes them into SST files, then closes the engine.
fn populate(dir: &Path) {
    let engine = RocksEngine::open(dir, &Default::default()).unwrap();
    let mut b = WriteBatch::new();
    for i in 0..2_000u32 {
        mvcc::put(&mut b, format!("key/{i:05}").as_bytes(), Timestamp::from_nanos(10), &[i as u8; 200]).unwrap();
    }
    engine.write(b, true).unwrap();
    engine.flush().unwrap();
}

#[test]
fn a_corrupt_sst_block_is_a_corruption_error_on_read() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let ssts = files_with(dir.path(), |n| n.ends_with(".sst"));
    assert!(!ssts.is_empty(), "flush wrote SST files");
    for sst in &ssts {
        let mut bytes = std::fs::read(sst).unwrap();
        // Damage the first data block (SSTs start with data blocks); keep the footer intact so
        // the file still opens and the damage is found by the block checksum on read.
        for b in bytes.iter_mut().skip(64).take(64) {
            *b ^= 0x5A;
        }
        std::fs::write(sst, bytes).unwrap();
    }
    let outcome = RocksEngine::open(dir.path(), &Default::default());
    let engine: Arc<dyn Engine> = match outcome {
        Err(e) => {
            // Detecting it at open is fine too, as long as it is named.
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
            return;
        }
        Ok(e) => Arc::new(e),
    };
    let m = Mvcc::open(engine).unwrap();
    let err = m.scan(b"", None, Timestamp::MAX, usize::MAX).expect_err("scan over a damaged block must fail");
    let msg = err.to_string();
    assert!(matches!(err, Error::Corrupt { .. }), "{msg}");
    assert!(msg.contains("corrupt RocksDB files") && msg.to_lowercase().contains("checksum"), "{msg}");
}

#[test]
fn a_garbage_manifest_refuses_to_open_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let manifests = files_with(dir.path(), |n| n.starts_with("MANIFEST-"));
    assert!(!manifests.is_empty());
    for m in &manifests {
        std::fs::write(m, b"this is not a manifest, it is a corrupted file").unwrap();
    }
    let err = RocksEngine::open(dir.path(), &Default::default()).err().expect("open must fail");
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "names the directory: {msg}");
    assert!(msg.to_lowercase().contains("corrupt"), "{msg}");
}

#[test]
fn a_truncated_sst_refuses_to_open_or_read() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    for sst in files_with(dir.path(), |n| n.ends_with(".sst")) {
        let len = std::fs::metadata(&sst).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&sst).unwrap();
        f.set_len(len / 2).unwrap();
    }
    match RocksEngine::open(dir.path(), &Default::default()) {
        Err(e) => assert!(e.to_string().to_lowercase().contains("corrupt") || e.to_string().contains("size"), "{e}"),
        Ok(engine) => {
            let m = Mvcc::open(Arc::new(engine)).unwrap();
            assert!(
                m.scan(b"", None, Timestamp::MAX, usize::MAX).is_err(),
                "a truncated SST must not read as fewer rows"
            );
        }
    }
}
