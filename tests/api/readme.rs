//! README's walk-through and web chat set-up, run as written: the shell
//! blocks marked `<!-- walk-through: … -->` and `<!-- web chat: … -->` run in
//! bash, in a temp directory, with the relay binary on the PATH, against the
//! relay started as README's first command starts it. Only what a reader
//! pastes or picks changes: the admin token printed at start and the port
//! (a free one instead of 9876). Each command's output is checked against the
//! sample printed under it (`# {…}`): the same keys, the same values where
//! the sample spells them out. README and behaviour cannot drift apart.

use crate::helpers::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A command of a shell block and the output sample printed under it.
#[derive(Debug)]
struct Step {
    command: String,
    sample: Option<String>,
}

/// The shell block that follows the line `marker` in README.md.
fn block(marker: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let (_, after) = readme
        .split_once(marker)
        .unwrap_or_else(|| panic!("README.md has no line {marker:?}"));
    let after = after
        .split_once("```sh\n")
        .expect("a ```sh block after the marker")
        .1;
    after
        .split_once("\n```")
        .expect("the block ends")
        .0
        .to_owned()
}

/// The block's commands (continuation lines and here-documents joined),
/// each with the comment lines right under it as its output sample.
fn steps(block: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = block.lines();
    let mut after_command = false;
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            after_command = false;
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if after_command {
                let step = steps.last_mut().expect("a command before the sample");
                let sample = step.sample.get_or_insert_with(String::new);
                sample.push_str(comment.trim());
            }
            continue;
        }
        let mut command = line.to_owned();
        if let Some(pos) = line.find("<<'") {
            let word = line[pos + 3..].split('\'').next().unwrap_or_default();
            for body in lines.by_ref() {
                command.push('\n');
                command.push_str(body);
                if body == word {
                    break;
                }
            }
        }
        while command.ends_with('\\') {
            command.push('\n');
            command.push_str(lines.next().expect("a continued line"));
        }
        steps.push(Step {
            command,
            sample: None,
        });
        after_command = true;
    }
    steps
}

/// The sample as a JSON pattern: `…` left out where it stands for more
/// fields or elements, kept inside strings (a prefix: `cli_…`).
fn pattern(sample: &str) -> Value {
    let mut out = String::new();
    let mut in_string = false;
    let mut chars = sample.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_string = !in_string;
                out.push(c);
            }
            '…' if !in_string => {
                if out.trim_end().ends_with(',') {
                    let keep = out.trim_end().len() - 1;
                    out.truncate(keep);
                } else if chars.peek() == Some(&',') {
                    chars.next();
                }
            }
            _ => out.push(c),
        }
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("sample {sample:?} as JSON ({out}): {e}"))
}

/// Whether `actual` has everything `pattern` shows: an object's keys with
/// matching values, an array's first elements, a string's text up to `…`.
fn matches(pattern: &Value, actual: &Value) -> bool {
    match (pattern, actual) {
        (Value::Object(p), Value::Object(a)) => p
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|got| matches(v, got))),
        (Value::Array(p), Value::Array(a)) => {
            p.len() <= a.len() && p.iter().zip(a).all(|(v, got)| matches(v, got))
        }
        (Value::String(p), Value::String(a)) => match p.split_once('…') {
            Some((prefix, _)) => a.starts_with(prefix),
            None => p == a,
        },
        _ => pattern == actual,
    }
}

/// Runs the steps as one bash script (`set -euo pipefail`) in `dir` with
/// the relay binary first on the PATH; returns each step's output.
fn run(steps: &[Step], dir: &Path) -> Vec<String> {
    let mut script = String::from("set -euo pipefail\n");
    for (i, step) in steps.iter().enumerate() {
        script.push_str(&format!("printf '\\n@@step {i}@@\\n'\n{}\n", step.command));
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_clawrelay")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("timeout")
        .args(["120", "bash", "-c", &script])
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("ADMIN_TOKEN")
        .env("LOG_LEVEL", "warn")
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the block failed ({}):\n{script}\n--- output ---\n{stdout}",
        out.status
    );
    let mut outputs = vec![String::new(); steps.len()];
    for part in stdout.split("\n@@step ").skip(1) {
        let (n, text) = part.split_once("@@\n").expect("a step marker");
        outputs[n.parse::<usize>().unwrap()] = text.to_owned();
    }
    outputs
}

/// Each step's output against its sample.
fn check(steps: &[Step], outputs: &[String]) {
    for (step, output) in steps.iter().zip(outputs) {
        let Some(sample) = &step.sample else { continue };
        let want = pattern(sample);
        let got: Value = serde_json::from_str(output.trim())
            .unwrap_or_else(|e| panic!("`{}` printed no JSON ({e}): {output:?}", step.command));
        assert!(
            matches(&want, &got),
            "`{}` printed\n{got}\nwhich does not match its sample in README\n{sample}",
            step.command
        );
    }
}

/// Fails with what to install when the block's tools are missing.
fn require_tools() {
    for tool in ["curl", "jq", "bash", "timeout"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "README's blocks use `{tool}`: install it (scripts/test.sh does, as root: apt-get install curl jq)"
        );
    }
}

/// Kills a process when dropped (a failed test leaves no relay behind).
struct Killed(u32);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

/// README's first command in `dir` (`clawrelay serve`, on a free port):
/// the process and the admin token it printed.
fn first_command(dir: &Path, port: u16) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clawrelay"))
        .args(["serve", "--port", &port.to_string()])
        .current_dir(dir)
        .env_remove("ADMIN_TOKEN")
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start clawrelay");
    let out = BufReader::new(child.stdout.take().unwrap());
    let token = out
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.trim().starts_with("adm_").then(|| l.trim().to_owned()))
        .expect("the first start printed an admin token");
    (child, token)
}

/// Runs `steps` in `dir` on a blocking thread; checks and returns the outputs.
async fn run_checked(steps: Vec<Step>, dir: &Path) -> Vec<String> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let outputs = run(&steps, &dir);
        check(&steps, &outputs);
        outputs
    })
    .await
    .unwrap()
}

/// As a reader goes: the first command, the walk-through in a second
/// terminal, then (the first relay stopped) the web chat's set-up, all in
/// one folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walk_through_and_the_web_chat_set_up_run_as_written() {
    if sqlite_only("README's first command runs the relay on its SQLite file") {
        return;
    }
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut relay, admin) = first_command(dir.path(), port);
    let guard = Killed(relay.id());
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;

    let walk = block("<!-- walk-through:")
        .replacen(
            "B=http://127.0.0.1:9876\n",
            &format!("B=http://127.0.0.1:{port}\n"),
            1,
        )
        .lines()
        .map(|l| {
            if l.starts_with("ADMIN=adm_") {
                format!("ADMIN={admin}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(walk.contains(&format!("ADMIN={admin}")), "{walk}");
    assert!(
        walk.contains(&base),
        "the block sets B to the default address"
    );
    let walk = steps(&walk);
    assert!(
        walk.iter().filter(|s| s.sample.is_some()).count() >= 8,
        "every call shows its output: {walk:#?}"
    );
    let outputs = run_checked(walk, dir.path()).await;
    assert!(outputs.iter().any(|o| o.contains("Hi Alice!")));

    // What the walk-through did is there: alice's conversation, answered,
    // and nothing left to deliver.
    let list = get_json(&http, &format!("{base}/conversations?userId=alice"), &admin).await;
    assert_eq!(list["conversations"][0]["messageCount"], 2, "{list}");
    let pending = get_json(&http, &format!("{base}/deliveries?state=pending"), &admin).await;
    assert_eq!(pending["deliveries"], json!([]), "{pending}");

    // "First stop the relay you started with the first command."
    drop(guard);
    let _ = relay.wait();

    let serve = "clawrelay serve --config config.toml &";
    let chat = block("<!-- web chat:");
    assert!(chat.contains(serve), "{chat}");
    let chat = chat.replacen(
        serve,
        &format!("clawrelay serve --config config.toml --port {port} > serve.log 2>&1 & echo $! > serve.pid;"),
        1,
    );
    let outputs = run_checked(steps(&chat), dir.path()).await;
    let pid = std::fs::read_to_string(dir.path().join("serve.pid")).unwrap();
    let _guard = Killed(pid.trim().parse().unwrap());

    // The configuration block is TOML the relay took: the chat is on, with
    // its title, and alice logs in with the password printed.
    let created: Value = serde_json::from_str(outputs.last().unwrap().trim()).unwrap();
    let password = created["password"].as_str().unwrap();
    wait_ready(&http, &base).await;
    let page = http.get(format!("{base}/chat")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Acme support"));
    let login = http
        .post(format!("{base}/login"))
        .json(&json!({"name": "alice", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200, "{:?}", login.text().await);
}
