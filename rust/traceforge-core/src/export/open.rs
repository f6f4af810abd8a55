//! Opening an export: path checks, SQLite header check, read-only immutable connections.
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

/// A validated export on disk; hands out connections for parallel scans.
#[derive(Debug, Clone)]
pub struct ExportFile {
    pub path: PathBuf,
    pub size: u64,
}

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

impl ExportFile {
    /// Check that `path` is a readable SQLite file and remember its size.
    pub fn open(path: &Path) -> Result<Self> {
        let meta = fs::metadata(path).map_err(|e| io_error(path, e))?;
        if meta.is_dir() {
            return Err(Error::NotAnExport {
                path: path.into(),
                reason: "is a directory, not an nsys SQLite export".into(),
            });
        }
        let mut file = open_regular(path)?;
        let mut header = [0u8; 100];
        let n = read_up_to(&mut file, &mut header).map_err(|e| io_error(path, e))?;
        if n < 16 || &header[..16] != SQLITE_MAGIC {
            return Err(Error::NotAnExport {
                path: path.into(),
                reason: if n == 0 {
                    "is empty, not an nsys SQLite export".into()
                } else {
                    "is not a SQLite database (wrong header)".into()
                },
            });
        }
        if n < 100 {
            return Err(Error::Corrupt {
                path: path.into(),
                reason: "SQLite file is truncated (incomplete header)".into(),
            });
        }
        // The header records the database size in pages; a shorter file was cut off in transfer.
        let page_size = match u16::from_be_bytes([header[16], header[17]]) {
            1 => 65536u64,
            p => p as u64,
        };
        let page_count = u32::from_be_bytes([header[28], header[29], header[30], header[31]]) as u64;
        let change_counter = u32::from_be_bytes([header[24], header[25], header[26], header[27]]);
        let valid_for = u32::from_be_bytes([header[92], header[93], header[94], header[95]]);
        if page_count > 0 && change_counter == valid_for && page_size * page_count > meta.len() {
            return Err(Error::Corrupt {
                path: path.into(),
                reason: format!(
                    "SQLite file is truncated: header says {} bytes, file has {}",
                    page_size * page_count,
                    meta.len()
                ),
            });
        }
        // Connections are immutable, which ignores a write-ahead log: committed pages still in one would be
        // silently missing. A WAL-mode file (format version 2) with frames in its `-wal` is refused instead.
        if header[18] == 2 || header[19] == 2 {
            let mut wal = path.as_os_str().to_owned();
            wal.push("-wal");
            let wal = PathBuf::from(wal);
            // 32 bytes are the log's header alone (no frames).
            if fs::metadata(&wal).is_ok_and(|m| m.len() > 32) {
                return Err(Error::Corrupt {
                    path: path.into(),
                    reason: format!(
                        "has an uncheckpointed write-ahead log ({}) whose pages the export lacks: checkpoint it \
                         (open the export once with sqlite3) before ingesting",
                        wal.display()
                    ),
                });
            }
        }
        Ok(ExportFile { path: path.into(), size: meta.len() })
    }

    /// A new read-only, immutable connection (one per scanning thread).
    pub fn connect(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            uri_for(&self.path),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.sqlite_error(e))?;
        // No mmap: mapped pages of a multi-GB export would count in the process's resident set. A small
        // page cache per connection (8 MiB) and the OS page cache do the work; scans read each page once.
        let _ = conn.pragma_update(None, "mmap_size", 0i64);
        let _ = conn.pragma_update(None, "cache_size", -8192i64);
        Ok(conn)
    }

    /// Map a SQLite error to a corrupt/not-an-export error naming this file.
    pub fn sqlite_error(&self, e: rusqlite::Error) -> Error {
        // One line: SQLite quotes damaged schema text, newlines and all.
        let text = e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        let lower = text.to_lowercase();
        if lower.contains("not a database") || lower.contains("file is not a database") {
            Error::NotAnExport { path: self.path.clone(), reason: "is not a SQLite database".into() }
        } else if lower.contains("malformed") || lower.contains("corrupt") || lower.contains("disk i/o") {
            Error::Corrupt { path: self.path.clone(), reason: format!("SQLite database is corrupted ({text})") }
        } else {
            Error::Corrupt { path: self.path.clone(), reason: format!("SQLite error: {text}") }
        }
    }
}

/// What a path that is not a regular file is (after links are followed), for the message refusing it;
/// None for a regular file.
pub fn not_regular_kind(meta: &fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// Open `path` for reading only if it is a regular file (links followed). The open does not block (a FIFO
/// swapped in after a check would otherwise wait for a writer forever), and the opened file is checked
/// again, so a FIFO, device or socket is refused with what it is, never read.
pub fn open_regular(path: &Path) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |kind: &str| Error::NotAnExport {
        path: path.into(),
        reason: format!("is {kind}, not a regular file (only regular files are read)"),
    };
    let meta = fs::metadata(path).map_err(|e| io_error(path, e))?;
    if let Some(kind) = not_regular_kind(&meta) {
        return Err(refuse(kind));
    }
    let file =
        fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(|e| io_error(path, e))?;
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    if let Some(kind) = not_regular_kind(&meta) {
        return Err(refuse(kind));
    }
    Ok(file)
}

fn read_up_to(file: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn uri_for(path: &Path) -> String {
    let abs = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut encoded = String::new();
    for ch in abs.to_string_lossy().chars() {
        match ch {
            '%' => encoded.push_str("%25"),
            '?' => encoded.push_str("%3f"),
            '#' => encoded.push_str("%23"),
            c => encoded.push(c),
        }
    }
    format!("file:{encoded}?mode=ro&immutable=1")
}

/// Map an I/O error on `path` to the matching core error.
pub fn io_error(path: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound { path: path.into() },
        std::io::ErrorKind::PermissionDenied => Error::Permission { path: path.into() },
        _ => Error::Io { path: path.into(), reason: e.to_string() },
    }
}
