//! Signatures checked against Twilio's official Python helper library as an oracle, on randomised
//! URLs and parameter sets (repeated keys, mixed case, Unicode, characters that need escaping).

mod common;

use std::process::Command;

use voca::twilio::signature;

/// A small deterministic generator (xorshift), so a failure can be reproduced from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn text(&mut self, max: u64) -> String {
        const PARTS: &[&str] =
            &["a", "Z", "0", "9", "+", " ", "&", "=", "%", "é", "ß", "😀", "-", "_", ".", "\"", "<", "/"];
        (0..=self.next() % max).map(|_| self.pick(PARTS)).collect()
    }
}

fn python() -> String {
    let venv = common::repo().join(".cache/venv/bin/python");
    assert!(venv.exists(), "{} is missing: `make test` creates it with the `twilio` package", venv.display());
    venv.display().to_string()
}

#[test]
fn signatures_match_the_official_twilio_library() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let names = ["CallSid", "From", "To", "Digits", "digits", "SpeechResult", "Caller", "A", "a", "Zeta", "ÄÖ"];
    let hosts =
        ["https://box.example.com", "https://box.example.com:443", "http://10.0.0.2:8080", "https://x.ngrok.app"];
    let mut cases = Vec::new();
    for _ in 0..300 {
        let mut url = format!("{}/twilio/{}", rng.pick(&hosts), rng.pick(&["voice", "status", "media"]));
        if rng.next().is_multiple_of(2) {
            url.push_str(&format!("?k={}&z=2", rng.pick(&["1", "abc", "x%20y"])));
        }
        let params: Vec<(String, String)> =
            (0..rng.next() % 8).map(|_| (rng.pick(&names).to_owned(), rng.text(12))).collect();
        let token = format!("{:032x}", rng.next());
        cases.push((token, url, params));
    }
    let input = serde_json::to_string(&cases).expect("json");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cases.json");
    std::fs::write(&path, input).expect("write");
    let script = r#"
import json, sys
from twilio.request_validator import RequestValidator
class Multi(dict):
    # The shape of Flask's MultiDict: repeated form keys keep every value.
    def getall(self, key):
        return self[key]
out = []
for token, url, params in json.load(open(sys.argv[1], encoding="utf-8")):
    grouped = Multi()
    for k, v in params:
        grouped.setdefault(k, []).append(v)
    out.append(RequestValidator(token).compute_signature(url, grouped))
print(json.dumps(out))
"#;
    let output = Command::new(python()).args(["-c", script]).arg(&path).output().expect("run python");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let expected: Vec<String> = serde_json::from_slice(&output.stdout).expect("python's answer");
    assert_eq!(expected.len(), cases.len());
    for ((token, url, params), want) in cases.iter().zip(&expected) {
        assert_eq!(&signature::sign(token, url, params), want, "url {url} params {params:?}");
        assert!(signature::validate(token, url, params, want));
    }
}
