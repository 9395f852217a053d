//! `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` through a real forward proxy on loopback
//! (`testkit::ForwardProxy`: `CONNECT` tunnels and absolute-form requests, Basic credentials):
//!
//! - the agent (the real binary) backs up to an HTTPS S3 server (moto with a test CA) through
//!   a `CONNECT` tunnel, directly when the endpoint is in `NO_PROXY`, and never shows the proxy
//!   credentials;
//! - the operator's S3 client (storage probes, artifact checks, retention) sends plain-HTTP
//!   requests to the proxy in absolute form, and directly for `NO_PROXY` hosts;
//! - through a proxy, the egress policy still judges the destination: a refused endpoint never
//!   reaches the proxy.
//!
//! The notification webhook client's proxy tests live with it (`src/notify/deliver.rs`).

mod agent_common;

use agent_common::*;
use aws_sdk_s3::config::Credentials;
use dataguardian::api::backup_storage::S3Storage;
use dataguardian::controller::common::storage_access::StorageAccess;
use dataguardian::egress::{EgressPolicy, ProxyConfig};
use testkit::{ForwardProxy, Moto, Postgres, TestCertificates};

const PROXY_USER: &str = "backup-agent";
const PROXY_PASSWORD: &str = "pr0xy-pa55word";

#[test]
fn the_agent_reaches_https_s3_through_a_connect_tunnel_and_directly_for_no_proxy() {
    let certs = TestCertificates::generate().unwrap();
    let moto = Moto::builder().tls(&certs).start().unwrap();
    moto.create_bucket("backups").unwrap();
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg.psql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 500) g;",
    )
    .unwrap();
    let proxy = ForwardProxy::with_credentials(PROXY_USER, PROXY_PASSWORD).unwrap();
    let endpoint = moto.endpoint();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let target = endpoint.trim_start_matches("https://").to_string();
    let uri = pg.uri("shop");
    let ca = certs.ca().display().to_string();
    let proxy_url = proxy.url_with_credentials(PROXY_USER, PROXY_PASSWORD);
    let backup = |run_id: &str, extra: &[(&str, &str)]| {
        let mut env = s3_env();
        env.extend([
            ("DG_URI", uri.as_str()),
            ("DG_S3_ENDPOINT", endpoint.as_str()),
            ("DG_S3_PATH_STYLE", "true"),
            ("SSL_CERT_FILE", ca.as_str()),
        ]);
        env.extend_from_slice(extra);
        run_agent(
            &[
                "backup",
                "--engine",
                "postgres",
                "--to",
                "s3://backups/shop",
                "--run-id",
                run_id,
                "--compression",
                "none",
            ],
            &env,
        )
    };

    // Through the proxy: every connection is a CONNECT tunnel to the endpoint, with the
    // credentials; TLS (and the certificate check) is end to end with moto.
    let run = backup("via-proxy", &[("HTTPS_PROXY", &proxy_url)]);
    run.assert_ok();
    run.assert_no_secret(PROXY_PASSWORD);
    let seen = proxy.requests();
    assert!(!seen.is_empty(), "nothing went through the proxy");
    let expected_auth = proxy_basic(PROXY_USER, PROXY_PASSWORD);
    for r in &seen {
        assert_eq!(r.method, "CONNECT", "{seen:?}");
        assert_eq!(r.target, target, "{seen:?}");
        assert_eq!(
            r.proxy_authorization.as_deref(),
            Some(expected_auth.as_str())
        );
        assert!(r.forwarded);
    }
    assert!(
        moto.get_object("backups", "shop/via-proxy/manifest.json")
            .is_ok(),
        "the backup is in the bucket"
    );

    // The endpoint in NO_PROXY (as an IP, a CIDR or `*`): straight to it.
    for (i, no_proxy) in ["127.0.0.1", "127.0.0.0/8", "*"].into_iter().enumerate() {
        let before = proxy.requests().len();
        let run = backup(
            &format!("direct-{i}"),
            &[("https_proxy", &proxy_url), ("no_proxy", no_proxy)],
        );
        run.assert_ok();
        assert_eq!(proxy.requests().len(), before, "NO_PROXY={no_proxy}");
    }

    // Wrong credentials: the proxy refuses (407); the error does not show them.
    let before = proxy.requests().len();
    let wrong = proxy.url_with_credentials(PROXY_USER, "wr0ng-pa55");
    let run = backup("refused-by-proxy", &[("HTTPS_PROXY", &wrong)]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    run.assert_no_secret("wr0ng-pa55");
    assert!(proxy.requests().len() > before);
    assert!(proxy.requests()[before..].iter().all(|r| !r.forwarded));

    // The destination is still judged by the egress policy: with no internal range allowed,
    // the loopback endpoint is refused before anything reaches the proxy.
    let before = proxy.requests().len();
    let run = backup(
        "refused-by-policy",
        &[("HTTPS_PROXY", &proxy_url), ("DG_EGRESS_ALLOW_CIDRS", "")],
    );
    assert_ne!(run.code, 0);
    assert!(
        run.error().contains("egress policy refused"),
        "{}",
        run.error()
    );
    assert_eq!(
        proxy.requests().len(),
        before,
        "a refused endpoint reached the proxy"
    );

    // A proxy the agent cannot speak to is refused at start, credentials masked.
    let out = agent_command()
        .args([
            "agent",
            "backup",
            "--engine",
            "postgres",
            "--to",
            "s3://backups/x",
        ])
        .env(
            "HTTPS_PROXY",
            format!("socks5://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:1080"),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("HTTPS_PROXY=socks5://***@127.0.0.1:1080"),
        "{stderr}"
    );
    assert!(stderr.contains("only HTTP proxies"), "{stderr}");
    assert!(!stderr.contains(PROXY_PASSWORD), "{stderr}");
}

fn proxy_basic(user: &str, password: &str) -> String {
    // The header value hyper-util's matcher builds; checked against the proxy's own encoder
    // by the exact value it received.
    let m = ProxyConfig::new(None, Some(&format!("http://{user}:{password}@p:1")), "").unwrap();
    match m.route(&"https://x/".parse().unwrap()) {
        dataguardian::egress::proxy::Route::Proxy {
            authorization: Some(a),
            ..
        } => a.to_str().unwrap().to_string(),
        other => panic!("{other:?}"),
    }
}

fn storage(endpoint: &str) -> S3Storage {
    serde_json::from_value(serde_json::json!({
        "bucket": "tenant-bucket",
        "endpoint": endpoint,
        "forcePathStyle": true,
        "region": testkit::REGION,
    }))
    .unwrap()
}

fn creds() -> Option<Credentials> {
    Some(Credentials::new(
        testkit::ACCESS_KEY_ID,
        testkit::SECRET_ACCESS_KEY,
        None,
        None,
        "test",
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_s3_client_sends_absolute_form_requests_to_the_proxy() {
    let moto = Moto::start().unwrap();
    moto.create_bucket("tenant-bucket").unwrap();
    let proxy = ForwardProxy::with_credentials(PROXY_USER, PROXY_PASSWORD).unwrap();
    let endpoint = moto.endpoint();
    let through = |no_proxy: &str| {
        EgressPolicy::from_list("127.0.0.0/8").unwrap().with_proxy(
            ProxyConfig::new(
                Some(&proxy.url_with_credentials(PROXY_USER, PROXY_PASSWORD)),
                None,
                no_proxy,
            )
            .unwrap(),
        )
    };

    // A storage probe's write/read/delete, through the proxy.
    let access = StorageAccess::connect(&storage(&endpoint), creds(), &through("")).await;
    access.put("probe", b"hello".to_vec()).await.unwrap();
    assert_eq!(access.get("probe", 1024).await.unwrap(), b"hello");
    let seen = proxy.requests();
    let expected_auth = proxy_basic(PROXY_USER, PROXY_PASSWORD);
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(
        seen.iter().any(|r| r.method == "PUT"
            && r.target
                .starts_with(&format!("{endpoint}/tenant-bucket/probe?"))),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|r| r.method == "GET"
            && r.target
                .starts_with(&format!("{endpoint}/tenant-bucket/probe"))),
        "{seen:?}"
    );
    for r in &seen {
        assert_eq!(
            r.proxy_authorization.as_deref(),
            Some(expected_auth.as_str())
        );
        assert!(r.forwarded);
    }

    // NO_PROXY names the endpoint (its address, or a range holding it): direct.
    for (endpoint, no_proxy) in [
        (endpoint.clone(), "127.0.0.1"),
        (endpoint.clone(), "example.com, 127.0.0.0/8"),
    ] {
        let before = proxy.requests().len();
        let access = StorageAccess::connect(&storage(&endpoint), creds(), &through(no_proxy)).await;
        access.put("direct", b"x".to_vec()).await.unwrap();
        assert_eq!(
            proxy.requests().len(),
            before,
            "{endpoint} with NO_PROXY={no_proxy}"
        );
    }

    // A destination the egress policy refuses never reaches the proxy, whose own (loopback)
    // address is not judged.
    let before = proxy.requests().len();
    for refused in ["http://10.0.0.1:9000", "http://169.254.169.254"] {
        let access = StorageAccess::connect(&storage(refused), creds(), &through("")).await;
        let err = access.get("x", 10).await.unwrap_err().to_string();
        assert!(err.contains("egress policy refused"), "{refused}: {err}");
        assert!(!err.contains(PROXY_PASSWORD), "{err}");
    }
    assert_eq!(proxy.requests().len(), before);
}
