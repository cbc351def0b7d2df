//! The schema, as an ordered list of migrations. A database records the last one it ran
//! (`PRAGMA user_version`); start-up runs the rest, each in its own transaction. Never edit
//! a released migration: add a new one.

/// Migrations in order; the database's version is the count that has run.
pub const MIGRATIONS: &[&str] = &[
    // 1: users, pre-auth keys, nodes.
    r#"
    CREATE TABLE users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        display_name TEXT NOT NULL DEFAULT '',
        email TEXT NOT NULL DEFAULT '',
        provider_id TEXT NOT NULL DEFAULT '',
        provider TEXT NOT NULL DEFAULT '',
        profile_pic_url TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX users_name ON users(name);

    CREATE TABLE pre_auth_keys (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        prefix TEXT NOT NULL UNIQUE,
        hash BLOB NOT NULL,
        user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
        reusable INTEGER NOT NULL,
        ephemeral INTEGER NOT NULL,
        used INTEGER NOT NULL DEFAULT 0,
        tags TEXT NOT NULL DEFAULT '[]',
        expiration TEXT,
        created_at TEXT NOT NULL
    );

    CREATE TABLE nodes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        machine_key TEXT NOT NULL UNIQUE,
        node_key TEXT NOT NULL UNIQUE,
        disco_key TEXT,
        endpoints TEXT NOT NULL DEFAULT '[]',
        hostinfo TEXT NOT NULL DEFAULT '{}',
        ipv4 TEXT UNIQUE,
        ipv6 TEXT UNIQUE,
        hostname TEXT NOT NULL,
        given_name TEXT NOT NULL UNIQUE,
        user_id INTEGER REFERENCES users(id),
        register_method TEXT NOT NULL,
        tags TEXT NOT NULL DEFAULT '[]',
        auth_key_id INTEGER REFERENCES pre_auth_keys(id) ON DELETE SET NULL,
        ephemeral INTEGER NOT NULL DEFAULT 0,
        expiry TEXT,
        last_seen TEXT,
        approved_routes TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL
    );
    "#,
    // 2: API keys (prefix + SHA-256 of the secret), for the remote admin API.
    r#"
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        prefix TEXT NOT NULL UNIQUE,
        hash BLOB NOT NULL,
        expiration TEXT NOT NULL,
        last_seen TEXT,
        created_at TEXT NOT NULL
    );
    "#,
    // 3: policies for policy.mode database; the newest row not deleted is in force.
    r#"
    CREATE TABLE policies (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        data TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        deleted_at TEXT
    );
    "#,
];
