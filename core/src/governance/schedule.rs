//! When a non-production stage's environments run: an IANA time zone, active weekdays and a
//! daily window (which may run past midnight), and whether an instant falls inside it.

use crate::domain::FieldError;
use chrono::{DateTime, Datelike, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A day of the week, as three lowercase letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mon => "mon",
            Self::Tue => "tue",
            Self::Wed => "wed",
            Self::Thu => "thu",
            Self::Fri => "fri",
            Self::Sat => "sat",
            Self::Sun => "sun",
        }
    }

    fn of(weekday: Weekday) -> Self {
        match weekday {
            Weekday::Mon => Self::Mon,
            Weekday::Tue => Self::Tue,
            Weekday::Wed => Self::Wed,
            Weekday::Thu => Self::Thu,
            Weekday::Fri => Self::Fri,
            Weekday::Sat => Self::Sat,
            Weekday::Sun => Self::Sun,
        }
    }
}

/// A schedule as a request gives it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// IANA time zone, such as `Europe/Berlin`.
    #[schema(example = "Europe/Berlin")]
    pub time_zone: String,
    /// The days a window starts on.
    #[schema(min_items = 1, max_items = 7)]
    pub days: Vec<Day>,
    /// Local start of the window, `HH:MM`.
    #[schema(example = "07:00", pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub start: String,
    /// Local end, `HH:MM`; earlier than `start` means the window runs past midnight.
    #[schema(example = "19:00", pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub end: String,
}

/// A valid schedule (stored as the request's words).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Schedule {
    pub time_zone: String,
    pub days: Vec<Day>,
    pub start: String,
    pub end: String,
}

fn parse_time(raw: &str) -> Option<NaiveTime> {
    (raw.len() == 5)
        .then(|| NaiveTime::parse_from_str(raw, "%H:%M").ok())
        .flatten()
}

impl ScheduleRequest {
    /// The schedule, or what is wrong with each field (under `prefix`).
    pub fn parse(&self, prefix: &str) -> Result<Schedule, Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.time_zone.parse::<Tz>().is_err() {
            errors.push(FieldError::new(
                format!("{prefix}.time_zone"),
                "must be an IANA time zone such as Europe/Berlin or America/Chicago",
            ));
        }
        if self.days.is_empty()
            || self
                .days
                .iter()
                .enumerate()
                .any(|(i, d)| self.days[..i].contains(d))
        {
            errors.push(FieldError::new(
                format!("{prefix}.days"),
                "must name at least one day (mon … sun), each at most once",
            ));
        }
        let start = parse_time(&self.start);
        let end = parse_time(&self.end);
        if start.is_none() {
            errors.push(FieldError::new(
                format!("{prefix}.start"),
                "must be a local time HH:MM, such as 07:00",
            ));
        }
        match end {
            None => errors.push(FieldError::new(
                format!("{prefix}.end"),
                "must be a local time HH:MM, such as 19:00",
            )),
            Some(end) if Some(end) == start => errors.push(FieldError::new(
                format!("{prefix}.end"),
                "must differ from start (an always-on stage needs no schedule)",
            )),
            Some(_) => {}
        }
        if errors.is_empty() {
            Ok(Schedule {
                time_zone: self.time_zone.clone(),
                days: self.days.clone(),
                start: self.start.clone(),
                end: self.end.clone(),
            })
        } else {
            Err(errors)
        }
    }
}

impl Schedule {
    /// Whether environments on this schedule run at `at`. A window starts on one of `days` at
    /// `start` local time and ends at `end` (the next day when `end` is earlier). Local times
    /// follow the zone's daylight-saving rules. `None` if the stored schedule is unreadable.
    pub fn is_active_at(&self, at: DateTime<Utc>) -> Option<bool> {
        let zone: Tz = self.time_zone.parse().ok()?;
        let (start, end) = (parse_time(&self.start)?, parse_time(&self.end)?);
        let local = at.with_timezone(&zone);
        let (today, time) = (Day::of(local.weekday()), local.time());
        let yesterday = Day::of(local.weekday().pred());
        Some(if start < end {
            self.days.contains(&today) && time >= start && time < end
        } else {
            (self.days.contains(&today) && time >= start)
                || (self.days.contains(&yesterday) && time < end)
        })
    }

    /// The first instant after `at` at which a window starts or ends (where environments on
    /// this schedule are started or stopped): looked for over the coming eight local days. A
    /// local time that a daylight-saving change skips counts from the first instant after the
    /// gap; one that occurs twice, from its first occurrence. `None` if the stored schedule is
    /// unreadable.
    pub fn next_change_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let zone: Tz = self.time_zone.parse().ok()?;
        let (start, end) = (parse_time(&self.start)?, parse_time(&self.end)?);
        let instant = |date: chrono::NaiveDate, time: NaiveTime| -> Option<DateTime<Utc>> {
            let local = date.and_time(time);
            // A skipped local time: the first minute after the gap (at most a few hours long).
            (0..=180).find_map(|minutes| {
                zone.from_local_datetime(&(local + chrono::Duration::minutes(minutes)))
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
            })
        };
        let today = at.with_timezone(&zone).date_naive();
        let mut next: Option<DateTime<Utc>> = None;
        for offset in -1..=8 {
            let date = today + chrono::Duration::days(offset);
            if !self.days.contains(&Day::of(date.weekday())) {
                continue;
            }
            let end_date = if end <= start {
                date + chrono::Duration::days(1)
            } else {
                date
            };
            for candidate in [instant(date, start), instant(end_date, end)]
                .into_iter()
                .flatten()
                .filter(|t| *t > at)
            {
                next = Some(next.map_or(candidate, |n| n.min(candidate)));
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(zone: &str, days: &[Day], start: &str, end: &str) -> Schedule {
        ScheduleRequest {
            time_zone: zone.into(),
            days: days.to_vec(),
            start: start.into(),
            end: end.into(),
        }
        .parse("schedule")
        .expect("valid")
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn office_hours_in_berlin_follow_daylight_saving() {
        let office = schedule(
            "Europe/Berlin",
            &[Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri],
            "07:00",
            "19:00",
        );
        // Wednesday 2026-12-02, winter (UTC+1): 06:30 UTC is 07:30 local.
        assert_eq!(office.is_active_at(utc(2026, 12, 2, 6, 30)), Some(true));
        assert_eq!(office.is_active_at(utc(2026, 12, 2, 5, 59)), Some(false));
        assert_eq!(office.is_active_at(utc(2026, 12, 2, 18, 0)), Some(false));
        // Wednesday 2026-07-01, summer (UTC+2): 05:30 UTC is 07:30 local.
        assert_eq!(office.is_active_at(utc(2026, 7, 1, 5, 30)), Some(true));
        // Saturday.
        assert_eq!(office.is_active_at(utc(2026, 12, 5, 10, 0)), Some(false));
    }

    #[test]
    fn a_window_past_midnight_belongs_to_the_day_it_starts() {
        let night = schedule("UTC", &[Day::Fri], "22:00", "02:00");
        // Friday 2026-12-04 23:00 and Saturday 01:00 are inside; Friday 01:00 is not.
        assert_eq!(night.is_active_at(utc(2026, 12, 4, 23, 0)), Some(true));
        assert_eq!(night.is_active_at(utc(2026, 12, 5, 1, 0)), Some(true));
        assert_eq!(night.is_active_at(utc(2026, 12, 4, 1, 0)), Some(false));
        assert_eq!(night.is_active_at(utc(2026, 12, 5, 2, 0)), Some(false));
    }

    #[test]
    fn bad_fields_are_named() {
        let wrong = ScheduleRequest {
            time_zone: "Berlin".into(),
            days: vec![Day::Mon, Day::Mon],
            start: "7:00".into(),
            end: "24:00".into(),
        }
        .parse("s")
        .expect_err("invalid");
        let fields: Vec<&str> = wrong.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["s.time_zone", "s.days", "s.start", "s.end"]);
    }

    #[test]
    fn the_next_change_is_the_next_window_edge() {
        let office = schedule("Europe/Berlin", &[Day::Mon, Day::Fri], "07:00", "19:00");
        // Wednesday 2026-12-02 12:00 UTC: next is Friday 07:00 local (06:00 UTC).
        assert_eq!(
            office.next_change_after(utc(2026, 12, 2, 12, 0)),
            Some(utc(2026, 12, 4, 6, 0))
        );
        // Inside Friday's window: its end, 19:00 local.
        assert_eq!(
            office.next_change_after(utc(2026, 12, 4, 6, 0)),
            Some(utc(2026, 12, 4, 18, 0))
        );
        // After Friday's window: Monday's start.
        assert_eq!(
            office.next_change_after(utc(2026, 12, 4, 18, 0)),
            Some(utc(2026, 12, 7, 6, 0))
        );
        let night = schedule("UTC", &[Day::Fri], "22:00", "02:00");
        assert_eq!(
            night.next_change_after(utc(2026, 12, 4, 23, 0)),
            Some(utc(2026, 12, 5, 2, 0))
        );
        // Every change lands where the activity flips.
        let mut at = utc(2026, 3, 20, 0, 0);
        for _ in 0..20 {
            let next = office
                .next_change_after(at)
                .expect("a change within a week");
            let before = office.is_active_at(next - chrono::Duration::seconds(1));
            assert_ne!(before, office.is_active_at(next), "{next}");
            at = next;
        }
    }

    #[test]
    fn a_window_start_skipped_by_daylight_saving_begins_after_the_gap() {
        // 2027-03-28, Berlin skips 02:00–03:00 local; a 02:30 start begins at 03:00 (01:00 UTC).
        let early = schedule("Europe/Berlin", &[Day::Sun], "02:30", "05:00");
        assert_eq!(
            early.next_change_after(utc(2027, 3, 27, 12, 0)),
            Some(utc(2027, 3, 28, 1, 0))
        );
    }
}
