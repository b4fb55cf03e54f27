//! Syntax highlighting of fenced code in agents' Markdown, where it is
//! cheap: one pass over the code that marks comments, strings, numbers and
//! keywords of the languages agents write most, as `<span class="hl-…">`
//! (class-based: the page's CSS colours them, its CSP stays as strict). An
//! unknown language is left plain. Not a parser: a keyword in an odd place
//! may be coloured, nothing is ever lost or reordered (the text is the
//! code, escaped).

/// The kinds of token marked, and their classes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Comment,
    Str,
    Number,
    Keyword,
}

impl Kind {
    fn class(self) -> &'static str {
        match self {
            Kind::Comment => "hl-com",
            Kind::Str => "hl-str",
            Kind::Number => "hl-num",
            Kind::Keyword => "hl-kw",
        }
    }
}

/// The classes [`highlight`] uses (the sanitizer's allow-list).
pub const CLASSES: [&str; 4] = ["hl-com", "hl-str", "hl-num", "hl-kw"];

/// How a language writes comments and strings, and its keywords.
struct Syntax {
    line_comment: &'static [&'static str],
    block_comment: Option<(&'static str, &'static str)>,
    quotes: &'static str,
    keywords: &'static [&'static str],
}

const C_LIKE_QUOTES: &str = "\"'";

fn syntax(lang: &str) -> Option<Syntax> {
    let lang = lang.to_ascii_lowercase();
    let s = match lang.as_str() {
        "rust" | "rs" => Syntax {
            line_comment: &["//"],
            block_comment: Some(("/*", "*/")),
            quotes: "\"",
            keywords: &[
                "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else",
                "enum", "extern", "false", "fn", "for", "if", "impl", "in", "let", "loop", "match",
                "mod", "move", "mut", "pub", "ref", "return", "self", "Self", "static", "struct",
                "super", "trait", "true", "type", "unsafe", "use", "where", "while",
            ],
        },
        "js" | "javascript" | "mjs" | "ts" | "typescript" | "jsx" | "tsx" => Syntax {
            line_comment: &["//"],
            block_comment: Some(("/*", "*/")),
            quotes: "\"'`",
            keywords: &[
                "async",
                "await",
                "break",
                "case",
                "catch",
                "class",
                "const",
                "continue",
                "default",
                "delete",
                "do",
                "else",
                "export",
                "extends",
                "false",
                "finally",
                "for",
                "from",
                "function",
                "if",
                "import",
                "in",
                "instanceof",
                "interface",
                "let",
                "new",
                "null",
                "of",
                "return",
                "static",
                "super",
                "switch",
                "this",
                "throw",
                "true",
                "try",
                "type",
                "typeof",
                "undefined",
                "var",
                "void",
                "while",
                "yield",
            ],
        },
        "python" | "py" => Syntax {
            line_comment: &["#"],
            block_comment: None,
            quotes: C_LIKE_QUOTES,
            keywords: &[
                "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class",
                "continue", "def", "del", "elif", "else", "except", "finally", "for", "from",
                "global", "if", "import", "in", "is", "lambda", "nonlocal", "not", "or", "pass",
                "raise", "return", "try", "while", "with", "yield",
            ],
        },
        "sh" | "bash" | "shell" | "zsh" | "console" => Syntax {
            line_comment: &["#"],
            block_comment: None,
            quotes: C_LIKE_QUOTES,
            keywords: &[
                "case", "do", "done", "elif", "else", "esac", "export", "fi", "for", "function",
                "if", "in", "local", "readonly", "return", "set", "then", "until", "while",
            ],
        },
        "go" | "golang" => Syntax {
            line_comment: &["//"],
            block_comment: Some(("/*", "*/")),
            quotes: "\"'`",
            keywords: &[
                "break",
                "case",
                "chan",
                "const",
                "continue",
                "default",
                "defer",
                "else",
                "false",
                "for",
                "func",
                "go",
                "goto",
                "if",
                "import",
                "interface",
                "map",
                "nil",
                "package",
                "range",
                "return",
                "select",
                "struct",
                "switch",
                "true",
                "type",
                "var",
            ],
        },
        "c" | "h" | "cpp" | "c++" | "java" | "kotlin" | "cs" | "csharp" => Syntax {
            line_comment: &["//"],
            block_comment: Some(("/*", "*/")),
            quotes: C_LIKE_QUOTES,
            keywords: &[
                "auto",
                "bool",
                "break",
                "case",
                "catch",
                "char",
                "class",
                "const",
                "continue",
                "default",
                "do",
                "double",
                "else",
                "enum",
                "extends",
                "false",
                "final",
                "float",
                "for",
                "if",
                "import",
                "int",
                "interface",
                "long",
                "new",
                "null",
                "nullptr",
                "package",
                "private",
                "protected",
                "public",
                "return",
                "short",
                "static",
                "struct",
                "switch",
                "this",
                "throw",
                "true",
                "try",
                "typedef",
                "unsigned",
                "void",
                "while",
            ],
        },
        "sql" => Syntax {
            line_comment: &["--"],
            block_comment: Some(("/*", "*/")),
            quotes: "'",
            keywords: &[
                "AND", "AS", "BY", "CREATE", "DELETE", "DESC", "FROM", "GROUP", "INDEX", "INSERT",
                "INTO", "JOIN", "LEFT", "LIMIT", "NOT", "NULL", "ON", "OR", "ORDER", "SELECT",
                "SET", "TABLE", "UPDATE", "VALUES", "WHERE", "and", "as", "by", "create", "delete",
                "from", "group", "insert", "into", "join", "limit", "not", "null", "on", "or",
                "order", "select", "set", "table", "update", "values", "where",
            ],
        },
        "json" => Syntax {
            line_comment: &[],
            block_comment: None,
            quotes: "\"",
            keywords: &["true", "false", "null"],
        },
        "toml" | "yaml" | "yml" | "ini" => Syntax {
            line_comment: &["#"],
            block_comment: None,
            quotes: C_LIKE_QUOTES,
            keywords: &["true", "false", "null"],
        },
        _ => return None,
    };
    Some(s)
}

/// `code` as HTML (escaped), its tokens marked when `lang` is one this
/// knows; None when it is not (the caller shows the code plain).
pub fn highlight(lang: &str, code: &str) -> Option<String> {
    let syntax = syntax(lang)?;
    let mut out = String::with_capacity(code.len() * 2);
    let mut rest = code;
    while !rest.is_empty() {
        let (kind, len) = next_token(&syntax, rest);
        let (token, tail) = rest.split_at(len);
        match kind {
            Some(k) => {
                out.push_str("<span class=\"");
                out.push_str(k.class());
                out.push_str("\">");
                out.push_str(&super::escape_html(token));
                out.push_str("</span>");
            }
            None => out.push_str(&super::escape_html(token)),
        }
        rest = tail;
    }
    Some(out)
}

/// The token `s` starts with: its kind (None: plain) and its length in
/// bytes (at least one character).
fn next_token(syntax: &Syntax, s: &str) -> (Option<Kind>, usize) {
    for marker in syntax.line_comment {
        if s.starts_with(marker) {
            return (Some(Kind::Comment), s.find('\n').unwrap_or(s.len()));
        }
    }
    if let Some((open, close)) = syntax.block_comment {
        if let Some(body) = s.strip_prefix(open) {
            let end = body
                .find(close)
                .map_or(s.len(), |i| open.len() + i + close.len());
            return (Some(Kind::Comment), end);
        }
    }
    let first = s.chars().next().unwrap_or(' ');
    if syntax.quotes.contains(first) {
        return (Some(Kind::Str), string_len(s, first));
    }
    if first.is_ascii_digit() {
        let len = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
            .unwrap_or(s.len());
        return (Some(Kind::Number), len);
    }
    if first.is_alphabetic() || first == '_' {
        let len = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let word = &s[..len];
        let kind = syntax.keywords.contains(&word).then_some(Kind::Keyword);
        return (kind, len);
    }
    // Anything else, up to the next character that may start a token.
    let len = s
        .char_indices()
        .skip(1)
        .find(|&(i, c)| {
            c.is_alphanumeric()
                || c == '_'
                || syntax.quotes.contains(c)
                || syntax.line_comment.iter().any(|m| s[i..].starts_with(m))
                || syntax
                    .block_comment
                    .is_some_and(|(open, _)| s[i..].starts_with(open))
        })
        .map_or(s.len(), |(i, _)| i);
    (None, len)
}

/// The length of the string literal `s` starts with (quote `q`): to the
/// closing quote not escaped by a backslash, or to the end of the line
/// (or of the code) when it is not closed.
fn string_len(s: &str, q: char) -> usize {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == q {
            return i + c.len_utf8();
        } else if c == '\n' && q != '`' {
            return i;
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of highlighted HTML: what the reader sees and copies.
    fn text_of(html: &str) -> String {
        let mut out = String::new();
        let mut in_tag = false;
        for c in html.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    }

    #[test]
    fn tokens_are_marked_and_the_code_is_kept() {
        let code =
            "fn main() {\n    // say \"hi\" <now>\n    let n = 42; println!(\"a \\\" b\");\n}\n";
        let html = highlight("rust", code).unwrap();
        assert!(html.contains(r#"<span class="hl-kw">fn</span>"#), "{html}");
        assert!(html.contains(r#"<span class="hl-kw">let</span>"#), "{html}");
        assert!(html.contains(r#"<span class="hl-num">42</span>"#), "{html}");
        assert!(
            html.contains(r#"<span class="hl-com">// say &quot;hi&quot; &lt;now&gt;</span>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<span class="hl-str">&quot;a \&quot; b&quot;</span>"#),
            "{html}"
        );
        assert_eq!(text_of(&html), code);
    }

    #[test]
    fn unknown_languages_stay_plain_and_odd_input_is_kept_whole() {
        assert!(highlight("brainfuck", "+++").is_none());
        for (lang, code) in [
            ("python", "s = 'unclosed\nx = 1 # done"),
            ("js", "const t = `multi\nline`; /* open"),
            ("sh", "echo \"$HOME\" # 中文 ✓"),
            ("sql", "SELECT 1 -- one"),
            ("json", "{\"a\": [1, true, null]}"),
        ] {
            let html = highlight(lang, code).unwrap();
            assert_eq!(text_of(&html), code, "{lang}: {html}");
            assert!(!html.contains("<script"), "{html}");
        }
    }
}
