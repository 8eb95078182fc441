//! When to try again: exponential backoff with jitter, and the server's `Retry-After`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

/// Wait before retry number `retry` (0 for the first retry): `initial * 2^retry`, capped at
/// `max`, scaled by `jitter` in [0, 1) to between half and all of it ("equal jitter").
pub fn backoff(retry: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let full = initial.saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX)).min(max);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A random number in [0, 1) for jitter, from the standard library's per-process random keys
/// (no generator crate for one number per retry).
pub fn jitter() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The delay a `Retry-After` header asks for: delta-seconds, or an HTTP date (a date in the
/// past means now). `None` when the header is not either.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let ms = Duration::from_millis;
        assert_eq!(backoff(0, ms(500), ms(30_000), 0.999_999).as_millis(), 499);
        assert_eq!(backoff(0, ms(500), ms(30_000), 0.0), ms(250));
        assert_eq!(backoff(3, ms(500), ms(30_000), 0.0), ms(2000));
        assert_eq!(backoff(10, ms(500), ms(30_000), 0.0), ms(15_000));
        assert_eq!(backoff(40, ms(500), ms(30_000), 0.0), ms(15_000));
    }

    #[test]
    fn jitter_is_in_range_and_varies() {
        let xs: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.iter().any(|x| (x - xs[0]).abs() > 1e-9), "64 equal jitters");
    }

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_910_400); // Sun, 29 Nov 2026 00:00:00 GMT
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Sun, 29 Nov 2026 00:00:42 GMT", now), Some(Duration::from_secs(42)));
        assert_eq!(parse_retry_after("Sat, 28 Nov 2026 23:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }
}
