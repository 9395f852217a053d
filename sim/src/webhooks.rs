//! Admission webhooks, called as kube-apiserver calls them: for a create or update by an API
//! user, the matching webhooks of every `MutatingWebhookConfiguration` (in name order, each
//! configuration's webhooks in order), then of every `ValidatingWebhookConfiguration`, receive
//! an `admission.k8s.io/v1` `AdmissionReview` over HTTPS, verified against the webhook's
//! `caBundle` for the name it is reached by (`clientConfig.url`'s host, or
//! `SERVICE.NAMESPACE.svc` for `clientConfig.service`, reached at a Ready pod the Service
//! selects, on the port's `targetPort`), within `timeoutSeconds` (default 10).
//!
//! What they see is the object as it would be stored (the write is first run as a dry run:
//! patches merged, defaults applied), with `oldObject` on update, the requester's `userInfo`
//! and `dryRun`. A mutating webhook's JSONPatch is applied to the object of the real write (at
//! the point where the API server admits it, so server-side apply keeps its field ownership).
//! `allowed: false` refuses the request with the apiserver's text (`admission webhook "NAME"
//! denied the request: MESSAGE`, the response's code, at least 400); `warnings` become
//! `Warning` headers; a webhook that cannot be called refuses with 500 `failed calling webhook`
//! under `failurePolicy: Fail` (the default) and is skipped under `Ignore`. Rules (operations,
//! groups, versions, resources with subresources, scope), `namespaceSelector` and
//! `objectSelector` choose the webhooks. A dry-run request is refused by a webhook whose
//! `sideEffects` is not `None`/`NoneOnDryRun`.
//!
//! Not done: `matchConditions`, `reinvocationPolicy: IfNeeded`, `matchPolicy: Equivalent`
//! conversion, Endpoints of Services without a selector, DELETE and CONNECT requests, and the
//! server's own controllers' writes (as for admission policies).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::admission_policy::{Operation, Request};
use crate::error::{ApiError, ApiResult};
use crate::ops::{Outcome, State, WriteOpts};
use crate::patch::PatchType;
use crate::resources::{Builtin, ResourceDef};
use crate::store::{Inner, ObjKey};

const GROUP: &str = "admissionregistration.k8s.io";

/// One write as the HTTP layer received it.
#[derive(Debug, Clone)]
pub enum Write {
    /// POST.
    Create(Value),
    /// PUT of `name` (or its subresource).
    Update {
        /// Object name.
        name: String,
        /// The new object.
        body: Value,
        /// `status`, if the subresource.
        sub: Option<String>,
    },
    /// PATCH of `name` (or its subresource), any patch type.
    Patch {
        /// Object name.
        name: String,
        /// Patch type.
        ptype: PatchType,
        /// The patch.
        patch: Value,
        /// `status`, if the subresource.
        sub: Option<String>,
    },
}

impl Write {
    fn name(&self) -> Option<&str> {
        match self {
            Write::Create(_) => None,
            Write::Update { name, .. } | Write::Patch { name, .. } => Some(name),
        }
    }

    fn sub(&self) -> Option<&str> {
        match self {
            Write::Create(_) => None,
            Write::Update { sub, .. } | Write::Patch { sub, .. } => sub.as_deref(),
        }
    }

    fn perform(
        &self,
        state: &State,
        rd: &ResourceDef,
        ns: &str,
        opts: &WriteOpts,
    ) -> ApiResult<Outcome> {
        match self {
            Write::Create(obj) => state.create(rd, ns, obj.clone(), opts),
            Write::Update { name, body, sub } => {
                state.update(rd, ns, name, body.clone(), sub.as_deref(), opts)
            }
            Write::Patch {
                name,
                ptype,
                patch,
                sub,
            } => state.patch(rd, ns, name, *ptype, patch.clone(), sub.as_deref(), opts),
        }
    }
}

/// One webhook of a configuration.
#[derive(Debug, Clone)]
struct Hook {
    name: String,
    mutating: bool,
    spec: Value,
}

impl Hook {
    fn fail_closed(&self) -> bool {
        self.spec.get("failurePolicy").and_then(Value::as_str) != Some("Ignore")
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(
            self.spec
                .get("timeoutSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(10)
                .clamp(1, 30),
        )
    }

    /// Whether a rule could match a write of `rd` (its subresource `sub`) at all: the cheap
    /// test before the dry run that gives the object.
    fn may_match(&self, rd: &ResourceDef, sub: Option<&str>) -> bool {
        let user = crate::auth::UserInfo::anonymous();
        [Operation::Create, Operation::Update]
            .into_iter()
            .any(|operation| {
                let req = Request {
                    rd,
                    subresource: sub,
                    operation,
                    namespace: "",
                    name: "",
                    object: None,
                    old_object: None,
                    user: &user,
                    dry_run: false,
                };
                self.spec
                    .get("rules")
                    .and_then(Value::as_array)
                    .is_some_and(|rules| {
                        rules
                            .iter()
                            .any(|r| crate::admission_policy::rule_matches(r, &req))
                    })
            })
    }

    fn matches(&self, inner: &Inner, req: &Request<'_>) -> bool {
        let Some(rules) = self
            .spec
            .get("rules")
            .filter(|r| r.as_array().is_some_and(|a| !a.is_empty()))
        else {
            return false;
        };
        let m = json!({
            "resourceRules": rules,
            "namespaceSelector": self.spec.get("namespaceSelector").cloned().unwrap_or(json!({})),
            "objectSelector": self.spec.get("objectSelector").cloned().unwrap_or(json!({})),
        });
        crate::admission_policy::matches_resources(inner, &m, req)
    }
}

/// The webhooks of the stored configurations: mutating first, each kind in configuration name
/// order and each configuration's webhooks in order.
fn hooks(inner: &Inner) -> Vec<Hook> {
    let mut out = Vec::new();
    for (resource, mutating) in [
        ("mutatingwebhookconfigurations", true),
        ("validatingwebhookconfigurations", false),
    ] {
        let start = ObjKey {
            group: GROUP.into(),
            resource: resource.into(),
            namespace: String::new(),
            name: String::new(),
        };
        for (_, cfg) in inner
            .objects
            .range(start..)
            .take_while(|(k, _)| k.group == GROUP && k.resource == resource)
        {
            for w in cfg
                .get("webhooks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.push(Hook {
                    name: w
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    mutating,
                    spec: w.clone(),
                });
            }
        }
    }
    out
}

/// Runs `write` through the admission webhooks and then performs it.
pub async fn admit_and_write(
    state: &Arc<State>,
    rd: &ResourceDef,
    ns: &str,
    write: Write,
    opts: &WriteOpts,
) -> ApiResult<Outcome> {
    let Some(user) = opts.requester.clone() else {
        return write.perform(state, rd, ns, opts);
    };
    if rd.group == GROUP || rd.builtin == Some(Builtin::Review) {
        return write.perform(state, rd, ns, opts);
    }
    let all: Vec<Hook> = hooks(&state.store.lock())
        .into_iter()
        .filter(|h| h.may_match(rd, write.sub()))
        .collect();
    if all.is_empty() {
        return write.perform(state, rd, ns, opts);
    }
    let old = match write.name() {
        Some(name) => state.get(rd, ns, name).ok(),
        None => None,
    };
    let preview = write.perform(
        state,
        rd,
        ns,
        &WriteOpts {
            dry_run: true,
            ..opts.clone()
        },
    )?;
    let operation = if preview.created {
        Operation::Create
    } else {
        Operation::Update
    };
    let mut object = preview.object;
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut patches = Vec::new();
    let mut warnings = Vec::new();
    for mutating in [true, false] {
        for hook in all.iter().filter(|h| h.mutating == mutating) {
            let req = Request {
                rd,
                subresource: write.sub(),
                operation,
                namespace: ns,
                name: &name,
                object: Some(&object),
                old_object: if operation == Operation::Update {
                    old.as_ref()
                } else {
                    None
                },
                user: &user,
                dry_run: opts.dry_run,
            };
            if !hook.matches(&state.store.lock(), &req) {
                continue;
            }
            if opts.dry_run
                && !matches!(
                    hook.spec.get("sideEffects").and_then(Value::as_str),
                    Some("None" | "NoneOnDryRun")
                )
            {
                return Err(ApiError::bad_request(format!(
                    "admission webhook \"{}\" does not support dry run",
                    hook.name
                )));
            }
            let review = review(&req);
            let uid = review["request"]["uid"].clone();
            let response = match call(state, hook, &review).await {
                Ok(r) if r.get("uid") == Some(&uid) => r,
                Ok(r) => Err(format!(
                    "expected response.uid={uid}, got {}",
                    r.get("uid").cloned().unwrap_or(json!(""))
                ))
                .map_err(|e| failure(hook, e))
                .or_else(|e| {
                    if hook.fail_closed() {
                        Err(e)
                    } else {
                        Ok(Value::Null)
                    }
                })?,
                Err(e) if hook.fail_closed() => return Err(failure(hook, e)),
                Err(e) => {
                    tracing::warn!(webhook = %hook.name, error = %e, "failed calling webhook, failing open");
                    continue;
                }
            };
            if response.is_null() {
                continue;
            }
            warnings.extend(
                response
                    .get("warnings")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string),
            );
            if response.get("allowed").and_then(Value::as_bool) != Some(true) {
                return Err(denied(&hook.name, response.get("status")));
            }
            if let Some(p) = response.get("patch").filter(|p| !p.is_null()) {
                if !hook.mutating {
                    continue;
                }
                let patch = patch_bytes(p)
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .ok_or_else(|| {
                        ApiError::internal(format!(
                            "admission webhook \"{}\" returned an invalid JSONPatch",
                            hook.name
                        ))
                    })?;
                object = crate::patch::json_patch(&object, &patch).map_err(|e| {
                    ApiError::internal(format!(
                        "admission webhook \"{}\" returned a patch that does not apply: {}",
                        hook.name, e.message
                    ))
                })?;
                patches.push(patch);
            }
        }
    }
    let mut out = write.perform(
        state,
        rd,
        ns,
        &WriteOpts {
            admission_patches: patches,
            ..opts.clone()
        },
    )?;
    warnings.append(&mut out.warnings);
    out.warnings = warnings;
    Ok(out)
}

/// The `AdmissionReview` sent for `req`.
fn review(req: &Request<'_>) -> Value {
    let kind = json!({"group": req.rd.group, "version": req.rd.version, "kind": req.rd.kind});
    let resource =
        json!({"group": req.rd.group, "version": req.rd.version, "resource": req.rd.plural});
    let op = match req.operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
    };
    let options_kind = match req.operation {
        Operation::Create => "CreateOptions",
        Operation::Update => "UpdateOptions",
    };
    let mut request = json!({
        "uid": uuid::Uuid::new_v4().to_string(),
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "name": req.name,
        "operation": op,
        "userInfo": {
            "username": req.user.name,
            "uid": req.user.uid,
            "groups": req.user.groups,
            "extra": req.user.extra,
        },
        "object": req.object.cloned().unwrap_or(Value::Null),
        "oldObject": req.old_object.cloned().unwrap_or(Value::Null),
        "dryRun": req.dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": options_kind},
    });
    if !req.namespace.is_empty() {
        request["namespace"] = json!(req.namespace);
    }
    if let Some(sub) = req.subresource {
        request["subResource"] = json!(sub);
        request["requestSubResource"] = json!(sub);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// `ToStatusErr`: the refusal of webhook `name` with its status.
fn denied(name: &str, status: Option<&Value>) -> ApiError {
    let by = format!("admission webhook \"{name}\" denied the request");
    let message = status
        .and_then(|s| s.get("message"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty());
    let reason = status
        .and_then(|s| s.get("reason"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty());
    let text = match (message, reason) {
        (Some(m), _) => format!("{by}: {m}"),
        (None, Some(r)) => format!("{by}: {r}"),
        (None, None) => format!("{by} without explanation"),
    };
    let code = status
        .and_then(|s| s.get("code"))
        .and_then(Value::as_u64)
        .filter(|c| *c >= 400 && *c < 600)
        .unwrap_or(400) as u16;
    let mut err = ApiError::bad_request(text);
    err.code = code;
    err.reason = match reason {
        Some("Forbidden") => "Forbidden",
        Some("Invalid") => "Invalid",
        Some("Unauthorized") => "Unauthorized",
        Some("Conflict") => "Conflict",
        Some("NotFound") => "NotFound",
        Some("AlreadyExists") => "AlreadyExists",
        Some("TooManyRequests") => "TooManyRequests",
        _ => "",
    };
    err
}

fn failure(hook: &Hook, e: String) -> ApiError {
    ApiError::internal(format!(
        "Internal error occurred: failed calling webhook \"{}\": {e}",
        hook.name
    ))
}

/// Where a webhook is reached: the socket address, the TLS name, and the URL for messages.
fn endpoint(inner: &Inner, hook: &Hook) -> Result<(SocketAddr, String, String, String), String> {
    let cc = hook.spec.get("clientConfig").cloned().unwrap_or(json!({}));
    let timeout = hook.timeout().as_secs();
    if let Some(u) = cc.get("url").and_then(Value::as_str) {
        let url = url::Url::parse(u).map_err(|e| format!("invalid webhook URL {u:?}: {e}"))?;
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let path = url.path().to_string();
        let shown = format!("{u}?timeout={timeout}s");
        let ip: std::net::IpAddr = if host == "localhost" {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| format!("Post \"{shown}\": dial tcp: lookup {host}: no such host"))?
        };
        return Ok((SocketAddr::new(ip, port), host, path, shown));
    }
    let svc = cc.get("service").cloned().unwrap_or(json!({}));
    let (ns, name) = (
        svc.get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        svc.get("name").and_then(Value::as_str).unwrap_or_default(),
    );
    let port = svc.get("port").and_then(Value::as_u64).unwrap_or(443);
    let path = svc
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or("/")
        .to_string();
    let host = format!("{name}.{ns}.svc");
    let shown = format!("https://{host}:{port}{path}?timeout={timeout}s");
    let post = |what: String| format!("failed to call webhook: Post \"{shown}\": {what}");
    let service = inner
        .objects
        .get(&ObjKey {
            group: String::new(),
            resource: "services".into(),
            namespace: ns.into(),
            name: name.into(),
        })
        .ok_or_else(|| post(format!("service \"{name}\" not found")))?;
    let svc_port = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("port").and_then(Value::as_u64) == Some(port))
        .ok_or_else(|| post(format!("service \"{name}\" has no port {port}")))?;
    let selector = service
        .pointer("/spec/selector")
        .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()))
        .ok_or_else(|| post(format!("no endpoints available for service \"{name}\"")))?;
    let start = ObjKey {
        group: String::new(),
        resource: "pods".into(),
        namespace: ns.into(),
        name: String::new(),
    };
    let pod = inner
        .objects
        .range(start..)
        .take_while(|(k, _)| k.group.is_empty() && k.resource == "pods" && k.namespace == ns)
        .map(|(_, p)| p)
        .filter(|p| {
            crate::workloads::selector_matches(
                Some(&json!({"matchLabels": selector})),
                p.pointer("/metadata/labels"),
            )
        })
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .filter(|p| {
            p.pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .find(|p| p.pointer("/status/podIP").and_then(Value::as_str).is_some())
        .ok_or_else(|| post(format!("no endpoints available for service \"{name}\"")))?;
    let target = svc_port.get("targetPort").cloned().unwrap_or(json!(port));
    let target_port = match &target {
        Value::Number(n) => n.as_u64().unwrap_or(port),
        Value::String(named) => pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| {
                c.get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .find(|p| p.get("name").and_then(Value::as_str) == Some(named))
            .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
            .ok_or_else(|| post(format!("no endpoints available for service \"{name}\"")))?,
        _ => port,
    };
    let ip: std::net::IpAddr = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .parse()
        .map_err(|_| post("the pod IP is not an address".into()))?;
    Ok((SocketAddr::new(ip, target_port as u16), host, path, shown))
}

/// POSTs `review` to `hook`; its `response`, or why the call failed (the apiserver's wording).
async fn call(state: &State, hook: &Hook, review: &Value) -> Result<Value, String> {
    let (addr, host, path, shown) = endpoint(&state.store.lock(), hook)?;
    let post = |what: String| format!("failed to call webhook: Post \"{shown}\": {what}");
    let ca = hook
        .spec
        .pointer("/clientConfig/caBundle")
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|pem| String::from_utf8_lossy(&pem).into_owned());
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(pem) => {
            for cert in rustls_pemfile_certs(&pem) {
                let _ = roots.add(cert);
            }
        }
        None => {
            // No caBundle: the apiserver's system trust store; the stand-in trusts its own CA.
            for cert in rustls_pemfile_certs(&state.auth.ca_pem) {
                let _ = roots.add(cert);
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| post(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server_name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| post(format!("invalid server name {host}: {e}")))?;
    let body = serde_json::to_vec(review).expect("json");
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| post(format!("dial tcp {addr}: connect: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await
            .map_err(|e| post(format!("tls: failed to verify certificate: {e}")))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| post(e.to_string()))?;
        tokio::spawn(conn);
        let request = hyper::Request::post(format!("{path}?timeout={}s", hook.timeout().as_secs()))
            .header("host", host.as_str())
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| post(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| post(e.to_string()))?;
        let status = response.status();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map_err(|e| post(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "failed to call webhook: the server responded with the status code {}",
                status.as_u16()
            ));
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("received invalid webhook response: {e}"))?;
        v.get("response")
            .cloned()
            .filter(Value::is_object)
            .ok_or_else(|| "received invalid webhook response: response is missing".to_string())
    };
    match tokio::time::timeout(hook.timeout(), exchange).await {
        Ok(r) => r,
        Err(_) => Err(post("context deadline exceeded".into())),
    }
}

/// A `[]byte` as Go's JSON decoder takes it: a base64 string, or an array of numbers.
fn patch_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => base64::engine::general_purpose::STANDARD.decode(s).ok(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_u64().filter(|n| *n <= 255).map(|n| n as u8))
            .collect(),
        _ => None,
    }
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}
