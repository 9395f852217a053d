//! Request attributes from a URL, as kube-apiserver's `RequestInfoFactory` derives them: which
//! requests are resource requests, the verb (`list`/`watch`/`deletecollection` for collections),
//! namespace, name (also from a `metadata.name` field selector) and subresource.

use super::UserInfo;
use super::rbac::Attributes;

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1" | "t" | "T" | "TRUE" | "True"))
}

fn exact_name(field_selector: &str) -> Option<String> {
    field_selector.split(',').find_map(|term| {
        let term = term.trim();
        let value = term
            .strip_prefix("metadata.name==")
            .or_else(|| term.strip_prefix("metadata.name="))?;
        let ok = !value.is_empty()
            && value != "."
            && value != ".."
            && !value.contains('/')
            && !value.contains('%');
        ok.then(|| value.to_string())
    })
}

/// The attributes of a request by `user`: `method`, the URL `path` and its decoded `query`.
pub fn attributes(
    user: &UserInfo,
    method: &str,
    path: &str,
    query: &dyn Fn(&str) -> Option<String>,
) -> Attributes {
    let non_resource = || Attributes::non_resource(user, &method.to_lowercase(), path);
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    if parts.len() < 3 {
        return non_resource();
    }
    let mut rest: &[&str] = &parts;
    let (group, prefix_ok) = match rest[0] {
        "api" => {
            rest = &rest[1..];
            (String::new(), true)
        }
        "apis" => {
            rest = &rest[1..];
            if rest.len() < 3 {
                return non_resource();
            }
            let g = rest[0].to_string();
            rest = &rest[1..];
            (g, true)
        }
        _ => (String::new(), false),
    };
    if !prefix_ok {
        return non_resource();
    }
    let version = rest[0].to_string();
    rest = &rest[1..];
    let mut verb = match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
    .to_string();
    let mut namespace = String::new();
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        namespace = rest[1].to_string();
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    let resource = rest.first().map(|s| s.to_string()).unwrap_or_default();
    let mut name = rest.get(1).map(|s| s.to_string()).unwrap_or_default();
    let subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
    if name.is_empty() && verb == "get" {
        verb = if truthy(query("watch").as_deref()) {
            "watch"
        } else {
            "list"
        }
        .into();
        if let Some(n) = query("fieldSelector").as_deref().and_then(exact_name) {
            name = n;
        }
    }
    if name.is_empty() && verb == "delete" {
        verb = "deletecollection".into();
    }
    Attributes {
        user: user.clone(),
        verb,
        resource_request: true,
        path: path.to_string(),
        api_group: group,
        api_version: version,
        resource,
        subresource,
        namespace,
        name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: &str, url: &str) -> Attributes {
        let (path, q) = url.split_once('?').unwrap_or((url, ""));
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect();
        let query = move |k: &str| pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
        attributes(&UserInfo::default(), method, path, &query)
    }

    fn short(a: &Attributes) -> (bool, &str, &str, &str, &str, &str, &str) {
        (
            a.resource_request,
            a.verb.as_str(),
            a.api_group.as_str(),
            a.resource.as_str(),
            a.subresource.as_str(),
            a.namespace.as_str(),
            a.name.as_str(),
        )
    }

    #[test]
    fn verbs_and_scopes_like_the_request_info_factory() {
        assert_eq!(
            short(&attrs("GET", "/api/v1/namespaces/shop/pods")),
            (true, "list", "", "pods", "", "shop", "")
        );
        assert_eq!(
            short(&attrs("GET", "/api/v1/pods?watch=true")),
            (true, "watch", "", "pods", "", "", "")
        );
        assert_eq!(
            short(&attrs(
                "GET",
                "/apis/dataguardian.io/v1alpha1/namespaces/shop/backupruns?fieldSelector=metadata.name%3Dr1&watch=1"
            )),
            (
                true,
                "watch",
                "dataguardian.io",
                "backupruns",
                "",
                "shop",
                "r1"
            )
        );
        assert_eq!(
            short(&attrs("DELETE", "/api/v1/namespaces/shop/configmaps")),
            (true, "deletecollection", "", "configmaps", "", "shop", "")
        );
        assert_eq!(
            short(&attrs(
                "PATCH",
                "/apis/batch/v1/namespaces/shop/jobs/j/status"
            )),
            (true, "patch", "batch", "jobs", "status", "shop", "j")
        );
        assert_eq!(
            short(&attrs("GET", "/api/v1/namespaces/shop")),
            (true, "get", "", "namespaces", "", "shop", "shop")
        );
        assert_eq!(
            short(&attrs("PUT", "/api/v1/namespaces/shop/status")),
            (true, "update", "", "namespaces", "status", "shop", "shop")
        );
        assert_eq!(
            short(&attrs(
                "POST",
                "/api/v1/namespaces/shop/serviceaccounts/op/token"
            )),
            (true, "create", "", "serviceaccounts", "token", "shop", "op")
        );
        assert_eq!(
            short(&attrs("GET", "/api/v1/namespaces")),
            (true, "list", "", "namespaces", "", "", "")
        );
    }

    #[test]
    fn discovery_and_other_paths_are_non_resource() {
        for p in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/healthz",
            "/openapi/v3/apis/apps/v1",
        ] {
            let a = attrs("GET", p);
            assert!(!a.resource_request, "{p}");
            assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", p));
        }
        assert_eq!(attrs("POST", "/version").verb, "post");
    }
}
