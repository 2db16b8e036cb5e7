"""Turn a folder or .zip of images with camera labels into a training dataset (.zip or folder of PNGs + dataset.json).

    python train_scripts/dataset_tool.py --source=raw/ --labels=cameras.json --dest=data/ffhq-128.zip \\
        --transform=center-crop --resolution=128

Labels are 25 floats per image (16 cam2world + 9 normalized intrinsics), from --labels or the source's dataset.json;
a center crop adjusts the intrinsics to match. Everything is checked before writing; errors write nothing.
"""

import importlib.util
import pathlib
import sys

import click

if importlib.util.find_spec("op3d") is None:  # running from a checkout without installing
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


@click.command(help=__doc__)
@click.option("--source", required=True, help="Folder or .zip of images (walked recursively).")
@click.option("--labels", default=None,
              help="JSON camera labels: the dataset.json format or {relative_name: label}. "
                   "Default: the source's dataset.json.")
@click.option("--no-labels", is_flag=True, help="Write no labels (\"labels\": null).")
@click.option("--dest", required=True, help="Output .zip, or a new (or empty) folder.")
@click.option("--transform", type=click.Choice(["none", "center-crop"]), default="none", show_default=True,
              help="center-crop: crop each image to its largest centred square (intrinsics adjusted).")
@click.option("--resolution", type=click.IntRange(min=1), default=None,
              help="Resize to this square size (PIL LANCZOS) after the transform.")
@click.option("--max-images", type=click.IntRange(min=1), default=None, help="Keep only the first N images by name.")
def main(source, labels, no_labels, dest, transform, resolution, max_images):
    from op3d.training.dataset import DatasetError, convert_dataset

    if labels is not None and no_labels:
        raise click.ClickException("--labels and --no-labels: expected at most one of them, found both")
    try:
        summary = convert_dataset(source, dest, labels=labels, use_labels=not no_labels, transform=transform,
                                  resolution=resolution, max_images=max_images, progress=True)
    except DatasetError as err:
        raise click.ClickException(str(err)) from None
    click.echo(summary)


if __name__ == "__main__":
    main()
