//! `meta.k8s.io/v1` Table rendering for `kubectl get` (printer columns).

use jsonpath_rust::JsonPath;
use serde_json::{Value, json};

use crate::resources::{Builtin, PrinterColumn, ResourceDef};

/// What each row's `object` holds (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// Nothing.
    None,
    /// A PartialObjectMetadata (the default).
    #[default]
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parses the query parameter.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

pub(crate) fn col(
    name: &str,
    type_: &str,
    format: &str,
    desc: &str,
    priority: i64,
) -> PrinterColumn {
    PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        format: format.into(),
        description: desc.into(),
        priority,
        json_path: String::new(),
    }
}

/// Kubernetes' `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        let s = secs % 60;
        if s == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{s}s")
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        let mm = m % 60;
        if mm == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{mm}m")
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 192 {
        let hh = h % 24;
        if hh == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{hh}h")
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        let dd = d % 365;
        if dd == 0 {
            format!("{}y", d / 365)
        } else {
            format!("{}y{dd}d", d / 365)
        }
    } else {
        format!("{}y", d / 365)
    }
}

pub(crate) fn age(ts: Option<&Value>) -> Value {
    match ts
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    {
        Some(t) => json!(human_duration(
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()
        )),
        None => json!("<unknown>"),
    }
}

fn columns(rd: &ResourceDef) -> Vec<PrinterColumn> {
    let name = col(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
        0,
    );
    let age_c = col(
        "Age",
        "string",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
        0,
    );
    match rd.builtin {
        None => {
            let mut cols = vec![name];
            if rd.printer_columns.is_empty() {
                cols.push(age_c);
            } else {
                cols.extend(rd.printer_columns.iter().cloned());
            }
            cols
        }
        Some(Builtin::Pod) => vec![
            name,
            col(
                "Ready",
                "string",
                "",
                "The aggregate readiness state of this pod for accepting traffic.",
                0,
            ),
            col(
                "Status",
                "string",
                "",
                "The aggregate status of the containers in this pod.",
                0,
            ),
            col(
                "Restarts",
                "string",
                "",
                "The number of times the containers in this pod have been restarted.",
                0,
            ),
            age_c,
            col("IP", "string", "", "IP address allocated to the pod.", 1),
            col(
                "Node",
                "string",
                "",
                "Name of the node assigned to the pod.",
                1,
            ),
        ],
        Some(Builtin::PersistentVolumeClaim) => vec![
            name,
            col("Status", "string", "", "The status of the claim", 0),
            col("Volume", "string", "", "The bound volume", 0),
            col(
                "Capacity",
                "string",
                "",
                "The capacity of the bound volume",
                0,
            ),
            col("Access Modes", "string", "", "The access modes", 0),
            col("StorageClass", "string", "", "The storage class", 0),
            age_c,
        ],
        Some(Builtin::Job) => vec![
            name,
            col("Status", "string", "", "Status of the job.", 0),
            col(
                "Completions",
                "string",
                "",
                "The completion status of the job.",
                0,
            ),
            col(
                "Duration",
                "string",
                "",
                "Time required to complete the job.",
                0,
            ),
            age_c,
        ],
        Some(Builtin::Namespace) => vec![
            name,
            col("Status", "string", "", "The status of the namespace", 0),
            age_c,
        ],
        Some(Builtin::Secret) => vec![
            name,
            col("Type", "string", "", "The type of the secret", 0),
            col(
                "Data",
                "string",
                "",
                "The number of data entries in the secret",
                0,
            ),
            age_c,
        ],
        Some(Builtin::ConfigMap) => vec![
            name,
            col("Data", "string", "", "The number of data entries", 0),
            age_c,
        ],
        Some(Builtin::ServiceAccount) => vec![
            name,
            col("Secrets", "string", "", "The number of secrets", 0),
            age_c,
        ],
        Some(Builtin::Lease) => vec![
            name,
            col("Holder", "string", "", "The holder of the lease", 0),
            age_c,
        ],
        Some(Builtin::CoreEvent | Builtin::EventV1) => vec![
            col(
                "Last Seen",
                "string",
                "",
                "Time since the most recent occurrence",
                0,
            ),
            col("Type", "string", "", "Type of this event", 0),
            col("Reason", "string", "", "Reason of this event", 0),
            col("Object", "string", "", "The object this event is about", 0),
            col("Message", "string", "", "Message of this event", 0),
        ],
        Some(Builtin::Crd) => vec![name, col("Created At", "date", "", "Creation time", 0)],
        Some(Builtin::Role) => vec![name, col("Created At", "date", "", "Creation time", 0)],
        Some(Builtin::RoleBinding) => vec![
            name,
            col("Role", "string", "", "Role", 0),
            age_c,
            col("Users", "string", "", "Users in the binding", 1),
            col("Groups", "string", "", "Groups in the binding", 1),
            col(
                "ServiceAccounts",
                "string",
                "",
                "ServiceAccounts in the binding",
                1,
            ),
        ],
        Some(Builtin::Review) => vec![name],
        Some(other) => crate::workloads::columns(other, name, age_c),
    }
}

fn jsonpath_cell(obj: &Value, c: &PrinterColumn) -> Value {
    let path = c.json_path.trim();
    let path = path.trim_start_matches('{').trim_end_matches('}');
    let expr = if path.starts_with('$') {
        path.to_string()
    } else {
        format!("${path}")
    };
    let found = obj
        .query(&expr)
        .ok()
        .and_then(|v| v.first().map(|x| (*x).clone()));
    let Some(v) = found else {
        return Value::Null;
    };
    match c.type_.as_str() {
        "date" => age(Some(&v)),
        "integer" | "number" | "boolean" => v,
        _ => match v {
            Value::String(_) => v,
            other => json!(other.to_string()),
        },
    }
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses
        .iter()
        .filter(|s| s.get("ready") == Some(&json!(true)))
        .count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|s| s.get("restartCount").and_then(Value::as_i64))
        .sum();
    let mut status = o
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending")
        .to_string();
    for s in &statuses {
        if let Some(r) = s.pointer("/state/waiting/reason").and_then(Value::as_str) {
            status = r.to_string();
        } else if let Some(r) = s
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
        {
            status = r.to_string();
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        status = "Terminating".into();
    }
    vec![
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        age(o.pointer("/metadata/creationTimestamp")),
        o.pointer("/status/podIP")
            .cloned()
            .unwrap_or(json!("<none>")),
        o.pointer("/spec/nodeName")
            .cloned()
            .unwrap_or(json!("<none>")),
    ]
}

fn job_cells(o: &Value) -> Vec<Value> {
    let conds = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conds
            .iter()
            .any(|c| c.get("type") == Some(&json!(t)) && c.get("status") == Some(&json!("True")))
    };
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if o.pointer("/spec/suspend") == Some(&json!(true)) {
        "Suspended"
    } else {
        "Running"
    };
    let succeeded = o
        .pointer("/status/succeeded")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let completions = o
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let ts = |p: &str| {
        o.pointer(p)
            .and_then(Value::as_str)
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    };
    let duration = match (ts("/status/startTime"), ts("/status/completionTime")) {
        (Some(s), Some(e)) => human_duration((e - s).num_seconds()),
        (Some(s), None) => {
            human_duration((chrono::Utc::now() - s.with_timezone(&chrono::Utc)).num_seconds())
        }
        _ => String::new(),
    };
    vec![
        json!(status),
        json!(format!("{succeeded}/{completions}")),
        json!(duration),
        age(o.pointer("/metadata/creationTimestamp")),
    ]
}

fn count(o: &Value, f: &str) -> Value {
    let n = o.get(f).and_then(Value::as_object).map_or(0, |m| m.len())
        + if f == "data" {
            o.get("binaryData")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
        } else {
            0
        };
    json!(n.to_string())
}

fn cells(rd: &ResourceDef, o: &Value) -> Vec<Value> {
    let name = o.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
    let created = age(o.pointer("/metadata/creationTimestamp"));
    let mut out = vec![name];
    match rd.builtin {
        None => {
            if rd.printer_columns.is_empty() {
                out.push(created);
            } else {
                out.extend(rd.printer_columns.iter().map(|c| jsonpath_cell(o, c)));
            }
        }
        Some(Builtin::Pod) => out.extend(pod_cells(o)),
        Some(Builtin::PersistentVolumeClaim) => {
            let modes: Vec<&str> = o
                .pointer("/spec/accessModes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|m| match m {
                            "ReadWriteOnce" => "RWO",
                            "ReadOnlyMany" => "ROX",
                            "ReadWriteMany" => "RWX",
                            "ReadWriteOncePod" => "RWOP",
                            other => other,
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(
                o.pointer("/status/phase")
                    .cloned()
                    .unwrap_or(json!("Pending")),
            );
            out.push(o.pointer("/spec/volumeName").cloned().unwrap_or(json!("")));
            out.push(
                o.pointer("/status/capacity/storage")
                    .cloned()
                    .unwrap_or(json!("")),
            );
            out.push(json!(modes.join(",")));
            out.push(
                o.pointer("/spec/storageClassName")
                    .cloned()
                    .unwrap_or(json!("<unset>")),
            );
            out.push(created);
        }
        Some(Builtin::Job) => out.extend(job_cells(o)),
        Some(Builtin::Namespace) => {
            out.push(
                o.pointer("/status/phase")
                    .cloned()
                    .unwrap_or(json!("Active")),
            );
            out.push(created);
        }
        Some(Builtin::Secret) => {
            out.push(o.get("type").cloned().unwrap_or(json!("Opaque")));
            out.push(count(o, "data"));
            out.push(created);
        }
        Some(Builtin::ConfigMap) => {
            out.push(count(o, "data"));
            out.push(created);
        }
        Some(Builtin::ServiceAccount) => {
            out.push(json!(
                o.get("secrets")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
                    .to_string()
            ));
            out.push(created);
        }
        Some(Builtin::Lease) => {
            out.push(
                o.pointer("/spec/holderIdentity")
                    .cloned()
                    .unwrap_or(json!("")),
            );
            out.push(created);
        }
        Some(Builtin::CoreEvent | Builtin::EventV1) => {
            // Rendered from the core/v1 form.
            let core = if rd.builtin == Some(Builtin::EventV1) {
                crate::builtin::event_v1_to_core(o)
            } else {
                o.clone()
            };
            let last = core
                .get("lastTimestamp")
                .filter(|v| !v.is_null())
                .or_else(|| core.get("eventTime"))
                .or_else(|| core.pointer("/metadata/creationTimestamp"));
            let io = core.get("involvedObject").cloned().unwrap_or(json!({}));
            let obj = format!(
                "{}/{}",
                io.get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_lowercase(),
                io.get("name").and_then(Value::as_str).unwrap_or_default()
            );
            out = vec![
                age(last),
                core.get("type").cloned().unwrap_or(json!("")),
                core.get("reason").cloned().unwrap_or(json!("")),
                json!(obj),
                core.get("message").cloned().unwrap_or(json!("")),
            ];
        }
        Some(Builtin::Crd | Builtin::Role) => {
            out.push(
                o.pointer("/metadata/creationTimestamp")
                    .cloned()
                    .unwrap_or(Value::Null),
            );
        }
        Some(Builtin::RoleBinding) => out.extend(role_binding_cells(o, created)),
        Some(Builtin::Review) => {}
        Some(other) => out.extend(crate::workloads::cells(other, o)),
    }
    out
}

fn role_binding_cells(o: &Value, created: Value) -> Vec<Value> {
    let s = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let rr = o.get("roleRef").cloned().unwrap_or(Value::Null);
    let subjects = o
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let of = |kind: &str| -> Value {
        let names: Vec<String> = subjects
            .iter()
            .filter(|x| s(x, "kind") == kind)
            .map(|x| {
                if kind == "ServiceAccount" {
                    format!("{}/{}", s(x, "namespace"), s(x, "name"))
                } else {
                    s(x, "name")
                }
            })
            .collect();
        json!(names.join(", "))
    };
    vec![
        json!(format!("{}/{}", s(&rr, "kind"), s(&rr, "name"))),
        created,
        of("User"),
        of("Group"),
        of("ServiceAccount"),
    ]
}

fn row(rd: &ResourceDef, o: &Value, include: IncludeObject) -> Value {
    let mut r = json!({"cells": cells(rd, o)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => r["object"] = o.clone(),
        IncludeObject::Metadata => {
            r["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
            })
        }
    }
    r
}

/// A Table of `objects` (already in the client's representation).
pub fn table(
    rd: &ResourceDef,
    objects: &[Value],
    include: IncludeObject,
    list_meta: Value,
    with_columns: bool,
) -> Value {
    let defs: Vec<Value> = if with_columns {
        columns(rd)
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.type_,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": objects.iter().map(|o| row(rd, o, include)).collect::<Vec<_>>(),
    })
}

/// Whether an Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p = part.replace(' ', "");
        p.contains("as=Table") && p.contains("g=meta.k8s.io")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubernetes() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 3 + 60 * 5), "3h5m");
        assert_eq!(human_duration(86400 * 3), "3d");
    }
}
