//! deploy/clawrelay.service works as shipped: systemd accepts it and its
//! socket unit (deploy/clawrelay.socket), and the
//! relay, run as an unprivileged user with the owners and modes the unit's
//! install commands give, reads its configuration and serves.

use crate::helpers::*;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

const UNIT: &str = include_str!("../../deploy/clawrelay.service");
const SOCKET: &str = include_str!("../../deploy/clawrelay.socket");

#[test]
fn systemd_accepts_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    // Verified with ExecStart pointing at the binary under test (systemd
    // checks that the command exists and is executable), beside the socket
    // unit it requires.
    let unit = UNIT.replace("/usr/local/bin/clawrelay", env!("CARGO_BIN_EXE_clawrelay"));
    let path = dir.path().join("clawrelay.service");
    std::fs::write(&path, unit).unwrap();
    let socket = dir.path().join("clawrelay.socket");
    std::fs::write(&socket, SOCKET).unwrap();
    verify_unit(&socket);
    verify_unit(&path);
}

/// The socket unit listens where the relay does by default (one address),
/// and the service is started with it.
#[test]
fn the_socket_unit_listens_on_the_default_address() {
    let listens: Vec<&str> = SOCKET
        .lines()
        .filter(|l| l.starts_with("ListenStream="))
        .collect();
    assert_eq!(listens, ["ListenStream=127.0.0.1:9876"]);
    let defaults = clawrelay::config::Config::default();
    assert_eq!(
        format!("{}:{}", defaults.server.bind, defaults.server.port),
        "127.0.0.1:9876"
    );
    assert!(UNIT.contains("Requires=clawrelay.socket\n"));
    assert!(UNIT.contains("After=clawrelay.socket "));
}

/// `systemd-analyze verify` accepts the unit file at `path`, without a
/// warning about it.
fn verify_unit(path: &std::path::Path) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(path)
        .output()
        .expect("systemd-analyze (Debian package systemd) is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(!stderr.contains(&format!("{name}:")), "{stderr}");
}

/// The install commands in the unit's header, which the README repeats.
#[test]
fn the_unit_installs_its_config_readable_by_the_service_group() {
    for line in [
        "useradd --system --user-group",
        "install -d -m 0750 -o root -g clawrelay /etc/clawrelay",
        "install -m 0640 -o root -g clawrelay /dev/stdin /etc/clawrelay/config.toml",
        "ExecStart=/usr/local/bin/clawrelay serve --config /etc/clawrelay/config.toml\n",
        "User=clawrelay",
        "Group=clawrelay",
    ] {
        assert!(
            UNIT.contains(line),
            "deploy/clawrelay.service lacks `{line}`"
        );
    }
    let readme = include_str!("../../README.md");
    assert!(readme.contains("install -d -m 0750 -o root -g clawrelay /etc/clawrelay"));
}

#[test]
fn the_relay_runs_as_an_unprivileged_user_with_the_installed_modes() {
    // Stand-ins: /etc/clawrelay (root:nogroup 0750, config 0640) and the
    // state directory (owned by the user, 0700); nobody:nogroup plays
    // clawrelay:clawrelay.
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let etc = root.path().join("etc");
    let state = root.path().join("state");
    std::fs::create_dir(&etc).unwrap();
    std::fs::create_dir(&state).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = include_str!("../../config.example.toml")
        .replace(
            "path = \"clawrelay.db\"",
            &format!("path = \"{}/clawrelay.db\"", state.display()),
        )
        .replace("port = 9876", &format!("port = {port}"));
    let config_path = etc.join("config.toml");
    std::fs::write(&config_path, config).unwrap();
    let chown = |path: &std::path::Path, owner: &str| {
        assert!(Command::new("chown")
            .arg(owner)
            .arg(path)
            .status()
            .unwrap()
            .success());
    };
    chown(&etc, "root:nogroup");
    chown(&config_path, "root:nogroup");
    chown(&state, "nobody:nogroup");
    std::fs::set_permissions(&etc, PermissionsExt::from_mode(0o750)).unwrap();
    std::fs::set_permissions(&config_path, PermissionsExt::from_mode(0o640)).unwrap();
    std::fs::set_permissions(&state, PermissionsExt::from_mode(0o700)).unwrap();

    let mut relay = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_clawrelay"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("ADMIN_TOKEN", ADMIN)
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux) runs the relay as nobody");
    let started = std::time::Instant::now();
    let served = loop {
        if let Ok(Some(_)) = relay.try_wait() {
            break false;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break true;
        }
        if started.elapsed() > PATIENCE {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // It listens first, then creates its database: give it the time to.
    while served && !state.join("clawrelay.db").exists() && started.elapsed() < PATIENCE {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = relay.kill();
    let out = relay.wait_with_output().unwrap();
    assert!(
        served,
        "the relay did not serve as an unprivileged user: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(state.join("clawrelay.db").exists());
}

const CLUSTER_UNIT: &str = include_str!("../../deploy/cluster/clawrelay@.service");
const CLUSTER_NGINX: &str = include_str!("../../deploy/cluster/nginx.conf");

#[test]
fn systemd_accepts_the_cluster_unit() {
    let dir = tempfile::tempdir().unwrap();
    let unit = CLUSTER_UNIT.replace("/usr/local/bin/clawrelay", env!("CARGO_BIN_EXE_clawrelay"));
    let env = dir.path().join("env");
    std::fs::write(&env, "DATABASE_URL=postgres://x@127.0.0.1/x\n").unwrap();
    let unit = unit.replace("/etc/clawrelay/env", env.to_str().unwrap());
    // An instance of the template, as `systemctl enable clawrelay@9871` makes.
    let path = dir.path().join("clawrelay@9871.service");
    std::fs::write(&path, unit).unwrap();
    verify_unit(&path);
}

/// The lines of the unit's header that start with `#   `, without it.
fn install_commands(unit: &str) -> String {
    unit.lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// deploy/cluster as shipped: three relays run as an unprivileged user
/// with the unit's command line, the config, webhook key and environment
/// file its install commands make, on one PostgreSQL; nginx with
/// deploy/cluster/nginx.conf in front (its TLS lines swapped for a plain
/// port: no certificate here). A round trip through nginx; the unit's
/// admin command; then kill -9 of a relay, and nginx keeps serving
/// through the other two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cluster_deploy_serves_through_nginx() {
    let pg = super::postgres::Cluster::start();
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let etc = root.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let at = |name: &str| etc.join(name).to_str().unwrap().to_owned();
    let commands = install_commands(CLUSTER_UNIT);
    // The config and key the install commands write (a sed and openssl).
    assert!(commands.contains(
        r#"sed 's|^key_file = ""|key_file = "/etc/clawrelay/webhook.key"|' config.example.toml"#
    ));
    let config = include_str!("../../config.example.toml").replace(
        r#"key_file = """#,
        &format!(r#"key_file = "{}""#, at("webhook.key")),
    );
    assert_ne!(config, include_str!("../../config.example.toml"));
    std::fs::write(at("config.toml"), config).unwrap();
    assert!(commands.contains("openssl rand -hex 32 | sudo install -m 0640 -o root -g clawrelay /dev/stdin /etc/clawrelay/webhook.key"));
    std::fs::write(at("webhook.key"), format!("{}\n", "ab".repeat(32))).unwrap();
    assert!(commands.contains("printf 'DATABASE_URL="));
    std::fs::write(
        at("env"),
        format!("DATABASE_URL={}\nADMIN_TOKEN={ADMIN}\n", pg.url),
    )
    .unwrap();
    for (name, owner, mode) in [
        ("", "root:nogroup", 0o750),
        ("config.toml", "root:nogroup", 0o640),
        ("webhook.key", "root:nogroup", 0o640),
        ("env", "root:root", 0o600),
    ] {
        let path = etc.join(name);
        assert!(Command::new("chown")
            .arg(owner)
            .arg(&path)
            .status()
            .unwrap()
            .success());
        std::fs::set_permissions(&path, PermissionsExt::from_mode(mode)).unwrap();
    }

    // The unit's command line, as systemd runs it: as the service user
    // (nobody:nogroup plays clawrelay), with the environment file read by
    // root first.
    let exec = CLUSTER_UNIT
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let env: Vec<(String, String)> = std::fs::read_to_string(at("env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let start = |port: u16| {
        let line = exec
            .replace("/usr/local/bin/clawrelay", env!("CARGO_BIN_EXE_clawrelay"))
            .replace("/etc/clawrelay/config.toml", &at("config.toml"))
            .replace("%i", &port.to_string());
        let mut words = line.split_whitespace();
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(words.next().unwrap())
            .args(words)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LOG_LEVEL", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("setpriv (util-linux) runs the relay as nobody")
    };
    let mut relays: Vec<Reaped> = ports.iter().map(|p| Reaped(start(*p), "-KILL")).collect();
    let http = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    for port in &ports {
        wait_ready(&http, &format!("http://127.0.0.1:{port}")).await;
    }

    // nginx with the shipped configuration: the relays' ports in its
    // upstream, a plain port instead of TLS.
    let nginx_port = free_port();
    let mut site = CLUSTER_NGINX.to_owned();
    for (shipped, port) in ["9871", "9872", "9873"].iter().zip(&ports) {
        assert!(site.contains(&format!("127.0.0.1:{shipped} ")));
        site = site.replace(
            &format!("127.0.0.1:{shipped} "),
            &format!("127.0.0.1:{port} "),
        );
    }
    let site: String = site
        .lines()
        .filter(|l| !l.trim_start().starts_with("ssl_certificate"))
        .map(|l| {
            l.replace(
                "listen 443 ssl http2;",
                &format!("listen 127.0.0.1:{nginx_port};"),
            )
            .replace("listen 80;", &format!("listen 127.0.0.1:{};", free_port()))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let run = root.path().join("nginx");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::write(run.join("clawrelay.conf"), site).unwrap();
    let r = run.display();
    std::fs::write(
        run.join("nginx.conf"),
        format!(
            "pid {r}/nginx.pid;\nerror_log {r}/error.log;\nevents {{}}\nhttp {{\n\
             access_log off;\nclient_body_temp_path {r}/body;\nproxy_temp_path {r}/proxy;\n\
             fastcgi_temp_path {r}/fastcgi;\nuwsgi_temp_path {r}/uwsgi;\nscgi_temp_path {r}/scgi;\n\
             include {r}/clawrelay.conf;\n}}\n"
        ),
    )
    .unwrap();
    let nginx_bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nginx (Debian package nginx) is installed");
    // SIGTERM: the master stops its workers (SIGKILL would orphan them).
    let nginx = Reaped(
        Command::new(nginx_bin)
            .args(["-p", &r.to_string(), "-c"])
            .arg(run.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx"),
        "-TERM",
    );
    let base = format!("http://127.0.0.1:{nginx_port}");
    wait_ready(&http, &base).await;

    // The unit's admin command, as root with the environment file.
    let admin = commands
        .lines()
        .find(|l| l.contains("client create"))
        .unwrap()
        .strip_prefix("sudo sh -c '")
        .unwrap()
        .trim_end_matches('\'')
        .replace("/etc/clawrelay/env", &at("env"))
        .replace("/etc/clawrelay/config.toml", &at("config.toml"))
        .replace(
            "exec clawrelay",
            &format!("exec {}", env!("CARGO_BIN_EXE_clawrelay")),
        );
    let out = Command::new("sh").args(["-c", &admin]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let agent = agent["token"].as_str().unwrap().to_owned();
    let web = post_json(
        &http,
        &format!("{base}/apps"),
        ADMIN,
        serde_json::json!({ "name": "web" }),
    )
    .await;
    let web = web["token"].as_str().unwrap().to_owned();

    let round_trip = |i: usize| {
        let (http, base, agent, web) = (http.clone(), base.clone(), agent.clone(), web.clone());
        async move {
            post_json(
                &http,
                &format!("{base}/inbound"),
                &web,
                serde_json::json!({ "from": format!("user{i}"), "text": format!("hello {i}") }),
            )
            .await;
            let polled = get_json(&http, &format!("{base}/poll?wait=10"), &agent).await;
            let m = &polled["messages"][0];
            assert_eq!(m["text"], format!("hello {i}"), "{polled}");
            post_json(
                &http,
                &format!("{base}/send"),
                &agent,
                serde_json::json!({ "to": m["from"], "conversationId": m["conversationId"], "text": format!("hi {i}") }),
            )
            .await;
        }
    };
    for i in 0..6 {
        round_trip(i).await;
    }
    // kill -9 one relay: nginx carries on with the other two.
    relays.remove(0);
    for i in 6..12 {
        round_trip(i).await;
    }
    let outbox = get_json(&http, &format!("{base}/outbox?limit=100"), &web).await;
    let texts: Vec<&str> = outbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..12).map(|i| format!("hi {i}")).collect();
    assert_eq!(texts, expected);
    drop(nginx);
    drop(relays);
}

/// A process stopped with the signal given when dropped (also when an
/// assertion fails), and waited for.
struct Reaped(std::process::Child, &'static str);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args([self.1, &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}
