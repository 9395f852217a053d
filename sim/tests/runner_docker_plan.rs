//! What the Docker runtime asks `docker create` for (pure): Kubernetes command/args semantics,
//! the kubelet's runAsNonRoot rules, security options, limits, and no secret value on the
//! command line.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube_sim::runner::docker::{
    ContainerPlan, MountSpec, SecurityPlan, command_line, container_name, create_args,
    security_plan,
};
use serde_json::json;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn pod(sc: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
        "spec": {"securityContext": sc, "containers": []}
    }))
    .unwrap()
}

fn container(sc: serde_json::Value) -> Container {
    serde_json::from_value(json!({"name": "c", "securityContext": sc})).unwrap()
}

#[test]
fn command_replaces_the_entrypoint_and_args_the_cmd() {
    assert_eq!(
        command_line(&s(&["/bin/app", "run"]), &s(&["--x"])),
        (Some("/bin/app".into()), s(&["run", "--x"]))
    );
    assert_eq!(
        command_line(&s(&["/bin/app"]), &[]),
        (Some("/bin/app".into()), vec![])
    );
    assert_eq!(command_line(&[], &s(&["a", "b"])), (None, s(&["a", "b"])));
    assert_eq!(command_line(&[], &[]), (None, vec![]));
    assert_eq!(
        container_name("agent", "run-1-abcde", "prod", "0f1e2d3c-4b5a-6978", 2),
        "k8s_agent_run-1-abcde_prod_0f1e2d3c_2"
    );
}

#[test]
fn run_as_non_root_follows_the_kubelet() {
    let non_root = pod(json!({"runAsNonRoot": true}));
    let c = container(json!({}));
    let root = security_plan(&non_root, &c, "").unwrap_err();
    assert_eq!(
        root,
        "container has runAsNonRoot and image will run as root (pod: \"p_ns(u-1)\", container: c)"
    );
    assert_eq!(security_plan(&non_root, &c, "0:0").unwrap_err(), root);
    assert!(
        security_plan(&non_root, &c, "app")
            .unwrap_err()
            .starts_with("container has runAsNonRoot and image has non-numeric user (app)")
    );
    assert!(security_plan(&non_root, &c, "65532:65532").is_ok());
    // An explicit runAsUser decides; 0 breaks the policy.
    let explicit_root = container(json!({"runAsUser": 0}));
    assert!(
        security_plan(&non_root, &explicit_root, "65532")
            .unwrap_err()
            .starts_with("container's runAsUser breaks non-root policy")
    );
    let explicit = container(json!({"runAsUser": 1000}));
    assert_eq!(
        security_plan(&non_root, &explicit, "")
            .unwrap()
            .user
            .as_deref(),
        Some("1000")
    );
    // The container's runAsNonRoot: false wins over the pod's true.
    let relaxed = container(json!({"runAsNonRoot": false}));
    assert!(security_plan(&non_root, &relaxed, "").is_ok());
}

#[test]
fn container_security_context_wins_over_the_pod() {
    let p = pod(
        json!({"runAsUser": 1, "runAsGroup": 2, "fsGroup": 3, "supplementalGroups": [4, 3],
                       "seccompProfile": {"type": "Unconfined"}}),
    );
    let c = container(json!({"runAsUser": 65532, "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        "seccompProfile": {"type": "RuntimeDefault"}}));
    let plan = security_plan(&p, &c, "").unwrap();
    assert_eq!(
        plan,
        SecurityPlan {
            user: Some("65532:2".into()),
            group_add: vec![3, 4],
            read_only_root: true,
            privileged: false,
            no_new_privileges: true,
            cap_drop: s(&["ALL"]),
            cap_add: s(&["NET_BIND_SERVICE"]),
            seccomp_unconfined: false,
        }
    );
    // Only a group: the image's user with that group.
    let g = pod(json!({"runAsGroup": 7}));
    assert_eq!(
        security_plan(&g, &container(json!({})), "app:app")
            .unwrap()
            .user
            .as_deref(),
        Some("app:7")
    );
    // No profile at all: unconfined, the kubelet's default.
    assert!(
        security_plan(&pod(json!({})), &container(json!({})), "")
            .unwrap()
            .seccomp_unconfined
    );
    assert!(
        security_plan(
            &pod(json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "x"}})),
            &container(json!({})),
            ""
        )
        .is_err()
    );
}

#[test]
fn create_args_carry_everything_but_secret_values() {
    let plan = ContainerPlan {
        name: "k8s_c_p_ns_u_0".into(),
        image: "img:1".into(),
        labels: vec![("io.kube-sim.pod-uid".into(), "u".into())],
        hostname: "p".into(),
        entrypoint: Some("/bin/app".into()),
        args: s(&["-v"]),
        env: vec![
            ("PASSWORD".into(), "hunter2".into()),
            ("DOCKER_X".into(), "plain".into()),
        ],
        working_dir: Some("/w".into()),
        mounts: vec![
            MountSpec::Bind {
                source: PathBuf::from("/host/s"),
                target: "/secret".into(),
                read_only: true,
            },
            MountSpec::Volume {
                name: "vol".into(),
                target: "/mem".into(),
                read_only: false,
            },
        ],
        security: SecurityPlan {
            user: Some("65532:65532".into()),
            read_only_root: true,
            no_new_privileges: true,
            cap_drop: s(&["ALL"]),
            ..SecurityPlan::default()
        },
        memory_bytes: Some(33_554_432),
        cpu_millis: Some(250),
    };
    let (args, env) = create_args(&plan);
    let line = args.join(" ");
    assert!(!line.contains("hunter2"), "{line}");
    assert_eq!(env, vec![("PASSWORD".to_string(), "hunter2".to_string())]);
    for part in [
        "create --pull never --name k8s_c_p_ns_u_0 --network host --hostname p",
        "--env PASSWORD --env DOCKER_X=plain --workdir /w",
        "--mount type=bind,source=/host/s,target=/secret,readonly",
        "--mount type=volume,source=vol,target=/mem --user 65532:65532",
        "--read-only --security-opt no-new-privileges --cap-drop ALL",
        "--memory 33554432 --memory-swap 33554432 --cpus 0.250",
        "--entrypoint /bin/app -- img:1 -v",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
    assert!(line.ends_with("-- img:1 -v"));
}
