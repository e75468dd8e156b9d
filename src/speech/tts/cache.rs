//! Fixed prompts (greeting, hold, goodbye, errors) rendered once per voice and kept on disk, so
//! start-up and first calls never wait for synthesis. One file per voice and text: 16 kHz 16-bit
//! little-endian samples, named by a hash of what made them. A file that cannot be read back is
//! rendered again; one that cannot be written costs only the next start-up's time.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{TtsKind, TtsOptions, VoiceStatus};

/// Bumped when the rendering changes in a way the key does not show.
const FORMAT: u32 = 1;

#[derive(Debug, Clone)]
pub struct PromptCache {
    dir: PathBuf,
    /// What makes this voice's audio: engine, voice (and its file), pace.
    identity: String,
}

impl PromptCache {
    pub fn new(dir: &Path, voice: &VoiceStatus, options: &TtsOptions) -> Self {
        let file = match voice.engine {
            "piper" if options.kind == TtsKind::Piper => {
                let onnx = options.piper_voice_path();
                let meta = std::fs::metadata(&onnx).ok();
                let modified = meta.as_ref().and_then(|m| m.modified().ok());
                format!("{}:{:?}:{:?}", onnx.display(), meta.map(|m| m.len()), modified)
            }
            _ => format!("rate={}:pitch={}", options.rate, options.pitch),
        };
        let identity = format!("{FORMAT}:{}:{}:{}:{file}", voice.engine, voice.voice, voice.espeak_version);
        Self { dir: dir.to_path_buf(), identity }
    }

    fn path(&self, text: &str) -> PathBuf {
        let mut hash = Sha256::new();
        hash.update(self.identity.as_bytes());
        hash.update([0]);
        hash.update(text.as_bytes());
        let digest = hash.finalize();
        let name: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.pcm"))
    }

    /// The prompt as this voice rendered it before, if it is kept.
    pub fn get(&self, text: &str) -> Option<Vec<i16>> {
        let bytes = std::fs::read(self.path(text)).ok()?;
        if bytes.is_empty() || bytes.len() % 2 != 0 {
            return None;
        }
        Some(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect())
    }

    /// Keeps a rendered prompt (written aside, then renamed: never half a file).
    pub fn put(&self, text: &str, audio: &[i16]) {
        if audio.is_empty() {
            return;
        }
        let path = self.path(text);
        let kept = std::fs::create_dir_all(&self.dir).and_then(|()| {
            let partial = path.with_extension("partial");
            let bytes: Vec<u8> = audio.iter().flat_map(|s| s.to_le_bytes()).collect();
            std::fs::write(&partial, bytes)?;
            std::fs::rename(&partial, &path)
        });
        if let Err(e) = kept {
            tracing::warn!(
                "cannot keep a rendered prompt in {}: {e} (it is rendered again next start)",
                self.dir.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_kept_per_voice_and_text_and_a_damaged_file_is_rendered_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = TtsOptions::espeak("en-us", 165, 50);
        let status = |voice: &str| VoiceStatus {
            engine: "espeak",
            voice: voice.into(),
            fallback: None,
            espeak_version: "1.51".into(),
        };
        let cache = PromptCache::new(dir.path(), &status("en-us"), &options);
        assert_eq!(cache.get("Hello."), None);
        cache.put("Hello.", &[1, -2, 300]);
        assert_eq!(cache.get("Hello."), Some(vec![1, -2, 300]));
        assert_eq!(cache.get("Goodbye."), None, "per text");
        let other = PromptCache::new(dir.path(), &status("en-gb"), &options);
        assert_eq!(other.get("Hello."), None, "per voice");
        std::fs::write(cache.path("Hello."), [1u8, 2, 3]).expect("damage");
        assert_eq!(cache.get("Hello."), None);
    }
}
