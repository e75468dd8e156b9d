//! The end-of-turn model file (Smart Turn v3.2, BSD-2-Clause): checked as it loads (ONNX Runtime
//! must accept it, and it must take `input_features` of `[batch, 80, 800]` floats and give one
//! probability), then asked how likely it is that a speaker has finished.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::features::{self, FRAMES, MELS};

/// The file the box installs and looks for, in `speech.models_dir`.
pub const FILE_NAME: &str = "smart-turn-v3.2-cpu.onnx";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TurnModelError {
    #[error(
        "no end-of-turn model at {path}: install it with `voca models install-turn` (from the pipecat-ai wheel); \
         turns end after speech.endpoint_hangover of quiet meanwhile"
    )]
    Missing { path: PathBuf },
    #[error("ONNX Runtime, needed by the end-of-turn model, cannot be loaded: {reason}")]
    Runtime { reason: String },
    #[error("the end-of-turn model {path} cannot be used: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("the end-of-turn model failed on a decision: {0}")]
    Inference(String),
}

/// The model, loaded and checked.
pub struct TurnModel {
    session: ort::session::Session,
    path: PathBuf,
}

impl std::fmt::Debug for TurnModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnModel").field("path", &self.path).finish_non_exhaustive()
    }
}

impl TurnModel {
    /// Loads `path` with ONNX Runtime from `library` (one inference thread: decisions are small and
    /// the box's other engines need the cores).
    pub fn load(path: &Path, library: &Path) -> Result<Self, TurnModelError> {
        if !path.is_file() {
            return Err(TurnModelError::Missing { path: path.into() });
        }
        let invalid = |reason: String| TurnModelError::Invalid { path: path.into(), reason };
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if size == 0 {
            return Err(invalid("the file is empty".into()));
        }
        let environment = crate::speech::onnx::runtime(library).map_err(|reason| TurnModelError::Runtime { reason })?;
        let session = ort::session::Session::builder(environment)
            .and_then(|b| Ok(b.with_intra_threads(1)?))
            .and_then(|b| Ok(b.with_inter_threads(1)?))
            .and_then(|mut b| b.commit_from_file(path))
            .map_err(|e| invalid(format!("ONNX Runtime refused it ({e}): a truncated or damaged download?")))?;
        check_shape(&session).map_err(invalid)?;
        Ok(Self { session, path: path.into() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The probability (0 to 1) that the speaker of `features` (see [`features::log_mel`]) has
    /// finished their turn.
    pub fn probability(&mut self, features: features::Features) -> Result<f32, TurnModelError> {
        use ort::value::Tensor;
        let fail = |e: ort::Error| TurnModelError::Inference(e.to_string());
        let input = Tensor::from_array(([1usize, MELS, FRAMES], features)).map_err(fail)?;
        let outputs = self.session.run(ort::inputs!["input_features" => input]).map_err(fail)?;
        let (_, values) = outputs[0].try_extract_tensor::<f32>().map_err(fail)?;
        match values.first() {
            Some(p) if p.is_finite() => Ok(p.clamp(0.0, 1.0)),
            Some(p) => Err(TurnModelError::Inference(format!("the model answered {p}"))),
            None => Err(TurnModelError::Inference("the model answered nothing".into())),
        }
    }
}

/// The model must read `input_features` as `[batch, 80, 800]` floats and answer one float per item:
/// another model (another size, another version) is refused by name, never half-used.
fn check_shape(session: &ort::session::Session) -> Result<(), String> {
    let expected = format!("input_features: float [batch, {MELS}, {FRAMES}]");
    let [input] = session.inputs() else {
        return Err(format!("it takes {} inputs: expected one, {expected}", session.inputs().len()));
    };
    let shape = input.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
    let float = input.dtype().tensor_type() == Some(ort::value::TensorElementType::Float32);
    if input.name() != "input_features" || !float || shape.len() != 3 || shape[1..] != [MELS as i64, FRAMES as i64] {
        return Err(format!(
            "it takes {} {:?} {shape:?}: expected {expected}",
            input.name(),
            input.dtype().tensor_type()
        ));
    }
    let [output] = session.outputs() else {
        return Err(format!("it gives {} outputs: expected one probability", session.outputs().len()));
    };
    let shape = output.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
    if shape.len() != 2 || shape[1] != 1 {
        return Err(format!("it answers {} {shape:?}: expected one probability per item, [batch, 1]", output.name()));
    }
    Ok(())
}
