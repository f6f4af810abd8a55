//! Content fingerprints: xxh3-128 of a file's bytes, so the same content is recognised under any name.
use std::fs::File;
use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use crate::error::Result;
use crate::export::open::io_error;

/// Hex xxh3-128 of the whole file, read in 4 MiB blocks.
pub fn fingerprint_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| io_error(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:032x}", hasher.digest128()))
}
