//! Cached objects kept as their JSON, for a kind cached by the thousand whose objects a
//! controller reads one at a time (BackupPolicies).
//!
//! A typed BackupPolicy costs about 2.5 KB of heap in a cache, in some thirty allocations: the
//! struct with every optional field inline (about 1 KB), its status, each condition's strings,
//! each spec string. At 10,000 policies that was 25 MB, a quarter of the operator's heap at
//! 10,000 policies and 100,000 runs (docs/benchmarks.md). [`Compact`] keeps the object as one
//! allocation of JSON (what a GET returns, without `managedFields` and kubectl's
//! last-applied copy) compressed with zstd (a reconciled policy's ≈ 1.8 KB of JSON, mostly
//! field names and its conditions' messages, takes a third of that), plus the few metadata fields a controller's queue and its mappers read
//! without the rest. A reconcile reads the whole typed object back ([`Compact::unpack`]): the
//! same object a typed cache would have handed it.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use kube::Resource;
use kube::core::ObjectMeta;
use serde::de::{self, DeserializeOwned, Deserializer};

use super::lean::resource_of_wrapped_kind;
use super::run_watch::strip_metadata;

/// zstd level of the packed JSON: objects of a few KB compress about as well at 1 as at 3, at
/// a fraction of the time.
const LEVEL: i32 = 1;

/// Largest JSON a packed object may unpack to (the API server's own limit on an object is
/// 1.5 MiB; etcd's default request limit).
const MAX_JSON: usize = 3 << 20;

thread_local! {
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn compress(json: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        let compressor = match &mut *slot {
            Some(c) => c,
            None => slot.insert(zstd::bulk::Compressor::new(LEVEL)?),
        };
        compressor.compress(json)
    })
}

/// `K` as its compressed JSON (see the module's docs). Its [`Resource::meta`] holds only the
/// name, namespace, uid, resourceVersion, generation, labels and deletion time.
pub struct Compact<K> {
    meta: ObjectMeta,
    /// zstd frame of the JSON.
    json: Arc<[u8]>,
    /// Bytes of JSON.
    len: u32,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Compact<K> {
    fn clone(&self) -> Self {
        Self {
            meta: self.meta.clone(),
            json: Arc::clone(&self.json),
            len: self.len,
            kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for Compact<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compact")
            .field("namespace", &self.meta.namespace)
            .field("name", &self.meta.name)
            .field("resource_version", &self.meta.resource_version)
            .field("json_bytes", &self.len)
            .field("packed_bytes", &self.json.len())
            .finish()
    }
}

impl<K> Compact<K>
where
    K: Resource + serde::Serialize + DeserializeOwned,
{
    /// `obj` without what the operator never reads ([`strip_metadata`]), as compressed JSON.
    pub fn pack(mut obj: K) -> Result<Self, serde_json::Error> {
        strip_metadata(&mut obj);
        let json = serde_json::to_vec(&obj)?;
        if json.len() > MAX_JSON {
            return Err(serde::ser::Error::custom(format!(
                "object of {} bytes of JSON is larger than {MAX_JSON}",
                json.len()
            )));
        }
        let len = json.len() as u32;
        let json = compress(&json).map_err(serde_json::Error::io)?;
        let m = obj.meta_mut();
        let meta = ObjectMeta {
            name: m.name.take(),
            namespace: m.namespace.take(),
            uid: m.uid.take(),
            resource_version: m.resource_version.take(),
            generation: m.generation,
            labels: m.labels.take().filter(|l| !l.is_empty()),
            deletion_timestamp: m.deletion_timestamp.take(),
            ..ObjectMeta::default()
        };
        Ok(Self {
            meta,
            json: json.into(),
            len,
            kind: PhantomData,
        })
    }

    /// The whole object, as it was packed.
    pub fn unpack(&self) -> Result<K, serde_json::Error> {
        let json =
            zstd::bulk::decompress(&self.json, self.len as usize).map_err(serde_json::Error::io)?;
        serde_json::from_slice(&json)
    }

    /// Bytes held (compressed).
    pub fn packed_len(&self) -> usize {
        self.json.len()
    }
}

impl<K: Resource> Resource for Compact<K> {
    resource_of_wrapped_kind!();

    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

/// Read as `K`, then packed: a watch over `Compact<K>` asks for exactly what a watch over `K`
/// does, and an object `K` refuses is refused with the same error.
impl<'de, K> de::Deserialize<'de> for Compact<K>
where
    K: Resource + serde::Serialize + DeserializeOwned,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let obj = K::deserialize(deserializer)?;
        Compact::pack(obj).map_err(de::Error::custom)
    }
}

/// The reference of `r`'s object in a cache of [`Compact`] objects.
pub fn compact_ref<K: Resource<DynamicType = ()>>(
    r: kube::runtime::reflector::ObjectRef<K>,
) -> kube::runtime::reflector::ObjectRef<Compact<K>> {
    let c = kube::runtime::reflector::ObjectRef::new(&r.name);
    match r.namespace {
        Some(ns) => c.within(&ns),
        None => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BackupPolicy;
    use crate::operator::lean::Lean;
    use crate::operator::run_watch::LAST_APPLIED;

    fn policy_json() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "dataguardian.io/v1alpha1", "kind": "BackupPolicy",
            "metadata": {
                "name": "db", "namespace": "team-a", "uid": "u-1", "resourceVersion": "42",
                "generation": 3, "creationTimestamp": "2026-12-01T00:00:00Z",
                "labels": {"app": "db"},
                "annotations": {"note": "kept", LAST_APPLIED: "{\"big\":\"copy\"}"},
                "finalizers": ["dataguardian.io/cleanup"],
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {
                "source": {"postgres": {"host": "db.team-a.svc", "port": 5432, "database": "app",
                    "user": "backup", "passwordSecretRef": {"name": "db-creds", "key": "password"}}},
                "storageRef": {"name": "main"},
                "secondaryStorageRefs": [{"name": "offsite"}],
                "schedule": "0 3 * * *"
            },
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "Scheduled",
                    "message": "next run at 03:00", "lastTransitionTime": "2026-12-01T00:00:01Z",
                    "observedGeneration": 3}],
                "observedGeneration": 3
            }
        })
    }

    #[test]
    fn unpacks_to_the_object_a_typed_cache_holds() {
        let mut typed: BackupPolicy = serde_json::from_value(policy_json()).unwrap();
        let compact: Compact<BackupPolicy> = serde_json::from_value(policy_json()).unwrap();
        strip_metadata(&mut typed);
        assert_eq!(
            serde_json::to_value(compact.unpack().unwrap()).unwrap(),
            serde_json::to_value(&typed).unwrap()
        );
        let back = compact.unpack().unwrap();
        assert!(back.metadata.managed_fields.is_none());
        let annotations = back.metadata.annotations.unwrap();
        assert_eq!(annotations.get("note").map(String::as_str), Some("kept"));
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert_eq!(
            back.metadata.finalizers,
            Some(vec!["dataguardian.io/cleanup".to_string()])
        );
        assert_eq!(back.spec.secondary_storage_refs[0].name, "offsite");
    }

    #[test]
    fn keeps_what_queues_and_mappers_read_beside_the_json() {
        let mut json = policy_json();
        json["metadata"]["deletionTimestamp"] = "2026-12-02T00:00:00Z".into();
        let compact: Compact<BackupPolicy> = serde_json::from_value(json).unwrap();
        let m = compact.meta();
        assert_eq!(m.name.as_deref(), Some("db"));
        assert_eq!(m.namespace.as_deref(), Some("team-a"));
        assert_eq!(m.uid.as_deref(), Some("u-1"));
        assert_eq!(m.resource_version.as_deref(), Some("42"));
        assert_eq!(m.generation, Some(3));
        assert_eq!(m.labels.as_ref().unwrap()["app"], "db");
        assert!(m.deletion_timestamp.is_some());
        // The rest lives in the JSON only.
        assert!(m.annotations.is_none() && m.finalizers.is_none() && m.managed_fields.is_none());
        let r = compact_ref(
            kube::runtime::reflector::ObjectRef::<BackupPolicy>::from_obj(
                &compact.unpack().unwrap(),
            ),
        );
        // (References compare by kind, namespace and name.)
        assert_eq!(r, kube::runtime::reflector::ObjectRef::from_obj(&compact));
    }

    #[test]
    fn is_read_through_the_lean_reader_like_any_kind() {
        let compact: Lean<Compact<BackupPolicy>> = serde_json::from_value(policy_json()).unwrap();
        let back = compact.into_inner().unpack().unwrap();
        assert_eq!(back.metadata.name.as_deref(), Some("db"));
        assert_eq!(back.spec.schedule, "0 3 * * *");
    }

    #[test]
    fn refuses_what_the_typed_kind_refuses_with_its_error() {
        let mut bad = policy_json();
        bad["spec"]["storageRef"] = serde_json::json!(7);
        let typed = serde_json::from_value::<BackupPolicy>(bad.clone()).unwrap_err();
        let compact = serde_json::from_value::<Compact<BackupPolicy>>(bad).unwrap_err();
        assert_eq!(typed.to_string(), compact.to_string());
    }

    #[test]
    fn a_reconciled_policy_is_kept_in_a_fraction_of_its_json() {
        let mut json = policy_json();
        let condition = |t: &str| {
            serde_json::json!({"type": t, "status": "True", "reason": "Scheduled",
                "message": format!("{t}: storage main is reachable; next run at 2026-12-09T03:00:00Z (täglich)"),
                "lastTransitionTime": "2026-12-01T00:00:01Z", "observedGeneration": 3})
        };
        json["status"]["conditions"] = serde_json::json!([
            condition("Ready"),
            condition("StorageReady"),
            condition("Scheduled"),
            condition("Retained")
        ]);
        let compact: Compact<BackupPolicy> = serde_json::from_value(json.clone()).unwrap();
        let whole = serde_json::to_vec(&compact.unpack().unwrap()).unwrap();
        assert!(
            compact.packed_len() * 2 < whole.len(),
            "{} bytes kept for {} bytes of JSON",
            compact.packed_len(),
            whole.len()
        );
        let back = serde_json::to_value(compact.unpack().unwrap()).unwrap();
        assert_eq!(back["status"], json["status"]);
    }

    #[test]
    fn an_object_beyond_what_an_api_server_stores_is_refused() {
        let mut json = policy_json();
        json["metadata"]["annotations"]["huge"] = "x".repeat(MAX_JSON).into();
        let err = serde_json::from_value::<Compact<BackupPolicy>>(json).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }
}
