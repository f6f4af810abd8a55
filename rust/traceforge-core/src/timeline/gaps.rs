//! Idle gaps between a device's kernels: stored where kernels run out of order, found again by a pass
//! over the kernels where they run in order (so most traces hold no gap in memory at all).
use crate::views::{Column, OpsView};

/// Idle gaps of every device: one per kernel boundary at worst. The gaps of a device whose kernels run
/// in order are not stored: [`InOrderGaps`] finds them again in one pass when they are written. Other
/// devices' gaps are stored, 16 bytes a gap (the device is stored once per run of gaps, not per gap).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gaps {
    /// `(device, end)`: gaps `previous end..end` belong to `device`.
    pub device_runs: Vec<(i64, usize)>,
    pub start: Vec<i64>,
    pub end: Vec<i64>,
    /// Devices whose gaps are found again by [`InOrderGaps`] instead of stored, ascending.
    pub in_order_devices: Vec<i32>,
}

impl Gaps {
    /// Store the gap `[start, end)` of `device` (gaps arrive device by device).
    pub fn push(&mut self, device: i64, start: i64, end: i64) {
        self.start.push(start);
        self.end.push(end);
        match self.device_runs.last_mut() {
            Some((d, run_end)) if *d == device => *run_end += 1,
            _ => self.device_runs.push((device, self.start.len())),
        }
    }

    /// Number of stored gaps.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    /// Whether no gap is stored.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }

    /// The device of each gap in `range`.
    pub fn devices(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = i64> + '_ {
        let first = self.device_runs.partition_point(|&(_, end)| end <= range.start);
        let mut run = first;
        range.map(move |i| {
            while self.device_runs[run].1 <= i {
                run += 1;
            }
            self.device_runs[run].0
        })
    }

    /// Store the gaps of the in-order devices too (for callers that emit every gap at once).
    pub fn materialize(&mut self, kernels: &OpsView<'_>) {
        for device in std::mem::take(&mut self.in_order_devices) {
            let mut cursor = InOrderGaps::default();
            cursor.advance(kernels.start, kernels.end, kernels.device, device, usize::MAX, |s, e| {
                self.push(device.into(), s, e)
            });
        }
    }
}

/// The gaps of one device whose non-empty kernels have starts and ends both ascending in index order,
/// found by a resumable pass over the kernels: then a gap lies exactly between a kernel's end and the next
/// kernel's later start, and no sort or buffer is needed.
#[derive(Debug, Clone, Default)]
pub struct InOrderGaps {
    next: usize,
    previous_end: Option<i64>,
}

impl InOrderGaps {
    /// Hand up to `limit` further gaps of `device` to `on_gap`; false once every kernel was passed.
    pub fn advance(
        &mut self,
        start: &[i64],
        end: &[i64],
        devices: Column<'_, i32>,
        device: i32,
        limit: usize,
        mut on_gap: impl FnMut(i64, i64),
    ) -> bool {
        let mut found = 0usize;
        while self.next < start.len() {
            if found >= limit {
                return true;
            }
            let i = self.next;
            self.next += 1;
            let (s, e) = (start[i], end[i]);
            if e <= s || devices.get(i) != device {
                continue;
            }
            if let Some((gap_start, gap_end)) = self.pass(s, e) {
                on_gap(gap_start, gap_end);
                found += 1;
            }
        }
        false
    }

    /// Take the next non-empty kernel `[start, end)` of the device: the gap before it, if there is one.
    #[inline]
    pub fn pass(&mut self, start: i64, end: i64) -> Option<(i64, i64)> {
        let gap = self.previous_end.filter(|&e| start > e).map(|e| (e, start));
        self.previous_end = Some(end);
        gap
    }
}
