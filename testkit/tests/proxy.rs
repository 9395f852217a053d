//! The fault-injecting proxy, against a plain echo server and against moto S3.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use testkit::{FaultPlan, FaultyProxy, Moto, port_is_closed, s3_client};

/// A one-connection-at-a-time echo server on loopback; returns its address.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `len` bytes through `addr` and returns how many came back before the
/// connection ended.
fn echo_through(addr: SocketAddr, len: usize) -> usize {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let data = vec![7u8; len];
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for piece in data.chunks(1000) {
            if writer.write_all(piece).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    let mut received = 0;
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    let _ = sender.join();
    received
}

#[test]
fn pass_through_and_byte_cuts_on_raw_tcp() {
    let upstream = echo_server();
    let proxy = FaultyProxy::start(upstream, FaultPlan::PassThrough).unwrap();
    assert_eq!(echo_through(proxy.addr(), 20_000), 20_000);

    proxy.set_plan(FaultPlan::CutEachConnectionAfterBytes(5_000));
    let got = echo_through(proxy.addr(), 20_000);
    assert!(got <= 5_000, "received {got} bytes past a 5000-byte cut");
    assert_eq!(proxy.stats().cuts, 1);
    // Every connection is cut again.
    assert!(echo_through(proxy.addr(), 20_000) <= 5_000);
    assert_eq!(proxy.stats().cuts, 2);

    proxy.set_plan(FaultPlan::RefuseAll);
    assert_eq!(echo_through(proxy.addr(), 100), 0);
    assert!(proxy.stats().refused >= 1);

    let addr = proxy.addr();
    drop(proxy);
    assert!(port_is_closed(addr));
}

#[test]
fn permanent_and_one_shot_byte_faults() {
    let upstream = echo_server();
    let proxy = FaultyProxy::start(upstream, FaultPlan::CutOnceAfterBytes(3_000)).unwrap();
    assert!(echo_through(proxy.addr(), 10_000) <= 3_000);
    // The one-shot fault has fired: the next connection passes.
    assert_eq!(echo_through(proxy.addr(), 10_000), 10_000);

    proxy.set_plan(FaultPlan::CutAfterBytes(3_000));
    assert!(echo_through(proxy.addr(), 10_000) <= 3_000);
    // The storage is gone for good.
    assert_eq!(echo_through(proxy.addr(), 10), 0);
    assert_eq!(proxy.stats().cuts, 2);
}

#[test]
fn s3_uploads_through_the_proxy_fail_and_retry_as_planned() {
    let moto = Moto::start().expect("start moto");
    moto.create_bucket("bkt").unwrap();
    let proxy = FaultyProxy::start(moto.addr(), FaultPlan::PassThrough).unwrap();
    let client = s3_client(&proxy.endpoint());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = vec![42u8; 1 << 20];
    let put = |key: &str| -> Result<(), String> {
        rt.block_on(
            client
                .put_object()
                .bucket("bkt")
                .key(key)
                .body(body.clone().into())
                .send(),
        )
        .map(|_| ())
        .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())
    };

    put("ok").expect("upload through a healthy proxy");
    assert_eq!(moto.get_object("bkt", "ok").unwrap().len(), 1 << 20);
    assert_eq!(proxy.stats().requests, 1);

    // A transient cut half-way through the body: the SDK's retry succeeds.
    proxy.set_plan(FaultPlan::CutOnceAfterBytes(512 * 1024));
    put("retried").expect("retry after a transient cut");
    assert_eq!(proxy.stats().cuts, 1);
    assert_eq!(moto.get_object("bkt", "retried").unwrap().len(), 1 << 20);

    // The storage dies mid-upload and stays dead: the upload fails, nothing is stored.
    proxy.set_plan(FaultPlan::CutAfterBytes(512 * 1024));
    assert!(put("lost").is_err(), "upload to a dead storage succeeded");
    assert!(moto.list_keys("bkt", "lost").unwrap().is_empty());

    // Exactly the second request is cut; its retry passes.
    proxy.set_plan(FaultPlan::CutRequest(2));
    let before = proxy.stats();
    put("first").unwrap();
    put("second").unwrap();
    let after = proxy.stats();
    assert_eq!(after.cuts - before.cuts, 1);
    assert!(after.requests - before.requests >= 3, "{after:?}");

    // After one request everything is refused.
    proxy.set_plan(FaultPlan::CutAfterRequests(1));
    put("one").unwrap();
    assert!(put("two").is_err());
    assert_eq!(
        moto.list_keys("bkt", "").unwrap(),
        vec!["first", "ok", "one", "retried", "second"]
    );
}

#[test]
fn stall_holds_bytes_until_the_plan_changes() {
    let upstream = echo_server();
    let proxy = FaultyProxy::start(upstream, FaultPlan::StallAfterBytes(3_000)).unwrap();
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    stream.write_all(&[1u8; 10_000]).unwrap();
    let mut received = 0;
    let mut buf = [0u8; 16_384];
    // While stalled, at most the first 3000 bytes make the round trip and nothing closes.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => panic!("a stall must not close the connection"),
            Ok(n) => received += n,
            Err(_) => {}
        }
    }
    assert!(received <= 3_000, "{received} bytes passed a stall at 3000");
    assert_eq!(proxy.stats().cuts, 0);

    // The network recovers: the held bytes arrive.
    proxy.set_plan(FaultPlan::PassThrough);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while received < 10_000 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    assert_eq!(received, 10_000);
}

#[test]
fn s3_downloads_fail_mid_body_and_recover() {
    let moto = Moto::start().expect("start moto");
    moto.create_bucket("bkt").unwrap();
    let body: Vec<u8> = (0..(1u32 << 18)).flat_map(|i| i.to_le_bytes()).collect();
    moto.put_object("bkt", "artifact", body.clone()).unwrap();
    let proxy = FaultyProxy::start(
        moto.addr(),
        FaultPlan::CutDownloadOnceAfterBytes(256 * 1024),
    )
    .unwrap();
    let client = s3_client(&proxy.endpoint());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let get = || -> Result<Vec<u8>, String> {
        rt.block_on(async {
            let out = client
                .get_object()
                .bucket("bkt")
                .key("artifact")
                .send()
                .await
                .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())?;
            let bytes = out.body.collect().await.map_err(|e| e.to_string())?;
            Ok(bytes.to_vec())
        })
    };
    assert!(get().is_err(), "a download cut mid-body must fail");
    assert_eq!(proxy.stats().cuts, 1);
    assert_eq!(get().unwrap(), body, "the one-shot fault has passed");

    proxy.set_plan(FaultPlan::CutDownloadAfterBytes(100));
    assert!(get().is_err());
    assert!(get().is_err(), "a permanent download fault keeps failing");
}
