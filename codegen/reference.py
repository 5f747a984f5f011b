"""The golden model: runs the lowered steps with the numpy kernels (codegen.int8_ops) and the same exit
policy as the generated C, so every C test compares against this bit for bit.

Confidence is integer-only, so C and numpy agree exactly: with d_j = max logit - logit_j (0..255, int8
logits), confidence = 2^32 / sum_j T[d_j] in Q16 (65536 = 1.0), where T[d] = round(65536 * exp(-d * s)) and
s is the exit's logit scale; this is the top softmax probability, computed through a 256-entry table."""
import numpy as np

from codegen import int8_ops

Q16 = 1 << 16


def confidence_table(logit_scale):
    d = np.arange(256, dtype=np.float64)
    return np.round(Q16 * np.exp(-d * float(logit_scale))).astype(np.uint32)


def confidence_q16(logits_q, table):
    d = int(np.max(logits_q)) - logits_q.astype(np.int32)
    total = int(np.sum(table[d].astype(np.uint64)))
    return min(Q16, (1 << 32) // total)


def threshold_to_q16(threshold):
    return int(round(min(max(float(threshold), 0.0), 1.0) * Q16))


def _store(step, buffers, y):
    """The step's output into its own buffer, or into its part of a shared one (a Concat written in place)."""
    if step.view is None:
        buffers[step.output] = y
        return
    name, start, size = step.view
    shared = buffers.setdefault(name, np.zeros(size, np.int8))
    shared[start:start + y.size] = y.reshape(-1)


def _run_step(step, buffers, arrays=None):
    """One step on the named buffers; `arrays` replaces the step's own constants (a personalised head's)."""
    x = buffers[step.inputs[0]].reshape(step.in_dims)
    q, a = step.q, arrays or step.arrays
    common = dict(input_offset=q.get("input_offset", 0), output_offset=q.get("output_offset", 0),
                  act_min=q["act_min"], act_max=q["act_max"])
    if step.kernel in ("conv", "conv_dilated"):
        return int8_ops.conv2d(x, a["filter"], a["bias"], multiplier=a["multiplier"], shift=a["shift"],
                               stride=q["stride"], padding=q["padding"], dilation=q.get("dilation", (1, 1)), **common)
    if step.kernel == "dwconv":
        return int8_ops.depthwise_conv2d(x, a["filter"], a["bias"], multiplier=a["multiplier"], shift=a["shift"],
                                         stride=q["stride"], padding=q["padding"], ch_mult=q["ch_mult"], **common)
    if step.kernel == "dense":
        return int8_ops.fully_connected(x.reshape(x.shape[0], -1), a["filter"], a["bias"],
                                        multiplier=a["multiplier"], shift=a["shift"], **common)
    if step.kernel == "maxpool":
        return int8_ops.max_pool2d(x, q["kernel"], q["stride"], q["padding"], q["act_min"], q["act_max"])
    if step.kernel == "avgpool":
        return int8_ops.avg_pool2d(x, q["kernel"], q["stride"], q["padding"], multiplier=a["multiplier"],
                                   shift=a["shift"], **common)
    if step.kernel == "add":
        y = buffers[step.inputs[1]].reshape(step.in_dims)
        return int8_ops.add(x, y, **q)
    if step.kernel == "relu":
        return int8_ops.relu(x, q["act_min"], q["act_max"])
    if step.kernel == "lut":
        return int8_ops.lut(x, a["table"])
    if step.kernel == "mul":
        y = a["input2"] if "input2" in a else buffers[step.inputs[1]]
        return int8_ops.mul(x, y, input1_offset=q["input_offset"], input2_offset=q["input2_offset"],
                            output_offset=q["output_offset"], multiplier=q["multiplier"], shift=q["shift"],
                            act_min=q["act_min"], act_max=q["act_max"])
    if step.kernel == "concat":
        parts = [buffers[t].reshape(*step.out_dims[:3], c) for t, c in zip(step.inputs, q["channels"])]
        return int8_ops.concat_channels(parts, q["inputs"])
    if step.kernel == "pad":
        return int8_ops.pad(x, q["padding"], q["pad_value"])
    if step.kernel == "resize":
        return int8_ops.resize_nearest(x, a["rows"], a["cols"])
    raise ValueError(step.kernel)


class Reference:
    def __init__(self, steps, input_name, exit_tables, values=False):
        self.steps = steps
        self.input_name = input_name
        self.exit_tables = exit_tables
        self.num_exits = len(exit_tables)
        self.values = values  # outputs are values, not classes: confidence 0, as in the C

    def run(self, x_q, thresholds_q16=None, force_exit=None):
        """x_q: int8 input in NHWC. Either thresholds (Q16 per exit) or a forced exit index (-1 = final).
        Returns (exit taken, int8 logits, confidence Q16)."""
        if force_exit is not None and force_exit < 0:
            force_exit += self.num_exits
        buffers = {self.input_name: np.asarray(x_q, np.int8)}
        for step in self.steps:
            if force_exit is not None and not step.exits_needing >> force_exit & 1:
                continue
            _store(step, buffers, _run_step(step, buffers))
            k = step.exit_index
            if k < 0:
                continue
            logits = buffers[step.output].reshape(-1)
            conf = 0 if self.values else confidence_q16(logits, self.exit_tables[k])
            if force_exit is not None:
                if k == force_exit:
                    return k, logits, conf
            elif k == self.num_exits - 1 or conf >= thresholds_q16[k]:
                return k, logits, conf
        raise AssertionError("the schedule ended without reaching an exit")

    def run_all(self, x_q):
        """Every step on an int8 NHWC input: tensor name -> int8 array (the trainer's reference needs them all)."""
        buffers = {self.input_name: np.asarray(x_q, np.int8)}
        for step in self.steps:
            _store(step, buffers, _run_step(step, buffers))
        return buffers
