//! Starts real MariaDB servers and checks they are usable and gone after drop.

use std::time::Duration;

use testkit::{MariaDb, pid_alive, port_is_closed, wait_group_gone};

#[test]
fn mariadb_runs_queries_and_is_gone_after_drop() {
    let db = MariaDb::start().expect("start mariadb");
    assert_eq!(db.host(), "127.0.0.1");
    assert_eq!(
        db.uri("shop"),
        format!(
            "mysql://{}:{}@127.0.0.1:{}/shop",
            db.user(),
            db.password(),
            db.port()
        )
    );
    db.create_database("shop").expect("create database");
    db.sql(
        "shop",
        "CREATE TABLE orders (id INT PRIMARY KEY, note TEXT);
         INSERT INTO orders VALUES (1, 'a'), (2, 'b'), (3, 'c');",
    )
    .expect("create table");
    assert_eq!(db.sql("shop", "SELECT count(*) FROM orders").unwrap(), "3");
    assert_eq!(
        db.sql(
            "shop",
            "SELECT id, note FROM orders WHERE id < 3 ORDER BY id"
        )
        .unwrap(),
        "1\ta\n2\tb"
    );
    assert!(db.sql("", "SELECT VERSION()").unwrap().contains("MariaDB"));

    let pid = db.pid().expect("running");
    let addr = db.addr();
    let dir = db.dir().to_path_buf();
    assert!(
        !dir.join("init.sql").exists(),
        "init file with the password left behind"
    );
    drop(db);
    assert!(!pid_alive(pid), "mariadbd {pid} still alive");
    assert!(wait_group_gone(pid, Duration::from_secs(5)));
    assert!(port_is_closed(addr));
    assert!(!dir.exists(), "{} not removed", dir.display());
}

#[test]
fn sql_errors_fail_the_call_and_wrong_passwords_are_refused() {
    let db = MariaDb::start().expect("start mariadb");
    let err = db
        .sql("", "SELECT 1; SELECT * FROM mysql.no_such_table; SELECT 2;")
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no_such_table"), "{text}");
    assert!(!text.contains(db.password()), "{text}");

    let out = std::process::Command::new("mariadb")
        .args(["--no-defaults", "--protocol=TCP", "-h"])
        .arg(db.host())
        .arg(format!("--port={}", db.port()))
        .arg(format!("--user={}", db.user()))
        .env("MYSQL_PWD", "wrong")
        .args(["-e", "SELECT 1"])
        .output()
        .expect("run mariadb");
    assert!(!out.status.success(), "wrong password accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Access denied"));
}

#[test]
fn mariadb_listens_on_a_pod_ip_and_can_be_killed() {
    let mut db = MariaDb::builder()
        .listen("127.0.4.9")
        .start()
        .expect("start mariadb on 127.0.4.9");
    assert!(db.uri("x").contains("@127.0.4.9:"));
    db.create_database("x").unwrap();
    db.kill();
    assert!(!db.is_running());
    assert!(port_is_closed(db.addr()));
    assert!(db.sql("", "SELECT 1").is_err());
}

#[test]
fn mariadb_restarts_with_its_data() {
    let mut db = MariaDb::start().expect("start mariadb");
    db.create_database("keep").unwrap();
    db.sql(
        "keep",
        "CREATE TABLE t (x INT); INSERT INTO t VALUES (1), (2);",
    )
    .unwrap();
    db.kill();
    db.restart().expect("restart after kill");
    assert_eq!(db.sql("keep", "SELECT count(*) FROM t").unwrap(), "2");
    assert!(!db.dir().join("init.sql").exists());
}
