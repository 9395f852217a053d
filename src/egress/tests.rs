use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn loopback_only() -> EgressPolicy {
    EgressPolicy::from_list("127.0.0.0/8").unwrap()
}

#[test]
fn cidrs_parse_print_and_contain() {
    let c: Cidr = "10.1.0.0/16".parse().unwrap();
    assert_eq!(c.to_string(), "10.1.0.0/16");
    assert!(c.contains(ip("10.1.255.3")));
    assert!(!c.contains(ip("10.2.0.1")));
    assert!(!c.contains(ip("::ffff:10.1.0.1")), "families never mix");
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(ip("8.8.8.8")));
    let v6: Cidr = "fd00::/8".parse().unwrap();
    assert!(v6.contains(ip("fd12::1")));
    assert!(!v6.contains(ip("fe80::1")));
    let host: Cidr = "::1/128".parse().unwrap();
    assert!(host.contains(ip("::1")));
    for bad in [
        "10.0.0.0",
        "10.0.0.0/33",
        "fd00::/129",
        "x/8",
        "10.0.0.0/-1",
        "",
    ] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad:?} accepted");
    }
    assert!(EgressPolicy::from_list("127.0.0.0/8, nope").is_err());
    let p = EgressPolicy::from_list(" 127.0.0.0/8 ,fd00::/8,").unwrap();
    assert_eq!(p.to_list(), "127.0.0.0/8,fd00::/8");
    assert_eq!(EgressPolicy::from_list(&p.to_list()).unwrap(), p);
    assert_eq!(
        EgressPolicy::from_list("").unwrap(),
        EgressPolicy::default()
    );
}

#[test]
fn addresses_are_classified() {
    use AddressClass::*;
    for (addr, class) in [
        ("169.254.169.254", LinkLocal),
        ("fe80::1", LinkLocal),
        ("::ffff:169.254.169.254", LinkLocal),
        ("64:ff9b::a9fe:a9fe", LinkLocal),
        ("2002:a9fe:a9fe::1", LinkLocal),
        ("0.0.0.0", Unspecified),
        ("::", Unspecified),
        ("224.0.0.1", Multicast),
        ("255.255.255.255", Multicast),
        ("ff02::1", Multicast),
        ("127.0.0.1", Loopback),
        ("127.5.6.7", Loopback),
        ("::1", Loopback),
        ("::ffff:127.0.0.1", Loopback),
        ("10.0.0.1", Private),
        ("172.16.0.1", Private),
        ("172.31.255.255", Private),
        ("192.168.1.1", Private),
        ("::ffff:10.0.0.1", Private),
        ("100.64.0.1", SharedAddressSpace),
        ("100.127.255.255", SharedAddressSpace),
        ("fd00::1", UniqueLocal),
        ("fc00::1", UniqueLocal),
        ("198.18.0.1", Reserved),
        ("240.0.0.1", Reserved),
        ("8.8.8.8", Public),
        ("172.32.0.1", Public),
        ("100.128.0.1", Public),
        ("52.216.0.1", Public),
        ("2600:1f18::1", Public),
    ] {
        assert_eq!(AddressClass::of(ip(addr)), class, "{addr}");
    }
}

#[test]
fn metadata_addresses_are_refused_even_when_allowed() {
    let everything = EgressPolicy::from_list("0.0.0.0/0,::/0").unwrap();
    for addr in [
        "169.254.169.254",
        "169.254.170.23",
        "fe80::a9fe:a9fe",
        "::ffff:169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",
    ] {
        let err = everything.check("meta", ip(addr)).unwrap_err();
        assert!(
            matches!(err, EgressError::AlwaysRefused { .. }),
            "{addr}: {err:?}"
        );
        assert!(err.to_string().contains("egress policy"), "{err}");
    }
}

#[test]
fn internal_addresses_need_an_allowed_range() {
    let none = EgressPolicy::default();
    let lo = loopback_only();
    for addr in [
        "127.0.0.1",
        "10.0.0.1",
        "192.168.0.10",
        "100.64.1.1",
        "fd00::1",
        "::1",
    ] {
        let err = none.check("h", ip(addr)).unwrap_err();
        assert!(matches!(err, EgressError::NotAllowed { .. }), "{addr}");
        assert!(err.to_string().contains("DG_EGRESS_ALLOW_CIDRS"), "{err}");
    }
    assert!(lo.check("h", ip("127.0.0.1")).is_ok());
    assert!(lo.check("h", ip("127.9.9.9")).is_ok());
    assert!(
        lo.check("h", ip("::ffff:127.0.0.1")).is_ok(),
        "mapped loopback"
    );
    for addr in ["10.0.0.1", "172.16.0.1", "::1", "fd00::1"] {
        assert!(
            lo.check("h", ip(addr)).is_err(),
            "{addr} passed a 127/8 policy"
        );
    }
    for addr in ["8.8.8.8", "2600:1f18::1"] {
        assert!(none.check("h", ip(addr)).is_ok(), "{addr}");
    }
}

#[test]
fn refusals_name_the_host_as_written_and_never_the_resolved_address() {
    let err = EgressPolicy::default()
        .check("minio.shop.svc", ip("10.96.4.7"))
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("minio.shop.svc"), "{text}");
    assert!(!text.contains("10.96.4.7"), "{text}");
}

#[tokio::test]
async fn names_are_checked_after_resolution() {
    // `localhost` resolves to loopback: a name does not hide the address it reaches.
    let err = EgressPolicy::default()
        .resolve("localhost")
        .await
        .unwrap_err();
    assert!(matches!(err, EgressError::NotAllowed { .. }), "{err:?}");
    let addrs = loopback_only().resolve("localhost").await;
    // Some hosts also map localhost to ::1, which a 127/8 policy refuses as a whole.
    match addrs {
        Ok(a) => assert!(a.iter().all(|ip| ip.is_loopback() && ip.is_ipv4())),
        Err(e) => assert!(matches!(e, EgressError::NotAllowed { .. }), "{e:?}"),
    }
    let err = EgressPolicy::default()
        .resolve("[fe80::1]")
        .await
        .unwrap_err();
    assert!(matches!(err, EgressError::AlwaysRefused { .. }));
    assert!(matches!(
        loopback_only().resolve("no-such-host.invalid").await,
        Err(EgressError::Unresolved { .. })
    ));
}
