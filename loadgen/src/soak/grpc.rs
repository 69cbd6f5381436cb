//! The soak's gRPC publisher: `scripts/soak_grpc.py`, a python grpcio
//! client, run to its end on a blocking thread.
//!
//! Why python: a gRPC client in loadgen would pull tonic and its code
//! generation into loadgen's build for one publisher at ten messages a
//! second; the project already has python gRPC stubs for its interop test.

use serde_json::Value;

use super::{GRPC_PUBLISHER, SIZE};
use crate::fanout::PublisherReport;

pub fn command(
    python: &str,
    script: &str,
    addr: &str,
    rate: f64,
    seconds: f64,
) -> std::process::Command {
    let mut command = std::process::Command::new(python);
    command
        .args([script, addr, "--room", "soak", "--trial", "1"])
        .args([
            "--publisher".to_string(),
            GRPC_PUBLISHER.to_string(),
            "--rate".into(),
            rate.to_string(),
            "--seconds".into(),
            seconds.to_string(),
            "--size".into(),
            SIZE.to_string(),
        ]);
    command
}

/// Runs the gRPC publisher to its end; its last stdout line is
/// `{"sent": N, "errors": E, "failure": ...}`.
pub fn run(mut command: std::process::Command) -> PublisherReport {
    let output = match command.stderr(std::process::Stdio::inherit()).output() {
        Ok(output) => output,
        Err(e) => {
            return PublisherReport {
                failure: Some(format!("grpc publisher: {e}")),
                ..PublisherReport::default()
            }
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    let failure = match &line["failure"] {
        Value::String(why) => Some(format!("grpc: {why}")),
        _ if line.is_null() => Some(format!(
            "grpc publisher said {stdout:?} ({})",
            output.status
        )),
        _ => None,
    };
    PublisherReport {
        sent: line["sent"].as_u64().unwrap_or(0),
        errors: line["errors"].as_u64().unwrap_or(0),
        failure,
        ..PublisherReport::default()
    }
}
