#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpus (seeds/<target>/): small, well-formed inputs of each
format, so that the fuzzer starts from real requests, frames, policies and configurations
rather than from nothing. Policies are taken from the conformance corpus in testdata/.
Run from anywhere: python3 fuzz/seeds/make.py"""
import glob
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def h2_frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


# HPACK: :method GET (static 2), :scheme http (6), :path / (4), :authority "localhost" (literal,
# name index 1), then a POST (static 3) to a literal path.
GET = bytes([0x82, 0x86, 0x84, 0x41, 9]) + b"localhost"
POST = bytes([0x83, 0x86, 0x44, 15]) + b"/machine/map?x" + b"1" + bytes([0x41, 9]) + b"localhost"
SETTINGS = h2_frame(0x4, 0, 0, b"")

write("http2_headers", "get", b"\x00" + GET)
write("http2_headers", "post-split", b"\x03" + POST)
write("http2_connection", "get", SETTINGS + h2_frame(0x1, 0x5, 1, GET))
write("http2_connection", "post-body", SETTINGS + h2_frame(0x1, 0x4, 1, POST) + h2_frame(0x0, 0x1, 1, b'{"Version":130}'))
write("http2_connection", "ping-window", SETTINGS + h2_frame(0x6, 0, 0, b"12345678") + h2_frame(0x8, 0, 0, struct.pack(">I", 1000)))

KEY = "nodekey:" + "11" * 32
write("register_request", "authkey", json.dumps({"Version": 130, "NodeKey": KEY, "Auth": {"AuthKey": "hskey-auth-abc-def"}, "Hostinfo": {"Hostname": "laptop", "OS": "linux"}}))
write("register_request", "followup", json.dumps({"Version": 130, "NodeKey": KEY, "Followup": "http://127.0.0.1:8080/register/abc", "Expiry": "2026-01-01T00:00:00Z"}))
write("map_request", "stream-zstd", json.dumps({"Version": 130, "NodeKey": KEY, "DiscoKey": "discokey:" + "22" * 32, "Stream": True, "Compress": "zstd", "Endpoints": ["192.0.2.1:41641"], "Hostinfo": {"Hostname": "laptop", "RoutableIPs": ["10.0.0.0/24"], "RequestTags": ["tag:a"]}}))
write("map_request", "lite", json.dumps({"Version": 130, "NodeKey": KEY, "OmitPeers": True, "Stream": False, "ReadOnly": False}))

# ts2021: a record (type 4, big-endian length, sealed bytes), and an initiation (version 1,
# type 1, length, 96 bytes of handshake).
write("noise_frames", "record", b"\x04" + struct.pack(">H", 32) + bytes(range(32)))
write("noise_frames", "two-records", (b"\x04" + struct.pack(">H", 16) + bytes(16)) * 2)
write("noise_handshake", "initiation", struct.pack(">H", 1) + b"\x01" + struct.pack(">H", 96) + bytes(range(96)))

# DERP: ServerKey (magic + key), SendPacket (key + payload), Ping, PeerGone.
MAGIC = "DERP🔑".encode()
def derp(kind, body):
    return bytes([kind]) + struct.pack(">I", len(body)) + body
write("derp_frames", "server-key", derp(0x01, MAGIC + bytes(32)))
write("derp_frames", "send-ping-gone", derp(0x04, bytes(32) + b"hello") + derp(0x12, b"12345678") + derp(0x08, bytes(32) + b"\x00"))

write("hujson", "comments", '// a policy\n{\n  /* groups */ "groups": {"group:a": ["a@example.com",],},\n  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]},],\n}\n')
with open(os.path.join(ROOT, "config-example.yaml")) as f:
    write("config", "example", f.read())
write("config", "minimal", "server_url: http://127.0.0.1:8080\nlisten_addr: 127.0.0.1:8080\ndns:\n  base_domain: example.net\n")

policies = sorted(glob.glob(os.path.join(ROOT, "testdata/compat/tailscale-saas/*/*.json")))
for path in policies[:: max(1, len(policies) // 24)]:
    with open(path) as f:
        case = json.load(f)
    policy = (case.get("input") or {}).get("full_policy")
    if isinstance(policy, str) and policy:
        name = os.path.splitext(os.path.basename(path))[0]
        write("policy", name, policy)
        write("hujson", name, policy)
