//! A real `redis-server` of a test's own, on a free loopback port, in a directory of its own;
//! killed when dropped.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use backupgw::shared::SharedOptions;

/// redis-server takes a port, not a listener: a free one, handed over.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of its own, on a free loopback port; killed when dropped.
pub struct Redis {
    child: Child,
    pub port: u16,
    /// A cluster node's bus (what other nodes meet it on).
    bus_port: Option<u16>,
    dir: std::path::PathBuf,
}

impl Redis {
    /// Whether `redis-server` is here; CI (`BACKUPGW_REQUIRE_REDIS`) insists that it is.
    pub fn available() -> bool {
        let mut version = Command::new("redis-server");
        version.arg("--version");
        crate::common::tool_runs(
            version,
            "BACKUPGW_REQUIRE_REDIS",
            "redis-server (apt-get install redis-server)",
        )
    }

    pub fn start() -> Self {
        Redis::started(&[])
    }

    /// Starts on `port` and returns once it accepts connections (it says so on stdout).
    pub fn start_on(port: u16) -> Self {
        Redis::start_with(port, &["--port", &port.to_string()])
    }

    /// Speaking TLS only, with this certificate and key (PEM files).
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        let port = free_port();
        Redis::start_with(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                cert.to_str().unwrap(),
                "--tls-key-file",
                key.to_str().unwrap(),
                "--tls-auth-clients",
                "no",
            ],
        )
    }

    /// With an ACL that gives its user every key and command but no pub/sub channel.
    pub fn start_without_channels() -> Self {
        Redis::start_with_acl(&["+@all", "resetchannels"])
    }

    /// With an ACL that gives its user every key and command but the scripts (`EVALSHA`).
    pub fn start_without_scripts() -> Self {
        Redis::start_with_acl(&["&*", "+@all", "-@scripting"])
    }

    /// A read-only replica of `primary` (what a replica's address gives after a failover).
    pub fn start_replica_of(primary: &Redis) -> Self {
        Redis::started(&["--replicaof", "127.0.0.1", &primary.port.to_string()])
    }

    /// A Redis Cluster node that serves no hash slot yet. Its cluster bus is on a free port of its
    /// own: by default it would be the port + 10,000, past 65,535 for a high free port.
    pub fn start_cluster_node() -> Self {
        let bus = free_port();
        let mut node = Redis::started(&[
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &bus.to_string(),
        ]);
        node.bus_port = Some(bus);
        node
    }

    /// A cluster of one node that serves every hash slot: keys are placed by slot, as behind a
    /// cluster proxy, and a script's keys must share one.
    pub async fn start_one_node_cluster() -> Self {
        let node = Redis::start_cluster_node();
        node.serve_slots(0, 16383).await;
        node.until_cluster_ok().await;
        node
    }

    /// A cluster of two nodes, each serving half the hash slots: a key of the other half asked
    /// of one node is answered `MOVED`.
    pub async fn start_two_node_cluster() -> (Self, Self) {
        let (a, b) = (Redis::start_cluster_node(), Redis::start_cluster_node());
        a.serve_slots(0, 8191).await;
        b.serve_slots(8192, 16383).await;
        redis::cmd("CLUSTER")
            .arg("MEET")
            .arg("127.0.0.1")
            .arg(b.port)
            .arg(b.bus_port.unwrap())
            .query_async::<()>(&mut a.connect().await)
            .await
            .unwrap();
        a.until_cluster_ok().await;
        b.until_cluster_ok().await;
        (a, b)
    }

    async fn serve_slots(&self, first: u16, last: u16) {
        redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(first)
            .arg(last)
            .query_async::<()>(&mut self.connect().await)
            .await
            .unwrap();
    }

    /// Once this node takes every slot for served (by itself or a node it knows).
    async fn until_cluster_ok(&self) {
        let mut c = self.connect().await;
        for _ in 0..1000 {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut c)
                .await
                .unwrap();
            if info.contains("cluster_state:ok") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the cluster node on {} never served every slot", self.port);
    }

    /// Asking every client for this password (`requirepass`).
    pub fn start_with_password(password: &str) -> Self {
        Redis::started(&["--requirepass", password])
    }

    /// Its default user given every key, without a password, and these `rules`.
    fn start_with_acl(rules: &[&str]) -> Self {
        let user = ["--user", "default", "on", "nopass", "~*"];
        Redis::started(&[&user[..], rules].concat())
    }

    /// On a free port, with these arguments besides.
    fn started(args: &[&str]) -> Self {
        let port = free_port();
        Redis::start_with(port, &[&["--port", &port.to_string()], args].concat())
    }

    fn start_with(port: u16, args: &[&str]) -> Self {
        // A directory of its own: a replica's full sync writes an RDB file there, which another
        // server started in the same directory would load.
        let dir = crate::cli::scratch_dir(&format!("redis-{port}"));
        let mut child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("Ready to accept connections"));
        assert!(ready, "redis-server on {port} did not start");
        std::thread::spawn(move || lines.for_each(drop));
        Redis {
            child,
            port,
            bus_port: None,
            dir,
        }
    }

    pub fn options(&self) -> SharedOptions {
        SharedOptions {
            // Tests try Redis again at once: recovery needs no waiting.
            retry_after: Duration::ZERO,
            ..SharedOptions::new(format!("redis://127.0.0.1:{}/0", self.port))
        }
    }

    /// A connection of the test's own, to look at what the gateways stored.
    pub async fn connect(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.options().url).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }

    /// The keys that match `pattern`.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut self.connect().await)
            .await
            .unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
