//! The `switchboard` binary: read the settings, start the server, wait for a
//! signal, shut down. Only this file writes to stdout (the `listening` lines).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use log::{error, info, warn};

use switchboard::config::{Args, Config, Tool};
use switchboard::os::memory::restart_with_malloc_tunables;
use switchboard::shutdown::on_signal;
use switchboard::Server;

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(Tool::Token(token)) = args.tool.take() {
        println!("{}", token.mint());
        return ExitCode::SUCCESS;
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return ExitCode::from(2);
        }
    };
    // Before any thread starts: see `memory::malloc_tunables`.
    if let Some(e) = restart_with_malloc_tunables() {
        warn!("could not restart with switchboard's malloc settings: {e}");
    }
    if let Ok(tunables) = std::env::var("GLIBC_TUNABLES") {
        info!("malloc settings (a restart at start applies them, docs/operations.md): GLIBC_TUNABLES={tunables}");
    }
    // Each connection is a file descriptor: ask for all the kernel allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => info!("open files limit: {limit}"),
        Err(e) => warn!("could not raise the open files limit: {e}"),
    }
    let signals = match on_signal() {
        Ok(signals) => signals,
        Err(e) => {
            error!("cannot watch for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening http {}", server.http_addr);
    let _ = writeln!(stdout, "listening ws {}", server.ws_addr);
    if let Some(grpc) = server.grpc_addr {
        let _ = writeln!(stdout, "listening grpc {grpc}");
    }
    let _ = stdout.flush();
    drop(stdout);

    let signal = signals.recv();
    info!("shutting down (signal {})", signal.unwrap_or(0));
    let report = server.shutdown();
    info!(
        "shutdown done in {} ms{}",
        report.took.as_millis(),
        if report.clean {
            ""
        } else {
            " (some connections did not finish)"
        }
    );
    ExitCode::SUCCESS
}
