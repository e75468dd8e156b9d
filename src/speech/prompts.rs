//! The box's fixed phrases, per language. `speech.language` picks the table; `assistant.greeting` and
//! `assistant.fallback` override those two when set.

/// A language's prompts and the words its built-in skills listen for.
#[derive(Debug, Clone, Copy)]
pub struct Language {
    pub code: &'static str,
    pub greeting: &'static str,
    pub fallback: &'static str,
    pub goodbye: &'static str,
    pub one_moment: &'static str,
    /// The recognizer fell too far behind and let the caller's words go.
    pub missed: &'static str,
    pub trouble: &'static str,
    pub reprompt: &'static str,
    pub voicemail_intro: &'static str,
    pub voicemail_saved: &'static str,
    /// The message could not be stored (a full or failing card): said instead of "saved".
    pub voicemail_not_saved: &'static str,
    /// The voicemail folder holds only messages nobody has heard yet: said instead of the beep.
    pub voicemail_full: &'static str,
    pub nothing_to_repeat: &'static str,
    /// `{name}`: the box's name.
    pub who: &'static str,
    /// `{name}`: the contact.
    pub calling: &'static str,
    /// `{time}`.
    pub time: &'static str,
    /// `{date}`.
    pub date: &'static str,
    pub time_words: &'static [&'static str],
    pub date_words: &'static [&'static str],
    pub repeat_words: &'static [&'static str],
    pub who_words: &'static [&'static str],
    pub voicemail_words: &'static [&'static str],
    pub goodbye_words: &'static [&'static str],
    pub call_words: &'static [&'static str],
    /// What a listener says over a speaker without taking the turn ("mhm"): a transcript of only
    /// these does not stop the box's reply for good (see `call::conversation::resume`).
    pub backchannels: &'static [&'static str],
    /// Single words that stop the box's reply for good however short ("stop").
    pub stop_words: &'static [&'static str],
    /// Whole sentences callers say to the built-in skills: the grammar in grammar mode.
    pub menu_phrases: &'static [&'static str],
    /// Said on the box's speaker. `{name}`: a contact.
    pub offline_queued: &'static str,
    pub not_configured: &'static str,
    pub no_contact: &'static str,
    pub no_answer: &'static str,
    pub call_failed: &'static str,
    pub nobody_answered: &'static str,
    pub emergency: &'static str,
    /// `{last4}`: the caller's number's last four digits.
    pub message_from: &'static str,
    pub missed_from: &'static str,
    pub no_messages: &'static str,
    /// Before the digits of the LAN page's first set-up code.
    pub setup_code: &'static str,
}

pub const ENGLISH: Language = Language {
    code: "en",
    greeting: "Hello, you have reached VOCA Box. How can I help?",
    fallback: "Sorry, I did not catch that. Could you say it again?",
    goodbye: "Goodbye.",
    one_moment: "One moment please.",
    missed: "Sorry, I missed that. Please say it again.",
    trouble: "Sorry, I am having trouble. Please try again later.",
    reprompt: "Are you still there? You can ask me the time, or say leave a message.",
    voicemail_intro: "Please leave your message after the tone. Press pound when you are done.",
    voicemail_saved: "Thank you. Your message is saved. Goodbye.",
    voicemail_not_saved: "I am sorry: your message could not be saved. Please call again later. Goodbye.",
    voicemail_full: "I am sorry: the mailbox is full and cannot take a message now. Please call again later. Goodbye.",
    nothing_to_repeat: "I have not said anything yet.",
    who: "This is {name}, a voice assistant box.",
    calling: "Calling {name}.",
    time: "It is {time}.",
    date: "Today is {date}.",
    time_words: &["what time", "the time", "time is it"],
    date_words: &["what day", "the date", "today's date", "what's the date"],
    repeat_words: &["repeat", "say that again", "say again", "pardon"],
    who_words: &["who are you", "who is this", "what are you", "who am i talking to"],
    voicemail_words: &["leave a message", "take a message", "voicemail", "leave message"],
    goodbye_words: &["goodbye", "good bye", "bye", "hang up", "that's all", "that is all"],
    call_words: &["call", "phone", "ring"],
    stop_words: &["stop", "wait", "no", "quiet", "enough", "cancel"],
    backchannels: &["mhm", "mm", "hmm", "uh-huh", "uh", "um", "ah", "oh", "yeah", "yes", "okay", "ok", "right"],
    menu_phrases: &[
        "what time is it",
        "what is the date",
        "say that again",
        "who is this",
        "leave a message",
        "goodbye",
    ],
    offline_queued: "I can't reach the phone network right now. I will keep trying to call {name}.",
    not_configured: "Calling is not set up on this box yet.",
    no_contact: "No contact is set for this button.",
    no_answer: "{name} did not answer.",
    call_failed: "The call to {name} did not go through.",
    nobody_answered: "Nobody answered.",
    emergency: "Calling for help.",
    message_from: "Message from the number ending in {last4}.",
    missed_from: "Missed call from the number ending in {last4}.",
    no_messages: "You have no new messages.",
    setup_code: "The set-up code for this box's page is",
};

pub const KOREAN: Language = Language {
    code: "ko",
    greeting: "안녕하세요. 보카 박스입니다. 무엇을 도와 드릴까요?",
    fallback: "죄송합니다. 다시 말씀해 주시겠어요?",
    goodbye: "안녕히 계세요.",
    one_moment: "잠시만 기다려 주세요.",
    missed: "죄송해요, 잘 못 들었어요. 다시 말씀해 주세요.",
    trouble: "죄송합니다. 문제가 생겼습니다. 나중에 다시 걸어 주세요.",
    reprompt: "아직 계신가요? 시간을 물어보시거나 메시지를 남기실 수 있습니다.",
    voicemail_intro: "삐 소리 후에 메시지를 남겨 주세요. 끝나면 우물 정자를 눌러 주세요.",
    voicemail_saved: "감사합니다. 메시지가 저장되었습니다. 안녕히 계세요.",
    voicemail_not_saved: "죄송합니다. 메시지를 저장하지 못했습니다. 나중에 다시 걸어 주세요. 안녕히 계세요.",
    voicemail_full:
        "죄송합니다. 메시지함이 가득 차서 지금은 메시지를 남길 수 없습니다. 나중에 다시 걸어 주세요. 안녕히 계세요.",
    nothing_to_repeat: "아직 드린 말씀이 없습니다.",
    who: "저는 {name} 음성 비서입니다.",
    calling: "{name}에게 전화합니다.",
    time: "지금은 {time}입니다.",
    date: "오늘은 {date}입니다.",
    time_words: &["몇 시", "몇시", "시간"],
    date_words: &["며칠", "날짜", "무슨 요일"],
    repeat_words: &["다시 말", "다시 한번", "뭐라고"],
    who_words: &["누구", "누구세요"],
    voicemail_words: &["메시지", "음성 사서함", "메모"],
    goodbye_words: &["안녕히", "끊어", "그만", "끝"],
    call_words: &["전화"],
    stop_words: &["잠깐", "잠깐만", "잠깐만요", "그만", "아니", "아니요", "멈춰", "취소"],
    backchannels: &["음", "응", "어", "아", "네", "예", "흠", "으", "그래", "그래요"],
    menu_phrases: &[
        "지금 몇 시 예요",
        "오늘 며칠 이에요",
        "다시 말해 주세요",
        "누구세요",
        "메시지 남길게요",
        "안녕히 계세요",
    ],
    offline_queued: "지금은 전화망에 연결할 수 없습니다. {name}에게 계속 전화를 시도하겠습니다.",
    not_configured: "이 박스에는 아직 전화 설정이 되어 있지 않습니다.",
    no_contact: "이 버튼에 연결된 연락처가 없습니다.",
    no_answer: "{name}이 받지 않았습니다.",
    call_failed: "{name}에게 전화를 걸 수 없었습니다.",
    nobody_answered: "아무도 받지 않았습니다.",
    emergency: "도움을 요청합니다.",
    message_from: "끝자리 {last4} 번호의 메시지입니다.",
    missed_from: "끝자리 {last4} 번호의 부재중 전화입니다.",
    no_messages: "새 메시지가 없습니다.",
    setup_code: "이 박스 페이지의 설정 코드는",
};

/// The language codes the box has prompts in.
pub fn codes() -> Vec<&'static str> {
    vec![ENGLISH.code, KOREAN.code]
}

/// The language table for `code` (`en`, `en-us`, `ko`…); English when unknown.
pub fn language(code: &str) -> &'static Language {
    match code.split(['-', '_']).next().unwrap_or("").to_ascii_lowercase().as_str() {
        "ko" => &KOREAN,
        _ => &ENGLISH,
    }
}
