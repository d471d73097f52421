//! A real PostgreSQL database per test.
//!
//! The server is found once per test process, in this order:
//! 1. `TEST_DATABASE_URL`, when set (any database there; tests create their own beside it);
//! 2. `postgres://postgres@127.0.0.1:5432`, when it answers;
//! 3. otherwise a throwaway cluster: `initdb` + `postgres` (from PATH or the distribution's
//!    PostgreSQL bin directory) in a temporary directory, on a free port. A small shell
//!    guardian stops it and removes the directory when the test process exits, however it
//!    exits.
//!
//! Each [`TestDb`] is a fresh database with migrations applied, dropped when the value is
//! dropped, which happens when the test fails too. Names are unique per process and test, so
//! tests run in parallel safely.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

/// How to reach the server: a parsed config, to derive per-test connection strings from.
struct Server {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    admin_db: String,
}

impl Server {
    fn url(&self, db: &str) -> String {
        let mut s = format!(
            "host={} port={} user={} dbname={db} connect_timeout=10",
            self.host, self.port, self.user
        );
        if let Some(p) = &self.password {
            s.push_str(&format!(" password={p}"));
        }
        s
    }

    fn admin(&self) -> Client {
        Client::connect(&self.url(&self.admin_db), NoTls).expect("connect to the test server")
    }
}

static SERVER: OnceLock<Server> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
            return from_url(&url);
        }
        let local = from_url("postgres://postgres@127.0.0.1:5432/postgres");
        if answers(&local.url(&local.admin_db)) {
            return local;
        }
        eprintln!("test db: nothing answers on 127.0.0.1:5432; starting a throwaway cluster");
        start_throwaway_cluster()
    })
}

fn from_url(url: &str) -> Server {
    let config: postgres::Config = url.parse().expect("TEST_DATABASE_URL parses");
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "127.0.0.1".to_owned(),
    };
    Server {
        host,
        port: config.get_ports().first().copied().unwrap_or(5432),
        user: config.get_user().unwrap_or("postgres").to_owned(),
        password: config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        admin_db: config.get_dbname().unwrap_or("postgres").to_owned(),
    }
}

fn answers(url: &str) -> bool {
    let Ok(mut config) = url.parse::<postgres::Config>() else {
        return false;
    };
    config.connect_timeout(Duration::from_secs(2));
    config.connect(NoTls).is_ok()
}

/// `initdb` and `postgres`, from PATH or the newest `/usr/lib/postgresql/*/bin`.
fn pg_bin_dir() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
                return Some(dir);
            }
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a command as the `postgres` user when we are root (PostgreSQL refuses to run as
/// root), as ourselves otherwise.
fn as_pg_user(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Creates `dir` (owned by `postgres` when we are root) and runs `initdb` in `dir/data`,
/// which it returns.
fn init_cluster(bin: &Path, dir: &Path, root: bool) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(dir).expect("create the cluster directory");
    if root {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown of {} failed", dir.display());
    }
    crate::run(
        as_pg_user(&bin.join("initdb"), root)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data),
        "initdb",
    );
    data
}

/// Puts `cert` into the cluster at `data` as its server certificate (owned by the server's
/// user, the key readable by it alone, as PostgreSQL insists) and turns `ssl` on.
fn enable_tls(data: &Path, cert: &crate::tls_proxy::TestCert, root: bool) {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let crt = data.join("server.crt");
    let key = data.join("server.key");
    std::fs::copy(cert.cert_path(), &crt).expect("copy the server certificate");
    std::fs::copy(cert.key_path(), &key).expect("copy the server key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    if root {
        let ok = Command::new("chown")
            .arg("postgres:postgres")
            .args([&crt, &key])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown of the server certificate failed");
    }
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .expect("open postgresql.conf");
    writeln!(conf, "ssl = on").expect("write postgresql.conf");
}

fn start_throwaway_cluster() -> Server {
    let bin = pg_bin_dir().expect(
        "no PostgreSQL answers on 127.0.0.1:5432, TEST_DATABASE_URL is unset, and initdb was \
         not found on PATH or in /usr/lib/postgresql/*/bin",
    );
    let root = is_root();
    let dir = std::env::temp_dir().join(format!("polytape-test-pg-{}", std::process::id()));
    let data = init_cluster(&bin, &dir, root);
    let port = free_port();
    let log = dir.join("server.log");
    // The guardian: starts the server, waits for this process to end, then stops the server
    // and removes the directory. It outlives us on purpose, and runs as ourselves (a
    // `postgres`-user shell could not watch a root process).
    let script = format!(
        r#"{as_pg}{postgres} -D '{data}' -p {port} -k '{dir}' -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 >'{log}' 2>&1 &
pg=$!
while kill -0 {parent} 2>/dev/null; do sleep 1; done
{as_pg}{pg_ctl} -D '{data}' -m immediate -w stop >/dev/null 2>&1
wait $pg 2>/dev/null
rm -rf '{dir}'"#,
        pg_ctl = bin.join("pg_ctl").display(),
        as_pg = if root { "runuser -u postgres -- " } else { "" },
        postgres = bin.join("postgres").display(),
        data = data.display(),
        dir = dir.display(),
        log = log.display(),
        parent = std::process::id(),
    );
    spawn_guardian(&script);
    let server = Server {
        host: "127.0.0.1".into(),
        port,
        user: "postgres".into(),
        password: None,
        admin_db: "postgres".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers(&server.url("postgres")) {
        assert!(
            Instant::now() < deadline,
            "the throwaway cluster did not start; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "test db: throwaway cluster on port {port} in {}",
        dir.display()
    );
    server
}

/// Starts `script` in a shell of its own, detached from our standard streams. It is never
/// waited for on purpose: it must outlive this process.
#[allow(clippy::zombie_processes)]
fn spawn_guardian(script: &str) {
    Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the cluster guardian");
}

/// A PostgreSQL cluster of a test's own, for tests that stop and start the server (which
/// the shared server must never be). Stopped and removed when dropped, or by its guardian
/// when the test process dies first.
pub struct PrivateCluster {
    bin: PathBuf,
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    root: bool,
}

impl PrivateCluster {
    /// `initdb` and start a new cluster on a free port. `None` when no `initdb` is installed.
    pub fn start() -> Option<PrivateCluster> {
        Self::start_with(None)
    }

    /// [`PrivateCluster::start`], with TLS on (`ssl = on`), serving `cert`'s certificate for
    /// `localhost` and 127.0.0.1.
    pub fn start_with_tls(cert: &crate::tls_proxy::TestCert) -> Option<PrivateCluster> {
        Self::start_with(Some(cert))
    }

    fn start_with(tls: Option<&crate::tls_proxy::TestCert>) -> Option<PrivateCluster> {
        let bin = pg_bin_dir()?;
        let root = is_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("polytape-pg-{}-{n}", std::process::id()));
        let data = init_cluster(&bin, &dir, root);
        if let Some(cert) = tls {
            enable_tls(&data, cert, root);
        }
        let cluster = PrivateCluster {
            bin,
            dir,
            data,
            port: free_port(),
            root,
        };
        cluster.pg_ctl_start();
        // The guardian stops the server if this process dies without dropping us.
        spawn_guardian(&format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 1; done; {as_pg}{pg_ctl} -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            parent = std::process::id(),
            as_pg = if root { "runuser -u postgres -- " } else { "" },
            pg_ctl = cluster.bin.join("pg_ctl").display(),
            data = cluster.data.display(),
            dir = cluster.dir.display(),
        ));
        Some(cluster)
    }

    /// Runs `pg_ctl -D <data> ARGS` as the cluster's owner; panics with its stderr on failure.
    fn pg_ctl(&self, args: &[&str]) {
        crate::run(
            as_pg_user(&self.bin.join("pg_ctl"), self.root)
                .arg("-D")
                .arg(&self.data)
                .args(args),
            &format!("pg_ctl {args:?}"),
        );
    }

    fn pg_ctl_start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        let log = log.to_string_lossy();
        self.pg_ctl(&["-w", "-t", "30", "-o", &opts, "-l", &log, "start"]);
    }

    /// Stops the server (fast shutdown: sessions are ended with 57P01).
    pub fn stop(&self) {
        self.pg_ctl(&["-w", "-m", "fast", "stop"]);
    }

    pub fn start_again(&self) {
        self.pg_ctl_start();
    }

    /// A migrated database on this cluster; its connection string.
    pub fn database_url(&self) -> String {
        let url = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        );
        migrate(&url);
        url
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = as_pg_user(&self.bin.join("pg_ctl"), self.root)
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh, migrated database, dropped with this value.
pub struct TestDb {
    name: String,
    url: String,
    spool: PathBuf,
}

impl TestDb {
    /// A new database with polytape's migrations applied.
    pub fn new() -> TestDb {
        let db = Self::empty();
        migrate(db.url());
        db
    }

    /// A polytape configuration for this database (every other setting at its default).
    pub fn config(&self) -> polytape::Config {
        polytape::Config::builder()
            .database_url(self.url())
            .spool_dir(self.spool_dir())
            // Never a public host from a test: nothing answers here.
            .gamma_url("http://127.0.0.1:9")
            .data_api_url("http://127.0.0.1:9")
            .build()
            .expect("a valid database URL")
    }

    /// A new database with nothing in it.
    pub fn empty() -> TestDb {
        let server = server();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!(
            "polytape_test_{}_{}_{}",
            std::process::id(),
            n,
            fastrand::u32(..)
        );
        server
            .admin()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create the test database");
        let url = server.url(&name);
        TestDb {
            spool: crate::spool_dir(&name),
            name,
            url,
        }
    }

    /// A spool folder of this database's own (removed with it), so that parallel tests never
    /// share a spool.
    pub fn spool_dir(&self) -> &Path {
        &self.spool
    }

    /// A connection string for this database (key=value form).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.url, NoTls).expect("connect to the test database")
    }

    /// Makes the database unreachable (`false`: new connections refused, open ones ended)
    /// or reachable again: to polytape, the database went away. Other tests' databases on
    /// the same server are not touched.
    pub fn set_reachable(&self, reachable: bool) {
        let server = server();
        let mut admin = server.admin();
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS {reachable}",
                self.name
            ))
            .expect("alter database");
        if !reachable {
            admin
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    &[&self.name],
                )
                .expect("terminate backends");
        }
    }

    /// `SELECT count(*) FROM <table>`.
    pub fn count(&self, table: &str) -> i64 {
        self.client()
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .expect("count")
            .get(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let server = server();
        let dropped = Client::connect(&server.url(&server.admin_db), NoTls).and_then(|mut c| {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
        });
        if let Err(e) = dropped {
            eprintln!("test db: could not drop {}: {e}", self.name);
        }
        let _ = std::fs::remove_dir_all(&self.spool);
    }
}

/// Applies polytape's migrations to the database at `url`, as `polytape migrate` would.
pub fn migrate(url: &str) {
    let config = polytape::Config::builder()
        .database_url(url)
        .build()
        .expect("a valid database URL");
    polytape::store::migrate(&config).expect("migrations apply");
}

/// A login role of its own (not a superuser), with what polytape needs on one test
/// database: for tests that take a privilege away. Dropped, with its grants, on drop.
pub struct TestRole {
    name: String,
    url: String,
    db: String,
}

impl TestRole {
    /// A connection string for the test database, as this role.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The role's name, for GRANT and REVOKE.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl TestDb {
    /// A new role with every privilege polytape uses on this database's tables and
    /// sequences (and TEMP, for the writer's staging table).
    pub fn role(&self) -> TestRole {
        let role = self.bare_role("role");
        // What README tells an operator to grant the role polytape writes with.
        self.client()
            .batch_execute(&format!(
                "GRANT USAGE ON SCHEMA public TO {name};
                 GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {name};
                 GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {name};
                 GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {name}",
                name = role.name
            ))
            .expect("grant");
        role
    }

    /// A login role (named after this database and `suffix`) with CONNECT and TEMP on this
    /// database and nothing else: what any user of a shared server may have.
    pub fn bare_role(&self, suffix: &str) -> TestRole {
        let server = server();
        let name = format!("{}_{suffix}", self.name);
        server
            .admin()
            .batch_execute(&format!(
                "CREATE ROLE {name} LOGIN PASSWORD 'polytape-test';
                 GRANT CONNECT, TEMP ON DATABASE {db} TO {name}",
                db = self.name
            ))
            .expect("create the role");
        let url = format!(
            "host={} port={} user={name} password=polytape-test dbname={} connect_timeout=10",
            server.host, server.port, self.name
        );
        TestRole {
            name,
            url,
            db: self.name.clone(),
        }
    }
}

impl Drop for TestRole {
    fn drop(&mut self) {
        // Roles belong to the whole server: take its grants back and drop it, so no test
        // leaves one behind.
        let server = server();
        let name = &self.name;
        let in_db = Client::connect(&server.url(&self.db), NoTls)
            .and_then(|mut c| c.batch_execute(&format!("DROP OWNED BY {name}")));
        let dropped = Client::connect(&server.url(&server.admin_db), NoTls).and_then(|mut c| {
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[name],
            )?;
            c.batch_execute(&format!(
                "REVOKE ALL ON DATABASE {db} FROM {name}; DROP ROLE IF EXISTS {name}",
                db = self.db
            ))
        });
        if let Err(e) = in_db.and(dropped) {
            eprintln!("test role: could not drop {name}: {e}");
        }
    }
}
