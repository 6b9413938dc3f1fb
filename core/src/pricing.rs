//! The price catalog (`infra/pricing/*.toml`): SKUs and their list prices by region, currency and
//! effective date; the lookup of the price in force at an instant, and the SKUs metering charges.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// The catalog shipped with the binaries.
const BUILTIN: &[(&str, &str)] = &[(
    "catalog.toml",
    include_str!("../../infra/pricing/catalog.toml"),
)];

/// What metering charges for: every SKU here must be in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Meter {
    EnvironmentHoursShared,
    EnvironmentHoursDedicated,
    StorageGbHours,
    ConnectionHours,
    PooledServerHours,
    DedicatedDatabaseHours,
}

impl Meter {
    pub const ALL: [Self; 6] = [
        Self::EnvironmentHoursShared,
        Self::EnvironmentHoursDedicated,
        Self::StorageGbHours,
        Self::ConnectionHours,
        Self::PooledServerHours,
        Self::DedicatedDatabaseHours,
    ];

    /// The catalog's SKU id.
    pub fn sku(self) -> &'static str {
        match self {
            Self::EnvironmentHoursShared => "environment-hours-shared",
            Self::EnvironmentHoursDedicated => "environment-hours-dedicated",
            Self::StorageGbHours => "storage-gb-hours",
            Self::ConnectionHours => "connection-hours",
            Self::PooledServerHours => "pooled-server-hours",
            Self::DedicatedDatabaseHours => "dedicated-database-hours",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("price catalog: {0}")]
    Incomplete(String),
}

/// A SKU: what is sold, in which unit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sku {
    pub id: String,
    pub description: String,
    /// FOCUS `PricingUnit` / `ConsumedUnit`.
    pub unit: String,
    /// FOCUS `ServiceCategory`.
    pub service_category: String,
    pub service_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    sku: String,
    region: String,
    currency: String,
    list_unit_price: String,
    /// A TOML date (`2026-01-01`).
    effective_from: toml::value::Datetime,
}

/// One list price, in force from `effective_from` (00:00 UTC) until a later entry for the same
/// SKU, region and currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub sku: String,
    /// A region id, or `*` for every region without its own entry.
    pub region: String,
    pub currency: String,
    pub list_unit_price: Decimal,
    pub effective_from: NaiveDate,
}

impl Price {
    /// FOCUS `SkuPriceId`: names this entry for good.
    pub fn id(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.sku, self.region, self.currency, self.effective_from
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    sku: Vec<Sku>,
    #[serde(default)]
    price: Vec<RawPrice>,
}

/// The whole catalog, validated.
#[derive(Debug, Clone)]
pub struct Catalog {
    skus: BTreeMap<String, Sku>,
    prices: Vec<Price>,
}

impl Catalog {
    /// The catalog compiled into the binaries.
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::from_files(
            BUILTIN
                .iter()
                .map(|(n, t)| ((*n).to_owned(), (*t).to_owned())),
        )
    }

    /// Every `*.toml` file of a folder (`BULKHEAD_PRICING_DIR`).
    pub fn load_dir(dir: &Path) -> Result<Self, CatalogError> {
        let unreadable = |reason: String| CatalogError::Invalid {
            file: dir.display().to_string(),
            reason,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| unreadable(e.to_string()))? {
            let path = entry.map_err(|e| unreadable(e.to_string()))?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).map_err(|e| unreadable(e.to_string()))?;
                files.push((path.display().to_string(), text));
            }
        }
        files.sort();
        Self::from_files(files)
    }

    /// Parses and validates files: known fields only, prices as decimals ≥ 0, ISO 4217
    /// currencies, known SKUs, one entry per (SKU, region, currency, date), every metered SKU
    /// present.
    pub fn from_files(
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, CatalogError> {
        let mut skus = BTreeMap::new();
        let mut prices = Vec::new();
        let mut raw_prices = Vec::new();
        for (file, text) in files {
            let raw: RawFile = toml::from_str(&text).map_err(|e| CatalogError::Invalid {
                file: file.clone(),
                reason: e.to_string(),
            })?;
            for sku in raw.sku {
                if skus.insert(sku.id.clone(), sku.clone()).is_some() {
                    return Err(CatalogError::Invalid {
                        file,
                        reason: format!("SKU {:?} is defined twice", sku.id),
                    });
                }
            }
            raw_prices.extend(raw.price.into_iter().map(|p| (file.clone(), p)));
        }
        let mut seen = HashSet::new();
        for (file, raw) in raw_prices {
            let invalid = |reason: String| CatalogError::Invalid {
                file: file.clone(),
                reason,
            };
            if !skus.contains_key(&raw.sku) {
                return Err(invalid(format!("price for unknown SKU {:?}", raw.sku)));
            }
            if crate::money::minor_units(&raw.currency).is_none() {
                return Err(invalid(format!(
                    "{:?} is not an ISO 4217 currency code (such as EUR or USD)",
                    raw.currency
                )));
            }
            let list_unit_price: Decimal = raw.list_unit_price.parse().map_err(|_| {
                invalid(format!(
                    "list_unit_price {:?} of {} is not a decimal number",
                    raw.list_unit_price, raw.sku
                ))
            })?;
            if list_unit_price.is_sign_negative() || list_unit_price.scale() > 10 {
                return Err(invalid(format!(
                    "list_unit_price of {} must be ≥ 0 with at most 10 decimal places",
                    raw.sku
                )));
            }
            let effective_from = raw
                .effective_from
                .date
                .filter(|_| raw.effective_from.time.is_none())
                .and_then(|d| {
                    NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
                })
                .ok_or_else(|| {
                    invalid(format!(
                        "effective_from of {} must be a date such as 2026-01-01",
                        raw.sku
                    ))
                })?;
            let price = Price {
                sku: raw.sku,
                region: raw.region,
                currency: raw.currency,
                list_unit_price,
                effective_from,
            };
            if !seen.insert(price.id()) {
                return Err(invalid(format!(
                    "two entries for {}: add a later effective_from instead of a second entry",
                    price.id()
                )));
            }
            prices.push(price);
        }
        prices.sort_by_key(|p| std::cmp::Reverse(p.effective_from));
        Ok(Self { skus, prices })
    }

    /// Fails unless every metered SKU has a `*` price in `currency` (so every region is priced).
    pub fn check_complete(&self, currency: &str) -> Result<(), CatalogError> {
        for meter in Meter::ALL {
            let priced = self
                .prices
                .iter()
                .any(|p| p.sku == meter.sku() && p.region == "*" && p.currency == currency);
            if !priced {
                return Err(CatalogError::Incomplete(format!(
                    "SKU {} has no price for region \"*\" in {currency}; add a [[price]] entry",
                    meter.sku()
                )));
            }
        }
        Ok(())
    }

    pub fn sku(&self, id: &str) -> Option<&Sku> {
        self.skus.get(id)
    }

    pub fn skus(&self) -> impl Iterator<Item = &Sku> {
        self.skus.values()
    }

    /// The price of `sku` in force at `at` for `region` in `currency`: the latest entry with
    /// `effective_from` on or before `at`'s date, the region's own entries before `*`.
    pub fn price_at(
        &self,
        sku: &str,
        region: &str,
        currency: &str,
        at: DateTime<Utc>,
    ) -> Option<&Price> {
        let day = at.date_naive();
        let in_force = |r: &str| {
            self.prices.iter().find(|p| {
                p.sku == sku && p.region == r && p.currency == currency && p.effective_from <= day
            })
        };
        in_force(region).or_else(|| in_force("*"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn the_shipped_catalog_prices_every_meter() {
        let catalog = Catalog::builtin().expect("catalog");
        catalog.check_complete("EUR").expect("complete");
        assert!(catalog.check_complete("USD").is_err());
        for meter in Meter::ALL {
            assert!(catalog.sku(meter.sku()).is_some(), "{meter:?}");
        }
    }

    #[test]
    fn the_price_in_force_is_the_latest_entry_on_or_before_the_day() {
        let catalog = Catalog::builtin().expect("catalog");
        let storage = |region: &str, when| {
            catalog
                .price_at("storage-gb-hours", region, "EUR", when)
                .map(|p| (p.list_unit_price.to_string(), p.id()))
        };
        // eu-west-1 has its own entry from 2026-12-01; before, the "*" entry applies.
        assert_eq!(
            storage("eu-west-1", at(2026, 11, 30, 23)),
            Some((
                "0.000162".into(),
                "storage-gb-hours:*:EUR:2026-01-01".into()
            ))
        );
        assert_eq!(
            storage("eu-west-1", at(2026, 12, 1, 0)),
            Some((
                "0.000175".into(),
                "storage-gb-hours:eu-west-1:EUR:2026-12-01".into()
            ))
        );
        assert_eq!(
            storage("us-east-1", at(2026, 12, 1, 0)).map(|p| p.0),
            Some("0.000162".into())
        );
        // Before the first entry there is no price.
        assert_eq!(storage("eu-west-1", at(2025, 12, 31, 0)), None);
        assert!(
            catalog
                .price_at("storage-gb-hours", "*", "USD", at(2026, 12, 1, 0))
                .is_none()
        );
    }

    #[test]
    fn a_catalog_with_mistakes_is_refused_with_the_reason() {
        let sku = "[[sku]]\nid = \"a\"\ndescription = \"d\"\nunit = \"Hours\"\nservice_category = \"Databases\"\nservice_name = \"n\"\n";
        let price = |region: &str, cur: &str, amount: &str, date: &str| {
            format!(
                "[[price]]\nsku = \"a\"\nregion = \"{region}\"\ncurrency = \"{cur}\"\nlist_unit_price = \"{amount}\"\neffective_from = {date}\n"
            )
        };
        let parse = |text: String| Catalog::from_files([("t.toml".to_owned(), text)]);
        let twice = format!(
            "{sku}{}{}",
            price("*", "EUR", "1", "2026-01-01"),
            price("*", "EUR", "2", "2026-01-01")
        );
        assert!(
            parse(twice)
                .expect_err("refused")
                .to_string()
                .contains("two entries")
        );
        let bad_currency = format!("{sku}{}", price("*", "EURO", "1", "2026-01-01"));
        assert!(
            parse(bad_currency)
                .expect_err("refused")
                .to_string()
                .contains("ISO 4217")
        );
        let negative = format!("{sku}{}", price("*", "EUR", "-1", "2026-01-01"));
        assert!(
            parse(negative)
                .expect_err("refused")
                .to_string()
                .contains("≥ 0")
        );
        let float = format!("{sku}{}", price("*", "EUR", "1e", "2026-01-01"));
        assert!(
            parse(float)
                .expect_err("refused")
                .to_string()
                .contains("decimal")
        );
        let unknown = price("*", "EUR", "1", "2026-01-01");
        assert!(
            parse(unknown)
                .expect_err("refused")
                .to_string()
                .contains("unknown SKU")
        );
        let ok = format!(
            "{sku}{}{}",
            price("*", "EUR", "1", "2026-01-01"),
            price("*", "EUR", "2", "2026-06-01")
        );
        let catalog = parse(ok).expect("valid");
        let price = catalog
            .price_at("a", "x", "EUR", at(2026, 6, 1, 0))
            .expect("price");
        assert_eq!(price.list_unit_price, Decimal::from(2));
    }
}
