//! Custom-resource write path against the CRD schema, in the apiserver's order: pruning of
//! unknown fields, schema defaulting, then validation (OpenAPI + CEL, transition rules with
//! the old object) through [`crate::validation`].

use serde_json::Value;

use crate::resources::ResourceDef;
use crate::validation;

/// A field error: `(field, reason, body)`, body rendered like the apiserver
/// (`Invalid value: "x": must be ...`).
pub type FieldErr = (String, &'static str, String);

/// Prunes unknown fields and applies schema defaults; returns the pruned field paths.
pub fn default_and_prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let pruned = validation::prune(schema, obj);
    validation::apply_defaults(schema, obj);
    pruned
}

/// Validates `obj` (with `old` for transition rules) against the resource's CRD schema.
pub fn validate(rd: &ResourceDef, obj: &Value, old: Option<&Value>) -> Vec<FieldErr> {
    let errors = match (&rd.validator, &rd.schema) {
        (Some(v), _) => v.validate(obj, old),
        (None, Some(s)) => validation::validate(s, obj, old),
        (None, None) => Vec::new(),
    };
    errors
        .into_iter()
        .map(|e| (e.field.clone(), e.kind.reason(), e.body()))
        .collect()
}
