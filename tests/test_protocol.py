"""Framing and the host link, without a board: COBS, CRC, the frame decoder, timeouts over loop://."""
import random
import time

import pytest

from mcu_train.errors import BoardTimeout, McuTrainError
from mcu_train.link import Link, open_serial
from mcu_train.link.protocol import (MAX_ENCODED, MAX_PAYLOAD, Frame, FrameDecoder, Hello, Msg, cobs_decode,
                                     cobs_encode, crc16_ccitt, encode_body, encode_frame)


def test_crc_check_value():
    assert crc16_ccitt(b"123456789") == 0x29B1


@pytest.mark.parametrize("body", [b"", b"\x00", b"\x00\x00", b"\x11\x00", b"\x01" * 253, b"\x01" * 254,
                                  b"\x01" * 255, b"\x01" * 254 + b"\x00", b"\x00" + b"\x02" * 600 + b"\x00"])
def test_cobs_edge_cases_round_trip(body):
    encoded = cobs_encode(body)
    assert 0 not in encoded
    assert len(encoded) <= len(body) + len(body) // 254 + 1
    assert cobs_decode(encoded) == body


def test_cobs_random_round_trip():
    rng = random.Random(1)
    for _ in range(500):
        body = bytes(rng.choice([0, 1, 255, rng.randrange(256)]) for _ in range(rng.randrange(1200)))
        assert cobs_decode(cobs_encode(body)) == body


def test_cobs_rejects_invalid():
    assert cobs_decode(b"\x05\x01\x02") is None  # code runs past the end
    assert cobs_decode(b"\x03\x00\x01") is None  # a zero inside a block


def test_decoder_reassembles_split_frames_and_skips_damage():
    frames = [encode_frame(Msg.PING, i, bytes([i]) * i) for i in range(1, 6)]
    damaged = bytearray(frames[2])
    damaged[4] ^= 0x10
    stream = frames[0] + frames[1] + b"\x13\x37garbage" + bytes(damaged) + frames[3] + frames[4]
    dec = FrameDecoder()
    got = []
    for i in range(0, len(stream), 3):  # three bytes at a time
        got += dec.feed(stream[i:i + 3])
    assert [f.seq for f in got] == [1, 2, 4, 5]
    assert got[0] == Frame(Msg.PING, 1, b"\x01")
    assert dec.dropped == 2


def test_decoder_drops_oversize_and_recovers():
    dec = FrameDecoder()
    assert dec.feed(b"\x00" + b"\x01" * (MAX_ENCODED + 10) + b"\x00") == []
    assert dec.dropped == 1
    assert dec.feed(encode_frame(Msg.PING, 7, b"ok")) == [Frame(Msg.PING, 7, b"ok")]


def test_maximum_payload_enforced_on_host():
    encode_frame(Msg.PING, 0, bytes(MAX_PAYLOAD))
    with pytest.raises(ValueError, match="exceeds the protocol maximum"):
        encode_frame(Msg.PING, 0, bytes(MAX_PAYLOAD + 1))
    link = Link(open_serial("loop://"))
    with pytest.raises(McuTrainError, match="exceeds the board's maximum"):  # one clear line, no traceback
        link.ping(bytes(MAX_PAYLOAD + 1))


def test_length_field_must_match():
    body = encode_body(Msg.PING, 0, b"abc", length=4)
    assert FrameDecoder().feed(b"\x00" + cobs_encode(body) + b"\x00") == []


def test_hello_pack_unpack():
    hello = Hello(1, True, True, 1024, 1_000_000_000, "mps2-an386", "0.1.0", "instructions", "beef")
    assert Hello.unpack(hello.pack()) == hello


def test_silent_line_times_out_within_stated_time():
    """loop:// echoes our own requests back; nothing ever answers them."""
    link = Link(open_serial("loop://"), timeout=0.2, retries=2)
    t0 = time.monotonic()
    with pytest.raises(BoardTimeout, match="no reply to PING"):
        link.ping(b"hi")
    assert 0.55 < time.monotonic() - t0 < 1.5  # 3 attempts of 0.2 s


def test_socket_keeps_what_arrives_while_opening(monkeypatch):
    """An emulator starts the firmware when it accepts the connection: bytes sent before open_serial returns
    are kept (pyserial's own open() discards them; here opening is made slow so they are always there)."""
    import socket
    import threading

    from serial.urlhandler import protocol_socket
    server = socket.create_server(("127.0.0.1", 0))
    sent = threading.Event()

    def greet():
        conn, _ = server.accept()
        conn.sendall(b"R 0 0 12345678\n")
        sent.set()
        time.sleep(0.5)
        conn.close()

    threading.Thread(target=greet, daemon=True).start()
    slow = protocol_socket.Serial._reconfigure_port
    monkeypatch.setattr(protocol_socket.Serial, "_reconfigure_port", lambda self: (sent.wait(2), slow(self)))
    ser = open_serial(f"socket://127.0.0.1:{server.getsockname()[1]}", timeout=0.5)
    try:
        assert ser.read(15) == b"R 0 0 12345678\n"
    finally:
        ser.close()
        server.close()
