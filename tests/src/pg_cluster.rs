//! A PostgreSQL cluster of a test's own, for tests that stop and start the database server.

use std::path::PathBuf;
use std::process::Stdio;

/// A PostgreSQL cluster of this test's own: initdb in a temporary directory, served on a free
/// loopback port. Stopping it disturbs no other test, so the fault suite runs beside the rest.
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// initdb and postgres refuse to run as root; there the cluster belongs to `postgres`.
    as_postgres: bool,
}

impl PrivateCluster {
    /// initdb, then start; panics with the reason if either fails.
    pub fn create() -> PrivateCluster {
        let bin = Self::bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = Self::command_output("id", &["-u"]).trim() == "0";
        if as_postgres {
            let owner = std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(
                owner.success(),
                "could not give the cluster directory to postgres"
            );
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let cluster = PrivateCluster {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = cluster.data();
        assert!(
            cluster.run(
                "initdb",
                &[
                    "-D",
                    &data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
            ),
            "initdb failed"
        );
        assert!(cluster.ctl("start"), "the private cluster did not start");
        cluster
    }

    /// The newest installed server's binaries (Debian: /usr/lib/postgresql/<version>/bin).
    fn bin_dir() -> PathBuf {
        if let Ok(dir) = std::env::var("LIGHTTECH_TEST_PG_BINDIR") {
            return PathBuf::from(dir);
        }
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .expect(
                "PostgreSQL's server binaries under /usr/lib/postgresql \
                 (or set LIGHTTECH_TEST_PG_BINDIR to the directory holding initdb and pg_ctl)",
            )
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
            .expect("a PostgreSQL version");
        PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"))
    }

    fn command_output(program: &str, args: &[&str]) -> String {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> bool {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            std::process::Command::new(&program)
        };
        command
            .args(args)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `start` or `stop` (fast shutdown); true on success.
    pub fn ctl(&self, action: &str) -> bool {
        let data = self.data();
        let socket_dir = self.dir.path().display().to_string();
        let options = format!(
            "-p {} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        let log = self.dir.path().join("server.log").display().to_string();
        match action {
            "start" => self.run(
                "pg_ctl",
                &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
            ),
            _ => self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]),
        }
    }

    /// A URL for its `postgres` database, as the `postgres` superuser.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}
