//! The command line of tokens, on the built binary: `switchboard token`
//! prints one a server with the same secret accepts; `--jwt-*` mistakes are a
//! one-line error and exit status 2; the secret never reaches the log.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{secs, Client};
use switchboard::auth::Verifier;

const SECRET: &str = "cli-secret-5f2b9";

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command.env_remove("SWITCHBOARD_JWT_SECRET");
    command
}

fn run(args: &[&str]) -> Output {
    binary().args(args).output().expect("the binary runs")
}

#[test]
fn the_token_subcommand_prints_a_token_the_secret_verifies() {
    let out = run(&[
        "token",
        "--secret",
        SECRET,
        "--sub",
        "alice",
        "--rooms",
        "team-*,lobby",
        "--publish",
        "team-a",
        "--name",
        "Alice",
        "--fixed-name",
        "--ttl",
        "15m",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let token = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout:?}");
    let grants = Verifier::hs256(SECRET.as_bytes())
        .expect("a secret")
        .verify(token)
        .expect("the token verifies");
    assert_eq!(&*grants.user, "alice");
    assert_eq!(grants.name.as_ref().map(|n| n.as_str()), Some("Alice"));
    assert!(grants.fixed_name);
    let now = switchboard::auth::mint::now_secs();
    let left = grants.good_until - switchboard::auth::LEEWAY.as_secs() - now;
    assert!((890..=900).contains(&left), "15 minutes, got {left} s");

    // The secret may come from the environment, as the server's does.
    let out = binary()
        .env("SWITCHBOARD_JWT_SECRET", SECRET)
        .args(["token", "--sub", "bob"])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    let bad_ttl = run(&["token", "--secret", "s", "--sub", "x", "--ttl", "1y"]);
    assert_eq!(bad_ttl.status.code(), Some(2), "{bad_ttl:?}");
}

#[test]
fn jwt_option_mistakes_are_one_line_errors_with_status_2() {
    let base = ["--http", "127.0.0.1:0", "--ws", "127.0.0.1:0"];
    for (args, says) in [
        (
            vec!["--jwt-public-key", "/nonexistent/key.pem"],
            "--jwt-public-key",
        ),
        (vec!["--jwt-public-key", "Cargo.toml"], "not an RSA or EC"),
        (
            vec!["--jwt-secret", "a", "--jwt-public-key", "Cargo.toml"],
            "not both",
        ),
        (
            vec!["--jwt-audience", "app"],
            "need --jwt-secret or --jwt-public-key",
        ),
        (vec!["--jwt-secret", ""], "empty"),
    ] {
        let out = binary().args(base).args(&args).output().expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?} should say {says:?}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}

/// Starts the server with `args`; returns it and its WebSocket address.
fn serve(args: &[&str]) -> (Child, String) {
    let mut child = binary()
        .args(["--http", "127.0.0.1:0", "--ws", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ws = loop {
        let line = lines.next().expect("a listening line").expect("utf-8");
        if let Some(ws) = line.strip_prefix("listening ws ") {
            break ws.to_owned();
        }
    };
    (child, ws)
}

#[test]
fn a_server_with_a_secret_file_takes_minted_tokens_and_never_logs_the_secret() {
    let dir = std::env::temp_dir().join(format!("switchboard-auth-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let file = dir.join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).expect("write the secret");
    let (mut child, ws) = serve(&["--jwt-secret-file", file.to_str().expect("utf-8 path")]);

    let out = run(&[
        "token", "--secret", SECRET, "--sub", "alice", "--rooms", "lobby",
    ]);
    let token = String::from_utf8(out.stdout).expect("utf-8");
    let mut client = Client::connect(&format!("ws://{ws}/ws?token={}", token.trim()));
    let welcome = client.wait_for(|e| e["type"] == "welcome", secs(5));
    assert_eq!(welcome["rooms"], serde_json::json!(["lobby"]));
    let refused = common::raw_http(
        ws.parse().expect("an address"),
        &common::handshake_request("/ws", ""),
    );
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    drop(client);

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    assert!(stderr.contains("ws open"), "debug logging was on: {stderr}");
    assert!(!stderr.contains(SECRET), "the secret was logged: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
