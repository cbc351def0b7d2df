//! The responder side of the ts2021 Noise IK handshake: parse the client's initiation (sent in
//! the `X-Tailscale-Handshake` header), answer it, and derive the record keys.

use snow::params::NoiseParams;

use super::NoiseError;
use crate::tailcfg::{MachineKey, PrivateKey, MIN_CAPABILITY_VERSION};

const PROTOCOL: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
const MSG_INITIATION: u8 = 0x01;
const MSG_RESPONSE: u8 = 0x02;
const IK_MSG1_LEN: usize = 96;
/// Header length of an initiation: version (2) · type (1) · length (2) · Noise message (96).
pub const INITIATION_LEN: usize = 5 + IK_MSG1_LEN;

/// A parsed initiation.
#[derive(Debug, Clone)]
pub struct Initiation {
    /// The client's capability version; it also names the prologue.
    pub version: u16,
    msg: [u8; IK_MSG1_LEN],
}

impl Initiation {
    /// Parses the 101 raw bytes of an initiation.
    pub fn parse(raw: &[u8]) -> Result<Initiation, NoiseError> {
        if raw.len() != INITIATION_LEN {
            return Err(NoiseError::BadInitiationLength(raw.len()));
        }
        let version = u16::from_be_bytes([raw[0], raw[1]]);
        if raw[2] != MSG_INITIATION {
            return Err(NoiseError::BadMessageType(raw[2]));
        }
        let len = u16::from_be_bytes([raw[3], raw[4]]);
        if len as usize != IK_MSG1_LEN {
            return Err(NoiseError::BadPayloadLength(len));
        }
        if version < MIN_CAPABILITY_VERSION {
            return Err(NoiseError::TooOld(version, MIN_CAPABILITY_VERSION));
        }
        let mut msg = [0u8; IK_MSG1_LEN];
        msg.copy_from_slice(&raw[5..]);
        Ok(Initiation { version, msg })
    }
}

/// A completed handshake: who the client is, what to send back, and the record keys.
pub struct Accepted {
    /// The client's machine key (its Noise static key).
    pub machine_key: MachineKey,
    /// The client's capability version.
    pub version: u16,
    /// The response message, to write right after the `101 Switching Protocols`.
    pub response: Vec<u8>,
    /// Key for records the client sends.
    pub rx_key: [u8; 32],
    /// Key for records the server sends.
    pub tx_key: [u8; 32],
}

/// Answers an initiation with the server's Noise key.
pub fn accept(server_key: &PrivateKey, init: &Initiation) -> Result<Accepted, NoiseError> {
    let params: NoiseParams = PROTOCOL.parse().expect("the protocol name is valid");
    let prologue = format!("Tailscale Control Protocol v{}", init.version);
    let mut hs = snow::Builder::with_resolver(params, crate::x25519::resolver())
        .local_private_key(&server_key.0)?
        .prologue(prologue.as_bytes())?
        .build_responder()?;
    let mut payload = [0u8; IK_MSG1_LEN];
    hs.read_message(&init.msg, &mut payload)?;
    let mut msg = [0u8; 64];
    let n = hs.write_message(&[], &mut msg)?;
    let remote = hs.get_remote_static().ok_or(snow::Error::Input)?;
    let machine_key = MachineKey(remote.try_into().map_err(|_| snow::Error::Input)?);
    let (initiator_to_responder, responder_to_initiator) = hs.dangerously_get_raw_split();
    let mut response = Vec::with_capacity(3 + n);
    response.push(MSG_RESPONSE);
    response.extend_from_slice(&(n as u16).to_be_bytes());
    response.extend_from_slice(&msg[..n]);
    Ok(Accepted {
        machine_key,
        version: init.version,
        response,
        rx_key: initiator_to_responder,
        tx_key: responder_to_initiator,
    })
}

/// The optional early payload the server sends first inside the channel:
/// `FF FF FF 'T' 'S'` · u32 BE length · JSON naming a node-key challenge.
pub fn early_payload() -> Vec<u8> {
    let challenge = PrivateKey::generate().public();
    let json = format!(r#"{{"nodeKeyChallenge":"chalpub:{}"}}"#, hex::encode(challenge));
    let mut out = b"\xff\xff\xffTS".to_vec();
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(json.as_bytes());
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a client initiation the way Tailscale clients do; returns it with the client's
    /// handshake state for finishing.
    pub fn client_initiation(
        client: &PrivateKey,
        server_pub: &[u8; 32],
        version: u16,
    ) -> (Vec<u8>, snow::HandshakeState) {
        let params: NoiseParams = PROTOCOL.parse().unwrap();
        let prologue = format!("Tailscale Control Protocol v{version}");
        let mut hs = snow::Builder::new(params)
            .local_private_key(&client.0)
            .unwrap()
            .remote_public_key(server_pub)
            .unwrap()
            .prologue(prologue.as_bytes())
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut msg = [0u8; 96];
        let n = hs.write_message(&[], &mut msg).unwrap();
        assert_eq!(n, 96);
        let mut raw = version.to_be_bytes().to_vec();
        raw.push(MSG_INITIATION);
        raw.extend_from_slice(&96u16.to_be_bytes());
        raw.extend_from_slice(&msg);
        (raw, hs)
    }

    #[test]
    fn completes_with_a_client_and_agrees_on_keys() {
        let server = PrivateKey::generate();
        let client = PrivateKey::generate();
        let (raw, mut hs) = client_initiation(&client, &server.public(), 130);
        let init = Initiation::parse(&raw).unwrap();
        let acc = accept(&server, &init).unwrap();
        assert_eq!(acc.machine_key.0, client.public());
        assert_eq!(acc.response.len(), 51);
        assert_eq!(acc.response[0], 0x02);
        let mut buf = [0u8; 64];
        hs.read_message(&acc.response[3..], &mut buf).unwrap();
        let (c2s, s2c) = hs.dangerously_get_raw_split();
        assert_eq!(c2s, acc.rx_key);
        assert_eq!(s2c, acc.tx_key);
    }

    #[test]
    fn rejects_malformed_initiations() {
        assert!(matches!(Initiation::parse(&[0; 10]), Err(NoiseError::BadInitiationLength(10))));
        let mut raw = vec![0, 130, 0x05, 0, 96];
        raw.extend_from_slice(&[0; 96]);
        assert!(matches!(Initiation::parse(&raw), Err(NoiseError::BadMessageType(5))));
        raw[2] = 1;
        raw[0] = 0;
        raw[1] = 50;
        assert!(matches!(Initiation::parse(&raw), Err(NoiseError::TooOld(50, _))));
        raw[1] = 130;
        let init = Initiation::parse(&raw).unwrap();
        assert!(accept(&PrivateKey::generate(), &init).is_err(), "garbage keys fail the handshake");
    }

    #[test]
    fn early_payload_has_magic_and_length() {
        let p = early_payload();
        assert_eq!(&p[..5], b"\xff\xff\xffTS");
        let len = u32::from_be_bytes(p[5..9].try_into().unwrap()) as usize;
        assert_eq!(len, p.len() - 9);
    }
}
