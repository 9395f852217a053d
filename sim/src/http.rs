//! HTTP routing: parses Kubernetes API paths and dispatches to the operations.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::discovery;
use crate::error::ApiError;
use crate::logs::{LogParams, pod_log};
use crate::openapi;
use crate::ops::{DeleteOpts, FieldValidation, ListOpts, Propagation, State, WriteOpts};
use crate::patch::PatchType;
use crate::protobuf;
use crate::resources::{Builtin, ResourceDef};
use crate::scale::ScaleWrite;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::table::{IncludeObject, table, wants_table};
use crate::watch::{WatchParams, watch};

/// What the HTTP layer needs.
#[derive(Debug, Clone)]
pub struct App {
    /// Shared state.
    pub state: Arc<State>,
    /// `host:port` the server listens on.
    pub address: String,
}

/// Builds the router.
pub fn router(app: App) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(app)
}

fn json_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let mut resp = (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response();
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(h) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}

fn ok(v: &Value) -> Response {
    json_response(StatusCode::OK, v, &[])
}

type Query = HashMap<String, String>;

fn query(uri: &Uri) -> Query {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn truthy(q: &Query, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true" || v == "1")
}

async fn handle(
    AxState(app): AxState<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A stopped server answers nothing more on connections opened before (503 and the
    // connection closed: the client reconnects, to the successor if there is one).
    let Some(_in_flight) = app.state.store.begin_request() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONNECTION, "close")],
            "the API server is stopping",
        )
            .into_response();
    };
    // Authentication, impersonation and authorization, as kube-apiserver's filters do before
    // any handler runs.
    let user = match crate::auth::gate(&app.state, &method, &uri, &headers) {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(%method, %uri, error = %e, "request refused");
            return e.into_response();
        }
    };
    match route(&app, &user, &method, &uri, &headers, body).await {
        Ok(r) => {
            if method != Method::GET {
                // Let the controllers (garbage collector, namespaces, service accounts, RBAC
                // aggregation, root CA) look at the change now rather than at their next tick.
                app.state.gc_wake.notify_one();
            }
            r
        }
        Err(e) => {
            tracing::debug!(%method, %uri, error = %e, "request failed");
            e.into_response()
        }
    }
}

fn header_str(h: &HeaderMap, k: header::HeaderName) -> &str {
    h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// A resolved resource path.
struct Target {
    rd: Arc<ResourceDef>,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn resolve(app: &App, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let reg = app.state.registry();
    let find = |res: &str| reg.find(group, version, res).cloned().map(Arc::new);
    let t = |rd, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| Target {
        rd,
        namespace: ns.map(str::to_string),
        name: name.map(str::to_string),
        sub: sub.map(str::to_string),
    };
    match rest {
        ["namespaces", ns, res, tail @ ..] if find(res).is_some_and(|d| d.namespaced) => {
            let rd = find(res).expect("checked");
            match tail {
                [] => Ok(t(rd, Some(ns), None, None)),
                [name] => Ok(t(rd, Some(ns), Some(name), None)),
                [name, sub] => Ok(t(rd, Some(ns), Some(name), Some(sub))),
                _ => Err(ApiError::no_route()),
            }
        }
        [res, tail @ ..] => {
            let rd = find(res).ok_or_else(ApiError::no_route)?;
            match tail {
                [] => Ok(t(rd, None, None, None)),
                [name] if !rd.namespaced => Ok(t(rd, None, Some(name), None)),
                [name, sub] if !rd.namespaced => Ok(t(rd, None, Some(name), Some(sub))),
                _ => Err(ApiError::no_route()),
            }
        }
        [] => Err(ApiError::no_route()),
    }
}

async fn route(
    app: &App,
    user: &crate::auth::UserInfo,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = uri.path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let accept = header_str(headers, header::ACCEPT);
    let reg_snapshot = app.state.registry();
    let reg = &*reg_snapshot;
    match segs.as_slice() {
        ["version"] => return Ok(ok(&discovery::version())),
        ["healthz"] | ["readyz"] | ["livez"] => return Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => {
            if discovery::wants_aggregated(accept) {
                return Ok(aggregated(&discovery::aggregated(reg, true)));
            }
            return Ok(ok(&discovery::core_versions(&app.address)));
        }
        ["apis"] => {
            if discovery::wants_aggregated(accept) {
                return Ok(aggregated(&discovery::aggregated(reg, false)));
            }
            return Ok(ok(&discovery::group_list(reg)));
        }
        ["apis", g] => {
            return discovery::group(reg, g)
                .map(|v| ok(&v))
                .ok_or_else(ApiError::no_route);
        }
        ["api", v] => {
            return discovery::resource_list(reg, "", v)
                .map(|v| ok(&v))
                .ok_or_else(ApiError::no_route);
        }
        ["apis", g, v] => {
            return discovery::resource_list(reg, g, v)
                .map(|v| ok(&v))
                .ok_or_else(ApiError::no_route);
        }
        ["openapi", "v3"] => return Ok(ok(&openapi::root(reg))),
        ["openapi", "v3", rest @ ..] => {
            return openapi::group_version_doc(reg, rest)
                .map(|v| ok(&v))
                .ok_or_else(ApiError::no_route);
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route()),
    };
    let target = resolve(app, group, version, rest)?;
    let q = query(uri);
    let state = app.state.clone();
    let rd = target.rd.clone();
    let ns = target.namespace.clone().unwrap_or_default();
    let user_agent = header_str(headers, header::USER_AGENT);
    let content_type = header_str(headers, header::CONTENT_TYPE).to_string();

    if let Some(sub) = target.sub.as_deref() {
        let ok_sub = (sub == "status" && rd.status_subresource)
            || (sub == "scale" && rd.scale_subresource)
            || ((sub == "log" || sub == "binding") && rd.log_subresource)
            || (sub == "token" && rd.builtin == Some(Builtin::ServiceAccount));
        if !ok_sub {
            return Err(ApiError::no_route());
        }
    }
    let name = target.name.clone();

    let write_opts = || -> Result<WriteOpts, ApiError> {
        let explicit = q.get("fieldManager").filter(|m| !m.is_empty()).cloned();
        let manager = explicit.clone().unwrap_or_else(|| {
            user_agent
                .split('/')
                .next()
                .unwrap_or("unknown")
                .to_string()
        });
        let field_validation = match q.get("fieldValidation").map(String::as_str) {
            None | Some("") | Some("Warn") => FieldValidation::Warn,
            Some("Ignore") => FieldValidation::Ignore,
            Some("Strict") => FieldValidation::Strict,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", got {other:?}"
                )));
            }
        };
        Ok(WriteOpts {
            dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
            manager,
            manager_explicit: explicit.is_some(),
            field_validation,
            force: truthy(&q, "force"),
            requester: Some(user.clone()),
            admission_patches: Vec::new(),
        })
    };
    let list_opts = || -> Result<ListOpts, ApiError> {
        Ok(ListOpts {
            labels: LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))?,
            fields: FieldSelector::parse(&rd, q.get("fieldSelector").map_or("", String::as_str))?,
            limit: q.get("limit").and_then(|l| l.parse().ok()),
            continue_token: q.get("continue").cloned(),
        })
    };
    if rd.builtin == Some(Builtin::Review) || target.sub.as_deref() == Some("token") {
        return auth_create(app, user, method, &rd, &target, &content_type, &body, &q);
    }
    let table_mode = wants_table(accept)
        .then(|| IncludeObject::parse(q.get("includeObject").map(String::as_str)));

    match (method.clone(), name) {
        (Method::GET, None) => {
            if truthy(&q, "watch") {
                let lo = list_opts()?;
                let p = WatchParams {
                    resource_version: q.get("resourceVersion").cloned(),
                    bookmarks: truthy(&q, "allowWatchBookmarks"),
                    timeout: q.get("timeoutSeconds").and_then(|t| t.parse().ok()),
                    labels: lo.labels,
                    fields: lo.fields,
                    send_initial_events: truthy(&q, "sendInitialEvents"),
                    namespace: target.namespace.clone(),
                    table: table_mode,
                };
                let stream = watch(state, rd, p)?;
                let mut resp = Response::new(Body::from_stream(stream));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return Ok(resp);
            }
            if let Some(inc) = table_mode {
                let list = state.list(&rd, target.namespace.as_deref(), &list_opts()?)?;
                let items = list["items"].as_array().cloned().unwrap_or_default();
                return Ok(ok(&table(&rd, &items, inc, list["metadata"].clone(), true)));
            }
            let list = state.list_json(&rd, target.namespace.as_deref(), &list_opts()?)?;
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                list,
            )
                .into_response())
        }
        (Method::GET, Some(name)) if target.sub.as_deref() == Some("scale") => {
            Ok(ok(&state.get_scale(&rd, &ns, &name)?))
        }
        (Method::PUT | Method::PATCH, Some(name)) if target.sub.as_deref() == Some("scale") => {
            let write = if method == Method::PUT {
                ScaleWrite::Replace(decode_body(&rd, &content_type, &body)?)
            } else {
                let ptype = PatchType::from_content_type(&content_type).ok_or_else(|| {
                    ApiError::unsupported_media_type(format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type})"
                    ))
                })?;
                let patch: Value = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                ScaleWrite::Patch(ptype, patch)
            };
            Ok(ok(&state.write_scale(
                &rd,
                &ns,
                &name,
                write,
                &write_opts()?,
            )?))
        }
        (Method::GET, Some(name)) => {
            if target.sub.as_deref() == Some("log") {
                let p = LogParams {
                    container: q.get("container").cloned(),
                    follow: truthy(&q, "follow"),
                    tail_lines: q.get("tailLines").and_then(|t| t.parse().ok()),
                    limit_bytes: q.get("limitBytes").and_then(|t| t.parse().ok()),
                };
                let stream = pod_log(state, rd, ns, name, p).await?;
                let mut resp = Response::new(Body::from_stream(stream));
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                return Ok(resp);
            }
            let obj = state.get(&rd, &ns, &name)?;
            if let Some(inc) = table_mode {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(Value::Null);
                return Ok(ok(&table(
                    &rd,
                    &[obj],
                    inc,
                    json!({"resourceVersion": rv}),
                    true,
                )));
            }
            Ok(ok(&obj))
        }
        (Method::POST, None) => {
            if rd.namespaced && target.namespace.is_none() {
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ));
            }
            let obj = decode_body(&rd, &content_type, &body)?;
            if rd.builtin == Some(Builtin::Pod) {
                crate::auth::admission::wait_for_default_service_account(&state, &ns, &obj).await;
            }
            let out = crate::webhooks::admit_and_write(
                &state,
                &rd,
                &ns,
                crate::webhooks::Write::Create(obj),
                &write_opts()?,
            )
            .await?;
            Ok(json_response(
                StatusCode::CREATED,
                &out.object,
                &out.warnings,
            ))
        }
        (Method::POST, Some(name)) if target.sub.as_deref() == Some("binding") => {
            let binding: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("error decoding Binding: {e}")))?;
            let status = state.bind_pod(&rd, &ns, &name, &binding)?;
            Ok(json_response(StatusCode::CREATED, &status, &[]))
        }
        (Method::PUT, Some(name)) if matches!(target.sub.as_deref(), None | Some("status")) => {
            let obj = decode_body(&rd, &content_type, &body)?;
            let write = crate::webhooks::Write::Update {
                name: name.clone(),
                body: obj,
                sub: target.sub.clone(),
            };
            let out =
                crate::webhooks::admit_and_write(&state, &rd, &ns, write, &write_opts()?).await?;
            let code = if out.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &out.object, &out.warnings))
        }
        (Method::PATCH, Some(name)) if matches!(target.sub.as_deref(), None | Some("status")) => {
            let ptype = PatchType::from_content_type(&content_type).ok_or_else(|| {
                ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type})"
                ))
            })?;
            let patch: Value = if ptype == PatchType::Apply {
                serde_yaml::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
            };
            let write = crate::webhooks::Write::Patch {
                name: name.clone(),
                ptype,
                patch,
                sub: target.sub.clone(),
            };
            let out =
                crate::webhooks::admit_and_write(&state, &rd, &ns, write, &write_opts()?).await?;
            let code = if out.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &out.object, &out.warnings))
        }
        (Method::DELETE, name) => {
            let opts = delete_opts(&q, &body)?;
            match name {
                Some(name) => {
                    let out = state.delete(&rd, &ns, &name, &opts)?;
                    Ok(ok(&out.object))
                }
                None => Ok(ok(&state.delete_collection(
                    &rd,
                    target.namespace.as_deref(),
                    &list_opts()?,
                    &opts,
                )?)),
            }
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// The create-only reviews and `serviceaccounts/{name}/token` (TokenRequest).
#[allow(clippy::too_many_arguments)]
fn auth_create(
    app: &App,
    user: &crate::auth::UserInfo,
    method: &Method,
    rd: &ResourceDef,
    target: &Target,
    content_type: &str,
    body: &[u8],
    q: &Query,
) -> Result<Response, ApiError> {
    use crate::auth::reviews;
    if method != Method::POST {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let out = match (&target.name, target.sub.as_deref()) {
        (None, None) => {
            let obj = reviews::decode(&rd.kind, content_type, body)?;
            reviews::review(&app.state, &rd.kind, target.namespace.as_deref(), user, obj)?
        }
        (Some(name), Some("token")) => {
            let obj = reviews::decode("TokenRequest", content_type, body)?;
            let ns = target.namespace.clone().unwrap_or_default();
            let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
            reviews::token_request(&app.state, &ns, name, obj, dry_run)?
        }
        _ => return Err(ApiError::no_route()),
    };
    Ok(json_response(StatusCode::CREATED, &out, &[]))
}

fn aggregated(v: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, discovery::AGGREGATED_CONTENT_TYPE)],
        v.to_string(),
    )
        .into_response()
}

fn decode_body(rd: &ResourceDef, content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let base = content_type.split(';').next().unwrap_or("").trim();
    match base {
        "application/vnd.kubernetes.protobuf" => protobuf::decode(rd, body),
        "application/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}"))),
        "" | "application/json" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}"))),
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other})"
        ))),
    }
}

fn delete_opts(q: &Query, body: &[u8]) -> Result<DeleteOpts, ApiError> {
    let b: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    let policy = q.get("propagationPolicy").cloned().or_else(|| {
        b.get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let mut propagation = match policy.as_deref() {
        None | Some("") => None,
        Some("Background") => Some(Propagation::Background),
        Some("Foreground") => Some(Propagation::Foreground),
        Some("Orphan") => Some(Propagation::Orphan),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    };
    if propagation.is_none() {
        let orphan = q
            .get("orphanDependents")
            .map(|v| v == "true")
            .or_else(|| b.get("orphanDependents").and_then(Value::as_bool));
        propagation = orphan.map(|o| {
            if o {
                Propagation::Orphan
            } else {
                Propagation::Background
            }
        });
    }
    let dry = q.get("dryRun").is_some_and(|d| d == "All")
        || b.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"));
    let grace_period = q
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or_else(|| b.get("gracePeriodSeconds").and_then(Value::as_i64));
    Ok(DeleteOpts {
        grace_period,
        propagation,
        uid: b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        resource_version: b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run: dry,
    })
}
