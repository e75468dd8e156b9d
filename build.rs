//! Finds libvosk.so for the target and embeds an rpath, so `cargo run`, `cargo test` and a deployed
//! binary with libvosk.so beside it all run without LD_LIBRARY_PATH.
//!
//! Search order: $VOSK_LIB_DIR, then .deps/vosk/<target>/ (where `make` puts the library from the
//! `vosk` wheel for that target).

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=VOSK_LIB_DIR");
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let dir = match env::var_os("VOSK_LIB_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join(".deps/vosk")
            .join(&target),
    };
    let lib = dir.join("libvosk.so");
    println!("cargo:rerun-if-changed={}", lib.display());
    if !lib.is_file() {
        panic!(
            "libvosk.so for {target} not found in {}: run `make deps` (it unpacks it from the vosk==0.3.45 wheel), \
             or set VOSK_LIB_DIR to the folder that has it",
            dir.display()
        );
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    // $ORIGIN first (a box with libvosk.so beside the binary), then /usr/lib/voca (the package);
    // the build folder last, for `cargo run` and tests, and only for this machine: a cross-built
    // binary never runs where it was built, and the Makefile puts the library beside it.
    let rpath = if target == env::var("HOST").expect("cargo sets HOST") {
        format!("$ORIGIN:/usr/lib/voca:{}", dir.display())
    } else {
        "$ORIGIN:/usr/lib/voca".to_owned()
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{rpath}");

    // ONNX Runtime (Piper voices) is loaded at run time, never linked: a checkout's copy is found
    // in .deps/onnxruntime/<target>/ (where `make deps` puts it), a box's beside the binary.
    let ort = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join(".deps/onnxruntime")
        .join(&target);
    println!("cargo:rustc-env=DEV_ONNXRUNTIME_DIR={}", ort.display());
}
