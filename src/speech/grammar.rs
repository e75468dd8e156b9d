//! The words a grammar-mode recognizer may hear: how text is normalized before it is compared, and
//! which of the box's phrases a grammar decode most likely was. The assistant supplies the phrases.

/// Lower case, punctuation removed, spaces collapsed: how heard and configured phrases are compared.
pub fn normalize(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_alphanumeric() || c == '\'' { c.to_lowercase().next().unwrap_or(c) } else { ' ' })
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The grammar phrase closest to what a grammar-mode recognizer heard. A grammar lets the decoder
/// string the phrases' words together in any order ("지금 예요 시 예요"), so the phrase whose words
/// were heard most completely wins; `None` when no phrase reaches half its words.
pub fn pick_phrase<'p>(heard: &str, phrases: &'p [String]) -> Option<&'p str> {
    let heard: Vec<String> = normalize(heard).split(' ').map(str::to_owned).collect();
    phrases
        .iter()
        .filter_map(|phrase| {
            let words: Vec<&str> = phrase.split(' ').filter(|w| !w.is_empty()).collect();
            let found = words.iter().filter(|w| heard.iter().any(|h| h == *w)).count();
            let score = found as f64 / words.len().max(1) as f64;
            (score >= 0.5).then_some((score, found, phrase.as_str()))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        .map(|(_, _, phrase)| phrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_output_is_mapped_to_the_closest_phrase() {
        let phrases: Vec<String> = ["지금 몇 시 예요", "안녕히 계세요", "다시 말해 주세요"].map(String::from).to_vec();
        // What the Korean model made of espeak-ng saying each phrase in grammar mode.
        assert_eq!(pick_phrase("지금 예요 시 예요", &phrases), Some("지금 몇 시 예요"));
        assert_eq!(pick_phrase("예요 계세요", &phrases), Some("안녕히 계세요"));
        assert_eq!(pick_phrase("다시 말해 주세요 시 예요", &phrases), Some("다시 말해 주세요"));
        assert_eq!(pick_phrase("<UNK>", &phrases), None);
    }

    #[test]
    fn normalizing_keeps_words_and_apostrophes_only() {
        assert_eq!(normalize("  What's the TIME?! "), "what's the time");
    }
}
