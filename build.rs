//! Build script: nothing to generate without the `grpc` feature.
fn main() {}
