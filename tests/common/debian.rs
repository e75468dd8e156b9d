//! Debian packaging helpers shared by the service and image tests: this machine's package, a minimal
//! Debian 12 root file system to install it in, and commands that must succeed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::{repo, text};

/// The package `make deb-test` made for this machine.
pub fn deb() -> PathBuf {
    let dir = repo().join("target/debian/test");
    let found = std::fs::read_dir(&dir).ok().and_then(|entries| {
        entries.filter_map(|e| e.ok().map(|e| e.path())).find(|p| p.extension().is_some_and(|x| x == "deb"))
    });
    found.unwrap_or_else(|| panic!("no package in {}: `make deb-test` (part of `make test`) makes it", dir.display()))
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", text(&out).1);
    out
}

pub fn stdout(cmd: &mut Command) -> String {
    text(&run(cmd)).0
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `GET /healthz` once, with a short timeout: the body, or `None` if nothing answered.
pub fn healthz(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    use std::io::Write;
    write!(s, "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.starts_with("HTTP/1.0 200").then_some(body)
}

/// A minimal Debian 12 (systemd, the box's run-time libraries) unpacked for one test.
pub struct RootFs {
    dir: tempfile::TempDir,
}

impl RootFs {
    pub fn unpack() -> Self {
        let tar = repo().join(".cache/rootfs/bookworm.tar");
        assert!(tar.exists(), "{} is missing: `make test` builds it (scripts/setup.sh test-rootfs)", tar.display());
        let dir = tempfile::tempdir_in(repo().join("target")).expect("tempdir");
        run(Command::new("tar").arg("-C").arg(dir.path()).arg("-xf").arg(&tar));
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, path: &str, contents: &str) {
        let full = self.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, contents).expect("write");
    }

    /// Copies the package in, to be installed with apt from inside.
    pub fn add_package(&self) -> &'static str {
        std::fs::copy(deb(), self.path().join("root/voca.deb")).expect("copy the package");
        "/root/voca.deb"
    }

    /// Runs a command in the root file system without booting it (`systemd-nspawn`, no init).
    pub fn chroot(&self, args: &[&str]) -> Output {
        run(Command::new("systemd-nspawn")
            .args(["--quiet", "--register=no", "--keep-unit", "-D"])
            .arg(self.path())
            .args(args)
            .stdin(Stdio::null()))
    }
}
