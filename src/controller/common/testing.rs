//! Test fixtures several controllers' tests share.

use chrono::{DateTime, Utc};

use crate::api::BackupRun;

/// An RFC 3339 time.
pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// A finished BackupRun of the policy `nightly` in `shop`, completed at `done`.
pub fn backup(name: &str, done: &str, phase: &str) -> BackupRun {
    serde_yaml::from_str(&format!(
        r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupRun
metadata: {{name: {name}, namespace: shop, creationTimestamp: "{done}"}}
spec: {{policyRef: {{name: nightly}}, trigger: Scheduled}}
status: {{phase: {phase}, completionTime: "{done}", artifact: {{storage: main, key: k, engine: postgres}}}}
"#
    ))
    .unwrap()
}

/// The BackupPolicy `shop/nightly` (generation 3), nightly at 02:00, with `extra` spec lines.
pub fn policy(extra: &str) -> crate::api::BackupPolicy {
    serde_yaml::from_str(&format!(
        r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {{name: nightly, namespace: shop, creationTimestamp: "2026-11-01T00:00:00Z", generation: 3}}
spec:
  source: {{postgres: {{host: db, port: 5432, database: shop, user: u}}}}
  storageRef: {{name: main}}
  schedule: "0 2 * * *"
  {extra}
"#
    ))
    .unwrap()
}

/// A namespaced object the tests create, reconcile and read back.
pub trait Object:
    kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
{
}

impl<K> Object for K where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
{
}

/// What a reconcile test hands to [`Sim::reconcile`].
pub enum Given<'a, K> {
    /// An object to create first.
    Yaml(&'a str),
    /// An object as the API stored it.
    Stored(K),
}

/// The API stand-in running in this process (CRDs from `crds/`), and a [`Context`] on it: what
/// reconcile tests call `reconcile` with.
pub struct Sim {
    _server: kube_sim::RunningServer,
    pub ctx: std::sync::Arc<super::context::Context>,
}

impl Sim {
    /// Starts the stand-in with the namespace `shop`; the run cache is marked synced (it is
    /// empty, as the stand-in is).
    pub async fn start() -> Sim {
        Sim::start_with(super::context::Settings::default()).await
    }

    /// [`Sim::start`] with the operator's `settings`.
    pub async fn start_with(settings: super::context::Settings) -> Sim {
        let server = kube_sim::Server::start(kube_sim::ServerOptions {
            crds_dir: Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds")),
            ..Default::default()
        })
        .await
        .expect("starting the API stand-in");
        let client = server.client().await.expect("client");
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(client.clone());
        namespaces
            .create(
                &Default::default(),
                &serde_json::from_value(serde_json::json!({"metadata": {"name": "shop"}}))
                    .expect("namespace"),
            )
            .await
            .expect("creating namespace shop");
        let (runs, _writer) = super::run_cache::new();
        let ctx = super::context::Context::new(
            client,
            crate::telemetry::metrics::Metrics::new(),
            // The tests' services live on loopback, which is all the platform team allows here
            // (unless a test sets its own egress policy).
            super::context::Settings {
                egress: if settings.egress == crate::egress::EgressPolicy::default() {
                    crate::egress::EgressPolicy::from_list("127.0.0.0/8").expect("a valid CIDR")
                } else {
                    settings.egress
                },
                ..settings
            },
            runs,
        );
        ctx.mark_runs_synced();
        Sim {
            _server: server,
            ctx: std::sync::Arc::new(ctx),
        }
    }

    /// Creates `yaml` (one object of a namespaced kind) and returns it as the API stored it.
    pub async fn create<K: Object>(&self, yaml: &str) -> K {
        let obj: K = serde_yaml::from_str(yaml).expect("test YAML");
        let ns = obj.meta().namespace.clone().expect("namespace");
        let api: kube::Api<K> = kube::Api::namespaced(self.ctx.client.clone(), &ns);
        api.create(&Default::default(), &obj).await.expect("create")
    }

    /// Creates `object` (JSON, any fields, so that fields the Rust types do not have reach the
    /// API too) as a `K`; the API's answer, unwrapped from the typed client.
    pub async fn create_json<K: Object>(
        &self,
        object: serde_json::Value,
    ) -> Result<serde_json::Value, kube::Error> {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .expect("namespace")
            .to_owned();
        let resource = kube::api::ApiResource::erase::<K>(&());
        let api: kube::Api<kube::api::DynamicObject> =
            kube::Api::namespaced_with(self.ctx.client.clone(), &ns, &resource);
        let obj: kube::api::DynamicObject = serde_json::from_value(object).expect("object JSON");
        let created = api.create(&Default::default(), &obj).await?;
        Ok(serde_json::to_value(created).expect("JSON"))
    }

    /// Reads `ns/name` back.
    pub async fn get<K: Object>(&self, ns: &str, name: &str) -> K {
        let api: kube::Api<K> = kube::Api::namespaced(self.ctx.client.clone(), ns);
        api.get(name).await.expect("get")
    }

    /// Runs `reconcile` through the reconcile wrapper (as the operator does) on the object
    /// `given` (created first when it is YAML) and returns it as the API holds it afterwards.
    pub async fn reconcile<K, F, Fut>(
        &self,
        kind: super::reconcile::ControllerKind,
        given: Given<'_, K>,
        reconcile: F,
    ) -> K
    where
        K: Object + super::reconcile::RunTraced,
        F: FnOnce(std::sync::Arc<K>, std::sync::Arc<super::context::Context>) -> Fut,
        Fut: std::future::Future<Output = super::error::Result<kube::runtime::controller::Action>>,
    {
        let obj = match given {
            Given::Yaml(yaml) => self.create(yaml).await,
            Given::Stored(obj) => obj,
        };
        let ns = obj.meta().namespace.clone().expect("namespace");
        let name = obj.meta().name.clone().expect("name");
        super::reconcile::instrumented(kind, std::sync::Arc::new(obj), self.ctx.clone(), reconcile)
            .await
            .expect("reconcile");
        self.get(&ns, &name).await
    }

    /// The reasons of the Events about the object `name`.
    pub async fn event_reasons(&self, ns: &str, name: &str) -> Vec<String> {
        let api: kube::Api<k8s_openapi::api::events::v1::Event> =
            kube::Api::namespaced(self.ctx.client.clone(), ns);
        let list = api.list(&Default::default()).await.expect("events");
        list.items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| e.reason)
            .collect()
    }
}
