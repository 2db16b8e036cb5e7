"""Frames per second of the browser viewer while the camera orbits, with the time split per frame: renderer,
superresolution, and transfer to the page (JPEG encoding and sending the frame to the connected tab).

    python bench/viewer.py [--frames 24] [--threads 2] [--device cpu] [--sets demo,official/ffhq_k8_l10]

Starts the real viewer (op3d.viewer.app.ViewerApp) on a free local port, connects headless Chromium to it
(Debian's chromium at /usr/bin/chromium, or $OP3D_CHROMIUM), stops the tab's own render worker, then moves the
tab's camera along an orbit (0.6 rad of yaw, as a mouse drag does) and renders each step as the worker would: at the
"Res while moving" resolution (preview; with "Raw image while moving" on, the raw image resized instead of the
superresolution) and at the full neural rendering resolution (refined). The backbone runs
once per latent (the plane cache), before the timed frames. Prints a markdown table; fps = 1 / mean seconds per frame.
'demo' is the bundled model; other names are fixture sets under ../shared/fixtures (or $OP3D_FIXTURES).
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from generator import fixtures_root  # noqa: E402

CHROMIUM = os.environ.get("OP3D_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
STAGES = ("renderer", "superresolution", "transfer")


def orbit_frames(session, frames: int, preview: bool) -> list[dict]:
    """Timings of `frames` renders along an orbit of the session's tab, each after a camera move."""
    from op3d.viewer import camera as cam

    s = session.model.G.settings
    timings = []
    for i in range(frames):
        yaw = math.pi / 2 - 0.3 + 0.6 * i / max(frames - 1, 1)
        position, _ = cam.orbit_pose(yaw, math.pi / 2, s.avg_camera_pivot, s.avg_camera_radius)
        session.place_camera(position, s.avg_camera_pivot)
        session.client.flush()
        time.sleep(0.05)  # the page reports the moved camera back to the server
        before = session.frames
        session.render_once(preview=preview)
        if session.frames != before + 1:
            raise RuntimeError("the viewer did not render a frame (see the page status)")
        timings.append(session.last_frame.timings)
    return timings


def bench_model(name: str, frames: int, device: str) -> list[dict]:
    from playwright.sync_api import sync_playwright

    from op3d.viewer.app import ViewerApp
    from op3d.viewer.model import ViewerModel

    network = None if name == "demo" else str(fixtures_root() / name / "G.pkl")
    model = ViewerModel.load(network, device)
    app = ViewerApp(model, port=0)
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": 640})
            page.goto(app.url)
            page.get_by_role("button", name="Extract mesh").wait_for(timeout=30000)
            session = next(iter(app.sessions.values()))
            session.close()  # the bench renders instead of the tab's worker
            session.worker.join()
            ctl = session.controls
            modes = (("preview, raw image", True, True), ("preview, superresolution", True, False),
                     ("refined", False, False))
            for mode, preview, raw in modes:
                ctl.raw_while_moving.value = raw
                resolution = int((ctl.preview_resolution if preview else ctl.resolution).value)
                orbit_frames(session, 2, preview)  # warm-up (and the backbone of this latent)
                timings = orbit_frames(session, frames, preview)
                means = {stage: statistics.mean(t[stage] for t in timings) for stage in STAGES}
                total = sum(means.values())
                rows.append(dict(model=name, mode=mode, resolution=resolution,
                                 image=session.last_frame.image.shape[0], fps=1 / total, total=total, **means))
            browser.close()
    finally:
        app.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=24, help="timed frames per row")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sets", default="demo,official/ffhq_k8_l10", help="comma list: demo and/or fixture sets")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not os.path.isfile(CHROMIUM):
        raise SystemExit(f"chromium not found at {CHROMIUM} (apt-get install chromium, or set OP3D_CHROMIUM)")
    print(f"viewer orbit, {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.frames} frames per row")
    print("| model | mode | neural res | image | fps | ms / frame | renderer ms | superresolution ms | transfer ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.sets.split(","):
        for r in bench_model(name, args.frames, args.device):
            print(f"| {r['model']} | {r['mode']} | {r['resolution']} | {r['image']} | {r['fps']:.1f} | "
                  f"{1000 * r['total']:.0f} | {1000 * r['renderer']:.0f} | {1000 * r['superresolution']:.0f} | "
                  f"{1000 * r['transfer']:.0f} |")


if __name__ == "__main__":
    main()
