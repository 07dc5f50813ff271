//! Text helpers for the heuristics most policies need: words, sentences,
//! numbers, capitalised names, a token set and a stable hash.
//!
//! Why these and why this way: a plugin call is short, and inside a guest the
//! cost is dominated by allocation and hashing, not by the logic. So the
//! iterators here borrow from the input (a word is only copied when it needs
//! lower-casing), the token set is a sorted `Vec<u64>` of FNV-1a hashes
//! searched by bisection (no SipHash `HashMap`, no per-token `String`), and
//! everything is deterministic, so a replayed event gets the same result.
//!
//! "Lower-case" means ASCII lower-case throughout: cheap, locale-free, and
//! enough for English lexicons. Non-ASCII letters still count as letters.

use std::borrow::Cow;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A deterministic 64-bit FNV-1a hash of `s`'s bytes.
///
/// Why: sampling decisions (e.g. "route 5% of traffic to QA") must be the
/// same on every replay, host and version, which `std`'s randomly seeded
/// hasher does not give. FNV-1a is tiny and fast on short strings like ids.
pub fn stable_hash(s: &str) -> u64 {
    s.bytes()
        .fold(FNV_OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// `value` with `places` decimals (at most 9), exactly as `format!("{value:.places$}")`
/// prints it (rounded half to even on the exact binary value), without Rust's float
/// formatting machinery.
///
/// Why: reasons quote scores ("satisfaction 0.25 < threshold 0.50"), and in a guest
/// the general float formatter (with its big-number fallback) cost more than the rest of
/// a router's call. This does the same arithmetic on integers.
pub fn fixed(value: f64, places: u32) -> String {
    let places = places.min(9);
    if !value.is_finite() || value.abs() >= 1e15 {
        return format!("{value:.prec$}", prec = places as usize);
    }
    let bits = value.abs().to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1u64 << 52) - 1);
    // value = mantissa × 2^shift, exactly.
    let (mantissa, shift) = if exponent == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), exponent - 1075)
    };
    let scaled = u128::from(mantissa) * 10u128.pow(places);
    let units = if shift >= 0 {
        scaled << shift
    } else if -shift >= 128 {
        0
    } else {
        let k = -shift as u32;
        let (q, r) = (scaled >> k, scaled & ((1u128 << k) - 1));
        let half = 1u128 << (k - 1);
        if r > half || (r == half && q % 2 == 1) {
            q + 1
        } else {
            q
        }
    };
    let pow = 10u128.pow(places);
    let sign = if value.is_sign_negative() { "-" } else { "" };
    if places == 0 {
        format!("{sign}{units}")
    } else {
        format!("{sign}{}.{:0width$}", units / pow, units % pow, width = places as usize)
    }
}

/// A deterministic number in `0.0..1.0` derived from `s`: [`stable_hash`]
/// followed by the MurmurHash3 `fmix64` finaliser, top 53 bits.
///
/// Why: for sampling ("keep this event if `stable_fraction(id) < rate`").
/// Raw FNV-1a is not uniform enough in its top bits for ids that differ
/// only in their last characters (a sequence of ULIDs); the finaliser
/// spreads every input bit over the whole word.
pub fn stable_fraction(s: &str) -> f64 {
    let mut h = stable_hash(s);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// FNV-1a of `s` ASCII-lower-cased on the fly, so `"Paris"` and `"paris"`
/// hash alike without allocating a lower-case copy.
///
/// Why: the key of [`TokenSet`].
pub fn token_hash(s: &str) -> u64 {
    s.bytes().fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(FNV_PRIME)
    })
}

/// Whether `c` may appear inside a word.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

/// Whether `c` joins two word characters into one word (`don't`, `it’s`).
fn is_joiner(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

/// An iterator over the words of a text, as slices of it in their original
/// case. A word is a run of alphanumeric characters, with an apostrophe
/// allowed between two of them (`didn't`); everything else separates words.
///
/// Why: the primitive under [`words`], [`word_count`] and [`names`]; it never
/// allocates.
#[derive(Debug, Clone)]
pub struct RawWords<'a> {
    text: &'a str,
    pos: usize,
}

/// The words of `text` in their original case (see [`RawWords`]).
pub fn raw_words(text: &str) -> RawWords<'_> {
    RawWords { text, pos: 0 }
}

/// Byte classes for the word scanners: an ASCII letter or digit, the ASCII
/// apostrophe (joins two word characters), any byte of a non-ASCII character
/// (decoded to decide), or anything else (separates words).
const ASCII_WORD: u8 = 1;
const ASCII_APOSTROPHE: u8 = 2;
const NON_ASCII: u8 = 4;

static BYTE_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c >= 0x80 {
            NON_ASCII
        } else if c.is_ascii_alphanumeric() {
            ASCII_WORD
        } else if c == b'\'' {
            ASCII_APOSTROPHE
        } else {
            0
        };
        b += 1;
    }
    t
};

impl<'a> RawWords<'a> {
    /// The next word with its byte offset in the text.
    ///
    /// Why: callers that need positions (e.g. "is this word at the start of
    /// a sentence?") get them without a second scan.
    pub fn next_with_offset(&mut self) -> Option<(usize, &'a str)> {
        // Table-driven over bytes, decoding a `char` only for non-ASCII text:
        // decoding every `char` of a mostly ASCII text was the single largest
        // cost of the text heuristics, and in a guest every branch counts.
        let text = self.text;
        let bytes = text.as_bytes();
        let n = bytes.len();
        let mut i = self.pos;
        let start = loop {
            if i >= n {
                self.pos = n;
                return None;
            }
            let class = BYTE_CLASS[usize::from(bytes[i])];
            if class == ASCII_WORD {
                break i;
            }
            if class == NON_ASCII {
                let (c, len) = char_at(text, i)?;
                if is_word_char(c) {
                    break i;
                }
                i += len;
            } else {
                i += 1;
            }
        };
        let mut end;
        loop {
            i = ascii_word_end(bytes, i);
            end = i;
            if i >= n {
                break;
            }
            match BYTE_CLASS[usize::from(bytes[i])] {
                ASCII_APOSTROPHE if starts_word_char(text, i + 1) => i += 1,
                NON_ASCII => {
                    let Some((c, len)) = char_at(text, i) else { break };
                    if is_word_char(c) {
                        // The next round extends `end` past it.
                        i += len;
                    } else if is_joiner(c) && starts_word_char(text, i + len) {
                        i += len;
                    } else {
                        break;
                    }
                }
                _ => break,
            }
        }
        self.pos = end;
        Some((start, &text[start..end]))
    }
}

/// The end of the run of ASCII letters and digits starting at byte `i`: eight bytes at a
/// time while they are all ASCII, then byte by byte.
///
/// Why: most words are a few ASCII letters; testing a whole `u64` per step (exact
/// per-byte range checks, no carries between bytes since every byte is below 0x80)
/// takes one step per word where a byte loop took one per letter, and in a guest each
/// step of a loop costs.
#[inline]
fn ascii_word_end(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // High bit of each byte set where lo <= byte <= hi (bytes below 0x80).
    let in_range = |x: u64, lo: u8, hi: u8| {
        (x.wrapping_add(ONES * u64::from(0x80 - lo)) & !x.wrapping_add(ONES * u64::from(0x7f - hi))) & HIGH
    };
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        if x & HIGH != 0 {
            break;
        }
        let alnum = in_range(x, b'0', b'9') | in_range(x | (ONES * 0x20), b'a', b'z');
        if alnum != HIGH {
            return i + ((!alnum & HIGH).trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && BYTE_CLASS[usize::from(bytes[i])] == ASCII_WORD {
        i += 1;
    }
    i
}

/// Whether a word character starts at byte `i` of `text`.
#[inline]
fn starts_word_char(text: &str, i: usize) -> bool {
    match text.as_bytes().get(i) {
        None => false,
        Some(&b) if b < 0x80 => b.is_ascii_alphanumeric(),
        Some(_) => char_at(text, i).is_some_and(|(c, _)| is_word_char(c)),
    }
}

/// The `char` starting at byte `i` of `text` and its length in bytes; `None` at the
/// end. `i` must be on a char boundary.
#[inline]
fn char_at(text: &str, i: usize) -> Option<(char, usize)> {
    let b = *text.as_bytes().get(i)?;
    if b.is_ascii() {
        Some((char::from(b), 1))
    } else {
        text[i..].chars().next().map(|c| (c, c.len_utf8()))
    }
}

impl<'a> Iterator for RawWords<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.next_with_offset().map(|(_, w)| w)
    }
}

/// An iterator over the ASCII-lower-cased words of a text (see
/// [`RawWords`] for what a word is).
///
/// Why `Cow`: a word already in lower case (most of them) is borrowed from
/// the text; only words with upper-case letters are copied.
#[derive(Debug, Clone)]
pub struct Words<'a> {
    inner: RawWords<'a>,
}

/// The ASCII-lower-cased words of `text` (see [`Words`]).
pub fn words(text: &str) -> Words<'_> {
    Words { inner: raw_words(text) }
}

impl<'a> Iterator for Words<'a> {
    type Item = Cow<'a, str>;

    fn next(&mut self) -> Option<Cow<'a, str>> {
        self.inner.next().map(lowercase)
    }
}

/// `word` in ASCII lower case, borrowed when it already is.
pub fn lowercase(word: &str) -> Cow<'_, str> {
    if word.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(word.to_ascii_lowercase())
    } else {
        Cow::Borrowed(word)
    }
}

/// `text` in ASCII lower case with typographic apostrophes and quotes
/// (`’ ‘ “ ”`) replaced by ASCII ones.
///
/// Why: phrase lexicons are written in plain ASCII (`didn't`); normalise a
/// text once, then run every [`has_phrase`] over the copy.
pub fn normalize(text: &str) -> String {
    // The typographic marks are not ASCII: an ASCII text (most of them) only
    // needs lower-casing, a byte-wise copy instead of a `char` decode and
    // re-encode per character.
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        out.push(match c {
            '\u{2018}' | '\u{2019}' => '\'',
            '\u{201c}' | '\u{201d}' => '"',
            c => c.to_ascii_lowercase(),
        });
    }
    out
}

/// The number of words in `text` (see [`RawWords`]).
///
/// Why: length budgets ("at most 60 words") are counted in words.
pub fn word_count(text: &str) -> usize {
    raw_words(text).count()
}

/// Common English function words, sorted (for bisection), lower case.
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "are",
    "aren't",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "can't",
    "cannot",
    "could",
    "couldn't",
    "did",
    "didn't",
    "do",
    "does",
    "doesn't",
    "doing",
    "don't",
    "down",
    "during",
    "e.g",
    "each",
    "etc",
    "few",
    "for",
    "from",
    "further",
    "had",
    "hadn't",
    "has",
    "hasn't",
    "have",
    "haven't",
    "having",
    "he",
    "he'd",
    "he'll",
    "he's",
    "her",
    "here",
    "here's",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "how's",
    "however",
    "i",
    "i'd",
    "i'll",
    "i'm",
    "i've",
    "i.e",
    "if",
    "in",
    "into",
    "is",
    "isn't",
    "it",
    "it's",
    "its",
    "itself",
    "just",
    "let's",
    "may",
    "me",
    "might",
    "more",
    "most",
    "must",
    "mustn't",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "ought",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "per",
    "same",
    "shall",
    "shan't",
    "she",
    "she'd",
    "she'll",
    "she's",
    "should",
    "shouldn't",
    "so",
    "some",
    "such",
    "than",
    "that",
    "that's",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "there's",
    "these",
    "they",
    "they'd",
    "they'll",
    "they're",
    "they've",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "via",
    "was",
    "wasn't",
    "we",
    "we'd",
    "we'll",
    "we're",
    "we've",
    "were",
    "weren't",
    "what",
    "what's",
    "when",
    "when's",
    "where",
    "where's",
    "which",
    "while",
    "who",
    "who's",
    "whom",
    "why",
    "why's",
    "will",
    "with",
    "won't",
    "would",
    "wouldn't",
    "yes",
    "yet",
    "you",
    "you'd",
    "you'll",
    "you're",
    "you've",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// Whether `word` (lower case) is a common English function word ("the",
/// "is", "didn't", ...).
///
/// Why: overlap heuristics should compare content words; function words
/// match any text and would inflate every overlap.
pub fn is_stopword(word: &str) -> bool {
    // Most content words are longer than any stopword: skip the lookup.
    word.len() <= MAX_STOPWORD_LEN && stopword_hashed(stable_hash(word), word, false)
}

/// Whether `word`, whose [`token_hash`] is `hash`, is a stopword; with
/// `ignore_case`, in any ASCII case.
///
/// Why one hash-table probe: a stopword test runs for every word of every
/// text, and a hash the caller already has (it hashes the word anyway) makes
/// it one multiply and one or two integer compares; a string compare then
/// confirms the hit.
fn stopword_hashed(hash: u64, word: &str, ignore_case: bool) -> bool {
    static TABLE: std::sync::OnceLock<HashSlots<&'static str>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = HashSlots::with_capacity(STOPWORDS.len());
        for w in STOPWORDS {
            t.insert(stable_hash(w), *w);
        }
        t
    });
    table.get(hash).is_some_and(|w| {
        if ignore_case {
            w.eq_ignore_ascii_case(word)
        } else {
            w == word
        }
    })
}

/// A fixed-size open-addressing table from 64-bit hashes to values, for
/// lookups by a hash the caller has already computed. At most one value per
/// hash (a later insert of the same hash is ignored); grows to stay at most
/// half full.
#[derive(Debug, Clone)]
struct HashSlots<V> {
    /// `(hash, value)`; `None` is an empty slot.
    slots: Vec<Option<(u64, V)>>,
    len: usize,
}

impl<V: Copy> HashSlots<V> {
    fn with_capacity(n: usize) -> Self {
        let size = (n.max(4) * 2).next_power_of_two();
        HashSlots {
            slots: vec![None; size],
            len: 0,
        }
    }

    #[inline]
    fn slot(&self, hash: u64) -> usize {
        // Fibonacci hashing: the top bits of the product are well mixed even
        // when the hashes differ only in their low bits.
        let bits = self.slots.len().trailing_zeros();
        (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }

    fn insert(&mut self, hash: u64, value: V) {
        if (self.len + 1) * 2 > self.slots.len() {
            let size = self.slots.len() * 2;
            let old = std::mem::replace(&mut self.slots, vec![None; size]);
            self.len = 0;
            for (h, v) in old.into_iter().flatten() {
                self.insert(h, v);
            }
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot(hash);
        loop {
            match &self.slots[i] {
                None => {
                    self.slots[i] = Some((hash, value));
                    self.len += 1;
                    return;
                }
                Some((h, _)) if *h == hash => return,
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    #[inline]
    fn get(&self, hash: u64) -> Option<V> {
        let mask = self.slots.len() - 1;
        let mut i = self.slot(hash);
        loop {
            match self.slots[i] {
                None => return None,
                Some((h, v)) if h == hash => return Some(v),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }
}

/// The length of the longest stopword, in bytes.
const MAX_STOPWORD_LEN: usize = {
    let mut max = 0;
    let mut i = 0;
    while i < STOPWORDS.len() {
        if STOPWORDS[i].len() > max {
            max = STOPWORDS[i].len();
        }
        i += 1;
    }
    max
};

/// The lower-cased content words of `text`: words that are not stopwords,
/// contain a letter and are at least two bytes long.
///
/// Why: the unit of "is this claim supported by that text" heuristics;
/// bare numbers are left out because [`numbers`] treats them precisely.
pub fn content_words(text: &str) -> impl Iterator<Item = Cow<'_, str>> {
    raw_words(text).filter(|w| is_content_word(w)).map(lowercase)
}

/// Whether `word` (in any case) is a content word: at least two bytes, a
/// letter in it, and not a stopword. What [`content_words`] keeps.
///
/// Why: lets a caller that walks [`raw_words`] (and needs the words as they
/// are written, e.g. for [`stem_hash`]) filter them without lower-casing a
/// copy of each.
pub fn is_content_word(word: &str) -> bool {
    let bytes = word.as_bytes();
    if bytes.len() < 2 {
        return false;
    }
    let has_letter = if word.is_ascii() {
        bytes.iter().any(u8::is_ascii_alphabetic)
    } else {
        word.chars().any(char::is_alphabetic)
    };
    has_letter && !(bytes.len() <= MAX_STOPWORD_LEN && stopword_hashed(token_hash(word), word, true))
}

/// A crude, allocation-free English stemmer: strips a plural (`-s`, `-es`,
/// `-ies`), then `-ing`/`-ed`/`-ly`, then a final `-e`/`-y`, never leaving
/// fewer than three bytes. Input should be lower case.
///
/// Why: so that "notes", "noted" and "note" match when comparing an answer
/// with its sources. It is only ever used on both sides of a comparison, so
/// the stems need to agree with each other, not to be real words.
pub fn light_stem(word: &str) -> &str {
    &word[..stem_len(word.as_bytes())]
}

/// [`token_hash`] of the [`light_stem`] of `word` lower-cased, without
/// lower-casing a copy: `stem_hash("Notes") == token_hash(light_stem("notes"))`.
///
/// Why: the key under which overlap heuristics store and probe words (see
/// [`TokenSet::extend_stems`] and [`TokenSet::contains_stem`]); one pass over
/// the word's bytes and no allocation, which matters in a guest where a
/// `String` per capitalised word was a third of the cost.
pub fn stem_hash(word: &str) -> u64 {
    token_hash(&word[..stem_len(word.as_bytes())])
}

/// The length of [`light_stem`]'s result, with suffixes compared ASCII-case-
/// insensitively (so it is the same for a word in any case). Suffixes are
/// ASCII, so a cut never falls inside a multi-byte character.
fn stem_len(word: &[u8]) -> usize {
    #[inline]
    fn ends(w: &[u8], suffix: &[u8]) -> bool {
        w.len() >= suffix.len() && w[w.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    }
    #[inline]
    fn last_is(w: &[u8], set: &[u8]) -> bool {
        w.last().is_some_and(|b| set.contains(&b.to_ascii_lowercase()))
    }
    let mut n = word.len();
    if ends(word, b"'s") {
        n -= 2;
    }
    let w = &word[..n];
    if ends(w, b"ies") && n - 3 >= 3 {
        n -= 3;
    } else if ends(w, b"es") && n - 2 >= 3 && {
        let s = &w[..n - 2];
        last_is(s, b"sxz") || ends(s, b"ch") || ends(s, b"sh")
    } {
        n -= 2;
    } else if ends(w, b"s") && n > 3 && !last_is(&w[..n - 1], b"sui") {
        n -= 1;
    }
    let w = &word[..n];
    let cut = if ends(w, b"ing") {
        3
    } else if ends(w, b"ed") || ends(w, b"ly") {
        2
    } else {
        0
    };
    if cut > 0 && n - cut >= 3 {
        n -= cut;
    }
    if last_is(&word[..n], b"ey") && n > 3 {
        n -= 1;
    }
    n
}

/// A set of words, compared ASCII-case-insensitively: an open-addressing
/// hash set of [`token_hash`]es.
///
/// Why: membership tests over a context of a few thousand words are the hot
/// loop of overlap heuristics; this needs one allocation for the whole set,
/// no per-word `String` or SipHash, and a probe is a multiply and usually
/// one compare. Two different words could share a 64-bit hash; at these
/// sizes the odds are negligible (about 1 in 10^12).
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    /// Power-of-two sized, at most half full; `0` marks an empty slot (a
    /// word hashing to 0 is remembered in `has_zero` instead).
    slots: Vec<u64>,
    len: usize,
    has_zero: bool,
}

impl TokenSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set with room for `n` words before it grows.
    ///
    /// Why: a caller that knows roughly how many words are coming (e.g. a
    /// text's length / 4) avoids rehashing as it fills.
    pub fn with_capacity(n: usize) -> Self {
        TokenSet {
            slots: vec![0; (n.max(4) * 2).next_power_of_two()],
            len: 0,
            has_zero: false,
        }
    }

    /// The set of all words of `text` (see [`RawWords`]).
    pub fn from_text(text: &str) -> Self {
        raw_words(text).collect()
    }

    /// Add every word of `text`.
    pub fn extend_text(&mut self, text: &str) {
        self.extend(raw_words(text));
    }

    /// Add one word.
    pub fn insert(&mut self, word: &str) {
        self.insert_hash(token_hash(word));
    }

    /// Add a word by its [`token_hash`] (or any other 64-bit key, as long as
    /// lookups use the same one).
    ///
    /// Why: a caller that already hashed a word (e.g. with [`stem_hash`])
    /// does not hash it again.
    pub fn insert_hash(&mut self, hash: u64) {
        if hash == 0 {
            if !self.has_zero {
                self.has_zero = true;
                self.len += 1;
            }
            return;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot(hash);
        loop {
            let s = self.slots[i];
            if s == hash {
                return;
            }
            if s == 0 {
                self.slots[i] = hash;
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    fn slot(&self, hash: u64) -> usize {
        // Fibonacci hashing: the top bits of the product are well mixed.
        let bits = self.slots.len().trailing_zeros();
        (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(8);
        let old = std::mem::replace(&mut self.slots, vec![0; size]);
        let has_zero = self.has_zero;
        self.len = 0;
        self.has_zero = false;
        for h in old.into_iter().filter(|&h| h != 0) {
            self.insert_hash(h);
        }
        if has_zero {
            self.insert_hash(0);
        }
    }

    /// Add every word of `text`, lower-cased and passed through `map` first
    /// (e.g. [`light_stem`]).
    ///
    /// Why: normalising words on the way in without allocating a `String`
    /// per word; probe with the same `map` applied to the query.
    pub fn extend_mapped(&mut self, text: &str, map: impl Fn(&str) -> &str) {
        self.extend_mapped_all([text], map);
    }

    /// [`extend_mapped`](Self::extend_mapped) for several texts at once.
    pub fn extend_mapped_all<'t>(&mut self, texts: impl IntoIterator<Item = &'t str>, map: impl Fn(&str) -> &str) {
        for text in texts {
            for w in words(text) {
                self.insert_hash(token_hash(map(&w)));
            }
        }
    }

    /// Add the [`stem_hash`] of every word of every text: the same set as
    /// `extend_mapped_all(texts, light_stem)`, without lower-casing copies.
    pub fn extend_stems<'t>(&mut self, texts: impl IntoIterator<Item = &'t str>) {
        for text in texts {
            for w in raw_words(text) {
                self.insert_hash(stem_hash(w));
            }
        }
    }

    /// Whether `word` (in any ASCII case) is in the set.
    pub fn contains(&self, word: &str) -> bool {
        self.contains_hash(token_hash(word))
    }

    /// Whether the [`stem_hash`] of `word` is in the set (see
    /// [`extend_stems`](Self::extend_stems)).
    pub fn contains_stem(&self, word: &str) -> bool {
        self.contains_hash(stem_hash(word))
    }

    /// Whether a key added with [`insert_hash`](Self::insert_hash) is in the set.
    #[inline]
    pub fn contains_hash(&self, hash: u64) -> bool {
        if hash == 0 {
            return self.has_zero;
        }
        if self.slots.is_empty() {
            return false;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot(hash);
        loop {
            let s = self.slots[i];
            if s == hash {
                return true;
            }
            if s == 0 {
                return false;
            }
            i = (i + 1) & mask;
        }
    }

    /// The number of distinct words.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The keys in the set, in no particular order.
    fn hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.has_zero
            .then_some(0)
            .into_iter()
            .chain(self.slots.iter().copied().filter(|&h| h != 0))
    }
}

impl PartialEq for TokenSet {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.hashes().all(|h| other.contains_hash(h))
    }
}

impl Eq for TokenSet {}

impl<S: AsRef<str>> Extend<S> for TokenSet {
    fn extend<I: IntoIterator<Item = S>>(&mut self, iter: I) {
        for w in iter {
            self.insert(w.as_ref());
        }
    }
}

impl<S: AsRef<str>> FromIterator<S> for TokenSet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut set = TokenSet::new();
        set.extend(iter);
        set
    }
}

/// Whether `haystack` contains `phrase` as whole words. Both must already
/// be lower case (see [`normalize`]). A trailing `*` in `phrase` makes its
/// last word a prefix (`"hallucinat*"` matches "hallucinated").
///
/// Why whole words: lexicon terms are short ("sue", "mg", "stock") and would
/// otherwise match inside "issue", "among", "Stockholm".
///
/// To check many phrases against one text, use a [`PhraseIndex`]: it gives
/// the same answers without scanning the text once per phrase.
pub fn has_phrase(haystack: &str, phrase: &str) -> bool {
    let Some((needle, prefix)) = split_phrase(phrase) else {
        return false;
    };
    // Every occurrence, overlapping ones included, so that a failed match
    // cannot hide the next one ("b b" in "ab b b").
    let mut from = 0;
    while let Some(k) = haystack[from..].find(needle) {
        let i = from + k;
        if matches_at(haystack, i, needle, prefix) {
            return true;
        }
        from = i + haystack[i..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// A lexicon phrase split into its text and whether it is a prefix (`*`).
fn split_phrase(phrase: &str) -> Option<(&str, bool)> {
    let (needle, prefix) = match phrase.strip_suffix('*') {
        Some(n) => (n, true),
        None => (phrase, false),
    };
    (!needle.is_empty()).then_some((needle, prefix))
}

/// Whether `needle` at byte `i` of `haystack` is a whole-word match (see
/// [`has_phrase`]).
fn matches_at(haystack: &str, i: usize, needle: &str, prefix: bool) -> bool {
    if !haystack[i..].starts_with(needle) {
        return false;
    }
    let end = i + needle.len();
    let starts_ok =
        !needle.starts_with(is_word_char) || haystack[..i].chars().next_back().is_none_or(|c| !is_word_char(c));
    let ends_ok =
        prefix || !needle.ends_with(is_word_char) || haystack[end..].chars().next().is_none_or(|c| !is_word_char(c));
    starts_ok && ends_ok
}

/// One text prepared for many [`has_phrase`] checks: the byte offsets where
/// a word starts, grouped by their first byte.
///
/// Why: a topic lexicon holds dozens of phrases; with `has_phrase` each one
/// scans the whole text, which made lexicon matching the dominant cost of a
/// call (and several times slower in wasm than natively). Here the text is
/// scanned once, and a phrase is only compared where a word starting with
/// its first byte does. [`PhraseIndex::has`] gives exactly the answer of
/// [`has_phrase`].
#[derive(Debug, Clone)]
pub struct PhraseIndex<'a> {
    text: &'a str,
    /// Offsets of every word start, grouped by first byte (a counting sort):
    /// those starting with byte `b` are `starts[group[b]..group[b + 1]]`.
    starts: Vec<u32>,
    group: [u32; 257],
}

impl<'a> PhraseIndex<'a> {
    /// Index `text`, which must already be lower case (see [`normalize`]).
    pub fn new(text: &'a str) -> Self {
        let bytes = text.as_bytes();
        let mut found = Vec::new();
        let mut group = [0u32; 257];
        let mut prev_is_word = false;
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            // ASCII fast path: no `char` decode for most bytes.
            let (is_word, len) = if b.is_ascii() {
                (b.is_ascii_alphanumeric(), 1)
            } else {
                let (c, len) = char_at(text, i).unwrap_or((char::REPLACEMENT_CHARACTER, 1));
                (is_word_char(c), len)
            };
            if is_word && !prev_is_word {
                found.push(i as u32);
                group[usize::from(bytes[i]) + 1] += 1;
            }
            prev_is_word = is_word;
            i += len;
        }
        for b in 1..group.len() {
            group[b] += group[b - 1];
        }
        let mut next = group;
        let mut starts = vec![0; found.len()];
        for i in found {
            let slot = &mut next[usize::from(bytes[i as usize])];
            starts[*slot as usize] = i;
            *slot += 1;
        }
        PhraseIndex { text, starts, group }
    }

    /// The indexed text.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Whether the text contains `phrase` as whole words (see [`has_phrase`]).
    pub fn has(&self, phrase: &str) -> bool {
        let Some((needle, prefix)) = split_phrase(phrase) else {
            return false;
        };
        if !needle.starts_with(is_word_char) {
            // Such a phrase may start anywhere, not only at a word.
            return has_phrase(self.text, phrase);
        }
        let first = usize::from(needle.as_bytes()[0]);
        let (lo, hi) = (self.group[first] as usize, self.group[first + 1] as usize);
        // Most candidates differ from the needle in their second byte: compare
        // it inline before the full match.
        let bytes = self.text.as_bytes();
        let second = needle.as_bytes().get(1);
        self.starts[lo..hi].iter().any(|&i| {
            let i = i as usize;
            (second.is_none() || bytes.get(i + 1) == second) && matches_at(self.text, i, needle, prefix)
        })
    }
}

/// A lexicon compiled for matching: many phrases (the syntax of
/// [`has_phrase`]: whole words, a trailing `*` for a prefix) checked against
/// a text in one pass over its words.
///
/// Matching is ASCII-case-insensitive and typographic apostrophes and quotes
/// count as ASCII ones (both the text and the phrases are read as
/// [`normalize`] would make them), so `Lexicon::new(["didn't work"])` finds
/// "It DIDN’T work". [`Lexicon::find`] gives, for every phrase, what
/// `has_phrase(&normalize(text), &normalize(phrase))` gives.
///
/// Why: a topic lexicon holds dozens of phrases and a plugin checks it on
/// every call; comparing each phrase with the text was the largest cost of
/// such plugins (and several times slower in wasm than natively). Here the
/// phrases are grouped by their first byte once (build the lexicon once per
/// instance, e.g. in a `OnceLock`), and each word of the text is compared
/// only with the phrases that start with its first two bytes.
#[derive(Debug, Clone)]
pub struct Lexicon {
    /// Normalised phrases without their `*`, grouped by first byte: those
    /// starting with byte `b` are `entries[group[b]..group[b + 1]]`.
    entries: Vec<LexiconEntry>,
    group: Box<[u32; 257]>,
    /// Phrases that do not start with a word character: they may match
    /// anywhere, so they are checked with [`has_phrase`].
    anywhere: Vec<LexiconEntry>,
    len: usize,
}

#[derive(Debug, Clone)]
struct LexiconEntry {
    needle: Box<str>,
    prefix: bool,
    /// Whether the needle's last character is a word character (only then
    /// must a whole-word match end at a word boundary).
    ends_in_word: bool,
    /// Index of the phrase in the order given to [`Lexicon::new`].
    index: usize,
}

impl Lexicon {
    /// Compile `phrases`; each is identified by its position in the list.
    /// Empty phrases (and a bare `*`) never match.
    pub fn new<'p>(phrases: impl IntoIterator<Item = &'p str>) -> Self {
        let mut entries = Vec::new();
        let mut anywhere = Vec::new();
        let mut len = 0;
        for (index, phrase) in phrases.into_iter().enumerate() {
            len = index + 1;
            let normalized = normalize(phrase);
            let Some((needle, prefix)) = split_phrase(&normalized) else {
                continue;
            };
            let entry = LexiconEntry {
                needle: needle.into(),
                prefix,
                ends_in_word: needle.ends_with(is_word_char),
                index,
            };
            if needle.starts_with(is_word_char) {
                entries.push(entry);
            } else {
                anywhere.push(entry);
            }
        }
        entries.sort_by_key(|e| e.needle.as_bytes()[0]);
        let mut group = Box::new([0u32; 257]);
        for e in &entries {
            group[usize::from(e.needle.as_bytes()[0]) + 1] += 1;
        }
        for b in 1..group.len() {
            group[b] += group[b - 1];
        }
        Lexicon {
            entries,
            group,
            anywhere,
            len,
        }
    }

    /// How many phrases were given (including any that can never match).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no phrase was given.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Which phrases occur in `text`.
    pub fn find(&self, text: &str) -> LexiconMatches {
        let mut found = LexiconMatches::new(self.len);
        let lowered;
        let normalized: &str = if text.is_ascii() {
            // The common case: no copy, compared case-insensitively in place.
            self.scan(text.as_bytes(), |b, _| b.is_ascii_alphanumeric(), &mut found);
            if self.anywhere.is_empty() {
                return found;
            }
            lowered = text.to_ascii_lowercase();
            &lowered
        } else {
            lowered = normalize(text);
            self.scan(
                lowered.as_bytes(),
                |_, rest| rest.chars().next().is_some_and(is_word_char),
                &mut found,
            );
            &lowered
        };
        for e in &self.anywhere {
            let phrase = if e.prefix {
                format!("{}*", e.needle)
            } else {
                e.needle.to_string()
            };
            if has_phrase(normalized, &phrase) {
                found.set(e.index);
            }
        }
        found
    }

    /// Compare every word start of `bytes` (normalised, or ASCII compared
    /// case-insensitively) with the entries sharing its first byte.
    /// `is_word(b, rest)` says whether the character at a position (its first
    /// byte, the text from there) is a word character; for an ASCII text it
    /// is only asked about the byte.
    fn scan(&self, bytes: &[u8], is_word: impl Fn(u8, &str) -> bool, found: &mut LexiconMatches) {
        let ascii = bytes.is_ascii();
        // Only ASCII texts and `normalize`d strings get here: valid UTF-8.
        let text = std::str::from_utf8(bytes).unwrap_or_default();
        let word_at = |i: usize| {
            let b = bytes[i];
            if ascii || b < 0x80 {
                BYTE_CLASS[usize::from(b)] == ASCII_WORD
            } else {
                is_word(b, &text[i..])
            }
        };
        // The length of the character at `i` (continuation bytes are never word starts).
        let step = |i: usize| {
            if bytes[i] < 0x80 {
                1
            } else {
                text[i..].chars().next().map_or(1, char::len_utf8)
            }
        };
        let n = bytes.len();
        let mut i = 0;
        loop {
            // To the next word start, then past the word: a word is compared with the
            // phrases only at its start.
            while i < n && !word_at(i) {
                i += step(i);
            }
            if i >= n {
                break;
            }
            self.match_at(bytes, i, &word_at, found);
            while i < n && word_at(i) {
                i += step(i);
            }
        }
    }

    /// Compare the word starting at byte `i` with the phrases sharing its first byte.
    #[inline]
    fn match_at(&self, bytes: &[u8], i: usize, word_at: &impl Fn(usize) -> bool, found: &mut LexiconMatches) {
        let first = usize::from(bytes[i].to_ascii_lowercase());
        let (lo, hi) = (self.group[first] as usize, self.group[first + 1] as usize);
        for e in &self.entries[lo..hi] {
            let needle = e.needle.as_bytes();
            let end = i + needle.len();
            if end > bytes.len()
                || (needle.len() > 1 && bytes[i + 1].to_ascii_lowercase() != needle[1])
                || found.contains(e.index)
                || !bytes[i..end].eq_ignore_ascii_case(needle)
            {
                continue;
            }
            if e.prefix || !e.ends_in_word || end == bytes.len() || !word_at(end) {
                found.set(e.index);
            }
        }
    }
}

/// The phrases of a [`Lexicon`] found in a text: a set of phrase indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexiconMatches {
    bits: Vec<u64>,
}

impl LexiconMatches {
    fn new(n: usize) -> Self {
        LexiconMatches {
            bits: vec![0; n.div_ceil(64)],
        }
    }

    #[inline]
    fn set(&mut self, i: usize) {
        self.bits[i / 64] |= 1 << (i % 64);
    }

    /// Whether phrase `i` (its position in the list given to [`Lexicon::new`]) was found.
    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        self.bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// The indices of the phrases found, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter().enumerate().flat_map(|(w, &bits)| {
            // One step per set bit, not per bit: usually none or a few are set.
            let mut rest = bits;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let b = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    w * 64 + b
                })
            })
        })
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }
}

/// The first phrase of `phrases` found in `haystack` (see [`has_phrase`]).
///
/// Why: lexicon checks want to report *which* term matched.
pub fn find_phrase<'p>(haystack: &str, phrases: &[&'p str]) -> Option<&'p str> {
    phrases.iter().copied().find(|p| has_phrase(haystack, p))
}

/// An iterator over the sentences of a text, as trimmed slices of it.
///
/// A sentence ends at `.`, `!` or `?` (plus closing quotes or brackets)
/// followed by white space or the end of the text, or at a line break. A
/// period after a common abbreviation (`Dr.`, `e.g.`) or a single capital
/// (an initial, `J. Smith`) does not end one, nor does one inside a number
/// (`3.5`).
///
/// Why line breaks: LLM answers are full of bullet lists whose items carry
/// no final period.
#[derive(Debug, Clone)]
pub struct Sentences<'a> {
    text: &'a str,
    pos: usize,
}

/// The sentences of `text` (see [`Sentences`]).
pub fn sentences(text: &str) -> Sentences<'_> {
    Sentences { text, pos: 0 }
}

const ABBREVIATIONS: &[&str] = &[
    "approx", "cf", "dr", "e.g", "fig", "i.e", "jr", "mr", "mrs", "ms", "no", "prof", "sr", "st", "vs",
];

fn ends_with_abbreviation(before: &str) -> bool {
    let last = before
        .rsplit(|c: char| !(c.is_alphanumeric() || c == '.'))
        .next()
        .unwrap_or("");
    let last = last.trim_start_matches('.');
    if last.len() == 1 && last.bytes().all(|b| b.is_ascii_uppercase()) {
        return true;
    }
    last.len() <= 6 && ABBREVIATIONS.iter().any(|a| a.eq_ignore_ascii_case(last))
}

impl<'a> Iterator for Sentences<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() {
            let start = self.pos;
            let mut i = start;
            let (end, next) = loop {
                if i >= bytes.len() {
                    break (bytes.len(), bytes.len());
                }
                match bytes[i] {
                    b'\n' => break (i, i + 1),
                    b'.' | b'!' | b'?' => {
                        let mut j = i + 1;
                        while j < bytes.len() && matches!(bytes[j], b'.' | b'!' | b'?') {
                            j += 1;
                        }
                        let single_period = bytes[i] == b'.' && j == i + 1;
                        let rest = &self.text[j..];
                        let closers = rest.len()
                            - rest
                                .trim_start_matches(['"', '\'', ')', ']', '\u{2019}', '\u{201d}'])
                                .len();
                        j += closers;
                        let at_boundary = j >= bytes.len() || self.text[j..].starts_with(char::is_whitespace);
                        if at_boundary && !(single_period && ends_with_abbreviation(&self.text[start..i])) {
                            break (j, j);
                        }
                        i = j;
                    }
                    _ => i += 1,
                }
            };
            self.pos = next;
            let sentence = self.text[start..end].trim();
            if !sentence.is_empty() {
                return Some(sentence);
            }
        }
        None
    }
}

/// A number found in a text by [`numbers`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Number<'a> {
    /// The number as written, e.g. `1,200`, `3.5` or `42%`.
    pub text: &'a str,
    /// Its value, thousands separators removed (`1,200` → 1200.0; the `%`
    /// is not applied: `42%` → 42.0).
    pub value: f64,
    /// Whether it was written as a percentage.
    pub percent: bool,
}

impl Number<'_> {
    /// Whether two numbers denote the same quantity, whatever their
    /// formatting (`1,200` and `1200`, `42%` and `42`).
    ///
    /// Why: an answer restating a number from its source in another format
    /// is still supported by it.
    pub fn same_value(&self, other: &Number<'_>) -> bool {
        (self.value - other.value).abs() <= 1e-9 * self.value.abs().max(1.0)
    }
}

/// An iterator over the numbers of a text: digits with optional `,`
/// thousands groups (`1,200`), an optional decimal part (`3.5`) and an
/// optional `%`. A unit may follow (`500mg`, `3x`).
///
/// Digits that are part of a word or identifier (`gpt4`, `v1.2`, `gpt-4o`,
/// the `01` of `2024-01-15`) and dotted runs such as versions and IP
/// addresses (`1.2.3`, `10.0.0.1`) are not numbers.
///
/// Why: numbers are the claims an LLM most often gets wrong and the easiest
/// to check against a source.
#[derive(Debug, Clone)]
pub struct Numbers<'a> {
    text: &'a str,
    pos: usize,
}

/// The numbers of `text` (see [`Numbers`]).
pub fn numbers(text: &str) -> Numbers<'_> {
    Numbers { text, pos: 0 }
}

fn digits_from(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    i
}

impl<'a> Iterator for Numbers<'a> {
    type Item = Number<'a>;

    fn next(&mut self) -> Option<Number<'a>> {
        let bytes = self.text.as_bytes();
        let is_alnum = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        while self.pos < bytes.len() {
            let start = self.pos + bytes[self.pos..].iter().position(u8::is_ascii_digit)?;
            // Part of a word or identifier? Skip the whole alphanumeric run.
            let glued = start > 0 && {
                let p = bytes[start - 1];
                is_alnum(p) || (matches!(p, b'.' | b'-') && start > 1 && is_alnum(bytes[start - 2]))
            };
            if glued {
                self.pos = start
                    + bytes[start..]
                        .iter()
                        .position(|&b| !is_alnum(b))
                        .unwrap_or(bytes.len() - start);
                continue;
            }
            let int_end = digits_from(bytes, start);
            let mut end = int_end;
            // Thousands groups: exactly three digits after each comma.
            if int_end - start <= 3 {
                while bytes.get(end) == Some(&b',') && digits_from(bytes, end + 1) == end + 4 {
                    end += 4;
                }
            }
            if end + 1 < bytes.len() && bytes[end] == b'.' && bytes[end + 1].is_ascii_digit() {
                end = digits_from(bytes, end + 1);
                if end + 1 < bytes.len() && bytes[end] == b'.' && bytes[end + 1].is_ascii_digit() {
                    // A version or an address: `1.2.3`, `10.0.0.1`.
                    self.pos = end
                        + bytes[end..]
                            .iter()
                            .position(|&b| !(b == b'.' || b.is_ascii_digit()))
                            .unwrap_or(bytes.len() - end);
                    continue;
                }
            }
            let percent = bytes.get(end) == Some(&b'%');
            let raw = &self.text[start..end];
            self.pos = if percent { end + 1 } else { end };
            let Some(value) = parse_number(raw) else { continue };
            let text = if percent { &self.text[start..=end] } else { raw };
            return Some(Number { text, value, percent });
        }
        None
    }
}

/// The value of a number as [`Numbers`] finds it (digits, `,` thousands
/// separators, at most one `.`), without allocating: plain integers are
/// summed digit by digit, others parsed from a stack copy without the commas.
fn parse_number(raw: &str) -> Option<f64> {
    let bytes = raw.as_bytes();
    if bytes.len() <= 15 && bytes.iter().all(u8::is_ascii_digit) {
        // Up to 15 digits fit an f64's mantissa exactly.
        return Some(bytes.iter().fold(0u64, |n, &b| n * 10 + u64::from(b - b'0')) as f64);
    }
    let mut buf = [0u8; 64];
    let mut n = 0;
    for &b in bytes.iter().filter(|&&b| b != b',') {
        if n == buf.len() {
            // Longer than any sensible number: take the slow path.
            return raw.replace(',', "").parse().ok();
        }
        buf[n] = b;
        n += 1;
    }
    std::str::from_utf8(&buf[..n]).ok()?.parse().ok()
}

/// The capitalised names of a text: runs of capitalised words that do not
/// start a sentence (so "The report by Marie Curie" gives `Marie Curie`),
/// as slices of the text, in order, with repeats. The pronoun `I` (and
/// `I'm`, `I've` ...) is not a name.
///
/// Why: proper names are, with numbers, the claims most worth checking
/// against a source. Skipping sentence starts trades missing a name that
/// opens a sentence for not flagging every ordinary first word.
pub fn names(text: &str) -> Vec<&str> {
    let base = text.as_ptr() as usize;
    let mut out: Vec<&str> = Vec::new();
    for sentence in sentences(text) {
        let offset = sentence.as_ptr() as usize - base;
        let mut it = raw_words(sentence);
        let mut first = true;
        // (start, end) in `text` of the name being built.
        let mut current: Option<(usize, usize)> = None;
        while let Some((pos, word)) = it.next_with_offset() {
            let capitalised = word.chars().next().is_some_and(char::is_uppercase)
                && word != "I"
                && !word.starts_with("I'")
                && !word.starts_with("I\u{2019}");
            let (start, end) = (offset + pos, offset + pos + word.len());
            if capitalised && !first {
                current = match current {
                    Some((s, e)) if text[e..start].bytes().all(|b| b == b' ') && start - e == 1 => Some((s, end)),
                    Some((s, e)) => {
                        out.push(&text[s..e]);
                        Some((start, end))
                    }
                    None => Some((start, end)),
                };
            } else if let Some((s, e)) = current.take() {
                out.push(&text[s..e]);
            }
            first = false;
        }
        if let Some((s, e)) = current {
            out.push(&text[s..e]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopword_lookup_agrees_with_bisection() {
        let others = [
            "The",
            "THE",
            "",
            "paris",
            "a'",
            "don’t",
            "yourselvesx",
            "e.g.",
            "i.e",
            "ab",
        ];
        for w in STOPWORDS.iter().chain(others.iter()) {
            assert_eq!(is_stopword(w), STOPWORDS.binary_search(w).is_ok(), "{w:?}");
        }
    }

    #[test]
    fn stopwords_are_sorted_and_unique() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]), "STOPWORDS must stay sorted");
        assert!(is_stopword("the") && is_stopword("didn't") && !is_stopword("paris"));
    }

    #[test]
    fn stable_hash_is_fnv1a() {
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash("foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(token_hash("FooBar"), stable_hash("foobar"));
        let n = (0..10_000)
            .filter(|i| stable_fraction(&format!("01J{i:023}")) < 0.1)
            .count();
        assert!((900..1100).contains(&n), "{n}");
        assert!((0.0..1.0).contains(&stable_fraction("")));
    }

    #[test]
    fn words_lowercase_and_borrow() {
        let text = "Don't PANIC: it’s 42, gpt-4o says. Ünïcode ok";
        let w: Vec<_> = words(text).collect();
        assert_eq!(
            w,
            ["don't", "panic", "it’s", "42", "gpt", "4o", "says", "Ünïcode", "ok"]
        );
        assert!(matches!(w[1], Cow::Owned(_)));
        assert!(matches!(w[6], Cow::Borrowed(_)));
        assert_eq!(word_count(text), 9);
        assert_eq!(word_count("  "), 0);
        assert_eq!(words("trailing' 'quote").collect::<Vec<_>>(), ["trailing", "quote"]);
    }

    #[test]
    fn content_words_skip_stopwords_and_numbers() {
        let w: Vec<_> = content_words("The Eiffel Tower is 330 metres tall, and it is in Paris.").collect();
        assert_eq!(w, ["eiffel", "tower", "metres", "tall", "paris"]);
    }

    #[test]
    fn stems_agree() {
        for (a, b) in [
            ("notes", "note"),
            ("noted", "note"),
            ("studies", "study"),
            ("cases", "case"),
            ("boxes", "box"),
        ] {
            assert_eq!(light_stem(a), light_stem(b), "{a} vs {b}");
        }
        assert_eq!(light_stem("class"), "class");
        assert_eq!(light_stem("is"), "is");
        assert_eq!(light_stem("paris's"), "paris");
    }

    #[test]
    fn token_set_is_case_insensitive() {
        let mut set = TokenSet::from_text("Marie Curie won the Nobel prize twice; Curie again.");
        assert_eq!(set.len(), 8);
        assert!(set.contains("curie") && set.contains("NOBEL") && !set.contains("einstein"));
        set.insert("Einstein");
        set.insert("einstein");
        assert!(set.contains("einstein"));
        assert_eq!(set.len(), 9);
        let stems: TokenSet = content_words("running notes")
            .map(|w| light_stem(&w).to_owned())
            .collect();
        assert!(stems.contains(light_stem("note")));
        let mut mapped = TokenSet::new();
        mapped.extend_mapped("Studies NOTED", light_stem);
        assert!(mapped.contains(light_stem("study")) && mapped.contains(light_stem("notes")));
    }

    #[test]
    fn phrases_match_whole_words() {
        let t = normalize("This ISSUE is among the things you didn’t follow; she hallucinated.");
        assert!(!has_phrase(&t, "sue"));
        assert!(!has_phrase(&t, "mg"));
        assert!(has_phrase(&t, "didn't follow"));
        assert!(has_phrase(&t, "hallucinat*"));
        assert!(!has_phrase(&t, "hallucinat"));
        assert!(has_phrase("tl;dr", "tl;dr"));
        assert_eq!(find_phrase(&t, &["nope", "issue"]), Some("issue"));
        // A failed match must not hide an overlapping one.
        assert!(has_phrase("ab b b", "b b"));
    }

    /// Texts with the traps of whole-word phrase matching: case, typographic quotes,
    /// overlapping candidates, punctuation inside phrases, non-ASCII words.
    const PHRASE_TEXTS: &[&str] = &[
        "this issue is among the things you didn't follow; she hallucinated.",
        "ab b b",
        "take 500mg of ibuprofen, twice a day (see your doctor's advice)",
        "my 401(k) and 401k; e.g. tl;dr -- ünïcode über über-cool, it’s ok",
        "",
        "   ",
        "sue sued suing lawsuit-free lawsuits",
    ];

    /// Phrases for those texts: prefixes, multi-word, punctuation, empty and degenerate.
    const PHRASES: &[&str] = &[
        "sue",
        "sued",
        "mg",
        "issue",
        "didn't follow",
        "hallucinat*",
        "hallucinat",
        "tl;dr",
        "b b",
        "b",
        "401(k)",
        "(k)",
        "-- ",
        "über",
        "über-cool",
        "cool",
        "it’s",
        "doctor*",
        "doctor's advice",
        "a day",
        "lawsuit*",
        "e.g",
        ".",
        "",
        "*",
        "ok",
    ];

    #[test]
    fn phrase_index_agrees_with_has_phrase() {
        let (texts, phrases) = (PHRASE_TEXTS, PHRASES);
        for t in texts {
            let index = PhraseIndex::new(t);
            for p in phrases {
                assert_eq!(index.has(p), has_phrase(t, p), "{p:?} in {t:?}");
            }
        }
    }

    #[test]
    fn lexicon_agrees_with_has_phrase_on_normalized_text() {
        let extra_texts = [
            "This ISSUE is among the things you didn’t follow; she Hallucinated.",
            "take 500MG of ibuprofen, twice a day (see your Doctor's advice)",
            "sue sued suing lawsuit-free Lawsuits",
            "It DIDN’T work, not helpful at all",
        ];
        let texts: Vec<&str> = PHRASE_TEXTS.iter().copied().chain(extra_texts).collect();
        let phrases: Vec<&str> = PHRASES
            .iter()
            .copied()
            .chain(["didn't work", "not helpful", "(k*"])
            .collect();
        let lexicon = Lexicon::new(phrases.iter().copied());
        assert_eq!(lexicon.len(), phrases.len());
        for &t in &texts {
            let found = lexicon.find(t);
            let normalized = normalize(t);
            for (i, p) in phrases.iter().enumerate() {
                assert_eq!(
                    found.contains(i),
                    has_phrase(&normalized, &normalize(p)),
                    "{p:?} in {t:?}"
                );
            }
            assert_eq!(
                found.iter().count(),
                (0..phrases.len()).filter(|&i| found.contains(i)).count()
            );
        }
        assert!(Lexicon::new(["x"]).find("no match").is_empty());
    }

    #[test]
    fn stem_hash_and_content_words_ignore_case() {
        let text = "The Notes NOTED studies' Boxes CLASS is Paris's RUNNING Quickly Eyes I'M ünïcode café's Ça";
        for w in raw_words(text) {
            let lower = lowercase(w);
            assert_eq!(stem_hash(w), token_hash(light_stem(&lower)), "{w}");
            let expected = lower.len() >= 2 && !is_stopword(&lower) && lower.chars().any(char::is_alphabetic);
            assert_eq!(is_content_word(w), expected, "{w}");
        }
        let mut a = TokenSet::new();
        a.extend_stems(["Studies NOTED"]);
        let mut b = TokenSet::new();
        b.extend_mapped_all(["Studies NOTED"], light_stem);
        assert_eq!(a, b);
        assert!(a.contains_stem("study") && a.contains_stem("Notes") && !a.contains_stem("paris"));
        let mut grown = TokenSet::with_capacity(1);
        for i in 0..1000 {
            grown.insert(&format!("w{i}"));
        }
        grown.insert_hash(0);
        assert_eq!(grown.len(), 1001);
        assert!((0..1000).all(|i| grown.contains(&format!("W{i}"))) && grown.contains_hash(0));
        assert!(!grown.contains("w1000") && !TokenSet::new().contains_hash(7));
    }

    /// The definition of a word, written plainly over `char`s.
    fn reference_words(text: &str) -> Vec<(usize, &str)> {
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let mut out = Vec::new();
        let mut k = 0;
        while k < chars.len() {
            if !is_word_char(chars[k].1) {
                k += 1;
                continue;
            }
            let start = k;
            let mut end = k + 1;
            let mut j = k + 1;
            while j < chars.len() {
                if is_word_char(chars[j].1) {
                    j += 1;
                    end = j;
                } else if is_joiner(chars[j].1) && chars.get(j + 1).is_some_and(|c| is_word_char(c.1)) {
                    j += 1;
                } else {
                    break;
                }
            }
            let (s, e) = (chars[start].0, chars.get(end).map_or(text.len(), |c| c.0));
            out.push((s, &text[s..e]));
            k = end;
        }
        out
    }

    #[test]
    fn raw_words_match_the_plain_definition() {
        for text in [
            "Don't PANIC: it’s 42, gpt-4o says. Ünïcode ok",
            "trailing' 'quote'' a''b x’ ’y z’’w",
            "日本語のテキスト and émigré café’s naïve—dash…",
            "",
            "''’’",
            "a",
            "x'",
            "'x",
            "I'm I’m rock'n'roll 1,000.5 e.g. U.S.A.",
            "tab\tnew\nline\r\nend",
        ] {
            let mut it = raw_words(text);
            let mut got = Vec::new();
            while let Some(w) = it.next_with_offset() {
                got.push(w);
            }
            assert_eq!(got, reference_words(text), "{text:?}");
        }
    }

    #[test]
    fn fixed_prints_like_float_formatting() {
        let mut values = vec![
            0.0,
            -0.0,
            0.5,
            0.125,
            0.375,
            1.0,
            0.615,
            0.005,
            0.015,
            0.025,
            2.675,
            1e-300,
            5e-324,
            123456.7890123,
            -0.125,
            -2.5,
            0.95,
            0.995,
            99.995,
            0.1 + 0.2,
        ];
        // A deterministic spread of values in 0..=1 and beyond.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push((x >> 11) as f64 / (1u64 << 53) as f64);
            values.push((x % 100_000) as f64 / 1000.0);
        }
        for v in values {
            for places in 0..=4 {
                assert_eq!(
                    fixed(v, places),
                    format!("{v:.prec$}", prec = places as usize),
                    "{v} {places}"
                );
            }
        }
        assert_eq!(fixed(f64::NAN, 2), "NaN");
        assert_eq!(fixed(1e20, 1), format!("{:.1}", 1e20));
    }

    #[test]
    fn ascii_word_end_agrees_with_the_byte_classes() {
        let mut text: Vec<u8> = b"Hello, world! 123abc_DEF-ghi jkl'mno ZZZZZZZZZZZZZZZZzzz 09:59 @[`{~ \x7f".to_vec();
        text.extend((0u8..=255).filter(|b| b.is_ascii()));
        for i in 0..text.len() {
            let mut j = i;
            while j < text.len() && BYTE_CLASS[usize::from(text[j])] == ASCII_WORD {
                j += 1;
            }
            assert_eq!(ascii_word_end(&text, i), j, "at {i}");
        }
        assert_eq!(ascii_word_end("abcdefghé".as_bytes(), 0), 8, "stops before non-ASCII");
        assert_eq!(ascii_word_end("abcdefgé".as_bytes(), 0), 7);
    }

    #[test]
    fn sentence_splitting() {
        let text = "Dr. Smith paid $3.5 million (approx.) in 2020! Was it J. K. Rowling? Yes.\n- bullet one\n- bullet two\n\n\"Quoted.\" Next";
        let s: Vec<_> = sentences(text).collect();
        assert_eq!(
            s,
            [
                "Dr. Smith paid $3.5 million (approx.) in 2020!",
                "Was it J. K. Rowling?",
                "Yes.",
                "- bullet one",
                "- bullet two",
                "\"Quoted.\"",
                "Next"
            ]
        );
        assert_eq!(sentences("").count(), 0);
        assert_eq!(
            sentences("e.g. this. Then that").collect::<Vec<_>>(),
            ["e.g. this.", "Then that"]
        );
    }

    #[test]
    fn number_extraction() {
        let text = "Revenue grew 42% to $1,200 (3.5x) in 2024-01-15, per gpt-4o and v1.2; ip 10.0.0.1, dose 500mg, list 1,2,3 and 12,3456.";
        let n: Vec<_> = numbers(text).map(|n| (n.text, n.value, n.percent)).collect();
        assert_eq!(
            n,
            [
                ("42%", 42.0, true),
                ("1,200", 1200.0, false),
                ("3.5", 3.5, false),
                ("2024", 2024.0, false),
                ("500", 500.0, false),
                ("1", 1.0, false),
                ("2", 2.0, false),
                ("3", 3.0, false),
                ("12", 12.0, false),
                ("3456", 3456.0, false),
            ]
        );
        let a = numbers("1,200").next().unwrap();
        let b = numbers("1200 units").next().unwrap();
        assert!(a.same_value(&b));
        assert_eq!(numbers("end 1,000").map(|n| n.value).collect::<Vec<_>>(), [1000.0]);
    }

    #[test]
    fn name_extraction() {
        let text = "The prize went to Marie Curie and Pierre. I think I'm right.\nParis is nice, says Le Monde.";
        assert_eq!(names(text), ["Marie Curie", "Pierre", "Le Monde"]);
        assert!(names("all lower case here. Start only.").is_empty());
    }
}
