//! `bench webchat`: what the chat page costs a browser to load (its files,
//! raw and gzipped with `gzip -9`) and what rendering an agent's Markdown
//! costs the relay (microseconds per KiB, for the parse stage alone and for
//! the whole renderer with its link filtering and sanitizer), on a reply of
//! typical shape (headings, lists, a table, code, links) and on plain prose.

use clawrelay::webchat::{assets, markdown};
use serde::Serialize;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(Serialize)]
pub struct Report {
    pub files: Vec<FileWeight>,
    pub total_bytes: usize,
    pub total_gzip_bytes: usize,
    pub render: Vec<RenderCost>,
}

#[derive(Serialize)]
pub struct FileWeight {
    pub name: String,
    pub bytes: usize,
    pub gzip_bytes: usize,
}

#[derive(Serialize)]
pub struct RenderCost {
    pub input: String,
    pub kib: f64,
    pub parse_us_per_kib: f64,
    pub render_us_per_kib: f64,
}

fn gzip_len(data: &str) -> usize {
    let mut child = Command::new("gzip")
        .arg("-9c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(data.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap().stdout.len()
}

const REPLY: &str = "# Release notes\n\nHere is what **changed** in ~~1.0~~ 1.1, see \
https://example.com/notes and [the guide](https://example.com/guide \"Guide\"):\n\n\
- faster claims\n- [x] tested on PostgreSQL\n- `cargo doc` builds\n\n\
| area | before | after |\n|---|---|---|\n| claim p99 | 3.5 ms | 1.3 ms |\n| RSS | 60 MiB | 46 MiB |\n\n\
```rust\nfn main() {\n    println!(\"<not a tag>\");\n}\n```\n\n> A quote, *emphasised*.\n\n";

const PROSE: &str = "The relay keeps every message on disk before it answers, so a crash \
loses nothing that was acknowledged. Agents take messages, answer them, and the answers \
flow back to the app that asked.\n\n";

/// Mean microseconds per KiB of `f` over `input`, run for about half a second.
fn cost(input: &str, f: fn(&str) -> String) -> f64 {
    let mut runs = 0u32;
    let started = Instant::now();
    while started.elapsed().as_millis() < 500 {
        std::hint::black_box(f(std::hint::black_box(input)));
        runs += 1;
    }
    let per_run = started.elapsed().as_secs_f64() * 1e6 / f64::from(runs);
    per_run / (input.len() as f64 / 1024.0)
}

pub fn run() -> Report {
    let mut files = Vec::new();
    for (name, body) in assets() {
        files.push(FileWeight {
            name: name.to_owned(),
            bytes: body.len(),
            gzip_bytes: gzip_len(body),
        });
    }
    let total_bytes = files.iter().map(|f| f.bytes).sum();
    let total_gzip_bytes = files.iter().map(|f| f.gzip_bytes).sum();
    println!("web chat page: {total_bytes} bytes, {total_gzip_bytes} gzipped");
    for f in &files {
        println!(
            "  {:<10} {:>7} bytes {:>6} gzipped",
            f.name, f.bytes, f.gzip_bytes
        );
    }
    let mut render = Vec::new();
    for (name, unit, target) in [
        ("reply, 1 KiB", REPLY, 1024),
        ("reply, 64 KiB", REPLY, 65536),
        ("prose, 64 KiB", PROSE, 65536),
    ] {
        let input = unit.repeat(target / unit.len() + 1);
        let r = RenderCost {
            input: name.to_owned(),
            kib: input.len() as f64 / 1024.0,
            parse_us_per_kib: cost(&input, markdown::parse_stage),
            render_us_per_kib: cost(&input, markdown::render),
        };
        println!(
            "Markdown {:<14} ({:>5.1} KiB): parse {:>6.1} µs/KiB, whole renderer {:>6.1} µs/KiB",
            r.input, r.kib, r.parse_us_per_kib, r.render_us_per_kib
        );
        render.push(r);
    }
    Report {
        files,
        total_bytes,
        total_gzip_bytes,
        render,
    }
}
