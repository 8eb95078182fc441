//! Daily token budget: prompt plus completion tokens per UTC day. A request is refused before
//! it is sent once the day's budget is used up; the count starts again at 00:00 UTC.
//!
//! Requests already in flight when the budget runs out still finish and are counted, so a day
//! can end slightly over budget. The count lives in memory (a restart starts it from zero).
//! The clock is passed in, so tests drive time.

use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// The budget and today's use.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: Mutex<DayCount>,
}

#[derive(Debug, Default)]
struct DayCount {
    /// Days since 1970-01-01 UTC.
    day: i64,
    tokens: u64,
}

/// The day's budget is used up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exhausted {
    /// Tokens used today.
    pub used: u64,
    /// The daily budget.
    pub budget: u64,
}

fn utc_day(now: SystemTime) -> i64 {
    let secs = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs_f64().ceil() as u64).unwrap_or(i64::MAX),
    };
    secs.div_euclid(86_400)
}

impl Budget {
    /// `limit` tokens per UTC day.
    pub fn new(limit: u64) -> Budget {
        Budget { limit, used: Mutex::new(DayCount::default()) }
    }

    /// The daily budget.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Ok when a request may be sent at `now`.
    pub fn check(&self, now: SystemTime) -> Result<(), Exhausted> {
        let used = self.used_today(now);
        if used >= self.limit {
            return Err(Exhausted { used, budget: self.limit });
        }
        Ok(())
    }

    /// Counts `tokens` used at `now`.
    pub fn record(&self, now: SystemTime, tokens: u64) {
        let day = utc_day(now);
        let mut c = self.used.lock();
        if c.day != day {
            *c = DayCount { day, tokens: 0 };
        }
        c.tokens = c.tokens.saturating_add(tokens);
    }

    /// Tokens used on the UTC day of `now`.
    pub fn used_today(&self, now: SystemTime) -> u64 {
        let c = self.used.lock();
        if c.day == utc_day(now) {
            c.tokens
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    // 2026-11-29 00:00:00 UTC
    const MIDNIGHT: u64 = 1_795_910_400;

    #[test]
    fn refuses_once_used_up_and_resets_at_utc_midnight() {
        let b = Budget::new(1000);
        let morning = at(MIDNIGHT + 8 * 3600);
        assert!(b.check(morning).is_ok());
        b.record(morning, 600);
        assert!(b.check(morning).is_ok());
        b.record(morning, 400);
        assert_eq!(b.check(morning), Err(Exhausted { used: 1000, budget: 1000 }));
        let last_second = at(MIDNIGHT + 86_399);
        assert!(b.check(last_second).is_err());
        let next_day = at(MIDNIGHT + 86_400);
        assert_eq!(b.used_today(next_day), 0);
        assert!(b.check(next_day).is_ok());
        b.record(next_day, 5);
        assert_eq!(b.used_today(next_day), 5);
    }

    #[test]
    fn overshoot_is_counted() {
        let b = Budget::new(100);
        let t = at(MIDNIGHT);
        b.record(t, 250);
        assert_eq!(b.check(t), Err(Exhausted { used: 250, budget: 100 }));
    }

    #[test]
    fn utc_days() {
        assert_eq!(utc_day(at(MIDNIGHT - 1)) + 1, utc_day(at(MIDNIGHT)));
        assert_eq!(utc_day(at(0)), 0);
        assert_eq!(utc_day(UNIX_EPOCH - Duration::from_secs(10)), -1);
    }
}
