//! Speech recognition with VOSK: loading a model once, checked before libvosk ever sees the path.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::models;

#[derive(Debug, Error)]
pub enum SttError {
    #[error(
        "no VOSK model at {path}: install one with `voca models fetch NAME` or point `speech.model` at a model folder"
    )]
    ModelMissing { path: PathBuf },
    #[error(
        "libvosk could not load the model at {path}: the folder is incomplete or not a VOSK model; fetch it again"
    )]
    ModelLoad { path: PathBuf },
}

/// A loaded model and how long loading took.
pub struct LoadedModel {
    pub model: vosk::Model,
    pub took: Duration,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel").field("took", &self.took).finish_non_exhaustive()
    }
}

/// Loads the model at `path`. Blocking and slow (seconds, hundreds of MB): call it from a thread of
/// its own, never from an async task.
pub fn load_model(path: &Path) -> Result<LoadedModel, SttError> {
    if !models::is_model_dir(path) {
        return Err(SttError::ModelMissing { path: path.to_path_buf() });
    }
    // Kaldi's per-step LOG lines are noise on a box; warnings and errors still show.
    vosk::set_log_level(vosk::LogLevel::Warn);
    let started = Instant::now();
    let path_text = path.to_str().ok_or_else(|| SttError::ModelLoad { path: path.to_path_buf() })?;
    let model = vosk::Model::new(path_text).ok_or_else(|| SttError::ModelLoad { path: path.to_path_buf() })?;
    Ok(LoadedModel { model, took: started.elapsed() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_model_is_reported_without_calling_libvosk() {
        let e = load_model(Path::new("/nonexistent/model")).expect_err("missing");
        assert!(e.to_string().contains("voca models fetch"), "{e}");
    }

    #[test]
    fn a_folder_that_only_looks_like_a_model_fails_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["am/final.mdl", "conf/model.conf"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, b"not a model").expect("write");
        }
        let e = load_model(dir.path()).expect_err("garbage model");
        assert!(matches!(e, SttError::ModelLoad { .. }), "{e}");
    }

    #[test]
    fn the_test_model_loads_with_the_real_libvosk() {
        let path = models::test_model_path();
        let loaded = load_model(&path).unwrap_or_else(|e| panic!("{e} (make test installs it)"));
        let recognizer = vosk::Recognizer::new(&loaded.model, 16000.0);
        assert!(recognizer.is_some(), "a recognizer can be made from the loaded model");
    }
}
