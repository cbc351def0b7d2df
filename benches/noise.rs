//! The ts2021 record layer on a full map's worth of bytes: sealing 1.1 MB (what a 2,000-peer
//! full map weighs uncompressed) into 4 KiB ChaCha20-Poly1305 records, and opening them again.
//! Every byte a map session sends goes through the first; a reconnect storm of 2,000 nodes
//! sends 2.2 GB through it. And the server's side of the Noise IK handshake that opens every
//! control connection: in a storm every client handshakes at once.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_executor::block_on;
use headscale::noise::{accept, Initiation, NoiseStream};
use headscale::tailcfg::PrivateKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAP_BYTES: usize = 1_100_000;
const KEY_A: [u8; 32] = [1; 32];
const KEY_B: [u8; 32] = [2; 32];

fn message() -> Vec<u8> {
    (0..MAP_BYTES).map(|i| b"{\"Peers\":[0123456789abcdef]}"[i % 28]).collect()
}

/// `msg` sealed into records as a sender with key `KEY_A` writes them.
fn sealed(msg: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut tx = NoiseStream::new(&mut wire, &KEY_B, &KEY_A);
    block_on(async {
        tx.write_all(msg).await.expect("write to memory");
        tx.flush().await.expect("flush to memory");
    });
    drop(tx);
    wire
}

fn records(c: &mut Criterion) {
    let msg = message();
    let wire = sealed(&msg);
    let mut group = c.benchmark_group("noise");
    group.throughput(Throughput::Bytes(MAP_BYTES as u64));
    group.bench_function("seal_1_1_MB", |b| {
        b.iter(|| {
            let mut tx = NoiseStream::new(tokio::io::sink(), &KEY_B, &KEY_A);
            block_on(async {
                tx.write_all(black_box(&msg)).await.expect("write to sink");
                tx.flush().await.expect("flush to sink");
            })
        })
    });
    group.bench_function("open_1_1_MB", |b| {
        let mut out = vec![0u8; MAP_BYTES];
        b.iter(|| {
            let mut rx = NoiseStream::new(black_box(&wire[..]), &KEY_A, &KEY_B);
            block_on(rx.read_exact(&mut out)).expect("records open");
            black_box(out[MAP_BYTES - 1])
        })
    });
    group.finish();
}

/// A client's initiation to the server key `server`, as Tailscale clients frame it.
fn initiation(server: &PrivateKey) -> Initiation {
    const VERSION: u16 = 130;
    let params = "Noise_IK_25519_ChaChaPoly_BLAKE2s".parse().expect("a Noise protocol name");
    let prologue = format!("Tailscale Control Protocol v{VERSION}");
    let client = PrivateKey::generate();
    let server_public = server.public();
    let mut hs = snow::Builder::new(params)
        .local_private_key(&client.0)
        .and_then(|b| b.remote_public_key(&server_public))
        .and_then(|b| b.prologue(prologue.as_bytes()))
        .and_then(|b| b.build_initiator())
        .expect("an initiator");
    let mut msg = [0u8; 96];
    hs.write_message(&[], &mut msg).expect("an initiation");
    let mut raw = VERSION.to_be_bytes().to_vec();
    raw.push(0x01);
    raw.extend_from_slice(&96u16.to_be_bytes());
    raw.extend_from_slice(&msg);
    Initiation::parse(&raw).expect("a well-formed initiation")
}

fn handshake(c: &mut Criterion) {
    let server = PrivateKey::generate();
    let init = initiation(&server);
    c.bench_function("noise/accept_handshake", |b| b.iter(|| accept(&server, black_box(&init)).expect("accepted")));
}

criterion_group!(benches, records, handshake);
criterion_main!(benches);
