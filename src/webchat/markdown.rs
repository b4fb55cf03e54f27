//! Agents' Markdown as the web chat shows it: CommonMark with GitHub's
//! tables, strikethrough, task lists and bare-URL autolinks, rendered to
//! HTML that is safe by construction, then sanitized again.
//!
//! Three stages, each a wall of its own:
//! 1. **Parse** ([`parse_stage`]): `pulldown-cmark`, with raw HTML (blocks
//!    and inline) turned into text, so it shows as the characters typed.
//! 2. **Links** ([`render`]): bare URLs become links (`linkify`); a link
//!    keeps its target only for `http:`, `https:` and `mailto:` (anything
//!    else shows its text, unlinked); an image is never fetched: it becomes
//!    a link to its address, labelled with its alt text. Fenced code keeps
//!    its language as `data-lang` (the page shows it and a copy button), and
//!    is highlighted when the language is one [`super::highlight`] knows
//!    (`<span class="hl-…">`, coloured by the page's CSS).
//! 3. **Sanitize**: `ammonia` with an allow-list of the elements and
//!    attributes the first two stages make; links open in a new tab with
//!    `rel="noopener noreferrer"`.
//!
//! The stored message stays what the agent wrote; this is a view of it,
//! sent beside `text` as `html` on a user session's stream only.

use pulldown_cmark::{CodeBlockKind, CowStr, Event, LinkType, Options, Parser, Tag, TagEnd};
use std::collections::HashSet;
use std::sync::OnceLock;

/// The extensions the chat turns on (the parse stage's options).
fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS
}

/// Raw HTML as the text it is.
fn html_as_text(event: Event<'_>) -> Event<'_> {
    match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        other => other,
    }
}

/// Stage 1 alone: CommonMark to HTML with raw HTML escaped. (The
/// CommonMark specification's examples run through this; see
/// tests/api/markdown.rs.)
pub fn parse_stage(markdown: &str) -> String {
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(
        &mut html,
        Parser::new_ext(markdown, options()).map(html_as_text),
    );
    html
}

/// Whether a link may point at `url`.
fn allowed_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
}

/// Stages 1 to 3: the HTML the page may put into a message's body.
pub fn render(markdown: &str) -> String {
    let mut events: Vec<Event<'_>> = Vec::new();
    // Open links and images: whether each was kept as a link.
    let mut open: Vec<bool> = Vec::new();
    let mut in_code_block = false;
    // Fenced code in a language to highlight: its language and text so far.
    let mut highlighted: Option<(String, String)> = None;
    let finder = {
        let mut f = linkify::LinkFinder::new();
        f.kinds(&[linkify::LinkKind::Url]);
        f
    };
    for event in Parser::new_ext(markdown, options()).map(html_as_text) {
        match event {
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            }) => {
                let keep = allowed_url(&dest_url);
                open.push(keep);
                if keep {
                    events.push(Event::Start(Tag::Link {
                        link_type,
                        dest_url,
                        title,
                        id,
                    }));
                }
            }
            Event::End(TagEnd::Link) => {
                if open.pop() == Some(true) {
                    events.push(Event::End(TagEnd::Link));
                }
            }
            Event::Start(Tag::Image {
                dest_url, title, ..
            }) => {
                // Never fetched: a link to it, labelled with its alt text.
                let keep = allowed_url(&dest_url) && !open.contains(&true);
                open.push(keep);
                if keep {
                    events.push(Event::Start(Tag::Link {
                        link_type: LinkType::Inline,
                        dest_url,
                        title,
                        id: CowStr::Borrowed(""),
                    }));
                }
            }
            Event::End(TagEnd::Image) => {
                if open.pop() == Some(true) {
                    events.push(Event::End(TagEnd::Link));
                }
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                in_code_block = true;
                let lang = match &kind {
                    CodeBlockKind::Fenced(info) => {
                        info.split_whitespace().next().unwrap_or("").to_owned()
                    }
                    CodeBlockKind::Indented => String::new(),
                };
                let open_tag = if lang.is_empty() {
                    "<pre><code>".to_owned()
                } else {
                    format!("<pre><code data-lang=\"{}\">", super::escape_html(&lang))
                };
                events.push(Event::Html(open_tag.into()));
                if super::highlight::highlight(&lang, "").is_some() {
                    highlighted = Some((lang, String::new()));
                }
            }
            Event::Text(text) if highlighted.is_some() => {
                if let Some((_, code)) = &mut highlighted {
                    code.push_str(&text);
                }
            }
            Event::End(TagEnd::CodeBlock) => {
                in_code_block = false;
                if let Some((lang, code)) = highlighted.take() {
                    let html = super::highlight::highlight(&lang, &code).unwrap_or_default();
                    events.push(Event::Html(html.into()));
                }
                events.push(Event::Html("</code></pre>\n".into()));
            }
            Event::Text(text) if !in_code_block && !open.contains(&true) => {
                let mut rest = 0;
                for link in finder.links(&text) {
                    if link.start() > rest {
                        events.push(Event::Text(text[rest..link.start()].to_owned().into()));
                    }
                    let url = link.as_str().to_owned();
                    events.push(Event::Start(Tag::Link {
                        link_type: LinkType::Autolink,
                        dest_url: url.clone().into(),
                        title: CowStr::Borrowed(""),
                        id: CowStr::Borrowed(""),
                    }));
                    events.push(Event::Text(url.into()));
                    events.push(Event::End(TagEnd::Link));
                    rest = link.end();
                }
                if rest == 0 {
                    events.push(Event::Text(text));
                } else if rest < text.len() {
                    events.push(Event::Text(text[rest..].to_owned().into()));
                }
            }
            other => events.push(other),
        }
    }
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    sanitizer().clean(&html).to_string()
}

/// The allow-list: what stages 1 and 2 make, nothing else.
fn sanitizer() -> &'static ammonia::Builder<'static> {
    static SANITIZER: OnceLock<ammonia::Builder<'static>> = OnceLock::new();
    SANITIZER.get_or_init(|| {
        let tags: HashSet<&str> = [
            "p",
            "br",
            "hr",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "strong",
            "em",
            "del",
            "code",
            "pre",
            "blockquote",
            "ul",
            "ol",
            "li",
            "table",
            "thead",
            "tbody",
            "tr",
            "th",
            "td",
            "a",
            "input",
            "span",
        ]
        .into_iter()
        .collect();
        let mut b = ammonia::Builder::empty();
        b.tags(tags)
            .add_tag_attributes("a", ["href", "title"])
            .add_tag_attributes("ol", ["start"])
            .add_tag_attributes("code", ["data-lang"])
            .add_tag_attributes("input", ["type", "checked", "disabled"])
            .add_allowed_classes("span", super::highlight::CLASSES)
            .url_schemes(["http", "https", "mailto"].into_iter().collect())
            .url_relative(ammonia::UrlRelative::Deny)
            .link_rel(Some("noopener noreferrer"))
            .set_tag_attribute_value("a", "target", "_blank")
            .set_tag_attribute_value("input", "disabled", "");
        b
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_code_in_a_known_language_is_highlighted_by_class_only() {
        let html = render("```rust\nlet x = \"<b>\"; // hi\n```\n\n```brainfuck\n+<\n```");
        assert!(html.contains(r#"<span class="hl-kw">let</span>"#), "{html}");
        assert!(
            html.contains(r#"<span class="hl-str">"&lt;b&gt;"</span>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<span class="hl-com">// hi</span>"#),
            "{html}"
        );
        assert!(
            html.contains("<code data-lang=\"brainfuck\">+&lt;\n</code>"),
            "{html}"
        );
        // The sanitizer keeps only the highlighter's classes on spans.
        let sneaky = render("<span class=\"hl-kw\" style=\"x\">a</span>");
        assert!(!sneaky.contains("<span"), "{sneaky}");
    }

    #[test]
    fn raw_html_is_text() {
        let html = render("<img src=x onerror=alert(1)> and <script>alert(2)</script>");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
        let block = render("<div onclick=\"x()\">\nhi\n</div>");
        assert!(block.contains("&lt;div"), "{block}");
    }

    #[test]
    fn only_web_and_mail_links_are_links() {
        for bad in [
            "[me](javascript:alert(1))",
            "[me](JaVaScRiPt:alert(1))",
            "[me](  javascript:alert(1))",
            "[me](vbscript:msgbox(1))",
            "[me](data:text/html;base64,PHNjcmlwdD4=)",
            "[me](/admin)",
            "[me](java&#x09;script:alert(1))",
        ] {
            let html = render(bad);
            assert!(!html.contains("<a"), "{bad} → {html}");
            assert!(html.contains("me"), "{bad} → {html}");
        }
        let html = render("[docs](https://example.com/a?b=1) <mailto:x@example.com>");
        assert!(
            html.contains(r#"<a href="https://example.com/a?b=1" target="_blank" rel="noopener noreferrer">docs</a>"#),
            "{html}"
        );
        assert!(html.contains(r#"href="mailto:x@example.com""#), "{html}");
    }

    #[test]
    fn bare_urls_become_links_but_not_in_code() {
        let html = render("see https://example.com/x. and `https://example.org`");
        assert!(
            html.contains(r#"<a href="https://example.com/x" target="_blank" rel="noopener noreferrer">https://example.com/x</a>."#),
            "{html}"
        );
        assert!(html.contains("<code>https://example.org</code>"), "{html}");
    }

    #[test]
    fn images_are_links_never_fetched() {
        let html = render("![a cat](https://evil.example/cat.png)");
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains(r#"href="https://evil.example/cat.png""#),
            "{html}"
        );
        assert!(html.contains("a cat"), "{html}");
    }

    #[test]
    fn the_github_extensions_render() {
        let md = "# Title\n\n- [x] done\n- [ ] todo\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n~~old~~ **new**\n\n```rust\nfn main() { println!(\"<hi>\"); }\n```\n";
        let html = render(md);
        for part in [
            "<h1>Title</h1>",
            "<table>",
            "<th>a</th>",
            "<td>2</td>",
            "<del>old</del>",
            "<strong>new</strong>",
            r#"<code data-lang="rust"><span class="hl-kw">fn</span> main() { println!(<span class="hl-str">"&lt;hi&gt;"</span>); }"#,
            r#"type="checkbox""#,
        ] {
            assert!(html.contains(part), "{part} missing in {html}");
        }
    }
}
