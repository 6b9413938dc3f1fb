//! Metering arithmetic (pure): an environment's sample for the stretch since it was last metered,
//! the hourly charges a pass's samples make at the prices in force, the pooled server's fixed
//! cost allocated by storage share, and budget thresholds and forecasts.

use crate::domain::Isolation;
use crate::money::{
    self, QUANTITY_SCALE, allocate, hours, quantity, seconds_between, split_by_hour,
};
use crate::pricing::{Catalog, Meter};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

/// How a charge was split off a shared cost (FOCUS has no column: `x_AllocationMethod`).
pub const ALLOCATION_BY_STORAGE: &str = "storage_share";
/// `x_AllocatedFrom` of the pooled server's cost: the pooled database.
pub fn pooled_resource(pooled_database: &str) -> String {
    format!("pooled-database:{pooled_database}")
}

/// The longest stretch one pass meters per environment: after an outage, passes catch up a day
/// at a time (each in one bounded transaction) instead of one huge write that could time out
/// again and again.
pub const MAX_STRETCH_HOURS: i64 = 24;

/// Where a pass's stretch starting at `start` ends: `now`, or `MAX_STRETCH_HOURS` later.
pub fn stretch_end(start: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    now.min(start + chrono::Duration::hours(MAX_STRETCH_HOURS))
}

/// Bytes in one GB of the `storage-gb-hours` SKU (decimal, as the catalog's description says).
const BYTES_PER_GB: i64 = 1_000_000_000;

/// Where metering left an environment last time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub metered_until: DateTime<Utc>,
    pub storage_bytes: i64,
    pub rows_read_total: i64,
    pub rows_written_total: i64,
}

/// An environment the pass looks at.
#[derive(Debug, Clone)]
pub struct Metered {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub isolation: Isolation,
    pub region: String,
    pub cost_tags: serde_json::Value,
    /// When its first apply succeeded (it stands from then on); `None`: never stood.
    pub ready_at: Option<DateTime<Utc>>,
    /// When its destroy succeeded.
    pub destroyed_at: Option<DateTime<Utc>>,
    pub cursor: Option<Cursor>,
    /// The stretches it stood stopped since its cursor (open-ended while stopped): no
    /// environment-hours are charged for them.
    pub stops: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>,
}

/// What the pass measured for one environment on its target (`None`: not found there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measurement {
    pub storage_bytes: Option<i64>,
    pub rows_read_total: Option<i64>,
    pub rows_written_total: Option<i64>,
    pub connections_peak: i32,
    pub connections_avg: Decimal,
}

/// One environment's usage over `[period_start, period_end)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub environment_id: Uuid,
    pub tenant_id: Uuid,
    pub isolation: Isolation,
    pub region: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub standing_seconds: Decimal,
    /// The parts of the period it stood stopped, in order.
    pub stopped: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    pub storage_bytes: i64,
    pub storage_measured: bool,
    pub connections_peak: i32,
    pub connections_avg: Decimal,
    pub rows_read: i64,
    pub rows_written: i64,
    pub rows_read_total: i64,
    pub rows_written_total: i64,
    pub cost_tags: serde_json::Value,
}

/// The sample for the stretch since the environment was last metered (or became ready) up to
/// `now` (or its destruction); `None` when there is no such stretch. A stat counter that went
/// down (statistics reset, database recreated) counts from zero.
pub fn sample(env: &Metered, measured: &Measurement, now: DateTime<Utc>) -> Option<Sample> {
    let start = env
        .cursor
        .as_ref()
        .map(|c| c.metered_until)
        .or(env.ready_at)?;
    let end = stretch_end(start, env.destroyed_at.map_or(now, |d| d.min(now)));
    if end <= start {
        return None;
    }
    let previous = env.cursor.clone();
    let delta = |total: Option<i64>, before: Option<i64>| -> (i64, i64) {
        match (total, before) {
            (Some(t), Some(b)) if t >= b => (t - b, t),
            (Some(t), _) => (t, t),
            (None, b) => (0, b.unwrap_or(0)),
        }
    };
    let (rows_read, rows_read_total) = delta(
        measured.rows_read_total,
        previous.as_ref().map(|c| c.rows_read_total),
    );
    let (rows_written, rows_written_total) = delta(
        measured.rows_written_total,
        previous.as_ref().map(|c| c.rows_written_total),
    );
    Some(Sample {
        environment_id: env.id,
        tenant_id: env.tenant_id,
        isolation: env.isolation,
        region: env.region.clone(),
        period_start: start,
        period_end: end,
        standing_seconds: seconds_between(start, end),
        stopped: env
            .stops
            .iter()
            .map(|(from, to)| (start.max(*from), end.min(to.unwrap_or(end))))
            .filter(|(from, to)| from < to)
            .collect(),
        storage_bytes: measured
            .storage_bytes
            .or(previous.as_ref().map(|c| c.storage_bytes))
            .unwrap_or(0),
        storage_measured: measured.storage_bytes.is_some(),
        connections_peak: measured.connections_peak,
        connections_avg: measured.connections_avg,
        rows_read,
        rows_written,
        rows_read_total,
        rows_written_total,
        cost_tags: env.cost_tags.clone(),
    })
}

/// One environment's charge for one SKU and hour.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    pub environment_id: Uuid,
    pub tenant_id: Uuid,
    pub meter: Meter,
    pub hour: DateTime<Utc>,
    pub sku_price_id: String,
    pub region: String,
    pub currency: String,
    pub unit: String,
    pub quantity: Decimal,
    pub list_unit_price: Decimal,
    /// `quantity × list_unit_price`, exact.
    pub cost: Decimal,
    pub allocation_method: Option<&'static str>,
    pub allocated_from: Option<String>,
    pub cost_tags: serde_json::Value,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no {currency} price for {sku} in region {region} on {day}: add one to the price catalog")]
pub struct NoPrice {
    pub sku: &'static str,
    pub region: String,
    pub currency: String,
    pub day: NaiveDate,
}

/// Prices charges at the catalog's prices in `currency`.
pub struct Pricer<'a> {
    pub catalog: &'a Catalog,
    pub currency: &'a str,
}

impl Pricer<'_> {
    fn charge(
        &self,
        sample: &Sample,
        meter: Meter,
        hour: DateTime<Utc>,
        qty: Decimal,
    ) -> Result<Charge, NoPrice> {
        let price = self
            .catalog
            .price_at(meter.sku(), &sample.region, self.currency, hour)
            .ok_or_else(|| NoPrice {
                sku: meter.sku(),
                region: sample.region.clone(),
                currency: self.currency.to_owned(),
                day: hour.date_naive(),
            })?;
        let unit = self
            .catalog
            .sku(meter.sku())
            .map_or_else(|| "Units".to_owned(), |s| s.unit.clone());
        Ok(Charge {
            environment_id: sample.environment_id,
            tenant_id: sample.tenant_id,
            meter,
            hour,
            sku_price_id: price.id(),
            region: sample.region.clone(),
            currency: self.currency.to_owned(),
            unit,
            quantity: qty,
            list_unit_price: price.list_unit_price,
            cost: qty * price.list_unit_price,
            allocation_method: None,
            allocated_from: None,
            cost_tags: sample.cost_tags.clone(),
        })
    }

    /// The environment's own charges for a sample, per hour it touches: environment-hours of
    /// its tier, storage GB-hours, connection-hours and, when dedicated, database-hours (a zero
    /// quantity makes no charge).
    pub fn sample_charges(&self, sample: &Sample) -> Result<Vec<Charge>, NoPrice> {
        let gb = Decimal::from(sample.storage_bytes) / Decimal::from(BYTES_PER_GB);
        let mut out = Vec::new();
        for (hour, seconds) in split_by_hour(sample.period_start, sample.period_end) {
            let h = hours(seconds);
            let tier = match sample.isolation {
                Isolation::Shared => Meter::EnvironmentHoursShared,
                Isolation::Dedicated => Meter::EnvironmentHoursDedicated,
            };
            // A stopped environment keeps its storage (and a dedicated one its database), but
            // is not charged as running.
            let (from, to) = (
                sample.period_start.max(hour),
                sample.period_end.min(hour + chrono::Duration::hours(1)),
            );
            let stopped: Decimal = sample
                .stopped
                .iter()
                .map(|(a, b)| seconds_between(from.max(*a), to.min(*b)))
                .sum();
            out.push(self.charge(
                sample,
                tier,
                hour,
                hours((seconds - stopped).max(Decimal::ZERO)),
            )?);
            out.push(self.charge(
                sample,
                Meter::StorageGbHours,
                hour,
                quantity(gb * seconds / Decimal::from(3600)),
            )?);
            out.push(self.charge(
                sample,
                Meter::ConnectionHours,
                hour,
                quantity(sample.connections_avg * seconds / Decimal::from(3600)),
            )?);
            if sample.isolation == Isolation::Dedicated {
                out.push(self.charge(sample, Meter::DedicatedDatabaseHours, hour, h)?);
            }
        }
        // Nothing used, nothing charged (no connections, an empty schema): no zero rows.
        out.retain(|c| !c.quantity.is_zero());
        Ok(out)
    }

    /// The pooled server's fixed cost over `[start, end)`, hour by hour, allocated to the shared
    /// environments that stood in that hour by their share of its storage (bytes × seconds
    /// stood in the hour; evenly by time when nothing is stored). Each hour's parts add up to the
    /// hour's quantity exactly; an hour in which no shared environment stood is not charged.
    pub fn pooled_charges(
        &self,
        samples: &[Sample],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        allocated_from: &str,
    ) -> Result<Vec<Charge>, NoPrice> {
        let shared: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.isolation == Isolation::Shared)
            .collect();
        let mut out = Vec::new();
        for (hour, seconds) in split_by_hour(start, end) {
            let hour_end = hour + chrono::Duration::hours(1);
            let (from, to) = (start.max(hour), end.min(hour_end));
            let standing: Vec<(&Sample, Decimal)> = shared
                .iter()
                .map(|s| {
                    let overlap = seconds_between(s.period_start.max(from), s.period_end.min(to));
                    (*s, overlap)
                })
                .filter(|(_, overlap)| !overlap.is_zero())
                .collect();
            if standing.is_empty() {
                continue;
            }
            let by_storage: Vec<Decimal> = standing
                .iter()
                .map(|(s, overlap)| Decimal::from(s.storage_bytes) * *overlap)
                .collect();
            let weights = if by_storage.iter().all(Decimal::is_zero) {
                standing.iter().map(|(_, overlap)| *overlap).collect()
            } else {
                by_storage
            };
            let parts = allocate(hours(seconds), &weights, QUANTITY_SCALE);
            for ((sample, _), part) in standing.iter().zip(parts) {
                let mut charge = self.charge(sample, Meter::PooledServerHours, hour, part)?;
                charge.allocation_method = Some(ALLOCATION_BY_STORAGE);
                charge.allocated_from = Some(allocated_from.to_owned());
                if !charge.quantity.is_zero() {
                    out.push(charge);
                }
            }
        }
        Ok(out)
    }
}

/// The calendar month `at` falls in: `[first day, first day of the next month)`.
pub fn month_of(at: DateTime<Utc>) -> (NaiveDate, NaiveDate) {
    let first = NaiveDate::from_ymd_opt(at.year(), at.month(), 1).unwrap_or_default();
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(first);
    (first, next)
}

/// Thresholds (percent of `amount`) that `spent` has reached.
pub fn reached_thresholds(thresholds: &[i32], amount: Decimal, spent: Decimal) -> Vec<i32> {
    thresholds
        .iter()
        .copied()
        .filter(|t| spent * Decimal::from(100) >= amount * Decimal::from(*t))
        .collect()
}

/// Spend to the period's end at the pace so far: `spent × period length / time elapsed`
/// (`spent` when no time has elapsed).
pub fn forecast(
    spent: Decimal,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Decimal {
    let elapsed = seconds_between(start, now.min(end));
    if elapsed.is_zero() {
        return spent;
    }
    money::quantity(spent * seconds_between(start, end) / elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::str::FromStr;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, h, m, 0)
            .single()
            .expect("time")
    }
    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).expect("decimal")
    }
    fn env(isolation: Isolation, ready_at: DateTime<Utc>) -> Metered {
        Metered {
            id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            isolation,
            region: "eu-west-1".into(),
            cost_tags: serde_json::json!({"cost_center": "cc-1"}),
            ready_at: Some(ready_at),
            destroyed_at: None,
            cursor: None,
            stops: Vec::new(),
        }
    }

    #[test]
    fn stopped_time_is_not_charged_as_running_but_storage_still_is() {
        // Ready at 08:00, stopped 08:30–09:15 and again from 09:45 (still stopped at 10:00).
        let e = Metered {
            stops: vec![(t(8, 30), Some(t(9, 15))), (t(9, 45), None)],
            ..env(Isolation::Dedicated, t(8, 0))
        };
        let measured = Measurement {
            storage_bytes: Some(1_000_000_000),
            ..Measurement::default()
        };
        let s = sample(&e, &measured, t(10, 0)).expect("sample");
        assert_eq!(s.stopped, vec![(t(8, 30), t(9, 15)), (t(9, 45), t(10, 0))]);
        let catalog = Catalog::builtin().expect("catalog");
        let pricer = Pricer {
            catalog: &catalog,
            currency: "EUR",
        };
        let charges = pricer.sample_charges(&s).expect("priced");
        let of = |meter: Meter| -> Vec<Decimal> {
            charges
                .iter()
                .filter(|c| c.meter == meter)
                .map(|c| c.quantity)
                .collect()
        };
        // 08:00–09:00 ran 30 min; 09:00–10:00 ran 09:15–09:45.
        assert_eq!(of(Meter::EnvironmentHoursDedicated), [d("0.5"), d("0.5")]);
        // The database and its gigabyte stood all the time.
        assert_eq!(of(Meter::DedicatedDatabaseHours), [d("1"), d("1")]);
        assert_eq!(of(Meter::StorageGbHours), [d("1"), d("1")]);
        // Stopped for a whole hour: no environment-hours row at all.
        let whole = Metered {
            stops: vec![(t(7, 0), None)],
            ..env(Isolation::Shared, t(8, 0))
        };
        let s = sample(&whole, &measured, t(9, 0)).expect("sample");
        let charges = pricer.sample_charges(&s).expect("priced");
        assert!(
            charges
                .iter()
                .all(|c| c.meter != Meter::EnvironmentHoursShared)
        );
    }

    #[test]
    fn a_young_environment_has_small_non_zero_charges() {
        let e = env(Isolation::Shared, t(10, 0));
        let measured = Measurement {
            storage_bytes: Some(2_000_000_000),
            ..Measurement::default()
        };
        let s = sample(&e, &measured, t(10, 1)).expect("sample");
        assert_eq!(s.standing_seconds, d("60"));
        let catalog = Catalog::builtin().expect("catalog");
        let pricer = Pricer {
            catalog: &catalog,
            currency: "EUR",
        };
        let charges = pricer.sample_charges(&s).expect("priced");
        let env_hours = &charges[0];
        assert_eq!(env_hours.quantity, d("0.016666666667"));
        assert_eq!(env_hours.cost, d("0.016666666667") * d("0.0125"));
        assert!(env_hours.cost > Decimal::ZERO);
        // 2 GB for a minute in eu-west-1 (its December price).
        assert_eq!(charges[1].quantity, d("0.033333333333"));
        assert_eq!(
            charges[1].sku_price_id,
            "storage-gb-hours:eu-west-1:EUR:2026-12-01"
        );
        assert!(
            charges
                .iter()
                .all(|c| c.cost == c.quantity * c.list_unit_price)
        );
    }

    #[test]
    fn a_sample_starts_where_the_last_ended_and_stops_at_destruction() {
        let mut e = env(Isolation::Dedicated, t(8, 0));
        e.cursor = Some(Cursor {
            metered_until: t(9, 0),
            storage_bytes: 500,
            rows_read_total: 100,
            rows_written_total: 40,
        });
        e.destroyed_at = Some(t(9, 30));
        let measured = Measurement {
            storage_bytes: None,
            rows_read_total: Some(30),
            ..Measurement::default()
        };
        let s = sample(&e, &measured, t(10, 0)).expect("sample");
        assert_eq!((s.period_start, s.period_end), (t(9, 0), t(9, 30)));
        assert_eq!(s.storage_bytes, 500, "the last measured size stands in");
        assert!(!s.storage_measured);
        assert_eq!(
            (s.rows_read, s.rows_read_total),
            (30, 30),
            "a reset counter counts from 0"
        );
        assert_eq!((s.rows_written, s.rows_written_total), (0, 40));
        e.cursor = Some(Cursor {
            metered_until: t(9, 30),
            ..e.cursor.clone().expect("cursor")
        });
        // After a long outage a pass meters at most a day; the next ones catch up.
        let late = env(Isolation::Shared, t(0, 0) - chrono::Duration::days(3));
        let s = sample(&late, &measured, t(10, 0)).expect("sample");
        assert_eq!(
            s.period_end - s.period_start,
            chrono::Duration::hours(MAX_STRETCH_HOURS)
        );
        assert!(
            sample(&e, &measured, t(10, 0)).is_none(),
            "nothing after destruction"
        );
        let never = Metered {
            ready_at: None,
            ..env(Isolation::Shared, t(8, 0))
        };
        assert!(sample(&never, &measured, t(10, 0)).is_none());
    }

    #[test]
    fn the_pooled_server_is_split_by_storage_share_exactly() {
        let catalog = Catalog::builtin().expect("catalog");
        let pricer = Pricer {
            catalog: &catalog,
            currency: "EUR",
        };
        let mk = |bytes: i64, from: DateTime<Utc>| {
            let e = env(Isolation::Shared, from);
            let m = Measurement {
                storage_bytes: Some(bytes),
                ..Measurement::default()
            };
            sample(&e, &m, t(12, 0)).expect("sample")
        };
        let samples = vec![mk(1_000, t(10, 0)), mk(3_000, t(10, 0)), mk(0, t(11, 30))];
        let charges = pricer
            .pooled_charges(
                &samples,
                t(10, 0),
                t(12, 0),
                "pooled-database:bulkhead_pool",
            )
            .expect("priced");
        for hour in [t(10, 0), t(11, 0)] {
            let in_hour: Vec<&Charge> = charges.iter().filter(|c| c.hour == hour).collect();
            let q: Decimal = in_hour.iter().map(|c| c.quantity).sum();
            let cost: Decimal = in_hour.iter().map(|c| c.cost).sum();
            assert_eq!(q, Decimal::ONE, "the hour's quantity is allocated whole");
            assert_eq!(cost, d("0.68"), "and so is its cost");
        }
        let first_hour: Vec<Decimal> = charges
            .iter()
            .filter(|c| c.hour == t(10, 0))
            .map(|c| c.quantity)
            .collect();
        assert_eq!(first_hour, vec![d("0.25"), d("0.75")]);
        assert!(
            charges
                .iter()
                .all(|c| c.allocation_method == Some(ALLOCATION_BY_STORAGE))
        );
        // Nobody stored anything: split by time stood.
        let empty = vec![mk(0, t(11, 0)), mk(0, t(11, 30))];
        let charges = pricer
            .pooled_charges(&empty, t(11, 0), t(12, 0), "p")
            .expect("priced");
        let parts: Vec<Decimal> = charges.iter().map(|c| c.quantity).collect();
        assert_eq!(parts, vec![d("0.666666666667"), d("0.333333333333")]);
    }

    #[test]
    fn the_readmes_worked_example_adds_up() {
        // README, "What it costs": an hour in December 2026 in eu-west-1.
        let catalog = Catalog::builtin().expect("catalog");
        let pricer = Pricer {
            catalog: &catalog,
            currency: "EUR",
        };
        let at = |h| {
            Utc.with_ymd_and_hms(2026, 12, 2, h, 0, 0)
                .single()
                .expect("time")
        };
        let mk = |isolation, bytes: i64, connections: i64| {
            let e = env(isolation, at(10));
            let m = Measurement {
                storage_bytes: Some(bytes),
                connections_peak: 3,
                connections_avg: Decimal::from(connections),
                ..Measurement::default()
            };
            sample(&e, &m, at(11)).expect("sample")
        };
        let web = mk(Isolation::Shared, 2_500_000_000, 3);
        let other = mk(Isolation::Shared, 7_500_000_000, 0);
        let erp = mk(Isolation::Dedicated, 500_000_000, 1);
        let samples = vec![web.clone(), other, erp.clone()];
        let mut charges = Vec::new();
        for s in &samples {
            charges.extend(pricer.sample_charges(s).expect("priced"));
        }
        charges.extend(
            pricer
                .pooled_charges(&samples, at(10), at(11), "p")
                .expect("priced"),
        );
        let cost_of = |id: Uuid| -> Decimal {
            charges
                .iter()
                .filter(|c| c.environment_id == id)
                .map(|c| c.cost)
                .sum()
        };
        assert_eq!(cost_of(web.environment_id), d("0.1853375"));
        assert_eq!(cost_of(erp.environment_id), d("0.1458875"));
        let total = cost_of(web.environment_id) + cost_of(erp.environment_id);
        assert_eq!(total, d("0.331225"));
        assert_eq!(money::for_display(total, "EUR"), d("0.33"));
        assert_eq!(
            money::for_display(cost_of(web.environment_id), "EUR"),
            d("0.19")
        );
        assert_eq!(
            money::for_display(cost_of(erp.environment_id), "EUR"),
            d("0.15")
        );
    }

    #[test]
    fn budgets_cross_thresholds_and_forecast_linearly() {
        assert_eq!(
            reached_thresholds(&[50, 80, 100], d("100"), d("80")),
            vec![50, 80]
        );
        assert_eq!(
            reached_thresholds(&[50, 80, 100], d("100"), d("49.99")),
            Vec::<i32>::new()
        );
        let (from, to) = month_of(t(12, 0));
        assert_eq!(from.to_string(), "2026-12-01");
        assert_eq!(to.to_string(), "2027-01-01");
        let start = Utc
            .with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
            .single()
            .expect("time");
        let end = Utc
            .with_ymd_and_hms(2026, 12, 11, 0, 0, 0)
            .single()
            .expect("time");
        let now = Utc
            .with_ymd_and_hms(2026, 12, 6, 0, 0, 0)
            .single()
            .expect("time");
        assert_eq!(forecast(d("10"), start, end, now), d("20"));
        assert_eq!(forecast(d("10"), start, end, start), d("10"));
    }
}
