"""The on-device trainer's records as they cross the serial line (docs/protocol.md, docs/training.md): CONFIG
(TrainConfig, whose defaults are the firmware's boot values, compiled into model_train.c), the TRAIN reply
(TrainStep), STATS (TrainStats), and the codes in them. The golden model (codegen.train_reference) and the
host's client (mcu_train.link.trainer_client) both speak in these records, so tests compare them field by field."""
import struct
import zlib
from dataclasses import asdict, dataclass, field, fields
from enum import IntEnum

import numpy as np

from codegen.errors import McuTrainError

NO_CLASS = 0xFF


class Outcome(IntEnum):
    TRAINED = 0  # every trainable exit was updated
    FILTERED = 1  # the instance filter predicted a low loss: no training forward or backward
    NO_TARGET = 2  # no label and the final exit was not confident enough for a pseudo-label
    SATURATED = 3  # too many input samples at the int8 limits: not trained on
    INVALID = 4  # the host flagged non-finite readings: not trained on
    SKIPPED = 5  # some output channels' updates were skipped: a weight or bias would have left its layer's bound
    NONFINITE = 5  # the name SKIPPED had before the bound (an alias)


class FilterMode(IntEnum):
    OFF = 0  # train on every window
    LEARNED = 1  # the self-supervised instance filter decides
    RANDOM = 2  # keep a random filter_keep fraction (the baseline the filter must beat)
    GRADNORM = 3  # keep the windows with the largest gradient-norm bound at exit 0 (Katharopoulos & Fleuret 2018)


class ServeMode(IntEnum):
    AUTO = 0  # do no harm: per exit, whichever of personalised / generic head is more accurate on labels
    PERSONALISED = 1
    GENERIC = 2


# CHECKPOINT_PUT reply: the state after the chunk
PUT_RECEIVING = 0  # more chunks of this pass expected
PUT_COMMITTED = 1  # the second pass is complete: the image replaced the weights and state
PUT_VERIFIED = 2  # the first pass is complete and the image checked out: send it again to commit it
# TRAIN request flags
FLAG_LABEL = 0x01
FLAG_INVALID = 0x02
# TRAIN reply flags
STEP_LABEL = 0x01  # trained on the host's label
STEP_PSEUDO = 0x02  # trained on the final exit's pseudo-label
STEP_EXPLORED = 0x04  # the filter predicted easy, trained anyway (epsilon)
STEP_PREDICTED_HARD = 0x08  # the filter's score reached its cut
STEP_PERSONALISED = 0x10  # the exit taken served its personalised head
STEP_ASKED = 0x20  # the board asks for this window's label (answer with LABEL; docs/protocol.md)
# Active labelling (docs/training.md, "Replay memory and active labels")
ASK_SPACING = 4  # no new label request while an unanswered one is younger than this many windows
ASK_CREDIT_MAX = 2.0  # label credit (label_budget per window) is capped here
ASK_STEP = 0.02  # the cut on the uncertainty score: + 3 steps per request, - 1 per window that could ask
ASK_CUT_START = 0.5


@dataclass
class TrainConfig:
    """Every runtime parameter of the trainer (CONFIG). Defaults are the firmware's boot values, chosen by the
    sweep on the validation people (mcu_train.bench.defaults, docs/training.md)."""
    lr: float = 0.3
    momentum: float = 0.0  # > 0 only on a build compiled with --momentum
    weight_decay: float = 0.0
    clip_norm: float = 0.5  # per output channel: its gradient's L2 norm clipped to this (0: no clipping)
    prune_keep: float = 0.5  # error-map pruning: fraction of output channels kept per conv layer, (0, 1]
    prune_weight_l1: float = 0.0  # channel score = L1(error map) + this * L1(channel's weights)
    prune_dense: int = 0  # 1: prune dense layers' output rows too
    filter_mode: int = FilterMode.LEARNED
    serve_mode: int = ServeMode.AUTO
    adapt_thresholds: int = 1
    pseudo_threshold_q16: int = 65536  # 1.0: final-exit confidence needed for a pseudo-label (1.0: only if certain)
    max_saturated: int = 16  # input samples at -128 or 127 tolerated before a window is not trained on
    dnh_min_labels: int = 4  # labelled windows an exit needs before its personalised head may serve
    seed: int = 1  # instance filter's PRNG (xorshift32); setting CONFIG restarts it from this seed
    filter_keep: float = 0.3  # target fraction of (unlabelled) windows the filter keeps
    filter_epsilon: float = 0.1  # fraction of predicted-easy windows trained anyway
    filter_lr: float = 0.05
    filter_step: float = 0.02  # adaptation step of the loss threshold (relative) and of the score cut
    filter_rate: float = 0.02  # EMA rate of the kept fraction
    dnh_rate: float = 0.02  # EMA rate of the per-exit accuracy on labelled windows
    agree_rate: float = 0.02  # EMA rate of each exit's agreement with the final exit
    agree_target: float = 0.95  # agreement above which an exit's threshold goes down
    threshold_step: float = 0.002
    persist_every: int = 0  # trained windows between writes of the trained state to the board's flash; 0: never
    label_budget: float = 0.1  # fraction of windows the board may ask the label of (STEP_ASKED); 0: never asks
    replays: int = 8  # per labelled example trained on: examples of the replay memory replayed per unit
    thresholds: list = field(default_factory=list)  # per exit (the last is ignored): current threshold
    threshold_min: list = field(default_factory=list)
    threshold_max: list = field(default_factory=list)

    HEAD = struct.Struct("<6f4BIHHI9fIfI")

    @classmethod
    def default(cls, num_exits):
        return cls(thresholds=[0.9] * num_exits, threshold_min=[0.9] * num_exits, threshold_max=[0.95] * num_exits)

    def pack(self):
        head = [getattr(self, f.name) for f in fields(self)[:-3]]
        out = self.HEAD.pack(*head)
        for t, lo, hi in zip(self.thresholds, self.threshold_min, self.threshold_max):
            out += struct.pack("<3f", t, lo, hi)
        return out

    @classmethod
    def unpack(cls, p):
        n = (len(p) - cls.HEAD.size) // 12
        if n < 1 or len(p) != cls.HEAD.size + 12 * n:
            raise McuTrainError(f"CONFIG payload of {len(p)} B")
        values = cls.HEAD.unpack_from(p)
        per_exit = [struct.unpack_from("<3f", p, cls.HEAD.size + 12 * k) for k in range(n)]
        cfg = cls(*values, [e[0] for e in per_exit], [e[1] for e in per_exit], [e[2] for e in per_exit])
        return cfg.rounded()

    def rounded(self):
        """The same config with every float rounded to float32, as the board stores it."""
        d = asdict(self)
        for f in fields(self):
            if f.type in (float, "float"):
                d[f.name] = float(np.float32(d[f.name]))
            elif f.type in (list, "list"):
                d[f.name] = [float(np.float32(v)) for v in d[f.name]]
        return TrainConfig(**d)


@dataclass
class TrainStep:
    """TRAIN reply."""
    outcome: int
    exit: int  # exit taken by the prediction made before training
    prediction: int
    target: int  # class trained on, NO_CLASS when not trained
    flags: int
    confidence_q16: int
    loss: float  # mean cross-entropy of the trained exits' int8 logits (before the update); 0 when not trained
    filter_score: float  # the filter's logistic score (>= 0: predicted high loss); 0 when the filter is off
    cost_inference: int  # cost counter units: the prediction (early-exit forward)
    cost_training: int  # everything after it: rest of the forward, heads, backward, updates, filter
    macs_forward: int  # MACs of personalised heads run only for training (not reused from the prediction)
    macs_backward: int  # MACs executed in the backward pass (after error-map pruning)
    macs_backward_dense: int  # MACs the same backward pass would take without pruning

    STRUCT = struct.Struct("<5BIff5I")

    @classmethod
    def unpack(cls, p):
        return cls(*cls.STRUCT.unpack(p))

    def pack(self):
        return self.STRUCT.pack(*(getattr(self, f.name) for f in fields(self)))

    @property
    def outcome_name(self):
        return Outcome(self.outcome).name

    def decisions(self):
        """What must match the reference exactly (the costs are the board's own)."""
        d = asdict(self)
        d.pop("cost_inference")
        d.pop("cost_training")
        return d


@dataclass
class ExitStats:
    threshold: float
    agreement: float  # moving agreement of the served head with the final exit
    acc_personalised: float  # moving accuracy on labelled windows
    acc_generic: float
    labelled: int
    serving: int  # 1: the personalised head serves, 0: the generic one, 255: not trainable
    STRUCT = struct.Struct("<4fIB")


@dataclass
class TrainStats:
    windows: int
    trained: int
    filtered: int
    no_target: int
    saturated: int
    invalid: int
    nonfinite: int  # output-channel updates skipped because a weight or bias would have left its bound
    labelled: int
    pseudo_labelled: int
    explored: int
    macs_forward: int
    macs_backward: int
    macs_backward_dense: int
    filter_threshold: float  # the adaptive loss threshold
    filter_kept: float  # moving fraction of unlabelled windows the filter kept
    filter_cut: float  # score at or above which the filter keeps a window
    filter_weights: list
    exits: list  # ExitStats per exit

    HEAD = struct.Struct("<10I3Q7fB")

    @classmethod
    def unpack(cls, p):
        v = cls.HEAD.unpack_from(p)
        n = v[-1]
        exits = [ExitStats(*ExitStats.STRUCT.unpack_from(p, cls.HEAD.size + ExitStats.STRUCT.size * k))
                 for k in range(n)]
        if len(p) != cls.HEAD.size + ExitStats.STRUCT.size * n:
            raise McuTrainError(f"STATS payload of {len(p)} B for {n} exits")
        return cls(*v[:16], list(v[16:20]), exits)

    def pack(self):
        head = [getattr(self, f.name) for f in fields(self)[:16]]
        out = self.HEAD.pack(*head, *self.filter_weights, len(self.exits))
        for e in self.exits:
            out += ExitStats.STRUCT.pack(*(getattr(e, f.name) for f in fields(e)))
        return out


def checkpoint_crc(image: bytes) -> int:
    return zlib.crc32(image) & 0xFFFFFFFF
