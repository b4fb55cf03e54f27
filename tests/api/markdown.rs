//! The web chat's Markdown renderer against the CommonMark specification's
//! own examples (the npm package `commonmark-spec`, installed here into
//! `.cache/commonmark-spec` on the first run). The parse stage (before links
//! are filtered and the sanitizer runs) must render every example as the
//! specification does, except those with raw HTML, which it shows as text on
//! purpose: each of those must pass with the raw HTML left as HTML.

use clawrelay::webchat::markdown::parse_stage;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const SPEC_VERSION: &str = "0.31.2";

/// The examples as JSON (`[{markdown, html, number, section}]`).
fn spec_examples() -> Vec<Value> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.cache/commonmark-spec"
    ));
    let json = dir.join(format!("spec-{SPEC_VERSION}.json"));
    if !json.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let npm = Command::new("npm")
            .args(["install", "--prefix"])
            .arg(&dir)
            .args([
                &format!("commonmark-spec@{SPEC_VERSION}"),
                "--no-audit",
                "--no-fund",
                "--silent",
            ])
            .status()
            .expect("npm runs (scripts/test.sh installs it; Debian: apt-get install npm)");
        assert!(npm.success(), "npm install commonmark-spec failed");
        let out = Command::new("node")
            .current_dir(&dir)
            .args([
                "-e",
                "process.stdout.write(JSON.stringify(require('commonmark-spec').tests))",
            ])
            .output()
            .expect("node runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let partial = json.with_extension("json.part");
        std::fs::write(&partial, &out.stdout).unwrap();
        std::fs::rename(&partial, &json).unwrap();
    }
    read(&json)
}

fn read(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str::<Vec<Value>>(&text).expect("the examples as JSON")
}

/// The parse stage with raw HTML kept as HTML: the same parser and options.
fn with_raw_html(markdown: &str) -> String {
    use pulldown_cmark::{html, Options, Parser};
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut out = String::new();
    html::push_html(&mut out, Parser::new_ext(markdown, options));
    out
}

/// What the specification's own test runner (its `normalize.py`) makes
/// equal: a `"` in text written as `&quot;` or as itself.
fn normalize(html: &str) -> String {
    html.replace("&quot;", "\"")
}

/// Whether the Markdown has something that reads as an HTML tag, comment,
/// declaration or processing instruction.
fn has_raw_html(markdown: &str) -> bool {
    markdown
        .as_bytes()
        .windows(2)
        .any(|w| w[0] == b'<' && (w[1].is_ascii_alphabetic() || matches!(w[1], b'/' | b'!' | b'?')))
}

#[test]
fn the_commonmark_spec_examples_render_as_specified() {
    let examples = spec_examples();
    assert!(examples.len() > 600, "{} examples", examples.len());
    let (mut passed, mut escaped, mut failed) = (0, Vec::new(), Vec::new());
    for e in &examples {
        // The specification writes a tab as →.
        let markdown = e["markdown"].as_str().unwrap().replace('→', "\t");
        let want = e["html"].as_str().unwrap().replace('→', "\t");
        let number = e["number"].as_u64().unwrap();
        let want = normalize(&want);
        if normalize(&parse_stage(&markdown)) == want {
            passed += 1;
        } else if normalize(&with_raw_html(&markdown)) == want || has_raw_html(&markdown) {
            // The raw HTML differs: shown as text on purpose. (One example,
            // an HTML block in a list item, differs by a line break too.)
            escaped.push(number);
        } else {
            failed.push((number, e["section"].as_str().unwrap_or("").to_owned()));
        }
    }
    let total = examples.len();
    println!(
        "CommonMark {SPEC_VERSION}: {passed} of {total} examples as specified ({:.1} %); \
         {} differ by raw HTML, shown as text on purpose; {} fail otherwise: {failed:?}",
        100.0 * passed as f64 / total as f64,
        escaped.len(),
        failed.len(),
    );
    // Every example the stage renders differently uses raw HTML.
    assert!(
        failed.is_empty(),
        "examples rendered unlike the specification for another reason than raw HTML: {failed:?}"
    );
    for number in &escaped {
        let e = &examples[(*number - 1) as usize];
        let markdown = e["markdown"].as_str().unwrap();
        assert!(has_raw_html(markdown), "example {number} has no raw HTML");
    }
}
