//! Host paths for container paths (mount rewriting, SIM_MOUNT_ variables), volumes, pod IPs.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Volume};
use kube_sim::runner::env::EnvSources;
use kube_sim::runner::ip::{IpPool, IpPrefix};
use kube_sim::runner::mounts::{MountMap, mount_env_name};
use kube_sim::runner::volumes::{
    VolumeError, VolumePlan, materialize, plan_volume, volume_references,
};
use serde_json::json;

fn map() -> MountMap {
    let mut m = MountMap::new();
    m.insert("/data", PathBuf::from("/host/vol/data"));
    m.insert("/data/sub/", PathBuf::from("/host/vol/sub"));
    m.insert("/dev/termination-log", PathBuf::from("/host/term/main"));
    m.insert("/", PathBuf::from("/ignored"));
    m
}

#[test]
fn rewrites_whole_paths_and_prefixes_only() {
    let m = map();
    assert_eq!(m.rewrite("/data"), "/host/vol/data");
    assert_eq!(m.rewrite("/data/x.sql"), "/host/vol/data/x.sql");
    assert_eq!(
        m.rewrite("/data/sub/y"),
        "/host/vol/sub/y",
        "longest mount wins"
    );
    assert_eq!(m.rewrite("--dir=/data/x"), "--dir=/host/vol/data/x");
    assert_eq!(m.rewrite("/database"), "/database");
    assert_eq!(m.rewrite("/srv/data"), "/srv/data");
    assert_eq!(m.rewrite("a:/data:b"), "a:/host/vol/data:b");
    assert_eq!(
        m.rewrite("echo msg > /dev/termination-log; cat /data/a /data/b"),
        "echo msg > /host/term/main; cat /host/vol/data/a /host/vol/data/b"
    );
    assert_eq!(m.rewrite("'/data'"), "'/host/vol/data'");
    assert_eq!(m.rewrite("/dev/termination-log2"), "/dev/termination-log2");
}

#[test]
fn a_file_url_names_the_path_after_its_slashes() {
    let m = map();
    assert_eq!(m.rewrite("file:///data/x"), "file:///host/vol/data/x");
    assert_eq!(m.rewrite("file:/data/x"), "file:/host/vol/data/x");
    assert_eq!(
        m.rewrite("x//data"),
        "x//data",
        "a path continues through //"
    );
}

#[test]
fn host_paths_a_process_reports_become_container_paths_again() {
    let m = map();
    let report = r#"{"location":"file:///host/vol/data/x/manifest.json","sub":"/host/vol/sub/y"}"#;
    assert_eq!(
        m.to_container(report),
        r#"{"location":"file:///data/x/manifest.json","sub":"/data/sub/y"}"#
    );
    assert_eq!(
        m.to_container("/host/vol/database"),
        "/host/vol/database",
        "only whole host paths"
    );
    let arg = "--from=file:///data/x/manifest.json";
    assert_eq!(m.to_container(&m.rewrite(arg)), arg);
}

#[test]
fn host_paths_and_env_names() {
    let m = map();
    assert_eq!(
        m.host_path("/data/a/b"),
        Some(PathBuf::from("/host/vol/data/a/b"))
    );
    assert_eq!(m.host_path("/datab"), None);
    assert_eq!(m.host_path("/tmp"), None);
    assert_eq!(
        mount_env_name("/var/run/secrets/db"),
        "SIM_MOUNT_VAR_RUN_SECRETS_DB"
    );
    assert_eq!(
        mount_env_name("/dev/termination-log"),
        "SIM_MOUNT_DEV_TERMINATION_LOG"
    );
    let vars = m.env_vars();
    assert!(vars.contains(&("SIM_MOUNT_DATA".into(), "/host/vol/data".into())));
    assert!(vars.contains(&("SIM_MOUNT_DATA_SUB".into(), "/host/vol/sub".into())));
    assert_eq!(vars.len(), 3, "the root mount is ignored");
}

fn pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "shop", "labels": {"a": "1"}},
        "spec": {"containers": []},
        "status": {"podIP": "127.4.0.1"}
    }))
    .unwrap()
}

fn sources() -> EnvSources {
    let mut s = EnvSources::default();
    s.secrets.insert(
        "creds".into(),
        serde_json::from_value::<Secret>(
            json!({"metadata": {"name": "creds"}, "data": {"password": "cHc=", "user": "dQ=="}}),
        )
        .unwrap(),
    );
    s.config_maps.insert(
        "cfg".into(),
        serde_json::from_value::<ConfigMap>(json!({"metadata": {"name": "cfg"}, "data": {"a.conf": "x=1"}, "binaryData": {"b.bin": "AAE="}})).unwrap(),
    );
    s
}

fn vol(v: serde_json::Value) -> Volume {
    serde_json::from_value(v).unwrap()
}

#[test]
fn volume_plans() {
    let p = pod();
    let s = sources();
    assert_eq!(
        plan_volume(&p, &vol(json!({"name": "scratch", "emptyDir": {}})), &s).unwrap(),
        VolumePlan::EmptyDir
    );
    let VolumePlan::Files(files) = plan_volume(
        &p,
        &vol(json!({"name": "c", "secret": {"secretName": "creds", "defaultMode": 0o400,
                                            "items": [{"key": "password", "path": "pw/file", "mode": 0o440}, {"key": "user", "path": "user"}]}})),
        &s,
    )
    .unwrap() else {
        panic!("files expected")
    };
    assert_eq!(files.len(), 2);
    assert_eq!(
        (
            files[0].path.as_str(),
            files[0].data.as_slice(),
            files[0].mode
        ),
        ("pw/file", b"pw".as_slice(), 0o440)
    );
    assert_eq!(files[1].mode, 0o400);
    let VolumePlan::Files(files) = plan_volume(
        &p,
        &vol(json!({"name": "c", "configMap": {"name": "cfg"}})),
        &s,
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        vec!["a.conf", "b.bin"]
    );
    assert_eq!(files[1].data, vec![0, 1]);
    assert_eq!(files[0].mode, 0o644);
    let VolumePlan::Files(files) = plan_volume(
        &p,
        &vol(json!({"name": "d", "downwardAPI": {"items": [{"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}},
                                                           {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}})),
        &s,
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(files[0].data, b"127.4.0.1");
    assert_eq!(files[1].data, b"a=\"1\"\n");
    assert_eq!(
        plan_volume(
            &p,
            &vol(json!({"name": "v", "persistentVolumeClaim": {"claimName": "backups"}})),
            &s
        )
        .unwrap(),
        VolumePlan::Persistent(PathBuf::from("pvc/shop/backups"))
    );
}

#[test]
fn missing_and_optional_volume_sources() {
    let p = pod();
    let s = sources();
    let err = plan_volume(
        &p,
        &vol(json!({"name": "c", "secret": {"secretName": "gone"}})),
        &s,
    )
    .unwrap_err();
    assert!(matches!(err, VolumeError::NotReady { .. }));
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"c\" : secret \"gone\" not found"
    );
    assert_eq!(
        plan_volume(
            &p,
            &vol(json!({"name": "c", "secret": {"secretName": "gone", "optional": true}})),
            &s
        )
        .unwrap(),
        VolumePlan::Files(vec![])
    );
    let err = plan_volume(&p, &vol(json!({"name": "c", "configMap": {"name": "cfg", "items": [{"key": "nope", "path": "x"}]}})), &s)
        .unwrap_err();
    assert!(err.to_string().contains("non-existent config key: nope"));
    let err = plan_volume(
        &p,
        &vol(json!({"name": "n", "nfs": {"server": "x", "path": "/"}})),
        &s,
    )
    .unwrap_err();
    assert!(matches!(err, VolumeError::Unsupported { .. }));
    let (secrets, cms) = volume_references(&[
        vol(json!({"name": "a", "secret": {"secretName": "s1"}})),
        vol(
            json!({"name": "b", "projected": {"sources": [{"secret": {"name": "s2"}}, {"configMap": {"name": "c1"}}]}}),
        ),
    ]);
    assert_eq!(
        secrets,
        BTreeSet::from(["s1".to_string(), "s2".to_string()])
    );
    assert_eq!(cms, BTreeSet::from(["c1".to_string()]));
}

#[test]
fn materialize_writes_files_with_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = plan_volume(
        &pod(),
        &vol(json!({"name": "c", "secret": {"secretName": "creds", "items": [{"key": "password", "path": "../../escape/pw", "mode": 0o400}]}})),
        &sources(),
    )
    .unwrap();
    let dir = materialize(&plan, "c", &tmp.path().join("volumes"), tmp.path()).unwrap();
    let file = dir.join("escape/pw");
    assert!(
        file.starts_with(tmp.path().join("volumes")),
        "paths cannot escape the volume"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"pw");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
        0o400
    );
    let d = materialize(
        &VolumePlan::EmptyDir,
        "scratch",
        &tmp.path().join("volumes"),
        tmp.path(),
    )
    .unwrap();
    assert_eq!(
        std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
        0o777
    );
    let d = materialize(
        &VolumePlan::Persistent("pvc/shop/b".into()),
        "v",
        &tmp.path().join("volumes"),
        tmp.path(),
    )
    .unwrap();
    assert_eq!(d, tmp.path().join("volumes/pvc/shop/b"));
}

#[test]
fn ip_pool_hands_out_unique_addresses_and_recycles() {
    let mut pool = IpPool::new(9);
    let a = pool.allocate().unwrap();
    let b = pool.allocate().unwrap();
    assert_eq!(a, Ipv4Addr::new(127, 9, 0, 1));
    assert_eq!(b, Ipv4Addr::new(127, 9, 0, 2));
    pool.release(a);
    assert_eq!(pool.in_use(), 1);
    assert_eq!(pool.allocate().unwrap(), a, "released addresses are reused");
    let mut seen = BTreeSet::new();
    let mut pool = IpPool::new(9);
    while let Some(ip) = pool.allocate() {
        let [_, _, _, y] = ip.octets();
        assert!(y != 0 && y != 255, "no network/broadcast-looking addresses");
        assert!(seen.insert(ip));
    }
    assert_eq!(seen.len(), 256 * 254);
    // The 127.0.0.0/24 block (the host's 127.0.0.1) is never handed out.
    let mut pool = IpPool::new(0);
    assert_eq!(pool.allocate().unwrap(), Ipv4Addr::new(127, 0, 1, 1));
}

#[test]
fn ip_prefix_claims_are_exclusive() {
    let a = IpPrefix::claim().unwrap();
    let b = IpPrefix::claim().unwrap();
    assert_ne!(a.octet(), b.octet());
    assert!((1..=254).contains(&a.octet()));
    let released = a.octet();
    drop(a);
    // The dropped claim is free again (another process may take it meanwhile, so only check
    // that claiming still works and never returns b's prefix).
    let c = IpPrefix::claim().unwrap();
    assert_ne!(c.octet(), b.octet());
    let _ = released;
}
