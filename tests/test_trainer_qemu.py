"""The on-device trainer on the emulated Cortex-M4F board and the FPU-less Cortex-M3 (the issues' acceptance
runs): TRAIN steps on real HAPT windows make the same decisions as the numpy reference and end with the same
weights, and the training peak SRAM (static RAM + stack high-water mark) of the default HAR model with
`--train exits` fits 24 KB (issue 13)."""
import pytest
import train_helpers as th

from codegen.train_reference import TrainerReference
from mcu_train.boards import get_board
from mcu_train.boards.runner import session
from mcu_train.link.trainer_client import Outcome, Trainer
from mcu_train.stream.personalise import peak_sram

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


def train_like_reference(trainer, ref, rows, y, mask):
    """The windows through the board and the reference: the same steps, checkpoint and STATS. Returns the steps."""
    got, want = th.run_both(trainer, ref, rows, y, mask)
    bad = th.first_mismatch(got, want)
    assert bad is None, f"window {bad[0]}: board {bad[1]} != reference {bad[2]}"
    assert trainer.checkpoint_get() == ref.checkpoint()
    assert trainer.stats() == ref.stats()
    return got


@pytest.mark.parametrize("name,steps", [("mps2-an386", 300), ("lm3s6965evb", 40)])
def test_trainer_matches_reference_and_fits(tmp_path, name, steps):
    board = get_board(name)
    compiled, out, elf = th.compile_trainer(tmp_path, board, "exits")
    meta = th.load_meta(out)
    ref = TrainerReference(compiled)
    rows, y, mask = th.hapt_stream(meta, steps, person=25)
    with session(board, elf) as (running, link):
        got = train_like_reference(Trainer(link, meta), ref, rows, y, mask)
        sram = peak_sram(board, elf, link)
    assert any(s.outcome == Outcome.TRAINED for s in got)
    # Issue 13's target for `--train exits` (24,140 B measured on mps2-an386: docs/RESULTS.md, "Training peak
    # SRAM after the faster kernels").
    assert sram["peak_bytes"] <= 24 * 1024, sram
    assert sram["stack_used_bytes"] > 0 and sram["arena_bytes"] == compiled.arena_bytes


def test_last_block_matches_reference_on_a_dsp_core(tmp_path):
    """`--train exits+last-block` on the Cortex-M4F: the last block's padded 1x5 conv (a full error map, its
    gradient rows through the DSP path) trains to the reference's weights, decisions and counters."""
    board = get_board("mps2-an386")
    compiled, out, elf = th.compile_trainer(tmp_path, board, "exits+last-block")
    meta = th.load_meta(out)
    ref = TrainerReference(compiled)
    rows, y, mask = th.hapt_stream(meta, 120, person=27, label_fraction=0.3, shift=True)
    with session(board, elf) as (running, link):
        got = train_like_reference(Trainer(link, meta), ref, rows, y, mask)
    assert sum(s.outcome == Outcome.TRAINED for s in got) >= 20
