//! Structural type information used by strategic merge patch and server-side apply: which lists
//! are associative (merged by key), which are sets, and which are atomic.

use serde_json::Value;

/// How a list merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole.
    Atomic,
    /// A set of scalars, merged by value.
    Set,
    /// Items are objects merged by these key fields.
    Map(Vec<String>),
}

/// The merge keys the built-in kinds declare (`patchMergeKey`/`listMapKeys`), by field name.
pub fn builtin_list_type(field: &str) -> ListType {
    let keys = |k: &[&str]| ListType::Map(k.iter().map(|s| s.to_string()).collect());
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "secrets"
        | "resourceClaims"
        | "webhooks" => keys(&["name"]),
        "resizePolicy" => keys(&["resourceName"]),
        "volumeMounts" => keys(&["mountPath"]),
        // Container ports are keyed by containerPort+protocol, Service ports by port+protocol:
        // an item has only one of the two numbers, so the union keys both kinds.
        "ports" => keys(&["containerPort", "port", "protocol"]),
        "topologySpreadConstraints" => keys(&["topologyKey", "whenUnsatisfiable"]),
        "hostAliases" => keys(&["ip"]),
        "volumeDevices" => keys(&["devicePath"]),
        "conditions" => keys(&["type"]),
        "ownerReferences" => keys(&["uid"]),
        "finalizers" => ListType::Set,
        _ => ListType::Atomic,
    }
}

/// A position in an object's type: the CRD schema node (if any) and whether we are under
/// `metadata` (whose shape is fixed by ObjectMeta).
#[derive(Debug, Clone, Copy)]
pub struct TypeNode<'a> {
    /// The schema node for custom resources; `None` for built-ins and metadata.
    pub schema: Option<&'a Value>,
    /// Whether this node is `metadata` or below.
    pub in_metadata: bool,
}

impl<'a> TypeNode<'a> {
    /// The root of an object of a resource with the given schema.
    pub fn root(schema: Option<&'a Value>) -> Self {
        TypeNode {
            schema,
            in_metadata: false,
        }
    }

    /// The node of field `key` of this object node.
    pub fn field(&self, key: &str, at_root: bool) -> TypeNode<'a> {
        if at_root && key == "metadata" {
            return TypeNode {
                schema: None,
                in_metadata: true,
            };
        }
        let schema = self.schema.and_then(|s| {
            s.get("properties")
                .and_then(|p| p.get(key))
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
        });
        TypeNode {
            schema,
            in_metadata: self.in_metadata,
        }
    }

    /// The node of the items of this list node.
    pub fn items(&self) -> TypeNode<'a> {
        TypeNode {
            schema: self.schema.and_then(|s| s.get("items")),
            in_metadata: self.in_metadata,
        }
    }

    /// How the list at field `field` (this node) merges.
    pub fn list_type(&self, field: &str, custom: bool) -> ListType {
        if custom && !self.in_metadata {
            let Some(s) = self.schema else {
                return ListType::Atomic;
            };
            match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => ListType::Set,
                Some("map") => ListType::Map(
                    s.get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|k| k.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
                _ => ListType::Atomic,
            }
        } else {
            builtin_list_type(field)
        }
    }

    /// Whether this object node is atomic (replaced as a whole).
    pub fn atomic_map(&self) -> bool {
        self.schema
            .and_then(|s| s.get("x-kubernetes-map-type"))
            .and_then(Value::as_str)
            == Some("atomic")
    }
}

/// The key of a map-list item, rendered like managedFields' `k:{...}` (sorted, compact JSON).
/// A key field with a schema default counts with that default when absent, as in
/// structured-merge-diff: a port's `protocol` is `TCP`, so an applied port without it is the
/// same item as the live (defaulted) one.
pub fn item_key(item: &Value, keys: &[String]) -> String {
    let mut m = serde_json::Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        } else if k == "protocol"
            && item.is_object()
            && keys.iter().any(|x| x == "containerPort" || x == "port")
        {
            m.insert(k.clone(), Value::String("TCP".into()));
        }
    }
    Value::Object(m).to_string()
}
