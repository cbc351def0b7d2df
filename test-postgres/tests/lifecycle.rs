//! The cluster serves databases while the process lives, and is stopped and removed when the
//! process exits. The exit is observed from outside: the test runs itself again as a child
//! process that starts a cluster, reports it and exits.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Set in the child: start a cluster, print its PID and directory, exit.
const CHILD: &str = "TEST_POSTGRES_LIFECYCLE_CHILD";

#[test]
fn child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let cluster = test_postgres::cluster().expect("not skipped in the child");
    let first = cluster.create_database();
    assert_ne!(first, cluster.create_database(), "every database is new");
    // On a line of its own: the harness has written "test child ... " without a newline.
    println!("\ncluster {} {}", cluster.pid(), cluster.socket_dir().display());
}

#[test]
fn the_cluster_is_removed_when_the_process_exits() {
    if std::env::var(test_postgres::SKIP_VARIABLE).as_deref() == Ok("skip") {
        return;
    }
    let out = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("running the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find_map(|l| l.strip_prefix("cluster ")).expect("the child reports its cluster");
    let (pid, dir) = line.split_once(' ').expect("pid and directory");
    let (proc_entry, dir) = (PathBuf::from(format!("/proc/{pid}")), PathBuf::from(dir));
    let deadline = Instant::now() + Duration::from_secs(20);
    while proc_entry.exists() || dir.exists() {
        assert!(Instant::now() < deadline, "postgres {pid} or {} is still there 20 s after the exit", dir.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}
