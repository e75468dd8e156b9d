//! A real MQTT broker (Debian's mosquitto, as a plain process on a loopback port, no persistence)
//! and a client playing Home Assistant that records everything it receives.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn mosquitto() -> &'static str {
    if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

impl Broker {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = super::debian::free_port();
        let mut broker = Self { child: None, port, dir };
        broker.restart();
        broker
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the broker on the same port, with nothing retained.
    pub fn restart(&mut self) {
        self.stop();
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n", self.port),
        )
        .expect("config");
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto runs (make test-tools installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A message as the test client received it.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
}

/// Home Assistant's side: subscribed to everything, keeping what arrives.
pub struct HomeAssistant {
    pub client: AsyncClient,
    pub seen: Arc<Mutex<Vec<Message>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HomeAssistant {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HomeAssistant {
    pub async fn connect(port: u16) -> Self {
        // Each client its own id: a broker drops the older of two clients with the same one.
        static CLIENTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = CLIENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut options = MqttOptions::new(format!("ha-test-{}-{n}", std::process::id()), "127.0.0.1", port);
        options.set_max_packet_size(256 * 1024, 256 * 1024);
        let (client, mut events) = AsyncClient::new(options, 64);
        client.subscribe("#", QoS::AtLeastOnce).await.expect("subscribe");
        let seen: Arc<Mutex<Vec<Message>>> = Arc::default();
        let keep = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => keep.lock().expect("seen").push(Message {
                        topic: p.topic.clone(),
                        payload: String::from_utf8_lossy(&p.payload).into_owned(),
                        retain: p.retain,
                    }),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Self { client, seen, task }
    }

    /// Waits (generously) for a message matching `what`; returns it.
    pub async fn wait_for(&self, what: &str, matches: impl Fn(&Message) -> bool) -> Message {
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            if let Some(m) = self.seen.lock().expect("seen").iter().find(|m| matches(m)).cloned() {
                return m;
            }
            assert!(Instant::now() < deadline, "no {what}; seen: {:#?}", self.topics());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The newest payload on `topic`.
    pub fn last(&self, topic: &str) -> Option<String> {
        self.seen.lock().expect("seen").iter().rev().find(|m| m.topic == topic).map(|m| m.payload.clone())
    }

    /// Waits until the newest payload on `topic` is `payload`.
    pub async fn wait_state(&self, topic: &str, payload: &str) {
        let deadline = Instant::now() + Duration::from_secs(45);
        while self.last(topic).as_deref() != Some(payload) {
            assert!(Instant::now() < deadline, "{topic} never became {payload:?} (last {:?})", self.last(topic));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn clear(&self) {
        self.seen.lock().expect("seen").clear();
    }

    pub async fn send(&self, topic: &str, payload: &str) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).await.expect("publish");
    }

    fn topics(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("seen")
            .iter()
            .map(|m| format!("{} = {}", m.topic, m.payload.chars().take(80).collect::<String>()))
            .collect()
    }
}
