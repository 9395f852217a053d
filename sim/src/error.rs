//! API errors rendered as Kubernetes `Status` objects (`kind: Status, apiVersion: v1`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One entry of `Status.details.causes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// Machine-readable reason, e.g. `FieldValueInvalid`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// Dotted field path, e.g. `spec.schedule`.
    pub field: String,
}

/// An API error: the HTTP code plus everything a `Status` body carries.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code (404, 409, 422, ...).
    pub code: u16,
    /// `Status.reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, ...).
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `details.name`, `details.group` and `details.kind` (the resource for most errors, the
    /// Kind for `Invalid`).
    pub details: Option<Box<Details>>,
    /// `details.causes`.
    pub causes: Vec<Cause>,
}

/// Who an error is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Details {
    /// Object name (may be empty).
    pub name: String,
    /// API group.
    pub group: String,
    /// Resource (or Kind for `Invalid`).
    pub kind: String,
}

/// Result alias for API operations.
pub type ApiResult<T> = Result<T, ApiError>;

fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            causes: Vec::new(),
        }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.details = Some(Box::new(Details {
            name: name.to_string(),
            group: group.to_string(),
            kind: kind.to_string(),
        }));
        self
    }

    /// 404 `NotFound`: `pods "x" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(resource, group)),
        )
        .with_details(group, resource, name)
    }

    /// 404 for a path that names no resource (`the server could not find the requested resource`).
    pub fn no_route() -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        e.causes.push(Cause {
            reason: "UnexpectedServerResponse".into(),
            message: "404 page not found".into(),
            field: String::new(),
        });
        e
    }

    /// 409 `AlreadyExists`.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(resource, group)),
        )
        .with_details(group, resource, name)
    }

    /// 409 `Conflict` for a stale resourceVersion.
    pub fn conflict(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict_msg(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 `Conflict` with a custom detail (`Operation cannot be fulfilled on ...: DETAIL`).
    pub fn conflict_msg(group: &str, resource: &str, name: &str, detail: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {detail}",
                qualified(resource, group)
            ),
        )
        .with_details(group, resource, name)
    }

    /// 422 `Invalid` with field causes; `message` is the full `Kind.group "name" is invalid: ...`.
    pub fn invalid(
        group: &str,
        kind: &str,
        name: &str,
        message: String,
        causes: Vec<Cause>,
    ) -> Self {
        let mut e = Self::new(422, "Invalid", message).with_details(group, kind, name);
        e.causes = causes;
        e
    }

    /// 422 `Invalid` built from `(field, reason, body)` triples in the apiserver's format.
    pub fn invalid_fields(
        group: &str,
        kind: &str,
        name: &str,
        errs: &[(String, &str, String)],
    ) -> Self {
        let rendered: Vec<String> = errs.iter().map(|(f, _, b)| format!("{f}: {b}")).collect();
        let list = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let message = format!("{} \"{name}\" is invalid: {list}", qualified(kind, group));
        let causes = errs
            .iter()
            .map(|(f, r, b)| Cause {
                reason: (*r).to_string(),
                message: b.clone(),
                field: f.clone(),
            })
            .collect();
        Self::invalid(group, kind, name, message, causes)
    }

    /// 400 `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 `Unauthorized` (unknown or invalid credentials).
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 `Forbidden`.
    pub fn forbidden(group: &str, resource: &str, name: &str, message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message).with_details(group, resource, name)
    }

    /// 405 `MethodNotAllowed`.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 410 `Expired` (too old resource version).
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 504 `Timeout` (e.g. a resourceVersion from the future).
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    /// 415 `UnsupportedMediaType`.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 500 `InternalError`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        let mut details = serde_json::Map::new();
        if let Some(d) = &self.details {
            // Go's `omitempty`: empty name, group (core) and kind are left out.
            for (k, v) in [("name", &d.name), ("group", &d.group), ("kind", &d.kind)] {
                if !v.is_empty() {
                    details.insert(k.into(), json!(v));
                }
            }
        }
        if !self.causes.is_empty() {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| {
                    let mut m = serde_json::Map::new();
                    m.insert("reason".into(), json!(c.reason));
                    m.insert("message".into(), json!(c.message));
                    if !c.field.is_empty() {
                        m.insert("field".into(), json!(c.field));
                    }
                    Value::Object(m)
                })
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if !details.is_empty() || self.details.is_some() {
            s["details"] = Value::Object(details);
        }
        s
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.to_status().to_string(),
        )
            .into_response()
    }
}
