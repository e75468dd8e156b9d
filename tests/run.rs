//! `voca run`: comes up on loopback, answers /healthz, and shuts down in order on SIGTERM and SIGINT.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::voca;

struct Running {
    child: Child,
    addr: String,
    log: Vec<String>,
    lines: std::sync::mpsc::Receiver<String>,
}

/// Kills the box if a test fails before it stopped it.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `voca run` on a free port and waits for its "listening on" line.
fn start(dir: &std::path::Path) -> Running {
    std::fs::write(dir.join("voca.toml"), "[http]\nlisten = \"127.0.0.1:0\"\n").expect("write config");
    let mut child = voca(dir)
        .args(["--config", "voca.toml", "run"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn voca run");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut running = Running { child, addr: String::new(), log: Vec::new(), lines };
    while running.addr.is_empty() {
        let line = running
            .lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no listening line in:\n{}", running.log.join("\n")));
        if let Some(rest) = line.split("listening on http://").nth(1) {
            running.addr = rest.split_whitespace().next().expect("address").to_owned();
        }
        running.log.push(line);
    }
    running
}

fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

fn stop_with(signal: i32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut running = start(dir.path());
    let health = get(&running.addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"state\":\"offline\"") && health.contains("\"status\":\"ok\""), "{health}");

    // An idle keep-alive client must not hold the shutdown up past the deadline.
    let _idle = TcpStream::connect(&running.addr).expect("connect");

    let pid = running.child.id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = running.child.try_wait().expect("wait") {
            break status;
        }
        assert!(sent.elapsed() < Duration::from_secs(15), "voca did not exit after the signal");
        std::thread::sleep(Duration::from_millis(20));
    };
    running.log.extend(running.lines.try_iter());
    let log = running.log.join("\n");
    assert!(status.success(), "exit {status:?}:\n{log}");
    let name = if signal == libc::SIGTERM { "SIGTERM" } else { "SIGINT" };
    assert!(log.contains(&format!("{name} received")), "{log}");
    assert!(log.lines().last().is_some_and(|l| l.contains("stopped")), "the last line says stopped:\n{log}");
}

#[test]
fn sigterm_stops_the_box_in_order() {
    stop_with(libc::SIGTERM);
}

#[test]
fn sigint_stops_the_box_in_order() {
    stop_with(libc::SIGINT);
}

#[test]
fn a_busy_listen_address_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("voca.toml"), format!("[http]\nlisten = \"{addr}\"\n")).expect("write config");
    let out = voca(dir.path()).args(["--config", "voca.toml", "run"]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {addr}")) && stderr.contains("`http.listen`"), "{stderr}");
}
