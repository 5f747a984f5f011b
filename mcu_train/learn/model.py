"""Early-exit CNN in tinygrad: 1-D or 2-D conv blocks, exit heads after chosen blocks, a final classifier.

The network is a list of blocks (conv, [batch norm], ReLU, pool). An exit head (1x1 conv, ReLU, global average
pool, dense; or just pool + dense) may follow any block; the final classifier (global average pool, dense) follows
the last block. Outputs are the logits of every exit, shallow to deep, the final classifier last.

Every layer is a small object with a name, so the ONNX exporter, the cost counter and the forward pass all walk the
same structure (`EarlyExitCNN.walk`).
"""
import json
import math
import os
from dataclasses import asdict, dataclass, replace

os.environ.setdefault("DEV", "CPU")  # reproducible numbers: the same backend on every machine

import numpy as np
from tinygrad import Tensor
from tinygrad.nn import BatchNorm


@dataclass(frozen=True)
class BlockSpec:
    channels: int
    kernel: int = 5     # odd: "same" padding keeps the length
    pool: int = 2       # pooling size and stride after ReLU; 1 = no pooling
    pool_kind: str = "max"  # "max" or "avg"


@dataclass(frozen=True)
class ModelSpec:
    input_shape: tuple[int, ...] = (3, 128)   # (C, L) for 1-D, (C, H, W) for 2-D
    num_classes: int = 6
    blocks: tuple[BlockSpec, ...] = (BlockSpec(16), BlockSpec(32), BlockSpec(64), BlockSpec(64))
    exits_after: tuple[int, ...] = (0, 1, 2)  # 0-based block indices, each followed by an exit head
    exit_channels: int = 32                   # width of each head's 1x1 conv; 0 = pool + dense only
    batchnorm: bool = True                    # folded into the conv before export

    @property
    def dims(self) -> int:
        return len(self.input_shape) - 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def from_json(text: str) -> "ModelSpec":
        d = json.loads(text)
        return ModelSpec(input_shape=tuple(d["input_shape"]), num_classes=d["num_classes"],
                         blocks=tuple(BlockSpec(**b) for b in d["blocks"]), exits_after=tuple(d["exits_after"]),
                         exit_channels=d["exit_channels"], batchnorm=d["batchnorm"])


# ---------------------------------------------------------------- layers
# Each layer: name, __call__(Tensor), tensors() (name -> Tensor, the exported parameters) and
# shape_and_macs(in_shape) -> (out_shape, MACs per sample). Shapes exclude the batch dimension.

class Conv:
    def __init__(self, name, in_channels, out_channels, kernel, dims):
        if kernel % 2 == 0:
            raise ValueError(f"{name}: kernel {kernel} must be odd for 'same' padding")
        self.name, self.kernel, self.dims, self.pad = name, kernel, dims, kernel // 2
        bound = 1 / math.sqrt(in_channels * kernel ** dims)  # PyTorch's default init
        self.weight = Tensor.uniform(out_channels, in_channels, *([kernel] * dims), low=-bound, high=bound)
        self.bias = Tensor.uniform(out_channels, low=-bound, high=bound)

    def __call__(self, x):
        return x.conv2d(self.weight, self.bias, padding=self.pad)

    def tensors(self):
        return {"weight": self.weight, "bias": self.bias}

    def shape_and_macs(self, shape):
        out_channels, in_channels = self.weight.shape[:2]
        out_shape = (out_channels, *shape[1:])
        return out_shape, math.prod(out_shape) * in_channels * self.kernel ** self.dims  # padded taps count


class BatchNormLayer:
    def __init__(self, name, channels):
        self.name, self.bn = name, BatchNorm(channels)

    def __call__(self, x):
        return self.bn(x)

    def tensors(self):
        return {"weight": self.bn.weight, "bias": self.bn.bias}

    def shape_and_macs(self, shape):
        return shape, 0


class ReLU:
    def __init__(self, name):
        self.name = name

    def __call__(self, x):
        return x.relu()

    def tensors(self):
        return {}

    def shape_and_macs(self, shape):
        return shape, 0


class Pool:
    def __init__(self, name, size, dims, kind):
        if kind not in ("max", "avg"):
            raise ValueError(f"{name}: pool_kind must be 'max' or 'avg', not {kind!r}")
        self.name, self.size, self.dims, self.kind = name, size, dims, kind

    def __call__(self, x):
        kernel = (self.size,) * self.dims
        return x.max_pool2d(kernel, stride=self.size) if self.kind == "max" else x.avg_pool2d(kernel, stride=self.size)

    def tensors(self):
        return {}

    def shape_and_macs(self, shape):
        return (shape[0], *(n // self.size for n in shape[1:])), 0


class GlobalAvgPool:
    """Mean over all positions: (N, C, ...) -> (N, C)."""
    def __init__(self, name):
        self.name = name

    def __call__(self, x):
        return x.mean(axis=tuple(range(2, x.ndim)))

    def tensors(self):
        return {}

    def shape_and_macs(self, shape):
        return (shape[0],), 0


class Dense:
    def __init__(self, name, in_features, out_features):
        self.name = name
        bound = 1 / math.sqrt(in_features)
        self.weight = Tensor.uniform(out_features, in_features, low=-bound, high=bound)  # (out, in) like Gemm transB=1
        self.bias = Tensor.uniform(out_features, low=-bound, high=bound)

    def __call__(self, x):
        return x.linear(self.weight.transpose(), self.bias)

    def tensors(self):
        return {"weight": self.weight, "bias": self.bias}

    def shape_and_macs(self, shape):
        return (self.weight.shape[0],), self.weight.shape[0] * self.weight.shape[1]


# ---------------------------------------------------------------- the network

class EarlyExitCNN:
    def __init__(self, spec: ModelSpec = ModelSpec()):
        if spec.dims not in (1, 2):
            raise ValueError(f"input_shape {spec.input_shape}: expected (C, L) or (C, H, W)")
        if not spec.blocks or any(not 0 <= i < len(spec.blocks) - 1 for i in spec.exits_after) \
                or list(spec.exits_after) != sorted(set(spec.exits_after)):
            raise ValueError(f"exits_after {spec.exits_after}: distinct, increasing block indices "
                             f"before the last block (0..{len(spec.blocks) - 2})")
        self.spec, dims = spec, spec.dims
        self.blocks: list[list] = []
        self.heads: list[list] = []
        channels = spec.input_shape[0]
        for i, b in enumerate(spec.blocks):
            block = [Conv(f"block{i}.conv", channels, b.channels, b.kernel, dims)]
            if spec.batchnorm:
                block.append(BatchNormLayer(f"block{i}.bn", b.channels))
            block.append(ReLU(f"block{i}.relu"))
            if b.pool > 1:
                block.append(Pool(f"block{i}.pool", b.pool, dims, b.pool_kind))
            self.blocks.append(block)
            channels = b.channels
            if i in spec.exits_after:
                name = f"exit{len(self.heads)}"
                head = []
                if spec.exit_channels:
                    head += [Conv(f"{name}.conv", channels, spec.exit_channels, 1, dims), ReLU(f"{name}.relu")]
                head += [GlobalAvgPool(f"{name}.gap"),
                         Dense(f"{name}.dense", spec.exit_channels or channels, spec.num_classes)]
                self.heads.append(head)
        self.classifier = [GlobalAvgPool("final.gap"), Dense("final.dense", channels, spec.num_classes)]

    @property
    def exit_names(self) -> list[str]:
        return [f"exit{i}" for i in range(len(self.heads))] + ["final"]

    def layers(self) -> list:
        """Every layer, in walk order."""
        found = []
        self.walk(None, lambda layer, x: found.append(layer))
        return found

    def walk(self, x, apply):
        """Run `apply(layer, value) -> value` through the network; return the value at each exit, shallow to deep.
        Order: block 0, its head, block 1, ... last block, final classifier."""
        outputs, heads = [], iter(self.heads)
        for i, block in enumerate(self.blocks):
            for layer in block:
                x = apply(layer, x)
            if i in self.spec.exits_after:
                h = x
                for layer in next(heads):
                    h = apply(layer, h)
                outputs.append(h)
        for layer in self.classifier:
            x = apply(layer, x)
        return outputs + [x]

    def __call__(self, x: Tensor) -> list[Tensor]:
        return self.walk(x, lambda layer, t: layer(t))

    def parameters(self) -> list[Tensor]:
        """Trainable tensors (batch-norm running statistics are not among them)."""
        return [t for layer in self.layers() for t in layer.tensors().values()]

    def state_tensors(self) -> list[Tensor]:
        """Every tensor a train step updates: parameters and batch-norm running statistics."""
        extra = [t for layer in self.layers() if isinstance(layer, BatchNormLayer)
                 for t in (layer.bn.running_mean, layer.bn.running_var, layer.bn.num_batches_tracked)]
        return self.parameters() + extra


@dataclass(frozen=True)
class ExitCost:
    name: str
    macs: int    # per window, to reach this exit in early-exit inference: backbone so far + every head so far
    params: int  # parameters those layers hold (batch norm excluded: it is folded into the conv)


def exit_costs(model: EarlyExitCNN) -> list[ExitCost]:
    """Cumulative MACs and parameters per exit, shallow to deep. Conv MACs count the padded taps;
    ReLU, pooling and the averaging are not counted. The final exit includes every head (as the board runs them)."""
    running = {"macs": 0, "params": 0}

    def apply(layer, value):
        shape, macs = layer.shape_and_macs(value[0])
        running["macs"] += macs
        if not isinstance(layer, BatchNormLayer):
            running["params"] += sum(t.numel() for t in layer.tensors().values())
        return shape, running["macs"], running["params"]

    outputs = model.walk((tuple(model.spec.input_shape), 0, 0), apply)
    return [ExitCost(name, macs, params) for name, (_, macs, params) in zip(model.exit_names, outputs)]


def fold_batchnorm(model: EarlyExitCNN) -> EarlyExitCNN:
    """A copy without batch norm, each conv scaled so it computes conv+BN of the original in inference mode."""
    folded = EarlyExitCNN(replace(model.spec, batchnorm=False))
    targets = {layer.name: layer for layer in folded.layers()}
    layers = model.layers()
    for i, layer in enumerate(layers):
        if isinstance(layer, BatchNormLayer):
            continue
        weights = {k: t.numpy() for k, t in layer.tensors().items()}
        following = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, Conv) and isinstance(following, BatchNormLayer):
            bn = following.bn
            gain = bn.weight.numpy() / np.sqrt(bn.running_var.numpy() + bn.eps)
            weights["weight"] = weights["weight"] * gain.reshape(-1, *[1] * (weights["weight"].ndim - 1))
            weights["bias"] = (weights["bias"] - bn.running_mean.numpy()) * gain + bn.bias.numpy()
        set_weights(targets[layer.name], weights)
    return folded


def set_weights(layer, weights: dict[str, np.ndarray]) -> None:
    """Replace a layer's tensors with numpy arrays of the same shapes."""
    for key, t in layer.tensors().items():
        value = np.asarray(weights[key], dtype=np.float32)
        if value.shape != tuple(t.shape):
            raise ValueError(f"{layer.name}.{key}: shape {value.shape}, expected {tuple(t.shape)}")
        setattr(layer, key, Tensor(value.copy()))


def predict(model: EarlyExitCNN, x: np.ndarray, batch_size: int = 512) -> list[np.ndarray]:
    """Logits of every exit (inference mode: batch norm uses its running statistics)."""
    chunks = [[] for _ in model.exit_names]
    for start in range(0, len(x), batch_size):
        outputs = model(Tensor(np.ascontiguousarray(x[start:start + batch_size], dtype=np.float32)))
        for chunk, out in zip(chunks, outputs):
            chunk.append(out.numpy())
    return [np.concatenate(c) if c else np.zeros((0, model.spec.num_classes), np.float32) for c in chunks]
