//! Who asked for a run, as the admission webhook recorded it ([`crate::admission`]): the
//! annotation `dataguardian.io/requested-by`, set from the API server's user info when the
//! object was created and immutable after. Without the webhook (disabled, or objects created
//! before it was installed) only the field manager of the create is known — a label the client
//! chose, shown as such and never as the requester.

use kube::api::ObjectMeta;

use crate::admission::REQUESTED_BY;

/// The authenticated requester, when the webhook recorded one. `recorded`: whether this
/// operator's webhook records requesters; without it the annotation is whatever the creator
/// wrote, and is ignored.
pub fn requested_by(meta: &ObjectMeta, recorded: bool) -> Option<String> {
    if !recorded {
        return None;
    }
    meta.annotations
        .as_ref()?
        .get(REQUESTED_BY)
        .filter(|v| !v.is_empty())
        .cloned()
}

/// The field manager of the object's `Create` (or first `Apply`) operation.
fn creating_manager(meta: &ObjectMeta) -> Option<String> {
    meta.managed_fields
        .as_ref()?
        .iter()
        .filter(|m| m.subresource.as_deref().is_none_or(str::is_empty))
        .filter(|m| {
            m.manager
                .as_deref()
                .is_some_and(|n| !n.starts_with("dataguardian-"))
        })
        .find(|m| matches!(m.operation.as_deref(), Some("Create" | "Apply")))
        .and_then(|m| m.manager.clone())
}

/// How Events name who asked: `requested by alice`, or the client-chosen field manager marked
/// as such; empty when neither is known.
pub fn who_note(meta: &ObjectMeta, recorded: bool) -> String {
    match (requested_by(meta, recorded), creating_manager(meta)) {
        (Some(user), _) => format!("requested by {user}"),
        (None, Some(m)) => {
            format!("client-chosen field manager {m:?}, not an authenticated user")
        }
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    fn meta(requested: Option<&str>, manager: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            annotations: requested.map(|r| {
                [(REQUESTED_BY.to_string(), r.to_string())]
                    .into_iter()
                    .collect()
            }),
            managed_fields: manager.map(|m| {
                vec![
                    ManagedFieldsEntry {
                        manager: Some("dataguardian-backup-run".into()),
                        operation: Some("Apply".into()),
                        subresource: Some("status".into()),
                        ..Default::default()
                    },
                    ManagedFieldsEntry {
                        manager: Some(m.into()),
                        operation: Some("Create".into()),
                        ..Default::default()
                    },
                ]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_recorded_requester_wins_over_the_field_manager() {
        let m = meta(Some("alice"), Some("kubectl-create"));
        assert_eq!(requested_by(&m, true).as_deref(), Some("alice"));
        assert_eq!(who_note(&m, true), "requested by alice");
    }

    #[test]
    fn without_the_webhook_only_the_client_chosen_manager_is_shown_as_such() {
        let m = meta(None, Some("argocd-controller"));
        assert_eq!(requested_by(&m, true), None);
        assert_eq!(
            who_note(&m, true),
            "client-chosen field manager \"argocd-controller\", not an authenticated user"
        );
        assert_eq!(who_note(&ObjectMeta::default(), true), "");
    }

    #[test]
    fn without_the_webhook_a_written_annotation_is_not_believed() {
        let forged = meta(Some("ceo"), Some("kubectl-create"));
        assert_eq!(requested_by(&forged, false), None);
        assert_eq!(
            who_note(&forged, false),
            "client-chosen field manager \"kubectl-create\", not an authenticated user"
        );
    }
}
