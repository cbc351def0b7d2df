//! Throwaway PostgreSQL clusters for tests, from the PostgreSQL server installed on the
//! machine; `hi` makes its PostgreSQL container image from the same installation
//! ([`debian_installation`], [`initdb_args`]).
//!
//! The first test of a process that asks gets a
//! cluster of its own: `initdb` into a temporary directory, then `postgres` on a free loopback
//! port with its socket in that directory, both as an unprivileged user when the tests run as
//! root (PostgreSQL refuses to run as root). Every test then gets a fresh database in it. When
//! the test process exits, however it exits, a watchdog stops the server by its PID and
//! removes the directory. The server speaks TLS on its TCP port with a certificate for
//! `localhost` from a certificate authority made for it (`Cluster::ca_file`), so the modes that
//! check certificates can be tested.
//!
//! The server comes from the machine (Debian's `postgresql` package, under
//! `/usr/lib/postgresql/<version>/bin`, or `initdb` on `PATH`). Without it, asking for a
//! cluster fails with a message that says how to install it, unless
//! `HEADSCALE_TEST_POSTGRES=skip` is set, in which case there is no cluster and the caller
//! skips its PostgreSQL tests.

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The role tests log in as; it owns the cluster.
pub const USER: &str = "headscale";
/// Its password, checked over TCP (SCRAM); the unix socket trusts local users.
pub const PASSWORD: &str = "throwaway-password";
/// The variable that, set to `skip`, turns the PostgreSQL tests off.
pub const SKIP_VARIABLE: &str = "HEADSCALE_TEST_POSTGRES";

/// What the server logs once it accepts connections.
pub const READY: &str = "database system is ready to accept connections";
const INSTALL: &str = "install the PostgreSQL server with `apt-get install postgresql`, or set \
    HEADSCALE_TEST_POSTGRES=skip to skip the PostgreSQL tests";

/// A running cluster.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// The postmaster's PID: what the watchdog stops.
    pid: u32,
    /// Held until the process exits; its closing tells the watchdog to stop the server.
    _watchdog: Mutex<ChildStdin>,
    databases: AtomicU32,
}

/// This process's cluster, started on first use. `None` when `HEADSCALE_TEST_POSTGRES=skip`
/// (a line on stderr says the test was skipped).
///
/// # Panics
/// When no cluster can be started: the message says why (and how to install PostgreSQL
/// when it is missing).
pub fn cluster() -> Option<&'static Cluster> {
    if std::env::var(SKIP_VARIABLE).as_deref() == Ok("skip") {
        eprintln!("{SKIP_VARIABLE}=skip: this test does not run on PostgreSQL");
        return None;
    }
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(Cluster::start) {
        Ok(c) => Some(c),
        Err(why) => panic!("no PostgreSQL cluster for the tests: {why}"),
    }
}

impl Cluster {
    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Creates an empty database and returns its name.
    ///
    /// # Panics
    /// If `createdb` fails; the message has its output.
    pub fn create_database(&self) -> String {
        let name = format!("test_{}", self.databases.fetch_add(1, Ordering::Relaxed));
        let out = Command::new(self.bin.join("createdb"))
            .args(["-h", &self.dir.display().to_string(), "-p", &self.port.to_string(), "-U", USER, &name])
            .env_remove("PGPASSWORD")
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}; {INSTALL}", self.bin.join("createdb").display()));
        assert!(out.status.success(), "createdb {name} failed: {}", String::from_utf8_lossy(&out.stderr));
        name
    }

    /// The PEM file of the authority that signed the server's certificate (for `localhost`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(CA_FILE)
    }

    fn start() -> Result<Cluster, String> {
        let bin = binaries()?;
        let account = Account::for_server()?;
        let dir = tempfile::Builder::new()
            .prefix("headscale-test-postgres-")
            .tempdir()
            .map_err(|e| format!("creating a temporary directory: {e}"))?
            .keep();
        account.own(&dir)?;
        let pwfile = dir.join("password");
        std::fs::write(&pwfile, format!("{PASSWORD}\n")).map_err(|e| format!("writing {}: {e}", pwfile.display()))?;
        account.own(&pwfile)?;
        let tls = write_certificates(&dir, &account)?;
        let data = dir.join("data");
        let log = dir.join("initdb.log");
        let mut initdb = account.command(&bin.join("initdb"), &dir);
        initdb
            .args(initdb_args(&data.display().to_string(), USER, &pwfile.display().to_string()))
            .arg("--no-sync")
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?);
        let status = initdb.status().map_err(|e| format!("running {}: {e}", bin.join("initdb").display()))?;
        if !status.success() {
            return Err(format!("initdb exited with {status}:\n{}", read(&log)));
        }
        // A free port can be taken between looking and binding; then try another.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let log = dir.join("postgres.log");
            let mut server = account.command(&bin.join("postgres"), &dir);
            server
                .arg("-D")
                .arg(&data)
                .arg("-k")
                .arg(&dir)
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
                .args(["-c", "max_connections=200", "-c", "jit=off"])
                .args(&tls)
                .stdin(Stdio::null())
                .stdout(log_file(&log)?)
                .stderr(log_file(&log)?)
                // Not in the tests' process group: ^C reaches the tests, not the server.
                .process_group(0);
            let child = server.spawn().map_err(|e| format!("running {}: {e}", bin.join("postgres").display()))?;
            match await_ready(child, &log) {
                Ok(pid) => {
                    let watchdog = watchdog(pid, &dir)?;
                    return Ok(Cluster {
                        bin,
                        dir,
                        port,
                        pid,
                        _watchdog: Mutex::new(watchdog),
                        databases: AtomicU32::new(0),
                    });
                }
                Err(why) => last = why,
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last)
    }
}

/// The newest Debian installation of the PostgreSQL server (`/usr/lib/postgresql/<version>`,
/// Debian's `postgresql` package) whose `bin/` holds `initdb`, `postgres` and `createdb`.
pub fn debian_installation() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .filter(|(_, install)| complete(&install.join("bin")))
        .collect();
    found.sort();
    found.pop().map(|(_, install)| install)
}

/// `initdb`'s arguments for a cluster in `data` owned by role `owner`, whose password is in
/// `pwfile`: UTF-8 without a locale, local connections trusted, SCRAM over the network.
pub fn initdb_args(data: &str, owner: &str, pwfile: &str) -> Vec<String> {
    let fixed = ["-E", "UTF8", "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256"];
    ["-D", data, "-U", owner]
        .iter()
        .chain(&fixed)
        .map(|a| a.to_string())
        .chain([format!("--pwfile={pwfile}")])
        .collect()
}

/// Whether `bin` holds the programs a cluster needs.
fn complete(bin: &Path) -> bool {
    ["initdb", "postgres", "createdb"].iter().all(|t| bin.join(t).is_file())
}

/// The directory with `initdb`, `postgres` and `createdb`: the newest Debian installation's,
/// else wherever `initdb` is on `PATH`.
fn binaries() -> Result<PathBuf, String> {
    let on_path = || std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).find(|d| complete(d));
    debian_installation().map(|install| install.join("bin")).or_else(on_path).ok_or_else(|| {
        format!("the PostgreSQL server (initdb, postgres, createdb) is not installed here: not under /usr/lib/postgresql/*/bin nor on PATH; {INSTALL}")
    })
}

/// Who the server runs as: this process's user, or `nobody` when that is root.
struct Account {
    /// `(uid, gid)` to switch to, when running as root.
    switch: Option<(u32, u32)>,
}

impl Account {
    fn for_server() -> Result<Account, String> {
        if !rustix::process::geteuid().is_root() {
            return Ok(Account { switch: None });
        }
        let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("reading /etc/passwd: {e}"))?;
        let ids = passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"nobody") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))?
        });
        ids.map(|ids| Account { switch: Some(ids) }).ok_or_else(|| {
            "the tests run as root, PostgreSQL refuses to, and there is no `nobody` user to run it as".into()
        })
    }

    /// Gives `path` to the server's user.
    fn own(&self, path: &Path) -> Result<(), String> {
        if let Some((uid, gid)) = self.switch {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", path.display()))?;
        }
        if path.is_dir() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("chmod {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// A command that runs `program` as the server's user, in `dir`, without the
    /// environment's PostgreSQL settings.
    fn command(&self, program: &Path, dir: &Path) -> Command {
        let mut c = Command::new(program);
        c.current_dir(dir);
        for var in ["PGDATA", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGOPTIONS"] {
            c.env_remove(var);
        }
        if let Some((uid, gid)) = self.switch {
            c.uid(uid).gid(gid);
        }
        c
    }
}

/// The authority's certificate, in the cluster's directory.
const CA_FILE: &str = "ca.pem";

/// Makes a certificate authority and a certificate for `localhost` it signed, writes them
/// into `dir` (the key readable by the server's user only), and returns the server's
/// settings that turn TLS on with them.
fn write_certificates(dir: &Path, account: &Account) -> Result<[String; 6], String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let fail = |e: rcgen::Error| format!("making the test certificates: {e}");
    let ca_key = KeyPair::generate().map_err(fail)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "headscale test PostgreSQL CA");
    let ca = ca.self_signed(&ca_key).map_err(fail)?;
    let key = KeyPair::generate().map_err(fail)?;
    let mut server = CertificateParams::new(vec!["localhost".to_string()]).map_err(fail)?;
    server.distinguished_name.push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = server.signed_by(&key, &ca, &ca_key).map_err(fail)?;
    let (cert_file, key_file) = (dir.join("server.crt"), dir.join("server.key"));
    for (path, text) in
        [(dir.join(CA_FILE), ca.pem()), (cert_file.clone(), server.pem()), (key_file.clone(), key.serialize_pem())]
    {
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        account.own(&path)?;
    }
    // PostgreSQL refuses a key that others can read.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", key_file.display()))?;
    let setting = |name: &str, path: &Path| format!("{name}={}", path.display());
    Ok([
        "-c".into(),
        "ssl=on".into(),
        "-c".into(),
        setting("ssl_cert_file", &cert_file),
        "-c".into(),
        setting("ssl_key_file", &key_file),
    ])
}

fn log_file(path: &Path) -> Result<File, String> {
    File::options().create(true).append(true).open(path).map_err(|e| format!("opening {}: {e}", path.display()))
}

fn read(path: &Path) -> String {
    let mut text = String::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    text
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| format!("finding a free port: {e}"))
}

/// Waits until the server accepts connections and returns its PID, or says why it did not.
fn await_ready(mut child: Child, log: &Path) -> Result<u32, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = read(log);
        if text.contains(READY) {
            return Ok(child.id());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("postgres exited with {status}:\n{text}"));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("postgres was not ready within 60 s:\n{text}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the process that stops the server (by its PID, with a fast shutdown) and removes
/// `dir` once its input closes, which happens when this process exits.
fn watchdog(pid: u32, dir: &Path) -> Result<ChildStdin, String> {
    let script = r#"read -r _; kill -INT "$1"; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; rm -rf "$2""#;
    let mut child = Command::new("/bin/sh")
        .args(["-c", script, "postgres-watchdog"])
        .arg(pid.to_string())
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting the watchdog: {e}"))?;
    child.stdin.take().ok_or_else(|| "the watchdog has no input".to_string())
}
