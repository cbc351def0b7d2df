//! Taking over Headscale's own databases (`testdata/compat/headscale-db/`, real databases of
//! several releases): each converts in place with its rows compared one by one, is copied
//! beside itself first, is not converted twice, and a newer or older Headscale database is
//! refused with nothing changed; its bcrypt-hashed keys are rehashed on their first use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::Datelike;
use headscale::config::Config;
use headscale::db::{Db, DbError};
use headscale::model::KeyHash;
use headscale::state::{RegisterError, RegisterOutcome, State};
use headscale::tailcfg::MachineKey;
use headscale::testing::register_request;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/compat/headscale-db");

/// A SQLite database file made from the dump `name`.
fn database(dir: &Path, name: &str) -> PathBuf {
    let sql = std::fs::read_to_string(Path::new(FIXTURES).join(name)).unwrap();
    let path = dir.join(name.replace(".sql", ".sqlite"));
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(&sql).unwrap();
    path
}

/// Rows of `sql` on the original database, each as its columns' text.
fn rows(path: &Path, sql: &str) -> Vec<BTreeMap<String, String>> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut st = conn.prepare(sql).unwrap();
    let names: Vec<String> = st.column_names().iter().map(|n| n.to_string()).collect();
    st.query_map([], |r| {
        Ok(names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let v: rusqlite::types::Value = r.get(i).unwrap();
                let text = match v {
                    rusqlite::types::Value::Null => String::new(),
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Real(f) => f.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    rusqlite::types::Value::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
                };
                (n.clone(), text)
            })
            .collect())
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn dumps() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".sql") && n != "schema.sql")
        .collect();
    names.sort();
    names
}

#[test]
fn every_headscale_database_converts_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    for name in dumps() {
        let path = database(dir.path(), &name);
        let users = rows(&path, "SELECT * FROM users WHERE deleted_at IS NULL ORDER BY id");
        let nodes = rows(&path, "SELECT * FROM nodes ORDER BY id");
        // Only usable keys are kept: a plain-text key, or a prefix with its hash.
        let has = |row: &BTreeMap<String, String>, col: &str| row.get(col).is_some_and(|v| !v.is_empty());
        let keys: Vec<_> = rows(&path, "SELECT * FROM pre_auth_keys ORDER BY id")
            .into_iter()
            .filter(|k| has(k, "key") || (has(k, "prefix") && has(k, "hash")))
            .collect();
        let api_keys = rows(&path, "SELECT * FROM api_keys ORDER BY id");

        let db = Db::open(&path, true, 1000).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got_users = db.users().unwrap();
        assert_eq!(got_users.len(), users.len(), "{name}: users");
        for (want, got) in users.iter().zip(&got_users) {
            assert_eq!(want["id"], got.id.to_string(), "{name}");
            assert_eq!(want["name"], got.name, "{name}");
            assert_eq!(want["email"], got.email, "{name}");
        }
        let got_nodes = db.nodes().unwrap();
        assert_eq!(got_nodes.len(), nodes.len(), "{name}: nodes");
        for (want, got) in nodes.iter().zip(&got_nodes) {
            assert!(got.tags.is_empty() || got.user_id.is_none(), "{name}: tagged node {} has a user", got.id);
            assert_eq!(want["id"], got.id.to_string(), "{name}");
            assert_eq!(want["machine_key"], got.machine_key.to_string(), "{name}");
            assert_eq!(want["node_key"], got.node_key.to_string(), "{name}");
            assert_eq!(want["ipv4"], got.ipv4.map(|a| a.to_string()).unwrap_or_default(), "{name}");
            assert_eq!(want["ipv6"], got.ipv6.map(|a| a.to_string()).unwrap_or_default(), "{name}");
            assert_eq!(want["given_name"], got.given_name, "{name}");
            assert!(got.expiry.is_none_or(|e| e.year() > 1900), "{name}: zero expiry kept");
        }
        let got_keys = db.pre_auth_keys().unwrap();
        assert_eq!(got_keys.len(), keys.len(), "{name}: pre-auth keys");
        for (want, got) in keys.iter().zip(&got_keys) {
            assert_eq!(want["id"], got.id.to_string(), "{name}");
        }
        assert_eq!(db.api_keys().unwrap().len(), api_keys.len(), "{name}: API keys");
        drop(db);

        let backup = PathBuf::from(format!("{}.headscale-backup", path.display()));
        assert_eq!(rows(&backup, "SELECT * FROM nodes ORDER BY id"), nodes, "{name}: the copy holds the original");
        // Opened again, it is this server's database: nothing to convert, nothing copied.
        let again = Db::open(&path, true, 1000).unwrap();
        assert_eq!(again.nodes().unwrap(), got_nodes, "{name}");
        assert!(!PathBuf::from(format!("{}-2", backup.display())).exists());
    }
}

#[test]
fn users_are_recovered_as_headscale_recovers_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = database(dir.path(), "recover_null_tags_user_id_migration_test.sql");
    let db = Db::open(&path, true, 1000).unwrap();
    let owners: Vec<(u64, Option<u64>, usize)> =
        db.nodes().unwrap().iter().map(|n| (n.id, n.user_id, n.tags.len())).collect();
    // 1: from its pre-auth key (user 2); 2: tagged, no user; 3: CLI-registered, no key to
    // recover from; 4: kept.
    assert_eq!(owners, vec![(1, Some(2), 0), (2, None, 1), (3, None, 0), (4, Some(1), 0)]);
}

#[test]
fn requested_tags_are_granted_as_the_database_policy_allows() {
    let dir = tempfile::tempdir().unwrap();
    let path = database(dir.path(), "request_tags_migration_test.sql");
    let db = Db::open(&path, true, 1000).unwrap();
    let tags: Vec<(u64, Vec<String>)> = db.nodes().unwrap().into_iter().map(|n| (n.id, n.tags)).collect();
    let t = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        tags,
        vec![
            (1, t(&["tag:server"])),
            (2, t(&[])),
            (3, t(&["tag:client", "tag:existing"])),
            (4, t(&["tag:server"])),
            (5, t(&[])),
            (6, t(&["tag:admin"])),
            (7, t(&["tag:server"])),
        ],
        "owned requests granted, others refused, existing tags kept, no repeats"
    );
}

#[test]
fn legacy_and_bcrypt_keys_keep_working_after_the_takeover() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.sqlite");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        &std::fs::read_to_string(Path::new(FIXTURES).join("null_tags_user_id_migration_test.sql")).unwrap(),
    )
    .unwrap();
    let secret = "s".repeat(64);
    let hash = bcrypt::hash(&secret, 4).unwrap();
    conn.execute(
        "INSERT INTO pre_auth_keys (id, key, prefix, hash, user_id, reusable, ephemeral, used, tags, created_at, expiration)
         VALUES (90, '', 'abcdefghijkl', ?1, 1, 1, 0, 0, '[]', '2024-01-01 00:00:00+00:00', '2999-01-01 00:00:00+00:00')",
        [hash.as_bytes()],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO pre_auth_keys (id, key, user_id, reusable, ephemeral, used, created_at)
         VALUES (91, '0123456789abcdef0123456789abcdef', 1, 1, 0, 0, '2024-01-01 00:00:00+00:00')",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO api_keys (id, prefix, hash, created_at, expiration)
         VALUES (90, 'apiprefix123', ?1, '2024-01-01 00:00:00+00:00', '2999-01-01 00:00:00+00:00')",
        [hash.as_bytes()],
    )
    .unwrap();
    drop(conn);
    let db = Db::open(&path, true, 1000).unwrap();
    let keys = db.pre_auth_keys().unwrap();
    let modern = keys.iter().find(|k| k.id == 90).unwrap();
    assert_eq!(modern.prefix, "abcdefghijkl");
    assert!(modern.hash.is_bcrypt() && modern.hash.verify(&secret) && !modern.hash.verify("wrong"));
    let legacy = keys.iter().find(|k| k.id == 91).unwrap();
    assert_eq!(legacy.prefix, "legacy-91");
    assert!(legacy.hash.verify("0123456789abcdef0123456789abcdef") && !legacy.hash.verify("0123"));
    assert!(keys.iter().all(|k| k.id != 1), "a key row with neither hash nor plain key cannot be used");

    // The first use of a Headscale key pays its bcrypt check once: the SHA-256 of its secret
    // replaces the bcrypt hash, and the key keeps working.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = std::sync::Arc::new(Config::embedded(dir.path()));
        let state = State::load(config, Db::open(&path, true, 1000).unwrap()).await.unwrap();
        let auth_key = format!("hskey-auth-abcdefghijkl-{secret}");
        for machine in [1u8, 2] {
            let outcome =
                state.register(MachineKey([machine; 32]), register_request(machine, &auth_key)).await.unwrap();
            assert!(matches!(outcome, RegisterOutcome::Authorized(_)), "{outcome:?}");
        }
        let refused = state.register(MachineKey([3; 32]), register_request(3, "hskey-auth-abcdefghijkl-wrong")).await;
        assert!(matches!(refused, Err(RegisterError::InvalidKey)), "{refused:?}");
        let api_key = format!("hskey-api-apiprefix123-{secret}");
        state.authenticate_api_key(&api_key).await.unwrap();
        state.authenticate_api_key(&api_key).await.unwrap();
        assert!(state.authenticate_api_key("hskey-api-apiprefix123-wrong").await.is_err());
    });
    let db = Db::open(&path, true, 1000).unwrap();
    let rehashed = db.pre_auth_keys().unwrap().into_iter().find(|k| k.id == 90).unwrap().hash;
    assert_eq!(rehashed, KeyHash::of(&secret), "the pre-auth key is stored as a SHA-256 after its first use");
    let api = db.api_key(90).unwrap().unwrap().hash;
    assert_eq!(api, KeyHash::of(&secret), "the API key is stored as a SHA-256 after its first use");
}

#[test]
fn a_newer_headscale_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = database(dir.path(), "zero_time_expiry_migration_test.sql");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("INSERT INTO migrations VALUES ('209912311200-from-the-future')", [])
        .unwrap();
    let digest = |p: &Path| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(std::fs::read(p).unwrap()));
    let before = digest(&path);
    let err = Db::open(&path, true, 1000).err().expect("refused");
    assert!(matches!(&err, DbError::HeadscaleTooNew(id) if id == "209912311200-from-the-future"), "{err}");
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    assert_eq!(digest(&path), before, "the refused database changed");
}
