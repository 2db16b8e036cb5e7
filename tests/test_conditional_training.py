"""Conditional (SMPL) training and generation on CPU: the conditioning curriculum, the intended conditional loss terms
on a tiny conditional generator, and end to end: synthetic stock-PARE output -> export_pose / export_data ->
a 2-tick train_conditional.py run -> snapshot -> conditional gen_samples.py -> PNGs and an .mrc.

CPU time: the body is a coarse version of op3d's procedural SMPL-format body (every 8th ring and segment of its
tube, same joints and skinning rule; the pipeline does not depend on the vertex count), and torch runs on one thread
(these small matrices are many times slower with two threads on a busy machine).
"""

import json
import pickle

import mrcfile
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from op3d.cameras import orbit_camera
from op3d.checkpoints import load_network_pkl
from op3d.networks.conditional import ConditionalOrthoPlanesGenerator
from op3d.networks.discriminator import DualDiscriminatorWithWarping
from op3d.networks.superresolution import SMALL_VARIANT_PATH
from op3d.smpl import lbs, procedural
from op3d.smpl.body_model import SMPLModel
from op3d.training import loss as loss_module
from op3d.training.loss_cond import ConditionalGANLoss, check_curriculum, conditioning_stage
from script_loading import load_script




export_pose = load_script("train_scripts/export_pose.py", "cond_export_pose")
export_data = load_script("train_scripts/export_data.py", "cond_export_data")
train_conditional = load_script("train_scripts/train_conditional.py", "cond_train")
gen_conditional = load_script("gen_samples/conditional/gen_samples.py", "cond_gen_samples")


def invoke(script, *args):
    return CliRunner().invoke(script.main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def no_smpl_dir_one_thread(monkeypatch):
    monkeypatch.delenv("OP3D_SMPL_DIR", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def coarse_body_arrays(step: int = 8) -> dict:
    """The procedural body with every `step`-th ring and segment: a closed, outward-oriented tube in SMPL format."""
    full = procedural.procedural_smpl_arrays()
    rings, segments = np.arange(0, procedural.RINGS, step), np.arange(0, procedural.SEGMENTS, step)
    n_r, n_s = len(rings), len(segments)
    ring_vertices = (1 + procedural.SEGMENTS * rings[:, None] + segments[None, :]).ravel()
    vertices = full["v_template"][np.concatenate([[0], ring_vertices, [len(full["v_template"]) - 1]])]
    last = len(vertices) - 1

    def r(i, j):
        return 1 + n_s * i + j % n_s

    j = np.arange(n_s)
    i, jj = (a.ravel() for a in np.meshgrid(np.arange(n_r - 1), j, indexing="ij"))
    faces = np.concatenate([np.stack([np.zeros_like(j), r(0, j + 1), r(0, j)], 1),
                            np.stack([r(i, jj), r(i, jj + 1), r(i + 1, jj + 1)], 1),
                            np.stack([r(i, jj), r(i + 1, jj + 1), r(i + 1, jj)], 1),
                            np.stack([np.full_like(j, last), r(n_r - 1, j), r(n_r - 1, j + 1)], 1)])
    d2 = ((procedural.REST_JOINTS[:, None] - vertices[None]) ** 2).sum(-1)
    regressor = np.exp(-d2 / (2 * 0.03 ** 2))
    return {"v_template": vertices, "shapedirs": procedural.shape_directions(vertices),
            "posedirs": np.zeros((len(vertices), 3, procedural.POSE_BLEND_SIZE)),
            "J_regressor": regressor / regressor.sum(1, keepdims=True),
            "weights": procedural.skinning_weights(vertices, procedural.REST_JOINTS),
            "kintree_table": full["kintree_table"], "f": faces.astype(np.int64)}


@pytest.fixture(scope="module")
def body():
    return SMPLModel.from_arrays(coarse_body_arrays(), "<coarse procedural body>")


@pytest.fixture(scope="module")
def body_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("smpl") / "SMPL_NEUTRAL.npz"
    procedural.save_smpl_npz(coarse_body_arrays(), path)
    return path


def pose_batch(model, seeds):
    conditions = []
    for seed in seeds:
        _, rotmats, betas = procedural.procedural_pose(seed)
        conditions.append(lbs.pose_condition(model, torch.from_numpy(betas), torch.from_numpy(rotmats)))
    return {k: torch.stack([c[k] for c in conditions]).float() for k in conditions[0]}


# --- curriculum --------------------------------------------------------------------------------------------------

def test_curriculum_schedule():
    expected = [(0, (False, False)), (199_999, (False, False)), (200_000, (True, True)), (399_999, (True, True)),
                (400_000, (False, False)), (799_999, (False, False)), (800_000, (True, True)),
                (1_199_999, (True, True)), (1_200_000, (True, False)), (10_000_000, (True, False))]
    for nimg, stage in expected:
        assert conditioning_stage(nimg) == stage, nimg
    shrunk = (0.004, 0.008, 0.012, 0.016)
    assert [conditioning_stage(n, shrunk) for n in (0, 4, 8, 12, 16)] == [
        (False, False), (True, True), (False, False), (True, True), (True, False)]
    assert conditioning_stage(0, (0, 0, 0, 0)) == (True, False)
    for bad in [(1, 2, 3), (2, 1, 3, 4), (-1, 0, 1, 2)]:
        with pytest.raises(ValueError, match="curriculum_kimg"):
            check_curriculum(bad)


# --- loss terms on a tiny conditional generator ------------------------------------------------------------------

def tiny_networks(model, resolution=16):
    rendering = dict(image_resolution=resolution, superresolution_module=SMALL_VARIANT_PATH,
                     c_gen_conditioning_zero=True, c_scale=1, superresolution_noise_mode="none", density_reg=0.25,
                     density_reg_p_dist=0.004, reg_type="l1", decoder_lr_mul=1, sr_antialias=True,
                     depth_resolution=6, depth_resolution_importance=6, ray_start=2.25, ray_end=3.3, box_warp=1,
                     white_back=True, avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0], clamp_mode="softplus",
                     disparity_space_sampling=False)
    torch.manual_seed(0)
    G = ConditionalOrthoPlanesGenerator(z_dim=16, c_dim=25, w_dim=512, img_resolution=resolution, img_channels=3,
                                        mapping_kwargs=dict(num_layers=1), rendering_kwargs=rendering,
                                        sr_kwargs=dict(channel_base=256, channel_max=16), planes=4, channel_base=256,
                                        channel_max=16, num_fp16_res=0, conv_clamp=None, sr_num_fp16_res=0,
                                        faces=model.faces, plane_resolution=16)
    G.neural_rendering_resolution = 4
    D = DualDiscriminatorWithWarping(c_dim=25, img_resolution=resolution, img_channels=3, channel_base=256,
                                     channel_max=16, num_fp16_res=0, conv_clamp=None,
                                     epilogue_kwargs=dict(mbstd_group_size=2))
    return G.train().requires_grad_(False), D.train().requires_grad_(False)


def test_conditional_loss_terms_and_curriculum(body, monkeypatch):
    G, D = tiny_networks(body)
    loss = ConditionalGANLoss(G, D, r1_gamma=1, neural_rendering_resolution_initial=4,
                              curriculum_kimg=(0.002, 0.004, 0.006, 0.008))
    real_conditions = pose_batch(body, (11, 12))
    real_c = torch.stack([orbit_camera(np.pi / 2 + y, np.pi / 2, focal=4.2647)[0] for y in (0.3, -0.3)]).float()
    gen_c = torch.stack([orbit_camera(np.pi / 2, np.pi / 2 + 0.2, focal=4.2647)[0]] * 2).float()
    real_img = torch.rand(2, 3, 16, 16) * 2 - 1
    gen_z = torch.randn(2, G.z_dim)

    seen = []  # (camera G renders with, D label's pose part) of every G / D call
    synthesis, discriminate = loss._synthesis, loss._discriminate
    loss._synthesis = lambda ws, c, *a: seen.append(("G", c.clone())) or synthesis(ws, c, *a)
    loss._discriminate = lambda images, c, *a: seen.append(
        ("D", c.clone(), loss._d_conditions["body_shape"].clone(), loss._d_conditions["full_pose"].clone())
    ) or discriminate(images, c, *a)

    G.requires_grad_(True)
    stats = loss.accumulate_gradients("Gmain", real_img, real_c, gen_z, gen_c, gain=1, cur_nimg=2,
                                      real_conditions=real_conditions)
    G.requires_grad_(False)
    prior, eikonal = float(stats["Loss/G/prior"]), float(stats["Loss/G/eikonal"])
    assert np.isfinite(prior) and prior >= 0 and np.isfinite(eikonal) and eikonal > 0
    deformation = [p.grad for p in G.renderer.deformation_decoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in deformation)
    assert sum(float(g.abs().sum()) for g in deformation) > 0  # the SDF terms reach the deformation network
    assert all(torch.isfinite(p.grad).all() for p in G.parameters() if p.grad is not None)
    # stage [0.002, 0.004) kimg: real conditions and the real cameras
    assert torch.equal(seen[0][1], real_c) and torch.equal(seen[1][1], real_c)
    assert torch.equal(seen[1][2], real_conditions["body_shape"])

    # density regularisation samples the posed field (fewer points than the official 1000, for time)
    monkeypatch.setattr(loss_module, "DENSITY_REG_POINTS", 32)
    G.requires_grad_(True)
    stats = loss.accumulate_gradients("Greg", real_img, real_c, gen_z, gen_c, gain=4, cur_nimg=2,
                                      real_conditions=real_conditions)
    G.requires_grad_(False)
    assert np.isfinite(float(stats["Loss/G/density_reg"]))

    seen.clear()
    D.requires_grad_(True)
    stats = loss.accumulate_gradients("Dboth", real_img, real_c, gen_z, gen_c, gain=1, cur_nimg=4,
                                      real_conditions=real_conditions)
    D.requires_grad_(False)
    assert all(torch.isfinite(v).all() for v in stats.values())
    # stage [0.004, 0.006): zeroed conditions and the generated cameras, for fakes and reals alike
    g_calls = [s for s in seen if s[0] == "G"]
    d_calls = [s for s in seen if s[0] == "D"]
    assert torch.equal(g_calls[0][1], gen_c) and torch.equal(d_calls[0][1], gen_c)
    assert torch.equal(d_calls[1][1], real_c)
    assert all(float(s[2].abs().sum()) == 0 and float(s[3].abs().sum()) == 0 for s in d_calls)
    assert float(stats["Progress/cond/real_conditions"]) == 0 and float(stats["Progress/cond/real_camera"]) == 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters() if p.requires_grad)

    with pytest.raises(TypeError, match="real_conditions"):
        loss.accumulate_gradients("Gmain", real_img, real_c, gen_z, gen_c, gain=1, cur_nimg=0)


# --- end to end ----------------------------------------------------------------------------------------------------

STEMS = ("a_person", "b_person", "c_person")


def stock_pare_file(seed):
    """A stock PARE image-folder result with one person (SMPL parameters only)."""
    _, rotmats, betas = procedural.procedural_pose(seed)
    return {"pred_pose": rotmats[None].astype(np.float32), "pred_shape": betas[None].astype(np.float32),
            "pred_cam": np.float32([[0.9, 0.0, 0.1]]), "orig_cam": np.float32([[0.5, 0.5, 0.0, 0.1]]),
            "bboxes": np.float32([[16, 16, 30, 30]]), "frame_ids": np.zeros(1, np.int64)}


TINY_TRAIN = ["--cfg=tiny", "--gpus=1", "--batch=2", "--mbstd-group=2", "--gamma=1", "--cbase=256", "--cmax=16",
              "--map-depth=1", "--plane_number=4", "--workers=0", "--device=cpu", "--d_num_fp16_res=0",
              "--sr_num_fp16_res=0", "--neural_rendering_resolution_initial=4", "--kimg=0.004", "--tick=0.002",
              "--snap=1", "--curriculum_kimg=0,0.002,1,1"]


def test_pare_to_training_to_generation(body_file, tmp_path):
    images, pare = tmp_path / "images", tmp_path / "pare"
    images.mkdir()
    pare.mkdir()
    rng = np.random.default_rng(0)
    for stem, seed in zip(STEMS, (11, 12, 13)):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"{stem}.png")
        with open(pare / f"{stem}.pkl", "wb") as file:
            pickle.dump(stock_pare_file(seed), file)

    result = invoke(export_pose, "--smpl_folder", pare, "--output_folder", tmp_path / "poses", "--smpl-model",
                    body_file)
    assert result.exit_code == 0, result.output
    data = tmp_path / "people.zip"
    result = invoke(export_data, "--image_folder", images, "--smpl_folder", pare, "--output_folder", data,
                    "--smpl-model", body_file, "--resolution", 16)
    assert result.exit_code == 0, result.output

    runs = tmp_path / "runs"
    result = invoke(train_conditional, *TINY_TRAIN, f"--outdir={runs}", f"--data={data}",
                    f"--smpl-model={body_file}")
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    assert run_dir.name == "00000-tiny-people-gpus1-batch2-gamma1"
    options = json.loads((run_dir / "training_options.json").read_text())
    assert options["G_kwargs"]["class_name"] == "training.kaolin_version.TriMultiPlaneGenerator"
    assert options["loss_kwargs"]["curriculum_kimg"] == [0, 0.002, 1, 1]
    ticks = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert len(ticks) == 2
    assert [t["Progress/cond/real_camera"]["mean"] for t in ticks] == [1, 0]  # the curriculum moved on
    assert all(np.isfinite(t[k]["mean"]) for t in ticks for k in ("Loss/G/loss", "Loss/G/prior", "Loss/G/eikonal",
                                                                   "Loss/D/loss"))
    for name in ("reals.png", "fakes000000.png", "fakes000000_depth.png", "network-snapshot-000000.pkl",
                 "network-snapshot-000004.pkl" if (run_dir / "network-snapshot-000004.pkl").exists()
                 else "training-state-000000.pt"):
        assert (run_dir / name).is_file(), name
    snapshot_pkl = sorted(run_dir.glob("network-snapshot-*.pkl"))[-1]
    snapshot = load_network_pkl(snapshot_pkl)
    assert type(snapshot["G_ema"]) is ConditionalOrthoPlanesGenerator
    assert type(snapshot["D"]) is DualDiscriminatorWithWarping
    assert snapshot["G_ema"].renderer.face_idx.shape[0] == len(coarse_body_arrays()["f"])

    # an exact resume (weights, optimizer states, counters) continues the conditional run
    result = invoke(train_conditional, *[a for a in TINY_TRAIN if not a.startswith("--kimg")], "--kimg=0.006",
                    f"--outdir={runs}", f"--data={data}", f"--smpl-model={body_file}", f"--resume={run_dir}")
    assert result.exit_code == 0, result.output
    resumed = sorted(p for p in runs.iterdir() if p.is_dir())[-1]
    assert resumed != run_dir and "from kimg 0.004" in (resumed / "log.txt").read_text()

    # export_pose names files after the images: --pose_id picks the i-th in sorted order
    out = tmp_path / "samples"
    result = invoke(gen_conditional, f"--network={snapshot_pkl}", "--seeds=0", "--pose_id=1",
                    f"--pose-dir={tmp_path / 'poses'}", "--shapes=true", "--shape-res=12", "--depth-samples=4",
                    "--device=cpu", f"--outdir={out}")
    assert result.exit_code == 0, result.output
    rgb = np.asarray(Image.open(out / "seed0000_pose1_RGB.png"))
    assert rgb.shape == (16, 16 * 11, 3)
    with mrcfile.open(out / "seed0000_pose1_Geometry.mrc") as mrc:
        volume = np.asarray(mrc.data)
    assert volume.shape == (12, 12, 12) and np.isfinite(volume).all()
    pad_z, pad_xy = int(90 * 12 / 256), int(45 * 12 / 256)
    assert (volume[:, :, :pad_z] == -1000).all() and (volume[:pad_xy] == -1000).all()
    inner = volume[pad_xy:-pad_xy, pad_xy:-pad_xy, pad_z:-pad_z]
    assert inner.size and (inner >= 0).all()  # Laplace density

    # a coloured mesh (the pose-warped colour field) at a level this untrained body's density crosses
    level = float(np.quantile(inner, 0.5))
    result = invoke(gen_conditional, f"--network={snapshot_pkl}", "--seeds=0", "--pose_id=1", "--views=0",
                    f"--pose-dir={tmp_path / 'poses'}", "--shapes=true", "--shape-res=12", "--depth-samples=4",
                    "--shape-format=.ply", "--mesh-colors=true", f"--level={level}", "--device=cpu",
                    f"--outdir={out}")
    assert result.exit_code == 0, result.output
    import trimesh

    mesh = trimesh.load(out / "seed0000_pose1_Geometry.ply", process=False)
    assert len(mesh.vertices) > 10 and mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)

    # the released naming: --pose_id p reads {p+1:06d}.pickle
    released = tmp_path / "processed_SHHQ_pose_cond"
    released.mkdir()
    (released / "000003.pickle").write_bytes((tmp_path / "poses" / f"{STEMS[2]}.pickle").read_bytes())
    result = invoke(gen_conditional, f"--network={snapshot_pkl}", "--seeds=1", "--pose_id=2",
                    f"--pose-dir={released}", "--depth-samples=4", "--device=cpu", "--views=0", f"--outdir={out}")
    assert result.exit_code == 0, result.output
    assert np.asarray(Image.open(out / "seed0001_pose2_RGB.png")).shape == (16, 16, 3)


def test_bad_input_is_one_line(body_file, tmp_path):
    """Errors name the flag and write nothing."""
    cases = [
        (gen_conditional, ["--network=x.pkl", "--seeds=0", f"--pose-dir={tmp_path / 'none'}"], "--pose-dir"),
        (train_conditional, [*TINY_TRAIN, f"--outdir={tmp_path / 'runs'}", f"--data={tmp_path}", "--fourier_L=6"],
         "--fourier_L"),
        (train_conditional, [*TINY_TRAIN, f"--outdir={tmp_path / 'runs'}", f"--data={tmp_path}",
                             "--metrics=fid50k_full"], "--metrics"),
        (train_conditional, [*TINY_TRAIN, f"--outdir={tmp_path / 'runs'}", f"--data={tmp_path}",
                             "--curriculum_kimg=1,2"], "--curriculum_kimg"),
        (train_conditional, [*TINY_TRAIN, f"--outdir={tmp_path / 'runs'}", f"--data={tmp_path}"], "SMPL model"),
    ]
    for script, args, needle in cases:
        result = CliRunner().invoke(script.main, args + ([f"--outdir={tmp_path / 'out'}"] if script is
                                                         gen_conditional else []))
        assert result.exit_code != 0, args
        assert result.output.startswith("Error:") and len(result.output.strip().splitlines()) == 1, result.output
        assert needle in result.output, (needle, result.output)
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_conditional_volume_and_mesh_frames():
    """A ball centred at world point (0.1, 0.2, 0) (render frame: (0.1, -0.2, 0)) sampled as the conditional script
    samples (at -x of the render frame) gives a mesh around the world centre with outward normals."""
    from op3d.generation_cond import conditional_mesh, conditional_volume
    from op3d.shapes import ShapeGrid

    n = 48
    points = ShapeGrid(n, 1.0, compat=False).points().reshape(n, n, n, 3).numpy()
    render = points * np.array([-1.0, 1.0, 1.0])
    density = 100 * (np.linalg.norm(render - np.array([0.1, -0.2, 0.0]), axis=-1) < 0.15)
    volume = conditional_volume(density.astype(np.float32))
    assert (volume[:, :, :int(90 * n / 256)] == -1000).all() and (volume[:, :int(45 * n / 256)] == -1000).all()
    vertices, faces = conditional_mesh(volume, 40, 1.0)
    centre = vertices.mean(0)
    np.testing.assert_allclose(centre, [0.1, 0.2, 0.0], atol=0.02)
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    normals = np.cross(b - a, c - a)
    assert ((normals * (a - centre)).sum(-1) > 0).mean() > 0.99
