//! A standard gRPC client, Python's grpcio (gRPC C-core), on the local unix socket: it sends
//! the socket's path as `:authority`, which the server accepts (see `grpc/authority.rs`). The
//! calls are made without generated code, with protobuf messages written by hand.

use std::process::Command;

mod support;

const CLIENT: &str = r#"
import sys, grpc
channel = grpc.insecure_channel("unix://" + sys.argv[1])
def call(method, body):
    f = channel.unary_unary("/headscale.v1.HeadscaleService/" + method,
                            request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return f(body, timeout=10)
call("CreateUser", b"\x0a\x05alice")          # CreateUserRequest{name: "alice"}
users = call("ListUsers", b"")
print("alice" if b"alice" in users else "missing: %r" % users)
"#;

#[test]
fn python_grpcio_uses_the_local_socket() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let config = support::write_config(dir.path(), port, "");
    let server = support::Serving::start(&config, port);
    let socket = dir.path().join("headscale.sock");
    let out = Command::new("python3").arg("-c").arg(CLIENT).arg(&socket).output();
    drop(server);
    let out = out.expect("python3 runs (the tests need Python 3 with grpcio: pip install grpcio)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("No module named 'grpc'"), "the tests need Python's grpcio: pip install grpcio");
    assert!(out.status.success(), "grpcio failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alice");
}
