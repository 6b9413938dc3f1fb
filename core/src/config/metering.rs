//! `MeteringConfig`: how often usage is metered, in which currency it is priced, where the price
//! catalog comes from, and the names the FOCUS export bills under.

use super::{ConfigError, number};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteringConfig {
    /// `BULKHEAD_METERING_INTERVAL`: seconds between metering passes (default 3600).
    pub every: Duration,
    /// `BULKHEAD_METERING_TICK_SECONDS`: how often connections are counted between passes
    /// (default 60; peak and average connections come from these counts).
    pub tick: Duration,
    /// `BULKHEAD_BILLING_CURRENCY`: ISO 4217 code every charge is priced in (default EUR); the
    /// catalog must price every metered SKU in it.
    pub currency: String,
    /// `BULKHEAD_PRICING_DIR`: a folder of catalog files replacing the built-in catalog.
    pub pricing_dir: Option<PathBuf>,
    /// `BULKHEAD_BILLING_ACCOUNT_ID` / `_NAME`: FOCUS `BillingAccountId` / `BillingAccountName`
    /// (who pays: by default the installation).
    pub billing_account_id: String,
    pub billing_account_name: String,
    /// `BULKHEAD_BILLING_PROVIDER`: FOCUS `ProviderName`, `PublisherName`, `InvoiceIssuerName`.
    pub provider: String,
}

impl MeteringConfig {
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let currency = get("BULKHEAD_BILLING_CURRENCY").unwrap_or_else(|| "EUR".to_owned());
        if crate::money::minor_units(&currency).is_none() {
            return Err(ConfigError {
                var: "BULKHEAD_BILLING_CURRENCY",
                problem: format!(
                    "{currency:?} is not an ISO 4217 currency code (three capital letters, such as EUR or USD)"
                ),
            });
        }
        let text = |var: &'static str, default: &str| -> Result<String, ConfigError> {
            let value = get(var).unwrap_or_else(|| default.to_owned());
            if value.trim().is_empty() || value.len() > 200 {
                return Err(ConfigError {
                    var,
                    problem: "expected 1 to 200 characters".into(),
                });
            }
            Ok(value)
        };
        Ok(Self {
            every: Duration::from_secs(number(get, "BULKHEAD_METERING_INTERVAL", 3600, 1, 86_400)?),
            tick: Duration::from_secs(number(get, "BULKHEAD_METERING_TICK_SECONDS", 60, 1, 3600)?),
            currency,
            pricing_dir: get("BULKHEAD_PRICING_DIR").map(PathBuf::from),
            billing_account_id: text("BULKHEAD_BILLING_ACCOUNT_ID", "bulkhead-installation")?,
            billing_account_name: text("BULKHEAD_BILLING_ACCOUNT_NAME", "Bulkhead installation")?,
            provider: text("BULKHEAD_BILLING_PROVIDER", "Bulkhead")?,
        })
    }

    /// The price catalog this configuration names, checked to price every metered SKU.
    pub fn catalog(&self) -> Result<crate::pricing::Catalog, crate::pricing::CatalogError> {
        let catalog = match &self.pricing_dir {
            Some(dir) => crate::pricing::Catalog::load_dir(dir)?,
            None => crate::pricing::Catalog::builtin()?,
        };
        catalog.check_complete(&self.currency)?;
        Ok(catalog)
    }
}
