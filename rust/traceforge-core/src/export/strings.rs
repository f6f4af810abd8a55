//! `StringIds`: the export's string dictionary, resolved once per trace.
use rusqlite::Connection;

use super::open::ExportFile;
use crate::error::{Error, Result};

/// Dense id -> string lookup (ids are small consecutive integers in every nsys export seen).
#[derive(Debug, Default, Clone)]
pub struct StringTable {
    values: Vec<Option<String>>,
}

impl StringTable {
    /// Read `StringIds` (`present`: whether the export has it; without it every lookup finds nothing).
    pub fn load(file: &ExportFile, conn: &Connection, present: bool) -> Result<Self> {
        let mut values: Vec<Option<String>> = Vec::new();
        if !present {
            return Ok(StringTable { values });
        }
        let mut stmt = conn.prepare("SELECT id, value FROM StringIds").map_err(|e| file.sqlite_error(e))?;
        let mut rows = stmt.query([]).map_err(|e| file.sqlite_error(e))?;
        // Ids met, so that an id met twice (only a damaged b-tree repeats a primary key) is refused rather
        // than one of its strings silently winning.
        let mut seen: Vec<bool> = Vec::new();
        while let Some(row) = rows.next().map_err(|e| file.sqlite_error(e))? {
            let id: i64 = row.get(0).map_err(|e| file.sqlite_error(e))?;
            let value: Option<String> = row.get(1).map_err(|e| file.sqlite_error(e))?;
            if !(0..=1 << 31).contains(&id) {
                continue;
            }
            let id = id as usize;
            if id >= values.len() {
                values.resize(id + 1, None);
                seen.resize(id + 1, false);
            }
            if std::mem::replace(&mut seen[id], true) {
                return Err(Error::Corrupt {
                    path: file.path.clone(),
                    reason: format!("StringIds: id {id} appears twice (the table's b-tree is damaged)"),
                });
            }
            values[id] = value;
        }
        Ok(StringTable { values })
    }

    /// The string for `id`, if any.
    #[inline]
    pub fn get(&self, id: i64) -> Option<&str> {
        if id < 0 {
            return None;
        }
        self.values.get(id as usize).and_then(|v| v.as_deref())
    }

    /// One past the highest id.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no string was loaded.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Bytes of the strings of at least `min` bytes: what a store must hold at once for the strings too
    /// long to sit in its column segments (see [`crate::ingest::Trace::long_string_bytes`]).
    pub fn long_bytes(&self, min: usize) -> u64 {
        self.values.iter().flatten().map(String::len).filter(|&n| n >= min).map(|n| n as u64).sum()
    }

    /// Build from explicit values (tests, re-analysis).
    pub fn from_values(values: Vec<Option<String>>) -> Self {
        StringTable { values }
    }
}

#[cfg(test)]
mod tests {
    use super::StringTable;

    #[test]
    fn long_bytes_counts_only_strings_of_at_least_min_bytes() {
        let t = StringTable::from_values(vec![Some("a".repeat(10)), None, Some("b".repeat(3)), Some("c".repeat(10))]);
        assert_eq!(t.long_bytes(10), 20);
        assert_eq!(t.long_bytes(1), 23);
        assert_eq!(t.long_bytes(11), 0);
    }
}
