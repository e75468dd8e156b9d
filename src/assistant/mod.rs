//! The assistant: what the box answers to what it heard. Offline first: configured intents, built-in
//! skills (time and date, repeat that, who is this, call a contact, leave a message, goodbye), a DTMF
//! menu and a fallback. An OpenAI-compatible LLM ([`llm`]) may answer what the offline rules cannot;
//! when it is slow, unreachable or failing, the offline answer stands.

pub mod llm;

use crate::config::Config;
use crate::speech::grammar::normalize;
use crate::speech::prompts::{self, Language};

/// What the box does besides speaking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    /// End the call after the reply.
    HangUp,
    /// Record the caller's message.
    Voicemail,
    /// Place a call to this contact (by name).
    Call(String),
}

/// Where an answer came from (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Intent,
    Skill,
    Menu,
    Llm,
    Fallback,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub action: Action,
    pub source: Source,
}

impl Reply {
    fn new(text: impl Into<String>, action: Action, source: Source) -> Self {
        Self { text: text.into(), action, source }
    }
}

/// One call's (or one push-to-talk session's) memory.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    pub last_reply: Option<String>,
    /// (caller said, box answered), oldest first; the LLM sees the last few.
    pub turns: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
struct ConfiguredIntent {
    phrases: Vec<String>,
    reply: String,
}

#[derive(Debug, Clone)]
pub struct Assistant {
    pub language: &'static Language,
    name: String,
    pub greeting: String,
    fallback: String,
    intents: Vec<ConfiguredIntent>,
    /// The contacts' names; they change from the LAN page while the box runs (see
    /// [`Assistant::set_contacts`]).
    contacts: std::sync::Arc<std::sync::RwLock<Vec<String>>>,
}

fn contains_phrase(heard: &str, phrase: &str) -> bool {
    !phrase.is_empty() && format!(" {heard} ").contains(&format!(" {phrase} "))
        || (phrase.contains(' ') && heard.contains(phrase))
}

fn any(heard: &str, words: &[&str]) -> bool {
    words.iter().any(|w| contains_phrase(heard, &normalize(w)) || (!w.is_ascii() && heard.contains(&normalize(w))))
}

impl Assistant {
    pub fn new(config: &Config) -> Self {
        let language = prompts::language(&config.speech.language);
        let or_default = |s: &str, d: &str| if s.trim().is_empty() { d.to_owned() } else { s.to_owned() };
        Self {
            language,
            name: config.assistant.name.clone(),
            greeting: or_default(&config.assistant.greeting, language.greeting),
            fallback: or_default(&config.assistant.fallback, language.fallback),
            intents: config
                .assistant
                .intents
                .iter()
                .map(|i| ConfiguredIntent {
                    phrases: i.phrases.iter().map(|p| normalize(p)).collect(),
                    reply: i.reply.clone(),
                })
                .collect(),
            contacts: std::sync::Arc::new(std::sync::RwLock::new(
                config.contacts.iter().map(|c| c.name.clone()).collect(),
            )),
        }
    }

    fn contacts(&self) -> Vec<String> {
        self.contacts.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The contacts changed: "call NAME" understands the new names from now on. (Recognizers in
    /// grammar mode learn them when the box's engine next starts: their grammar is fixed.)
    pub fn set_contacts(&self, names: Vec<String>) {
        *self.contacts.write().unwrap_or_else(std::sync::PoisonError::into_inner) = names;
    }

    /// Every phrase the offline assistant understands: a grammar for recognizers in grammar mode.
    pub fn grammar(&self) -> Vec<String> {
        let l = self.language;
        let mut phrases: Vec<String> = self.intents.iter().flat_map(|i| i.phrases.iter().cloned()).collect();
        phrases.extend(l.menu_phrases.iter().map(|p| normalize(p)));
        for name in &self.contacts() {
            phrases.extend(l.call_words.iter().map(|w| normalize(&format!("{w} {name}"))));
        }
        phrases.sort();
        phrases.dedup();
        phrases
    }

    /// The offline answer to `heard`, or `None` when only the fallback (or an LLM) could answer.
    pub fn understand(&self, heard: &str, conversation: &Conversation) -> Option<Reply> {
        let text = normalize(heard);
        if text.is_empty() {
            return None;
        }
        if let Some(intent) = self.intents.iter().find(|i| i.phrases.iter().any(|p| contains_phrase(&text, p))) {
            return Some(Reply::new(intent.reply.clone(), Action::None, Source::Intent));
        }
        let l = self.language;
        let skill = |t: String, a| Some(Reply::new(t, a, Source::Skill));
        if any(&text, l.goodbye_words) {
            return skill(l.goodbye.into(), Action::HangUp);
        }
        if any(&text, l.voicemail_words) {
            return skill(l.voicemail_intro.into(), Action::Voicemail);
        }
        if any(&text, l.call_words) {
            if let Some(name) = self.contacts().iter().find(|n| text.contains(&normalize(n))) {
                return skill(l.calling.replace("{name}", name), Action::Call(name.clone()));
            }
        }
        if any(&text, l.repeat_words) {
            let again = conversation.last_reply.clone().unwrap_or_else(|| l.nothing_to_repeat.into());
            return skill(again, Action::None);
        }
        if any(&text, l.time_words) {
            return skill(l.time.replace("{time}", &now_spoken(l, false)), Action::None);
        }
        if any(&text, l.date_words) {
            return skill(l.date.replace("{date}", &now_spoken(l, true)), Action::None);
        }
        if any(&text, l.who_words) {
            return skill(l.who.replace("{name}", &self.name), Action::None);
        }
        None
    }

    /// What the box says when nothing understood the caller.
    pub fn fallback(&self) -> Reply {
        Reply::new(self.fallback.clone(), Action::None, Source::Fallback)
    }

    /// The DTMF menu: 0 leave a message, 1 repeat, 2 the time, # goodbye.
    pub fn menu(&self, digit: char, conversation: &Conversation) -> Option<Reply> {
        let l = self.language;
        let reply = match digit {
            '0' => Reply::new(l.voicemail_intro, Action::Voicemail, Source::Menu),
            '1' => Reply::new(
                conversation.last_reply.clone().unwrap_or_else(|| l.nothing_to_repeat.into()),
                Action::None,
                Source::Menu,
            ),
            '2' => Reply::new(l.time.replace("{time}", &now_spoken(l, false)), Action::None, Source::Menu),
            '#' => Reply::new(l.goodbye, Action::HangUp, Source::Menu),
            _ => return None,
        };
        Some(reply)
    }
}

fn now_spoken(language: &Language, date: bool) -> String {
    let now = chrono::Local::now();
    match (language.code, date) {
        ("ko", false) => now.format("%H시 %M분").to_string(),
        ("ko", true) => now.format("%m월 %d일").to_string(),
        (_, false) => now.format("%-I:%M %p").to_string(),
        (_, true) => now.format("%A, %B %-d").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assistant(language: &str) -> Assistant {
        let mut config = Config::defaults();
        config.speech.language = language.into();
        config.assistant.intents =
            vec![crate::config::Intent { phrases: vec!["Opening hours".into()], reply: "We open at nine.".into() }];
        config.contacts = vec![crate::config::Contact {
            name: "Alice".into(),
            number: "+15551234567".parse().expect("number"),
            button: Some(1),
            emergency: false,
        }];
        Assistant::new(&config)
    }

    #[test]
    fn intents_and_skills_fire_from_recognised_text() {
        let a = assistant("en");
        let c = Conversation::default();
        let answer = |t: &str| a.understand(t, &c).map(|r| (r.source, r.action));
        assert_eq!(a.understand("what are your OPENING hours?", &c).map(|r| r.text), Some("We open at nine.".into()));
        assert_eq!(answer("what time is it"), Some((Source::Skill, Action::None)));
        assert_eq!(answer("please call alice"), Some((Source::Skill, Action::Call("Alice".into()))));
        assert_eq!(answer("i'd like to leave a message"), Some((Source::Skill, Action::Voicemail)));
        assert_eq!(answer("ok bye"), Some((Source::Skill, Action::HangUp)));
        assert_eq!(answer("who is this"), Some((Source::Skill, Action::None)));
        assert_eq!(answer("the weather on mars"), None);
        assert!(a.understand("what time is it", &c).expect("time").text.starts_with("It is "));
    }

    #[test]
    fn contacts_added_while_the_box_runs_are_called_by_name() {
        let a = assistant("en");
        let c = Conversation::default();
        assert_eq!(a.understand("call carol", &c).map(|r| r.action), None);
        a.clone().set_contacts(vec!["Alice".into(), "Carol".into()]);
        assert_eq!(a.understand("call carol", &c).map(|r| r.action), Some(Action::Call("Carol".into())));
        assert!(a.grammar().contains(&"call carol".to_owned()), "{:?}", a.grammar());
    }

    #[test]
    fn repeat_says_the_last_reply_again() {
        let a = assistant("en");
        let mut c = Conversation::default();
        assert_eq!(a.understand("repeat that", &c).expect("repeat").text, ENGLISH_NOTHING);
        c.last_reply = Some("We open at nine.".into());
        assert_eq!(a.understand("could you repeat", &c).expect("repeat").text, "We open at nine.");
        assert_eq!(a.menu('1', &c).expect("menu").text, "We open at nine.");
    }

    #[test]
    fn every_menu_phrase_is_understood() {
        for phrase in prompts::ENGLISH.menu_phrases {
            assert!(assistant("en").understand(phrase, &Conversation::default()).is_some(), "{phrase}");
        }
    }

    const ENGLISH_NOTHING: &str = "I have not said anything yet.";

    #[test]
    fn korean_skills_and_the_dtmf_menu() {
        let a = assistant("ko");
        let c = Conversation::default();
        let time = a.understand("지금 몇 시 예요", &c).expect("time");
        assert!(time.text.starts_with("지금은 "), "{}", time.text);
        assert_eq!(a.understand("안녕히 계세요", &c).map(|r| r.action), Some(Action::HangUp));
        assert_eq!(a.menu('0', &c).map(|r| r.action), Some(Action::Voicemail));
        assert_eq!(a.menu('#', &c).map(|r| r.action), Some(Action::HangUp));
        assert_eq!(a.menu('7', &c), None);
        assert!(a.grammar().iter().any(|p| p == "지금 몇 시 예요"));
        for phrase in prompts::KOREAN.menu_phrases {
            assert!(a.understand(phrase, &c).is_some(), "every menu phrase reaches a skill: {phrase}");
        }
        assert_eq!(a.greeting, prompts::KOREAN.greeting, "an unset greeting follows the language");
    }
}
