//! Schemas of request fields whose rules are more than a type: the patterns and bounds the
//! parsers in `bulkhead_core::domain` apply, so the OpenAPI document describes exactly the
//! values the server takes (a generated client, or the contract fuzzer, sends nothing it would
//! refuse). Used with `#[schema(schema_with = ...)]`.

use bulkhead_core::domain::patterns;
use utoipa::openapi::schema::{AdditionalProperties, SchemaType};
use utoipa::openapi::{Object, ObjectBuilder, Type};

fn text(nullable: bool) -> ObjectBuilder {
    let kind = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    ObjectBuilder::new().schema_type(kind)
}

fn display_text(max_chars: usize, nullable: bool, description: &str) -> Object {
    text(nullable)
        .pattern(Some(patterns::display_text(max_chars)))
        .description(Some(format!(
            "{description}1 to {max_chars} characters once surrounding whitespace is trimmed; no \
             control, zero-width or direction-changing characters."
        )))
        .build()
}

/// A tenant's name.
pub fn tenant_name() -> Object {
    display_text(200, false, "")
}

/// A tenant's new name (absent or `null`: unchanged).
pub fn tenant_rename() -> Object {
    display_text(200, true, "Absent or `null`: unchanged. ")
}

/// A person's or partner's display name.
pub fn display_name() -> Object {
    display_text(200, true, "Absent or `null`: the email. ")
}

/// An API key's name.
pub fn key_name() -> Object {
    display_text(100, false, "")
}

pub fn email() -> Object {
    text(false)
        .pattern(Some(patterns::email()))
        .max_length(Some(patterns::EMAIL_MAX_CHARS))
        .description(Some(
            "An email address such as ops@example.com, at most 254 characters (the part before \
             `@` at most 64); compared in lower case.",
        ))
        .build()
}

pub fn slug() -> Object {
    text(false)
        .pattern(Some(patterns::SLUG))
        .description(Some("Unique; used in URLs in place of the id."))
        .build()
}

pub fn region() -> Object {
    text(false)
        .pattern(Some(patterns::REGION))
        .max_length(Some(patterns::REGION_MAX_CHARS))
        .description(Some("Such as `eu-west-1`."))
        .build()
}

pub fn environment_name() -> Object {
    text(false)
        .pattern(Some(patterns::ENVIRONMENT_NAME))
        .description(Some("Unique among the tenant's live environments."))
        .build()
}

/// A new password.
pub fn password() -> Object {
    text(false)
        .min_length(Some(bulkhead_core::domain::PASSWORD_MIN_CHARS))
        .max_length(Some(bulkhead_core::domain::PASSWORD_MAX_CHARS))
        .description(Some(
            "12 to 256 characters, not a common password nor one character repeated; a few \
             unrelated words work well.",
        ))
        .build()
}

fn cost_tags_schema(description: &str) -> Object {
    let value = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(patterns::tag_value()))
        .max_length(Some(bulkhead_core::domain::MAX_TAG_VALUE_CHARS));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(patterns::TAG_KEY)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(value.build().into())))
        .max_properties(Some(bulkhead_core::domain::MAX_TAGS))
        .description(Some(format!(
            "{description}At most 50 tags; keys are a lowercase letter, then lowercase letters, \
             digits or `_` (at most 63); values are strings of at most 256 characters without \
             control, zero-width or direction-changing characters."
        )))
        .build()
}

/// Cost tags of a new tenant (absent: none).
pub fn cost_tags() -> Object {
    cost_tags_schema("")
}

/// Cost tags of a new environment, over the tenant's.
pub fn environment_cost_tags() -> Object {
    cost_tags_schema(
        "Over the tenant's; `business_unit` and `cost_center` unless the tenant's tags carry \
         them. ",
    )
}

/// Cost tags replacing a tenant's (absent: unchanged).
pub fn replacing_cost_tags() -> Object {
    cost_tags_schema("Replaces all cost tags; absent: unchanged. ")
}

/// One of `values`, stated as a pattern rather than an `enum`: generated clients keep the
/// field a plain string (an `enum` would turn it into a generated type, a breaking change for
/// code written against them).
fn one_of(values: &[&str], nullable: bool, description: &str) -> Object {
    let mut schema = text(nullable).pattern(Some(format!("^({})$", values.join("|"))));
    let listed = values
        .iter()
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ");
    schema = schema.description(Some(
        format!("One of {listed}. {description}")
            .trim_end()
            .to_owned(),
    ));
    schema.build()
}

/// A role given to a member.
pub fn member_role() -> Object {
    one_of(
        &[
            "tenant_admin",
            "operator",
            "approver",
            "viewer",
            "billing",
            "partner",
        ],
        false,
        "`partner` is for platform admins to give. May grow.",
    )
}

/// A role given to an API key (partner grants belong to partner users, not keys).
pub fn key_role() -> Object {
    one_of(
        &["tenant_admin", "operator", "approver", "viewer", "billing"],
        false,
        "May grow.",
    )
}

pub fn tier() -> Object {
    one_of(
        &["shared", "dedicated"],
        false,
        "Where the tenant's environments live by default.",
    )
}

pub fn stage() -> Object {
    one_of(&["development", "staging", "production"], false, "")
}

pub fn isolation() -> Object {
    one_of(
        &["shared", "dedicated"],
        true,
        "Absent or `null`: the tenant's tier.",
    )
}

/// A budget's amount: a positive decimal as a string, at most the currency's minor units.
pub fn budget_amount() -> Object {
    text(false)
        .pattern(Some(r"^(0|[1-9][0-9]{0,11})(\.[0-9]{1,3})?$"))
        .max_length(Some(16))
        .description(Some(
            "A decimal string such as \"500.00\", greater than 0, at most 12 digits before the point \
             and no more decimal places than the currency has (2 for EUR).",
        ))
        .build()
}

/// An ISO 4217 currency code.
pub fn currency() -> Object {
    text(false)
        .pattern(Some("^[A-Z]{3}$"))
        .description(Some(
            "ISO 4217, such as EUR; must be the installation's billing currency (BULKHEAD_BILLING_CURRENCY).",
        ))
        .build()
}

/// A day as the cost endpoints take it (`YYYY-MM-DD`, UTC, years 2000–9999); the pattern
/// admits days 01–28 only, so every value it describes is a real date (29–31 are taken too).
pub fn cost_day() -> Object {
    text(false)
        .pattern(Some(
            r"^(2[0-9]{3}|[3-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$",
        ))
        .build()
}

fn groupings(pattern: &str) -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(text(false).pattern(Some(pattern)))
        .max_items(Some(2))
        .unique_items(true)
        .build()
}

/// `group_by` of a tenant's costs: `environment`, `sku`, `day`, `month` or `tag:<key>`.
pub fn tenant_group_by() -> utoipa::openapi::schema::Array {
    groupings(r"^(environment|sku|day|month|tag:[a-z][a-z0-9_]{0,62})$")
}

/// `group_by` of the platform's costs: `tenant`, `sku`, `day`, `month` or `tag:<key>`.
pub fn platform_group_by() -> utoipa::openapi::schema::Array {
    groupings(r"^(tenant|sku|day|month|tag:[a-z][a-z0-9_]{0,62})$")
}

/// A budget's thresholds: 1 to 10 distinct whole percentages from 1 to 1000 (absent or `null`:
/// the default).
pub fn thresholds() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::Integer))
                .minimum(Some(1))
                .maximum(Some(1000)),
        )
        .min_items(Some(1))
        .max_items(Some(10))
        .unique_items(true)
        .description(Some(
            "Percentages of the amount; absent or null: [50, 80, 100].",
        ))
        .build()
}

/// Why a change is asked for (absent or `null`: none given).
pub fn change_reason() -> Object {
    display_text(
        500,
        true,
        "Why the change is needed, shown to its approvers. ",
    )
}

/// An approver's comment (absent or `null`: none).
pub fn decision_comment() -> Object {
    display_text(
        1000,
        true,
        "Kept with the decision and in the audit trail. ",
    )
}

/// Why a platform admin overrides promotion (absent or `null`: no override).
pub fn override_reason() -> Object {
    display_text(500, true, "Audited with the missing evidence. ")
}

/// Where a webhook's deliveries go.
pub fn webhook_url() -> Object {
    text(false)
        .pattern(Some("^https?://[^\\s/@#]+(/[^\\s#]*)?$"))
        .max_length(Some(2000))
        .description(Some(
            "An absolute http(s) URL without user, password or fragment; it must reach a public \
             address (checked after DNS resolution at every delivery).",
        ))
        .build()
}

/// The event types a webhook subscribes to.
pub fn webhook_events() -> utoipa::openapi::schema::Array {
    let mut names = bulkhead_core::webhooks::event_types();
    names.push("*".to_owned());
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .enum_values(Some(names)),
        )
        .min_items(Some(1))
        .max_items(Some(32))
        .unique_items(true)
        .description(Some("Event types (`*`: all of them)."))
        .build()
}
