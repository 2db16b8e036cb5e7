"""Variety of generators trained on op3d's synthetic data, against the data (op3d.metrics.variety): the share of
fakes whose depth fits a box better than a sphere and how well the better fit explains it (residual, world units),
hue-histogram distance and coverage, size spread.

    python test_scripts/measure_variety.py --network=op3d/assets/demo-shapes32.pkl --data=shapes32.zip --num=256

The reals are the first --num images of --data, re-rendered exactly from its ground truth
(<data without .zip>-groundtruth.npz, written by make_synthetic.py); fake i is conditioned on and rendered from the
camera of real i. Prints one row per network (several: a comma list) as each is measured, the data's own values in
the first row. All networks are loaded before the first measurement, so a bad path fails at once.
"""

import importlib.util
import pathlib
import sys

import click

if importlib.util.find_spec("op3d") is None:  # running from a checkout without installing
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

COLUMNS = ("box_fraction", "fit_residual", "hue_distance", "hue_coverage", "size_mean", "size_std", "size_distance")


@click.command(help=__doc__)
@click.option("--network", "networks", required=True, help="Network pickle(s), comma separated.")
@click.option("--data", required=True, help="Synthetic dataset (.zip or folder) made by make_synthetic.py.")
@click.option("--num", type=click.IntRange(min=8), default=256, show_default=True, help="Number of fakes and reals.")
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True, help="Seed of the latents.")
@click.option("--trunc", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--device", default="cpu", show_default=True, help="Torch device of the generators.")
def main(networks, data, num, seed, trunc, device):
    import os
    import pickle

    from op3d.checkpoints import CheckpointError
    from op3d.data.synthetic import groundtruth_path
    from op3d.generation import RANDOM_TINY, load_generator
    from op3d.metrics import variety
    from op3d.safe_pickle import UnsafePickleError

    network_list = [n.strip() for n in networks.split(",") if n.strip()]
    if not network_list:
        raise click.ClickException("--network: give at least one network pickle")
    generators = {}
    for network in network_list:  # all loaded before the first slow measurement
        if network != RANDOM_TINY and not os.path.isfile(network):
            raise click.ClickException(f"--network: {network} does not exist (expected a network pickle)")
        try:
            generators[network] = load_generator(network, device=device)
        except (CheckpointError, UnsafePickleError, pickle.UnpicklingError, OSError, ValueError) as error:
            raise click.ClickException(f"--network: {str(error).splitlines()[0]}") from None
    truth = groundtruth_path(data)
    if not os.path.isfile(truth):
        raise click.ClickException(f"--data: expected the ground truth {truth} beside {data} (make_synthetic.py)")
    try:
        real, labels = variety.groundtruth_statistics(truth, num)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo("| network | " + " | ".join(COLUMNS) + " |")
    click.echo("|---" * (len(COLUMNS) + 1) + "|")

    def row(name, result, side):
        values = [result[f"{c}_{side}"] if f"{c}_{side}" in result else result[c] for c in COLUMNS]
        click.echo(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")

    row("data", variety.compare(real, real), "real")
    for network, G in generators.items():  # one row as each network is measured
        fake = variety.generator_statistics(G, labels, seed=seed, truncation_psi=trunc)
        row(network, variety.compare(fake, real), "fake")


if __name__ == "__main__":
    main()
