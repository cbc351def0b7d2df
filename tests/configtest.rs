//! `headscale configtest` checks a configuration without writing anything: missing key files
//! and a missing database are reported as what `serve` will create, an existing database is
//! read (never migrated), and one written by a newer server is refused; so is a socket mode
//! that is not octal, which `serve` refuses too.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use sha2::Digest;

mod support;

fn configtest(config: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_headscale")).arg("-c").arg(config).arg("configtest").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Every file under `dir` with the SHA-256 of its contents.
fn files(dir: &Path) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(files(&path));
        } else {
            let digest = sha2::Sha256::digest(std::fs::read(&path).unwrap());
            all.insert(path.display().to_string(), hex::encode(digest));
        }
    }
    all
}

#[test]
fn configtest_on_a_fresh_setup_says_what_serve_will_create_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), support::free_port(), "");
    let (ok, stdout, stderr) = configtest(&config);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("noise.private_key_path") && stdout.contains("serve will generate it"), "{stdout}");
    assert!(stdout.contains("derp.server.private_key_path"), "{stdout}");
    assert!(stdout.contains("does not exist; serve will create it"), "{stdout}");
    assert!(stdout.ends_with("configuration is valid\n"), "{stdout}");
    assert_eq!(files(dir.path()).into_keys().collect::<Vec<_>>(), vec![config.display().to_string()]);
}

#[test]
fn configtest_reads_an_existing_database_and_keys_without_changing_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), support::free_port(), "");
    headscale::app::load_or_generate_key(&dir.path().join("noise_private.key")).unwrap();
    headscale::app::load_or_generate_key(&dir.path().join("derp_server_private.key")).unwrap();
    let db = headscale::db::Db::open(&dir.path().join("db/db.sqlite"), true, 1000).unwrap();
    drop(db);
    let before = files(dir.path());
    let (ok, stdout, stderr) = configtest(&config);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(stdout, "configuration is valid\n");
    assert_eq!(files(dir.path()), before, "configtest changed files");
}

#[test]
fn configtest_refuses_a_database_from_a_newer_server_and_a_bad_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), support::free_port(), "");
    std::fs::create_dir_all(dir.path().join("db")).unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("db/db.sqlite")).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    let (ok, _, stderr) = configtest(&config);
    assert!(!ok);
    assert!(stderr.contains("database schema version 999 is newer than this server knows"), "{stderr}");

    std::fs::remove_file(dir.path().join("db/db.sqlite")).unwrap();
    std::fs::write(dir.path().join("noise_private.key"), "not a key").unwrap();
    let (ok, _, stderr) = configtest(&config);
    assert!(!ok);
    assert!(stderr.contains("noise_private.key"), "{stderr}");
}

#[test]
fn configtest_and_serve_refuse_a_socket_mode_that_is_not_octal() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let config = support::write_config(dir.path(), port, "unix_socket_permission: \"0o7g0\"\n");
    let (ok, _, err) = configtest(&config);
    assert!(!ok && err.contains("invalid unix_socket_permission \"0o7g0\""), "{err}");
    let serve = Command::new(env!("CARGO_BIN_EXE_headscale")).arg("-c").arg(&config).arg("serve").output().unwrap();
    assert!(!serve.status.success());
    assert!(String::from_utf8_lossy(&serve.stderr).contains("unix_socket_permission"), "{serve:?}");
}
