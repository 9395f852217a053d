//! The ServiceAccount admission plugin for pods: the pod's ServiceAccount must exist (403
//! `error looking up service account NS/SA: serviceaccount "SA" not found`), its
//! `imagePullSecrets` are copied to a pod without any, and unless `automountServiceAccountToken`
//! is false (pod first, then ServiceAccount) every container mounts a projected
//! `kube-api-access-xxxxx` volume (token, `kube-root-ca.crt`'s `ca.crt`, the namespace) read-only
//! at `/var/run/secrets/kubernetes.io/serviceaccount`.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::store::{Inner, ObjKey};

/// Where kube clients look for the service-account token, CA and namespace.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Name prefix of the projected token volume.
pub const VOLUME_PREFIX: &str = "kube-api-access-";

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// The projected volume source kube-apiserver adds (`TokenVolumeSource`).
pub fn token_volume_source() -> Value {
    json!({
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": super::tokens::KUBELET_EXPIRATION_SECONDS, "path": "token"}},
            {"configMap": {"name": super::controllers::ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ],
    })
}

/// The ServiceAccount name a pod runs as.
pub fn pod_service_account(pod: &Value) -> String {
    pod.pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            pod.pointer("/spec/serviceAccount")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("default")
        .to_string()
}

/// The ServiceAccount object `ns/name`, if stored.
pub fn service_account<'a>(inner: &'a Inner, ns: &str, name: &str) -> Option<&'a Value> {
    inner.objects.get(&ObjKey {
        group: String::new(),
        resource: "serviceaccounts".into(),
        namespace: ns.into(),
        name: name.into(),
    })
}

/// Before a pod of the `default` ServiceAccount is created in a new namespace, waits (up to
/// about 2 s, like the admission plugin's retries) for the service-account controller to
/// create that account.
pub async fn wait_for_default_service_account(state: &crate::ops::State, ns: &str, pod: &Value) {
    if pod_service_account(pod) != "default" {
        return;
    }
    for _ in 0..20 {
        {
            let inner = state.store.lock();
            let ns_exists = inner.objects.contains_key(&ObjKey {
                group: String::new(),
                resource: "namespaces".into(),
                namespace: String::new(),
                name: ns.into(),
            });
            if !ns_exists || service_account(&inner, ns, "default").is_some() {
                return;
            }
        }
        state.gc_wake.notify_one();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Admits a pod being created in `ns`; `display_name` is its name (or generateName) for the
/// error message.
pub fn admit_pod(
    inner: &Inner,
    ns: &str,
    display_name: &str,
    pod: &mut Value,
) -> Result<(), ApiError> {
    let sa_name = pod_service_account(pod);
    let Some(sa) = service_account(inner, ns, &sa_name) else {
        return Err(ApiError::forbidden(
            "",
            "pods",
            display_name,
            format!(
                "pods {} is forbidden: error looking up service account {ns}/{sa_name}: serviceaccount {} not found",
                super::rbac::quote(display_name),
                super::rbac::quote(&sa_name)
            ),
        ));
    };
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    spec.insert("serviceAccountName".into(), json!(sa_name));
    spec.insert("serviceAccount".into(), json!(sa_name));
    let pull = sa
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty());
    if let Some(pull) = pull
        && spec
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty())
    {
        spec.insert("imagePullSecrets".into(), json!(pull));
    }
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .find(|n| n.starts_with(VOLUME_PREFIX))
                .map(str::to_string)
        });
    let volume_name = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_PREFIX}{}", random_suffix()));
    let mut needs_volume = false;
    for key in ["initContainers", "containers"] {
        let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs {
            let Some(cm) = c.as_object_mut() else {
                continue;
            };
            let mounts = cm.entry("volumeMounts").or_insert(json!([]));
            let Some(ms) = mounts.as_array_mut() else {
                continue;
            };
            if ms
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH))
            {
                continue;
            }
            ms.push(json!({"name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}));
            needs_volume = true;
        }
    }
    if existing.is_none() && needs_volume {
        let vols = spec.entry("volumes").or_insert(json!([]));
        if let Some(vs) = vols.as_array_mut() {
            vs.push(json!({"name": volume_name, "projected": token_volume_source()}));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn store_with_sa(sa: Value) -> Store {
        let store = Store::new(10);
        store.lock().put(
            ObjKey {
                group: String::new(),
                resource: "serviceaccounts".into(),
                namespace: "shop".into(),
                name: sa["metadata"]["name"].as_str().unwrap().into(),
            },
            sa,
        );
        store
    }

    #[test]
    fn mounts_the_token_volume_in_every_container() {
        let store = store_with_sa(
            json!({"metadata": {"name": "op"}, "imagePullSecrets": [{"name": "reg"}]}),
        );
        let mut pod = json!({"spec": {"serviceAccountName": "op", "initContainers": [{"name": "i"}], "containers": [
            {"name": "a"},
            {"name": "b", "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]},
        ]}});
        admit_pod(&store.lock(), "shop", "p", &mut pod).unwrap();
        let vols = pod["spec"]["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 1);
        let vname = vols[0]["name"].as_str().unwrap();
        assert!(vname.starts_with(VOLUME_PREFIX) && vname.len() == VOLUME_PREFIX.len() + 5);
        assert_eq!(vols[0]["projected"], token_volume_source());
        assert_eq!(
            pod["spec"]["initContainers"][0]["volumeMounts"][0]["name"],
            vname
        );
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"][0]["readOnly"],
            true
        );
        assert_eq!(
            pod["spec"]["containers"][1]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "an existing mount at the path is kept"
        );
        assert_eq!(pod["spec"]["imagePullSecrets"], json!([{"name": "reg"}]));
        assert_eq!(pod["spec"]["serviceAccount"], "op");
    }

    #[test]
    fn automount_false_and_missing_accounts() {
        let store = store_with_sa(
            json!({"metadata": {"name": "op"}, "automountServiceAccountToken": false}),
        );
        let mut pod = json!({"spec": {"serviceAccountName": "op", "containers": [{"name": "a"}]}});
        admit_pod(&store.lock(), "shop", "p", &mut pod).unwrap();
        assert!(pod["spec"].get("volumes").is_none());
        let mut pod = json!({"spec": {"serviceAccountName": "op", "automountServiceAccountToken": true, "containers": [{"name": "a"}]}});
        admit_pod(&store.lock(), "shop", "p", &mut pod).unwrap();
        assert_eq!(
            pod["spec"]["volumes"].as_array().unwrap().len(),
            1,
            "the pod's field wins"
        );
        let mut pod =
            json!({"spec": {"serviceAccountName": "ghost", "containers": [{"name": "a"}]}});
        let e = admit_pod(&store.lock(), "shop", "x", &mut pod).unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods \"x\" is forbidden: error looking up service account shop/ghost: serviceaccount \"ghost\" not found"
        );
    }
}
