//! `groundedness`: a hallucination heuristic. It scores `groundedness` in
//! `0.0..=1.0`, how much of the answer is supported by the retrieved
//! context:
//!
//! ```text
//! value = supported content words / content words
//!         - number-penalty × unsupported numbers
//!         - name-penalty   × unsupported names        (clamped to 0..=1)
//! ```
//!
//! * Content words are the answer's words minus stopwords and bare numbers;
//!   one is supported if its light stem occurs in any context passage
//!   ("notes" matches "noted").
//! * Numbers and capitalised names are the claims an LLM most often
//!   invents, so each one found in neither the context nor the user's input
//!   costs a fixed penalty on top of the ratio. The input counts as support
//!   here because echoing the question's own figures or names is not a
//!   hallucination. List markers (`1.` at the start of a line) are ignored.
//! * No context, or an answer with fewer than `min-content-words` content
//!   words, yields no score: "cannot judge" is not "grounded".

use flywheel_plugin::{
    Event, Score, Scorer, config, log,
    text::{self, Number, TokenSet},
};

/// The plugin type exported to the host.
pub struct Groundedness;

impl Scorer for Groundedness {
    fn score(event: Event) -> Result<Vec<Score>, String> {
        let settings = SETTINGS.with(|m| m.get_or_init(Settings::from_config));
        Ok(assess(&event, &settings).into_iter().collect())
    }
}

thread_local! {
    /// The config, parsed once per instance.
    static SETTINGS: config::Memo<Settings> = const { config::Memo::new() };
}

flywheel_plugin::export_scorer!(Groundedness);

/// The score's name, shared with routers (see `hitl-router`).
pub const SCORE_NAME: &str = "groundedness";

/// How many unsupported numbers and names the reason lists.
const MAX_LISTED: usize = 5;

/// Tunables read from the manifest's `[config]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Below this many content words the answer is not judged (default 3).
    pub min_content_words: usize,
    /// Penalty per unsupported number (default 0.2).
    pub number_penalty: f64,
    /// Penalty per unsupported name (default 0.1).
    pub name_penalty: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            min_content_words: 3,
            number_penalty: 0.2,
            name_penalty: 0.1,
        }
    }
}

impl Settings {
    /// Read the settings, falling back to the defaults.
    pub fn from_config() -> Self {
        let d = Settings::default();
        Settings {
            min_content_words: config::get_u64("min-content-words", d.min_content_words as u64) as usize,
            number_penalty: config::get_f64("number-penalty", d.number_penalty).clamp(0.0, 1.0),
            name_penalty: config::get_f64("name-penalty", d.name_penalty).clamp(0.0, 1.0),
        }
    }
}

/// What [`assess`] found, before it is turned into a score.
#[derive(Debug, Clone, PartialEq)]
pub struct Findings<'a> {
    /// Content words in the answer.
    pub content_words: usize,
    /// Of those, how many occur in the context.
    pub supported_words: usize,
    /// Distinct numbers (as written) in neither context nor input.
    pub unsupported_numbers: Vec<&'a str>,
    /// Distinct names in neither context nor input.
    pub unsupported_names: Vec<&'a str>,
}

impl Findings<'_> {
    /// The score value for these findings (see the crate docs).
    pub fn value(&self, settings: &Settings) -> f64 {
        let ratio = self.supported_words as f64 / self.content_words.max(1) as f64;
        let penalty = settings.number_penalty * self.unsupported_numbers.len() as f64
            + settings.name_penalty * self.unsupported_names.len() as f64;
        (ratio - penalty).clamp(0.0, 1.0)
    }
}

/// Score one event; `None` when it cannot be judged.
pub fn assess(event: &Event, settings: &Settings) -> Option<Score> {
    if !event.has_context() {
        log::debug("groundedness: no context, cannot judge");
        return None;
    }
    let findings = find(event);
    if findings.content_words < settings.min_content_words.max(1) {
        log::debug(&format!(
            "groundedness: {} content word(s) < min-content-words {}, cannot judge",
            findings.content_words, settings.min_content_words
        ));
        return None;
    }
    let value = findings.value(settings);
    let label = if value >= 0.8 {
        "grounded"
    } else if value >= 0.5 {
        "partly-grounded"
    } else {
        "ungrounded"
    };
    Some(
        Score::new(SCORE_NAME, value)
            .with_label(label)
            .with_reason(reason(&findings)),
    )
}

/// Compare the answer with the context (and, for numbers and names, the
/// input).
///
/// The input is read (and its words and numbers worked out) only when a number or a
/// name of the answer is not in the context: most answers never need it.
pub fn find(event: &Event) -> Findings<'_> {
    // Words are compared by the hash of their lower-cased light stem
    // (`text::stem_hash`): no lower-cased copy of any word is made.
    let context = event.context();
    let output = event.output();
    let context_len: usize = context.iter().map(String::len).sum();
    let mut context_words = TokenSet::with_capacity(context_len / 5);
    context_words.extend_stems(context.iter().map(String::as_str));

    let mut content_words = 0;
    let mut supported_words = 0;
    for word in text::raw_words(output).filter(|w| text::is_content_word(w)) {
        content_words += 1;
        if context_words.contains_stem(word) {
            supported_words += 1;
        }
    }

    let mut context_numbers: Option<Vec<Number<'_>>> = None;
    let mut input_numbers: Option<Vec<Number<'_>>> = None;
    let mut unsupported_numbers: Vec<&str> = Vec::new();
    for number in text::numbers(output) {
        if is_list_marker(output, &number) {
            continue;
        }
        let same = |c: &Number<'_>| c.same_value(&number);
        let in_context = context_numbers
            .get_or_insert_with(|| context.iter().flat_map(|p| text::numbers(p)).collect())
            .iter()
            .any(same);
        if in_context
            || input_numbers
                .get_or_insert_with(|| text::numbers(event.input()).collect())
                .iter()
                .any(same)
        {
            continue;
        }
        if !unsupported_numbers.contains(&number.text) {
            unsupported_numbers.push(number.text);
        }
    }

    let mut input_words: Option<TokenSet> = None;
    let mut unsupported_names: Vec<&str> = Vec::new();
    for name in text::names(output) {
        let supported = text::raw_words(name).all(|w| {
            let stem = text::stem_hash(w);
            context_words.contains_hash(stem)
                || input_words
                    .get_or_insert_with(|| {
                        let input = event.input();
                        let mut words = TokenSet::with_capacity(input.len() / 5);
                        words.extend_stems([input]);
                        words
                    })
                    .contains_hash(stem)
        });
        if !supported && !unsupported_names.contains(&name) {
            unsupported_names.push(name);
        }
    }

    Findings {
        content_words,
        supported_words,
        unsupported_numbers,
        unsupported_names,
    }
}

/// Whether `number` is an ordered-list marker: first on its line and
/// followed by `.` or `)` (`1. Open settings`).
fn is_list_marker(text: &str, number: &Number<'_>) -> bool {
    let start = number.text.as_ptr() as usize - text.as_ptr() as usize;
    let end = start + number.text.len();
    // The cheap checks first: finding the line start scans back through the text.
    !number.percent
        && number.value.fract() == 0.0
        && matches!(text.as_bytes().get(end), Some(b'.' | b')'))
        && text[text[..start].rfind('\n').map_or(0, |i| i + 1)..start]
            .trim()
            .is_empty()
}

fn reason(f: &Findings<'_>) -> String {
    let mut reason = format!(
        "{} of {} content words ({}%) appear in the context",
        f.supported_words,
        f.content_words,
        percent(f.supported_words, f.content_words.max(1))
    );
    let claims: Vec<String> = f
        .unsupported_numbers
        .iter()
        .map(|n| format!("number {n}"))
        .chain(f.unsupported_names.iter().map(|n| format!("name {n}")))
        .collect();
    if claims.is_empty() {
        reason.push_str("; every number and name is supported.");
    } else {
        reason.push_str(&format!(
            "; not in the context: {}",
            claims[..claims.len().min(MAX_LISTED)].join(", ")
        ));
        if claims.len() > MAX_LISTED {
            reason.push_str(&format!(" and {} more", claims.len() - MAX_LISTED));
        }
        reason.push('.');
    }
    reason
}

/// `100 * part / whole` rounded to an integer, half to even: what `{:.0}` prints for
/// the float, without formatting a float (slow in a guest).
fn percent(part: usize, whole: usize) -> usize {
    let (q, r) = (100 * part / whole, 100 * part % whole);
    match (2 * r).cmp(&whole) {
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + q % 2,
        std::cmp::Ordering::Less => q,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flywheel_plugin::{EventData, testing};

    const CONTEXT: &str = "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. \
        It is 330 metres tall and was designed by the engineering company of Gustave Eiffel. \
        About 7 million people visit the tower each year.";

    fn event(output: &str) -> EventData {
        EventData {
            id: "01J0000000000000000000001".into(),
            input: "When was the Eiffel Tower built and how tall is it?".into(),
            output: output.into(),
            context: vec![CONTEXT.into()],
            ..EventData::default()
        }
    }

    fn score(output: &str) -> Score {
        let mut s = Groundedness::score(event(output).into()).expect("ok");
        assert_eq!(s.len(), 1, "one score for {output:?}");
        s.remove(0)
    }

    #[test]
    fn supported_answer_scores_high() {
        let s = score(
            "The Eiffel Tower was completed in 1889 and is 330 metres tall. Gustave Eiffel's company designed it.",
        );
        assert!(s.value > 0.9, "{s:?}");
        assert_eq!(s.label.as_deref(), Some("grounded"));
        assert!(s.reason.unwrap().contains("every number and name is supported"));
    }

    #[test]
    fn invented_numbers_and_names_count_heavily() {
        let s = score("The Eiffel Tower was completed in 1887 by Alexandre Dumas and is 1,200 metres tall.");
        let reason = s.reason.clone().unwrap();
        assert!(s.value < 0.5, "{s:?}");
        assert_eq!(s.label.as_deref(), Some("ungrounded"));
        assert!(
            reason.contains("number 1887") && reason.contains("number 1,200"),
            "{reason}"
        );
        assert!(reason.contains("name Alexandre Dumas"), "{reason}");
    }

    #[test]
    fn unrelated_answer_scores_low() {
        let s = score("Bananas are rich in potassium and make a healthy breakfast smoothie ingredient.");
        assert!(s.value < 0.2, "{s:?}");
    }

    #[test]
    fn reformatted_numbers_and_input_echoes_are_supported() {
        let mut e = event("Roughly 7,000,000 visitors come yearly; the tower stands 330 metres.");
        e.context = vec!["About 7000000 people visit the tower each year. It stands 330 metres.".into()];
        let e: Event = e.into();
        let f = find(&e);
        assert!(f.unsupported_numbers.is_empty(), "{f:?}");
        // A name from the question is not a hallucination.
        let e: Event = event("Yes, the Eiffel Tower was completed in 1889.").into();
        let f = find(&e);
        assert!(
            f.unsupported_names.is_empty() && f.unsupported_numbers.is_empty(),
            "{f:?}"
        );
    }

    #[test]
    fn list_markers_are_not_claims() {
        let e: Event =
            event("Facts:\n1. Completed in 1889.\n2. Designed by Gustave Eiffel.\n3) Height 330 metres.").into();
        let f = find(&e);
        assert!(f.unsupported_numbers.is_empty(), "{f:?}");
    }

    #[test]
    fn reason_lists_at_most_five_claims() {
        let s = score("The tower has 11 lifts, 12 cafes, 13 shops, 14 toilets, 15 guards and 16 cameras.");
        let reason = s.reason.unwrap();
        assert!(
            reason.contains("number 15") && !reason.contains("number 16") && reason.ends_with("and 1 more."),
            "{reason}"
        );
        assert_eq!(s.value, 0.0);
    }

    #[test]
    fn cannot_judge_without_context_or_content() {
        let mut e = event("The Eiffel Tower is 330 metres tall.");
        e.context = vec!["   ".into()];
        assert!(Groundedness::score(e.into()).expect("ok").is_empty());
        assert!(Groundedness::score(event("Yes.").into()).expect("ok").is_empty());
        testing::set_config(&[("min-content-words", "50")]);
        assert!(
            Groundedness::score(event("The Eiffel Tower is 330 metres tall.").into())
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn percent_rounds_like_float_formatting() {
        for whole in 1..60 {
            for part in 0..=whole {
                let float = format!("{:.0}", 100.0 * part as f64 / whole as f64);
                assert_eq!(percent(part, whole).to_string(), float, "{part}/{whole}");
            }
        }
    }

    #[test]
    fn penalties_are_configurable() {
        testing::set_config(&[("number-penalty", "0"), ("name-penalty", "0")]);
        let s = score("The Eiffel Tower was completed in 1887 by Alexandre Dumas.");
        assert!(s.value > 0.5, "{s:?}");
    }
}
