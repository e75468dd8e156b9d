//! 16-bit PCM WAV files: greetings and recordings in (any rate, mono or multi-channel, mixed down to
//! mono), recordings and simulator captures out (mono).

use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum WavError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a usable WAV file: {why}; expected 16-bit PCM (e.g. `sox in.wav -b 16 out.wav`)")]
    Format { path: String, why: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    pub rate: u32,
    pub samples: Vec<i16>,
}

impl Wav {
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.rate.max(1))
    }
}

pub fn read(path: &Path) -> Result<Wav, WavError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| WavError::Io { path: name.clone(), source })?;
    parse(&bytes).map_err(|why| WavError::Format { path: name, why })
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    b.get(i..i + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    b.get(i..i + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parses a RIFF/WAVE file: walks the chunks, needs `fmt ` (PCM, 16-bit) and `data`; channels are
/// averaged into one.
pub fn parse(bytes: &[u8]) -> Result<Wav, String> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("no RIFF/WAVE header".into());
    }
    let mut at = 12;
    let mut format = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32_at(bytes, at + 4).unwrap_or(0) as usize;
        let body = at + 8;
        let end = body.saturating_add(size).min(bytes.len());
        match id {
            b"fmt " => {
                let tag = u16_at(bytes, body).ok_or("short fmt chunk")?;
                let channels = u16_at(bytes, body + 2).ok_or("short fmt chunk")?;
                let rate = u32_at(bytes, body + 4).ok_or("short fmt chunk")?;
                let bits = u16_at(bytes, body + 14).ok_or("short fmt chunk")?;
                // 0xFFFE is WAVE_FORMAT_EXTENSIBLE; its sub-format is PCM for files sox or espeak write.
                if !(tag == 1 || tag == 0xFFFE) || bits != 16 {
                    return Err(format!("format tag {tag}, {bits}-bit samples"));
                }
                if !(1..=8).contains(&channels) {
                    return Err(format!("{channels} channels (expected 1 to 8)"));
                }
                if !(4000..=192_000).contains(&rate) {
                    return Err(format!("sample rate {rate} Hz"));
                }
                format = Some((rate, channels));
            }
            b"data" => {
                let (rate, channels) = format.ok_or("data before the fmt chunk")?;
                let frame = 2 * usize::from(channels);
                let samples = bytes[body..end]
                    .chunks_exact(frame)
                    .map(|f| {
                        let sum: i32 = f.chunks_exact(2).map(|p| i32::from(i16::from_le_bytes([p[0], p[1]]))).sum();
                        (sum / i32::from(channels)) as i16
                    })
                    .collect();
                return Ok(Wav { rate, samples });
            }
            _ => {}
        }
        at = body + size + (size & 1);
    }
    Err("no data chunk".into())
}

pub fn encode(rate: u32, samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Reads a WAV and converts it to `rate` (mono).
pub fn read_at(path: &Path, rate: u32) -> Result<Vec<i16>, WavError> {
    let wav = read(path)?;
    Ok(crate::audio::resample::convert(&wav.samples, wav.rate, rate))
}

pub fn write(path: &Path, rate: u32, samples: &[i16]) -> std::io::Result<()> {
    std::fs::write(path, encode(rate, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_what_sox_writes() {
        let samples: Vec<i16> = (0..800).map(|i| (i * 37 % 2000 - 1000) as i16).collect();
        assert_eq!(parse(&encode(8000, &samples)), Ok(Wav { rate: 8000, samples: samples.clone() }));

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tone.wav");
        let status = std::process::Command::new("sox")
            .args(["-n", "-r", "16000", "-b", "16", "-c", "1"])
            .arg(&path)
            .args(["synth", "0.5", "sine", "440"])
            .status()
            .expect("sox is installed by make");
        assert!(status.success());
        let wav = read(&path).expect("sox WAV");
        assert_eq!((wav.rate, wav.samples.len()), (16000, 8000));
    }

    #[test]
    fn stereo_is_mixed_down_and_any_rate_is_converted() {
        let mut stereo = encode(22050, &[1000, 3000, -2000, -4000, 7, 9]);
        stereo[22] = 2; // channels
        stereo[32] = 4; // block align
        assert_eq!(parse(&stereo), Ok(Wav { rate: 22050, samples: vec![2000, -3000, 8] }));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stereo.wav");
        let status = std::process::Command::new("sox")
            .args(["-n", "-r", "44100", "-b", "16", "-c", "2"])
            .arg(&path)
            .args(["synth", "0.5", "sine", "440"])
            .status()
            .expect("sox is installed by make");
        assert!(status.success());
        let audio = read_at(&path, 16000).expect("sox stereo WAV");
        assert!((7990..=8010).contains(&audio.len()), "{} samples", audio.len());
        assert!(audio.iter().any(|s| s.unsigned_abs() > 10_000), "the tone survives the mix-down");
    }

    #[test]
    fn unusable_files_say_what_is_expected() {
        assert!(parse(b"hello").expect_err("not wav").contains("RIFF"));
        let mut many = encode(8000, &[0; 18]);
        many[22] = 9;
        assert!(parse(&many).expect_err("9 channels").contains("9 channels (expected 1 to 8)"));
        let e = read(Path::new("/nonexistent.wav")).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent.wav"));
    }
}
