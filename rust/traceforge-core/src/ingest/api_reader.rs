//! The API reader thread: the runtime then driver API tables, read in the background from the moment a
//! trace is opened, their chunks waiting in a bounded queue until the `api_call_rows` stream takes them.
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use crate::error::Result;
use crate::export::events;
use crate::export::probe::{DRIVER_TABLE, RUNTIME_TABLE};
use crate::export::scan::{stream_table_ordered, IntColumns, ScanReader};
use crate::export::{Capabilities, ExportFile};

/// Chunks of the API tables (0 = runtime, 1 = driver, and the columns of [`events::ApiChunk`]) in rowid
/// order.
pub(crate) type ApiChunks = Receiver<Result<(u8, IntColumns)>>;

/// Workers reading the API tables at most. Their rows go to DuckDB as one stream, which takes them no
/// faster than a few workers decode them, while each worker holds chunks of several MB: more workers
/// only hold more memory.
const API_READ_THREADS: usize = 4;

/// Start reading the runtime then driver API tables on up to `threads` workers with `reader`; the chunks
/// wait in a bounded queue. Dropping the receiver (or `cancel`) stops the reading.
pub(crate) fn read_api_tables(
    file: &ExportFile,
    caps: &Capabilities,
    threads: usize,
    reader: ScanReader,
    cancel: &Arc<AtomicBool>,
) -> ApiChunks {
    let threads = threads.clamp(1, API_READ_THREADS);
    let (tx, rx) = sync_channel::<Result<(u8, IntColumns)>>(threads * 2);
    let (file, caps, cancel) = (file.clone(), caps.clone(), Arc::clone(cancel));
    std::thread::spawn(move || {
        for (api, table) in [(0u8, RUNTIME_TABLE), (1u8, DRIVER_TABLE)] {
            let Ok(Some(exprs)) = events::api_exprs(&file, &caps, table) else { continue };
            stream_table_ordered(&file, table, &exprs, threads, &cancel, reader, |c| (api, c), tx.clone());
        }
    });
    rx
}
