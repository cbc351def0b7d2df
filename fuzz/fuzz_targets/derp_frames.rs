//! Fuzzes DERP framing: frames are taken off the input as the relay takes them off a
//! connection (whole or not yet complete, with the length bound checked), and each known frame
//! type's body is split as the relay splits it. Nothing may panic; a frame that decodes
//! encodes back to the same bytes.
#![no_main]
use bytes::BytesMut;
use headscale::derp::frame::{
    decode_frame, encode_frame, parse_keyed, parse_peer_gone, parse_ping, parse_server_key, ClientInfo,
};
use headscale::derp::FrameType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut src = BytesMut::from(data);
    while let Ok(Some(frame)) = decode_frame(&mut src) {
        let mut again = BytesMut::new();
        encode_frame(&frame, &mut again).expect("a decoded frame encodes");
        assert_eq!(again.len(), frame.encoded_len());
        let Some(kind) = FrameType::from_u8(frame.kind) else { continue };
        match kind {
            FrameType::ServerKey => drop(parse_server_key(&frame.body)),
            FrameType::ClientInfo => drop(ClientInfo::parse(&frame.body)),
            FrameType::SendPacket | FrameType::RecvPacket | FrameType::ForwardPacket => {
                drop(parse_keyed(kind, &frame.body))
            }
            FrameType::PeerGone => drop(parse_peer_gone(&frame.body)),
            FrameType::Ping | FrameType::Pong => drop(parse_ping(kind, &frame.body)),
            _ => {}
        }
    }
});
