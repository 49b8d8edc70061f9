//! A Redis server a test starts itself, on a free port, as its own child process:
//! the only server a test may shut down, stop or restart (never the shared one).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server gets to start answering, or to exit after a shutdown.
const WAIT: Duration = Duration::from_secs(20);

/// A `redis-server` child of this test; killed and reaped when dropped.
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    password: Option<String>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` on a free port of 127.0.0.1 with `args` (its data and
    /// log in a temporary directory), and waits until it answers. `password`, if
    /// any, is required of clients (`requirepass`).
    pub(crate) fn start(args: &[&str], password: Option<&str>) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        if let Some(pw) = password {
            args.extend(["--requirepass".to_owned(), pw.to_owned()]);
        }
        let mut server = RedisServer {
            child: None,
            port: 0,
            args,
            password: password.map(str::to_owned),
            dir,
        };
        // A free port can be taken between finding it and the server binding it:
        // then try another.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!(
            "could not start redis-server on a free port (see {:?})",
            server.log()
        );
    }

    /// The URL of this server (with its password, if any).
    pub(crate) fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `redis-cli shutdown nosave` against this server, then reaps it.
    pub(crate) fn shutdown_nosave(&mut self) {
        let mut cli = Command::new("redis-cli");
        cli.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(pw) = &self.password {
            cli.args(["--no-auth-warning", "-a", pw]);
        }
        let status = cli
            .args(["shutdown", "nosave"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli (is redis-tools installed?)");
        // redis-cli reports the dropped connection of a shutdown as a failure.
        let _ = status;
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + WAIT;
        loop {
            if child.try_wait().expect("wait").is_some() {
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server {} did not exit after shutdown", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port with the same arguments.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "shut it down first");
        let deadline = Instant::now() + WAIT;
        // The port may linger for a moment after the old server closed it.
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "could not restart redis-server on port {} (see {:?})",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server (this test's own child).
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Spawns the server and waits until it answers; `false` if it exited (its
    /// port was taken).
    fn spawn(&mut self) -> bool {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", &path_str(self.dir.path())])
            .args(["--logfile", &path_str(&self.log())])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (is redis-server installed?)");
        let deadline = Instant::now() + WAIT;
        loop {
            if child.try_wait().expect("wait").is_some() {
                return false;
            }
            if self.answers() {
                self.child = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-server on port {} did not answer within {WAIT:?}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut conn).is_ok()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL ends it even when it is stopped (SIGSTOP).
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("a UTF-8 temp path").to_owned()
}
