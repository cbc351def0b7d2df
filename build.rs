//! Compiles the `headscale.v1` protobuf API (`proto/`) into Rust types and the gRPC service,
//! with a pure-Rust protobuf compiler so that no `protoc` binary is needed. Also writes the
//! encoded descriptor set (`headscale_descriptor.bin` in `OUT_DIR`) for tools that need the
//! schema at run time. Records the compiler's version for `headscale version`.

use std::path::PathBuf;

const PROTO_FILES: &[&str] = &[
    "headscale/v1/apikey.proto",
    "headscale/v1/auth.proto",
    "headscale/v1/device.proto",
    "headscale/v1/headscale.proto",
    "headscale/v1/node.proto",
    "headscale/v1/policy.proto",
    "headscale/v1/preauthkey.proto",
    "headscale/v1/user.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    record_compiler_version();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTO_FILES)?;
    std::fs::write(out_dir.join("headscale_descriptor.bin"), compiler.encode_file_descriptor_set())?;

    // Well-known types map to `prost_types`; the google.api options only annotate methods.
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

/// Sets `HEADSCALE_RUSTC_VERSION` (`rustc 1.x.y`, or `unknown`) for the crate.
fn record_compiler_version() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split_whitespace().take(2).map(str::to_string).reduce(|a, b| format!("{a} {b}")))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=HEADSCALE_RUSTC_VERSION={version}");
}
