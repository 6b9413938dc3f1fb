//! Exact money arithmetic (never floats): quantities at a fixed scale, allocation of an amount by
//! weights that sums back exactly, splitting a period into the hours it touches, ISO 4217
//! currencies and the one rounding rule applied where a person reads a total.

use chrono::{DateTime, Duration, DurationRound, Utc};
use rust_decimal::{Decimal, RoundingStrategy};

/// Decimal places every metered quantity carries (rounded half to even once, when measured).
/// Costs are exact products `quantity × unit price` and keep all their places.
pub const QUANTITY_SCALE: u32 = 12;

/// Seconds as an exact decimal (microseconds, as PostgreSQL keeps timestamps).
pub fn seconds_between(start: DateTime<Utc>, end: DateTime<Utc>) -> Decimal {
    let micros = (end - start).num_microseconds().unwrap_or(0).max(0);
    Decimal::new(micros, 6)
}

/// `seconds / 3600`, at [`QUANTITY_SCALE`].
pub fn hours(seconds: Decimal) -> Decimal {
    quantity(seconds / Decimal::from(3600))
}

/// A quantity rounded to [`QUANTITY_SCALE`] places, half to even.
pub fn quantity(value: Decimal) -> Decimal {
    value
        .round_dp_with_strategy(QUANTITY_SCALE, RoundingStrategy::MidpointNearestEven)
        .normalize()
}

/// Splits `total` (at most `scale` places) into parts proportional to `weights`, each at most
/// `scale` places, that add up to `total` exactly: every part is first rounded down, then the
/// units left over go one each to the parts with the largest remainders (ties: the earlier
/// part). All-zero (or empty) weights split evenly. Negative weights count as zero.
pub fn allocate(total: Decimal, weights: &[Decimal], scale: u32) -> Vec<Decimal> {
    if weights.is_empty() {
        return Vec::new();
    }
    let clean: Vec<Decimal> = weights.iter().map(|w| (*w).max(Decimal::ZERO)).collect();
    let sum: Decimal = clean.iter().copied().sum();
    let weights: Vec<Decimal> = if sum.is_zero() {
        vec![Decimal::ONE; clean.len()]
    } else {
        clean
    };
    let sum: Decimal = weights.iter().copied().sum();
    let total = total.round_dp_with_strategy(scale, RoundingStrategy::MidpointNearestEven);
    let unit = Decimal::new(1, scale);
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (index, weight) in weights.iter().enumerate() {
        let exact = total * *weight / sum;
        let floor = exact.round_dp_with_strategy(scale, RoundingStrategy::ToZero);
        parts.push(floor);
        remainders.push((exact - floor, index));
    }
    let mut left = total - parts.iter().copied().sum::<Decimal>();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let step = if total.is_sign_negative() {
        -unit
    } else {
        unit
    };
    for (_, index) in remainders.iter().cycle() {
        if left.is_zero() || (left.is_sign_negative() != step.is_sign_negative()) {
            break;
        }
        parts[*index] += step;
        left -= step;
    }
    parts.into_iter().map(|p| p.normalize()).collect()
}

/// The whole hours `[start, end)` touches, each with the seconds of it inside the period.
pub fn split_by_hour(start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<(DateTime<Utc>, Decimal)> {
    let mut out = Vec::new();
    if end <= start {
        return out;
    }
    let Ok(mut hour) = start.duration_trunc(Duration::hours(1)) else {
        return out;
    };
    while hour < end {
        let next = hour + Duration::hours(1);
        let from = start.max(hour);
        let to = end.min(next);
        out.push((hour, seconds_between(from, to)));
        hour = next;
    }
    out
}

/// Active ISO 4217 codes with their minor units (decimal places of a displayed amount).
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYU", 2),
    ("UZS", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// The minor units of an ISO 4217 currency code, or `None` for a code that is not one.
pub fn minor_units(currency: &str) -> Option<u32> {
    CURRENCIES
        .iter()
        .find(|(code, _)| *code == currency)
        .map(|(_, units)| *units)
}

/// The one rounding rule, applied only where a person reads an amount (`…_display` fields):
/// to the currency's minor units, half to even (banker's rounding), so rounding errors do not
/// drift one way over many totals. Stored amounts and exports are never rounded.
pub fn for_display(amount: Decimal, currency: &str) -> Decimal {
    let places = minor_units(currency).unwrap_or(2);
    amount.round_dp_with_strategy(places, RoundingStrategy::MidpointNearestEven)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::str::FromStr;

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).expect("decimal")
    }

    #[test]
    fn allocation_sums_to_the_total_exactly() {
        let total = d("10.000000000001");
        let parts = allocate(total, &[d("1"), d("1"), d("1")], 12);
        assert_eq!(parts.iter().copied().sum::<Decimal>(), total);
        assert_eq!(parts[0], d("3.333333333334"));
        assert_eq!(parts[1], d("3.333333333334"));
        assert_eq!(parts[2], d("3.333333333333"));
        // Storage shares: 1 GB, 3 GB, nothing.
        let parts = allocate(d("0.05"), &[d("1e9"), d("3e9"), d("0")], 12);
        assert_eq!(parts, vec![d("0.0125"), d("0.0375"), d("0")]);
        // Nothing stored anywhere: split evenly, still exact.
        let parts = allocate(
            d("1"),
            &[d("0"), d("0"), d("0"), d("0"), d("0"), d("0"), d("0")],
            12,
        );
        assert_eq!(parts.iter().copied().sum::<Decimal>(), d("1"));
        // Many odd weights.
        let weights: Vec<Decimal> = (1..=997).map(|i| Decimal::from(i * 7919 % 1013)).collect();
        let parts = allocate(d("123.456789012345"), &weights, 12);
        assert_eq!(
            parts.iter().copied().sum::<Decimal>(),
            d("123.456789012345")
        );
        assert!(
            parts
                .iter()
                .all(|p| p.scale() <= 12 && !p.is_sign_negative())
        );
        assert!(allocate(d("1"), &[], 12).is_empty());
    }

    #[test]
    fn a_period_is_prorated_over_the_hours_it_touches() {
        let start = Utc
            .with_ymd_and_hms(2026, 12, 1, 10, 45, 0)
            .single()
            .expect("time");
        let end = Utc
            .with_ymd_and_hms(2026, 12, 1, 12, 15, 30)
            .single()
            .expect("time");
        let split = split_by_hour(start, end);
        assert_eq!(split.len(), 3);
        assert_eq!(split[0].1, d("900"));
        assert_eq!(split[1].1, d("3600"));
        assert_eq!(split[2].1, d("930"));
        assert_eq!(
            split[2].0,
            Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0)
                .single()
                .expect("time")
        );
        let total: Decimal = split.iter().map(|(_, s)| *s).sum();
        assert_eq!(total, seconds_between(start, end));
        assert!(split_by_hour(end, start).is_empty());
        // 40 seconds are a small, non-zero number of hours.
        assert_eq!(hours(d("40")), d("0.011111111111"));
        assert_eq!(hours(d("3600")), d("1"));
    }

    #[test]
    fn display_rounding_is_half_to_even_in_minor_units() {
        assert_eq!(for_display(d("0.125"), "EUR"), d("0.12"));
        assert_eq!(for_display(d("0.135"), "EUR"), d("0.14"));
        assert_eq!(for_display(d("1234.5"), "JPY"), d("1234"));
        assert_eq!(for_display(d("1.0005"), "KWD"), d("1.000"));
        assert_eq!(minor_units("EUR"), Some(2));
        assert_eq!(minor_units("EURO"), None);
        assert_eq!(minor_units("XYZ"), None);
        assert_eq!(quantity(d("0.0000000000005")), d("0"));
        assert_eq!(quantity(d("0.0000000000015")), d("0.000000000002"));
    }
}
