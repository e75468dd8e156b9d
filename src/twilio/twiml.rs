//! TwiML the box answers with, written with an XML writer (attribute and text escaping included).

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, Event};
use quick_xml::Writer;

/// Why a call is refused before it is answered (Twilio plays a busy tone or a rejection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Busy,
    Rejected,
}

fn document(body: impl FnOnce(&mut Writer<Vec<u8>>) -> std::io::Result<()>) -> String {
    let mut w = Writer::new(Vec::with_capacity(256));
    let written = (|| {
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        w.write_event(Event::Start(BytesStart::new("Response")))?;
        body(&mut w)?;
        w.write_event(Event::End(BytesEnd::new("Response")))
    })();
    written.expect("writing XML to memory cannot fail");
    String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8")
}

/// `<Connect><Stream url="…"><Parameter name value/>…</Stream></Connect>`: a bidirectional Media Stream.
pub fn connect_stream(url: &str, parameters: &[(&str, &str)]) -> String {
    document(|w| {
        w.write_event(Event::Start(BytesStart::new("Connect")))?;
        w.write_event(Event::Start(BytesStart::new("Stream").with_attributes([("url", url)])))?;
        for (name, value) in parameters {
            w.write_event(Event::Empty(
                BytesStart::new("Parameter").with_attributes([("name", *name), ("value", *value)]),
            ))?;
        }
        w.write_event(Event::End(BytesEnd::new("Stream")))?;
        w.write_event(Event::End(BytesEnd::new("Connect")))
    })
}

/// `<Reject reason="busy|rejected"/>`: refuses the call without answering it (unbilled).
pub fn reject(reason: Reject) -> String {
    let reason = match reason {
        Reject::Busy => "busy",
        Reject::Rejected => "rejected",
    };
    document(|w| w.write_event(Event::Empty(BytesStart::new("Reject").with_attributes([("reason", reason)]))).map(drop))
}

/// `<Say>` then `<Hangup/>`: used when the box cannot take the call but must tell the caller why.
pub fn say_and_hang_up(text: &str) -> String {
    document(|w| {
        w.write_event(Event::Start(BytesStart::new("Say")))?;
        w.write_event(Event::Text(quick_xml::events::BytesText::new(text)))?;
        w.write_event(Event::End(BytesEnd::new("Say")))?;
        w.write_event(Event::Empty(BytesStart::new("Hangup")))
    })
}

/// `<Dial callerId="…">number</Dial>`: connects the caller to another number (a transfer).
pub fn dial(number: &str, caller_id: &str) -> String {
    document(|w| {
        w.write_event(Event::Start(BytesStart::new("Dial").with_attributes([("callerId", caller_id)])))?;
        w.write_event(Event::Start(BytesStart::new("Number")))?;
        w.write_event(Event::Text(quick_xml::events::BytesText::new(number)))?;
        w.write_event(Event::End(BytesEnd::new("Number")))?;
        w.write_event(Event::End(BytesEnd::new("Dial")))
    })
}

/// `<Hangup/>`: ends the call at once (a call-out that reached an answering machine).
pub fn hang_up() -> String {
    document(|w| w.write_event(Event::Empty(BytesStart::new("Hangup"))))
}

/// `<Response/>`: the empty answer (status callbacks, redirects that need nothing).
pub fn empty() -> String {
    document(|_| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_carries_its_parameters_escaped() {
        let xml = connect_stream("wss://box.example.com/twilio/media", &[("token", "a\"b&c<d>")]);
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect><Stream url=\"wss://box.example.com/twilio/media\">\
             <Parameter name=\"token\" value=\"a&quot;b&amp;c&lt;d&gt;\"/></Stream></Connect></Response>"
        );
    }

    #[test]
    fn rejections_and_says() {
        assert!(reject(Reject::Busy).ends_with("<Response><Reject reason=\"busy\"/></Response>"));
        assert!(reject(Reject::Rejected).contains("reason=\"rejected\""));
        assert!(say_and_hang_up("Tom & Jerry <3").contains("<Say>Tom &amp; Jerry &lt;3</Say><Hangup/>"));
        assert!(empty().ends_with("<Response></Response>"));
        assert!(dial("+15551234567", "+15557654321")
            .ends_with("<Response><Dial callerId=\"+15557654321\"><Number>+15551234567</Number></Dial></Response>"));
    }
}
