//! Objects read off a list or a watch without their `managedFields` field sets.
//!
//! Every object an API server returns carries `metadata.managedFields`: one entry per field
//! manager, each with `fieldsV1`, a tree naming every field that manager set. k8s-openapi
//! deserializes that tree as a `serde_json::Value` (a map per level, a `String` per key), which
//! made it most of the allocations of an initial list: at 100,000 BackupRuns, a restart spent
//! more time in the allocator than in anything else. The operator never reads a field set, so
//! [`Lean`] deserializes a kind with every `metadata.managedFields[*].fieldsV1` skipped as it is
//! parsed (serde's `IgnoredAny`: nothing allocated). The rest of each entry (manager,
//! operation, time, subresource) is kept: the audit trail reads the time of an object's last
//! write from it.
//!
//! Only the reading side changes: the objects are the same typed `K`, and a watch over
//! `Lean<K>` asks the API server for exactly what a watch over `K` does.

use std::borrow::Cow;
use std::fmt;

use kube::Resource;
use kube::core::ObjectMeta;
use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};

/// `K`, deserialized without the field sets of its `managedFields` (see the module's docs).
#[derive(Clone, Debug)]
pub struct Lean<K>(pub K);

impl<K> Lean<K> {
    /// The object.
    pub fn into_inner(self) -> K {
        self.0
    }
}

/// The type-level half of [`Resource`] for a wrapper of a kind `K` in scope: kind, group,
/// version, apiVersion, plural, scope and dynamic type are `K`'s, so a watch over the wrapper
/// asks the API server for exactly what a watch over `K` does. (Used by [`Lean`] and
/// `Compact` (operator::compact); each writes its own `meta`/`meta_mut`.)
macro_rules! resource_of_wrapped_kind {
    () => {
        type DynamicType = K::DynamicType;
        type Scope = K::Scope;

        fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
            K::kind(dt)
        }

        fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
            K::group(dt)
        }

        fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
            K::version(dt)
        }

        fn api_version(dt: &Self::DynamicType) -> Cow<'_, str> {
            K::api_version(dt)
        }

        fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
            K::plural(dt)
        }
    };
}
pub(crate) use resource_of_wrapped_kind;

impl<K: Resource> Resource for Lean<K> {
    resource_of_wrapped_kind!();

    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

impl<'de, K: de::Deserialize<'de>> de::Deserialize<'de> for Lean<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        K::deserialize(Filtered {
            inner: deserializer,
            at: Level::Object,
        })
        .map(Lean)
    }
}

/// Where in an object a value sits, as far as the filter cares.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Level {
    /// The object: its `metadata` is filtered.
    Object,
    /// `metadata`: its `managedFields` is filtered.
    Metadata,
    /// `metadata.managedFields`: each entry is filtered.
    ManagedFields,
    /// One entry of `managedFields`: its `fieldsV1` is skipped.
    ManagedFieldsEntry,
}

impl Level {
    /// The level of the value under `key` of a map at this level, if it is filtered at all.
    fn of_key(self, key: &str) -> Option<Level> {
        match (self, key) {
            (Level::Object, "metadata") => Some(Level::Metadata),
            (Level::Metadata, "managedFields") => Some(Level::ManagedFields),
            _ => None,
        }
    }

    /// Whether the value under `key` of a map at this level is skipped.
    fn skips(self, key: &str) -> bool {
        self == Level::ManagedFieldsEntry && key == "fieldsV1"
    }
}

/// A deserializer whose maps and sequences at `at` are filtered; everything else passes
/// through to `inner` as it is.
struct Filtered<D> {
    inner: D,
    at: Level,
}

impl<D> Filtered<D> {
    /// `visitor`, wrapped to filter what it is given at this level.
    fn wrap<V>(&self, visitor: V) -> FilteredVisitor<V> {
        FilteredVisitor {
            inner: visitor,
            at: self.at,
        }
    }
}

/// The visitor that wraps the maps and sequences `inner` is given.
struct FilteredVisitor<V> {
    inner: V,
    at: Level,
}

macro_rules! forward_deserialize {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                let visitor = self.wrap(visitor);
                self.inner.$method(visitor)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Filtered<D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_struct(name, fields, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        // Enums are not on the filtered path: the object's own deserializer decides.
        self.inner.deserialize_enum(name, variants, visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for FilteredVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<V::Value, D2::Error> {
        self.inner.visit_some(Filtered {
            inner: d,
            at: self.at,
        })
    }

    fn visit_newtype_struct<D2: Deserializer<'de>>(self, d: D2) -> Result<V::Value, D2::Error> {
        self.inner.visit_newtype_struct(Filtered {
            inner: d,
            at: self.at,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        if self.at == Level::ManagedFields {
            self.inner.visit_seq(FilteredSeq { inner: seq })
        } else {
            self.inner.visit_seq(seq)
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        match self.at {
            Level::ManagedFields => self.inner.visit_map(map),
            at => self.inner.visit_map(FilteredMap {
                inner: map,
                at,
                value_at: None,
            }),
        }
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(data)
    }
}

/// The entries of `managedFields`, each filtered.
struct FilteredSeq<A> {
    inner: A,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for FilteredSeq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.inner.next_element_seed(FilteredSeed {
            inner: seed,
            at: Level::ManagedFieldsEntry,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// A map at `at`: keys it skips are read past, values on the filtered path are filtered.
struct FilteredMap<A> {
    inner: A,
    at: Level,
    /// The level of the value after the key just returned (`None`: not filtered).
    value_at: Option<Level>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for FilteredMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(key) = self.inner.next_key::<Key<'de>>()? else {
                return Ok(None);
            };
            if self.at.skips(&key.0) {
                self.inner.next_value::<IgnoredAny>()?;
                continue;
            }
            self.value_at = self.at.of_key(&key.0);
            let key: de::value::CowStrDeserializer<'de, A::Error> = key.0.into_deserializer();
            return seed.deserialize(key).map(Some);
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.value_at.take() {
            Some(at) => self.inner.next_value_seed(FilteredSeed { inner: seed, at }),
            None => self.inner.next_value_seed(seed),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// A seed whose value is deserialized filtered at `at`.
struct FilteredSeed<S> {
    inner: S,
    at: Level,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for FilteredSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Filtered {
            inner: d,
            at: self.at,
        })
    }
}

/// A map key, borrowed from the input when it can be.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map key")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackupPolicy, BackupRun};
    use k8s_openapi::api::batch::v1::Job;
    use kube::core::{ObjectList, WatchEvent};
    use serde_json::{Value, json};

    /// An object as an API server returns it: two field managers, each with its field set.
    fn with_managed_fields(mut object: Value) -> Value {
        object["metadata"]["managedFields"] = json!([
            {
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "apiVersion": "dataguardian.io/v1alpha1",
                "time": "2026-12-01T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                             "f:spec": {"f:policyRef": {"f:name": {}}}}
            },
            {
                "manager": "dataguardian-backuprun",
                "operation": "Apply",
                "apiVersion": "dataguardian.io/v1alpha1",
                "time": "2026-12-01T10:05:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:status": {"f:phase": {}, "f:conditions": {}}},
                "subresource": "status"
            }
        ]);
        object
    }

    fn run_json() -> Value {
        with_managed_fields(json!({
            "apiVersion": "dataguardian.io/v1alpha1",
            "kind": "BackupRun",
            "metadata": {
                "name": "r1",
                "namespace": "team-a",
                "uid": "u1",
                "resourceVersion": "42",
                "labels": {"app": "x", "dataguardian.io/policy": "p1"},
                "annotations": {"note": "metadata.managedFields is a key, not a path"},
                "creationTimestamp": "2026-12-01T10:00:00Z"
            },
            "spec": {"policyRef": {"name": "p1"}, "trigger": "Manual"},
            "status": {"phase": "Succeeded", "message": "fieldsV1 in a message stays"}
        }))
    }

    /// What the typed object is without field sets: the plain deserialization, `fieldsV1`
    /// cleared by hand.
    fn expected<K: de::DeserializeOwned + Resource>(json: &Value) -> K {
        let mut o: K = serde_json::from_value(json.clone()).unwrap();
        for entry in o.meta_mut().managed_fields.iter_mut().flatten() {
            entry.fields_v1 = None;
        }
        o
    }

    #[test]
    fn the_field_sets_are_skipped_and_everything_else_is_read() {
        let json = run_json();
        let text = json.to_string();
        let lean: Lean<BackupRun> = serde_json::from_str(&text).unwrap();
        let plain: BackupRun = expected(&json);
        assert_eq!(
            serde_json::to_value(&lean.0).unwrap(),
            serde_json::to_value(&plain).unwrap()
        );
        let entries = lean.0.metadata.managed_fields.as_ref().unwrap();
        assert_eq!(
            entries.len(),
            2,
            "the entries stay, without their field sets"
        );
        assert!(entries.iter().all(|e| e.fields_v1.is_none()));
        assert_eq!(entries[1].subresource.as_deref(), Some("status"));
        assert_eq!(
            entries[1].time.as_ref().map(|t| t.0.to_string()),
            Some("2026-12-01T10:05:00Z".to_string())
        );
        assert_eq!(
            entries[0].manager.as_deref(),
            Some("kubectl-client-side-apply")
        );
    }

    #[test]
    fn a_key_named_like_a_filtered_one_elsewhere_is_read() {
        // `fieldsV1` and `managedFields` are only special on their own path.
        let mut json = run_json();
        json["metadata"]["labels"]["fieldsV1"] = json!("kept");
        json["metadata"]["annotations"]["managedFields"] = json!("kept");
        let lean: Lean<BackupRun> = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(lean.0.metadata.labels.as_ref().unwrap()["fieldsV1"], "kept");
        assert_eq!(
            lean.0.metadata.annotations.as_ref().unwrap()["managedFields"],
            "kept"
        );
    }

    #[test]
    fn lists_and_watch_events_of_every_kind_read_lean() {
        let job = with_managed_fields(json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j", "namespace": "team-a"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}
        }));
        let list = json!({
            "apiVersion": "batch/v1", "kind": "JobList",
            "metadata": {"resourceVersion": "7", "continue": "abc"},
            "items": [job.clone(), job.clone()]
        });
        let lean: ObjectList<Lean<Job>> = serde_json::from_str(&list.to_string()).unwrap();
        assert_eq!(lean.items.len(), 2);
        assert_eq!(lean.metadata.continue_.as_deref(), Some("abc"));
        let plain: Job = expected(&job);
        for item in &lean.items {
            assert_eq!(
                serde_json::to_value(&item.0).unwrap(),
                serde_json::to_value(&plain).unwrap()
            );
        }
        // A watch event, with "object" before and after "type" (serde buffers the first).
        for event in [
            json!({"type": "MODIFIED", "object": job.clone()}),
            json!({"object": job.clone(), "type": "MODIFIED"}),
        ] {
            let ev: WatchEvent<Lean<Job>> = serde_json::from_str(&event.to_string()).unwrap();
            let WatchEvent::Modified(o) = ev else {
                panic!("a MODIFIED event");
            };
            assert!(
                o.0.metadata
                    .managed_fields
                    .iter()
                    .flatten()
                    .all(|e| e.fields_v1.is_none())
            );
            assert_eq!(o.0.metadata.name.as_deref(), Some("j"));
        }
    }

    #[test]
    fn a_bad_object_is_refused_as_before() {
        let mut json = run_json();
        json["spec"]["trigger"] = json!(17);
        let lean = serde_json::from_value::<Lean<BackupRun>>(json.clone()).unwrap_err();
        let plain = serde_json::from_value::<BackupRun>(json).unwrap_err();
        assert_eq!(lean.to_string(), plain.to_string());
    }

    #[test]
    fn the_resource_is_the_kinds_own() {
        assert_eq!(Lean::<BackupPolicy>::kind(&()), BackupPolicy::kind(&()));
        assert_eq!(
            Lean::<BackupPolicy>::url_path(&(), None),
            BackupPolicy::url_path(&(), None)
        );
        assert_eq!(
            Lean::<Job>::url_path(&(), Some("x")),
            Job::url_path(&(), Some("x"))
        );
    }
}
