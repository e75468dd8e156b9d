//! The README's "Try a phone call without a phone" block, run as written: `make run` in the
//! background, then the caller's commands. Everything it needs is installed by `make test`.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The first ```sh block after `heading` in the README.
fn block_after(heading: &str) -> String {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).expect("README.md");
    let section = &readme[readme.find(heading).unwrap_or_else(|| panic!("README has no {heading:?}"))..];
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = section[start..].find("```").expect("the block ends") + start;
    section[start..end].to_owned()
}

/// Kills the whole process group (the background `make run` and the box it starts) on drop.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a process group this test created.
        unsafe { libc::kill(-(self.0 as i32), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        // SAFETY: as above; signal 0 only asks whether the group still exists.
        while unsafe { libc::kill(-(self.0 as i32), 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-(self.0 as i32), libc::SIGKILL) };
    }
}

#[test]
fn the_readme_phone_call_example_runs_as_written() {
    let script = block_after("## Try a phone call without a phone");
    assert!(script.contains("make run &"), "{script}");
    let repo = common::repo();
    for leftover in ["question.wav", "heard.wav"] {
        let _ = std::fs::remove_file(repo.join(leftover));
    }
    // Output goes to files: the box left running in the background keeps any pipe open.
    let logs = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = Command::new("bash")
        .arg("-ec")
        .arg(&script)
        .current_dir(repo)
        .env_remove("TWILIO_AUTH_TOKEN")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .process_group(0)
        .spawn()
        .expect("bash");
    let group = Group(child.id());
    let status = child.wait().expect("the block ran");
    drop(group);
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    for leftover in ["question.wav", "heard.wav"] {
        let _ = std::fs::remove_file(repo.join(leftover));
    }
    assert!(status.success(), "the README block failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("\"webhook_status\": 200"), "the simulated call was answered:\n{stdout}");
    assert!(stdout.contains("\"kind\": \"dtmf\""), "the key presses were answered:\n{stdout}");
    assert!(stdout.contains("\"closed_by_box\": true"), "# ended the call from the box:\n{stdout}");
    // libvosk's bundled OpenBLAS may print "BLAS : Bad memory unallocation!" to stdout at exit.
    let transcript = stdout.lines().rfind(|l| !l.starts_with("BLAS :")).unwrap_or_default();
    assert!(!transcript.trim().is_empty(), "transcribe printed what it heard:\n{stdout}\n{stderr}");
}
