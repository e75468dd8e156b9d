//! The Media Streams wire format: one serde enum per direction, SID newtypes, base64 decoded at the
//! edge into a fixed buffer. Unknown events parse as [`Inbound::Unknown`] and are ignored by callers.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The most audio one inbound `media` message may carry: 200 ms (Twilio sends 20 ms).
pub const MAX_MEDIA_BYTES: usize = 1600;

macro_rules! sid {
    ($name:ident, $prefix:literal, $what:literal) => {
        #[doc = concat!("A Twilio ", $what, " SID: `", $prefix, "` and 32 hex digits.")]
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, String> {
                let hex = s.strip_prefix($prefix).unwrap_or("");
                if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(format!(
                        concat!("invalid ", $what, " SID \"{}\": expected ", $prefix, " and 32 hex digits"),
                        s.chars().take(40).collect::<String>()
                    ))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// A SID taken as is: one the box's own records hold (checked when it came in; a row
            /// an older version wrote is still shown, never refused), or one Twilio's API gave.
            pub fn trusted(s: String) -> Self {
                Self(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = Cow::<'de, str>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

sid!(CallSid, "CA", "call");
sid!(StreamSid, "MZ", "stream");
sid!(RecordingSid, "RE", "recording");

/// A message from Twilio.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Inbound<'a> {
    Connected {
        #[serde(default)]
        protocol: Option<String>,
    },
    Start {
        #[serde(rename = "streamSid")]
        stream_sid: StreamSid,
        start: Start,
    },
    Media {
        #[serde(borrow)]
        media: MediaIn<'a>,
    },
    Dtmf {
        dtmf: DtmfIn,
    },
    Mark {
        mark: MarkIn,
    },
    Stop {},
    /// An event this box does not know: logged and ignored, never fatal.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
pub struct Start {
    #[serde(rename = "callSid")]
    pub call_sid: CallSid,
    #[serde(rename = "accountSid", default)]
    pub account_sid: Option<String>,
    #[serde(rename = "customParameters", default)]
    pub custom_parameters: HashMap<String, String>,
    #[serde(rename = "mediaFormat", default)]
    pub media_format: Option<MediaFormat>,
}

#[derive(Debug, Deserialize)]
pub struct MediaFormat {
    pub encoding: String,
    #[serde(rename = "sampleRate")]
    pub sample_rate: u32,
    #[serde(default = "one")]
    pub channels: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
pub struct MediaIn<'a> {
    #[serde(borrow)]
    pub payload: Cow<'a, str>,
    #[serde(default)]
    pub track: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub struct DtmfIn {
    pub digit: String,
}

#[derive(Debug, Deserialize)]
pub struct MarkIn {
    pub name: String,
}

/// Why an inbound message was not usable. The session logs it and carries on.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("malformed Media Streams message ({0}): expected JSON with an \"event\" field")]
    Json(#[from] serde_json::Error),
    #[error("media payload of about {0} bytes is over the {MAX_MEDIA_BYTES}-byte limit: frame dropped")]
    TooLarge(usize),
    #[error("media payload is not valid base64: frame dropped")]
    Base64,
    #[error("unsupported media format {encoding} at {rate} Hz: expected audio/x-mulaw at 8000 Hz")]
    Format { encoding: String, rate: u32 },
}

impl<'a> Inbound<'a> {
    pub fn parse(text: &'a str) -> Result<Self, FrameError> {
        Ok(serde_json::from_str(text)?)
    }
}

impl MediaIn<'_> {
    /// Decodes the payload into `buf` (mu-law bytes); returns how many bytes it holds.
    pub fn decode_into(&self, buf: &mut [u8; MAX_MEDIA_BYTES]) -> Result<usize, FrameError> {
        let estimate = self.payload.len() / 4 * 3;
        if estimate > MAX_MEDIA_BYTES + 2 {
            return Err(FrameError::TooLarge(estimate));
        }
        STANDARD.decode_slice(self.payload.as_bytes(), buf).map_err(|e| match e {
            base64::DecodeSliceError::OutputSliceTooSmall => FrameError::TooLarge(estimate),
            base64::DecodeSliceError::DecodeError(_) => FrameError::Base64,
        })
    }

    /// Whether this is the caller's audio (Twilio streams only the inbound track with `<Connect>`).
    pub fn is_inbound(&self) -> bool {
        self.track.as_deref().is_none_or(|t| t.starts_with("inbound"))
    }
}

impl Start {
    pub fn check_format(&self) -> Result<(), FrameError> {
        match &self.media_format {
            Some(f) if f.encoding != "audio/x-mulaw" || f.sample_rate != 8000 || f.channels != 1 => {
                Err(FrameError::Format { encoding: f.encoding.clone(), rate: f.sample_rate })
            }
            _ => Ok(()),
        }
    }
}

/// A message to Twilio.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Outbound<'a> {
    Media {
        #[serde(rename = "streamSid")]
        stream_sid: &'a str,
        media: MediaOut<'a>,
    },
    Mark {
        #[serde(rename = "streamSid")]
        stream_sid: &'a str,
        mark: MarkOut<'a>,
    },
    Clear {
        #[serde(rename = "streamSid")]
        stream_sid: &'a str,
    },
}

#[derive(Debug, Serialize)]
pub struct MediaOut<'a> {
    pub payload: &'a str,
}

#[derive(Debug, Serialize)]
pub struct MarkOut<'a> {
    pub name: &'a str,
}

/// Base64 of one 20 ms mu-law frame: 160 bytes -> 216 characters.
pub const FRAME_B64: usize = 216;

/// Encodes up to 160 mu-law bytes into `buf`, returning the base64 text.
pub fn encode_frame<'b>(frame: &[u8], buf: &'b mut [u8; FRAME_B64]) -> &'b str {
    let n = STANDARD.encode_slice(frame, buf).expect("160 bytes fit 216 base64 characters");
    std::str::from_utf8(&buf[..n]).expect("base64 is ASCII")
}

impl Outbound<'_> {
    /// The JSON text, written into `out` (cleared first) so a session reuses one buffer.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.clear();
        serde_json::to_writer(&mut *out, self).expect("serialising to memory cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "CA0123456789abcdef0123456789abcdef";
    const MZ: &str = "MZ0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_twilios_documented_messages() {
        assert!(matches!(
            Inbound::parse(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#),
            Ok(Inbound::Connected { .. })
        ));
        let start = format!(
            r#"{{"event":"start","sequenceNumber":"1","streamSid":"{MZ}","start":{{"accountSid":"AC1","streamSid":"{MZ}","callSid":"{CA}","tracks":["inbound"],"customParameters":{{"token":"t0k"}},"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}}}}"#
        );
        match Inbound::parse(&start).expect("start") {
            Inbound::Start { stream_sid, start } => {
                assert_eq!(stream_sid.as_str(), MZ);
                assert_eq!(start.call_sid.as_str(), CA);
                assert_eq!(start.custom_parameters.get("token").map(String::as_str), Some("t0k"));
                assert!(start.check_format().is_ok());
            }
            other => panic!("{other:?}"),
        }
        let media = format!(
            r#"{{"event":"media","sequenceNumber":"2","streamSid":"{MZ}","media":{{"track":"inbound","chunk":"1","timestamp":"20","payload":"//8A"}}}}"#
        );
        match Inbound::parse(&media).expect("media") {
            Inbound::Media { media } => {
                assert!(matches!(media.payload, Cow::Borrowed(_)), "payload is borrowed, not copied");
                let mut buf = [0u8; MAX_MEDIA_BYTES];
                assert_eq!(media.decode_into(&mut buf).expect("decode"), 3);
                assert_eq!(&buf[..3], &[0xFF, 0xFF, 0x00]);
            }
            other => panic!("{other:?}"),
        }
        let dtmf = format!(
            r#"{{"event":"dtmf","streamSid":"{MZ}","sequenceNumber":"9","dtmf":{{"track":"inbound_track","digit":"5"}}}}"#
        );
        assert!(matches!(Inbound::parse(&dtmf), Ok(Inbound::Dtmf { dtmf }) if dtmf.digit == "5"));
        let mark =
            format!(r#"{{"event":"mark","sequenceNumber":"10","streamSid":"{MZ}","mark":{{"name":"reply-3"}}}}"#);
        assert!(matches!(Inbound::parse(&mark), Ok(Inbound::Mark { mark }) if mark.name == "reply-3"));
        let stop = format!(
            r#"{{"event":"stop","sequenceNumber":"11","streamSid":"{MZ}","stop":{{"accountSid":"AC1","callSid":"{CA}"}}}}"#
        );
        assert!(matches!(Inbound::parse(&stop), Ok(Inbound::Stop {})));
    }

    #[test]
    fn unknown_events_and_bad_frames_are_errors_not_panics() {
        assert!(matches!(Inbound::parse(r#"{"event":"hologram","data":1}"#), Ok(Inbound::Unknown)));
        assert!(matches!(Inbound::parse("not json"), Err(FrameError::Json(_))));
        assert!(matches!(Inbound::parse(r#"{"no":"event"}"#), Err(FrameError::Json(_))));
        let bad_sid = r#"{"event":"start","streamSid":"MZ1","start":{"callSid":"CA1"}}"#;
        assert!(Inbound::parse(bad_sid).expect_err("bad sid").to_string().contains("stream SID"));
        let mut buf = [0u8; MAX_MEDIA_BYTES];
        let bad = MediaIn { payload: "@@@@".into(), track: None };
        assert!(matches!(bad.decode_into(&mut buf), Err(FrameError::Base64)));
        let huge = MediaIn { payload: "A".repeat(4000).into(), track: None };
        assert!(matches!(huge.decode_into(&mut buf), Err(FrameError::TooLarge(_))));
        let start = format!(
            r#"{{"event":"start","streamSid":"{MZ}","start":{{"callSid":"{CA}","mediaFormat":{{"encoding":"audio/l16","sampleRate":16000}}}}}}"#
        );
        match Inbound::parse(&start).expect("parses") {
            Inbound::Start { start, .. } => assert!(start.check_format().is_err()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn outbound_messages_match_the_protocol() {
        let mut buf = [0u8; FRAME_B64];
        let payload = encode_frame(&[0xFF; 160], &mut buf);
        assert_eq!(payload.len(), 216);
        let mut out = Vec::new();
        Outbound::Media { stream_sid: MZ, media: MediaOut { payload: "//8=" } }.write_json(&mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!(r#"{{"event":"media","streamSid":"{MZ}","media":{{"payload":"//8="}}}}"#)
        );
        Outbound::Mark { stream_sid: MZ, mark: MarkOut { name: "reply-1" } }.write_json(&mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!(r#"{{"event":"mark","streamSid":"{MZ}","mark":{{"name":"reply-1"}}}}"#)
        );
        Outbound::Clear { stream_sid: MZ }.write_json(&mut out);
        assert_eq!(String::from_utf8_lossy(&out), format!(r#"{{"event":"clear","streamSid":"{MZ}"}}"#));
    }
}
