//! Circuit breaker: after `threshold` consecutive failed attempts the cloud endpoint is left
//! alone for a cool-down; then one trial request is let through (half-open), and its outcome
//! closes the breaker or opens it for another cool-down.
//!
//! The clock is passed in (`now`), so tests drive time.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

/// The breaker's state, as health and metrics report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests go through.
    Closed,
    /// Requests are refused until the cool-down ends.
    Open,
    /// The cool-down ended: one trial request may go (or is in flight).
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_in_flight: bool },
}

/// The breaker; shared by all requests of one client.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

/// Leave to send one attempt; report its outcome with [`Permit::success`] or
/// [`Permit::failure`]. Dropped without either (the caller went away), a trial slot is released.
#[must_use]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures (at least 1), for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker { threshold: threshold.max(1), cooldown, state: Mutex::new(State::Closed { consecutive_failures: 0 }) }
    }

    /// A permit to send, or the time until the breaker lets a trial through.
    pub fn try_acquire(&self, now: Instant) -> Result<Permit<'_>, Duration> {
        let mut state = self.state.lock();
        match *state {
            State::Closed { .. } => Ok(Permit { breaker: self, probe: false, reported: false }),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } | State::HalfOpen { probe_in_flight: false } => {
                *state = State::HalfOpen { probe_in_flight: true };
                Ok(Permit { breaker: self, probe: true, reported: false })
            }
            // Another request is the trial; wait about as long as a short cool-down.
            State::HalfOpen { probe_in_flight: true } => Err(self.cooldown.min(Duration::from_secs(1))),
        }
    }

    /// The state at `now` (an open breaker whose cool-down ended reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match *self.state.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn on_success(&self) {
        *self.state.lock() = State::Closed { consecutive_failures: 0 };
    }

    fn on_failure(&self, probe: bool, now: Instant) {
        let mut state = self.state.lock();
        let open = State::Open { until: now + self.cooldown };
        match *state {
            State::Closed { consecutive_failures } => {
                let n = consecutive_failures.saturating_add(1);
                *state = if n >= self.threshold { open } else { State::Closed { consecutive_failures: n } };
            }
            State::HalfOpen { .. } if probe => *state = open,
            // A request from before the breaker opened: it is open already.
            State::HalfOpen { .. } | State::Open { .. } => {}
        }
    }

    fn release_probe(&self) {
        let mut state = self.state.lock();
        if let State::HalfOpen { probe_in_flight: true } = *state {
            *state = State::HalfOpen { probe_in_flight: false };
        }
    }
}

impl Permit<'_> {
    /// The attempt got an answer from a healthy endpoint: the breaker closes.
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.on_success();
    }

    /// The attempt failed in a way that says the endpoint is unwell.
    pub fn failure(mut self, now: Instant) {
        self.reported = true;
        self.breaker.on_failure(self.probe, now);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL: Duration = Duration::from_secs(30);

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let b = Breaker::new(3, COOL);
        let t = Instant::now();
        b.try_acquire(t).unwrap().failure(t);
        b.try_acquire(t).unwrap().failure(t);
        b.try_acquire(t).unwrap().success(); // resets the count
        b.try_acquire(t).unwrap().failure(t);
        b.try_acquire(t).unwrap().failure(t);
        assert_eq!(b.state(t), BreakerState::Closed);
        b.try_acquire(t).unwrap().failure(t);
        assert_eq!(b.state(t), BreakerState::Open);
        let wait = b.try_acquire(t + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(20));
    }

    #[test]
    fn half_open_lets_one_trial_through() {
        let b = Breaker::new(1, COOL);
        let t = Instant::now();
        b.try_acquire(t).unwrap().failure(t);
        let later = t + COOL;
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        let probe = b.try_acquire(later).unwrap();
        assert!(b.try_acquire(later).is_err(), "a second request while the trial is in flight");
        probe.success();
        assert_eq!(b.state(later), BreakerState::Closed);
        assert!(b.try_acquire(later).is_ok());
    }

    #[test]
    fn failed_trial_opens_for_another_cooldown() {
        let b = Breaker::new(2, COOL);
        let t = Instant::now();
        b.try_acquire(t).unwrap().failure(t);
        b.try_acquire(t).unwrap().failure(t);
        let later = t + COOL + Duration::from_secs(1);
        b.try_acquire(later).unwrap().failure(later);
        assert_eq!(b.state(later), BreakerState::Open);
        assert_eq!(b.try_acquire(later).unwrap_err(), COOL);
        assert!(b.try_acquire(later + COOL).is_ok());
    }

    #[test]
    fn dropped_trial_releases_the_slot() {
        let b = Breaker::new(1, COOL);
        let t = Instant::now();
        b.try_acquire(t).unwrap().failure(t);
        let later = t + COOL;
        drop(b.try_acquire(later).unwrap());
        assert!(b.try_acquire(later).is_ok(), "the slot of a cancelled trial is free again");
    }

    #[test]
    fn late_failure_of_an_old_request_does_not_extend_the_open_state() {
        let b = Breaker::new(1, COOL);
        let t = Instant::now();
        let old = b.try_acquire(t).unwrap();
        b.try_acquire(t).unwrap().failure(t);
        old.failure(t + Duration::from_secs(20));
        assert!(b.try_acquire(t + COOL).is_ok());
    }
}
