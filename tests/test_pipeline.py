"""Several requests in flight (docs/protocol.md, "Sequence numbers" and "Several requests in flight"): the
board's replay store of depth 4, and the host's go-back-N pipeline through a line that damages, drops,
duplicates and loses frames, on the host board and under QEMU."""
import re
import time

import pytest
from repo import ROOT

from mcu_train.link import protocol
from mcu_train.boards import get_board
from mcu_train.boards.runner import session
from mcu_train.boards.selftest import exchange, run_pipelined_pings
from mcu_train.link import Pipeline
from mcu_train.link.protocol import REPLY, ErrorInfo, Msg, Reason, encode_frame
from mcu_train.resources import FIRMWARE_DIR

HOST = get_board("host")


def test_replay_depth_matches_doc_and_firmware():
    doc = (ROOT / "docs" / "protocol.md").read_text()
    header = (FIRMWARE_DIR / "protocol.h").read_text()
    assert int(re.search(r"MT_REPLAY_DEPTH (\d+)", header).group(1)) == protocol.REPLAY_DEPTH == 4
    assert int(re.search(r"MT_REPLAY_SHORT_PAYLOAD (\d+)", header).group(1)) == protocol.REPLAY_SHORT_PAYLOAD == 48
    assert "**3 requests accepted before the last one** (replay depth 4)" in doc
    assert "at most **48 bytes**" in doc


def _replies(frames):
    return [(f.seq, f.payload) for f in frames if f.type == Msg.PING | REPLY]


def test_board_replays_the_last_four_short_replies(firmware):
    with session(HOST, firmware("host").elf) as (running, link):
        base = link.next_seq
        pings = [bytes([i + 1]) * 8 for i in range(5)]
        frames = [encode_frame(Msg.PING, base + i, p) for i, p in enumerate(pings)]
        got = exchange(link, b"".join(frames))  # five in flight at once: all answered in order
        assert _replies(got) == [(base + i, p) for i, p in enumerate(pings)]
        link.next_seq = base + 5
        before = link.link_stats()
        # The stats request was accepted too: the last four are now base+2, base+3, base+4 and the stats.
        got = exchange(link, frames[2] + frames[3] + frames[4])
        assert _replies(got) == [(base + i, pings[i]) for i in (2, 3, 4)]
        got = exchange(link, frames[1])  # five back: no longer stored
        info = ErrorInfo.unpack(got[0].payload)
        assert got[0].type == Msg.ERROR and info.reason == Reason.OUT_OF_ORDER and info.expected_seq == base + 6
        after = link.link_stats()
        assert after["replayed"] == before["replayed"] + 3
        assert after["frames_ok"] == before["frames_ok"] + 1  # only the second LINK_STATS ran


def test_long_replies_are_replayed_only_when_last(firmware):
    with session(HOST, firmware("host").elf) as (running, link):
        base = link.next_seq
        long, short = bytes(range(1, 101)), b"s" * 48
        frames = [encode_frame(Msg.PING, base, long), encode_frame(Msg.PING, base + 1, short)]
        exchange(link, b"".join(frames))
        link.next_seq = base + 2
        got = exchange(link, frames[0])  # a 100-byte reply, no longer the last: not stored
        assert ErrorInfo.unpack(got[0].payload).reason == Reason.OUT_OF_ORDER
        got = exchange(link, frames[1])  # 48 bytes: stored
        assert _replies(got) == [(base + 1, short)]


def test_hello_forgets_stored_replies(firmware):
    with session(HOST, firmware("host").elf) as (running, link):
        base = link.next_seq
        ping = encode_frame(Msg.PING, base, b"before")
        exchange(link, ping)
        link.next_seq = base + 1
        link.request(Msg.HELLO)
        got = exchange(link, ping)
        assert ErrorInfo.unpack(got[0].payload).reason == Reason.OUT_OF_ORDER


def test_pipeline_refuses_a_window_beyond_the_replay_depth(firmware):
    with session(HOST, firmware("host").elf) as (running, link):
        with pytest.raises(ValueError, match="replays at most 4"):
            Pipeline(link, window=5)
        pipe = Pipeline(link, window=2)
        pipe.send(Msg.PING, b"a", tag=0)
        pipe.send(Msg.PING, b"b", tag=1)
        assert pipe.full()
        assert pipe.drain() == [(0, b"a"), (1, b"b")]
        assert link.ping(b"plain request after the pipeline") == b"plain request after the pipeline"


def test_pipeline_raises_request_errors_in_turn(firmware):
    with session(HOST, firmware("host").elf) as (running, link):
        pipe = Pipeline(link)
        pipe.send(Msg.PING, b"ok", tag="first")
        pipe.send(0x55, b"", tag="unknown")
        pipe.send(Msg.PING, b"after", tag="third")
        done = []
        with pytest.raises(Exception, match="UNKNOWN_TYPE"):
            while len(pipe):
                done += pipe.poll()
        assert done == [("first", b"ok")]


@pytest.mark.parametrize("seed", range(4))
def test_pipelined_pings_through_a_faulty_line_host(firmware, seed):
    with session(HOST, firmware("host").elf) as (running, link):
        clean = run_pipelined_pings(link, 200, seed)
        assert clean.ok, clean.detail
        check = run_pipelined_pings(link, 300, seed, faults=True)
        assert check.ok, check.detail


def test_pipeline_times_out_on_a_frozen_board(firmware):
    import os
    import signal
    with session(HOST, firmware("host").elf) as (running, link):
        pipe = Pipeline(link, timeout=0.3, retries=2)
        os.kill(running.pid, signal.SIGSTOP)
        try:
            pipe.send(Msg.PING, b"x")
            t0 = time.monotonic()
            with pytest.raises(Exception, match="no reply to PING"):
                pipe.drain()
            assert time.monotonic() - t0 < 1.5
        finally:
            os.kill(running.pid, signal.SIGCONT)


@pytest.mark.slow
@pytest.mark.qemu
def test_pipelined_pings_through_a_faulty_line_qemu(firmware):
    board = get_board("mps2-an386")
    with session(board, firmware(board.name).elf) as (running, link):
        clean = run_pipelined_pings(link, 300, seed=5)
        assert clean.ok, clean.detail
        check = run_pipelined_pings(link, 300, seed=5, faults=True)
        assert check.ok, check.detail
        assert running.process.poll() is None
