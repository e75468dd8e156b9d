//! Board profiles (pin maps) from a file: loaded, or refused with a message.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
}

fuzz_target!(|data: &[u8]| {
    let path = dir().path().join("board.toml");
    std::fs::write(&path, data).expect("write");
    let _ = voca::panel::board::Profile::load(&path.display().to_string());
});
