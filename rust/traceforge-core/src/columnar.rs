//! Arrow record batches: the columnar form in which tables leave the core.
//!
//! Batches are produced lazily by a [`BatchStream`] so a large table crosses into DuckDB chunk by chunk
//! rather than as one materialised copy.
use std::sync::Arc;

use std::collections::HashMap;

use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, DictionaryArray, Float64Array, Int32Array, Int64Array, RecordBatch, RecordBatchReader, StringArray,
};
use arrow_buffer::{NullBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, SchemaRef};

use crate::ids::NULL_I64;

/// Rows per batch handed to Python.
pub(crate) const BATCH_ROWS: usize = 1 << 17;

/// A nullable i64 column from sentinel-encoded values.
pub(crate) fn int_col(values: impl Iterator<Item = i64>) -> ArrayRef {
    int_col_owned(values.collect())
}

/// A nullable i64 column from sentinel-encoded values, taking over their buffer (no copy).
///
/// Most columns hold no NULL at all; building them value by value through Arrow's optional-value path
/// costs several times a plain copy, so the null mask is made only when a sentinel is present.
pub(crate) fn int_col_owned(values: Vec<i64>) -> ArrayRef {
    let nulls = values.contains(&NULL_I64).then(|| values.iter().map(|&v| v != NULL_I64).collect::<NullBuffer>());
    Arc::new(Int64Array::new(ScalarBuffer::from(values), nulls))
}

/// An i64 column from optional values.
pub(crate) fn opt_int_col(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(values.collect::<Int64Array>())
}

/// A f64 column from optional values.
pub(crate) fn float_col(values: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(values.collect::<Float64Array>())
}

/// A string column.
pub(crate) fn str_col<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

/// A dictionary-encoded string column from ids resolved by `lookup` (the batch's own small dictionary).
///
/// Kernel and API names repeat millions of times; DuckDB ingests a dictionary column far faster than
/// the same strings spelled out row by row.
pub(crate) fn dict_col<'a>(ids: impl Iterator<Item = i64>, lookup: impl Fn(i64) -> Option<&'a str>) -> ArrayRef {
    let mut local: HashMap<i64, i32> = HashMap::new();
    let mut values: Vec<&'a str> = Vec::new();
    let keys: Int32Array = ids
        .map(|id| {
            if let Some(&k) = local.get(&id) {
                return Some(k);
            }
            let v = lookup(id)?;
            let k = values.len() as i32;
            values.push(v);
            local.insert(id, k);
            Some(k)
        })
        .collect();
    let values: ArrayRef = Arc::new(StringArray::from(values));
    Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values).expect("keys index the values built here"))
}

/// Assemble a batch from named columns (all of one length).
pub(crate) fn batch(columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch, ArrowError> {
    RecordBatch::try_from_iter(columns)
}

/// The batches of a [`BatchStream`].
type BatchIter = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>;

/// A lazily produced sequence of batches with a fixed schema (a `RecordBatchReader`).
pub struct BatchStream {
    schema: SchemaRef,
    iter: BatchIter,
}

impl BatchStream {
    /// A stream with `schema` producing `iter`'s batches.
    pub(crate) fn new(schema: SchemaRef, iter: BatchIter) -> Self {
        BatchStream { schema, iter }
    }

    /// A stream over already built batches (the first one gives the schema).
    pub(crate) fn from_batches(first: RecordBatch, rest: Vec<RecordBatch>) -> Self {
        let schema = first.schema();
        let all: Vec<Result<RecordBatch, ArrowError>> = std::iter::once(first).chain(rest).map(Ok).collect();
        BatchStream { schema, iter: Box::new(all.into_iter()) }
    }

    /// A stream that slices `0..rows` into [`BATCH_ROWS`] chunks and builds each with `build`.
    pub(crate) fn chunked<F>(rows: usize, build: F) -> Result<Self, ArrowError>
    where
        F: Fn(std::ops::Range<usize>) -> Result<RecordBatch, ArrowError> + Send + Sync + 'static,
    {
        let schema = build(0..0)?.schema();
        let build = Arc::new(build);
        let iter = (0..rows.div_ceil(BATCH_ROWS)).map(move |c| {
            let lo = c * BATCH_ROWS;
            build(lo..(lo + BATCH_ROWS).min(rows))
        });
        Ok(BatchStream { schema, iter: Box::new(iter) })
    }
}

impl Iterator for BatchStream {
    type Item = Result<RecordBatch, ArrowError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.iter.next()
    }
}

impl RecordBatchReader for BatchStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
