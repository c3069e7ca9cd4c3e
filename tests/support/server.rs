//! The one way tests and benches start `shoprank serve` as a process
//! (included by path from `tests/integration/common.rs` and `benches/`).
//!
//! The server binds `127.0.0.1:0`, so the kernel picks a free port and no
//! two servers race for one; it prints `listening on ADDR` on standard
//! output once bound, which is where the address is read from. The harness
//! then waits on `/ready` (a warm server answers 200) rather than on a
//! sleep, and kills the process (SIGKILL) when dropped, so a failed
//! assertion leaves nothing running. Standard library only: benches and
//! tests share it without sharing dependencies.

#![allow(dead_code)] // each including crate uses a part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to print its address and to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A running `shoprank serve`.
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    /// Where its log goes when it is not shown, to tell why it failed.
    log: Option<std::path::PathBuf>,
}

impl ServerProcess {
    /// Starts `binary serve` on an ephemeral port with `env` (settings as
    /// `SHOPRANK__SECTION__KEY` variables) and waits until `/ready` is 200.
    /// The server's log goes to this process's standard error when
    /// `show_log`, else to a temporary file whose end a failed start shows.
    pub fn start(binary: &str, env: &[(&str, &str)], show_log: bool) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let log = (!show_log).then(|| {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::env::temp_dir().join(format!("shoprank-serve-{}-{n}.log", std::process::id()))
        });
        let stderr = match &log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create the server's log file")),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(binary)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start shoprank serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        // Reads the address line, then drains standard output until the
        // process ends, so the server never blocks writing to it.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { return };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = sender.send(addr.trim().parse::<SocketAddr>());
                    break;
                }
            }
            lines.for_each(drop);
        });
        let addr = receiver.recv_timeout(START_TIMEOUT);
        let mut server = Self { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), log };
        match addr {
            Ok(Ok(addr)) => server.addr = addr,
            outcome => server.fail(&format!("printed no address within {START_TIMEOUT:?} ({outcome:?})")),
        }
        server.wait_ready();
        server
    }

    /// Polls `/ready` until 200; fails at once if the process has ended.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !matches!(self.request("GET", "/ready", None), Ok((200, _))) {
            if let Some(status) = self.try_wait() {
                self.fail(&format!("exited ({status}) before it was ready"));
            }
            if Instant::now() > deadline {
                self.fail(&format!("was not ready within {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process and panics with `what` and the end of its log.
    fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log.as_ref().and_then(|path| std::fs::read_to_string(path).ok()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
        panic!("shoprank serve {what}; the end of its log:\n{}", tail.join("\n"))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One HTTP/1.1 request on a fresh connection; status and body.
    pub fn request(&self, method: &str, path: &str, json_body: Option<&str>) -> std::io::Result<(u16, String)> {
        http(self.port(), method, path, json_body)
    }

    /// SIGKILL, and reap: the process gets no chance to clean up.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
        self.child.wait().expect("reap");
    }

    /// SIGTERM: a graceful shutdown.
    pub fn sigterm(&self) {
        Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("kill -TERM");
    }

    /// The exit status if the process has ended (after
    /// [`ServerProcess::sigterm`]), without waiting.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait for shoprank serve")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(path) = &self.log {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One HTTP/1.1 request to `127.0.0.1:port` over a fresh connection, with a
/// JSON body if given; returns the status and the body.
pub fn http(port: u16, method: &str, path: &str, json_body: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = json_body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut rest = String::new();
    reader.read_to_string(&mut rest)?;
    Ok((status, rest.split("\r\n\r\n").nth(1).unwrap_or("").to_string()))
}
