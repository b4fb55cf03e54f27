//! deploy/clawrelay.service works as shipped: systemd accepts it, and the
//! relay, run as an unprivileged user with the owners and modes the unit's
//! install commands give, reads its configuration and serves.

use crate::helpers::*;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

const UNIT: &str = include_str!("../../deploy/clawrelay.service");

#[test]
fn systemd_accepts_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    // Verified with ExecStart pointing at the binary under test (systemd
    // checks that the command exists and is executable).
    let unit = UNIT.replace("/usr/local/bin/clawrelay", env!("CARGO_BIN_EXE_clawrelay"));
    let path = dir.path().join("clawrelay.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd) is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("clawrelay.service:"), "{stderr}");
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
