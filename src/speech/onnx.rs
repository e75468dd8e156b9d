//! ONNX Runtime, the one library the box's neural engines share (Piper voices, the end-of-turn
//! model): found beside the binary or where the package or `make deps` put it, tried in a child
//! process first (a library that crashes as it loads costs a fallback, not the box), loaded once
//! per process (it allows one environment).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// The process's ONNX Runtime, loaded from `library` the first time (later calls get the same one,
/// or the same reason it could not load).
pub fn runtime(library: &Path) -> Result<&'static ort::environment::Environment, String> {
    static RUNTIME: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    let result = RUNTIME.get_or_init(|| {
        if !library.is_file() {
            return Err(format!("{} does not exist", library.display()));
        }
        ort::init_from(library).map_err(|e| e.to_string())?.with_name("voca").build().map_err(|e| e.to_string())
    });
    result.as_ref().map_err(Clone::clone)
}

/// Where `libonnxruntime.so` is looked for when `speech.onnxruntime` does not say: beside the
/// binary, the package's library folder, and (for a checkout) where `make deps` puts it.
pub fn find_runtime(configured: Option<&Path>) -> PathBuf {
    if let Some(path) = configured {
        return path.to_path_buf();
    }
    const NAME: &str = "libonnxruntime.so";
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        candidates.push(dir.join(NAME));
    }
    candidates.push(PathBuf::from("/usr/lib/voca").join(NAME));
    candidates.push(Path::new(env!("DEV_ONNXRUNTIME_DIR")).join(NAME));
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| candidates.swap_remove(0))
}

/// How long a probe may take (loading a model and one inference, on a slow Pi, with a cold disk).
const PROBE_PATIENCE: Duration = Duration::from_secs(120);

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// The library crashed the child, or the probe could not run or finish.
    Runtime(String),
    /// The child ran and refused the model: its last words.
    Model(String),
}

/// Tries `onnx` with ONNX Runtime from `library` in a child process (`voca <command> ONNX
/// --onnxruntime LIBRARY`) before the box loads them itself: a library that crashes as it loads (a
/// wrong build for the board, a broken download) then costs a fallback, not the box. A success is
/// remembered in `memo` (keyed by the binary, the library, the model and `more` files), so later
/// starts skip it.
///
/// Only the `voca` binary probes; a program using the library (tests, tools) loads in-process.
pub fn probe(
    command: &[&str],
    onnx: &Path,
    library: &Path,
    more: &[PathBuf],
    memo: Option<&Path>,
) -> Result<(), ProbeFailure> {
    let Ok(exe) = std::env::current_exe() else { return Ok(()) };
    if exe.file_stem().and_then(|n| n.to_str()) != Some("voca") {
        return Ok(());
    }
    let stamp = |p: &Path| {
        let meta = std::fs::metadata(p).ok();
        format!("{}:{:?}:{:?}", p.display(), meta.as_ref().map(|m| m.len()), meta.and_then(|m| m.modified().ok()))
    };
    let mut keyed = vec![exe.as_path(), library, onnx];
    keyed.extend(more.iter().map(PathBuf::as_path));
    let key = keyed.into_iter().map(stamp).collect::<Vec<_>>().join("\n");
    if memo.and_then(|m| std::fs::read_to_string(m).ok()).is_some_and(|k| k == key) {
        return Ok(());
    }
    let runtime_error = ProbeFailure::Runtime;
    let mut child = std::process::Command::new(&exe)
        .args(["--config", "/dev/null"])
        .args(command)
        .arg(onnx)
        .arg("--onnxruntime")
        .arg(library)
        // Quiet, so its stderr (read once it ends) stays far below a pipe's buffer: just the error.
        .env("RUST_LOG", "error")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| runtime_error(format!("cannot start a probe of {}: {e}", library.display())))?;
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < PROBE_PATIENCE => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(runtime_error(format!(
                    "trying {} with {} did not finish within {} s",
                    library.display(),
                    onnx.display(),
                    PROBE_PATIENCE.as_secs()
                )));
            }
        }
    };
    if status.success() {
        if let Some(memo) = memo {
            let _ = memo.parent().map(std::fs::create_dir_all);
            let _ = std::fs::write(memo, &key);
        }
        return Ok(());
    }
    let mut said = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut said);
    }
    use std::os::unix::process::ExitStatusExt;
    Err(match status.signal() {
        Some(signal) => {
            runtime_error(format!("{} crashed the process that loaded it (signal {signal})", library.display()))
        }
        None => ProbeFailure::Model(
            said.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no reason given").trim().to_owned(),
        ),
    })
}
