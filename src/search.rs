//! Search of history: how message text becomes search terms, and how a
//! search becomes a query, the same for both backends (SQLite's FTS5 and
//! PostgreSQL's `tsvector`), so that both find the same messages.
//!
//! A term is a word in lowercase: a run of letters and digits. Chinese,
//! Japanese and Korean text has no spaces between its words, and the
//! backends' own tokenizers do not segment it (a 退款 inside a sentence is
//! not a word to them); so each run of those characters becomes its
//! overlapping two-character pieces (退款申请 → 退款 款申 申请), in order,
//! and a run of one character that character. A search word is matched as
//! the phrase of its terms, which for a CJK word is its pieces next to each
//! other: 退款 finds 我要退款, 申请退款了 and 退款, and no text where the two
//! characters are apart. A one-character CJK search word matches the terms
//! that begin with it. Every search word must match (AND), anywhere in one
//! message.
//!
//! The terms are computed here, in Rust, for both backends: PostgreSQL gets
//! them as a `tsvector` literal and the query as a `tsquery` literal, so
//! neither the database's locale nor its text search configuration changes
//! what matches.

/// The most search words taken from a query (the rest are ignored).
const MAX_WORDS: usize = 16;
/// The most terms indexed of one message (PostgreSQL numbers a tsvector's
/// positions up to 16383; later words are not found, on either backend).
const MAX_TERMS: usize = 16_383;
/// The longest term indexed, in bytes (PostgreSQL refuses a lexeme over
/// 2 KiB; no word is that long): longer runs of letters are left out.
const MAX_TERM_BYTES: usize = 255;
/// The most characters of a snippet.
const SNIPPET_CHARS: usize = 160;

/// Whether `c` is written without spaces between words (Han, kana,
/// Hangul syllables, and their compatibility and extension blocks).
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK Compatibility Ideographs
        | 0x20000..=0x3134F  // CJK Extensions B to G
    )
}

/// The terms of `text`, in order (see the module documentation), at most
/// [`MAX_TERMS`] of them, none over [`MAX_TERM_BYTES`].
pub fn terms(text: &str) -> Vec<String> {
    let mut all = split(text);
    all.retain(|t| t.len() <= MAX_TERM_BYTES);
    all.truncate(MAX_TERMS);
    all
}

fn split(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut run: Vec<char> = Vec::new();
    let flush_run = |run: &mut Vec<char>, out: &mut Vec<String>| {
        match run.len() {
            0 => {}
            1 => out.push(run[0].to_string()),
            _ => out.extend(run.windows(2).map(|w| w.iter().collect::<String>())),
        }
        run.clear();
    };
    for c in text.chars() {
        if is_cjk(c) {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            run.push(c);
        } else if c.is_alphanumeric() {
            flush_run(&mut run, &mut out);
            word.extend(c.to_lowercase());
        } else {
            flush_run(&mut run, &mut out);
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
        }
    }
    flush_run(&mut run, &mut out);
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// The terms of `text` as FTS5 indexes them: separated by spaces.
pub fn fts5_terms(text: &str) -> String {
    terms(text).join(" ")
}

/// The terms of `text` as a PostgreSQL `tsvector` literal, each with its
/// position (1-based). None when the text has no term.
pub fn tsvector(text: &str) -> Option<String> {
    let terms = terms(text);
    if terms.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len() * 2);
    for (i, term) in terms.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        // Terms are letters and digits only: nothing to escape.
        out.push('\'');
        out.push_str(term);
        out.push_str("':");
        out.push_str(&(i + 1).to_string());
    }
    Some(out)
}

/// A search: words, each the phrase of its terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    words: Vec<Word>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Word {
    terms: Vec<String>,
    /// A lone CJK character: matches the terms that begin with it.
    prefix: bool,
}

impl Query {
    /// The search in `q`; an error when it has no word to search for.
    pub fn parse(q: &str) -> Result<Query, &'static str> {
        let mut words = Vec::new();
        for raw in q.split_whitespace() {
            let terms = terms(raw);
            if terms.is_empty() {
                continue;
            }
            let chars: Vec<char> = raw.chars().filter(|c| c.is_alphanumeric()).collect();
            let prefix = terms.len() == 1 && chars.len() == 1 && is_cjk(chars[0]);
            // A word with inner punctuation (e-mail, order-42) is the
            // phrase of its parts.
            words.push(Word { terms, prefix });
            if words.len() == MAX_WORDS {
                break;
            }
        }
        if words.is_empty() {
            return Err("`q` must hold at least one word (letters or digits)");
        }
        Ok(Query { words })
    }

    /// The query in FTS5's syntax: `"a b" AND "c"*`.
    pub fn fts5(&self) -> String {
        self.words
            .iter()
            .map(|w| {
                let phrase = format!("\"{}\"", w.terms.join(" "));
                if w.prefix {
                    phrase + "*"
                } else {
                    phrase
                }
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The query as a PostgreSQL `tsquery` literal: `('a' <-> 'b') & 'c':*`.
    pub fn tsquery(&self) -> String {
        self.words
            .iter()
            .map(|w| {
                let phrase = w
                    .terms
                    .iter()
                    .map(|t| format!("'{t}'"))
                    .collect::<Vec<_>>()
                    .join(" <-> ");
                if w.prefix {
                    format!("{phrase}:*")
                } else {
                    format!("({phrase})")
                }
            })
            .collect::<Vec<_>>()
            .join(" & ")
    }

    /// Up to [`SNIPPET_CHARS`] characters of `text` around the first place
    /// one of the search words appears (its start when none is found as
    /// typed), with `…` where it was cut.
    pub fn snippet(&self, text: &str) -> String {
        let lower: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
        let chars: Vec<char> = text.chars().collect();
        // Lowercasing may change the length; then look in the text as is.
        let haystack = if lower.len() == chars.len() {
            &lower
        } else {
            &chars
        };
        let needles: Vec<Vec<char>> = self
            .words
            .iter()
            .map(|w| {
                // The word as it reads: CJK pieces overlap by one character.
                let mut s: Vec<char> = Vec::new();
                for (i, t) in w.terms.iter().enumerate() {
                    let t: Vec<char> = t.chars().collect();
                    if i > 0 && t.first().is_some_and(|c| is_cjk(*c)) {
                        s.extend(&t[1..]);
                    } else {
                        s.extend(&t);
                    }
                }
                s
            })
            .collect();
        let at = needles
            .iter()
            .filter(|n| !n.is_empty())
            .filter_map(|n| haystack.windows(n.len()).position(|w| w == n.as_slice()))
            .min()
            .unwrap_or(0);
        let start = at.saturating_sub(SNIPPET_CHARS / 3);
        let end = (start + SNIPPET_CHARS).min(chars.len());
        let mut out = String::new();
        if start > 0 {
            out.push('…');
        }
        out.extend(
            chars[start..end]
                .iter()
                .map(|c| if c.is_control() { ' ' } else { *c }),
        );
        if end < chars.len() {
            out.push('…');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lowercase_and_cjk_runs_are_pieces_of_two() {
        assert_eq!(
            terms("Refund my ORDER-42, please!"),
            ["refund", "my", "order", "42", "please"]
        );
        assert_eq!(
            terms("我要退款申请"),
            ["我要", "要退", "退款", "款申", "申请"]
        );
        assert_eq!(terms("订单A123退款"), ["订单", "a123", "退款"]);
        assert_eq!(terms("好 the 人"), ["好", "the", "人"]);
        assert_eq!(terms("Ünïcödé café"), ["ünïcödé", "café"]);
        assert!(terms(" ,.!? ").is_empty());
        // What PostgreSQL could not store is left out, on both backends.
        assert_eq!(
            terms(&format!("ok {} fine", "a".repeat(300))),
            ["ok", "fine"]
        );
        assert_eq!(terms(&"w ".repeat(20_000)).len(), MAX_TERMS);
    }

    #[test]
    fn a_query_is_a_phrase_per_word() {
        let q = Query::parse("Refund 退款申请 款").unwrap();
        assert_eq!(q.fts5(), "\"refund\" AND \"退款 款申 申请\" AND \"款\"*");
        assert_eq!(
            q.tsquery(),
            "('refund') & ('退款' <-> '款申' <-> '申请') & '款':*"
        );
        assert!(Query::parse(" ,; ").is_err());
        assert_eq!(tsvector("退款 ok").as_deref(), Some("'退款':1 'ok':2"));
        assert_eq!(tsvector("!!"), None);
    }

    #[test]
    fn a_snippet_shows_where_the_word_is() {
        let long = format!(
            "{} I want a REFUND now {}",
            "x ".repeat(100),
            "y ".repeat(100)
        );
        let q = Query::parse("refund").unwrap();
        let s = q.snippet(&long);
        assert!(
            s.contains("REFUND") && s.starts_with('…') && s.ends_with('…'),
            "{s}"
        );
        assert!(s.chars().count() <= SNIPPET_CHARS + 2);
        let q = Query::parse("退款申请").unwrap();
        assert!(q.snippet("您好，我想退款申请一下").contains("退款申请"));
    }
}
