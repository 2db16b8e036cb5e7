"""Explore a generator in the browser: orbit and zoom the camera, change seed, truncation, noise, style mixing,
view the raw image and depth, extract (coloured) meshes and download them as .ply / .obj / .mrc.

    python gen_samples/unconditional/viewer.py                       # the bundled demo model
    python gen_samples/unconditional/viewer.py --network=ffhq.pkl --device=cuda

Prints the URL to open (http://127.0.0.1:8080/ by default). The server listens on 127.0.0.1 only unless --host
says otherwise; from another machine use ssh port forwarding (ssh -L 8080:127.0.0.1:8080 host). See docs/viewer.md.
"""

import importlib.util
import pathlib
import sys

import click

if importlib.util.find_spec("op3d") is None:  # running from a checkout without installing
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))


@click.command(help=__doc__)
@click.option("--network", default=None,
              help="Snapshot .pkl (official OP3D/EG3D, SMPL-conditional, or op3d), or 'random-tiny' for an untrained "
              "generator [default: op3d's bundled 32-px demo model].")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on (0: any free port). A port in use is an error, not silently changed.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but a loopback address (e.g. 0.0.0.0) exposes the viewer to your "
              "network; prefer ssh port forwarding.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda, then mps, then cpu), or a torch device.")
@click.option("--pose-dir", default=None,
              help="Conditional (SMPL) models: folder of pose-condition files for the page's pose id control "
              "[default: processed_SHHQ_pose_cond].")
@click.option("--outdir", default=None, help="Also write 'Save view' images and camera labels to this folder.")
def main(network, port, host, device, pose_dir, outdir):
    from op3d.viewer.app import ViewerApp, ViewerStartError, check_bind, is_loopback
    from op3d.viewer.model import NetworkLoadError, ViewerModel

    try:
        check_bind(host, port)  # before loading a large network
        model = ViewerModel.load(network, device, pose_dir)
        app = ViewerApp(model, host=host, port=port, outdir=outdir)
    except (NetworkLoadError, ViewerStartError) as err:
        raise click.ClickException(str(err)) from None
    if not is_loopback(host):
        click.echo(f"warning: listening on {host}: anyone who can reach this machine can use the viewer", err=True)
    click.echo(f"op3d viewer: {model.kind} model {model.name} on {model.device}")
    click.echo(f"open {app.url}  (Ctrl-C to stop)", err=False)
    app.wait()


if __name__ == "__main__":
    main()
