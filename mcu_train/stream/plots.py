"""The monitor's PNG: rolling accuracy personalised vs generic, exit usage over time, cost per window."""
from pathlib import Path

import numpy as np

from mcu_train.stream.runlog import ROLLING, rolling_mean


def plot_run(run, windows, path):
    """Three panels over the stream (x: window number) from the log records; written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    seq = np.array([w["seq"] for w in windows])
    exits = np.array([w["exit"] for w in windows])
    num_exits = len(run["thresholds"])
    n_total = run["windows"] if run["windows"] is not None else len(windows)  # null: a live stream
    half = n_total // 2
    fig, (ax_acc, ax_exit, ax_cost) = plt.subplots(3, 1, figsize=(10, 9), sharex=True, constrained_layout=True)
    if run.get("source") is not None:
        fig.suptitle(f"{run['source']}, {100 * run['label_ratio']:.0f}% of its labels, on {run['board']}")
    elif run.get("person") is None:
        fig.suptitle(f"{run['board']} reading its own sensor")
    else:
        shift = " with the placement shift" if run.get("shift") else ""
        fig.suptitle(f"person {run['person']}{shift}, {100 * run['label_ratio']:.0f}% labels, on {run['board']}")

    for key, label, style in (("prediction", "personalised (on the board)", dict(color="tab:blue")),
                              ("generic_prediction", "generic model (host reference)",
                               dict(color="tab:gray", linestyle="--"))):
        known = np.array([w["truth"] is not None and w.get(key) is not None for w in windows], bool)
        if known.any():
            hits = np.array([k and w[key] == w["truth"] for w, k in zip(windows, known)], np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = rolling_mean(hits) / rolling_mean(known)  # windows without a known truth do not count
            ax_acc.plot(seq, 100 * rate, label=label, **style)
    ax_acc.set_ylabel(f"accuracy, last {ROLLING} windows (%)")
    ax_acc.set_ylim(0, 102)

    if len(windows):
        share = np.stack([rolling_mean(exits == k) for k in range(num_exits)])
        names = run.get("exit_names") or [f"exit {k}" for k in range(num_exits)]
        ax_exit.stackplot(seq, 100 * share, labels=names, alpha=0.85)
    ax_exit.set_ylabel(f"exit taken, last {ROLLING} (%)")
    ax_exit.set_ylim(0, 100)
    ax_exit.legend(loc="upper left", fontsize="small", ncol=num_exits)

    unit = run.get("counter_unit") or "counter units"
    if len(windows):
        inf = np.array([w["cost_inference"] for w in windows], np.float64)
        total = np.array([w["cost"] for w in windows], np.float64)
        ax_cost.scatter(seq, total / 1e6, s=4, color="tab:red", alpha=0.5, label="inference + training")
        ax_cost.scatter(seq, inf / 1e6, s=4, color="tab:green", alpha=0.5, label="inference")
        ax_cost.plot(seq, rolling_mean(total) / 1e6, color="tab:red", label=f"mean of the last {ROLLING}")
    ax_cost.set_ylabel(f"cost per window (M {unit})")
    ax_cost.set_xlabel("window (time order)")
    ax_cost.set_ylim(bottom=0)
    ax_cost.legend(loc="upper right", fontsize="small")

    for ax in (ax_acc, ax_exit, ax_cost):
        ax.axvline(half, color="black", linewidth=0.8, linestyle=":")
        ax.set_xlim(0, max(n_total - 1, 1))
    ax_acc.text(half, 3, " second half", fontsize="small")
    ax_acc.legend(loc="lower right", fontsize="small")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
