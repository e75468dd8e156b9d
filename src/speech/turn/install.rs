//! Installing the end-of-turn model: from the `pipecat-ai` wheel (or any zip) that carries
//! `smart-turn-v3.2-cpu.onnx`, or from the file itself, checked against its pinned sha256 and moved
//! into `speech.models_dir` whole (a model is either there complete or not at all).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::model::FILE_NAME;

/// sha256 of `smart-turn-v3.2-cpu.onnx` as the `pipecat-ai==1.14.0` wheel carries it.
pub const SHA256: &str = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f";
/// No end-of-turn model is near this size (the one the box uses is 8.7 MB).
const MAX_BYTES: u64 = 64 << 20;

/// Where the package puts the model (`make deb` carries it).
pub const PACKAGED: &str = "/usr/share/voca/models";

/// Where the box looks for the model: `speech.models_dir` (where `voca models install-turn` puts
/// it), else the package's copy.
pub fn model_path(models_dir: &Path) -> PathBuf {
    let installed = installed_path(models_dir);
    let packaged = Path::new(PACKAGED).join(FILE_NAME);
    if !installed.is_file() && packaged.is_file() {
        return packaged;
    }
    installed
}

/// Where `voca models install-turn` puts the model.
pub fn installed_path(models_dir: &Path) -> PathBuf {
    models_dir.join(FILE_NAME)
}

/// Installs the model from `source` (a wheel or zip carrying it, or the `.onnx`) into `models_dir`.
/// `expected`: the sha256 the model file must have (the pinned one unless told otherwise). Returns
/// the installed file.
pub fn install(source: &Path, models_dir: &Path, expected: &str) -> Result<PathBuf, String> {
    fs::create_dir_all(models_dir).map_err(|e| format!("cannot create {}: {e}", models_dir.display()))?;
    let target = installed_path(models_dir);
    let part = models_dir.join(format!("{FILE_NAME}.part"));
    let copied = copy_model(source, &part).and_then(|digest| {
        if digest.eq_ignore_ascii_case(expected.trim()) {
            Ok(())
        } else {
            Err(format!(
                "{FILE_NAME} from {} has sha256 {digest}, not the expected {expected}: a different or damaged model",
                source.display()
            ))
        }
    });
    let placed =
        copied.and_then(|()| fs::rename(&part, &target).map_err(|e| format!("cannot move it into place: {e}")));
    if placed.is_err() {
        let _ = fs::remove_file(&part);
    }
    placed.map(|()| target)
}

/// Copies the model out of `source` to `to` (at most [`MAX_BYTES`]), returning its sha256.
fn copy_model(source: &Path, to: &Path) -> Result<String, String> {
    let is_onnx = source.extension().is_some_and(|e| e == "onnx");
    let mut out = File::create(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    let mut hasher = Sha256::new();
    let mut write = |reader: &mut dyn Read| -> Result<(), String> {
        let mut limited = reader.take(MAX_BYTES + 1);
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = limited.read(&mut buf).map_err(|e| format!("cannot read {}: {e}", source.display()))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > MAX_BYTES {
                return Err(format!("{FILE_NAME} in {} is larger than any end-of-turn model", source.display()));
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| format!("cannot write {}: {e}", to.display()))?;
        }
        out.sync_all().map_err(|e| format!("cannot write {}: {e}", to.display()))
    };
    if is_onnx {
        let mut file = File::open(source).map_err(|e| format!("cannot open {}: {e}", source.display()))?;
        write(&mut file)?;
    } else {
        let bad = |e: zip::result::ZipError| format!("{} is not a wheel or zip archive: {e}", source.display());
        let file = File::open(source).map_err(|e| format!("cannot open {}: {e}", source.display()))?;
        let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).map_err(bad)?;
        let member = zip
            .file_names()
            .find(|n| Path::new(n).file_name().is_some_and(|f| f == FILE_NAME))
            .map(str::to_owned)
            .ok_or_else(|| {
                format!("{} carries no {FILE_NAME} (expected the pipecat-ai 1.14.0 wheel)", source.display())
            })?;
        let mut entry = zip.by_name(&member).map_err(bad)?;
        if entry.is_symlink() {
            return Err(format!("{member} in {} is a link, not the model", source.display()));
        }
        write(&mut entry)?;
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_with(path: &Path, member: &str, bytes: &[u8]) {
        let mut zip = zip::ZipWriter::new(File::create(path).expect("create"));
        zip.start_file(member, zip::write::SimpleFileOptions::default()).expect("start");
        zip.write_all(bytes).expect("write");
        zip.finish().expect("finish");
    }

    #[test]
    fn a_model_is_installed_whole_only_when_its_checksum_is_the_expected_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let models = dir.path().join("models");
        let wheel = dir.path().join("pipecat.whl");
        zip_with(&wheel, &format!("pipecat/audio/turn/smart_turn/data/{FILE_NAME}"), b"model bytes");
        let digest = hex(&Sha256::digest(b"model bytes"));
        // The pinned checksum is the real model's: these bytes are refused, and nothing is left.
        let refused = install(&wheel, &models, SHA256).expect_err("not the pinned model");
        assert!(refused.contains("sha256") && refused.contains(&digest), "{refused}");
        assert!(!installed_path(&models).exists());
        assert_eq!(fs::read_dir(&models).expect("list").count(), 0, "no partial file left");
        let installed = install(&wheel, &models, &digest).expect("installed");
        assert_eq!(fs::read(&installed).expect("read"), b"model bytes");
        // A wheel without it says what it expected.
        let other = dir.path().join("other.whl");
        zip_with(&other, "something/else.onnx", b"x");
        assert!(install(&other, &models, &digest).expect_err("no model").contains("pipecat-ai"));
        // Not an archive at all.
        fs::write(dir.path().join("junk.whl"), b"junk").expect("write");
        assert!(install(&dir.path().join("junk.whl"), &models, &digest).expect_err("junk").contains("not a wheel"));
        assert_eq!(fs::read(&installed).expect("read"), b"model bytes", "a failed install keeps the model there");
    }
}
