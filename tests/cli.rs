//! The command-line contract: the built binary on port 0 prints its
//! `listening` lines, serves, and on SIGTERM says goodbye (1001) and exits 0.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{secs, Client, Got};

fn start(args: &[&str]) -> (Child, String, String) {
    start_with(args, None, false)
}

/// Starts the binary, with `GLIBC_TUNABLES` set to `tunables` (or unset),
/// and with or without the mark of a server that has restarted already.
fn start_with(args: &[&str], tunables: Option<&str>, restarted: bool) -> (Child, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    match tunables {
        Some(tunables) => command.env("GLIBC_TUNABLES", tunables),
        None => command.env_remove("GLIBC_TUNABLES"),
    };
    if restarted {
        command.env("SWITCHBOARD_MALLOC_RESTARTED", "1");
    } else {
        command.env_remove("SWITCHBOARD_MALLOC_RESTARTED");
    }
    let mut child = command
        .args(["--http", "127.0.0.1:0", "--ws", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = |kind: &str| {
        let line = lines.next().expect("a listening line").expect("utf-8");
        let addr = line
            .strip_prefix(&format!("listening {kind} "))
            .unwrap_or_else(|| panic!("expected 'listening {kind} ADDR', got {line:?}"));
        addr.to_owned()
    };
    let http = next("http");
    let ws = next("ws");
    (child, http, ws)
}

/// Sends SIGTERM, as a service manager would.
fn terminate(child: &Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
}

/// Everything the server wrote to stderr (read once it has exited).
fn stderr_of(child: &mut Child) -> String {
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    stderr
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the server did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20)); // polling the exit, with a deadline
    }
}

#[test]
fn the_binary_prints_its_addresses_and_shuts_down_cleanly_on_sigterm() {
    let (mut child, http, ws) = start(&[]);
    assert!(
        common::raw_http(http.parse().expect("addr"), "GET /healthz HTTP/1.0\r\n\r\n")
            .contains("ok")
    );
    let mut client = Client::connect(&format!("ws://{ws}/ws?name=cli"));
    client.wait_for(|e| e["type"] == "welcome", secs(5));
    client.say("lobby", "before the signal");

    terminate(&child);
    match client.wait_for_close(secs(5)) {
        Got::Closed(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected close 1001, got {other:?}"),
    }
    let status = wait_exit(&mut child, secs(10));
    let stderr = stderr_of(&mut child);
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(
        !stderr.contains("panicked"),
        "the server panicked:\n{stderr}"
    );
    assert!(stderr.contains("shutdown done"), "stderr:\n{stderr}");
}

#[test]
fn a_taken_port_is_refused_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = taken.local_addr().expect("its address").to_string();
    for (option, other) in [("--http", "--ws"), ("--ws", "--http")] {
        let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args([option, &addr, other, "127.0.0.1:0"])
            .env("SWITCHBOARD_MALLOC_RESTARTED", "1")
            .output()
            .expect("the binary runs");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("{option} {addr}")) && stderr.contains("in use"),
            "{stderr}"
        );
    }
}

#[test]
fn a_bad_option_is_a_one_line_error_and_exit_status_2() {
    for (option, value) in [
        ("--ws", "not-an-address"),
        ("--public-host", "https://chat.example.com"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args([option, value])
            .output()
            .expect("the binary runs");
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(option), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

#[test]
fn every_option_has_an_environment_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--help")
        .output()
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&output.stdout);
    for var in [
        "SWITCHBOARD_HTTP",
        "SWITCHBOARD_WS",
        "SWITCHBOARD_GRPC",
        "SWITCHBOARD_SEND_BUFFER",
        "SWITCHBOARD_MAX_MESSAGE_SIZE",
        "SWITCHBOARD_MAX_CONNECTIONS",
        "SWITCHBOARD_HISTORY",
        "SWITCHBOARD_MAX_ROOMS",
        "SWITCHBOARD_MAX_HISTORY_BYTES",
        "SWITCHBOARD_ROOM_EXPIRY",
        "SWITCHBOARD_PING_INTERVAL",
        "SWITCHBOARD_ALLOWED_ORIGIN",
        "SWITCHBOARD_PUBLIC_HOST",
        "SWITCHBOARD_API_KEY",
    ] {
        assert!(help.contains(var), "--help does not mention {var}:\n{help}");
    }
}

/// Starts the server with `GLIBC_TUNABLES` set to `tunables` (or unset),
/// checks it serves, stops it, and returns what it says it runs with.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tunables_it_runs_with(tunables: Option<&str>, restarted: bool) -> Option<String> {
    let (mut child, http, _) = start_with(&[], tunables, restarted);
    assert!(
        common::raw_http(http.parse().expect("addr"), "GET /healthz HTTP/1.0\r\n\r\n")
            .contains("ok")
    );
    terminate(&child);
    // The restart kept the process: the one started above exits cleanly.
    assert!(wait_exit(&mut child, secs(10)).success());
    let stderr = stderr_of(&mut child);
    stderr
        .lines()
        .find_map(|line| line.split_once("GLIBC_TUNABLES=").map(|(_, v)| v.trim()))
        .map(str::to_owned)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_server_runs_with_its_malloc_settings_beside_the_users_own() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    // Unset: it restarts itself (keeping its process id) with its settings.
    assert_eq!(
        tunables_it_runs_with(None, false),
        Some(format!(
            "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0:glibc.malloc.arena_max={cores}"
        ))
    );
    // The user's own come first and win.
    assert_eq!(
        tunables_it_runs_with(
            Some("glibc.malloc.arena_max=9:glibc.malloc.tcache_count=7"),
            false
        )
        .as_deref(),
        Some("glibc.malloc.arena_max=9:glibc.malloc.tcache_count=7:glibc.malloc.mxfast=0")
    );
    // A server that has restarted once never restarts again (nor one told so).
    assert_eq!(tunables_it_runs_with(None, true), None);
}

#[test]
fn a_default_start_does_not_warn_about_the_connection_limit() {
    let (mut child, _http, _ws) = start(&[]);
    terminate(&child);
    assert!(wait_exit(&mut child, secs(10)).success());
    let stderr = stderr_of(&mut child);
    assert!(
        !stderr.contains("past what this kernel allows") && !stderr.contains(" WARN "),
        "{stderr}"
    );
}
