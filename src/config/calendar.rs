//! The shift calendar: `[[shift]]` and `[[planned_stop]]`, read in the plant's time
//! zone (`[site] time_zone`), and [`Calendar`], which turns them into UTC instants.
//!
//! Local time only lives here, at the edge: a shift `A` from `06:00` to `14:00` on
//! `2026-11-28` in `Europe/Berlin` becomes two UTC nanosecond timestamps, with the
//! tz database's rules (a shift across a DST change is an hour shorter or longer).
//! Local times that do not exist or exist twice on a DST day are resolved the
//! "compatible" way (RFC 5545): a skipped time moves forward, a repeated one takes
//! the earlier instant.

use std::fmt;

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Deserializer};

use crate::domain::Timestamp;

/// A local time of day written `HH:MM` (`06:00`, `22:30`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay {
    /// Minutes after local midnight, `0..1440`.
    pub minutes: u32,
}

impl TimeOfDay {
    /// Parses `HH:MM` (24-hour clock).
    pub fn parse(s: &str) -> Result<TimeOfDay, String> {
        let bad = || format!("bad time of day `{s}`: expected HH:MM on a 24-hour clock, such as 06:00 or 22:30");
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: u32 = h.parse().map_err(|_| bad())?;
        let m: u32 = m.parse().map_err(|_| bad())?;
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Ok(TimeOfDay { minutes: h * 60 + m })
    }

    fn time(self) -> Time {
        // minutes < 1440 by construction: hour < 24, minute < 60.
        Time::new((self.minutes / 60) as i8, (self.minutes % 60) as i8, 0, 0).unwrap_or(Time::midnight())
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TimeOfDay::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A day of the week written `mon`, `tue`, `wed`, `thu`, `fri`, `sat`, `sun`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Day(pub Weekday);

const DAY_NAMES: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DAY_NAMES.iter().find(|(n, _)| *n == s.to_ascii_lowercase()).map(|(_, w)| Day(*w)).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown day `{s}`, expected one of mon, tue, wed, thu, fri, sat, sun"))
        })
    }
}

/// A local date and time written `2026-12-24T14:00` (no offset: the plant's time zone).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LocalDateTime(pub DateTime);

impl<'de> Deserialize<'de> for LocalDateTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.trim().parse::<DateTime>().map(LocalDateTime).map_err(|e| {
            serde::de::Error::custom(format!("bad local date and time `{s}` (expected e.g. 2026-12-24T14:00): {e}"))
        })
    }
}

/// One break in a shift: planned, so it counts neither as production time nor as downtime.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakConfig {
    /// Local time the break starts (`10:00`); it must lie within the shift.
    pub start: TimeOfDay,
    /// Length of the break in minutes.
    pub minutes: u32,
}

/// `[[shift]]`: one shift of the plant's calendar.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftConfig {
    /// Shift name (`A`, `early`); a shift is named `DATE/NAME`, e.g. `2026-11-28/A`,
    /// where DATE is the local date the shift starts on.
    pub name: String,
    /// Local time the shift starts (`06:00`).
    pub start: TimeOfDay,
    /// Local time the shift ends (`14:00`); earlier than `start` means it ends the next day.
    pub end: TimeOfDay,
    /// Breaks within the shift.
    #[serde(default)]
    pub breaks: Vec<BreakConfig>,
    /// Days of the week the shift starts on (`["mon", "tue"]`); every day when left out.
    #[serde(default)]
    pub days: Option<Vec<Day>>,
    /// Good units the line's key machine should make in the shift (the shift report
    /// compares its output with it).
    #[serde(default)]
    pub target: Option<f64>,
}

impl ShiftConfig {
    /// Length of the shift in minutes of clock time (on a DST day the real length differs).
    pub fn clock_minutes(&self) -> u32 {
        (self.end.minutes + 1440 - self.start.minutes) % 1440
    }

    /// Minutes from the shift's start to a time of day inside it.
    fn offset_of(&self, t: TimeOfDay) -> u32 {
        (t.minutes + 1440 - self.start.minutes) % 1440
    }

    /// Problems as (key, message), keys relative to the shift.
    pub(crate) fn check(&self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        if self.name.is_empty() || self.name.contains(['/', ' ']) {
            errs.push(("name", format!("bad shift name `{}`: must not be empty or contain `/` or spaces", self.name)));
        }
        if self.start == self.end {
            errs.push(("end", format!("the shift ends when it starts ({}); a 24 h shift is not supported", self.end)));
            return errs;
        }
        let len = self.clock_minutes();
        let mut breaks: Vec<(u32, u32)> = Vec::new();
        for b in &self.breaks {
            let off = self.offset_of(b.start);
            if b.minutes == 0 {
                errs.push(("breaks", format!("the break at {} lasts 0 minutes", b.start)));
            } else if off + b.minutes > len {
                errs.push((
                    "breaks",
                    format!(
                        "the break at {} for {} min is not within the shift {}-{}",
                        b.start, b.minutes, self.start, self.end
                    ),
                ));
            } else if breaks.iter().any(|&(s, e)| off < e && s < off + b.minutes) {
                errs.push(("breaks", format!("the break at {} overlaps another break", b.start)));
            }
            breaks.push((off, off + b.minutes));
        }
        if let Some(days) = &self.days {
            if days.is_empty() {
                errs.push(("days", "days must list at least one day (or be left out for every day)".to_string()));
            }
        }
        errs
    }
}

/// A weekly planned stop: the same local time every week.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeeklyStop {
    /// Day of the week it starts on.
    pub day: Day,
    /// Local time it starts.
    pub start: TimeOfDay,
    /// Length in minutes.
    pub minutes: u32,
}

/// `[[planned_stop]]`: time the line is not planned to produce (maintenance, no orders,
/// holidays), taken out of planned production time. Either a one-off `from`/`to` or `weekly`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedStopConfig {
    /// Why (shown in reports): `preventive maintenance`, `no orders`.
    pub reason: String,
    /// One-off stop: local start, `2026-12-24T14:00`.
    #[serde(default)]
    pub from: Option<LocalDateTime>,
    /// One-off stop: local end (exclusive).
    #[serde(default)]
    pub to: Option<LocalDateTime>,
    /// Weekly stop: `{ day = "sat", start = "22:00", minutes = 120 }`.
    #[serde(default)]
    pub weekly: Option<WeeklyStop>,
}

impl PlannedStopConfig {
    /// Problems as (key, message), keys relative to the planned stop.
    pub(crate) fn check(&self) -> Vec<(&'static str, String)> {
        match (&self.from, &self.to, &self.weekly) {
            (Some(f), Some(t), None) if t.0 <= f.0 => {
                vec![("to", format!("`to` ({}) must be after `from` ({})", t.0, f.0))]
            }
            (Some(_), Some(_), None) => Vec::new(),
            (None, None, Some(w)) if w.minutes == 0 => {
                vec![("weekly", "a weekly stop must last at least 1 minute".into())]
            }
            (None, None, Some(_)) => Vec::new(),
            (_, _, Some(_)) => vec![("weekly", "give either `from` and `to` or `weekly`, not both".into())],
            (Some(_), None, None) => vec![("to", "missing key `to` (a one-off stop needs `from` and `to`)".into())],
            (None, Some(_), None) => vec![("from", "missing key `from` (a one-off stop needs `from` and `to`)".into())],
            (None, None, None) => vec![("from", "a planned stop needs `from` and `to`, or `weekly`".into())],
        }
    }
}

/// Why a calendar question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    /// The time zone is not in the system's tz database.
    #[error("time zone `{name}`: {message}")]
    TimeZone {
        /// The configured name.
        name: String,
        /// What the tz database lookup said.
        message: String,
    },
    /// A shift label is not `DATE/NAME`.
    #[error("bad shift `{0}`: expected DATE/NAME such as 2026-11-28/A")]
    BadLabel(String),
    /// No `[[shift]]` has this name.
    #[error("no shift named `{name}` in the calendar (configured: {known})")]
    UnknownShift {
        /// The name asked for.
        name: String,
        /// The configured names, comma-separated.
        known: String,
    },
    /// The shift does not run on that day.
    #[error("shift {name} does not start on {date} (a {weekday:?}; see its `days`)")]
    NotOnDay {
        /// Shift name.
        name: String,
        /// Local date.
        date: String,
        /// Its weekday.
        weekday: Weekday,
    },
    /// A time could not be read.
    #[error("bad time `{0}`: expected RFC 3339 (2026-11-28T06:00:00Z) or local time (2026-11-28T06:00)")]
    BadTime(String),
    /// A local time cannot be placed in the time zone (out of range).
    #[error("local time {0} cannot be placed in the plant's time zone")]
    OutOfRange(String),
}

/// One shift on one day, in UTC.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ShiftWindow {
    /// `2026-11-28/A`.
    pub label: String,
    /// Shift name (`A`).
    pub name: String,
    /// Local date it starts on.
    pub date: String,
    /// Start, UTC ns.
    pub start: Timestamp,
    /// End (exclusive), UTC ns.
    pub end: Timestamp,
    /// Breaks as [start, end) UTC ns, in time order.
    pub breaks: Vec<(Timestamp, Timestamp)>,
}

/// The plant's calendar: shifts, breaks and planned stops in its time zone.
#[derive(Clone, Debug)]
pub struct Calendar {
    tz: TimeZone,
    tz_name: String,
    shifts: Vec<ShiftConfig>,
    stops: Vec<PlannedStopConfig>,
}

const NS_PER_MIN: i64 = 60_000_000_000;

/// Looks `name` up in the system tz database (`UTC` always resolves).
pub fn time_zone(name: &str) -> Result<TimeZone, CalendarError> {
    if name == "UTC" {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|e| CalendarError::TimeZone { name: name.to_string(), message: e.to_string() })
}

impl Calendar {
    /// The calendar of a loaded config.
    pub fn new(config: &super::Config) -> Result<Calendar, CalendarError> {
        Calendar::from_parts(&config.site.time_zone, config.shifts.clone(), config.planned_stops.clone())
    }

    /// A calendar from its parts (tests, tools).
    pub fn from_parts(
        time_zone_name: &str,
        shifts: Vec<ShiftConfig>,
        stops: Vec<PlannedStopConfig>,
    ) -> Result<Calendar, CalendarError> {
        Ok(Calendar { tz: time_zone(time_zone_name)?, tz_name: time_zone_name.to_string(), shifts, stops })
    }

    /// The IANA name of the plant's time zone.
    pub fn time_zone_name(&self) -> &str {
        &self.tz_name
    }

    /// The configured shifts.
    pub fn shifts(&self) -> &[ShiftConfig] {
        &self.shifts
    }

    /// A local date and time as UTC ns (compatible disambiguation on DST days).
    pub fn local_to_ts(&self, dt: DateTime) -> Result<Timestamp, CalendarError> {
        let z = self.tz.to_ambiguous_zoned(dt).compatible().map_err(|_| CalendarError::OutOfRange(dt.to_string()))?;
        i64::try_from(z.timestamp().as_nanosecond()).map_err(|_| CalendarError::OutOfRange(dt.to_string()))
    }

    /// UTC ns as a local date and time.
    pub fn ts_to_local(&self, ts: Timestamp) -> DateTime {
        let t = jiff::Timestamp::from_nanosecond(ts as i128).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        self.tz.to_datetime(t)
    }

    /// Reads a time given as RFC 3339 with an offset (`2026-11-28T06:00:00Z`), local time
    /// in the plant's zone (`2026-11-28T06:00`, `2026-11-28 06:00:30`) or a local date
    /// (`2026-11-28`, its midnight).
    pub fn parse_time(&self, s: &str) -> Result<Timestamp, CalendarError> {
        let t = s.trim();
        if let Ok(ts) = t.parse::<jiff::Timestamp>() {
            return i64::try_from(ts.as_nanosecond()).map_err(|_| CalendarError::BadTime(s.to_string()));
        }
        if let Ok(dt) = t.parse::<DateTime>() {
            return self.local_to_ts(dt);
        }
        if let Ok(d) = t.parse::<Date>() {
            return self.local_to_ts(d.to_datetime(Time::midnight()));
        }
        Err(CalendarError::BadTime(s.to_string()))
    }

    /// The shift `DATE/NAME` (`2026-11-28/A`).
    pub fn shift(&self, label: &str) -> Result<ShiftWindow, CalendarError> {
        let (date, name) = label.split_once('/').ok_or_else(|| CalendarError::BadLabel(label.to_string()))?;
        let date: Date = date.trim().parse().map_err(|_| CalendarError::BadLabel(label.to_string()))?;
        let shift = self.shifts.iter().find(|s| s.name == name.trim()).ok_or_else(|| CalendarError::UnknownShift {
            name: name.trim().to_string(),
            known: self.shifts.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
        })?;
        if !runs_on(shift, date) {
            return Err(CalendarError::NotOnDay {
                name: shift.name.clone(),
                date: date.to_string(),
                weekday: date.weekday(),
            });
        }
        self.window(shift, date)
    }

    fn window(&self, shift: &ShiftConfig, date: Date) -> Result<ShiftWindow, CalendarError> {
        let start = self.local_to_ts(date.to_datetime(shift.start.time()))?;
        let end_date = if shift.end.minutes <= shift.start.minutes { next_day(date)? } else { date };
        let end = self.local_to_ts(end_date.to_datetime(shift.end.time()))?;
        let mut breaks = Vec::new();
        for b in &shift.breaks {
            let d = if b.start.minutes < shift.start.minutes { next_day(date)? } else { date };
            let s = self.local_to_ts(d.to_datetime(b.start.time()))?;
            let e = (s + b.minutes as i64 * NS_PER_MIN).min(end);
            if s < e {
                breaks.push((s, e));
            }
        }
        breaks.sort_unstable();
        Ok(ShiftWindow {
            label: format!("{date}/{}", shift.name),
            name: shift.name.clone(),
            date: date.to_string(),
            start,
            end,
            breaks,
        })
    }

    /// Every shift that overlaps [from, to), in time order.
    pub fn shifts_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<ShiftWindow>, CalendarError> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        // A shift starting the local day before `from` may still run (night shifts).
        let mut date = prev_day(self.ts_to_local(from).date())?;
        let last = self.ts_to_local(to).date();
        while date <= last {
            for s in &self.shifts {
                if runs_on(s, date) {
                    let w = self.window(s, date)?;
                    if w.start < to && from < w.end {
                        out.push(w);
                    }
                }
            }
            date = next_day(date)?;
        }
        out.sort_by_key(|w| w.start);
        Ok(out)
    }

    /// Planned stops overlapping [from, to) as UTC [start, end) ranges with their reason.
    pub fn planned_stops(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(Timestamp, Timestamp, String)>, CalendarError> {
        let mut out = Vec::new();
        for p in &self.stops {
            match (&p.from, &p.to, &p.weekly) {
                (Some(f), Some(t), _) => {
                    let (s, e) = (self.local_to_ts(f.0)?, self.local_to_ts(t.0)?);
                    if s < to && from < e {
                        out.push((s, e, p.reason.clone()));
                    }
                }
                (_, _, Some(w)) => {
                    // Weekly stops may run past midnight: start looking a week back.
                    let mut date = self.ts_to_local(from).date();
                    for _ in 0..7 {
                        date = prev_day(date)?;
                    }
                    let last = self.ts_to_local(to).date();
                    while date <= last {
                        if date.weekday() == w.day.0 {
                            let s = self.local_to_ts(date.to_datetime(w.start.time()))?;
                            let e = s + w.minutes as i64 * NS_PER_MIN;
                            if s < to && from < e {
                                out.push((s, e, p.reason.clone()));
                            }
                        }
                        date = next_day(date)?;
                    }
                }
                _ => {}
            }
        }
        out.sort_by_key(|s| (s.0, s.1));
        Ok(out)
    }

    /// Planned production time within [from, to): the shifts (the whole range when no
    /// shift is configured) less their breaks and less planned stops; sorted, disjoint.
    pub fn planned(&self, from: Timestamp, to: Timestamp) -> Result<Vec<(Timestamp, Timestamp)>, CalendarError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let mut keep: Vec<(Timestamp, Timestamp)> = Vec::new();
        let mut cut: Vec<(Timestamp, Timestamp)> = Vec::new();
        if self.shifts.is_empty() {
            keep.push((from, to));
        } else {
            for w in self.shifts_between(from, to)? {
                keep.push((w.start.max(from), w.end.min(to)));
                cut.extend(w.breaks.iter().copied());
            }
        }
        cut.extend(self.planned_stops(from, to)?.into_iter().map(|(s, e, _)| (s, e)));
        Ok(subtract(&union(keep), &union(cut)))
    }
}

fn runs_on(shift: &ShiftConfig, date: Date) -> bool {
    shift.days.as_ref().is_none_or(|days| days.iter().any(|d| d.0 == date.weekday()))
}

fn next_day(d: Date) -> Result<Date, CalendarError> {
    d.tomorrow().map_err(|_| CalendarError::OutOfRange(d.to_string()))
}

fn prev_day(d: Date) -> Result<Date, CalendarError> {
    d.yesterday().map_err(|_| CalendarError::OutOfRange(d.to_string()))
}

/// Sorted, merged ranges.
pub fn union(mut r: Vec<(Timestamp, Timestamp)>) -> Vec<(Timestamp, Timestamp)> {
    r.retain(|(s, e)| s < e);
    r.sort_unstable();
    let mut out: Vec<(Timestamp, Timestamp)> = Vec::with_capacity(r.len());
    for (s, e) in r {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// `a` less `b`; both sorted and disjoint (as [`union`] makes them).
pub fn subtract(a: &[(Timestamp, Timestamp)], b: &[(Timestamp, Timestamp)]) -> Vec<(Timestamp, Timestamp)> {
    let mut out = Vec::new();
    for &(mut s, e) in a {
        for &(bs, be) in b {
            if be <= s || bs >= e {
                continue;
            }
            if bs > s {
                out.push((s, bs));
            }
            s = s.max(be);
            if s >= e {
                break;
            }
        }
        if s < e {
            out.push((s, e));
        }
    }
    out
}

/// Length of the overlap of [s, e) with the sorted, disjoint `ranges`.
pub fn overlap(ranges: &[(Timestamp, Timestamp)], s: Timestamp, e: Timestamp) -> i64 {
    let first = ranges.partition_point(|r| r.1 <= s);
    let mut total = 0;
    for &(rs, re) in &ranges[first..] {
        if rs >= e {
            break;
        }
        total += re.min(e) - rs.max(s);
    }
    total.max(0)
}

/// Whether `t` lies within one of the sorted, disjoint `ranges`.
pub fn contains(ranges: &[(Timestamp, Timestamp)], t: Timestamp) -> bool {
    let i = ranges.partition_point(|r| r.1 <= t);
    ranges.get(i).is_some_and(|r| r.0 <= t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000_000;

    fn shift(name: &str, start: &str, end: &str, breaks: &[(&str, u32)]) -> ShiftConfig {
        ShiftConfig {
            name: name.into(),
            start: TimeOfDay::parse(start).unwrap(),
            end: TimeOfDay::parse(end).unwrap(),
            breaks: breaks
                .iter()
                .map(|(s, m)| BreakConfig { start: TimeOfDay::parse(s).unwrap(), minutes: *m })
                .collect(),
            days: None,
            target: None,
        }
    }

    fn utc(s: &str) -> Timestamp {
        i64::try_from(s.parse::<jiff::Timestamp>().unwrap().as_nanosecond()).unwrap()
    }

    fn three_shifts() -> Vec<ShiftConfig> {
        vec![
            shift("A", "06:00", "14:00", &[("10:00", 30)]),
            shift("B", "14:00", "22:00", &[("18:00", 30)]),
            shift("C", "22:00", "06:00", &[("02:00", 30)]),
        ]
    }

    #[test]
    fn times_of_day() {
        assert_eq!(TimeOfDay::parse("06:00").unwrap().minutes, 360);
        assert_eq!(TimeOfDay::parse("6:05").unwrap().minutes, 365);
        assert_eq!(TimeOfDay::parse("23:59").unwrap().to_string(), "23:59");
        for bad in ["24:00", "12:60", "12", "12:5", "ab:cd", ""] {
            assert!(TimeOfDay::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shanghai_shift_and_night_shift_across_midnight() {
        let cal = Calendar::from_parts("Asia/Shanghai", three_shifts(), vec![]).unwrap();
        let a = cal.shift("2026-11-28/A").unwrap();
        // 06:00 in Shanghai (UTC+8) is 22:00 UTC the day before.
        assert_eq!(a.start, utc("2026-11-27T22:00:00Z"));
        assert_eq!(a.end, utc("2026-11-28T06:00:00Z"));
        assert_eq!(a.breaks, vec![(utc("2026-11-28T02:00:00Z"), utc("2026-11-28T02:30:00Z"))]);
        let c = cal.shift("2026-11-28/C").unwrap();
        assert_eq!(c.start, utc("2026-11-28T14:00:00Z"));
        assert_eq!(c.end, utc("2026-11-28T22:00:00Z"));
        // The 02:00 break of the night shift is on the next local day.
        assert_eq!(c.breaks, vec![(utc("2026-11-28T18:00:00Z"), utc("2026-11-28T18:30:00Z"))]);
        assert_eq!(cal.parse_time("2026-11-28T06:00").unwrap(), a.start);
        assert_eq!(cal.parse_time("2026-11-27T22:00:00Z").unwrap(), a.start);
        let planned = cal.planned(a.start, a.end).unwrap();
        assert_eq!(planned.iter().map(|(s, e)| e - s).sum::<i64>(), 8 * H - H / 2);
        let all = cal.shifts_between(a.start, c.end).unwrap();
        let labels: Vec<&str> = all.iter().map(|w| w.label.as_str()).collect();
        assert_eq!(labels, ["2026-11-28/A", "2026-11-28/B", "2026-11-28/C"]);
    }

    #[test]
    fn berlin_night_shift_over_the_dst_change_is_an_hour_longer() {
        // 2026-10-25: Europe/Berlin goes back from 03:00 CEST to 02:00 CET.
        let cal = Calendar::from_parts("Europe/Berlin", three_shifts(), vec![]).unwrap();
        let c = cal.shift("2026-10-24/C").unwrap();
        assert_eq!(c.start, utc("2026-10-24T20:00:00Z"));
        assert_eq!(c.end, utc("2026-10-25T05:00:00Z"));
        assert_eq!(c.end - c.start, 9 * H);
        // The 02:00 break falls in the repeated hour: the earlier 02:00 (CEST) is taken.
        assert_eq!(c.breaks[0].0, utc("2026-10-25T00:00:00Z"));
        // Spring forward (2026-03-29, 02:00 -> 03:00): the night shift is an hour shorter,
        // and its 02:00 break (a time that does not exist) starts at 03:00 CEST.
        let c = cal.shift("2026-03-28/C").unwrap();
        assert_eq!(c.end - c.start, 7 * H);
        assert_eq!(c.breaks[0].0, utc("2026-03-29T01:00:00Z"));
        // A day shift in summer: UTC+2.
        assert_eq!(cal.shift("2026-07-01/A").unwrap().start, utc("2026-07-01T04:00:00Z"));
    }

    #[test]
    fn days_and_planned_stops() {
        let mut shifts = three_shifts();
        shifts[0].days = Some(vec![Day(Weekday::Monday), Day(Weekday::Saturday)]);
        let stops = vec![
            PlannedStopConfig {
                reason: "maintenance".into(),
                from: None,
                to: None,
                weekly: Some(WeeklyStop {
                    day: Day(Weekday::Saturday),
                    start: TimeOfDay::parse("12:00").unwrap(),
                    minutes: 120,
                }),
            },
            PlannedStopConfig {
                reason: "audit".into(),
                from: Some(LocalDateTime("2026-11-28T07:00".parse().unwrap())),
                to: Some(LocalDateTime("2026-11-28T07:15".parse().unwrap())),
                weekly: None,
            },
        ];
        let cal = Calendar::from_parts("UTC", shifts, stops).unwrap();
        // 2026-11-28 is a Saturday, 2026-11-29 a Sunday.
        let a = cal.shift("2026-11-28/A").unwrap();
        assert!(matches!(cal.shift("2026-11-29/A"), Err(CalendarError::NotOnDay { .. })));
        assert!(matches!(cal.shift("2026-11-28/X"), Err(CalendarError::UnknownShift { .. })));
        assert!(matches!(cal.shift("2026-11-28"), Err(CalendarError::BadLabel(_))));
        let planned = cal.planned(a.start, a.end).unwrap();
        // 06:00-14:00 less 07:00-07:15, 10:00-10:30 and 12:00-14:00.
        assert_eq!(
            planned,
            vec![
                (utc("2026-11-28T06:00:00Z"), utc("2026-11-28T07:00:00Z")),
                (utc("2026-11-28T07:15:00Z"), utc("2026-11-28T10:00:00Z")),
                (utc("2026-11-28T10:30:00Z"), utc("2026-11-28T12:00:00Z")),
            ]
        );
        assert_eq!(overlap(&planned, utc("2026-11-28T06:30:00Z"), utc("2026-11-28T07:30:00Z")), 45 * NS_PER_MIN);
        assert!(contains(&planned, utc("2026-11-28T06:00:00Z")));
        assert!(!contains(&planned, utc("2026-11-28T07:00:00Z")));
        // Sunday has no shift A, only B and C: a day window is planned 2 x 7.5 h
        // plus the tail of Saturday's C (00:00-06:00 less its break).
        let sun = cal.planned(utc("2026-11-29T00:00:00Z"), utc("2026-11-30T00:00:00Z")).unwrap();
        let total: i64 = sun.iter().map(|(s, e)| e - s).sum();
        assert_eq!(total, 6 * H - H / 2 + 8 * H - H / 2 + 2 * H);
    }

    #[test]
    fn checks() {
        let mut s = shift("A", "06:00", "14:00", &[("13:45", 30), ("05:00", 10)]);
        let keys: Vec<&str> = s.check().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["breaks", "breaks"]);
        s.breaks.clear();
        s.end = s.start;
        assert_eq!(s.check().len(), 1);
        assert!(shift("C", "22:00", "06:00", &[("02:00", 30), ("23:00", 15)]).check().is_empty());
        assert_eq!(shift("C", "22:00", "06:00", &[("02:00", 30), ("02:10", 15)]).check().len(), 1);
        assert!(time_zone("Mars/Olympus_Mons").is_err());
    }
}
