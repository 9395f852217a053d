//! Starts real moto S3 servers and checks put/get, Object Lock and cleanup.

use std::time::Duration;

use aws_sdk_s3::types::ObjectLockMode;
use testkit::{Moto, pid_alive, port_is_closed, wait_group_gone};

#[test]
fn moto_puts_and_gets_objects_and_is_gone_after_drop() {
    let moto = Moto::start().expect("start moto");
    assert_eq!(moto.endpoint(), format!("http://127.0.0.1:{}", moto.port()));
    moto.create_bucket("backups").expect("create bucket");
    assert_eq!(moto.list_buckets().unwrap(), vec!["backups".to_owned()]);
    let body: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    moto.put_object("backups", "shop/a.bin", body.clone())
        .unwrap();
    moto.put_object("backups", "shop/b.bin", b"b".to_vec())
        .unwrap();
    moto.put_object("backups", "other/c.bin", b"c".to_vec())
        .unwrap();
    assert_eq!(moto.get_object("backups", "shop/a.bin").unwrap(), body);
    assert_eq!(
        moto.list_keys("backups", "shop/").unwrap(),
        vec!["shop/a.bin".to_owned(), "shop/b.bin".to_owned()]
    );
    let err = moto.get_object("backups", "missing").unwrap_err();
    assert!(err.to_string().contains("NoSuchKey"), "{err}");

    let pid = moto.pid();
    let addr = moto.addr();
    drop(moto);
    assert!(!pid_alive(pid));
    assert!(wait_group_gone(pid, Duration::from_secs(5)));
    assert!(port_is_closed(addr));
}

#[tokio::test]
async fn object_lock_buckets_enforce_retention_through_the_async_client() {
    let moto = Moto::start().expect("start moto");
    moto.create_bucket_with_object_lock("worm").unwrap();
    let client = moto.s3_client();
    let config = client
        .get_object_lock_configuration()
        .bucket("worm")
        .send()
        .await
        .expect("object lock configuration");
    assert!(config.object_lock_configuration().is_some());

    let until = aws_sdk_s3::primitives::DateTime::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 86_400,
    );
    let put = client
        .put_object()
        .bucket("worm")
        .key("locked")
        .body(b"data".to_vec().into())
        .object_lock_mode(ObjectLockMode::Compliance)
        .object_lock_retain_until_date(until)
        .send()
        .await
        .expect("locked put");
    let version = put.version_id().expect("versioned").to_owned();
    let head = client
        .head_object()
        .bucket("worm")
        .key("locked")
        .send()
        .await
        .expect("head");
    assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Compliance));
    let delete = client
        .delete_object()
        .bucket("worm")
        .key("locked")
        .version_id(version)
        .send()
        .await;
    assert!(delete.is_err(), "deleting a locked version must fail");
}

#[test]
fn moto_listens_on_a_pod_ip_and_can_be_killed() {
    let mut moto = Moto::builder()
        .listen("127.0.5.2")
        .start()
        .expect("start moto on 127.0.5.2");
    assert!(moto.endpoint().starts_with("http://127.0.5.2:"));
    moto.create_bucket("bkt").unwrap();
    moto.kill();
    assert!(!moto.is_running());
    assert!(port_is_closed(moto.addr()));
    assert!(moto.create_bucket("ckt").is_err());
}

#[test]
fn a_taken_fixed_port_is_a_clear_startup_error() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let err = Moto::builder().port(port).start().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("moto_server failed to start"), "{text}");
    assert!(text.contains("Address already in use"), "{text}");
}
