//! What the kubelet gives pods to reach the API server (pure): the `kubernetes` Service's
//! environment variables (the stand-in for the Service is the API server on the host network,
//! `127.0.0.1:PORT`), the tokens the pod's projected volumes ask for, and the kubeconfig the
//! process runtime hands host processes (which cannot see
//! `/var/run/secrets/kubernetes.io/serviceaccount`).

use std::path::Path;

use k8s_openapi::api::core::v1::Volume;

/// Where kube clients look for the service-account files.
pub const TOKEN_MOUNT_PATH: &str = crate::auth::admission::TOKEN_MOUNT_PATH;

/// The variables the kubelet sets for the `kubernetes` Service in `default`
/// (`KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`, `KUBERNETES_SERVICE_PORT_HTTPS`,
/// `KUBERNETES_PORT`, `KUBERNETES_PORT_<port>_TCP[_PROTO|_PORT|_ADDR]`).
pub fn service_env(host: &str, port: u16) -> Vec<(String, String)> {
    let url = format!("tcp://{host}:{port}");
    let p = format!("KUBERNETES_PORT_{port}_TCP");
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), host.to_string()),
        ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
        ("KUBERNETES_PORT".into(), url.clone()),
        (p.clone(), url),
        (format!("{p}_PROTO"), "tcp".into()),
        (format!("{p}_PORT"), port.to_string()),
        (format!("{p}_ADDR"), host.to_string()),
    ]
}

/// A `serviceAccountToken` projection: its audience (`""` = the API server's) and lifetime.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenNeed {
    /// Audience (`""` = the API server's).
    pub audience: String,
    /// `expirationSeconds` (default 3600).
    pub expiration_seconds: i64,
}

/// The tokens a pod's projected volumes need, without duplicates.
pub fn token_needs(volumes: &[Volume]) -> Vec<TokenNeed> {
    let mut out: Vec<TokenNeed> = Vec::new();
    for v in volumes {
        for s in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(t) = &s.service_account_token {
                let need = TokenNeed {
                    audience: t.audience.clone().unwrap_or_default(),
                    expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                };
                if !out.contains(&need) {
                    out.push(need);
                }
            }
        }
    }
    out.sort();
    out
}

/// A kubeconfig reaching `server` as the pod's ServiceAccount through the files of its token
/// volume on the host (`ca.crt`, `token`), in `namespace`.
pub fn incluster_kubeconfig(server: &str, volume_dir: &Path, namespace: &str) -> String {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "in-cluster", "cluster": {
            "server": server,
            "certificate-authority": volume_dir.join("ca.crt").display().to_string(),
        }}],
        "users": [{"name": "service-account", "user": {
            "tokenFile": volume_dir.join("token").display().to_string(),
        }}],
        "contexts": [{"name": "in-cluster", "context": {
            "cluster": "in-cluster", "user": "service-account", "namespace": namespace,
        }}],
        "current-context": "in-cluster",
    });
    serde_yaml::to_string(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubernetes_service_variables() {
        let env = service_env("127.0.0.1", 6443);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("127.0.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("6443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://127.0.0.1:6443"));
        assert_eq!(get("KUBERNETES_PORT_6443_TCP_ADDR"), Some("127.0.0.1"));
        assert_eq!(env.len(), 8);
    }

    #[test]
    fn token_needs_from_projected_volumes() {
        let vols: Vec<Volume> = serde_json::from_value(serde_json::json!([
            {"name": "a", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}},
            {"name": "b", "projected": {"sources": [{"serviceAccountToken": {"path": "t", "audience": "vault"}}, {"serviceAccountToken": {"path": "u", "expirationSeconds": 3607}}]}},
            {"name": "c", "emptyDir": {}},
        ]))
        .unwrap();
        assert_eq!(
            token_needs(&vols),
            [
                TokenNeed {
                    audience: String::new(),
                    expiration_seconds: 3607
                },
                TokenNeed {
                    audience: "vault".into(),
                    expiration_seconds: 3600
                },
            ]
        );
    }
}
