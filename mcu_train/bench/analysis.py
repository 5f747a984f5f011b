"""From the sweep's raw results to the report's figures: second-half prequential accuracy, the cost model
of an inference on the board, speed-accuracy curves over exit thresholds, training cost per setting."""
import numpy as np

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.999)
GENERIC_THRESHOLD = 0.9  # the generic model's operating point (the demo's)
WITHIN_PT = 0.5  # "the same accuracy": within half a point of the network run to its final exit


def q16(t):
    from codegen.reference import threshold_to_q16
    return threshold_to_q16(t)


def second_half(r):
    return slice(len(r["truth"]) // 2, None)


def exits_at(conf, thresholds_q16):
    """Exit taken per window: the first whose confidence reaches its threshold, else the final one.
    conf: (N, K) Q16 confidences; thresholds_q16: (K,) or (N, K)."""
    passed = conf >= np.broadcast_to(thresholds_q16, conf.shape)
    passed[:, -1] = True
    return np.argmax(passed, axis=1)


def pick(values, exits):
    return values[np.arange(len(exits)), exits]


def generic_predictions(r, threshold=GENERIC_THRESHOLD):
    """(prediction, exit) of the never-trained int8 model with early exits at `threshold`."""
    k = exits_at(r["generic_conf"], q16(threshold))
    return pick(r["generic_pred"], k), k


def accuracy(pred, truth):
    return 100.0 * float(np.mean(pred == truth)) if len(truth) else 0.0


def stream_accuracies(r):
    """Second-half accuracy (%) of the generic model and of the board (its own predictions)."""
    h = second_half(r)
    return accuracy(generic_predictions(r)[0][h], r["truth"][h]), accuracy(r["prediction"][h], r["truth"][h])


class CostModel:
    """Instructions of one inference on the board, from costs measured there: the early-exit path to each
    exit with generic heads (inference build), and on the trainer build with every head generic or every
    head personalised; a window whose exits serve a mix costs the sum of each stage's increment."""

    def __init__(self, board_result):
        self.generic = np.array([e["cost"] for e in board_result["exits"]])
        self.full = board_result["final_only_cost"]
        train = next(t for t in board_result["training"] if t["mode"] == "exits")
        g, p = (np.array(train[f"path_costs_{k}"]) for k in ("generic", "personalised"))
        self.steps = np.stack([np.diff(g, prepend=0), np.diff(p, prepend=0)])  # (2, K): generic, personalised

    def generic_cost(self, exits):
        return self.generic[exits]

    def trainer_cost(self, exits, personal):
        """exits (N,), personal (N, K) bool: which head each exit served."""
        per_stage = np.where(personal, self.steps[1], self.steps[0])
        upto = np.arange(per_stage.shape[1])[None, :] <= exits[:, None]
        return (per_stage * upto).sum(axis=1)


def curves(streams, cost):
    """Speed-accuracy over THRESHOLDS on the second halves of `streams` (all exit thresholds equal):
    for the generic model and the personalised board, plus the full network and the board's own point."""
    h = [second_half(r) for r in streams]
    truth = np.concatenate([r["truth"][s] for r, s in zip(streams, h)])
    cat = {key: np.concatenate([r[key][s] for r, s in zip(streams, h)])
           for key in ("generic_conf", "generic_pred", "served_conf", "served_pred", "served_personal", "exit",
                       "prediction")}
    out = dict(windows=int(len(truth)),
               full=dict(accuracy=accuracy(cat["generic_pred"][:, -1], truth), cost=float(cost.full)),
               generic=[], personalised=[])
    for t in THRESHOLDS:
        k = exits_at(cat["generic_conf"], q16(t))
        out["generic"].append(dict(threshold=t, accuracy=accuracy(pick(cat["generic_pred"], k), truth),
                                   cost=float(np.mean(cost.generic_cost(k)))))
        k = exits_at(cat["served_conf"], q16(t))
        out["personalised"].append(dict(threshold=t, accuracy=accuracy(pick(cat["served_pred"], k), truth),
                                        cost=float(np.mean(cost.trainer_cost(k, cat["served_personal"])))))
    out["board"] = dict(accuracy=accuracy(cat["prediction"], truth),
                        cost=float(np.mean(cost.trainer_cost(cat["exit"], cat["served_personal"]))))
    for kind in ("generic", "personalised"):
        out[f"{kind}_best"] = best_point(out[kind], out["full"])
    return out


def best_point(points, full):
    """The cheapest point within WITHIN_PT of the full network's accuracy, with its speedup; without one,
    the full network itself (speedup 1)."""
    ok = [p for p in points if p["accuracy"] >= full["accuracy"] - WITHIN_PT]
    if not ok:
        return dict(threshold=None, accuracy=full["accuracy"], cost=full["cost"], speedup=1.0, drop_pt=0.0)
    p = min(ok, key=lambda p: p["cost"])
    return dict(p, speedup=full["cost"] / p["cost"], drop_pt=full["accuracy"] - p["accuracy"])


def cost_model_error(streams, cost):
    """Largest relative difference between the board's reported prediction cost and the cost model's, over
    the board streams' windows."""
    errors = []
    for r in streams:
        model = cost.trainer_cost(r["exit"], r["served_personal"])
        errors.append(np.abs(model - r["cost_inference"]) / r["cost_inference"])
    return float(np.max(np.concatenate(errors))) if errors else None


def training_cost(streams, full_cost):
    """Per setting: mean instructions training adds per window (the board's cost_training), windows trained,
    backward MACs, second-half accuracy; over `streams` (board runs)."""
    out = {}
    for r in streams:
        s = out.setdefault(r["task"]["setting"], dict(cost=[], trained=[], acc=[], macs_backward=[], keep=[]))
        s["cost"].append(float(np.mean(r["cost_training"])))
        s["trained"].append(100.0 * float(np.mean(np.isin(r["outcome"], (0, 5)))))
        s["acc"].append(stream_accuracies(r)[1])
        s["macs_backward"].append(float(np.mean(r["macs_backward"])))
        s["keep"].append(float(r["keep"]))
    table = {name: dict(cost=float(np.mean(s["cost"])), trained_pct=float(np.mean(s["trained"])),
                        accuracy=float(np.mean(s["acc"])), macs_backward=float(np.mean(s["macs_backward"])),
                        keep=float(np.mean(s["keep"])), streams=len(s["cost"]))
             for name, s in out.items()}
    dense = table.get("dense")
    for row in table.values():
        row["of_inference"] = row["cost"] / full_cost
        row["saved"] = 1.0 - row["cost"] / dense["cost"] if dense and dense["cost"] else 0.0
        row["accuracy_drop_pt"] = dense["accuracy"] - row["accuracy"] if dense else 0.0
    return table
