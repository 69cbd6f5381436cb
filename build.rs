//! Build script: with the `grpc` feature, generate the gRPC server and client
//! from `proto/switchboard.proto`; without it, do nothing (and compile no
//! codegen: both build dependencies are optional and enabled by the feature).
//!
//! protoc comes from the `protoc-bin-vendored` crate, a binary shipped inside a
//! Rust package, so a fresh machine builds with nothing installed by hand.
//! A `PROTOC` already set in the environment wins, for platforms the crate
//! does not cover.

fn main() {
    #[cfg(feature = "grpc")]
    grpc::generate();
}

#[cfg(feature = "grpc")]
mod grpc {
    const PROTO: &str = "proto/switchboard.proto";

    pub fn generate() {
        println!("cargo:rerun-if-changed={PROTO}");
        println!("cargo:rerun-if-env-changed=PROTOC");
        if std::env::var_os("PROTOC").is_none() {
            let protoc = protoc_bin_vendored::protoc_bin_path()
                .expect("protoc-bin-vendored has a protoc for this platform (or set PROTOC)");
            // Edition 2021: set_var is safe, and the build script is single-threaded here.
            std::env::set_var("PROTOC", protoc);
        }
        tonic_prost_build::configure()
            .compile_protos(&[PROTO], &["proto"])
            .unwrap_or_else(|e| panic!("cannot compile {PROTO}: {e}"));
    }
}
