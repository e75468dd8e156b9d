//! TwiML the box writes from user text (contact names, numbers, greetings): always well-formed XML.
#![no_main]
use libfuzzer_sys::fuzz_target;
use voca::twilio::twiml;

fn well_formed(xml: &str) {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut depth = 0i32;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(_)) => depth += 1,
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(quick_xml::events::Event::Text(t)) => {
                t.unescape().unwrap_or_else(|e| panic!("bad escape in {xml:?}: {e}"));
            }
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("not well-formed: {e}: {xml:?}"),
        }
    }
    assert_eq!(depth, 0, "unbalanced: {xml:?}");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_at(text.char_indices().nth(text.chars().count() / 2).map_or(0, |(i, _)| i));
    well_formed(&twiml::say_and_hang_up(&text));
    well_formed(&twiml::dial(a, b));
    well_formed(&twiml::connect_stream(a, &[("token", b), (b, a)]));
});
