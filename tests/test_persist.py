"""The trained state persisted in the board's own flash (firmware/persist.c, PERSIST in docs/protocol.md): a
board restarted without its host restores the newest valid slot, with the same predictions and trainer state;
a write interrupted at any point (the power cut) leaves the previous slot in use. Fast checks on the host board
(its flash is a file), the real check in QEMU (the flash is a file reached through semihosting)."""
import signal
import time

import pytest
import train_helpers as th

from mcu_train.boards import get_board
from mcu_train.boards.runner import session
from mcu_train.link.protocol import Msg
from mcu_train.link.trainer_client import PersistOp, TrainConfig, Trainer

HOST = get_board("host")
QEMU = get_board("mps2-an386")
POWER_CUT = "power cut"


@pytest.fixture(scope="module")
def host_trainer(tmp_path_factory):
    compiled, out, elf = th.compile_trainer(tmp_path_factory.mktemp("persist-host"), HOST, "exits")
    return compiled, th.load_meta(out), elf


@pytest.fixture
def fresh_host(host_trainer):
    """(meta, elf) of the host board with the trainer, its flash never written."""
    compiled, meta, elf = host_trainer
    elf.with_suffix(".flash").unlink(missing_ok=True)
    return meta, elf


def state(trainer, rows):
    """What must survive a reset: the checkpoint image, the CONFIG in force and the predictions."""
    predictions = [(r.exit, r.logits_q.tolist(), r.confidence_q16) for r in map(trainer_classify(trainer), rows)]
    return trainer.checkpoint_get(), trainer.config(), predictions


def trainer_classify(trainer):
    from mcu_train.link.model_client import ModelClient
    client = ModelClient(trainer.link, trainer.meta)
    return client.classify


def train(trainer, rows, labels, mask):
    for row, y, m in zip(rows, labels, mask):
        trainer.train(row, int(y) if m else None)


def wait_for(running, text, timeout=20):
    deadline = time.monotonic() + timeout
    while text not in running.log_tail():
        assert time.monotonic() < deadline, f"no {text!r} from the board: {running.log_tail()}"
        time.sleep(0.02)


def stream(meta, n, start=0):
    rows, y, mask = th.hapt_stream(meta, start + n, person=25, label_fraction=0.3)
    return rows[start:], y[start:], mask[start:]


def test_restart_restores_the_written_state_host(fresh_host):
    meta, elf = fresh_host
    rows, y, mask = stream(meta, 30)
    probe = rows[:6]
    with session(HOST, elf) as (running, link):
        assert not link.hello.restored and link.hello.restored_seq == 0
        trainer = Trainer(link, meta)
        untrained = state(trainer, probe)
        cfg = TrainConfig.default(len(meta["exits"]))
        cfg.lr, cfg.filter_mode, cfg.seed = 0.25, 0, 7  # a CONFIG the board must get back too
        trainer.config(cfg)
        train(trainer, rows, y, mask)
        status = trainer.persist()
        assert (status.seq, status.slot, status.writes, status.last_error) == (1, 0, 1, 0)
        assert status.stored_bytes == 256 + -(-(80 + 12 * 4 + meta["train"]["checkpoint_bytes"]) // 256) * 256
        saved = state(trainer, probe)
        assert saved != untrained
    with session(HOST, elf) as (running, link):  # a new process: only the flash file is left
        assert link.hello.restored and link.hello.restored_seq == 1
        trainer = Trainer(link, meta)
        assert state(trainer, probe) == saved
        assert trainer.config().lr == pytest.approx(0.25) and trainer.stats().windows == 0
        status = trainer.persist(PersistOp.STATUS)
        assert (status.seq, status.restored_seq, status.writes) == (1, 1, 0)
        trainer.persist(PersistOp.FORGET)
    with session(HOST, elf) as (running, link):
        assert not link.hello.restored
        assert state(Trainer(link, meta), probe) == untrained


def test_every_n_trained_windows_host(fresh_host):
    meta, elf = fresh_host
    rows, y, mask = stream(meta, 40)
    with session(HOST, elf) as (running, link):
        trainer = Trainer(link, meta)
        cfg = trainer.config()
        cfg.persist_every = 7
        cfg.pseudo_threshold_q16 = 58982  # pseudo-labels (off by default): enough trained windows
        assert trainer.config(cfg).persist_every == 7
        train(trainer, rows, y, mask)
        trained = trainer.stats().trained
        status = trainer.persist(PersistOp.STATUS)
        assert trained >= 14 and status.writes == trained // 7 and status.seq == status.writes
        assert status.slot == (status.seq - 1) % 2  # slots alternate
        saved = trainer.checkpoint_get() if trained % 7 == 0 else None
    with session(HOST, elf) as (running, link):
        assert link.hello.restored_seq == status.seq
        trainer = Trainer(link, meta)
        assert trainer.config().persist_every == 7  # the CONFIG in force came back with the weights
        if saved:
            assert trainer.checkpoint_get() == saved


@pytest.mark.parametrize("cut_at", ["after erase", "in the payload", "before the header", "inside the header"])
def test_power_cut_mid_write_keeps_the_previous_slot_host(fresh_host, cut_at):
    meta, elf = fresh_host
    rows, y, mask = stream(meta, 24)
    with session(HOST, elf) as (running, link):
        trainer = Trainer(link, meta)
        train(trainer, rows[:12], y[:12], mask[:12])
        first = trainer.persist()
        saved = trainer.checkpoint_get(), trainer.config()
        train(trainer, rows[12:], y[12:], mask[12:])
        payload_end = first.stored_bytes - 256  # programmed before the header page
        halt_after = {"after erase": 0, "in the payload": 5 * 256 + 17, "before the header": payload_end,
                      "inside the header": payload_end + 20}[cut_at]
        trainer.persist(PersistOp.WRITE_AND_HALT, halt_after)
        wait_for(running, POWER_CUT)
        running.process.send_signal(signal.SIGKILL)
        running.process.wait()
    with session(HOST, elf) as (running, link):
        assert link.hello.restored_seq == 1
        trainer = Trainer(link, meta)
        assert (trainer.checkpoint_get(), trainer.config()) == saved
        assert trainer.persist().seq == 2  # the torn slot is written again


def test_a_damaged_slot_is_skipped_host(fresh_host):
    meta, elf = fresh_host
    rows, y, mask = stream(meta, 16)
    with session(HOST, elf) as (running, link):
        trainer = Trainer(link, meta)
        train(trainer, rows[:8], y[:8], mask[:8])
        trainer.persist()
        older = trainer.checkpoint_get()
        train(trainer, rows[8:], y[8:], mask[8:])
        status = trainer.persist()
        assert status.slot == 1
    flash = bytearray(elf.with_suffix(".flash").read_bytes())
    flash[status.slot_bytes + 256 + 1000] ^= 0x40  # one bit of slot 1's payload
    elf.with_suffix(".flash").write_bytes(bytes(flash))
    with session(HOST, elf) as (running, link):
        assert link.hello.restored_seq == 1
        assert Trainer(link, meta).checkpoint_get() == older


def test_persist_payload_is_checked_host(fresh_host):
    meta, elf = fresh_host
    with session(HOST, elf) as (running, link):
        for bad in (b"", b"\x04", b"\x01\x00", b"\x03"):
            with pytest.raises(Exception, match="BAD_PAYLOAD"):
                link.request(Msg.PERSIST, bad)


@pytest.mark.slow
@pytest.mark.qemu
def test_qemu_restart_and_power_cut(tmp_path):
    """Train in QEMU (a write every 10 trained windows, then one on request), kill QEMU, boot again: the same
    predictions and trainer state without any host checkpoint. Then a write cut in the middle (QEMU killed
    while the board waits, halted, after the marker): the board boots on the previous slot."""
    compiled, out, elf = th.compile_trainer(tmp_path, QEMU, "exits")
    meta = th.load_meta(out)
    rows, y, mask = stream(meta, 36)
    probe = rows[:4]
    with session(QEMU, elf) as (running, link):
        trainer = Trainer(link, meta)
        cfg = trainer.config()
        cfg.persist_every = 10
        trainer.config(cfg)
        train(trainer, rows[:24], y[:24], mask[:24])
        status = trainer.persist()
        assert status.writes == trainer.stats().trained // 10 + 1 and status.last_error == 0
        saved = state(trainer, probe)
        running.process.send_signal(signal.SIGKILL)
        running.process.wait()
    with session(QEMU, elf) as (running, link):
        assert link.hello.restored_seq == status.seq
        trainer = Trainer(link, meta)
        assert state(trainer, probe) == saved
        train(trainer, rows[24:], y[24:], mask[24:])
        trainer.persist(PersistOp.WRITE_AND_HALT, status.stored_bytes // 2)
        wait_for(running, POWER_CUT)
        running.process.send_signal(signal.SIGKILL)
        running.process.wait()
    with session(QEMU, elf) as (running, link):
        assert link.hello.restored_seq == status.seq
        assert state(Trainer(link, meta), probe) == saved
