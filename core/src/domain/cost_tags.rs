//! Cost tags: a flat map of lowercase keys to short strings, attached to tenants and resources.

use super::FieldError;
use std::collections::BTreeMap;

pub const MAX_TAGS: usize = 50;
pub const MAX_VALUE_CHARS: usize = 256;

/// Validated cost tags, ordered by key so their JSON is stable.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CostTags(BTreeMap<String, String>);

impl CostTags {
    /// Parses a JSON value; every bad key or value is reported with its path.
    pub fn parse(field: &str, raw: &serde_json::Value) -> Result<Self, Vec<FieldError>> {
        let Some(object) = raw.as_object() else {
            return Err(vec![FieldError::new(
                field,
                "must be an object of string values, such as {\"cost_center\": \"cc-1042\"}",
            )]);
        };
        let mut errors = Vec::new();
        if object.len() > MAX_TAGS {
            errors.push(FieldError::new(
                field,
                format!("has {} tags; at most {MAX_TAGS} are allowed", object.len()),
            ));
        }
        let mut tags = BTreeMap::new();
        for (key, value) in object {
            let path = format!("{field}.{key}");
            let key_ok = !key.is_empty()
                && key.len() <= 63
                && key.starts_with(|c: char| c.is_ascii_lowercase())
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !key_ok {
                errors.push(FieldError::new(
                    path,
                    "tag keys must be 1 to 63 characters: a lowercase letter, then lowercase \
                     letters, digits or '_'",
                ));
                continue;
            }
            match value.as_str() {
                Some(text)
                    if text.chars().count() <= MAX_VALUE_CHARS
                        && !text.chars().any(char::is_control)
                        && !text.chars().any(|c| super::values::invisible(c).is_some()) =>
                {
                    tags.insert(key.clone(), text.to_owned());
                }
                _ => errors.push(FieldError::new(
                    path,
                    format!(
                        "tag values must be strings of at most {MAX_VALUE_CHARS} characters \
                         without control, zero-width or direction-changing characters"
                    ),
                )),
            }
        }
        if errors.is_empty() {
            Ok(Self(tags))
        } else {
            Err(errors)
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_flat_string_maps() {
        let tags = CostTags::parse(
            "cost_tags",
            &json!({"cost_center": "cc-1", "business_unit": "wms"}),
        )
        .expect("valid");
        assert_eq!(tags.get("cost_center"), Some("cc-1"));
        assert_eq!(
            tags.to_json(),
            json!({"business_unit": "wms", "cost_center": "cc-1"})
        );
    }

    #[test]
    fn reports_every_bad_entry_with_its_path() {
        let errors = CostTags::parse(
            "cost_tags",
            &json!({"Cost": "x", "ok": 5, "fine": "yes", "nested": {"a": "b"}}),
        )
        .expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["cost_tags.Cost", "cost_tags.nested", "cost_tags.ok"]
        );
    }

    #[test]
    fn rejects_non_objects_and_too_many_tags() {
        assert!(CostTags::parse("cost_tags", &json!(["a"])).is_err());
        let many: serde_json::Map<_, _> = (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert!(CostTags::parse("cost_tags", &serde_json::Value::Object(many)).is_err());
    }
}
