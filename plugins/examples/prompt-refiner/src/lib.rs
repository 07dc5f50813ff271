//! `prompt-refiner`: groups a prompt's recent failures into patterns and,
//! for each pattern seen at least `min-evidence` (3) times, proposes one
//! concrete instruction appended to the template.
//!
//! | pattern                | evidence                                                                         |
//! |------------------------|----------------------------------------------------------------------------------|
//! | `too-long`             | feedback says "too long", "shorter", "verbose", "concise", "tl;dr" ..., or a correction at most half as long as the answer |
//! | `ignored-instructions` | feedback says "I asked", "not what I asked", "you ignored", "didn't follow" ...   |
//! | `ungrounded`           | feedback says "made up", "not in the source", "hallucinat…", "wrong fact" ..., or under 30% of the answer's content words occur in its context |
//! | `wrong-format`         | feedback mentions "format", "json", "bullet", "table", "markdown" ..., or the input asked for JSON/bullets/a table/Markdown and the answer is not |
//!
//! Feedback is the text of a correction, clarification or comment. An event
//! may show several patterns. Instructions go into one clearly marked
//! block at the end of the template; an instruction already present (the
//! same text, or an equivalent phrase such as "answer concisely") is not
//! added again, and a pattern whose instruction is present is not proposed.
//! `evidence` lists the ids of the events behind the proposed patterns,
//! sorted and deduplicated. The result depends only on the set of failures
//! and the config, never on their order.

use flywheel_plugin::{Event, Prompt, Proposal, Refiner, Signal, config, log, text};

/// The plugin type exported to the host.
pub struct PromptRefiner;

impl Refiner for PromptRefiner {
    fn refine(prompt: Prompt, failures: Vec<Event>) -> Result<Option<Proposal>, String> {
        let proposal = propose(&prompt, &failures, &Settings::from_config());
        if let Some(p) = &proposal {
            log::info(&format!(
                "prompt-refiner: proposing an edit to {} backed by {} events",
                prompt.name,
                p.evidence.len()
            ));
        }
        Ok(proposal)
    }
}

flywheel_plugin::export_refiner!(PromptRefiner);

/// Tunables read from the manifest's `[config]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Failures needed before a pattern is acted on (default 3).
    pub min_evidence: usize,
    /// Sentence budget in the concision instruction (default 3).
    pub max_sentences: u64,
    /// Word budget in the concision instruction (default 60).
    pub max_words: u64,
    /// Context overlap below which an answer counts as ungrounded (0.3).
    pub overlap_threshold: f64,
    /// Correction/answer length ratio at or below which the answer was too
    /// long (0.5).
    pub short_correction_ratio: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            min_evidence: 3,
            max_sentences: 3,
            max_words: 60,
            overlap_threshold: 0.3,
            short_correction_ratio: 0.5,
        }
    }
}

impl Settings {
    /// Read the settings, falling back to the defaults.
    pub fn from_config() -> Self {
        let d = Settings::default();
        Settings {
            min_evidence: config::get_u64("min-evidence", d.min_evidence as u64).max(1) as usize,
            max_sentences: config::get_u64("max-sentences", d.max_sentences).max(1),
            max_words: config::get_u64("max-words", d.max_words).max(1),
            overlap_threshold: config::get_f64("overlap-threshold", d.overlap_threshold).clamp(0.0, 1.0),
            short_correction_ratio: config::get_f64("short-correction-ratio", d.short_correction_ratio).clamp(0.0, 1.0),
        }
    }
}

/// A failure pattern. The order of [`Pattern::ALL`] is the order of the
/// instructions in the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pattern {
    /// The answer was longer than wanted.
    TooLong,
    /// The answer did not do what the user asked.
    IgnoredInstructions,
    /// The answer stated things its sources do not support.
    Ungrounded,
    /// The answer was not in the requested format.
    WrongFormat,
}

impl Pattern {
    /// Every pattern, in block order.
    pub const ALL: [Pattern; 4] = [
        Pattern::TooLong,
        Pattern::IgnoredInstructions,
        Pattern::Ungrounded,
        Pattern::WrongFormat,
    ];

    /// The pattern's name in rationales.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::TooLong => "too-long",
            Pattern::IgnoredInstructions => "ignored-instructions",
            Pattern::Ungrounded => "ungrounded",
            Pattern::WrongFormat => "wrong-format",
        }
    }

    /// The instruction that addresses the pattern.
    pub fn instruction(self, settings: &Settings) -> String {
        match self {
            Pattern::TooLong => format!(
                "Be concise: answer in at most {} sentences (about {} words) unless the user asks for more detail.",
                settings.max_sentences, settings.max_words
            ),
            Pattern::IgnoredInstructions => "Follow the user's instructions exactly: before answering, check that your answer does what was asked (scope, constraints, language, length) and say so plainly if you cannot.".into(),
            Pattern::Ungrounded => "Stay grounded: use only facts stated in the provided context. If the context does not contain the answer, say you don't know. Never invent numbers, names or sources.".into(),
            Pattern::WrongFormat => "Match the requested format: if the user asks for JSON, a table, bullet points or Markdown, answer in exactly that format, with no extra prose around it.".into(),
        }
    }

    /// Phrases (lower case) whose presence in the template means the
    /// instruction, or an equivalent one, is already there.
    fn present_markers(self) -> &'static [&'static str] {
        match self {
            Pattern::TooLong => &[
                "be concise",
                "answer concisely",
                "be brief",
                "keep your answer short",
                "keep answers short",
            ],
            Pattern::IgnoredInstructions => &[
                "follow the user's instructions",
                "follow instructions exactly",
                "follow all instructions",
            ],
            Pattern::Ungrounded => &[
                "stay grounded",
                "use only facts",
                "only the provided context",
                "only use the context",
                "only information from the context",
            ],
            Pattern::WrongFormat => &[
                "match the requested format",
                "answer in the requested format",
                "use the requested format",
            ],
        }
    }

    /// Cues in the feedback text (normalised; see `text::has_phrase`).
    fn feedback_cues(self) -> &'static [&'static str] {
        match self {
            Pattern::TooLong => &[
                "too long",
                "shorter",
                "verbose",
                "concise",
                "tl;dr",
                "tldr",
                "too wordy",
                "wordy",
                "wall of text",
                "get to the point",
                "too much text",
                "rambling",
            ],
            Pattern::IgnoredInstructions => &[
                "i asked",
                "not what i asked",
                "you ignored",
                "ignored my",
                "didn't follow",
                "did not follow",
                "i said",
                "i told you",
                "as instructed",
                "read the question",
            ],
            Pattern::Ungrounded => &[
                "made up",
                "makes up",
                "not in the source",
                "not in the sources",
                "not in the document",
                "not in the context",
                "hallucinat*",
                "wrong fact*",
                "fabricat*",
                "no source",
                "doesn't say that",
                "does not say that",
            ],
            Pattern::WrongFormat => &[
                "format",
                "formatted",
                "formatting",
                "json",
                "bullet*",
                "table",
                "markdown",
                "yaml",
                "csv",
                "numbered list",
            ],
        }
    }
}

/// The patterns one failure shows.
pub fn detect(event: &Event, settings: &Settings) -> Vec<Pattern> {
    let feedback = event.feedback_text().map(text::normalize).unwrap_or_default();
    let mut found: Vec<Pattern> = Pattern::ALL
        .into_iter()
        .filter(|p| p.feedback_cues().iter().any(|c| text::has_phrase(&feedback, c)))
        .collect();
    let mut add = |p: Pattern| {
        if !found.contains(&p) {
            found.push(p);
        }
    };
    if let Signal::Correction(correction) = event.signal() {
        let answer_words = text::word_count(event.output());
        let correction_words = text::word_count(correction);
        if answer_words >= 30 && (correction_words as f64) <= settings.short_correction_ratio * answer_words as f64 {
            add(Pattern::TooLong);
        }
    }
    if context_overlap(event).is_some_and(|overlap| overlap < settings.overlap_threshold) {
        add(Pattern::Ungrounded);
    }
    if format_missed(event.input(), event.output()) {
        add(Pattern::WrongFormat);
    }
    found.sort();
    found
}

/// The fraction of the answer's content words found in its context, or
/// `None` without context or with fewer than 8 content words (too little to
/// judge).
pub fn context_overlap(event: &Event) -> Option<f64> {
    if !event.has_context() {
        return None;
    }
    let mut context = text::TokenSet::new();
    for passage in event.context() {
        context.extend_mapped(passage, text::light_stem);
    }
    let (mut total, mut hits) = (0usize, 0usize);
    for w in text::content_words(event.output()) {
        total += 1;
        hits += usize::from(context.contains(text::light_stem(&w)));
    }
    (total >= 8).then(|| hits as f64 / total as f64)
}

/// Whether the input asked for a format (JSON, bullets, a table, Markdown)
/// that the answer does not have.
pub fn format_missed(input: &str, output: &str) -> bool {
    let input = text::normalize(input);
    let lines = || output.lines().map(str::trim_start);
    let is_bullet = |l: &str| {
        l.starts_with(['-', '*', '•'])
            || l.split_once(['.', ')'])
                .is_some_and(|(n, _)| !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()))
    };
    if text::has_phrase(&input, "json") {
        let t = output.trim_start();
        return !(t.starts_with('{') || t.starts_with('[') || t.starts_with("```json"));
    }
    if ["bullet*", "bulleted list", "numbered list", "as a list", "in a list"]
        .iter()
        .any(|c| text::has_phrase(&input, c))
    {
        return lines().filter(|l| is_bullet(l)).count() < 2;
    }
    if text::has_phrase(&input, "table")
        && ["as a table", "in a table", "a table", "table of", "markdown table"]
            .iter()
            .any(|c| text::has_phrase(&input, c))
    {
        return lines().filter(|l| l.matches('|').count() >= 2).count() < 2;
    }
    if text::has_phrase(&input, "markdown") {
        return !lines()
            .any(|l| l.starts_with('#') || is_bullet(l) || l.contains("**") || l.contains('`') || l.contains('|'));
    }
    false
}

/// The first line of the block the refiner appends to templates.
pub const BLOCK_HEADER: &str = "## Additional instructions (proposed by prompt-refiner)";

/// Build the proposal, or `None` if no pattern reaches `min_evidence` or
/// every qualifying instruction is already in the template.
pub fn propose(prompt: &Prompt, failures: &[Event], settings: &Settings) -> Option<Proposal> {
    // One entry per distinct event id, so a replayed event counts once and
    // input order does not matter.
    let mut events: Vec<&Event> = failures.iter().collect();
    events.sort_by(|a, b| a.id().cmp(b.id()));
    events.dedup_by(|a, b| a.id() == b.id());

    let mut by_pattern: Vec<(Pattern, Vec<&str>)> = Pattern::ALL.iter().map(|&p| (p, Vec::new())).collect();
    for event in &events {
        for p in detect(event, settings) {
            if let Some((_, ids)) = by_pattern.iter_mut().find(|(q, _)| *q == p) {
                ids.push(event.id());
            }
        }
    }

    let template_lower = text::normalize(&prompt.template);
    let mut proposed: Vec<(Pattern, &Vec<&str>, String)> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for (pattern, ids) in &by_pattern {
        if ids.is_empty() {
            continue;
        }
        let instruction = pattern.instruction(settings);
        if ids.len() < settings.min_evidence {
            notes.push(format!(
                "{} ×{} (below min-evidence {})",
                pattern.name(),
                ids.len(),
                settings.min_evidence
            ));
        } else if template_lower.contains(&text::normalize(&instruction))
            || pattern.present_markers().iter().any(|m| template_lower.contains(m))
        {
            notes.push(format!(
                "{} ×{} (the template already says this)",
                pattern.name(),
                ids.len()
            ));
        } else {
            proposed.push((*pattern, ids, instruction));
        }
    }
    if proposed.is_empty() {
        return None;
    }

    let mut template = prompt.template.clone();
    let bullets: String = proposed.iter().map(|(_, _, i)| format!("- {i}\n")).collect();
    insert_block(&mut template, &bullets);

    let mut evidence: Vec<String> = proposed
        .iter()
        .flat_map(|(_, ids, _)| ids.iter().map(|id| (*id).to_owned()))
        .collect();
    evidence.sort();
    evidence.dedup();

    let found: Vec<String> = proposed
        .iter()
        .map(|(p, ids, _)| format!("{} ×{}", p.name(), ids.len()))
        .collect();
    let mut rationale = format!(
        "Of {} distinct failures of prompt {} {}, the recurring patterns are: {}. Each gets one instruction in a marked block at the end of the template.",
        events.len(),
        prompt.name,
        prompt.version,
        found.join(", ")
    );
    if !notes.is_empty() {
        rationale.push_str(&format!(" Not addressed: {}.", notes.join("; ")));
    }
    Some(Proposal {
        template,
        rationale,
        evidence,
    })
}

/// Append `bullets` to the refiner's block, creating the block at the end
/// of the template if it is not there yet.
fn insert_block(template: &mut String, bullets: &str) {
    if let Some(start) = template.find(BLOCK_HEADER) {
        // Extend the existing block: after its last consecutive bullet line.
        let after_header = start + BLOCK_HEADER.len();
        let mut end = template[after_header..]
            .find('\n')
            .map_or(template.len(), |i| after_header + i + 1);
        while end < template.len() && template[end..].starts_with("- ") {
            end = template[end..].find('\n').map_or(template.len(), |i| end + i + 1);
        }
        if !template[..end].ends_with('\n') {
            template.insert(end, '\n');
            end += 1;
        }
        template.insert_str(end, bullets);
    } else {
        let trimmed = template.trim_end().len();
        template.truncate(trimmed);
        if !template.is_empty() {
            template.push_str("\n\n");
        }
        template.push_str(BLOCK_HEADER);
        template.push('\n');
        template.push_str(bullets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flywheel_plugin::{EventData, Thumb, testing};

    const LONG_ANSWER: &str = "Resetting your password is a common task that many users need to perform from time to time. \
        First, you should consider why you want to reset it, and whether your account might have been compromised. \
        Then open the Settings page, navigate to Security, and choose the Reset password option, after which an email is sent.";

    fn prompt(template: &str) -> Prompt {
        Prompt {
            name: "support-answer".into(),
            version: "3".into(),
            template: template.into(),
        }
    }

    fn ev(id: &str, input: &str, output: &str, signal: Signal) -> Event {
        EventData {
            id: id.into(),
            input: input.into(),
            output: output.into(),
            signal,
            ..EventData::default()
        }
        .into()
    }

    fn too_long(id: &str) -> Event {
        ev(
            id,
            "How do I reset my password?",
            LONG_ANSWER,
            Signal::Comment("Way too long, just give me the steps".into()),
        )
    }

    fn refine(template: &str, failures: Vec<Event>) -> Option<Proposal> {
        PromptRefiner::refine(prompt(template), failures).expect("ok")
    }

    #[test]
    fn detects_each_pattern() {
        let s = Settings::default();
        assert_eq!(detect(&too_long("a"), &s), [Pattern::TooLong]);
        let short_fix = ev(
            "b",
            "reset?",
            LONG_ANSWER,
            Signal::Correction("Settings > Security > Reset password.".into()),
        );
        assert_eq!(detect(&short_fix, &s), [Pattern::TooLong]);
        let ignored = ev(
            "c",
            "Answer in French",
            "Here is the answer.",
            Signal::Clarification("I asked for French, you ignored that".into()),
        );
        assert_eq!(detect(&ignored, &s), [Pattern::IgnoredInstructions]);
        let made_up = ev("d", "q", "a", Signal::Comment("That quote is made up".into()));
        assert_eq!(detect(&made_up, &s), [Pattern::Ungrounded]);
        let mut off_context = ev(
            "e",
            "q",
            "Bananas contain potassium and are a popular healthy breakfast fruit worldwide.",
            Signal::Thumbs(Thumb::Down),
        )
        .to_data();
        off_context.context = vec!["Password resets are done from the Security page in Settings.".into()];
        let off_context: Event = off_context.into();
        assert_eq!(detect(&off_context, &s), [Pattern::Ungrounded]);
        let json = ev(
            "f",
            "Return the user as JSON",
            "The user is Ada, aged 36.",
            Signal::Thumbs(Thumb::Down),
        );
        assert_eq!(detect(&json, &s), [Pattern::WrongFormat]);
        let bullets_ok = ev(
            "g",
            "List the steps as bullet points",
            "- Open Settings\n- Choose Security",
            Signal::Thumbs(Thumb::Down),
        );
        assert!(detect(&bullets_ok, &s).is_empty());
        let both = ev(
            "h",
            "q",
            LONG_ANSWER,
            Signal::Comment("Too verbose and not in the source".into()),
        );
        assert_eq!(detect(&both, &s), [Pattern::TooLong, Pattern::Ungrounded]);
    }

    #[test]
    fn proposes_concise_instruction_with_evidence() {
        let template = "You are a helpful support agent.\nQuestion: {{input}}\n";
        let p = refine(template, vec![too_long("03"), too_long("01"), too_long("02")]).expect("a proposal");
        assert!(
            p.template
                .starts_with("You are a helpful support agent.\nQuestion: {{input}}\n\n")
        );
        assert!(p.template.contains(BLOCK_HEADER));
        assert!(p.template.contains(
            "- Be concise: answer in at most 3 sentences (about 60 words) unless the user asks for more detail."
        ));
        assert_eq!(p.evidence, ["01", "02", "03"]);
        assert!(p.rationale.contains("too-long ×3"), "{}", p.rationale);
    }

    #[test]
    fn below_min_evidence_is_none() {
        assert_eq!(refine("T", vec![too_long("1"), too_long("2")]), None);
        assert_eq!(refine("T", vec![]), None);
        // A replayed event counts once.
        assert_eq!(refine("T", vec![too_long("1"), too_long("1"), too_long("2")]), None);
        testing::set_config(&[("min-evidence", "2"), ("max-sentences", "2"), ("max-words", "40")]);
        let p = refine("T", vec![too_long("1"), too_long("2")]).expect("a proposal");
        assert!(p.template.contains("at most 2 sentences (about 40 words)"));
    }

    #[test]
    fn does_not_duplicate_instructions() {
        let failures = vec![too_long("1"), too_long("2"), too_long("3")];
        assert_eq!(refine("Answer concisely.\n{{input}}", failures.clone()), None);
        let first = refine("{{input}}", failures.clone()).expect("a proposal");
        assert_eq!(refine(&first.template, failures.clone()), None);
        // A new pattern extends the existing block instead of adding another.
        let made_up = |id: &str| ev(id, "q", "a", Signal::Comment("you made up the price".into()));
        let mut more = failures;
        more.extend([made_up("4"), made_up("5"), made_up("6")]);
        let second = refine(&first.template, more).expect("a proposal");
        assert_eq!(second.template.matches(BLOCK_HEADER).count(), 1);
        assert_eq!(second.template.matches("Be concise").count(), 1);
        assert!(
            second
                .template
                .trim_end()
                .ends_with("Never invent numbers, names or sources.")
        );
        assert_eq!(second.evidence, ["4", "5", "6"]);
        assert!(
            second.rationale.contains("ungrounded ×3") && second.rationale.contains("already says"),
            "{}",
            second.rationale
        );
    }

    #[test]
    fn several_patterns_in_block_order_and_deterministic() {
        let fmt = |id: &str| {
            ev(
                id,
                "Give me a table of prices",
                "Prices vary.",
                Signal::Thumbs(Thumb::Down),
            )
        };
        let ign = |id: &str| {
            ev(
                id,
                "Only answer yes or no",
                "It depends on many factors.",
                Signal::Comment("Not what I asked".into()),
            )
        };
        let failures = vec![
            fmt("f1"),
            ign("i1"),
            fmt("f2"),
            too_long("t1"),
            ign("i2"),
            fmt("f3"),
            ign("i3"),
        ];
        let p = refine("{{input}}", failures.clone()).expect("a proposal");
        let ignored_at = p
            .template
            .find("Follow the user's instructions")
            .expect("ignored-instructions");
        let format_at = p.template.find("Match the requested format").expect("wrong-format");
        assert!(ignored_at < format_at);
        assert!(!p.template.contains("Be concise"));
        assert_eq!(p.evidence, ["f1", "f2", "f3", "i1", "i2", "i3"]);
        assert!(p.rationale.contains("ignored-instructions ×3") && p.rationale.contains("wrong-format ×3"));
        assert!(
            p.rationale.contains("too-long ×1 (below min-evidence 3)"),
            "{}",
            p.rationale
        );
        let mut reversed = failures;
        reversed.reverse();
        assert_eq!(refine("{{input}}", reversed), Some(p));
    }
}
