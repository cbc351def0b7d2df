//! The storage suite: every record's round trip, the one-shot key and deletion rules, the
//! schema version, and corrupt data, each on SQLite and on PostgreSQL; then what only the
//! PostgreSQL engine has: connection errors, the pool's limit, reconnection, unix sockets, and
//! taking over a Headscale database made on PostgreSQL.

use chrono::{Datelike, Duration};

use super::migrations::LATEST;
use super::sql::args;
use super::testing::{backend_pid, postgres_settings, postgres_with_deadline, signal, storage_tests};
use super::{ApiKey, Db, DbError};
use crate::model::PreAuthKey;
use crate::testing::{node, t0, user};

fn pre_auth_key(user_id: Option<u64>, prefix: &str) -> PreAuthKey {
    PreAuthKey {
        id: 0,
        prefix: prefix.into(),
        hash: crate::model::KeyHash::Sha256([3; 32]),
        user_id,
        reusable: false,
        ephemeral: true,
        used: false,
        tags: vec!["tag:a".into()],
        expiration: Some(t0() + Duration::hours(1)),
        created_at: t0(),
    }
}

storage_tests!(
    records_round_trip,
    one_shot_keys_are_used_once,
    deleting_a_user_takes_its_keys_and_keeps_its_nodes_working,
    duplicates_are_refused,
    api_keys_round_trip,
    the_newest_policy_is_in_force,
    the_schema_is_current_and_a_newer_one_is_refused,
    corrupt_values_are_reported_with_their_column,
);

async fn records_round_trip(db: Db) {
    let ann = db.insert_user(user(0, "ann")).unwrap();
    let bob = db.insert_user(user(0, "bob")).unwrap();
    assert_eq!((ann.id, bob.id), (1, 2));
    db.rename_user(bob.id, "robert").unwrap();
    let users = db.users().unwrap();
    assert_eq!(users, vec![ann.clone(), crate::model::User { name: "robert".into(), ..bob }]);

    let key = db.insert_pre_auth_key(pre_auth_key(Some(ann.id), "prefix1")).unwrap();
    db.set_pre_auth_key_expiration(key.id, t0()).unwrap();
    assert_eq!(db.pre_auth_keys().unwrap(), vec![PreAuthKey { expiration: Some(t0()), ..key.clone() }]);

    let mut n = node(1, Some(ann.id));
    n.auth_key_id = Some(key.id);
    n.expiry = Some(t0() + Duration::microseconds(1_234_567));
    n.approved_routes = vec!["10.0.0.0/24".parse().unwrap()];
    let stored = db.insert_node(n.clone(), None).unwrap().expect("stored");
    assert_eq!(stored.id, 1);
    let tagged = db.insert_node(node(2, None), None).unwrap().expect("stored");
    assert_eq!(db.nodes().unwrap(), vec![stored.clone(), tagged.clone()]);

    let moved = crate::model::Node { hostname: "renamed".into(), endpoints: Vec::new(), disco_key: None, ..stored };
    db.update_node(&moved).unwrap();
    assert_eq!(db.nodes().unwrap(), vec![moved, tagged.clone()]);
    db.delete_node(1).unwrap();
    assert_eq!(db.nodes().unwrap(), vec![tagged]);
}

async fn one_shot_keys_are_used_once(db: Db) {
    let ann = db.insert_user(user(0, "ann")).unwrap();
    let key = db.insert_pre_auth_key(pre_auth_key(Some(ann.id), "oneshot")).unwrap();
    let first = db.insert_node(node(1, Some(ann.id)), Some(key.id)).unwrap();
    assert!(first.is_some());
    assert_eq!(db.insert_node(node(2, Some(ann.id)), Some(key.id)).unwrap(), None, "the key is spent");
    assert_eq!(db.nodes().unwrap().len(), 1, "the refused node was not stored");
    assert!(!db.mark_pre_auth_key_used(key.id).unwrap());

    let other = db.insert_pre_auth_key(pre_auth_key(Some(ann.id), "another")).unwrap();
    let renamed = crate::model::Node { hostname: "again".into(), ..first.unwrap() };
    assert!(db.update_node_consuming_key(&renamed, other.id).unwrap());
    assert!(!db
        .update_node_consuming_key(&crate::model::Node { hostname: "twice".into(), ..renamed }, other.id)
        .unwrap());
    assert_eq!(db.nodes().unwrap()[0].hostname, "again", "the refused update changed nothing");
    assert!(db.pre_auth_keys().unwrap().iter().all(|k| k.used));
}

async fn deleting_a_user_takes_its_keys_and_keeps_its_nodes_working(db: Db) {
    let ann = db.insert_user(user(0, "ann")).unwrap();
    let key = db.insert_pre_auth_key(pre_auth_key(Some(ann.id), "annkey")).unwrap();
    let mut n = node(1, None);
    n.auth_key_id = Some(key.id);
    db.insert_node(n, None).unwrap();
    db.delete_user(ann.id).unwrap();
    assert!(db.users().unwrap().is_empty());
    assert!(db.pre_auth_keys().unwrap().is_empty());
    assert_eq!(db.nodes().unwrap()[0].auth_key_id, None);
    db.delete_pre_auth_key(key.id).unwrap();
}

async fn duplicates_are_refused(db: Db) {
    db.insert_user(user(0, "ann")).unwrap();
    assert!(db.insert_user(user(0, "ann")).is_err(), "user names are unique");
    db.insert_node(node(1, None), None).unwrap();
    let mut same_key = node(2, None);
    same_key.node_key = node(1, None).node_key;
    assert!(db.insert_node(same_key, None).is_err(), "node keys are unique");
    assert_eq!((db.users().unwrap().len(), db.nodes().unwrap().len()), (1, 1));
    assert!(db.ping());
}

async fn api_keys_round_trip(db: Db) {
    let key = ApiKey {
        id: 0,
        prefix: "abcdefghijkl".into(),
        hash: crate::model::KeyHash::Sha256([7; 32]),
        expiration: t0() + Duration::days(90),
        created_at: t0(),
        last_seen: None,
    };
    let stored = db.insert_api_key(key.clone()).unwrap();
    assert_eq!(stored.id, 1);
    assert_eq!(db.api_key_by_prefix("abcdefghijkl").unwrap(), Some(stored.clone()));
    assert_eq!(db.api_key(1).unwrap(), Some(stored.clone()));
    assert_eq!(db.api_key_by_prefix("nope").unwrap(), None);
    assert!(db.insert_api_key(key).is_err(), "prefixes are unique");

    db.set_api_key_expiration(1, t0() + Duration::days(1)).unwrap();
    db.set_api_key_last_seen(1, t0() + Duration::hours(1)).unwrap();
    let read = db.api_keys().unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!((read[0].expiration, read[0].last_seen), (t0() + Duration::days(1), Some(t0() + Duration::hours(1))));

    db.delete_api_key(1).unwrap();
    assert_eq!(db.api_keys().unwrap(), Vec::new());
    assert_eq!(db.api_key(1).unwrap(), None);
}

async fn the_newest_policy_is_in_force(db: Db) {
    assert_eq!(db.policy().unwrap(), None);
    db.set_policy("{}", t0()).unwrap();
    db.set_policy(r#"{"acls":[]}"#, t0() + Duration::seconds(1)).unwrap();
    let p = db.policy().unwrap().unwrap();
    assert_eq!(p.data, r#"{"acls":[]}"#);
    assert_eq!(p.updated_at, t0() + Duration::seconds(1));
    // A deleted version is not in force; the one before it is.
    db.with(|c| c.execute("UPDATE policies SET deleted_at = $1 WHERE id = 2", args![t0()])).unwrap();
    assert_eq!(db.policy().unwrap().unwrap().data, "{}");
}

async fn the_schema_is_current_and_a_newer_one_is_refused(db: Db) {
    assert_eq!(db.schema_version().unwrap(), LATEST);
    // Migrating again finds nothing to do.
    db.with(super::migrations::migrate).unwrap();
    assert_eq!(db.schema_version().unwrap(), LATEST);
    let newer = match db.engine() {
        super::Engine::Sqlite => format!("PRAGMA user_version = {}", LATEST + 1),
        super::Engine::Postgres => format!("UPDATE schema_version SET version = {}", LATEST + 1),
    };
    db.with(|c| c.batch(&newer)).unwrap();
    let err = db.with(super::migrations::migrate).unwrap_err();
    assert!(matches!(err, DbError::TooNew { found, known } if found == LATEST + 1 && known == LATEST), "{err}");
}

async fn corrupt_values_are_reported_with_their_column(db: Db) {
    db.insert_user(user(0, "ann")).unwrap();
    db.with(|c| c.execute("UPDATE users SET created_at = 'yesterday'", &[])).unwrap();
    let err = db.users().unwrap_err();
    assert!(err.to_string().contains("users.created_at"), "{err}");
    db.insert_node(node(1, None), None).unwrap();
    db.with(|c| c.execute("UPDATE nodes SET hostinfo = '[1'", &[])).unwrap();
    let err = db.nodes().unwrap_err();
    assert!(err.to_string().contains("nodes.hostinfo"), "{err}");
}

// ---- PostgreSQL only ----

#[test]
fn the_same_postgres_database_is_opened_again_with_its_records() {
    let Some(settings) = postgres_settings() else { return };
    let db = Db::open_postgres(&settings).unwrap();
    db.insert_user(user(0, "ann")).unwrap();
    drop(db);
    let db = Db::open_postgres(&settings).unwrap();
    assert_eq!(db.users().unwrap().len(), 1);
    assert_eq!(db.schema_version().unwrap(), LATEST);
}

#[test]
fn inspecting_a_postgres_database_reads_and_writes_nothing() {
    let Some(settings) = postgres_settings() else { return };
    let database =
        crate::config::Database { kind: "postgres".into(), postgres: settings.clone(), ..Default::default() };
    let fresh = Db::inspect_configured(&database).unwrap();
    assert_eq!(fresh, Some(super::Schema::Behind { found: 0, latest: LATEST }));
    let probe = Db { store: super::Store::Postgres(super::postgres::open(&settings).unwrap()) };
    let tables = probe
        .with(|c| {
            let sql = "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = current_schema()";
            c.query_opt("tables", sql, &[])?.map(|r| r.opt_int("n")).transpose()
        })
        .unwrap()
        .flatten();
    assert_eq!(tables, Some(0), "inspecting created tables");
    Db::open_postgres(&settings).unwrap();
    assert_eq!(Db::inspect_configured(&database).unwrap(), Some(super::Schema::Current));
}

/// A Headscale v0.29 database on PostgreSQL, as gorm lays it out: `timestamptz` times,
/// `boolean` flags, `bytea` hashes.
const HEADSCALE_POSTGRES: &str = "
    CREATE TABLE migrations (id varchar(255) PRIMARY KEY);
    CREATE TABLE database_versions (id bigserial PRIMARY KEY, version text NOT NULL, updated_at timestamptz);
    CREATE TABLE users (id bigserial PRIMARY KEY, created_at timestamptz, updated_at timestamptz,
        deleted_at timestamptz, name text, display_name text, email text, provider_identifier text,
        provider text, profile_pic_url text);
    CREATE TABLE pre_auth_keys (id bigserial PRIMARY KEY, key text, prefix text, hash bytea, user_id bigint
        REFERENCES users(id) ON DELETE SET NULL, reusable boolean, ephemeral boolean DEFAULT false,
        used boolean DEFAULT false, tags text, created_at timestamptz, expiration timestamptz);
    CREATE TABLE api_keys (id bigserial PRIMARY KEY, prefix text, hash bytea, created_at timestamptz,
        expiration timestamptz, last_seen timestamptz);
    CREATE TABLE nodes (id bigserial PRIMARY KEY, machine_key text, node_key text, disco_key text,
        endpoints text, host_info text, ipv4 text, ipv6 text, hostname text, given_name varchar(63),
        user_id bigint REFERENCES users(id) ON DELETE CASCADE, register_method text, tags text,
        auth_key_id bigint REFERENCES pre_auth_keys(id), expiry timestamptz, last_seen timestamptz,
        approved_routes text, created_at timestamptz, updated_at timestamptz, deleted_at timestamptz);
    CREATE TABLE policies (id bigserial PRIMARY KEY, created_at timestamptz, updated_at timestamptz,
        deleted_at timestamptz, data text);
    INSERT INTO database_versions VALUES (1, 'v0.29.2', now());
    INSERT INTO users VALUES
        (1, '2024-01-01 00:00:00+00', '2024-01-01 00:00:00+00', NULL, 'alice', 'Alice', 'alice@example.com', NULL, NULL, NULL),
        (2, '2024-01-01 00:00:00+00', '2024-01-01 00:00:00+00', NULL, 'bob', 'Bob', 'bob@example.com',
         'https://idp.example.com/bob', 'oidc', NULL);
    INSERT INTO pre_auth_keys VALUES
        (1, '', 'abcdefghijkl', decode('HASH', 'hex'), 1, true, false, false, '[]', '2024-01-01 00:00:00+00', '2999-01-01 00:00:00+00');
    INSERT INTO api_keys VALUES (1, 'hFKcRjL', decode('HASH', 'hex'), '2024-01-01 00:00:00+00', NULL, NULL);
    INSERT INTO nodes VALUES
        (1, 'mkey:0101010101010101010101010101010101010101010101010101010101010101',
         'nodekey:1111111111111111111111111111111111111111111111111111111111111111', '', '[\"192.0.2.1:41641\"]',
         '{\"Hostname\":\"laptop\",\"OS\":\"linux\"}', '100.64.0.1', 'fd7a:115c:a1e0::1', 'laptop', 'laptop', 1,
         'authkey', '[]', 1, '0001-01-01 00:00:00+00', '2024-06-01 12:00:00.123456+02', '[]',
         '2024-01-01 00:00:00+00', now(), NULL),
        (2, 'mkey:0202020202020202020202020202020202020202020202020202020202020202',
         'nodekey:2222222222222222222222222222222222222222222222222222222222222222', NULL, 'null', NULL,
         '100.64.0.2', NULL, 'server', 'server', 2, 'cli', '[\"tag:server\"]', NULL, NULL, NULL,
         '[\"10.0.0.0/24\"]', '2024-01-01 00:00:00+00', now(), NULL),
        (3, 'mkey:0303030303030303030303030303030303030303030303030303030303030303',
         'nodekey:3333333333333333333333333333333333333333333333333333333333333333', NULL, '[]', '{}',
         '100.64.0.3', 'fd7a:115c:a1e0::3', 'phone', 'phone', NULL, 'authkey', 'null', 1, NULL, NULL, '[]',
         '2024-01-01 00:00:00+00', now(), NULL);
    INSERT INTO policies VALUES (1, now(), '2024-02-03 04:05:06+00', NULL, '{\"acls\": []}');
    SELECT setval('users_id_seq', 2);
";

#[test]
fn a_headscale_postgres_database_is_taken_over() {
    let Some(settings) = postgres_settings() else { return };
    let secret = "s".repeat(64);
    let hash = hex::encode(bcrypt::hash(&secret, 4).unwrap());
    let raw = Db { store: super::Store::Postgres(super::postgres::open(&settings).unwrap()) };
    let known = super::takeover::HEADSCALE_MIGRATIONS.iter().map(|id| format!("('{id}')")).collect::<Vec<_>>();
    let setup =
        format!("{}INSERT INTO migrations VALUES {};", HEADSCALE_POSTGRES.replace("HASH", &hash), known.join(", "));
    raw.with(|c| c.batch(&setup)).unwrap();
    drop(raw);

    let db = Db::open_postgres(&settings).unwrap();
    let users = db.users().unwrap();
    assert_eq!(users.iter().map(|u| (u.id, u.name.as_str())).collect::<Vec<_>>(), vec![(1, "alice"), (2, "bob")]);
    assert_eq!(users[1].provider_id, "https://idp.example.com/bob");
    let nodes = db.nodes().unwrap();
    let owners: Vec<_> = nodes.iter().map(|n| (n.id, n.user_id, n.tags.clone())).collect();
    assert_eq!(
        owners,
        vec![(1, Some(1), vec![]), (2, None, vec!["tag:server".to_string()]), (3, Some(1), vec![])],
        "a tagged node has no user; an untagged one gets its key's"
    );
    assert_eq!(nodes[0].expiry, None, "Go's zero time is no expiry");
    assert_eq!(nodes[0].last_seen.map(|t| t.to_rfc3339()), Some("2024-06-01T10:00:00.123456+00:00".into()));
    assert_eq!(nodes[0].hostinfo.hostname, "laptop");
    assert_eq!(nodes[0].endpoints.len(), 1);
    assert_eq!(nodes[1].approved_routes.len(), 1);
    let keys = db.pre_auth_keys().unwrap();
    assert!(keys[0].hash.verify(&secret) && keys[0].prefix == "abcdefghijkl");
    let api = db.api_keys().unwrap();
    assert!(api[0].hash.verify(&secret) && api[0].expiration.year() == 9999, "no expiry: never");
    assert_eq!(db.policy().unwrap().map(|p| p.data), Some("{\"acls\": []}".to_string()));
    // The id sequences continue after the ids taken over.
    let next = db.insert_user(crate::testing::user(0, "carol")).unwrap();
    assert_eq!(next.id, 3);
    // Opened again: this server's database now.
    assert_eq!(Db::open_postgres(&settings).unwrap().nodes().unwrap().len(), 3);
}

#[test]
fn an_unreachable_server_is_named_and_retryable() {
    let Some(mut settings) = postgres_settings() else { return };
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    settings.port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = Db::open_postgres(&settings).err().expect("nothing listens there");
    assert!(err.is_unreachable(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{}", settings.port)) && text.contains(&settings.name), "{text}");
}

#[test]
fn a_wrong_password_is_refused_and_not_retried() {
    let Some(mut settings) = postgres_settings() else { return };
    settings.pass = "wrong".into();
    let err = Db::open_postgres(&settings).err().expect("refused");
    assert!(matches!(err, DbError::Refused { .. }), "{err:?}");
    assert!(!err.is_unreachable());
    assert!(err.to_string().contains("password authentication failed"), "{err}");
}

#[test]
fn a_unix_socket_directory_is_a_host() {
    let Some(mut settings) = postgres_settings() else { return };
    let cluster = test_postgres::cluster().expect("running");
    settings.host = cluster.socket_dir().display().to_string();
    settings.pass.clear();
    let db = Db::open_postgres(&settings).unwrap();
    assert!(db.ping());
}

#[test]
fn ssl_require_encrypts_and_prefer_falls_back_where_there_is_no_tls() {
    // The test cluster speaks TLS on its TCP port, with a certificate no system trusts, and
    // never on its unix socket. (`tests/postgres_tls.rs` covers the modes that check.)
    let Some(mut settings) = postgres_settings() else { return };
    settings.ssl = "require".into();
    assert!(Db::open_postgres(&settings).unwrap().ping(), "require does not check the certificate");
    settings.host = test_postgres::cluster().expect("running").socket_dir().display().to_string();
    settings.pass.clear();
    settings.ssl = serde_yaml::Value::Bool(true);
    assert!(Db::open_postgres(&settings).unwrap().ping(), "prefer goes on without TLS");
    settings.ssl = "require".into();
    let err = Db::open_postgres(&settings).err().expect("the unix socket has no TLS");
    assert!(err.to_string().contains(&settings.name), "{err}");
}

#[test]
fn the_pool_is_bounded_and_writers_share_it() {
    let Some(mut settings) = postgres_settings() else { return };
    settings.max_open_conns = 2;
    settings.max_idle_conns = 1;
    let db = Db::open_postgres(&settings).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let db = db.clone();
            std::thread::spawn(move || {
                for j in 0..10 {
                    db.insert_user(user(0, &format!("u{i}-{j}"))).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(db.users().unwrap().len(), 80);
    let super::Store::Postgres(pool) = &db.store else { unreachable!("opened on PostgreSQL") };
    let (open, idle) = pool.counts();
    assert!(open <= 1 && idle <= 1, "{open} open, {idle} idle");
}

#[test]
fn a_lost_connection_is_replaced() {
    let Some(settings) = postgres_settings() else { return };
    let db = Db::open_postgres(&settings).unwrap();
    let killer = Db::open_postgres(&settings).unwrap();
    db.insert_user(user(0, "ann")).unwrap();
    killer
        .with(|c| {
            c.query("pg_stat_activity", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()", &[])
        })
        .unwrap();
    // The pool notices the closed connection and opens another.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while db.users().is_err() {
        assert!(std::time::Instant::now() < deadline, "no new connection");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(db.users().unwrap().len(), 1);
}

#[test]
fn servers_starting_together_migrate_once() {
    let Some(settings) = postgres_settings() else { return };
    let opened: Vec<_> = (0..3)
        .map(|_| {
            let settings = settings.clone();
            std::thread::spawn(move || Db::open_postgres(&settings).map(|db| db.schema_version()))
        })
        .collect();
    for o in opened {
        assert_eq!(o.join().unwrap().unwrap().unwrap(), LATEST);
    }
}

#[test]
fn a_paused_server_costs_a_call_its_deadline_and_the_connection_is_not_reused() {
    let Some(settings) = postgres_settings() else { return };
    let db = postgres_with_deadline(&settings, std::time::Duration::from_secs(1));
    db.insert_user(user(0, "ann")).unwrap();
    let pid = backend_pid(&db);
    signal(pid, libc::SIGSTOP);
    let started = std::time::Instant::now();
    let err = db.insert_user(user(0, "bob")).unwrap_err();
    let waited = started.elapsed();
    signal(pid, libc::SIGCONT);
    assert!(matches!(err, DbError::Timeout { .. }), "{err}");
    assert!(waited < std::time::Duration::from_secs(3), "the call waited {waited:?}");
    // The paused connection is closed; the next call opens another, and nothing of the
    // unanswered write is there.
    assert_ne!(backend_pid(&db), pid);
    let names: Vec<String> = db.users().unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["ann"]);
    db.insert_user(user(0, "bob")).unwrap();
    assert_eq!(db.users().unwrap().len(), 2);
}

#[test]
fn a_commit_left_in_doubt_is_asked_about_and_its_outcome_told() {
    let Some(settings) = postgres_settings() else { return };
    let db = postgres_with_deadline(&settings, std::time::Duration::from_secs(1));
    // A commit that takes two seconds, then goes through, or fails for a negative value.
    db.with(|c| {
        c.batch(
            "CREATE TABLE doubt (v INTEGER);
             CREATE FUNCTION doubt_check() RETURNS trigger AS $$
             BEGIN
                 PERFORM pg_sleep(2);
                 IF NEW.v < 0 THEN RAISE EXCEPTION 'refused at commit'; END IF;
                 RETURN NULL;
             END $$ LANGUAGE plpgsql;
             CREATE CONSTRAINT TRIGGER doubt_at_commit AFTER INSERT ON doubt
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION doubt_check();",
        )
    })
    .unwrap();
    let insert = |v: i64| db.transaction(|c| c.execute("INSERT INTO doubt (v) VALUES ($1)", &[v.into()]));
    // The answer to the commit comes after the deadline: the server is asked, and says committed.
    assert_eq!(insert(1).unwrap(), 1);
    // This one fails at commit, after the deadline: the caller gets the error, nothing is in.
    assert!(matches!(insert(-1).unwrap_err(), DbError::Timeout { .. }));
    let rows = db.with(|c| c.query("doubt", "SELECT v::text AS v FROM doubt", &[])).unwrap();
    let values: Vec<String> = rows.iter().map(|r| r.text("v").unwrap()).collect();
    assert_eq!(values, ["1"]);
}
