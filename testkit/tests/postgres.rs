//! Starts real PostgreSQL 15 servers and checks they are usable and gone after drop.

use std::time::Duration;

use testkit::{Postgres, pid_alive, port_is_closed, wait_group_gone};

#[test]
fn postgres_runs_queries_and_is_gone_after_drop() {
    let pg = Postgres::start().expect("start postgres");
    assert_eq!(pg.host(), "127.0.0.1");
    assert_eq!(pg.user(), "postgres");
    assert!(pg.password().len() >= 20);
    assert_eq!(
        pg.uri("shop"),
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/shop",
            pg.password(),
            pg.port()
        )
    );

    pg.create_database("shop").expect("create database");
    pg.psql(
        "shop",
        "CREATE TABLE orders (id int primary key, note text);
         INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 50) g;",
    )
    .expect("create table");
    assert_eq!(
        pg.psql("shop", "SELECT count(*) FROM orders").unwrap(),
        "50"
    );
    assert_eq!(
        pg.psql(
            "shop",
            "SELECT id, note FROM orders WHERE id <= 2 ORDER BY id"
        )
        .unwrap(),
        "1|n1\n2|n2"
    );
    assert!(
        pg.psql("shop", "SHOW server_version")
            .unwrap()
            .starts_with("15."),
        "PostgreSQL 15 expected"
    );

    let pid = pg.pid().expect("running");
    let addr = pg.addr();
    let dir = pg.dir().to_path_buf();
    assert!(dir.join("data/PG_VERSION").exists());
    drop(pg);
    assert!(!pid_alive(pid), "postmaster {pid} still alive");
    assert!(
        wait_group_gone(pid, Duration::from_secs(5)),
        "backends survived"
    );
    assert!(port_is_closed(addr), "{addr} still accepts connections");
    assert!(!dir.exists(), "{} not removed", dir.display());
}

#[test]
fn psql_errors_fail_the_call_and_do_not_leak_the_password() {
    let pg = Postgres::start().expect("start postgres");
    let err = pg
        .psql(
            "postgres",
            "SELECT 1; SELECT * FROM no_such_table; SELECT 2;",
        )
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no_such_table"), "{text}");
    assert!(
        !text.contains(pg.password()),
        "password leaked into error: {text}"
    );
    assert!(pg.psql("no_such_db", "SELECT 1").is_err());
}

#[test]
fn tcp_requires_the_password() {
    let pg = Postgres::start().expect("start postgres");
    let mut cmd = pg.client_command("psql");
    cmd.env("PGPASSWORD", "wrong-password")
        .args(["-X", "-t", "-A", "-d", "postgres", "-c", "SELECT 1"]);
    let out = cmd.output().expect("run psql");
    assert!(!out.status.success(), "wrong password accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
}

#[test]
fn postgres_listens_on_a_pod_ip() {
    let pg = Postgres::builder()
        .listen("127.0.3.7")
        .start()
        .expect("start postgres on 127.0.3.7");
    assert_eq!(pg.host(), "127.0.3.7");
    assert!(pg.uri("postgres").contains("@127.0.3.7:"));
    assert_eq!(
        pg.psql("postgres", "SELECT inet_server_addr()").unwrap(),
        "127.0.3.7"
    );
    // Nothing listens on 127.0.0.1 at that port.
    assert!(port_is_closed(std::net::SocketAddr::new(
        testkit::LOCALHOST.into(),
        pg.port()
    )));
}

#[test]
fn kill_cuts_off_open_sessions_and_stop_is_clean() {
    let mut pg = Postgres::start().expect("start postgres");
    // A long-running session, like pg_dump streaming a big table.
    let mut cmd = pg.client_command("psql");
    cmd.args(["-X", "-d", "postgres", "-c", "SELECT pg_sleep(60)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut session = cmd.spawn().expect("spawn psql");
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    pg.kill();
    let status = session.wait().expect("wait psql");
    assert!(!status.success(), "session survived the kill");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!pg.is_running());
    assert!(port_is_closed(pg.addr()));

    let mut pg2 = Postgres::start().expect("start second postgres");
    pg2.stop();
    assert!(!pg2.is_running());
    assert!(
        !pg2.data_dir().join("postmaster.pid").exists(),
        "clean shutdown removes postmaster.pid"
    );
}

#[test]
fn missing_binaries_are_reported_with_an_install_hint() {
    let err = Postgres::builder()
        .bin_dir("/nonexistent/pg/bin")
        .start()
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("initdb"), "{text}");
    assert!(text.contains("apt-get install postgresql-15"), "{text}");
}

#[test]
fn postgres_restarts_with_its_data_after_stop_and_kill() {
    let mut pg = Postgres::start().expect("start postgres");
    pg.psql(
        "postgres",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2);",
    )
    .unwrap();
    let port = pg.port();
    pg.stop();
    assert!(pg.psql("postgres", "SELECT 1").is_err());
    pg.restart().expect("restart after stop");
    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t").unwrap(), "2");
    pg.psql("postgres", "INSERT INTO t VALUES (3);").unwrap();
    pg.kill();
    pg.restart().expect("restart after kill (crash recovery)");
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t").unwrap(), "3");
}

#[test]
fn a_panicking_test_still_stops_its_server() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let pg = Postgres::start().expect("start postgres");
        tx.send((pg.pid().unwrap(), pg.addr(), pg.dir().to_path_buf()))
            .unwrap();
        panic!("the test body fails while the server runs");
    })
    .join();
    assert!(outcome.is_err(), "the thread panicked");
    let (pid, addr, dir) = rx.recv().unwrap();
    assert!(!pid_alive(pid), "postmaster {pid} survived the panic");
    assert!(wait_group_gone(pid, Duration::from_secs(5)));
    assert!(port_is_closed(addr));
    assert!(!dir.exists(), "{} survived the panic", dir.display());
}

#[test]
fn a_taken_fixed_port_is_a_clear_startup_error() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let err = Postgres::builder().port(port).start().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("postgres failed to start"), "{text}");
    assert!(text.contains("Address already in use"), "{text}");
}
