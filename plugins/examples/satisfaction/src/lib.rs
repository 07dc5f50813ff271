//! `satisfaction`: a scorer that maps the user's explicit feedback to one
//! score, `satisfaction`, in `0.0..=1.0`.
//!
//! | signal          | value                              | label           |
//! |-----------------|------------------------------------|-----------------|
//! | thumbs up/down  | 1.0 / 0.0                          | `thumbs-up/down`|
//! | rating          | `(value - 1) / (scale - 1)`        | `rating`        |
//! | correction      | 0.0                                | `corrected`     |
//! | clarification   | `clarification-score` (0.25)       | `clarification` |
//! | comment         | 0.5 ± lexicon sentiment            | `comment`       |
//! | none            | no score at all                    |                 |
//!
//! `none` yields an empty list, not 0.5: "the user said nothing" is unknown,
//! and a neutral score would drag averages and trip routers' thresholds.

use std::sync::OnceLock;

use flywheel_plugin::{Event, Rating, Score, Scorer, Signal, Thumb, config, text};

/// The plugin type exported to the host.
pub struct Satisfaction;

impl Scorer for Satisfaction {
    fn score(event: Event) -> Result<Vec<Score>, String> {
        let settings = SETTINGS.with(|m| m.get_or_init(Settings::from_config));
        Ok(score_signal(event.signal(), &settings)?.into_iter().collect())
    }
}

thread_local! {
    /// The config, parsed once per instance.
    static SETTINGS: config::Memo<Settings> = const { config::Memo::new() };
}

flywheel_plugin::export_scorer!(Satisfaction);

/// The score's name, shared with routers (see `hitl-router`).
pub const SCORE_NAME: &str = "satisfaction";

/// Tunables read from the manifest's `[config]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Value for a clarification (default 0.25).
    pub clarification_score: f64,
    /// Shift per net sentiment hit in a comment (default 0.15).
    pub comment_step: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            clarification_score: 0.25,
            comment_step: 0.15,
        }
    }
}

impl Settings {
    /// Read the settings, falling back to the defaults.
    pub fn from_config() -> Self {
        let d = Settings::default();
        Settings {
            clarification_score: config::get_f64("clarification-score", d.clarification_score).clamp(0.0, 1.0),
            comment_step: config::get_f64("comment-step", d.comment_step).clamp(0.0, 0.5),
        }
    }
}

/// Score one signal; `Ok(None)` for `Signal::None`.
pub fn score_signal(signal: &Signal, settings: &Settings) -> Result<Option<Score>, String> {
    let score = match signal {
        Signal::Thumbs(Thumb::Up) => Score::new(SCORE_NAME, 1.0)
            .with_label("thumbs-up")
            .with_reason("The user gave a thumbs-up."),
        Signal::Thumbs(Thumb::Down) => Score::new(SCORE_NAME, 0.0)
            .with_label("thumbs-down")
            .with_reason("The user gave a thumbs-down."),
        Signal::Rating(rating) => score_rating(rating)?,
        Signal::Correction(_) => Score::new(SCORE_NAME, 0.0)
            .with_label("corrected")
            .with_reason("The user supplied a corrected answer, so the original missed."),
        Signal::Clarification(_) => Score::new(SCORE_NAME, settings.clarification_score)
            .with_label("clarification")
            .with_reason("The user had to ask a follow-up question: the answer did not fully land."),
        Signal::Comment(comment) => score_comment(comment, settings),
        Signal::None => return Ok(None),
    };
    Ok(Some(score))
}

/// A rating mapped linearly onto `0..=1`; errors on a scale of 1 or less or
/// non-finite numbers (a rating we cannot interpret is a client bug worth
/// surfacing, not a neutral opinion).
pub fn score_rating(rating: &Rating) -> Result<Score, String> {
    let value = rating.normalized().map_err(|e| format!("satisfaction: {e}"))?;
    Ok(Score::new(SCORE_NAME, value).with_label("rating").with_reason(format!(
        "The user rated the answer {} out of {}.",
        rating.value, rating.scale
    )))
}

const POSITIVE: &[&str] = &[
    "great",
    "thanks",
    "thank you",
    "thx",
    "perfect",
    "helpful",
    "excellent",
    "awesome",
    "exactly",
    "love it",
    "nice",
    "good",
    "useful",
    "clear",
    "spot on",
    "works",
    "correct",
];

const NEGATIVE: &[&str] = &[
    "wrong",
    "useless",
    "bad",
    "incorrect",
    "not helpful",
    "unhelpful",
    "confusing",
    "terrible",
    "awful",
    "doesn't work",
    "does not work",
    "didn't work",
    "broken",
    "nonsense",
    "irrelevant",
    "misleading",
    "inaccurate",
    "waste",
    "not what i asked",
];

/// Words that flip the polarity of a positive term right after them
/// ("not great", "not very helpful").
const NEGATORS: &[&str] = &["not", "never", "hardly", "isn't", "wasn't", "no", "barely"];

/// Lexicon sentiment of a free-text comment, mapped around 0.5: each net
/// positive (negative) hit moves the score up (down) by `comment_step`,
/// within `0.05..=0.95` (a comment is never as certain as a thumb).
pub fn score_comment(comment: &str, settings: &Settings) -> Score {
    let (pos, neg) = sentiment(comment);
    let net = pos as f64 - neg as f64;
    let value = if net == 0.0 {
        0.5
    } else {
        (0.5 + net * settings.comment_step).clamp(0.05, 0.95)
    };
    let reason = match (pos, neg) {
        (0, 0) => "The comment carries no clear sentiment.".to_owned(),
        _ => format!("The comment has {pos} positive and {neg} negative sentiment cue(s)."),
    };
    Score::new(SCORE_NAME, value).with_label("comment").with_reason(reason)
}

/// Count positive and negative lexicon hits in `comment`. A positive term
/// preceded (within two words) by a negator counts as negative; negative
/// phrases that contain their own negation ("not helpful") are matched
/// first and their words are not counted again.
pub fn sentiment(comment: &str) -> (usize, usize) {
    let lexicon = Lexicon::get();
    let mut lower = text::normalize(comment);
    let mut neg = 0;
    let starts = word_starts(&lower);
    for phrase in &lexicon.negative_phrases {
        while let Some(i) = find_phrase_at(&lower, &starts, phrase) {
            neg += 1;
            lower.replace_range(i..i + phrase.len(), &" ".repeat(phrase.len()));
        }
    }
    // `lower` is already lower case: the raw words are the lower-cased words.
    let words: Vec<&str> = text::raw_words(&lower).collect();
    let mut pos = 0;
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        // Two-word terms ("thank you") are compared in place: no `String` per word.
        let two = words
            .get(i + 1)
            .is_some_and(|&n| lexicon.positive_pairs.iter().any(|&(a, b)| a == w && b == n));
        let (is_pos, len) = if two { (true, 2) } else { (one_of(w, POSITIVE), 1) };
        if is_pos {
            let negated = words[i.saturating_sub(2)..i].iter().any(|p| one_of(p, NEGATORS));
            if negated { neg += 1 } else { pos += 1 }
        } else if one_of(w, NEGATIVE) {
            neg += 1;
        }
        i += len;
    }
    (pos, neg)
}

/// The parts of the lexicons that need splitting, split once per instance.
///
/// Why: splitting every two-word term for every word of every comment was
/// most of the cost of a call.
struct Lexicon {
    /// Two-word positive terms as `(first, second)`.
    positive_pairs: Vec<(&'static str, &'static str)>,
    /// Negative terms of several words, matched as phrases before the words.
    negative_phrases: Vec<&'static str>,
}

impl Lexicon {
    fn get() -> &'static Lexicon {
        static LEXICON: OnceLock<Lexicon> = OnceLock::new();
        LEXICON.get_or_init(|| Lexicon {
            positive_pairs: POSITIVE.iter().filter_map(|p| p.split_once(' ')).collect(),
            negative_phrases: NEGATIVE.iter().copied().filter(|p| p.contains(' ')).collect(),
        })
    }
}

/// Whether `word` is one of `list`; the length and first byte are compared
/// before the bytes, which rules out almost every entry without a `memcmp`.
fn one_of(word: &str, list: &[&str]) -> bool {
    let first = word.as_bytes().first();
    list.iter()
        .any(|t| t.len() == word.len() && t.as_bytes().first() == first && *t == word)
}

/// The byte offsets where a run of alphanumeric characters starts: the only
/// places a whole-word phrase starting with a letter can begin.
fn word_starts(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut prev_is_word = false;
    for (i, c) in text.char_indices() {
        let is_word = c.is_alphanumeric();
        if is_word && !prev_is_word {
            starts.push(i);
        }
        prev_is_word = is_word;
    }
    starts
}

/// Byte offset of the first whole-word occurrence of `phrase` (ASCII, lower
/// case, starting and ending with a letter) in `lower`, whose word starts
/// are `starts` (see [`word_starts`]).
///
/// Why not `match_indices`: it sets up a two-way searcher per phrase, which
/// costs more than the whole comment; here only word starts are compared.
/// Lexicon phrases cannot overlap themselves, so this finds what
/// `match_indices` found. Blanking a match (with spaces) leaves `starts`
/// valid: a stale start inside the blank cannot match a phrase starting with
/// a letter, and the character after a match is not alphanumeric, so no
/// start after it moves.
fn find_phrase_at(lower: &str, starts: &[usize], phrase: &str) -> Option<usize> {
    let (bytes, needle) = (lower.as_bytes(), phrase.as_bytes());
    let &first = needle.first()?;
    starts.iter().copied().find(|&i| {
        bytes[i] == first
            && bytes[i..].starts_with(needle)
            && lower[i + needle.len()..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flywheel_plugin::{EventData, testing};

    fn score(signal: Signal) -> Result<Vec<Score>, String> {
        Satisfaction::score(
            EventData {
                id: "01J0000000000000000000000".into(),
                input: "How do I reset my password?".into(),
                output: "Open Settings, then Security, then Reset password.".into(),
                signal,
                ..EventData::default()
            }
            .into(),
        )
    }

    fn one(signal: Signal) -> Score {
        let mut scores = score(signal).expect("scores");
        assert_eq!(scores.len(), 1);
        let s = scores.remove(0);
        assert_eq!(s.name, "satisfaction");
        assert!((0.0..=1.0).contains(&s.value));
        assert!(
            s.reason.as_deref().is_some_and(|r| !r.is_empty()),
            "every score has a reason"
        );
        s
    }

    #[test]
    fn thumbs() {
        assert_eq!(one(Signal::Thumbs(Thumb::Up)).value, 1.0);
        let down = one(Signal::Thumbs(Thumb::Down));
        assert_eq!(down.value, 0.0);
        assert_eq!(down.label.as_deref(), Some("thumbs-down"));
    }

    #[test]
    fn ratings_are_normalized_and_clamped() {
        let r = |value, scale| Signal::Rating(Rating { value, scale });
        assert_eq!(one(r(5.0, 5.0)).value, 1.0);
        assert_eq!(one(r(1.0, 5.0)).value, 0.0);
        assert_eq!(one(r(4.0, 5.0)).value, 0.75);
        assert_eq!(one(r(7.0, 10.0)).value, 6.0 / 9.0);
        assert_eq!(one(r(0.0, 5.0)).value, 0.0);
        assert_eq!(one(r(9.0, 5.0)).value, 1.0);
        assert!(score(r(1.0, 1.0)).unwrap_err().contains("scale"));
        assert!(score(r(f64::NAN, 5.0)).unwrap_err().contains("value"));
        assert!(score(r(3.0, f64::INFINITY)).is_err());
    }

    #[test]
    fn correction_and_clarification() {
        let c = one(Signal::Correction("Go to Account > Security > Reset.".into()));
        assert_eq!((c.value, c.label.as_deref()), (0.0, Some("corrected")));
        let q = one(Signal::Clarification("Where is Security on mobile?".into()));
        assert_eq!((q.value, q.label.as_deref()), (0.25, Some("clarification")));
    }

    #[test]
    fn clarification_score_is_configurable() {
        testing::set_config(&[("clarification-score", "0.4")]);
        assert_eq!(one(Signal::Clarification("and then?".into())).value, 0.4);
        testing::set_config(&[("clarification-score", "lots")]);
        assert_eq!(one(Signal::Clarification("and then?".into())).value, 0.25);
        assert!(
            testing::take_logs()
                .iter()
                .any(|(_, m)| m.contains("clarification-score"))
        );
    }

    #[test]
    fn comments_use_lexicon_sentiment() {
        let c = |t: &str| one(Signal::Comment(t.into())).value;
        assert!(c("Great, thanks! Perfect.") > 0.9);
        assert!(c("This is wrong and useless") < 0.25);
        assert!(c("Not helpful at all") < 0.5);
        assert!(c("not great") < 0.5);
        assert_eq!(c("I read it on my phone"), 0.5);
        assert_eq!(c("Good start but wrong port number"), 0.5);
        assert_eq!(sentiment("not helpful, not what I asked"), (0, 2));
        assert_eq!(sentiment("Thank you, very helpful"), (2, 0));
        assert_eq!(sentiment("It’s not very good"), (0, 1));
    }

    /// `sentiment` as it was before the lexicon was split once and phrases were
    /// only compared at word starts: the two must agree.
    fn sentiment_reference(comment: &str) -> (usize, usize) {
        fn find_phrase_at(lower: &str, phrase: &str) -> Option<usize> {
            lower.match_indices(phrase).map(|(i, _)| i).find(|&i| {
                let before = lower[..i].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
                let after = lower[i + phrase.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| !c.is_alphanumeric());
                before && after
            })
        }
        let mut lower = text::normalize(comment);
        let mut neg = 0;
        for phrase in NEGATIVE.iter().filter(|p| p.contains(' ')) {
            while let Some(i) = find_phrase_at(&lower, phrase) {
                neg += 1;
                lower.replace_range(i..i + phrase.len(), &" ".repeat(phrase.len()));
            }
        }
        let words: Vec<_> = text::words(&lower).collect();
        let mut pos = 0;
        let mut i = 0;
        while i < words.len() {
            let w = words[i].as_ref();
            let two = words
                .get(i + 1)
                .is_some_and(|n| POSITIVE.iter().any(|p| p.split_once(' ') == Some((w, n.as_ref()))));
            let (is_pos, len) = if two { (true, 2) } else { (POSITIVE.contains(&w), 1) };
            if is_pos {
                let negated = words[i.saturating_sub(2)..i]
                    .iter()
                    .any(|p| NEGATORS.contains(&p.as_ref()));
                if negated { neg += 1 } else { pos += 1 }
            } else if NEGATIVE.contains(&w) {
                neg += 1;
            }
            i += len;
        }
        (pos, neg)
    }

    #[test]
    fn sentiment_agrees_with_the_reference() {
        for comment in [
            "",
            "Thanks, that was helpful, but the link did not work on my phone.",
            "NOT HELPFUL. Not helpful!not helpful",
            "xnot helpful, not helpfulx, o'not helpful, not  helpful",
            "It doesn\u{2019}t work, DOES NOT WORK and didn't work; not what I asked",
            "not what i asked not what i asked",
            "thank you thank you, love it, spot on, not love it, never spot on",
            "Ünot helpful énot helpful not helpfulé café great",
            "not not not helpful helpful great great wrong useless",
            "the not-helpful and not_helpful forms",
        ] {
            assert_eq!(sentiment(comment), sentiment_reference(comment), "{comment:?}");
        }
    }

    #[test]
    fn no_signal_means_no_score() {
        assert!(score(Signal::None).expect("ok").is_empty());
    }
}
