"""PNG plots of an experiment's results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

STYLE = {"centralized": ("black", "--"), "fedavg": ("tab:orange", "-"), "zkpot": ("tab:blue", "-"),
         "zkpot-rule-sim": ("tab:blue", ":")}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy(results: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    from matplotlib.ticker import MaxNLocator
    fractions = results["config"]["fractions"]
    fig, axes = plt.subplots(1, len(fractions), figsize=(4.2 * len(fractions), 3.6), sharey=True, squeeze=False)
    for ax, fraction in zip(axes[0], fractions, strict=True):
        for sc in results["scenarios"]:
            if sc["kind"] != "centralized" and sc["fraction"] != fraction:
                continue
            color, ls = STYLE[sc["kind"]]
            rounds = [r["round"] for r in sc["rounds"]]
            ax.plot(rounds, [100 * r["accuracy"] for r in sc["rounds"]], color=color, linestyle=ls, marker="o",
                    markersize=3, label=sc["kind"])
        ax.set_title(f"{round(100 * fraction)}% attackers ({', '.join(results['config']['attacks'])})")
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("global model accuracy, held-out split (%)")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def leaders(results: dict[str, Any], path: Path) -> Path | None:
    """Per ZKPoT run, each round's share of the next epoch's views by validator (stacked): red
    segments are validators whose operators are attackers, green honest ones (issue 21: a share,
    not only who leads first)."""
    plt = _plt()
    runs = [sc for sc in results["scenarios"] if sc["kind"] == "zkpot"]
    if not runs:
        return None
    n_validators = results["config"]["validators"]
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs) + 0.5, 3.6), sharey=True, squeeze=False)
    greens, reds = plt.get_cmap("Greens"), plt.get_cmap("Reds")
    for ax, sc in zip(axes[0], runs, strict=True):
        rounds = [r["round"] for r in sc["rounds"]]
        bottom = [0.0] * len(rounds)
        for j in range(n_validators):
            name = f"v{j}"
            shares = [100 * (r.get("view_shares") or {}).get(name, 0.0) for r in sc["rounds"]]
            if not any(shares):
                continue
            attacker = f"p{j}" in (sc.get("attackers") or {})  # validator v<j> is operated by participant p<j>
            shade = (reds if attacker else greens)(0.45 + 0.5 * j / max(1, n_validators - 1))
            ax.bar(rounds, shares, bottom=bottom, color=shade, edgecolor="black", linewidth=0.4,
                   label=f"{name} (p{j}{', attacker' if attacker else ''})")
            bottom = [b + x for b, x in zip(bottom, shares, strict=True)]
        ax.set_title(sc["name"], fontsize=9)
        ax.set_xlabel("round closed (views of the next epoch)")
        ax.set_xticks(rounds)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=6, loc="lower left")
    axes[0][0].set_ylabel("share of views led (%)")
    fig.suptitle("who leads: share of views per validator (red = attacker's operator)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def proof_time(results: dict[str, Any], path: Path) -> Path | None:
    plt = _plt()
    from matplotlib.ticker import MaxNLocator
    runs = [sc for sc in results["scenarios"] if sc["kind"] == "zkpot"]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for sc in runs:
        rounds = [r["round"] for r in sc["rounds"]]
        (line,) = ax.plot(rounds, [r["prove_s_mean"] for r in sc["rounds"]], marker="o", label=f"{sc['name']} mean")
        ax.plot(rounds, [r["prove_s_max"] for r in sc["rounds"]], linestyle=":", color=line.get_color(),
                label=f"{sc['name']} max")
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("SNARK proving time per submission (s)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"proof time per round ({results['config']['test_set_size']} test samples)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
