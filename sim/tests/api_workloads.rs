//! Contract tests of the workload and install kinds of kube-sim (Deployments, ReplicaSets,
//! Services, PodDisruptionBudgets, NetworkPolicies, webhook configurations) through kube-rs and
//! the installed kubectl: defaults, validation messages, generation, the scale subresource,
//! ClusterIP/NodePort allocation, server-side apply merging, printer columns. No controller runs
//! here (the runner's controllers are tested in `runner_deployments.rs`).

mod common;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn deployment(name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 8080}]}]},
            },
        },
    })
}

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

#[tokio::test]
async fn deployments_are_defaulted_versioned_and_validated() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &typed(deployment("web", "web")))
        .await
        .unwrap();
    let v = serde_json::to_value(&created).unwrap();
    assert_eq!(v["metadata"]["generation"], 1);
    assert_eq!(v["spec"]["replicas"], 1);
    assert_eq!(
        v["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    assert_eq!(v["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(v["spec"]["progressDeadlineSeconds"], 600);
    let pod = &v["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert!(v.get("status").is_none_or(|s| s == &json!({})), "{v}");

    // Spec changes move the generation; metadata changes do not.
    let p = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(1));
    let p = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(2));

    // The selector is immutable (apps/v1), with the apiserver's message.
    let err = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"matchLabels": {"app": "other"}}, "template": {"metadata": {"labels": {"app": "other"}}}}})),
        )
        .await
        .unwrap_err();
    let s = api_err(err);
    assert_eq!(s.code, 422);
    assert_eq!(
        s.message,
        r#"Deployment.apps "web" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"other"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"#
    );

    // Template labels must match the selector; pods of a Deployment restart Always.
    let mut bad = deployment("bad", "a");
    bad["spec"]["template"]["metadata"]["labels"] = json!({"app": "b"});
    bad["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    let s = api_err(
        api.create(&PostParams::default(), &typed(bad))
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 422);
    assert!(
        s.message.contains(
            r#"spec.template.metadata.labels: Invalid value: map[string]string{"app":"b"}: `selector` does not match template `labels`"#
        ),
        "{}",
        s.message
    );
    assert!(
        s.message.contains(
            r#"spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always""#
        ),
        "{}",
        s.message
    );
    let mut zero = deployment("zero", "z");
    zero["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
    let s = api_err(
        api.create(&PostParams::default(), &typed(zero))
            .await
            .unwrap_err(),
    );
    assert!(
        s.message.contains(
            r#"spec.strategy.rollingUpdate.maxUnavailable: Invalid value: "0%": may not be 0 when `maxSurge` is 0"#
        ),
        "{}",
        s.message
    );
    let mut recreate = deployment("rec", "r");
    recreate["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
    let s = api_err(
        api.create(&PostParams::default(), &typed(recreate))
            .await
            .unwrap_err(),
    );
    assert!(
        s.message.contains(
            "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"
        ),
        "{}",
        s.message
    );

    // Status writes keep the spec and may set annotations (the Deployment controller's
    // revision annotation travels this way).
    let mut cur = serde_json::to_value(api.get("web").await.unwrap()).unwrap();
    cur["status"] = json!({"observedGeneration": 2, "replicas": 2});
    cur["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "1"});
    cur["spec"]["replicas"] = json!(7);
    let after = api
        .replace_status("web", &PostParams::default(), &typed::<Deployment>(cur))
        .await
        .unwrap();
    let a = serde_json::to_value(&after).unwrap();
    assert_eq!(a["spec"]["replicas"], 2);
    assert_eq!(a["status"]["replicas"], 2);
    assert_eq!(
        a["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(a["metadata"]["generation"], 2);
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_replicas() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &typed(deployment("web", "web")))
        .await
        .unwrap();
    let scale = api.get_scale("web").await.unwrap();
    let s = serde_json::to_value(&scale).unwrap();
    assert_eq!(s["kind"], "Scale");
    assert_eq!(s["apiVersion"], "autoscaling/v1");
    assert_eq!(s["spec"]["replicas"], 1);
    assert_eq!(s["status"]["selector"], "app=web");

    let s = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(s.spec.and_then(|s| s.replicas), Some(3));
    let d = api.get("web").await.unwrap();
    assert_eq!(d.spec.replicas, Some(3));
    assert_eq!(d.metadata.generation, Some(2));

    // PUT with a stale resourceVersion conflicts; negative replicas are invalid.
    let mut stale = serde_json::to_value(&scale).unwrap();
    stale["spec"]["replicas"] = json!(5);
    let e = api_err(
        api.replace_scale("web", &PostParams::default(), &typed(stale))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409, "{e:?}");
    let e = api_err(
        api.patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": -1}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        "Scale.autoscaling \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    );

    // ReplicaSets have it too; kubectl scale finds it through discovery.
    let rs_api: Api<ReplicaSet> = Api::namespaced(client, "default");
    let mut rs = deployment("rs1", "rs1");
    rs["apiVersion"] = json!("apps/v1");
    rs["kind"] = json!("ReplicaSet");
    rs["spec"].as_object_mut().unwrap().remove("strategy");
    let rs = rs_api
        .create(&PostParams::default(), &typed(rs))
        .await
        .unwrap();
    let v = serde_json::to_value(&rs).unwrap();
    assert_eq!(v["status"], json!({"replicas": 0}));
    let out = kubectl_ok(&server, &["scale", "rs/rs1", "--replicas=4"]).await;
    assert_eq!(out.trim(), "replicaset.apps/rs1 scaled");
    assert_eq!(rs_api.get("rs1").await.unwrap().spec.replicas, Some(4));
    let out = kubectl_ok(&server, &["scale", "deploy/web", "--replicas=0"]).await;
    assert_eq!(out.trim(), "deployment.apps/web scaled");
    assert_eq!(api.get("web").await.unwrap().spec.replicas, Some(0));
}

fn service(name: &str, spec: Value) -> Service {
    typed(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}))
}

#[tokio::test]
async fn services_get_cluster_ips_and_node_ports() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let a = api
        .create(
            &PostParams::default(),
            &service(
                "a",
                json!({"selector": {"app": "a"}, "ports": [{"port": 80, "targetPort": 8080}]}),
            ),
        )
        .await
        .unwrap();
    let b = api
        .create(
            &PostParams::default(),
            &service("b", json!({"ports": [{"name": "metrics", "port": 8443}]})),
        )
        .await
        .unwrap();
    let (a, b) = (
        serde_json::to_value(&a).unwrap(),
        serde_json::to_value(&b).unwrap(),
    );
    let ip_a = a["spec"]["clusterIP"].as_str().unwrap().to_string();
    let ip_b = b["spec"]["clusterIP"].as_str().unwrap().to_string();
    for ip in [&ip_a, &ip_b] {
        let addr: std::net::Ipv4Addr = ip.parse().unwrap();
        assert_eq!(addr.octets()[0], 10);
        assert_eq!(addr.octets()[1] & 0xf0, 96, "{ip} in 10.96.0.0/12");
    }
    assert_ne!(ip_a, ip_b);
    assert_eq!(a["spec"]["clusterIPs"], json!([ip_a]));
    assert_eq!(a["spec"]["type"], "ClusterIP");
    assert_eq!(a["spec"]["sessionAffinity"], "None");
    assert_eq!(a["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(a["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(b["spec"]["ports"][0]["targetPort"], 8443);
    assert_eq!(a["status"], json!({"loadBalancer": {}}));

    // A taken or foreign ClusterIP is refused like the allocator does.
    let e = api_err(
        api.create(
            &PostParams::default(),
            &service("c", json!({"clusterIP": ip_a, "ports": [{"port": 1}]})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        format!(
            "Service \"c\" is invalid: spec.clusterIPs: Invalid value: []string{{\"{ip_a}\"}}: failed to allocate IP {ip_a}: provided IP is already allocated"
        )
    );
    let e = api_err(
        api.create(
            &PostParams::default(),
            &service(
                "c",
                json!({"clusterIP": "192.168.1.1", "ports": [{"port": 1}]}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        e.message
            .contains("the provided IP (192.168.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
        "{}",
        e.message
    );
    let h = api
        .create(
            &PostParams::default(),
            &service(
                "headless",
                json!({"clusterIP": "None", "selector": {"app": "a"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(h.spec.unwrap().cluster_ips, Some(vec!["None".to_string()]));

    // A PUT without clusterIP keeps the allocated one (patchAllocatedValues); changing it is
    // refused.
    let mut put = a.clone();
    put["spec"].as_object_mut().unwrap().remove("clusterIP");
    put["spec"].as_object_mut().unwrap().remove("clusterIPs");
    put["spec"]["ports"][0]["port"] = json!(81);
    let kept = api
        .replace("a", &PostParams::default(), &typed(put))
        .await
        .unwrap();
    assert_eq!(
        kept.spec.unwrap().cluster_ip.as_deref(),
        Some(ip_a.as_str())
    );
    let e = api_err(
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"clusterIP": "10.96.0.77", "clusterIPs": ["10.96.0.77"]}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        e.message,
        "Service \"a\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.77\"}: may not change once set"
    );

    // NodePorts come from 30000-32767 and survive updates.
    let np = api
        .create(
            &PostParams::default(),
            &service("np", json!({"type": "NodePort", "ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
    let port = np.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .node_port
        .unwrap();
    assert!((30000..=32767).contains(&port), "{port}");
    let np2 = api
        .patch(
            "np",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(np2.spec.unwrap().ports.unwrap()[0].node_port, Some(port));
    let e = api_err(
        api.create(
            &PostParams::default(),
            &service(
                "np2",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        e.message.contains(&format!(
            "spec.ports[0].nodePort: Invalid value: {port}: provided port is already allocated"
        )),
        "{}",
        e.message
    );

    let out = kubectl_ok(&server, &["get", "svc", "a", "np", "headless"]).await;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(
        &lines[1][..5],
        ["a", "ClusterIP", &ip_a, "<none>", "81/TCP"]
    );
    assert_eq!(
        &lines[2][..5],
        [
            "np",
            "NodePort",
            lines[2][2],
            "<none>",
            &format!("80:{port}/TCP")
        ]
    );
    assert_eq!(
        &lines[3][..5],
        ["headless", "ClusterIP", "None", "<none>", "<none>"]
    );
}

const INSTALL: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: op
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: op}
  template:
    metadata:
      labels: {app: op}
    spec:
      containers:
      - name: manager
        image: op:1
        ports:
        - {name: metrics, containerPort: 8080}
        env:
        - {name: A, value: "1"}
---
apiVersion: v1
kind: Service
metadata:
  name: op-metrics
  namespace: default
spec:
  selector: {app: op}
  ports:
  - {name: metrics, port: 8080, targetPort: metrics}
  - {name: health, port: 8081}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: op
  namespace: default
spec:
  minAvailable: 1
  selector:
    matchLabels: {app: op}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: op
  namespace: default
spec:
  podSelector:
    matchLabels: {app: op}
  ingress:
  - ports:
    - port: 8080
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: op
webhooks:
- name: validate.op.example.com
  admissionReviewVersions: [v1]
  sideEffects: None
  clientConfig:
    service: {name: op, namespace: default, path: /validate}
  rules:
  - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}
"#;

#[tokio::test]
async fn kubectl_server_side_apply_installs_and_upgrades() {
    let server = start().await;
    let out = kubectl_stdin(
        &server,
        &[
            "apply",
            "--server-side",
            "--field-manager=installer",
            "-f",
            "-",
        ],
        Some(INSTALL),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        [
            "deployment.apps/op serverside-applied",
            "service/op-metrics serverside-applied",
            "poddisruptionbudget.policy/op serverside-applied",
            "networkpolicy.networking.k8s.io/op serverside-applied",
            "validatingwebhookconfiguration.admissionregistration.k8s.io/op serverside-applied",
        ]
    );
    let client = server.client().await.unwrap();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    // Another manager adds a sidecar and an env var (strategic merge by name).
    deploys
        .patch(
            "op",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "proxy", "image": "proxy:1"},
                {"name": "manager", "env": [{"name": "B", "value": "2"}]},
            ]}}}})),
        )
        .await
        .unwrap();
    // The upgrade re-applies the same manifest with a new tag: containers, ports and env merge
    // by key, nothing is duplicated, the other manager's fields stay.
    let upgrade = INSTALL.replace("image: op:1", "image: op:2");
    let out = kubectl_stdin(
        &server,
        &[
            "apply",
            "--server-side",
            "--field-manager=installer",
            "-f",
            "-",
        ],
        Some(&upgrade),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let d = serde_json::to_value(deploys.get("op").await.unwrap()).unwrap();
    let cs = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 2, "{cs:?}");
    let manager = cs.iter().find(|c| c["name"] == "manager").unwrap();
    assert_eq!(manager["image"], "op:2");
    assert_eq!(
        manager["ports"],
        json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        manager["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    );
    assert_eq!(d["metadata"]["generation"], 3);
    let mf = d["metadata"]["managedFields"].to_string();
    assert!(
        mf.contains(r#"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}"#),
        "{mf}"
    );

    // Changing the image another manager set is a conflict without --force-conflicts.
    deploys
        .patch(
            "op",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "manager", "image": "op:hotfix"},
            ]}}}})),
        )
        .await
        .unwrap();
    let out = kubectl_stdin(
        &server,
        &[
            "apply",
            "--server-side",
            "--field-manager=installer",
            "-f",
            "-",
        ],
        Some(&upgrade),
    )
    .await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("conflict with")
            && out
                .stderr
                .contains(r#".spec.template.spec.containers[name="manager"].image"#),
        "{}",
        out.stderr
    );

    // Service ports merge by port+protocol; both stay.
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = svcs.get("op-metrics").await.unwrap();
    let ports = svc.spec.unwrap().ports.unwrap();
    assert_eq!(ports.len(), 2);
    assert_eq!(
        ports[1].target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8081))
    );

    // Stored objects with their defaults, printed by kubectl.
    let np = kubectl_ok(&server, &["get", "netpol", "op", "-o", "json"]).await;
    let np: Value = serde_json::from_str(&np).unwrap();
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");
    let vwc = kubectl_ok(
        &server,
        &["get", "validatingwebhookconfiguration", "op", "-o", "json"],
    )
    .await;
    let vwc: Value = serde_json::from_str(&vwc).unwrap();
    let hook = &vwc["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Fail");
    assert_eq!(hook["timeoutSeconds"], 10);
    assert_eq!(hook["clientConfig"]["service"]["port"], 443);
    assert_eq!(hook["rules"][0]["scope"], "*");

    let table = |out: String| -> Vec<Vec<String>> {
        out.lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    };
    let t = table(kubectl_ok(&server, &["get", "deploy", "op"]).await);
    assert_eq!(t[0], ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert_eq!(&t[1][..4], ["op", "0/2", "0", "0"]);
    let t = table(kubectl_ok(&server, &["get", "deploy", "op", "-o", "wide"]).await);
    assert_eq!(&t[0][5..], ["CONTAINERS", "IMAGES", "SELECTOR"]);
    assert_eq!(&t[1][5..], ["manager,proxy", "op:hotfix,proxy:1", "app=op"]);
    let t = table(kubectl_ok(&server, &["get", "pdb", "op"]).await);
    assert_eq!(
        t[0],
        [
            "NAME",
            "MIN",
            "AVAILABLE",
            "MAX",
            "UNAVAILABLE",
            "ALLOWED",
            "DISRUPTIONS",
            "AGE"
        ]
    );
    assert_eq!(&t[1][..4], ["op", "1", "N/A", "0"]);
    let t = table(kubectl_ok(&server, &["get", "netpol", "op"]).await);
    assert_eq!(t[0], ["NAME", "POD-SELECTOR", "AGE"]);
    assert_eq!(&t[1][..2], ["op", "app=op"]);
    let t = table(kubectl_ok(&server, &["get", "validatingwebhookconfigurations"]).await);
    assert_eq!(t[0], ["NAME", "WEBHOOKS", "AGE"]);
    assert_eq!(&t[1][..2], ["op", "1"]);
    let out = kubectl_ok(&server, &["get", "all"]).await;
    assert!(
        out.contains("service/op-metrics") && out.contains("deployment.apps/op"),
        "{out}"
    );

    // Invalid webhook configurations are refused like upstream.
    let bad = r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: bad}
webhooks:
- name: m.example.com
  clientConfig: {url: "https://x.example.com"}
"#;
    let out = kubectl_stdin(&server, &["apply", "-f", "-"], Some(bad)).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains(
            "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun"
        ) && out
            .stderr
            .contains("webhooks[0].admissionReviewVersions: Required value"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn kubectl_generators_create_deployments_and_services() {
    // kubectl's generators send protobuf bodies.
    let server = start().await;
    let out = kubectl_ok(
        &server,
        &[
            "create",
            "deployment",
            "web",
            "--image=web:1",
            "--replicas=2",
            "--port=8080",
        ],
    )
    .await;
    assert_eq!(out.trim(), "deployment.apps/web created");
    let out = kubectl_ok(
        &server,
        &["create", "service", "clusterip", "websvc", "--tcp=80:8080"],
    )
    .await;
    assert_eq!(out.trim(), "service/websvc created");
    let out = kubectl_ok(
        &server,
        &[
            "expose",
            "deployment",
            "web",
            "--port=81",
            "--target-port=http",
            "--name=web2",
        ],
    )
    .await;
    assert_eq!(out.trim(), "service/web2 exposed");
    let client = server.client().await.unwrap();
    let d = Api::<Deployment>::namespaced(client.clone(), "default")
        .get("web")
        .await
        .unwrap();
    assert_eq!(d.spec.replicas, Some(2));
    assert_eq!(d.spec.selector.match_labels.as_ref().unwrap()["app"], "web");
    let c = &d.spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        (c.name.as_str(), c.image.as_deref()),
        ("web", Some("web:1"))
    );
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
    let svcs: Api<Service> = Api::namespaced(client, "default");
    let s = svcs.get("websvc").await.unwrap().spec.unwrap();
    let p = &s.ports.as_ref().unwrap()[0];
    assert_eq!((p.port, p.name.as_deref()), (80, Some("80-8080")));
    assert_eq!(
        p.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080))
    );
    let s = svcs.get("web2").await.unwrap().spec.unwrap();
    assert_eq!(
        s.ports.as_ref().unwrap()[0].target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into()))
    );
    assert_eq!(s.selector.unwrap()["app"], "web");
}

#[tokio::test]
async fn kubectl_client_side_apply_updates_deployments_by_strategic_merge() {
    // `kubectl apply -k` / `-f` without --server-side: strategic merge patches computed from
    // the last-applied annotation ($setElementOrder, $retainKeys on the strategy).
    let server = start().await;
    let out = kubectl_stdin(&server, &["apply", "-f", "-"], Some(INSTALL)).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("deployment.apps/op created"),
        "{}",
        out.stdout
    );
    let upgraded = INSTALL
        .replace("image: op:1", "image: op:2")
        .replace(
            "        env:\n        - {name: A, value: \"1\"}\n",
            "        env:\n        - {name: C, value: \"3\"}\n",
        )
        .replace(
            "  replicas: 2\n",
            "  replicas: 2\n  strategy:\n    type: Recreate\n",
        );
    let out = kubectl_stdin(&server, &["apply", "-f", "-"], Some(&upgraded)).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("deployment.apps/op configured"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("service/op-metrics unchanged"),
        "{}",
        out.stdout
    );
    let client = server.client().await.unwrap();
    let d = serde_json::to_value(
        Api::<Deployment>::namespaced(client, "default")
            .get("op")
            .await
            .unwrap(),
    )
    .unwrap();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "op:2");
    assert_eq!(c["env"], json!([{"name": "C", "value": "3"}]));
    // $retainKeys dropped the defaulted rollingUpdate when the type changed.
    assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(d["metadata"]["generation"], 2);
}
