"""docs/protocol.md is the specification: its tables must match the host code and the firmware header,
and every message type it describes must round-trip through real firmware (the host board)."""
import re
import struct
from dataclasses import fields

import numpy as np
import pytest
from repo import ROOT

from mcu_train.boards import get_board
from mcu_train.boards.runner import session
from mcu_train.link import protocol
from mcu_train.link.protocol import (REPLY, ErrorInfo, ExitInfo, Hello, InputChunkCheck, LabelCheck, ModelInfo, Msg,
                                     Reason, encode_frame)
from mcu_train.resources import FIRMWARE_DIR

DOC = (ROOT / "docs" / "protocol.md").read_text()
HEADER_C = (FIRMWARE_DIR / "protocol.h").read_text()
DOC_TEXT = " ".join(DOC.split())  # the prose with its line breaks undone, for phrases


def says(phrase):
    return phrase in DOC_TEXT


def doc_tables(first_header):
    """Each markdown table whose header row starts with `first_header`, as lists of row cells."""
    lines = DOC.splitlines()
    tables = []
    for i, line in enumerate(lines[:-1]):
        if line.startswith(f"| {first_header} |") and lines[i + 1].startswith("|---"):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip("|").split("|")])
            tables.append(rows)
    return tables


def doc_table(first_header):
    (table,) = doc_tables(first_header)
    return table


def c_value(name):
    m = re.search(rf"\b{name}\s*=?\s*(0x[0-9A-Fa-f]+|\d+)", HEADER_C)
    assert m, f"{name} not in firmware/protocol.h"
    return int(m.group(1), 0)


def test_message_table_matches_code():
    rows = doc_table("message")
    assert {r[0] for r in rows} == {m.name for m in Msg}
    for name, request, reply, *_ in rows:
        if name == "ERROR":
            assert int(reply, 16) == Msg.ERROR == c_value("MSG_ERROR")
        elif request == "-":  # sent unsolicited by the board (REPORT)
            assert int(reply, 16) == Msg[name] | REPLY == c_value(f"MSG_{name}") | REPLY
        else:
            assert int(request, 16) == Msg[name] == c_value(f"MSG_{name}")
            assert int(reply, 16) == Msg[name] | REPLY


def test_reason_table_matches_code():
    rows = doc_table("reason")
    assert {r[0] for r in rows} == {r.name for r in Reason}
    for name, code, kind, *_ in rows:
        assert int(code) == Reason[name] == c_value(f"ERR_{name}")
        assert (kind == "link") == (Reason[name] in protocol.LINK_REASONS)


def test_limits_match():
    assert "Maximum payload: 1024 bytes" in DOC
    assert protocol.MAX_PAYLOAD == c_value("MT_MAX_PAYLOAD") == 1024
    assert protocol.MAX_BODY == 1031 and protocol.MAX_ENCODED == 1036
    assert protocol.PROTOCOL_VERSION == c_value("MT_PROTOCOL_VERSION")


def test_payload_field_tables_match():
    (hello, stats, model_info, classify_req, classify_reply, put_input_req, put_input_reply, *training,
     error) = ([row[0] for row in table] for table in doc_tables("field"))
    check_training_tables(*training)
    assert model_info == [f.name for f in fields(ModelInfo)][:4] + ["flags", "num_exits", "exits"]
    assert [r[0] for r in doc_table("model exit field")] == [f.name for f in fields(ExitInfo)]
    assert classify_req == ["force_exit", "num_thresholds", "thresholds", "input"]
    assert classify_reply == ["exit", "num_classes", "confidence", "cost", "logits"]
    assert put_input_req == ["offset", "data"] and put_input_reply == ["staged"]
    assert hello == ["protocol_version", "flags", "max_payload", "counter_hz", "board", "firmware_version",
                     "counter_unit", "model_hash", "restored_seq"]
    assert hello == list(Hello.__dataclass_fields__)[:1] + ["flags"] + list(Hello.__dataclass_fields__)[3:]
    assert stats == [*protocol.LINK_STATS_FIELDS, *protocol.LINK_STATS_TAIL]
    assert error == ["reason", "expected_seq", "detail"] == list(ErrorInfo.__dataclass_fields__)


def check_training_tables(train_req, train_reply, config, train_stats, get_req, get_reply, put_req, put_reply):
    from mcu_train.link.trainer_client import ExitStats, Outcome, TrainConfig, TrainStats, TrainStep
    assert train_req == ["flags", "label", "input"]
    assert train_reply == [f.name for f in fields(TrainStep)]
    assert config == [f.name for f in fields(TrainConfig)][:-3] + ["thresholds"]
    assert train_stats == [f.name for f in fields(TrainStats)][:-1] + ["num_exits", "exits"]
    assert [r[0] for r in doc_table("exit field")] == [f.name for f in fields(ExitStats)]
    assert {r[0]: int(r[1]) for r in doc_table("outcome")} == {o.name: o.value for o in Outcome}
    assert get_req == ["offset", "max_bytes"] and get_reply == ["total", "offset", "data"]
    assert put_req == ["total", "offset", "data"] and put_reply == ["staged", "committed"]


# The doc's field types -> struct codes; a row of variable size (a count x a record, text, bytes) ends the
# fixed part of a table.
STRUCT_CODES = {"u8": "B", "i8": "b", "u16": "H", "u32": "I", "u64": "Q", "f32": "f"}


def fixed_layout(table):
    """The struct codes of a doc table's rows, up to the first row of variable size."""
    codes = ""
    for row in table:
        m = re.fullmatch(r"(?:(\d+) x )?(\w+)", row[1])
        if not m or m.group(2) not in STRUCT_CODES:
            break
        codes += STRUCT_CODES[m.group(2)] * int(m.group(1) or 1)
    return codes


def expanded(fmt):
    return "".join(code * int(n or 1) for n, code in re.findall(r"(\d*)([a-zA-Z?])", fmt.lstrip("<")))


def test_payload_layouts_match_the_code():
    """Every fixed-size layout in the doc, field type by field type, is the struct the host packs with."""
    from codegen.trainer import CHECKPOINT_HEADER_BYTES, EXIT_STATE_WORDS, FILTER_STATE_WORDS
    from mcu_train.link.trainer_client import ExitStats, TrainConfig, TrainStats, TrainStep
    (hello, link_stats, model_info, _, classify_reply, input_put, input_put_reply, _, train_reply, config, stats,
     get_req, _, put_req, _, error) = doc_tables("field")
    assert fixed_layout(hello) == "BBHI"
    assert fixed_layout(link_stats) == expanded(protocol.LINK_STATS.format)
    assert fixed_layout(model_info) == expanded(ModelInfo.HEAD.format)
    assert fixed_layout(doc_table("model exit field")) == expanded(ModelInfo.EXIT.format)
    assert says("19 bytes, then 7 per exit") and (ModelInfo.HEAD.size, ModelInfo.EXIT.size) == (19, 7)
    assert fixed_layout(classify_reply) == "BBII"
    assert fixed_layout(input_put) == expanded(protocol.INPUT_PUT_HEAD.format) and fixed_layout(input_put_reply) == "I"
    assert fixed_layout(train_reply) == expanded(TrainStep.STRUCT.format)
    assert says("37 bytes, the fields in this order") and TrainStep.STRUCT.size == 37
    assert fixed_layout(config) == expanded(TrainConfig.HEAD.format)
    assert says("The payload is 88 bytes, then 12 per exit") and TrainConfig.HEAD.size == 88
    assert len(TrainConfig.default(3).pack()) == 88 + 12 * 3
    assert fixed_layout(stats) == expanded(TrainStats.HEAD.format)
    assert fixed_layout(doc_table("exit field")) == expanded(ExitStats.STRUCT.format)
    assert fixed_layout(get_req) == "IH" and fixed_layout(put_req) == "II"
    assert fixed_layout(error) == expanded(ErrorInfo.STRUCT.format)
    # The checkpoint image: a 32-byte header, then the parameters, the state words and the CRC.
    header = [n for name, size, _ in doc_table("part") if name not in ("params", "state", "memory", "crc")
              for n in size.split("+")]
    assert sum(map(int, header)) == CHECKPOINT_HEADER_BYTES == 32
    assert len(fixed_layout(doc_table("state word"))) == FILTER_STATE_WORDS and says("per exit: threshold, agreement")
    assert EXIT_STATE_WORDS == 5 and says("bytes of the state (32 + 20 x num_exits)")


def test_detail_tables_match_the_code():
    from codegen.train_reference import CHECKPOINT_REASONS
    checkpoint_h = (FIRMWARE_DIR / "checkpoint.h").read_text()
    checks = {int(r[0]) for r in doc_table("detail")}
    assert checks == set(CHECKPOINT_REASONS) == set(range(1, 8))
    assert checks == {int(v) for v in re.findall(r"CKPT_BAD_\w+ = (\d+)", checkpoint_h)}
    trainer_h = (FIRMWARE_DIR / "trainer.h").read_text()
    assert {int(r[0]) for r in doc_table("label detail")} == {c.value for c in LabelCheck} == {
        int(v) for v in re.findall(r"TR_LABEL_(?:NOT_PENDING|OTHER_WINDOW) = (\d+)", trainer_h)}
    assert [r[0] for r in doc_table("label field")] == ["label", "age"]
    assert fixed_layout(doc_table("label field")) == "BI"
    chunk = {int(r[0]) for r in doc_table("chunk detail")}
    assert chunk == {c.value for c in InputChunkCheck} == {c_value("INPUT_CHUNK_BAD_OFFSET"),
                                                            c_value("INPUT_CHUNK_PAST_END")}
    assert all(row[5] for row in doc_table("reason"))  # every reason says what its detail is
    assert protocol.MODEL_INFO_FLAG_TRAINER == c_value("MODEL_INFO_FLAG_TRAINER") == 1
    assert says("bit 0: a trainer is compiled in")


def test_link_speed_and_chunk_sizes_match_the_code():
    from mcu_train.link.model_client import input_requests
    from mcu_train.boards import list_boards
    transport = (ROOT / "mcu_train" / "link" / "transport.py").read_text()
    drivers = [p.read_text() for p in (ROOT / "boards" / "common").glob("uart_*.c") if p.name != "uart_rx.c"]
    assert "baudrate=115200" in transport and all(b.baud == 115200 for b in list_boards())
    assert all("/ MT_UART_BAUD" in d or "BAUD_115200;" in d for d in drivers)
    assert says("**115,200 baud**")
    assert round((770 + 2) * 10 / 115200 * 1000) == 67 and says("a 770-byte frame ~67 ms")
    chunk = protocol.MAX_PAYLOAD - protocol.INPUT_PUT_HEAD.size
    assert says("so at most 1,020)") and chunk == 1020
    puts = input_requests(Msg.TRAIN, b"\0\0", np.zeros(27_648, np.int8), protocol.MAX_PAYLOAD)[:-1]
    assert len(puts) == 28 and says("27,648-byte input staged in 28 INPUT_PUT chunks")
    assert protocol.REPLAY_SHORT_PAYLOAD - 10 == 38  # a CLASSIFY reply: 10 bytes and the logits
    assert says("CLASSIFY replies when the exit has at most 38 classes")


def test_persist_tables_match():
    from dataclasses import fields

    from mcu_train.link.trainer_client import PersistOp, PersistStatus
    assert [r[0] for r in doc_table("persist request field")] == ["op", "halt_after"]
    assert [r[0] for r in doc_table("persist reply field")] == [f.name for f in fields(PersistStatus)]
    ops = doc_table("persist request field")[0][2]
    assert all(f"{getattr(PersistOp, name)}: " in ops for name in ("STATUS", "WRITE", "FORGET", "WRITE_AND_HALT"))
    assert [int(r[0]) for r in doc_table("storage detail")] == list(range(1, 6))
    assert c_value("HELLO_FLAG_RESTORED") == protocol.HELLO_FLAG_RESTORED == 4


@pytest.fixture(scope="module")
def host_link(firmware):
    with session(get_board("host"), firmware("host").elf) as (running, link):
        yield link


def test_every_message_round_trips_on_firmware(host_link):
    link = host_link
    # HELLO: the documented layout, field by field.
    raw = link.request(Msg.HELLO)
    version, flags, max_payload, hz = struct.unpack_from("<BBHI", raw)
    hello = Hello.unpack(raw)
    assert (version, max_payload) == (1, 1024) and flags & 1 and not flags & 2
    assert hello.board == "host" and hello.counter_unit == "ns" and hello.counter_hz == hz
    assert hello.model_hash == ""
    assert Hello.unpack(hello.pack()) == hello
    # PING: empty and maximum payloads.
    assert link.ping(b"") == b""
    assert link.ping(bytes(range(256)) * 4) == bytes(range(256)) * 4
    # LINK_STATS: 10 u32, a u64 and a u32.
    raw = link.request(Msg.LINK_STATS)
    assert len(raw) == 4 * len(protocol.LINK_STATS_FIELDS) + 8 + 4
    assert protocol.unpack_link_stats(raw)["frames_ok"] >= 3
    # ERROR: a request of an undocumented type; the frame seq is the request's.
    seq = link.next_seq
    link.next_seq += 1
    link.write(encode_frame(0x42, seq, b""))
    frame = link.read_frame(__import__("time").monotonic() + 2)
    assert frame.type == Msg.ERROR and frame.seq == seq
    info = ErrorInfo.unpack(frame.payload)
    assert info.reason == Reason.UNKNOWN_TYPE and info.detail == 0x42 and info.expected_seq == seq + 1
    assert link.ping(b"after") == b"after"


def test_model_messages_round_trip_on_firmware(tmp_path):
    """CLASSIFY and PROFILE with the documented layouts, on firmware built with a compiled model."""
    import model_zoo
    import numpy as np
    from compiler_helpers import compile_zoo

    from mcu_train.boards.build import build_firmware
    from mcu_train.link.model_client import load_model_meta, to_wire
    host = get_board("host")
    compiled, out = compile_zoo(model_zoo.cnn1d_plain(), tmp_path, host)
    meta = load_model_meta(out)
    row = to_wire(meta, np.zeros((1, *meta["input_shape"][1:]), np.float32))[0]
    with session(host, build_firmware(host, out).elf) as (running, link):
        assert link.hello.model_hash == meta["model_hash"] and len(link.hello.model_hash) == 32
        reply = link.request(Msg.CLASSIFY, struct.pack("<bBI", -1, 1, 65536) + row.tobytes())
        exit_k, n, conf, cost = struct.unpack_from("<BBII", reply)
        assert (exit_k, n, len(reply)) == (0, 3, 10 + 3) and 0 < conf <= 65536 and cost > 0
        ref = compiled.reference.run(row.reshape(meta["input_dims_nhwc"]), [65536])
        assert list(reply[10:]) == list(ref[1].astype(np.uint8)) and conf == ref[2]
        steps = link.request(Msg.PROFILE)
        assert len(steps) == 4 * len(compiled.steps)
        with pytest.raises(Exception, match="BAD_PAYLOAD"):
            link.request(Msg.CLASSIFY, struct.pack("<bB", -1, 0) + row.tobytes()[:-1])
