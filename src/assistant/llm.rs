//! The optional LLM: any OpenAI-compatible chat endpoint (`POST {url}/chat/completions`, streamed).
//! Every answer has a hard deadline; on timeout, refusal or error the caller gets the offline answer.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use thiserror::Error;

use crate::config::LlmConfig;

#[derive(Debug, Error)]
pub enum LlmError {
    #[error("the LLM did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the LLM at {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("the LLM answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the LLM's answer was empty")]
    Empty,
}

/// A client for one endpoint. `Debug` never shows the key.
#[derive(Clone)]
pub struct Llm {
    http: reqwest::Client,
    url: String,
    config: LlmConfig,
}

impl std::fmt::Debug for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llm").field("url", &self.url).field("model", &self.config.model).finish()
    }
}

impl Llm {
    /// `None` when `[llm] url` is not set.
    pub fn new(config: &LlmConfig) -> Option<Self> {
        let base = config.url.as_ref()?;
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).build().ok()?;
        Some(Self {
            http,
            url: format!("{}/chat/completions", base.as_str().trim_end_matches('/')),
            config: config.clone(),
        })
    }

    /// Asks for a short spoken answer to `heard`, with the conversation so far. Never takes longer
    /// than `[llm] timeout`.
    pub async fn ask(&self, heard: &str, history: &[(String, String)]) -> Result<String, LlmError> {
        let limit = self.config.timeout.0;
        tokio::time::timeout(limit, self.stream_answer(heard, history)).await.map_err(|_| LlmError::Timeout(limit))?
    }

    async fn stream_answer(&self, heard: &str, history: &[(String, String)]) -> Result<String, LlmError> {
        let mut messages = vec![json!({"role": "system", "content": self.config.system_prompt})];
        for (user, assistant) in history.iter().rev().take(6).rev() {
            messages.push(json!({"role": "user", "content": user}));
            messages.push(json!({"role": "assistant", "content": assistant}));
        }
        messages.push(json!({"role": "user", "content": heard}));
        let body = json!({"model": self.config.model, "messages": messages, "stream": true, "max_tokens": 200});
        let mut request = self.http.post(&self.url).json(&body);
        if self.config.api_key.is_set() {
            request = request.bearer_auth(self.config.api_key.expose());
        }
        let transport = |e: reqwest::Error| LlmError::Transport { url: self.url.clone(), reason: e.to_string() };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default().chars().take(200).collect();
            return Err(LlmError::Status { status: status.as_u16(), body });
        }
        // Server-sent events: `data: {json}` lines, `data: [DONE]` at the end.
        let mut text = String::new();
        let mut pending = String::new();
        let mut stream = response.bytes_stream();
        'read: while let Some(chunk) = stream.next().await {
            pending.push_str(&String::from_utf8_lossy(&chunk.map_err(transport)?));
            while let Some(newline) = pending.find('\n') {
                let line: String = pending.drain(..=newline).collect();
                let Some(data) = line.trim().strip_prefix("data:").map(str::trim) else { continue };
                if data == "[DONE]" {
                    break 'read;
                }
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(data) {
                    if let Some(delta) = event["choices"][0]["delta"]["content"].as_str() {
                        text.push_str(delta);
                    }
                }
            }
        }
        let text = text.trim().to_owned();
        if text.is_empty() {
            Err(LlmError::Empty)
        } else {
            Ok(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/v1")
    }

    fn llm(url: &str, timeout_ms: u64) -> Llm {
        let mut config = Config::defaults().llm;
        config.url = Some(url.parse().expect("url"));
        config.timeout = crate::config::Duration(Duration::from_millis(timeout_ms));
        config.api_key = crate::config::Secret::new("sk-test");
        Llm::new(&config).expect("configured")
    }

    #[tokio::test]
    async fn a_streamed_answer_is_assembled() {
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(|headers: axum::http::HeaderMap, body: String| async move {
                assert_eq!(headers["authorization"], "Bearer sk-test");
                assert!(body.contains("\"stream\":true") && body.contains("what is love"));
                "data: {\"choices\":[{\"delta\":{\"content\":\"Baby don't\"}}]}\n\n\
                 data: {\"choices\":[{\"delta\":{\"content\":\" hurt me.\"}}]}\n\ndata: [DONE]\n\n"
            }),
        );
        let url = serve(app).await;
        assert_eq!(llm(&url, 2000).ask("what is love", &[]).await.expect("answer"), "Baby don't hurt me.");
    }

    #[tokio::test]
    async fn slow_failing_or_absent_endpoints_give_errors_in_time() {
        let app = axum::Router::new()
            .route(
                "/slow/v1/chat/completions",
                axum::routing::post(|| async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    "data: [DONE]\n"
                }),
            )
            .route(
                "/err/v1/chat/completions",
                axum::routing::post(|| async { (axum::http::StatusCode::BAD_GATEWAY, "overloaded") }),
            );
        let base = serve(app).await.trim_end_matches("/v1").to_owned();
        let started = std::time::Instant::now();
        assert!(matches!(llm(&format!("{base}/slow/v1"), 300).ask("hi", &[]).await, Err(LlmError::Timeout(_))));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(
            llm(&format!("{base}/err/v1"), 2000).ask("hi", &[]).await,
            Err(LlmError::Status { status: 502, .. })
        ));
        assert!(matches!(llm("http://127.0.0.1:9/v1", 2000).ask("hi", &[]).await, Err(LlmError::Transport { .. })));
        assert!(Llm::new(&Config::defaults().llm).is_none(), "off unless configured");
    }
}
