//! Status writing shared by the reconcilers: server-side apply of a whole status under one
//! controller's field manager, and the live-progress record of a running Job.

use chrono::{DateTime, Utc};
use kube::api::{Api, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::api::common::{Progress, time_from_chrono};

use crate::contract::ProgressSample;
use crate::controller::common::context::Context;
use crate::controller::common::error::Result;

/// Server-side applies `status` as the whole status of `K` `ns/name` under `field_manager`.
pub async fn apply_status<K>(
    client: &Client,
    ns: &str,
    name: &str,
    field_manager: &str,
    status: &impl Serialize,
) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// A status one controller applies whole: the kind it belongs to and that controller's field
/// manager.
pub trait ControllerStatus: Serialize {
    /// The kind whose status this is.
    type Kind: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug;
    /// The field manager of the controller that owns it.
    const FIELD_MANAGER: &'static str;
}

/// [`apply_status`] of a [`ControllerStatus`]: the whole status of `ns/name`.
pub async fn apply<S: ControllerStatus>(
    ctx: &Context,
    ns: &str,
    name: &str,
    status: &S,
) -> Result<()> {
    apply_status::<S::Kind>(&ctx.client, ns, name, S::FIELD_MANAGER, status).await
}

/// The progress record after a new sample: `updated` moves only when bytes moved, so that an
/// unchanged `updated` is what stall detection measures.
pub fn advance_progress(
    previous: Option<&Progress>,
    sample: ProgressSample,
    now: DateTime<Utc>,
) -> Progress {
    let moved =
        previous.is_none_or(|p| p.bytes_in != sample.bytes_in || p.bytes_out != sample.bytes_out);
    let updated = if moved {
        None
    } else {
        previous.and_then(|p| p.updated.clone())
    };
    Progress {
        bytes_in: sample.bytes_in,
        bytes_out: sample.bytes_out,
        bytes_per_second: sample.bytes_per_second,
        updated: updated.or_else(|| Some(time_from_chrono(now))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updated_moves_only_with_the_bytes() {
        let t0: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        let t1: DateTime<Utc> = "2026-11-22T10:00:10Z".parse().unwrap();
        let s = ProgressSample {
            bytes_in: 10,
            bytes_out: 4,
            bytes_per_second: 1,
        };
        let first = advance_progress(None, s, t0);
        assert_eq!(first.updated, Some(time_from_chrono(t0)));
        let same = advance_progress(Some(&first), s, t1);
        assert_eq!(
            same.updated,
            Some(time_from_chrono(t0)),
            "no bytes moved: updated stays"
        );
        let moved = advance_progress(Some(&first), ProgressSample { bytes_in: 20, ..s }, t1);
        assert_eq!(moved.updated, Some(time_from_chrono(t1)));
        assert_eq!(moved.bytes_in, 20);
    }
}
