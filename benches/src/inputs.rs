//! The benchmark events, shared by `flywheel-benches` (as a module) and the Extism peer
//! harness (`benches/extism-peer/host`, through `#[path]`), so both suites feed the
//! scorers exactly the same inputs. Deterministic: event `i` is always the same.

use std::collections::BTreeMap;

use flywheel_model::{Event, Feedback, PromptRef, Thumb};

/// How big an event's answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// About 200 bytes of output, three short context passages.
    Small,
    /// About 4 KiB of output, five longer passages.
    Large,
}

impl Size {
    pub const ALL: [Size; 2] = [Size::Small, Size::Large];

    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "200B",
            Size::Large => "4KiB",
        }
    }

    fn output_bytes(self) -> usize {
        match self {
            Size::Small => 200,
            Size::Large => 4096,
        }
    }

    fn passages(self) -> (usize, usize) {
        match self {
            Size::Small => (3, 300),
            Size::Large => (5, 900),
        }
    }
}

/// Support-desk sentences with the numbers and names that the groundedness and
/// sensitive scorers look at. Answers draw mostly from the same pool as the context.
const SENTENCES: &[&str] = &[
    "To reset your password, open Settings, then Security, and choose Reset password.",
    "The reset link in the email expires after 24 hours.",
    "The Pro plan costs 49 dollars per month and includes 5 seats.",
    "Invoices are issued on the 1st of each month and can be downloaded as PDF.",
    "Single sign-on is available on the Enterprise plan through Okta or Azure AD.",
    "Exports run in the background and usually finish within 10 minutes.",
    "Maria Lopez from the billing team approves refunds within 3 business days.",
    "API keys can be rotated from the Developer page without downtime.",
    "The mobile app stores drafts locally until the device is back online.",
    "Two-factor authentication supports authenticator apps and hardware keys.",
    "Data is kept in the Frankfurt region unless the workspace owner chooses another.",
    "Rate limits are 600 requests per minute per key, with bursts up to 100.",
    "Deleted projects stay in the trash for 30 days before they are purged.",
    "Guests can comment on documents but cannot change sharing settings.",
    "The desktop client syncs every 15 seconds while a document is open.",
    "Support is available from 8am to 6pm CET on working days.",
];

/// Off-topic sentences that show up in retrieved context but not in answers.
const DISTRACTORS: &[&str] = &[
    "The company was founded in Lisbon in 2014 by Ana Ribeiro and Tom Becker.",
    "Quarterly release notes are published on the status page.",
    "Older browsers such as Internet Explorer are no longer supported.",
    "Accessibility reviews follow the WCAG 2.1 AA guidelines.",
];

/// Deterministic, cheap pseudo-random numbers (xorshift), so every run sees the same events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next() % items.len()]
    }
}

fn text_of(rng: &mut Rng, pools: &[&[&str]], bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 128);
    while out.len() < bytes {
        if !out.is_empty() {
            out.push(' ');
        }
        let pool = pools[rng.next() % pools.len()];
        out.push_str(rng.pick(pool));
    }
    out
}

/// Event number `i` of a deterministic stream: a support answer of `size` with its
/// retrieved context, every kind of feedback in turn, and an occasional email address
/// or medical cue so that every rule of every plugin gets exercised.
pub fn event(i: usize, size: Size) -> Event {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut output = text_of(&mut rng, &[SENTENCES], size.output_bytes());
    match i % 8 {
        3 => output.push_str(" You can also write to jane.doe@example.com for help."),
        6 => output.push_str(" Take 400 mg of ibuprofen if the headache persists."),
        _ => {}
    }
    let (n, passage_bytes) = size.passages();
    let context = (0..n)
        .map(|_| {
            text_of(
                &mut rng,
                &[SENTENCES, SENTENCES, DISTRACTORS],
                passage_bytes,
            )
        })
        .collect();
    let feedback = match i % 6 {
        0 => Feedback::Thumbs { value: Thumb::Up },
        1 => Feedback::Thumbs { value: Thumb::Down },
        2 => Feedback::Rating {
            value: 4.0,
            scale: 5.0,
        },
        3 => Feedback::Comment {
            text: "Thanks, that was helpful, but the link did not work on my phone.".into(),
        },
        4 => Feedback::Correction {
            text: "The reset link is on the sign-in page under Forgot password.".into(),
        },
        _ => Feedback::Clarification {
            text: "Where exactly is the Security tab on mobile?".into(),
        },
    };
    Event {
        id: format!("01JBENCH{i:018}"),
        received_at: 1_764_000_000_000 + i as u64,
        trace_id: Some(format!("trace-{i}")),
        session_id: Some(format!("session-{}", i / 4)),
        user_id: Some(format!("user-{}", i % 97)),
        model: Some("gpt-4o-mini".into()),
        prompt: Some(PromptRef {
            name: "support-answer".into(),
            version: "3".into(),
        }),
        input: "How do I reset my password, and how long is the reset link valid?".into(),
        output,
        context,
        feedback,
        metadata: BTreeMap::from([
            ("locale".into(), "en-GB".into()),
            ("channel".into(), "web".into()),
        ]),
    }
}
