//! A server process on loopback for xtask's runs against it (schemathesis, bench-serve): a free
//! port, start-up until `/health` answers 200, peak memory, and a clean SIGTERM stop.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A port nothing listens on now (the OS picks it; a race with another process is possible but
/// shows as a failed start, never as a wrong measurement).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A child server, killed if dropped while running.
#[derive(Debug)]
pub(crate) struct Server {
    name: String,
    child: Child,
    pub(crate) port: u16,
}

impl Server {
    /// Starts `command` (its output to `log`) and waits until `GET /health` on `port` answers
    /// 200, or fails with the log's tail if the process exits or `timeout` passes.
    pub(crate) fn start(
        name: &str,
        command: &mut Command,
        port: u16,
        log: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        let mut server = Self {
            name: name.to_owned(),
            child,
            port,
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{name} exited during start-up ({status}); its log {}:\n{}",
                    log.display(),
                    tail(log)
                );
            }
            if matches!(http_get(port, "/health"), Ok((200, _))) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} was not healthy after {timeout:?}; its log {}:\n{}",
                    log.display(),
                    tail(log)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory since start (`VmHWM`), in bytes.
    pub(crate) fn peak_rss(&self) -> Option<u64> {
        self.status_kib("VmHWM:").map(|kib| kib * 1024)
    }

    /// Resident memory now (`VmRSS`), in bytes.
    pub(crate) fn rss(&self) -> Option<u64> {
        self.status_kib("VmRSS:").map(|kib| kib * 1024)
    }

    /// A `/proc/PID/status` field in KiB.
    fn status_kib(&self, field: &str) -> Option<u64> {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix(field))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    pub(crate) fn stop(mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        // No libc in xtask: `kill` sends the signal.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let status = self.child.wait()?;
                bail!(
                    "{} did not stop within {grace:?} of SIGTERM (killed: {status})",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last lines of a log, for error messages.
pub(crate) fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A blocking `GET` on loopback: status and body. Enough for health probes; the load generator
/// has a real client.
pub(crate) fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Runs a cargo build command (`build …` or `test --no-run …`) and returns the path cargo reports
/// for binary `bin` (not its unit-test harness), so target dirs and profiles need no guessing.
pub(crate) fn cargo_build_bin(root: &Path, args: &[&str], bin: &str) -> anyhow::Result<PathBuf> {
    cargo_executable(root, args, bin, Some(false))
}

/// [`cargo_build_bin`] for any target: `test` picks the test harness (an integration test's
/// binary, a library's unit tests: `Some(true)`) or a plain binary (`Some(false)`); `None`
/// takes either (a bench).
pub(crate) fn cargo_executable(
    root: &Path,
    args: &[&str],
    bin: &str,
    test: Option<bool>,
) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root)
        .stderr(Stdio::inherit());
    let output = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !output.status.success() {
        bail!("cargo {} failed ({})", args.join(" "), output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| {
            msg["reason"] == "compiler-artifact"
                && msg["target"]["name"] == bin
                && test.is_none_or(|test| msg["profile"]["test"] == test)
        })
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo {} built no executable named {bin}", args.join(" ")))
}

/// The `kiln` binary to run against: the test build (`dev`: what CI has built already) or the
/// release build, built if needed.
pub(crate) fn kiln_binary(root: &Path, dev: bool) -> anyhow::Result<PathBuf> {
    if dev {
        test_kiln(root)
    } else {
        cargo_build_bin(
            root,
            &["build", "--release", "-p", "kiln-server", "--bin", "kiln"],
            "kiln",
        )
    }
}

/// The `kiln` binary the workspace's tests use (`cargo test --workspace --no-run`: after CI's
/// test step, nothing to build).
pub(crate) fn test_kiln(root: &Path) -> anyhow::Result<PathBuf> {
    cargo_build_bin(root, &["test", "--workspace", "--no-run"], "kiln")
}
