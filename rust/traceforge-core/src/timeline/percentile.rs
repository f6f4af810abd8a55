//! Percentiles with linear interpolation between order statistics (numpy's default method).

/// The `q`-quantile (0..=1) of sorted `values`; None when empty.
pub fn percentile_sorted(values: &[i64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let h = (values.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(values.len() - 1);
    let frac = h - lo as f64;
    Some(values[lo] as f64 + frac * (values[hi] as f64 - values[lo] as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy_linear_interpolation() {
        // numpy.percentile([1, 2, 3, 4], [50, 90, 99]) == [2.5, 3.7, 3.97]
        let v = [1, 2, 3, 4];
        assert_eq!(percentile_sorted(&v, 0.5), Some(2.5));
        assert!((percentile_sorted(&v, 0.9).unwrap() - 3.7).abs() < 1e-12);
        assert!((percentile_sorted(&v, 0.99).unwrap() - 3.97).abs() < 1e-12);
        assert_eq!(percentile_sorted(&[7], 0.99), Some(7.0));
        assert_eq!(percentile_sorted(&[], 0.5), None);
    }
}
