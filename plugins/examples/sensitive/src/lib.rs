//! `sensitive`: scores `sensitive` in `0.0..=1.0` (1 = certainly
//! sensitive) over the answer and the user's input.
//!
//! * **PII** (value ≥ 0.9): email addresses; phone numbers (international
//!   `+44 20 7946 0958`, US `(555) 123-4567`, `555-123-4567`,
//!   `5551234567`; 9 to 15 digits); payment card numbers (13 to 19 digits,
//!   spaces or dashes allowed, valid Luhn checksum only, so order numbers
//!   and timestamps do not trip it).
//! * **Regulated topics** (value about 0.6): medical, legal and financial
//!   advice, by weighted keyword lexicons; a topic is found when its cues
//!   add up to 1 (a strong cue like "dosage" or "lawsuit" alone, or two
//!   weak ones like "symptoms" + "doctor"). Cues in the input count half
//!   (configurable): a question about medicine is less sensitive than an
//!   answer giving medical advice.
//! * Otherwise 0.0 with label `none`.
//!
//! The label lists the categories found (`pii:email,topic:medical`); the
//! reason lists the findings **redacted** (`j***@***.com`, `card ending
//! 1111`), because reasons are stored and shown to reviewers.

use flywheel_plugin::{Event, Score, Scorer, config, log, text};

/// The plugin type exported to the host.
pub struct Sensitive;

impl Scorer for Sensitive {
    fn score(event: Event) -> Result<Vec<Score>, String> {
        let settings = SETTINGS.with(|m| m.get_or_init(Settings::from_config));
        Ok(vec![assess(&event, &settings)])
    }
}

thread_local! {
    /// The config, parsed once per instance.
    static SETTINGS: config::Memo<Settings> = const { config::Memo::new() };
}

flywheel_plugin::export_scorer!(Sensitive);

/// The score's name, shared with routers (see `hitl-router`).
pub const SCORE_NAME: &str = "sensitive";

/// A kind of PII.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pii {
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// A payment card number (Luhn-valid).
    Card,
}

impl Pii {
    const ALL: [Pii; 3] = [Pii::Email, Pii::Phone, Pii::Card];

    /// The name used in config and labels.
    pub fn name(self) -> &'static str {
        match self {
            Pii::Email => "email",
            Pii::Phone => "phone",
            Pii::Card => "card",
        }
    }
}

/// A regulated topic and its cue lexicon: `(phrase, weight)`; a trailing
/// `*` makes a prefix (see `flywheel_plugin::text::has_phrase`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Topic {
    /// The name used in config and labels.
    pub name: &'static str,
    cues: &'static [(&'static str, f64)],
}

/// The built-in topics.
pub const TOPICS: [Topic; 3] = [
    Topic {
        name: "medical",
        cues: &[
            ("dosage", 1.0),
            ("dose", 1.0),
            ("doses", 1.0),
            ("diagnose*", 1.0),
            ("diagnosis", 1.0),
            ("prescription*", 1.0),
            ("prescribe*", 1.0),
            ("mg", 1.0),
            ("milligram*", 1.0),
            ("mcg", 1.0),
            ("overdose*", 1.0),
            ("contraindicat*", 1.0),
            ("side effect*", 1.0),
            ("symptom*", 0.5),
            ("medication*", 0.5),
            ("medicine*", 0.5),
            ("treatment*", 0.5),
            ("ibuprofen", 0.5),
            ("paracetamol", 0.5),
            ("acetaminophen", 0.5),
            ("antibiotic*", 0.5),
            ("insulin", 0.5),
            ("blood pressure", 0.5),
            ("doctor", 0.5),
            ("physician", 0.5),
            ("disease*", 0.5),
            ("infection*", 0.5),
            ("tablet*", 0.5),
            ("pill*", 0.5),
            ("therapy", 0.5),
        ],
    },
    Topic {
        name: "legal",
        cues: &[
            ("lawsuit*", 1.0),
            ("sue", 1.0),
            ("sued", 1.0),
            ("suing", 1.0),
            ("litigation", 1.0),
            ("liable", 1.0),
            ("contract liability", 1.0),
            ("breach of contract", 1.0),
            ("legal advice", 1.0),
            ("legally binding", 1.0),
            ("attorney*", 1.0),
            ("lawyer*", 1.0),
            ("plaintiff*", 1.0),
            ("defendant*", 1.0),
            ("indemnif*", 1.0),
            ("statute of limitations", 1.0),
            ("liability", 0.5),
            ("contract*", 0.5),
            ("court", 0.5),
            ("legal", 0.5),
            ("legally", 0.5),
            ("settlement", 0.5),
            ("damages", 0.5),
            ("jurisdiction", 0.5),
            ("tenant rights", 0.5),
            ("copyright", 0.5),
        ],
    },
    Topic {
        name: "financial",
        cues: &[
            ("invest", 1.0),
            ("invests", 1.0),
            ("investing", 1.0),
            ("investment*", 1.0),
            ("investor*", 1.0),
            ("portfolio*", 1.0),
            ("guaranteed return*", 1.0),
            ("financial advice", 1.0),
            ("capital gain*", 1.0),
            ("asset allocation", 1.0),
            ("index fund*", 1.0),
            ("mutual fund*", 1.0),
            ("hedge fund*", 1.0),
            ("dividend*", 1.0),
            ("401(k)", 1.0),
            ("stock", 0.5),
            ("stocks", 0.5),
            ("shares", 0.5),
            ("bond", 0.5),
            ("bonds", 0.5),
            ("etf*", 0.5),
            ("crypto*", 0.5),
            ("bitcoin", 0.5),
            ("returns", 0.5),
            ("interest rate*", 0.5),
            ("trading", 0.5),
            ("retirement", 0.5),
            ("tax", 0.5),
        ],
    },
];

/// Tunables read from the manifest's `[config]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// PII kinds to detect.
    pub pii: Vec<Pii>,
    /// Topics to detect.
    pub topics: Vec<Topic>,
    /// Weight of topic cues found in the input (default 0.5).
    pub input_topic_weight: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pii: Pii::ALL.to_vec(),
            topics: TOPICS.to_vec(),
            input_topic_weight: 0.5,
        }
    }
}

impl Settings {
    /// Read the settings; unknown names are logged and ignored.
    pub fn from_config() -> Self {
        let mut pii = Vec::new();
        for name in config::get_list("pii", "email,phone,card") {
            match Pii::ALL.iter().find(|p| p.name().eq_ignore_ascii_case(&name)) {
                Some(p) if !pii.contains(p) => pii.push(*p),
                Some(_) => {}
                None => log::warn(&format!("sensitive: unknown pii kind {name:?} in config `pii`")),
            }
        }
        let mut topics = Vec::new();
        for name in config::get_list("topics", "medical,legal,financial") {
            match TOPICS.iter().find(|t| t.name.eq_ignore_ascii_case(&name)) {
                Some(t) if !topics.contains(t) => topics.push(*t),
                Some(_) => {}
                None => log::warn(&format!("sensitive: unknown topic {name:?} in config `topics`")),
            }
        }
        Settings {
            pii,
            topics,
            input_topic_weight: config::get_f64("input-topic-weight", 0.5).clamp(0.0, 1.0),
        }
    }
}

/// One piece of PII, already redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiiFinding {
    /// What it is.
    pub kind: Pii,
    /// A redacted rendering safe to store and show (`j***@***.com`).
    pub redacted: String,
}

/// Score one event.
pub fn assess(event: &Event, settings: &Settings) -> Score {
    let mut pii: Vec<(PiiFinding, &str)> = Vec::new();
    for (field, where_) in [(event.output(), "answer"), (event.input(), "input")] {
        for f in find_pii(field, &settings.pii) {
            if !pii.iter().any(|(p, _)| p == &f) {
                pii.push((f, where_));
            }
        }
    }
    // Each text is matched once against every cue of every topic.
    let lexicon = CueLexicon::get();
    let (in_output, in_input) = (lexicon.find(event.output()), lexicon.find(event.input()));
    let mut topics: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for topic in &settings.topics {
        let (w_out, mut cues) = in_output.topic(topic);
        let (w_in, cues_in) = in_input.topic(topic);
        if w_out + settings.input_topic_weight * w_in >= 1.0 - 1e-9 {
            for c in cues_in {
                if !cues.contains(&c) {
                    cues.push(c);
                }
            }
            topics.push((topic.name, cues));
        }
    }

    let mut kinds: Vec<Pii> = pii.iter().map(|(p, _)| p.kind).collect();
    kinds.sort();
    kinds.dedup();
    let value = if !kinds.is_empty() {
        let card = if kinds.contains(&Pii::Card) { 0.05 } else { 0.0 };
        (0.9 + 0.03 * (kinds.len() - 1) as f64 + card).min(1.0)
    } else if !topics.is_empty() {
        (0.6 + 0.05 * (topics.len() - 1) as f64).min(0.7)
    } else {
        return Score::new(SCORE_NAME, 0.0)
            .with_label("none")
            .with_reason("No PII or regulated-advice cues found.");
    };

    let label: Vec<String> = kinds
        .iter()
        .map(|k| format!("pii:{}", k.name()))
        .chain(topics.iter().map(|(t, _)| format!("topic:{t}")))
        .collect();
    let mut parts: Vec<String> = pii
        .iter()
        .map(|(p, where_)| format!("{} {} in the {where_}", p.kind.name(), p.redacted))
        .collect();
    parts.extend(topics.iter().map(|(t, cues)| {
        let shown: Vec<&str> = cues.iter().take(4).map(|c| c.trim_end_matches('*')).collect();
        format!("{t} advice cues ({})", shown.join(", "))
    }));
    Score::new(SCORE_NAME, value)
        .with_label(label.join(","))
        .with_reason(format!("Found {}.", parts.join("; ")))
}

/// Every cue of every built-in topic, compiled into one lexicon once per
/// instance: a text is matched against all of them in one pass.
struct CueLexicon {
    lexicon: text::Lexicon,
    /// For each lexicon entry: its topic (index into [`TOPICS`]), weight and cue.
    cues: Vec<(usize, f64, &'static str)>,
}

impl CueLexicon {
    fn get() -> &'static CueLexicon {
        static LEXICON: std::sync::OnceLock<CueLexicon> = std::sync::OnceLock::new();
        LEXICON.get_or_init(|| {
            let cues: Vec<(usize, f64, &'static str)> = TOPICS
                .iter()
                .enumerate()
                .flat_map(|(t, topic)| topic.cues.iter().map(move |&(cue, w)| (t, w, cue)))
                .collect();
            CueLexicon {
                lexicon: text::Lexicon::new(cues.iter().map(|c| c.2)),
                cues,
            }
        })
    }

    /// The cues found in `text`, for every topic.
    fn find<'t>(&self, text: &'t str) -> CuesFound<'_, 't> {
        CuesFound {
            lexicon: self,
            found: self.lexicon.find(text),
            text,
        }
    }
}

/// What [`CueLexicon::find`] found in one text.
struct CuesFound<'l, 't> {
    lexicon: &'l CueLexicon,
    found: text::LexiconMatches,
    text: &'t str,
}

impl CuesFound<'_, '_> {
    /// The summed weight of `topic`'s cues and the cues that matched, in
    /// lexicon order. Dosages written as one word (`500mg`, `2.5ml`) count as
    /// a strong medical cue.
    fn topic(&self, topic: &Topic) -> (f64, Vec<&'static str>) {
        let t = TOPICS.iter().position(|t| t.name == topic.name);
        let mut weight = 0.0;
        let mut found = Vec::new();
        // Usually nothing or a cue or two was found: walk those, not every cue.
        for i in self.found.iter() {
            let (cue_topic, w, cue) = self.lexicon.cues[i];
            if Some(cue_topic) == t {
                weight += w;
                found.push(cue);
            }
        }
        if topic.name == "medical" && has_glued_dosage(self.text) {
            weight += 1.0;
            found.push("dosage");
        }
        (weight, found)
    }
}

/// Whether `text` has a word made of digits and a dose unit: `500mg`,
/// `25mcg`, `10ml` (any case).
fn has_glued_dosage(text: &str) -> bool {
    let b = text.as_bytes();
    // Units start with `m` right after a digit: look only there.
    (1..b.len()).any(|i| {
        if b[i] | 0x20 != b'm' || !b[i - 1].is_ascii_digit() {
            return false;
        }
        let Some(unit) = [&b"mcg"[..], b"mg", b"ml"]
            .into_iter()
            .find(|u| b.len() >= i + u.len() && b[i..i + u.len()].eq_ignore_ascii_case(u))
        else {
            return false;
        };
        // The word must end after the unit and be only digits before it (as
        // `text::raw_words` splits words, apostrophes included).
        let end = i + unit.len();
        let mut start = i - 1;
        while start > 0 && b[start - 1].is_ascii_digit() {
            start -= 1;
        }
        !word_continues(text, end) && !word_continues_back(text, start)
    })
}

/// Whether the word around byte `i` goes on at `i` (a word character, or an
/// apostrophe followed by one).
fn word_continues(text: &str, i: usize) -> bool {
    let rest = &text[i..];
    let mut chars = rest.chars();
    match chars.next() {
        Some(c) if c.is_alphanumeric() => true,
        Some('\'' | '\u{2019}') => chars.next().is_some_and(char::is_alphanumeric),
        _ => false,
    }
}

/// Whether the word starting at byte `i` really starts earlier (a word
/// character, or an apostrophe after one, just before it).
fn word_continues_back(text: &str, i: usize) -> bool {
    let mut chars = text[..i].chars().rev();
    match chars.next() {
        Some(c) if c.is_alphanumeric() => true,
        Some('\'' | '\u{2019}') => chars.next().is_some_and(char::is_alphanumeric),
        _ => false,
    }
}

/// Every PII finding in `text` of the enabled kinds, in order of
/// appearance, redacted.
pub fn find_pii(text: &str, kinds: &[Pii]) -> Vec<PiiFinding> {
    let mut out = Vec::new();
    if kinds.contains(&Pii::Email) {
        out.extend(find_emails(text).into_iter().map(|e| PiiFinding {
            kind: Pii::Email,
            redacted: redact_email(e),
        }));
    }
    if kinds.contains(&Pii::Phone) || kinds.contains(&Pii::Card) {
        for run in digit_runs(text) {
            let kind = classify(&run);
            if let Some(kind) = kind.filter(|k| kinds.contains(k)) {
                let digits = run.digits();
                let last = &digits[digits.len() - if kind == Pii::Card { 4 } else { 2 }..];
                let redacted = match kind {
                    Pii::Card => format!("card ending {last}"),
                    _ => format!("number ending {last}"),
                };
                out.push(PiiFinding { kind, redacted });
            }
        }
    }
    out
}

fn is_email_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_email_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// The email addresses in `text` (`local@domain.tld`, TLD of 2+ letters).
pub fn find_emails(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    for (at, _) in text.match_indices('@') {
        let mut start = at;
        while start > 0 && is_email_local(bytes[start - 1]) {
            start -= 1;
        }
        while start < at && bytes[start] == b'.' {
            start += 1;
        }
        let mut end = at + 1;
        while end < bytes.len() && is_email_domain(bytes[end]) {
            end += 1;
        }
        while end > at + 1 && matches!(bytes[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let (local, domain) = (&text[start..at], &text[at + 1..end]);
        let valid_domain = domain.split('.').count() >= 2
            && domain.split('.').all(|l| !l.is_empty())
            && domain
                .rsplit('.')
                .next()
                .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
        if !local.is_empty() && valid_domain {
            out.push(&text[start..end]);
        }
    }
    out
}

/// `jane.doe@example.com` → `j***@***.com`.
fn redact_email(email: &str) -> String {
    let first = email.chars().next().unwrap_or('*');
    let tld = email.rsplit('.').next().unwrap_or("");
    format!("{first}***@***.{tld}")
}

/// Digits kept per run: more than any card (19) or phone number (15) has.
const MAX_RUN_DIGITS: usize = 24;
/// Group lengths kept per run (a phone number has at most 15 one-digit groups).
const MAX_RUN_GROUPS: usize = 16;

const SEP_SPACE: u8 = 1;
const SEP_DASH: u8 = 2;
const SEP_DOT: u8 = 4;

/// A run of digits with phone/card-style separators. Fixed-size, so that
/// scanning a text with numbers in it allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DigitRun {
    /// The first `MAX_RUN_DIGITS` digits.
    digits: [u8; MAX_RUN_DIGITS],
    /// How many digits the run has (may exceed what `digits` holds).
    len: usize,
    /// The first `MAX_RUN_GROUPS` group lengths.
    groups: [u8; MAX_RUN_GROUPS],
    /// How many groups the run has.
    group_count: usize,
    plus: bool,
    paren: bool,
    /// The separators used between groups, as `SEP_*` bits.
    seps: u8,
}

impl DigitRun {
    fn digits(&self) -> &str {
        // Only ASCII digits are stored.
        std::str::from_utf8(&self.digits[..self.len.min(MAX_RUN_DIGITS)]).unwrap_or_default()
    }

    fn groups(&self) -> &[u8] {
        &self.groups[..self.group_count.min(MAX_RUN_GROUPS)]
    }
}

/// Scan `text` for runs such as `+1 (555) 123-4567` or `4111-1111-1111-1111`:
/// digit groups joined by single separators, not glued to letters.
fn digit_runs(text: &str) -> Vec<DigitRun> {
    let b = text.as_bytes();
    let n = b.len();
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        // Jump to the next byte that can start a run.
        match b[i..]
            .iter()
            .position(|&c| c.is_ascii_digit() || c == b'+' || c == b'(')
        {
            Some(k) => i += k,
            None => break,
        }
        let starts_here =
            b[i].is_ascii_digit() || (matches!(b[i], b'+' | b'(') && i + 1 < n && b[i + 1].is_ascii_digit());
        let glued = i > 0 && (b[i - 1].is_ascii_alphanumeric() || matches!(b[i - 1], b'_' | b'.' | b',' | b'/'));
        if !starts_here || glued {
            i += 1;
            continue;
        }
        let mut run = DigitRun {
            digits: [0; MAX_RUN_DIGITS],
            len: 0,
            groups: [0; MAX_RUN_GROUPS],
            group_count: 0,
            plus: false,
            paren: false,
            seps: 0,
        };
        let mut j = i;
        if b[j] == b'+' {
            run.plus = true;
            j += 1;
        }
        let mut end = j;
        loop {
            let mut k = j;
            let open = k < n && b[k] == b'(';
            if open {
                k += 1;
            }
            let g = k;
            while k < n && b[k].is_ascii_digit() {
                k += 1;
            }
            if k == g || (open && (k >= n || b[k] != b')')) {
                break;
            }
            for &d in &b[g..k] {
                if run.len < MAX_RUN_DIGITS {
                    run.digits[run.len] = d;
                }
                run.len += 1;
            }
            if run.group_count < MAX_RUN_GROUPS {
                run.groups[run.group_count] = (k - g).min(255) as u8;
            }
            run.group_count += 1;
            if open {
                run.paren = true;
                k += 1;
            }
            end = k;
            // One separator (or none after a closing parenthesis), then more digits.
            let mut s = k;
            let sep = (s < n && matches!(b[s], b' ' | b'-' | b'.')).then(|| b[s]);
            if sep.is_some() {
                s += 1;
            } else if !open {
                break;
            }
            if s < n && (b[s].is_ascii_digit() || b[s] == b'(') {
                run.seps |= match sep {
                    Some(b' ') => SEP_SPACE,
                    Some(b'-') => SEP_DASH,
                    Some(_) => SEP_DOT,
                    None => 0,
                };
                j = s;
            } else {
                break;
            }
        }
        i = end.max(i + 1);
        let glued_after = end < n && (b[end].is_ascii_alphanumeric() || b[end] == b'_');
        if run.len > 0 && !glued_after {
            out.push(run);
        }
    }
    out
}

/// Decide whether a digit run is a card, a phone number, or neither.
fn classify(run: &DigitRun) -> Option<Pii> {
    let d = run.len;
    let card_seps = run.seps & SEP_DOT == 0;
    if (13..=19).contains(&d) && !run.plus && !run.paren && card_seps && luhn_valid(run.digits()) {
        return Some(Pii::Card);
    }
    if !(9..=15).contains(&d) {
        return None;
    }
    let digits = run.digits().as_bytes();
    let groups = run.groups();
    let phone = if run.plus || run.paren {
        true
    } else if groups.len() == 1 {
        // Bare digits: only the US shapes, NXXNXXXXXX or 1NXXNXXXXXX (so
        // epoch timestamps and most ids do not count).
        let first = digits[0];
        (d == 10 && first >= b'2') || (d == 11 && first == b'1' && digits[1] >= b'2')
    } else {
        let ipv4 = run.seps == SEP_DOT && groups.len() == 4 && groups.iter().all(|&g| g <= 3);
        let thousands = groups[0] <= 3 && groups[1..].iter().all(|&g| g == 3) && run.seps & SEP_DASH == 0;
        groups.len() >= 3 && run.seps.count_ones() == 1 && groups.iter().all(|&g| g <= 5) && !ipv4 && !thousands
    };
    phone.then_some(Pii::Phone)
}

/// The Luhn checksum used by payment card numbers.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut v = u32::from(b - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use flywheel_plugin::{EventData, testing};

    fn event(input: &str, output: &str) -> Event {
        EventData {
            id: "01J0000000000000000000002".into(),
            input: input.into(),
            output: output.into(),
            ..EventData::default()
        }
        .into()
    }

    fn score(input: &str, output: &str) -> Score {
        let mut s = Sensitive::score(event(input, output)).expect("ok");
        assert_eq!(s.len(), 1);
        s.remove(0)
    }

    fn kinds(text: &str) -> Vec<Pii> {
        find_pii(text, &Pii::ALL).into_iter().map(|f| f.kind).collect()
    }

    #[test]
    fn emails_are_found_and_redacted() {
        let s = score(
            "Who handles refunds?",
            "Write to jane.doe+refunds@billing.example.com for refunds.",
        );
        assert!(s.value >= 0.9);
        assert_eq!(s.label.as_deref(), Some("pii:email"));
        let reason = s.reason.unwrap();
        assert!(
            reason.contains("j***@***.com") && !reason.contains("jane.doe"),
            "{reason}"
        );
        assert!(find_emails("not an email: a@b, @x.com, foo@bar.c0m").is_empty());
    }

    #[test]
    fn phone_formats() {
        for phone in [
            "+44 20 7946 0958",
            "+33 1 23 45 67 89",
            "(555) 123-4567",
            "555-123-4567",
            "555.123.4567",
            "+1 555 123 4567",
            "5551234567",
            "+14155552671",
        ] {
            assert_eq!(kinds(&format!("Call {phone} today.")), [Pii::Phone], "{phone}");
        }
        for not_phone in [
            "in 2024-01-15",
            "timestamp 1700000000123",
            "pop. 1 234 567 890",
            "server 192.168.100.200",
            "pi is 3.14159265358",
            "order 123-45",
            "ULID 01HZX3KQ8B6Y2M9R0F4T5V7W1C",
            "version 10.2.3456789",
        ] {
            assert!(kinds(not_phone).is_empty(), "{not_phone}: {:?}", kinds(not_phone));
        }
    }

    #[test]
    fn cards_need_a_valid_luhn_checksum() {
        assert!(luhn_valid("4111111111111111") && !luhn_valid("4111111111111112"));
        for card in [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5500005555555559",
            "378282246310005",
        ] {
            assert_eq!(kinds(&format!("my card is {card}")), [Pii::Card], "{card}");
        }
        assert!(kinds("tracking 4111 1111 1111 1112").is_empty());
        let s = score("Pay with 4111 1111 1111 1111 please", "Done.");
        assert_eq!(s.label.as_deref(), Some("pii:card"));
        assert!(s.value >= 0.95);
        let reason = s.reason.unwrap();
        assert!(
            reason.contains("card ending 1111") && !reason.contains("4111 1111"),
            "{reason}"
        );
    }

    #[test]
    fn topics_only_score_about_point_six() {
        let s = score(
            "My head hurts",
            "Take ibuprofen, 400 mg every 6 hours; the usual dosage for adults.",
        );
        assert_eq!(s.label.as_deref(), Some("topic:medical"));
        assert!((0.55..=0.65).contains(&s.value), "{s:?}");
        let s = score("", "You could sue them for breach of contract.");
        assert_eq!(s.label.as_deref(), Some("topic:legal"));
        let s = score(
            "",
            "Put it in an index fund; stocks give a guaranteed return over time.",
        );
        assert_eq!(s.label.as_deref(), Some("topic:financial"));
        let s = score("", "Take 500mg twice a day.");
        assert_eq!(s.label.as_deref(), Some("topic:medical"));
    }

    #[test]
    fn glued_dosages_are_whole_words() {
        let reference = |text: &str| {
            text::raw_words(&text.to_ascii_lowercase()).any(|w| {
                ["mg", "mcg", "ml"].iter().any(|unit| {
                    w.strip_suffix(unit)
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
            })
        };
        for text in [
            "Take 500mg twice",
            "Take 500MG.",
            "2.5ml",
            "x500mg",
            "500mgs",
            "500mg's",
            "it's 500mg",
            "a'500mg",
            "500 mg",
            "mg500",
            "25mcg",
            "25mc",
            "1m",
            "9ml’s",
            "9ml’",
            "ünï500mg",
            "",
        ] {
            assert_eq!(has_glued_dosage(text), reference(text), "{text:?}");
        }
    }

    #[test]
    fn pii_outranks_topics_and_labels_combine() {
        let s = score("", "Email dr.house@clinic.org for a prescription; the dosage is 20 mg.");
        assert_eq!(s.label.as_deref(), Some("pii:email,topic:medical"));
        assert!(s.value >= 0.9);
    }

    #[test]
    fn harmless_text_scores_zero() {
        let s = score(
            "What's the issue with my build?",
            "Among other things, the stock config in Stockholm's office sets 3 retries. Court the idea of caching.",
        );
        assert_eq!((s.value, s.label.as_deref()), (0.0, Some("none")), "{s:?}");
    }

    #[test]
    fn input_cues_count_half() {
        // Cues in the question alone (0.5 × 1.5) are not enough...
        let s = score("What dosage of ibuprofen is safe?", "Please ask a pharmacist.");
        assert_eq!(s.label.as_deref(), Some("none"));
        // ...but they tip a weak cue in the answer over the line.
        let s = score("What dosage of ibuprofen is safe?", "Please ask your doctor.");
        assert_eq!(s.label.as_deref(), Some("topic:medical"));
    }

    #[test]
    fn topics_are_configurable() {
        testing::set_config(&[("topics", "legal, financial, astrology"), ("pii", "card")]);
        let s = score("", "Email a@example.com about the 20 mg dosage.");
        assert_eq!(s.label.as_deref(), Some("none"));
        assert!(testing::take_logs().iter().any(|(_, m)| m.contains("astrology")));
    }
}
