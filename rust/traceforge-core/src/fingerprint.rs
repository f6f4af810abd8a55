//! Content fingerprints: xxh3-128 of a file's bytes, so the same content is recognised under any name.
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};
use crate::export::open::{io_error, open_regular};

/// Hex xxh3-128 of the whole file, read in 4 MiB blocks.
pub fn fingerprint_file(path: &Path) -> Result<String> {
    fingerprint_file_until(path, &AtomicBool::new(false))
}

/// Hex xxh3-128 of the file's bytes, read in 4 MiB blocks, stopping with [`Error::Interrupted`] as soon
/// as `cancel` is set (Ctrl-C). Only a regular file is read, and only the bytes it had when opened: one
/// still growing is hashed as it was (the ingest checks its size and time before and after reading), and
/// never read without end.
pub fn fingerprint_file_until(path: &Path, cancel: &AtomicBool) -> Result<String> {
    let file = open_regular(path)?;
    let size = file.metadata().map_err(|e| io_error(path, e))?.len();
    let mut file = file.take(size);
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let n = file.read(&mut buf).map_err(|e| io_error(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:032x}", hasher.digest128()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_cancel_flag_stops_hashing_and_a_fifo_is_refused() {
        let dir = std::env::temp_dir().join(format!("tf-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("x.bin");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(fingerprint_file(&file).unwrap().len(), 32);
        let cancelled = AtomicBool::new(true);
        assert!(matches!(fingerprint_file_until(&file, &cancelled), Err(Error::Interrupted)));
        let fifo = dir.join("x.sqlite");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = fingerprint_file(&fifo).unwrap_err().to_string();
        assert!(err.contains("is a FIFO (named pipe), not a regular file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
