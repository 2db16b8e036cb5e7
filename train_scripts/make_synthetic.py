"""Render a synthetic training dataset with exact 3D ground truth: one random sphere or box per image, seen from a
random camera near the front (op3d.data.synthetic.make_synthetic_dataset).

    python train_scripts/make_synthetic.py --dest=data/synth-32.zip --count=1000 --resolution=32 --seed=0

Writes the dataset (.zip or new folder of PNGs + dataset.json with 25-float camera labels) and, beside it,
<dest without .zip>-groundtruth.npz: depth, mask, camera labels and the object parameters of every image.
The same seed gives the same images, labels and ground truth.
"""

import importlib.util
import pathlib
import sys

import click

if importlib.util.find_spec("op3d") is None:  # running from a checkout without installing
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


@click.command(help=__doc__)
@click.option("--dest", "--outdir", "dest", required=True,
              help="Output dataset: a .zip, or a new (or empty) folder. --outdir is the same option.")
@click.option("--count", type=click.IntRange(min=1), default=1000, show_default=True, help="Number of images.")
@click.option("--resolution", type=int, default=32, show_default=True,
              help="Image size in pixels: a power of two from 16 to 256.")
@click.option("--seed", type=click.IntRange(min=0, max=2 ** 32 - 1), default=0, show_default=True,
              help="Random seed of the scenes and cameras.")
def main(dest, count, resolution, seed):
    if not 16 <= resolution <= 256 or resolution & (resolution - 1):
        raise click.ClickException(f"--resolution: expected a power of two from 16 to 256, found {resolution}")
    from op3d.data.synthetic import make_synthetic_dataset
    from op3d.training.dataset import DatasetError

    try:
        summary = make_synthetic_dataset(dest, count, resolution=resolution, seed=seed, progress=True)
    except DatasetError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{summary['path']}: {summary['count']} images, {summary['resolution']}x{summary['resolution']}, "
               f"ground truth in {summary['groundtruth']}")


if __name__ == "__main__":
    main()
