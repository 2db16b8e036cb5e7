"""Plot a training run's stats.jsonl (losses, D scores, and metric lines) as a PNG. Needs matplotlib, which op3d
does not depend on (pip install matplotlib).

    python train_scripts/plot_stats.py --run=runs/00000-tiny-shapes32-gpus1-batch4-gamma0.5 --out=curve.png
"""

import json
import os

import click

CURVES = (("Loss/G/loss", "G loss"), ("Loss/D/loss", "D loss"), ("Loss/scores/real", "D score, real"),
          ("Loss/scores/fake", "D score, fake"))


@click.command(help=__doc__)
@click.option("--run", "run_dir", required=True, help="Training run directory (with stats.jsonl).")
@click.option("--out", required=True, help="PNG to write.")
@click.option("--extra", default=None, help="Optional JSON file {label: [[kimg, value], ...]} drawn on a second "
              "panel (e.g. metrics computed afterwards).")
def main(run_dir, out, extra):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise click.ClickException("matplotlib is needed for plotting: pip install matplotlib") from None
    path = os.path.join(run_dir, "stats.jsonl")
    if not os.path.isfile(path):
        raise click.ClickException(f"--run: {path} does not exist")
    with open(path) as f:
        ticks = [json.loads(line) for line in f if line.strip()]
    extra_series = json.load(open(extra)) if extra else {}
    panels = 2 if extra_series else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    kimg = [t["Progress/kimg"]["mean"] for t in ticks]
    for key, label in CURVES:
        axes[0, 0].plot(kimg, [t.get(key, {}).get("mean", float("nan")) for t in ticks], label=label)
    axes[0, 0].set_xlabel("kimg")
    axes[0, 0].legend()
    axes[0, 0].set_title(os.path.basename(os.path.normpath(run_dir)), fontsize=8)
    for label, points in extra_series.items():
        axes[0, 1].plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        axes[0, 1].set_xlabel("kimg")
        axes[0, 1].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    main()
