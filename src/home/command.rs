//! Commands from Home Assistant, as they land on the box's own command topics: each parsed into a
//! [`Command`] or refused with what was expected (logged; nothing is done).

use super::discovery::ANSWER_MODES;

/// The longest text `say` speaks.
const SAY_MAX: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Call the contact with this button object (`call_<name>`).
    Call(String),
    CallForHelp,
    HangUp,
    PlayMessages,
    DoNotDisturb(bool),
    AnswerMode(&'static str),
    Say(String),
}

/// `entity` is the topic's last level under `<base>/command/`.
pub fn parse(entity: &str, payload: &[u8]) -> Result<Command, String> {
    let text = std::str::from_utf8(payload).map_err(|_| format!("`{entity}`: the payload is not UTF-8 text"))?.trim();
    let press = |command: Command| {
        if text == "PRESS" {
            Ok(command)
        } else {
            Err(format!("`{entity}`: expected the payload PRESS, not {:?}", shorten(text)))
        }
    };
    match entity {
        "call_for_help" => press(Command::CallForHelp),
        "hang_up" => press(Command::HangUp),
        "play_messages" => press(Command::PlayMessages),
        "do_not_disturb" => match text {
            "ON" => Ok(Command::DoNotDisturb(true)),
            "OFF" => Ok(Command::DoNotDisturb(false)),
            other => Err(format!("`do_not_disturb`: expected ON or OFF, not {:?}", shorten(other))),
        },
        "answer_mode" => ANSWER_MODES
            .iter()
            .find(|m| **m == text)
            .map(|m| Command::AnswerMode(m))
            .ok_or_else(|| format!("`answer_mode`: expected one of {}, not {:?}", ANSWER_MODES.join(", "), shorten(text))),
        "say" => {
            let n = text.chars().count();
            if n == 0 || n > SAY_MAX {
                Err(format!("`say`: expected 1 to {SAY_MAX} characters of text, got {n}"))
            } else {
                Ok(Command::Say(text.to_owned()))
            }
        }
        contact if contact.starts_with("call_") => press(Command::Call(contact.to_owned())),
        other => Err(format!(
            "unknown command topic `{}`: expected call_<contact>, call_for_help, hang_up, play_messages, do_not_disturb, answer_mode or say",
            shorten(other)
        )),
    }
}

fn shorten(text: &str) -> String {
    text.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_bad_payloads_say_what_was_expected() {
        assert_eq!(parse("call_alice", b"PRESS"), Ok(Command::Call("call_alice".into())));
        assert_eq!(parse("do_not_disturb", b"ON"), Ok(Command::DoNotDisturb(true)));
        assert_eq!(parse("answer_mode", b"ring"), Ok(Command::AnswerMode("ring")));
        assert_eq!(parse("say", "  Dinner is ready  ".as_bytes()), Ok(Command::Say("Dinner is ready".into())));
        for (entity, payload, expected) in [
            ("do_not_disturb", &b"maybe"[..], "expected ON or OFF"),
            ("answer_mode", b"sing", "expected one of assistant"),
            ("hang_up", b"now", "expected the payload PRESS"),
            ("say", b"", "1 to 500 characters"),
            ("say", &[0xff, 0xfe][..], "not UTF-8"),
            ("reboot", b"PRESS", "unknown command topic `reboot`"),
        ] {
            let e = parse(entity, payload).expect_err(entity);
            assert!(e.contains(expected), "{entity}: {e}");
        }
    }
}
