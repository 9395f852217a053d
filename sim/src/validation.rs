//! Validation of custom resources against a CRD version's `openAPIV3Schema`, the way
//! kube-apiserver does it.
//!
//! Three steps, in the apiserver's order:
//! 1. **Normalisation** — `null` values of fields that are not `nullable` are dropped (the
//!    apiserver prunes them before defaulting and validation).
//! 2. **Structural (OpenAPI) validation** — types, `required`, `enum`, bounds, lengths,
//!    patterns and formats. The OpenAPI v3.0 schema is translated into a JSON Schema (draft 4,
//!    whose `exclusiveMinimum`/`exclusiveMaximum` are booleans like OpenAPI 3.0's) and checked
//!    with the `jsonschema` crate; its errors are translated into Kubernetes-shaped field paths
//!    (`spec.checks[0].sql`, `spec.labels[team]`) and messages. Lists of
//!    `x-kubernetes-list-type: map`/`set` must not repeat a key/value.
//! 3. **CEL validation** — every `x-kubernetes-validations` rule is evaluated at its node with
//!    `self` bound to the node's value. Transition rules (rules that mention `oldSelf`) are only
//!    evaluated on update, when the correlated old value exists — on create they are skipped,
//!    exactly as Kubernetes does. As in the apiserver, CEL rules are not evaluated when the
//!    object has type errors (the rules could not be type-safe).
//!
//! Extras the API stand-in uses for a faithful write path: [`apply_defaults`] (schema
//! `default`s), [`prune`] (drops unknown fields, reporting them for `fieldValidation=Strict`)
//! and [`invalid_message`] (the `Status` message of a 422 `Invalid` response).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

/// The kind of a field error; mirrors `k8s.io/apimachinery/pkg/util/validation/field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldErrorKind {
    /// A required field is missing (`Required value`).
    Required,
    /// The value is malformed or out of range (`Invalid value`).
    Invalid,
    /// The value has the wrong JSON type (`Invalid value`, reason `FieldValueTypeInvalid`).
    TypeInvalid,
    /// The value is not one of an enumeration (`Unsupported value`).
    Unsupported,
    /// The value is not allowed here (`Forbidden`).
    Forbidden,
    /// A string is longer than allowed (`Too long`).
    TooLong,
    /// A list has more items than allowed (`Too many`).
    TooMany,
    /// A list repeats an item that must be unique (`Duplicate value`).
    Duplicate,
    /// The validator itself failed, e.g. a CEL rule could not be evaluated (`Internal error`).
    Internal,
}

impl FieldErrorKind {
    /// The apiserver's `StatusCause.reason` for this kind, e.g. `FieldValueRequired`.
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::TypeInvalid => "FieldValueTypeInvalid",
            FieldErrorKind::Unsupported => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Internal => "InternalError",
        }
    }

    /// The human-readable error type, e.g. `Unsupported value`.
    pub fn label(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid | FieldErrorKind::TypeInvalid => "Invalid value",
            FieldErrorKind::Unsupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::Internal => "Internal error",
        }
    }

    /// Whether the apiserver prints the offending value after the label.
    fn shows_value(self) -> bool {
        !matches!(
            self,
            FieldErrorKind::Required
                | FieldErrorKind::Forbidden
                | FieldErrorKind::TooLong
                | FieldErrorKind::Internal
        )
    }
}

/// One validation failure of one field, rendered like kube-apiserver renders it:
/// `spec.compression.algorithm: Unsupported value: "lz4": supported values: "zstd", "gzip", "none"`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `spec.checks[0].sql`; empty for the whole object.
    pub field: String,
    /// What is wrong.
    pub kind: FieldErrorKind,
    /// The offending value (for CEL failures the schema type of the node, e.g. `"object"`).
    pub value: Option<Value>,
    /// The detail, e.g. `spec is immutable`.
    pub message: String,
}

impl FieldError {
    fn new(field: String, kind: FieldErrorKind, value: Option<Value>, message: String) -> Self {
        FieldError {
            field,
            kind,
            value,
            message,
        }
    }

    /// The error without the field prefix (Kubernetes' `ErrorBody`).
    pub fn body(&self) -> String {
        let mut s = self.kind.label().to_string();
        if self.kind.shows_value() {
            s.push_str(": ");
            s.push_str(&render_value(self.value.as_ref().unwrap_or(&Value::Null)));
        }
        if !self.message.is_empty() {
            s.push_str(": ");
            s.push_str(&self.message);
        }
        s
    }
}

impl FieldError {
    /// The error as a `StatusCause` of a 422 response
    /// (`{"reason": "FieldValueInvalid", "message": "Invalid value: ...", "field": "spec"}`).
    pub fn to_cause(&self) -> Value {
        serde_json::json!({
            "reason": self.kind.reason(),
            "message": self.body(),
            "field": self.field,
        })
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.body())
        } else {
            write!(f, "{}: {}", self.field, self.body())
        }
    }
}

impl std::error::Error for FieldError {}

/// Renders a value the way the apiserver's `%v`/`%q` formatting shows it in error bodies.
fn render_value(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// The message of a 422 `Invalid` Status, e.g.
/// `BackupRun.dataguardian.io "nightly-1" is invalid: spec: Invalid value: "object": spec is immutable`
/// (several errors are listed in brackets, comma-separated, as the apiserver does).
pub fn invalid_message(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> String {
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let list = match errors {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!("{qualified} \"{name}\" is invalid: {list}")
}

/// Why a schema could not be compiled into a [`SchemaValidator`].
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The translated JSON Schema was rejected by the JSON-Schema compiler.
    #[error("openAPIV3Schema is not a valid schema: {0}")]
    Structural(String),
    /// A CEL rule does not parse.
    #[error("{path}: x-kubernetes-validations rule {rule:?} does not compile: {error}")]
    Rule {
        /// Field path of the node that carries the rule.
        path: String,
        /// The rule source.
        rule: String,
        /// The parser's message.
        error: String,
    },
}

/// A compiled CEL rule of one schema node.
struct CompiledRule {
    source: String,
    program: cel::Program,
    message: Option<String>,
    message_expression: Option<cel::Program>,
    field_path: Option<String>,
    reason: FieldErrorKind,
    transition: bool,
}

/// A CRD version's schema, compiled once and reused for every request.
pub struct SchemaValidator {
    schema: Value,
    structural: jsonschema::Validator,
    /// Rules per schema node, keyed by the node's JSON pointer inside `schema`.
    rules: HashMap<String, Vec<CompiledRule>>,
    env: Arc<cel::Env>,
}

impl fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaValidator")
            .field("rule_nodes", &self.rules.len())
            .finish_non_exhaustive()
    }
}

/// The CEL environment Kubernetes offers (the standard library plus the strings and lists
/// extensions).
pub(crate) fn cel_env() -> cel::Env {
    let mut env = cel::Env::stdlib();
    // Kubernetes enables the strings and lists extension libraries; keep both available.
    // These only fail on duplicate declarations, which cannot happen on a fresh stdlib env.
    let _ = env.add_extension(cel::extensions::strings);
    let _ = env.add_extension(cel::extensions::lists);
    env
}

impl SchemaValidator {
    /// Compiles `schema` (a CRD version's `openAPIV3Schema`).
    pub fn new(schema: &Value) -> Result<Self, SchemaError> {
        let json_schema = to_json_schema(schema);
        let structural = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(true)
            .should_ignore_unknown_formats(true)
            .build(&json_schema)
            .map_err(|e| SchemaError::Structural(e.to_string()))?;
        let env = Arc::new(cel_env());
        let mut rules = HashMap::new();
        compile_rules(&env, schema, String::new(), String::new(), &mut rules)?;
        Ok(SchemaValidator {
            schema: schema.clone(),
            structural,
            rules,
            env,
        })
    }

    /// The schema this validator was compiled from.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Validates `obj` (the whole object, `apiVersion`..`status`); `old` is the stored object
    /// on update and `None` on create. Returns every error found; empty means valid.
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let obj = drop_nulls(&self.schema, obj);
        let old = old.map(|o| drop_nulls(&self.schema, o));
        let mut errors = self.structural_errors(&obj);
        if errors.iter().any(|e| e.kind == FieldErrorKind::TypeInvalid) {
            errors.push(FieldError::new(
                String::new(),
                FieldErrorKind::Invalid,
                None,
                "some validation rules were not checked because the object was invalid; \
                 correct the existing errors to complete validation"
                    .to_string(),
            ));
            return errors;
        }
        let mut walk = CelWalk {
            validator: self,
            errors: &mut errors,
        };
        walk.node(&self.schema, "", &obj, old.as_ref(), &Path::root());
        errors
    }

    fn structural_errors(&self, obj: &Value) -> Vec<FieldError> {
        let mut out: Vec<FieldError> = Vec::new();
        for err in self.structural.iter_errors(obj) {
            let segments: Vec<Seg> = err
                .instance_path()
                .segments()
                .map(|s| match s {
                    jsonschema::paths::LocationSegment::Property(p) => Seg::Key(p.to_string()),
                    jsonschema::paths::LocationSegment::Index(i) => Seg::Index(i),
                })
                .collect();
            let path = k8s_path(&self.schema, &segments);
            let instance = err.instance().as_ref().clone();
            let fe = translate(&self.schema, &segments, &path, instance, err.kind());
            if !out.contains(&fe) {
                out.push(fe);
            }
        }
        list_uniqueness(&self.schema, obj, &Path::root(), &mut out);
        out
    }
}

/// `x-kubernetes-list-type: map` lists must not repeat a key tuple, `set` lists must not
/// repeat a value (the apiserver reports `Duplicate value`).
fn list_uniqueness(schema: &Value, value: &Value, path: &Path, out: &mut Vec<FieldError>) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in map {
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) => list_uniqueness(s, child, &path.child(k), out),
                    (None, Some(a)) => list_uniqueness(a, child, &path.key(k), out),
                    _ => {}
                }
            }
        }
        Value::Array(items) => {
            let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let identity = |item: &Value| -> Value {
                match list_type {
                    Some("map") => {
                        let key: Map<String, Value> = keys
                            .iter()
                            .filter_map(|k| item.get(*k).map(|v| ((*k).to_string(), v.clone())))
                            .collect();
                        Value::Object(key)
                    }
                    _ => item.clone(),
                }
            };
            if matches!(list_type, Some("map") | Some("set")) {
                for (i, item) in items.iter().enumerate() {
                    let id = identity(item);
                    if items[..i].iter().any(|earlier| identity(earlier) == id) {
                        out.push(FieldError::new(
                            path.index(i).0,
                            FieldErrorKind::Duplicate,
                            Some(id),
                            String::new(),
                        ));
                    }
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    list_uniqueness(item_schema, item, &path.index(i), out);
                }
            }
        }
        _ => {}
    }
}

/// Validates `obj` against a CRD version's `openAPIV3Schema` (structural checks and CEL rules);
/// `old` is the stored object on update (`None` on create: transition rules are then skipped).
///
/// Compiles the schema on every call; a caller validating many objects should keep a
/// [`SchemaValidator`]. A schema that does not compile yields a single `Internal` error.
pub fn validate(crd_version_schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    match SchemaValidator::new(crd_version_schema) {
        Ok(v) => v.validate(obj, old),
        Err(e) => vec![FieldError::new(
            String::new(),
            FieldErrorKind::Internal,
            None,
            e.to_string(),
        )],
    }
}

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A Kubernetes field path under construction (`spec.checks[0].sql`).
#[derive(Debug, Clone)]
struct Path(String);

impl Path {
    fn root() -> Self {
        Path(String::new())
    }
    fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }
    fn key(&self, key: &str) -> Self {
        Path(format!("{}[{key}]", self.0))
    }
    fn index(&self, i: usize) -> Self {
        Path(format!("{}[{i}]", self.0))
    }
    fn with_field_path(&self, field_path: &str) -> Self {
        // `fieldPath` is a JSONPath-like suffix such as `.spec.s3` or `['key']`, relative to
        // the node that carries the rule.
        let suffix = field_path.trim();
        if suffix.is_empty() {
            return self.clone();
        }
        if self.0.is_empty() {
            Path(suffix.trim_start_matches('.').to_string())
        } else if suffix.starts_with('.') || suffix.starts_with('[') {
            Path(format!("{}{suffix}", self.0))
        } else {
            Path(format!("{}.{suffix}", self.0))
        }
    }
}

fn k8s_path(schema: &Value, segments: &[Seg]) -> String {
    let mut path = Path::root();
    let mut node = Some(schema);
    for seg in segments {
        match seg {
            Seg::Index(i) => {
                path = path.index(*i);
                node = node.and_then(|n| n.get("items"));
            }
            Seg::Key(k) => {
                let prop = node
                    .and_then(|n| n.get("properties"))
                    .and_then(|p| p.get(k));
                if let Some(p) = prop {
                    path = path.child(k);
                    node = Some(p);
                } else {
                    let additional = node.and_then(|n| n.get("additionalProperties"));
                    match additional {
                        Some(a) if a.is_object() => {
                            path = path.key(k);
                            node = Some(a);
                        }
                        _ => {
                            path = path.child(k);
                            node = None;
                        }
                    }
                }
            }
        }
    }
    path.0
}

fn schema_at<'a>(schema: &'a Value, segments: &[Seg]) -> Option<&'a Value> {
    let mut node = schema;
    for seg in segments {
        node = match seg {
            Seg::Index(_) => node.get("items")?,
            Seg::Key(k) => match node.get("properties").and_then(|p| p.get(k)) {
                Some(p) => p,
                None => node.get("additionalProperties").filter(|a| a.is_object())?,
            },
        };
    }
    Some(node)
}

// ---------------------------------------------------------------------------------------------
// OpenAPI v3 (structural) → JSON Schema draft 4
// ---------------------------------------------------------------------------------------------

const COPIED_KEYWORDS: &[&str] = &[
    "type",
    "required",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "format",
];

fn to_json_schema(node: &Value) -> Value {
    let Some(obj) = node.as_object() else {
        return node.clone();
    };
    let mut out = Map::new();
    for key in COPIED_KEYWORDS {
        if let Some(v) = obj.get(*key) {
            out.insert((*key).to_string(), v.clone());
        }
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        let converted: Map<String, Value> = props
            .iter()
            .map(|(k, v)| (k.clone(), to_json_schema(v)))
            .collect();
        out.insert("properties".into(), Value::Object(converted));
    }
    match obj.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            out.insert("additionalProperties".into(), Value::Bool(*b));
        }
        Some(a @ Value::Object(_)) => {
            out.insert("additionalProperties".into(), to_json_schema(a));
        }
        _ => {}
    }
    if let Some(items) = obj.get("items") {
        out.insert("items".into(), to_json_schema(items));
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(list)) = obj.get(key) {
            out.insert(
                key.into(),
                Value::Array(list.iter().map(to_json_schema).collect()),
            );
        }
    }
    if let Some(not) = obj.get("not") {
        out.insert("not".into(), to_json_schema(not));
    }
    if obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        out.remove("type");
        out.entry("anyOf")
            .or_insert_with(|| serde_json::json!([{"type": "integer"}, {"type": "string"}]));
    }
    if obj.get("nullable") == Some(&Value::Bool(true)) {
        if let Some(Value::String(t)) = out.get("type").cloned() {
            out.insert("type".into(), serde_json::json!([t, "null"]));
        }
        if let Some(Value::Array(values)) = out.get_mut("enum")
            && !values.contains(&Value::Null)
        {
            values.push(Value::Null);
        }
        if let Some(Value::Array(list)) = out.remove("anyOf") {
            let mut list = list;
            list.push(serde_json::json!({"type": "null"}));
            out.insert("anyOf".into(), Value::Array(list));
        }
    }
    Value::Object(out)
}

fn is_nullable(schema: &Value) -> bool {
    schema.get("nullable") == Some(&Value::Bool(true))
}

/// Drops `null` values of fields whose schema is not `nullable` (apiserver behaviour).
fn drop_nulls(schema: &Value, value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let mut out = Map::new();
            for (k, v) in map {
                let child = props.and_then(|p| p.get(k)).or(additional);
                match child {
                    Some(c) => {
                        if v.is_null() && !is_nullable(c) {
                            continue;
                        }
                        out.insert(k.clone(), drop_nulls(c, v));
                    }
                    None => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => match schema.get("items") {
            Some(item_schema) => {
                Value::Array(items.iter().map(|i| drop_nulls(item_schema, i)).collect())
            }
            None => value.clone(),
        },
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// jsonschema error → FieldError
// ---------------------------------------------------------------------------------------------

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn body_path(path: &str) -> &str {
    if path.is_empty() { "body" } else { path }
}

/// Renders a schema bound the way the apiserver does (`60`, not `60.0`, for whole numbers).
fn limit_str(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => v.to_string(),
    }
}

fn translate(
    schema: &Value,
    segments: &[Seg],
    path: &str,
    instance: Value,
    kind: &jsonschema::error::ValidationErrorKind,
) -> FieldError {
    use FieldErrorKind as K;
    use jsonschema::error::ValidationErrorKind as J;
    let bp = body_path(path).to_string();
    match kind {
        J::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let field = if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            };
            FieldError::new(field, K::Required, None, String::new())
        }
        J::Enum { options } => {
            let supported = options
                .as_array()
                .map(|o| {
                    o.iter()
                        .filter(|v| !v.is_null())
                        .map(render_value)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            FieldError::new(
                path.to_string(),
                K::Unsupported,
                Some(instance),
                format!("supported values: {supported}"),
            )
        }
        J::Type { .. } | J::AnyOf { .. }
            if schema_at(schema, segments).is_some_and(|s| {
                s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
            }) =>
        {
            let actual = json_type_name(&instance);
            FieldError::new(
                path.to_string(),
                K::TypeInvalid,
                Some(Value::String(actual.into())),
                format!("{bp} in body must be of type integer,string: \"{actual}\""),
            )
        }
        J::Type { kind } => {
            let expected = match kind {
                jsonschema::error::TypeKind::Single(t) => t.to_string(),
                jsonschema::error::TypeKind::Multiple(set) => set
                    .iter()
                    .filter(|t| *t != jsonschema::JsonType::Null)
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            };
            let actual = json_type_name(&instance);
            FieldError::new(
                path.to_string(),
                K::TypeInvalid,
                Some(Value::String(actual.into())),
                format!("{bp} in body must be of type {expected}: \"{actual}\""),
            )
        }
        J::Minimum { limit } => FieldError::new(
            path.to_string(),
            K::Invalid,
            Some(instance),
            format!(
                "{bp} in body should be greater than or equal to {}",
                limit_str(limit)
            ),
        ),
        J::ExclusiveMinimum { limit } => FieldError::new(
            path.to_string(),
            K::Invalid,
            Some(instance),
            format!("{bp} in body should be greater than {}", limit_str(limit)),
        ),
        J::Maximum { limit } => FieldError::new(
            path.to_string(),
            K::Invalid,
            Some(instance),
            format!(
                "{bp} in body should be less than or equal to {}",
                limit_str(limit)
            ),
        ),
        J::ExclusiveMaximum { limit } => FieldError::new(
            path.to_string(),
            K::Invalid,
            Some(instance),
            format!("{bp} in body should be less than {}", limit_str(limit)),
        ),
        J::Pattern { pattern } => FieldError::new(
            path.to_string(),
            K::Invalid,
            Some(instance),
            format!("{bp} in body should match '{pattern}'"),
        ),
        J::MinLength { limit } => FieldError::new(
            path.to_string(),
            K::Invalid,
            Some(instance),
            format!("{bp} in body should be at least {limit} chars long"),
        ),
        J::MaxLength { limit } => FieldError::new(
            path.to_string(),
            K::TooLong,
            Some(instance),
            format!("may not be more than {limit} bytes"),
        ),
        J::MinItems { limit } => FieldError::new(
            path.to_string(),
            K::Invalid,
            Some(Value::from(instance.as_array().map_or(0, Vec::len))),
            format!("{bp} in body should have at least {limit} items"),
        ),
        J::MaxItems { limit } => FieldError::new(
            path.to_string(),
            K::TooMany,
            Some(Value::from(instance.as_array().map_or(0, Vec::len))),
            format!("must have at most {limit} items"),
        ),
        J::UniqueItems => FieldError::new(
            path.to_string(),
            K::Duplicate,
            Some(first_duplicate(&instance).unwrap_or(instance)),
            String::new(),
        ),
        J::MinProperties { limit } => FieldError::new(
            path.to_string(),
            K::Invalid,
            Some(Value::String("object".into())),
            format!("{bp} in body should have at least {limit} properties"),
        ),
        J::MaxProperties { limit } => FieldError::new(
            path.to_string(),
            K::TooMany,
            Some(Value::from(instance.as_object().map_or(0, Map::len))),
            format!("must have at most {limit} properties"),
        ),
        J::Format { format } => FieldError::new(
            path.to_string(),
            K::Invalid,
            Some(instance.clone()),
            format!(
                "{bp} in body must be of type {format}: {}",
                render_value(&instance)
            ),
        ),
        J::MultipleOf { multiple_of } => FieldError::new(
            path.to_string(),
            K::Invalid,
            Some(instance),
            format!("{bp} in body should be a multiple of {multiple_of}"),
        ),
        J::OneOfMultipleValid { .. } => FieldError::new(
            path.to_string(),
            K::Invalid,
            Some(Value::String(json_type_name(&instance).into())),
            format!(
                "{bp} in body must validate one and only one schema (oneOf). Found more than one valid schema"
            ),
        ),
        J::OneOfNotValid { .. } => FieldError::new(
            path.to_string(),
            K::Invalid,
            Some(Value::String(json_type_name(&instance).into())),
            format!("{bp} in body must validate one and only one schema (oneOf). Found none valid"),
        ),
        J::AnyOf { .. } => FieldError::new(
            path.to_string(),
            K::Invalid,
            Some(Value::String(json_type_name(&instance).into())),
            format!("{bp} in body must validate at least one schema (anyOf)"),
        ),
        J::Not { .. } => FieldError::new(
            path.to_string(),
            K::Invalid,
            Some(Value::String(json_type_name(&instance).into())),
            format!("{bp} in body must not validate the schema (not)"),
        ),
        other => FieldError::new(
            path.to_string(),
            K::Invalid,
            Some(instance),
            format!("{bp} in body is invalid ({})", other.keyword()),
        ),
    }
}

fn first_duplicate(v: &Value) -> Option<Value> {
    let items = v.as_array()?;
    items
        .iter()
        .enumerate()
        .find(|(i, a)| items[..*i].contains(a))
        .map(|(_, a)| a.clone())
}

// ---------------------------------------------------------------------------------------------
// CEL
// ---------------------------------------------------------------------------------------------

fn compile_rules(
    env: &cel::Env,
    schema: &Value,
    pointer: String,
    path: String,
    out: &mut HashMap<String, Vec<CompiledRule>>,
) -> Result<(), SchemaError> {
    let Some(obj) = schema.as_object() else {
        return Ok(());
    };
    if let Some(Value::Array(rules)) = obj.get("x-kubernetes-validations") {
        let mut compiled = Vec::new();
        for rule in rules {
            let source = rule
                .get("rule")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let compile_err = |error: String, rule: &str| SchemaError::Rule {
                path: body_path(&path).to_string(),
                rule: rule.to_string(),
                error,
            };
            let program = env
                .compile(&source)
                .map_err(|e| compile_err(e.to_string(), &source))?;
            let transition = program.references().has_variable("oldSelf");
            let message_expression = match rule.get("messageExpression").and_then(Value::as_str) {
                Some(expr) => Some(
                    env.compile(expr)
                        .map_err(|e| compile_err(e.to_string(), expr))?,
                ),
                None => None,
            };
            let reason = match rule.get("reason").and_then(Value::as_str) {
                Some("FieldValueForbidden") => FieldErrorKind::Forbidden,
                Some("FieldValueRequired") => FieldErrorKind::Required,
                Some("FieldValueDuplicate") => FieldErrorKind::Duplicate,
                _ => FieldErrorKind::Invalid,
            };
            compiled.push(CompiledRule {
                message: rule
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                field_path: rule
                    .get("fieldPath")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                source,
                program,
                message_expression,
                reason,
                transition,
            });
        }
        out.insert(pointer.clone(), compiled);
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (k, v) in props {
            let child_path = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            compile_rules(
                env,
                v,
                format!("{pointer}/properties/{}", escape_pointer(k)),
                child_path,
                out,
            )?;
        }
    }
    if let Some(a @ Value::Object(_)) = obj.get("additionalProperties") {
        compile_rules(
            env,
            a,
            format!("{pointer}/additionalProperties"),
            format!("{path}[*]"),
            out,
        )?;
    }
    if let Some(items) = obj.get("items") {
        compile_rules(
            env,
            items,
            format!("{pointer}/items"),
            format!("{path}[*]"),
            out,
        )?;
    }
    Ok(())
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Converts JSON to a CEL value, guided by the schema (Kubernetes' typing: `integer` → int,
/// `number` → double, objects → maps keyed by property name).
pub(crate) fn to_cel(value: &Value, schema: Option<&Value>) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => {
            let wants_number =
                schema.and_then(|s| s.get("type")).and_then(Value::as_str) == Some("number");
            match (wants_number, n.as_i64(), n.as_u64()) {
                (false, Some(i), _) => cel::Value::Int(i),
                (false, None, Some(u)) => cel::Value::UInt(u),
                _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            }
        }
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => {
            let item_schema = schema.and_then(|s| s.get("items"));
            cel::Value::List(Arc::new(
                items.iter().map(|i| to_cel(i, item_schema)).collect(),
            ))
        }
        Value::Object(map) => {
            let props = schema.and_then(|s| s.get("properties"));
            let additional = schema
                .and_then(|s| s.get("additionalProperties"))
                .filter(|a| a.is_object());
            let converted: HashMap<String, cel::Value> = map
                .iter()
                .map(|(k, v)| {
                    let child = props.and_then(|p| p.get(k)).or(additional);
                    (k.clone(), to_cel(v, child))
                })
                .collect();
            cel::Value::from(converted)
        }
    }
}

/// The schema type Kubernetes reports as the "value" of a failed CEL rule.
fn schema_type_name(schema: &Value, value: &Value) -> String {
    match schema.get("type").and_then(Value::as_str) {
        Some(t) => t.to_string(),
        None => json_type_name(value).to_string(),
    }
}

struct CelWalk<'a> {
    validator: &'a SchemaValidator,
    errors: &'a mut Vec<FieldError>,
}

impl CelWalk<'_> {
    fn node(
        &mut self,
        schema: &Value,
        pointer: &str,
        value: &Value,
        old: Option<&Value>,
        path: &Path,
    ) {
        if let Some(rules) = self.validator.rules.get(pointer) {
            for rule in rules {
                self.evaluate(rule, schema, value, old, path);
            }
        }
        match value {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = schema.get("properties") {
                    for (k, child_schema) in props {
                        if let Some(child) = map.get(k) {
                            let child_old = old.and_then(|o| o.get(k));
                            self.node(
                                child_schema,
                                &format!("{pointer}/properties/{}", escape_pointer(k)),
                                child,
                                child_old,
                                &path.child(k),
                            );
                        }
                    }
                }
                if let Some(a @ Value::Object(_)) = schema.get("additionalProperties") {
                    for (k, child) in map {
                        let child_old = old.and_then(|o| o.get(k));
                        self.node(
                            a,
                            &format!("{pointer}/additionalProperties"),
                            child,
                            child_old,
                            &path.key(k),
                        );
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        let item_old = correlate_list_item(schema, item, old);
                        self.node(
                            item_schema,
                            &format!("{pointer}/items"),
                            item,
                            item_old,
                            &path.index(i),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    fn evaluate(
        &mut self,
        rule: &CompiledRule,
        schema: &Value,
        value: &Value,
        old: Option<&Value>,
        path: &Path,
    ) {
        if rule.transition && old.is_none() {
            // Transition rules only run on update, against the correlated old value.
            return;
        }
        let mut ctx = cel::Context::with_env(self.validator.env.clone());
        ctx.add_variable_from_value("self", to_cel(value, Some(schema)));
        if let Some(old) = old {
            ctx.add_variable_from_value("oldSelf", to_cel(old, Some(schema)));
        }
        let type_name = Value::String(schema_type_name(schema, value));
        match rule.program.execute(&ctx) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => {
                let message = self.message(rule, &ctx);
                let field = match &rule.field_path {
                    Some(fp) => path.with_field_path(fp),
                    None => path.clone(),
                };
                let value = match rule.reason {
                    FieldErrorKind::Invalid => Some(type_name),
                    _ => None,
                };
                self.errors
                    .push(FieldError::new(field.0, rule.reason, value, message));
            }
            Ok(other) => self.errors.push(FieldError::new(
                path.0.clone(),
                FieldErrorKind::Invalid,
                Some(type_name),
                format!(
                    "rule {:?} must evaluate to a bool, got {:?}",
                    rule.source,
                    other.type_of()
                ),
            )),
            Err(e) => self.errors.push(FieldError::new(
                path.0.clone(),
                FieldErrorKind::Invalid,
                Some(type_name),
                format!("rule {:?} failed to evaluate: {e}", rule.source),
            )),
        }
    }

    fn message(&self, rule: &CompiledRule, ctx: &cel::Context) -> String {
        if let Some(expr) = &rule.message_expression
            && let Ok(cel::Value::String(s)) = expr.execute(ctx)
            && !s.trim().is_empty()
        {
            return s.to_string();
        }
        match &rule.message {
            Some(m) if !m.is_empty() => m.clone(),
            _ => format!("failed rule: {}", rule.source),
        }
    }
}

/// Finds the old element that corresponds to `item` in a list, following Kubernetes'
/// correlation rules: `x-kubernetes-list-type: map` lists correlate by their map keys, `set`
/// lists by equal value; atomic lists do not correlate (their items see no `oldSelf`).
fn correlate_list_item<'a>(
    list_schema: &Value,
    item: &Value,
    old_list: Option<&'a Value>,
) -> Option<&'a Value> {
    let old_items = old_list?.as_array()?;
    match list_schema
        .get("x-kubernetes-list-type")
        .and_then(Value::as_str)
    {
        Some("map") => {
            let keys: Vec<&str> = list_schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            old_items
                .iter()
                .find(|o| keys.iter().all(|k| o.get(*k) == item.get(*k)))
        }
        Some("set") => old_items.iter().find(|o| *o == item),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Defaulting and pruning
// ---------------------------------------------------------------------------------------------

/// Applies schema `default`s to absent fields of present objects (recursively), as the
/// apiserver does on create/update and when reading from storage.
pub fn apply_defaults(schema: &Value, obj: &mut Value) {
    match obj {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (k, child_schema) in props {
                    if !map.contains_key(k)
                        && let Some(default) = child_schema.get("default")
                    {
                        map.insert(k.clone(), default.clone());
                    }
                    if let Some(child) = map.get_mut(k) {
                        apply_defaults(child_schema, child);
                    }
                }
            }
            if let Some(a @ Value::Object(_)) = schema.get("additionalProperties") {
                for child in map.values_mut() {
                    apply_defaults(a, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

/// Removes fields the schema does not know (unless `x-kubernetes-preserve-unknown-fields`),
/// and `null`s of non-nullable fields, as the apiserver prunes a structural object. Returns
/// the paths of the unknown fields removed (for `fieldValidation=Strict`/`Warn`). At the root,
/// `apiVersion`, `kind` and `metadata` are always kept.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut removed = Vec::new();
    prune_node(schema, obj, &Path::root(), true, &mut removed);
    removed
}

fn prune_node(schema: &Value, obj: &mut Value, path: &Path, root: bool, removed: &mut Vec<String>) {
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    match obj {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let (child_schema, child_path) = match (props.and_then(|p| p.get(&k)), additional) {
                    (Some(p), _) => (Some(p), path.child(&k)),
                    (None, Some(a @ Value::Object(_))) => (Some(a), path.key(&k)),
                    (None, Some(Value::Bool(true))) => (None, path.key(&k)),
                    _ => {
                        if !preserve {
                            map.remove(&k);
                            removed.push(path.child(&k).0);
                        }
                        continue;
                    }
                };
                let Some(child_schema) = child_schema else {
                    continue;
                };
                if map.get(&k).is_some_and(Value::is_null) && !is_nullable(child_schema) {
                    map.remove(&k);
                    continue;
                }
                if let Some(child) = map.get_mut(&k) {
                    prune_node(child_schema, child, &child_path, false, removed);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_node(item_schema, item, &path.index(i), false, removed);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A schema shaped like the ones `kube-derive` generates, with the kinds of rules
    /// DataGuardian's CRDs use.
    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["spec"],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "required": ["schedule"],
                    "x-kubernetes-validations": [
                        {"rule": "self == oldSelf", "message": "spec is immutable"},
                        {"rule": "has(self.s3) != has(self.filesystem)",
                         "message": "exactly one of s3 or filesystem must be set"}
                    ],
                    "properties": {
                        "schedule": {"type": "string", "pattern": "^\\S+( \\S+){4}$"},
                        "port": {"type": "integer", "format": "int32", "minimum": 1.0, "maximum": 65535.0},
                        "ratio": {"type": "number"},
                        "name": {"type": "string", "maxLength": 5, "minLength": 1},
                        "s3": {"type": "object", "properties": {"bucket": {"type": "string"}}},
                        "filesystem": {"type": "object", "properties": {"path": {"type": "string"}}},
                        "compression": {
                            "type": "object",
                            "nullable": true,
                            "properties": {
                                "algorithm": {"type": "string", "enum": ["zstd", "gzip", "none"]},
                                "level": {"type": "integer", "nullable": true,
                                          "x-kubernetes-validations": [
                                              {"rule": "self <= 19", "messageExpression": "'level ' + string(self) + ' is above 19'"}
                                          ]}
                            }
                        },
                        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 3}},
                        "quantity": {"x-kubernetes-int-or-string": true},
                        "checks": {
                            "type": "array",
                            "maxItems": 2,
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}, "min": {"type": "integer"}},
                                "x-kubernetes-validations": [
                                    {"rule": "!has(self.min) || self.min >= 0", "message": "min must not be negative", "fieldPath": ".min"}
                                ]
                            }
                        },
                        "tags": {
                            "type": "array",
                            "items": {"type": "string"},
                            "x-kubernetes-validations": [
                                {"rule": "self.all(t, t.matches('^[a-z]+$'))", "message": "tags are lower-case words", "reason": "FieldValueForbidden"}
                            ]
                        }
                    }
                },
                "status": {"type": "object", "nullable": true, "properties": {"phase": {"type": "string"}}}
            }
        })
    }

    fn obj(spec: Value) -> Value {
        json!({"apiVersion": "dataguardian.io/v1alpha1", "kind": "Test",
               "metadata": {"name": "x"}, "spec": spec})
    }

    fn messages(errors: &[FieldError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn valid_object_has_no_errors() {
        let errors = validate(
            &schema(),
            &obj(
                json!({"schedule": "0 2 * * *", "s3": {"bucket": "b"}, "port": 5432,
                        "compression": {"algorithm": "zstd", "level": 3}, "quantity": "10Gi",
                        "labels": {"a": "b"}, "checks": [{"name": "x", "min": 1}], "tags": ["ok"]}),
            ),
            None,
        );
        assert!(errors.is_empty(), "{:?}", messages(&errors));
    }

    #[test]
    fn missing_required_field_is_reported_with_its_path() {
        let errors = validate(&schema(), &obj(json!({"s3": {}})), None);
        assert_eq!(messages(&errors), vec!["spec.schedule: Required value"]);
        assert_eq!(errors[0].kind, FieldErrorKind::Required);
        let errors = validate(&schema(), &json!({"apiVersion": "v", "kind": "Test"}), None);
        assert_eq!(messages(&errors), vec!["spec: Required value"]);
    }

    #[test]
    fn enum_violation_lists_the_supported_values() {
        let errors = validate(
            &schema(),
            &obj(json!({"schedule": "0 2 * * *", "s3": {}, "compression": {"algorithm": "lz4"}})),
            None,
        );
        assert_eq!(
            messages(&errors),
            vec![
                r#"spec.compression.algorithm: Unsupported value: "lz4": supported values: "zstd", "gzip", "none""#
            ]
        );
        assert_eq!(errors[0].kind.reason(), "FieldValueNotSupported");
    }

    #[test]
    fn bounds_patterns_and_lengths() {
        let errors = validate(
            &schema(),
            &obj(
                json!({"schedule": "every day", "s3": {}, "port": 0, "name": "toolong",
                        "labels": {"team": "abcd"}}),
            ),
            None,
        );
        let m = messages(&errors);
        assert!(
            m.contains(&r#"spec.schedule: Invalid value: "every day": spec.schedule in body should match '^\S+( \S+){4}$'"#.to_string()),
            "{m:?}"
        );
        assert!(
            m.contains(&"spec.port: Invalid value: 0: spec.port in body should be greater than or equal to 1".to_string()),
            "{m:?}"
        );
        assert!(
            m.contains(&"spec.name: Too long: may not be more than 5 bytes".to_string()),
            "{m:?}"
        );
        assert!(
            m.contains(&"spec.labels[team]: Too long: may not be more than 3 bytes".to_string()),
            "{m:?}"
        );
        assert_eq!(errors.len(), 4, "{m:?}");
    }

    #[test]
    fn type_errors_block_cel_rules() {
        let errors = validate(
            &schema(),
            &obj(json!({"schedule": "0 2 * * *", "port": "5432"})),
            None,
        );
        let m = messages(&errors);
        assert_eq!(
            m[0],
            r#"spec.port: Invalid value: "string": spec.port in body must be of type integer: "string""#
        );
        assert!(
            m[1].starts_with("Invalid value: null: some validation rules were not checked"),
            "{m:?}"
        );
        // The exactly-one-of rule was not evaluated.
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn int_or_string_accepts_both_and_rejects_others() {
        for q in [json!(5), json!("5Gi")] {
            let errors = validate(
                &schema(),
                &obj(json!({"schedule": "0 2 * * *", "s3": {}, "quantity": q})),
                None,
            );
            assert!(errors.is_empty(), "{:?}", messages(&errors));
        }
        let errors = validate(
            &schema(),
            &obj(json!({"schedule": "0 2 * * *", "s3": {}, "quantity": true})),
            None,
        );
        assert_eq!(
            messages(&errors)[0],
            r#"spec.quantity: Invalid value: "boolean": spec.quantity in body must be of type integer,string: "boolean""#
        );
    }

    #[test]
    fn cel_exactly_one_of() {
        for spec in [
            json!({"schedule": "0 2 * * *"}),
            json!({"schedule": "0 2 * * *", "s3": {}, "filesystem": {}}),
        ] {
            let errors = validate(&schema(), &obj(spec), None);
            assert_eq!(
                messages(&errors),
                vec![
                    r#"spec: Invalid value: "object": exactly one of s3 or filesystem must be set"#
                ]
            );
        }
    }

    #[test]
    fn transition_rules_run_only_on_update() {
        let old = obj(json!({"schedule": "0 2 * * *", "s3": {"bucket": "a"}}));
        let new = obj(json!({"schedule": "0 2 * * *", "s3": {"bucket": "b"}}));
        assert!(validate(&schema(), &new, None).is_empty());
        assert!(validate(&schema(), &new, Some(&new)).is_empty());
        let errors = validate(&schema(), &new, Some(&old));
        assert_eq!(
            messages(&errors),
            vec![r#"spec: Invalid value: "object": spec is immutable"#]
        );
        // A status-only change leaves spec alone.
        let mut with_status = old.clone();
        with_status["status"] = json!({"phase": "Running"});
        assert!(validate(&schema(), &with_status, Some(&old)).is_empty());
    }

    #[test]
    fn message_expression_field_path_and_reason() {
        let errors = validate(
            &schema(),
            &obj(
                json!({"schedule": "0 2 * * *", "s3": {}, "compression": {"level": 22},
                        "checks": [{"name": "a", "min": -1}], "tags": ["Bad"]}),
            ),
            None,
        );
        let m = messages(&errors);
        assert!(
            m.contains(
                &r#"spec.compression.level: Invalid value: "integer": level 22 is above 19"#
                    .to_string()
            ),
            "{m:?}"
        );
        assert!(
            m.contains(
                &r#"spec.checks[0].min: Invalid value: "object": min must not be negative"#
                    .to_string()
            ),
            "{m:?}"
        );
        assert!(
            m.contains(&"spec.tags: Forbidden: tags are lower-case words".to_string()),
            "{m:?}"
        );
        assert_eq!(errors.len(), 3);
    }

    #[test]
    fn list_limits_and_nested_required() {
        let errors = validate(
            &schema(),
            &obj(
                json!({"schedule": "0 2 * * *", "s3": {}, "checks": [{}, {"name": "b"}, {"name": "c"}]}),
            ),
            None,
        );
        let m = messages(&errors);
        assert!(
            m.contains(&"spec.checks: Too many: 3: must have at most 2 items".to_string()),
            "{m:?}"
        );
        assert!(
            m.contains(&"spec.checks[0].name: Required value".to_string()),
            "{m:?}"
        );
    }

    #[test]
    fn nulls_of_non_nullable_fields_are_dropped_and_nullable_nulls_kept() {
        let errors = validate(
            &schema(),
            &obj(json!({"schedule": "0 2 * * *", "s3": {}, "port": null, "compression": null})),
            None,
        );
        assert!(errors.is_empty(), "{:?}", messages(&errors));
        // A null of a non-nullable field does not count as present for has().
        let errors = validate(
            &schema(),
            &obj(json!({"schedule": "0 2 * * *", "s3": {}, "filesystem": null})),
            None,
        );
        assert!(errors.is_empty(), "{:?}", messages(&errors));
    }

    #[test]
    fn number_fields_are_doubles_in_cel() {
        let s = json!({"type": "object", "properties": {"ratio": {"type": "number",
            "x-kubernetes-validations": [{"rule": "self < 1.5", "message": "ratio must be below 1.5"}]}}});
        assert!(validate(&s, &json!({"ratio": 1}), None).is_empty());
        assert_eq!(
            messages(&validate(&s, &json!({"ratio": 2}), None)),
            vec![r#"ratio: Invalid value: "number": ratio must be below 1.5"#]
        );
    }

    #[test]
    fn map_lists_correlate_old_items_by_key() {
        let s = json!({"type": "object", "properties": {"items": {
            "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {"name": {"type": "string"}, "v": {"type": "integer"}},
                      "x-kubernetes-validations": [{"rule": "self.v >= oldSelf.v", "message": "v may only grow"}]}}}});
        let old = json!({"items": [{"name": "a", "v": 2}, {"name": "b", "v": 1}]});
        let ok =
            json!({"items": [{"name": "b", "v": 1}, {"name": "a", "v": 3}, {"name": "c", "v": 0}]});
        assert!(validate(&s, &ok, Some(&old)).is_empty());
        let bad = json!({"items": [{"name": "b", "v": 0}]});
        assert_eq!(
            messages(&validate(&s, &bad, Some(&old))),
            vec![r#"items[0]: Invalid value: "object": v may only grow"#]
        );
    }

    #[test]
    fn map_and_set_lists_refuse_duplicates() {
        let s = json!({"type": "object", "properties": {
            "conditions": {"type": "array", "x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["type"],
                           "items": {"type": "object", "properties": {"type": {"type": "string"}, "status": {"type": "string"}}}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "free": {"type": "array", "items": {"type": "string"}}}});
        let ok = json!({"conditions": [{"type": "Ready", "status": "True"}, {"type": "Failed", "status": "True"}],
                        "tags": ["a", "b"], "free": ["x", "x"]});
        assert!(validate(&s, &ok, None).is_empty());
        let bad = json!({"conditions": [{"type": "Ready", "status": "True"}, {"type": "Ready", "status": "False"}],
                         "tags": ["a", "a"]});
        assert_eq!(
            messages(&validate(&s, &bad, None)),
            vec![
                r#"conditions[1]: Duplicate value: {"type":"Ready"}"#,
                r#"tags[1]: Duplicate value: "a""#
            ]
        );
    }

    #[test]
    fn rule_without_message_reports_the_rule() {
        let s = json!({"type": "object", "x-kubernetes-validations": [{"rule": "has(self.a)"}],
                       "properties": {"a": {"type": "string"}}});
        assert_eq!(
            messages(&validate(&s, &json!({}), None)),
            vec![r#"Invalid value: "object": failed rule: has(self.a)"#]
        );
    }

    #[test]
    fn uncompilable_rule_is_a_schema_error() {
        let s = json!({"type": "object", "properties": {"a": {"type": "string",
            "x-kubernetes-validations": [{"rule": "self ==", "message": "m"}]}}});
        let err = SchemaValidator::new(&s).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("a: x-kubernetes-validations rule"),
            "{err}"
        );
        let errors = validate(&s, &json!({"a": "x"}), None);
        assert_eq!(errors[0].kind, FieldErrorKind::Internal);
    }

    #[test]
    fn date_time_format_is_checked() {
        let s = json!({"type": "object", "properties": {"t": {"type": "string", "format": "date-time"}}});
        assert!(validate(&s, &json!({"t": "2026-01-02T03:04:05Z"}), None).is_empty());
        assert_eq!(
            messages(&validate(&s, &json!({"t": "yesterday"}), None)),
            vec![
                r#"t: Invalid value: "yesterday": t in body must be of type date-time: "yesterday""#
            ]
        );
    }

    #[test]
    fn validator_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SchemaValidator>();
        let v = Arc::new(SchemaValidator::new(&schema()).unwrap());
        let o = obj(json!({"schedule": "0 2 * * *"}));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (v, o) = (v.clone(), o.clone());
                std::thread::spawn(move || v.validate(&o, None).len())
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 1);
        }
    }

    #[test]
    fn causes_carry_reason_field_and_body() {
        let errors = validate(&schema(), &obj(json!({"s3": {}})), None);
        assert_eq!(
            errors[0].to_cause(),
            json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.schedule"})
        );
    }

    #[test]
    fn invalid_message_matches_the_apiserver() {
        let one = FieldError::new(
            "spec".into(),
            FieldErrorKind::Invalid,
            Some(json!("object")),
            "spec is immutable".into(),
        );
        assert_eq!(
            invalid_message(
                "BackupRun",
                "dataguardian.io",
                "r1",
                std::slice::from_ref(&one)
            ),
            r#"BackupRun.dataguardian.io "r1" is invalid: spec: Invalid value: "object": spec is immutable"#
        );
        let two = FieldError::new(
            "spec.x".into(),
            FieldErrorKind::Required,
            None,
            String::new(),
        );
        assert_eq!(
            invalid_message("BackupRun", "dataguardian.io", "r1", &[one, two]),
            r#"BackupRun.dataguardian.io "r1" is invalid: [spec: Invalid value: "object": spec is immutable, spec.x: Required value]"#
        );
    }

    #[test]
    fn defaults_and_pruning() {
        let s = json!({"type": "object", "properties": {
        "metadata": {"type": "object"},
        "spec": {"type": "object", "properties": {
            "level": {"type": "integer", "default": 3},
            "inner": {"type": "object", "properties": {"a": {"type": "string", "default": "x"}}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}}
        }}}});
        let mut o = json!({"apiVersion": "v", "kind": "K", "metadata": {"name": "n", "odd": 1},
                           "spec": {"inner": {}, "bogus": 1, "free": {"any": 1}, "labels": {"k": "v"}},
                           "extra": true});
        let removed = prune(&s, &mut o);
        assert_eq!(removed, vec!["extra".to_string(), "spec.bogus".to_string()]);
        apply_defaults(&s, &mut o);
        assert_eq!(
            o,
            json!({"apiVersion": "v", "kind": "K", "metadata": {"name": "n", "odd": 1},
                   "spec": {"inner": {"a": "x"}, "level": 3, "free": {"any": 1}, "labels": {"k": "v"}}})
        );
    }
}
