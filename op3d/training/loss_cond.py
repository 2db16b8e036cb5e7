"""The SMPL-conditional training objective: the intended conditional loss of OP3D (spec 4.7; in the official code
it is dead, inside a string) made live on the GAN machinery of :mod:`op3d.training.loss`.

Same phases, blur, R1, density regularisation and label swapping as :class:`~op3d.training.loss.GANLoss`, plus:

* The generator renders every fake with the pose condition of a real image of the same chunk (fake i gets real
  item i's body), in G's forward, density-regularisation and D passes alike.
* A conditioning curriculum (:func:`conditioning_stage`) decides what D sees, for fakes and reals alike: the SMPL
  part of D's label (betas and pose code) is either the real conditions or zeros, and the fakes' camera (used to
  render them and as D's label) is either the generated camera (labels of random dataset items, as in
  unconditional training) or the real images' own cameras, which makes fake i a re-rendering of real item i's
  pose and viewpoint. Defaults, in kimg: [0, 200) zeroed + generated, [200, 400) real + real, [400, 800) zeroed +
  generated, [800, 1200) real + real, from 1200 on real conditions + generated camera.
* Extra Gmain terms on the signed distance field of the rendered samples: "prior" = prior_weight *
  mean((sdf_total - sdf_smpl)^2) (the decoder's residual on the body's signed squared distance), and "eikonal"
  = eikonal_weight * mean((g^2 - 1)^2) over every component of g = d sigma / d canonical point (per component,
  not on the gradient's norm, as the intended loss computes it). The generator computes g only in training mode.

Shapes: real_conditions is the batched pose-condition dict (vertices [B, V, 3], fk_matrices [B, 24, 4, 4],
lbs_weights [B, V, 24], full_pose [B, 24, 3, 3], body_shape [B, 10]) of the chunk's real images.
Statistics added: 'Loss/G/prior', 'Loss/G/eikonal' [], 'Progress/cond/real_conditions',
'Progress/cond/real_camera' [] (0 or 1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import torch

from op3d.rendering.renderer import RendererDraws
from op3d.training.loss import GANLoss, LossDraws

CURRICULUM_KIMG = (200, 400, 800, 1200)
"""Where the conditioning curriculum changes stage (thousands of images shown)."""
PRIOR_WEIGHT = 1.0
EIKONAL_WEIGHT = 1e-3


def conditioning_stage(cur_nimg: int, curriculum_kimg: Sequence[float] = CURRICULUM_KIMG) -> tuple[bool, bool]:
    """(D sees the real SMPL conditions, fakes use the real images' cameras) after cur_nimg images.

    curriculum_kimg = (t0, t1, t2, t3), increasing: before t0 (False, False); [t0, t1) (True, True); [t1, t2)
    (False, False); [t2, t3) (True, True); from t3 on (True, False)."""
    check_curriculum(curriculum_kimg)
    kimg = cur_nimg / 1e3
    stage = sum(kimg >= t for t in curriculum_kimg)
    return ((False, False), (True, True), (False, False), (True, True), (True, False))[stage]


def check_curriculum(curriculum_kimg: Sequence[float]) -> None:
    """ValueError unless curriculum_kimg is four non-negative, non-decreasing numbers."""
    values = list(curriculum_kimg)
    if len(values) != 4 or any(v < 0 for v in values) or values != sorted(values):
        raise ValueError(f"curriculum_kimg: expected four non-negative, non-decreasing kimg values (default "
                         f"{','.join(map(str, CURRICULUM_KIMG))}), got {values}")


def zeroed_conditions(conditions: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The conditions with the parts D reads (body_shape, full_pose) set to zero: D's pose label becomes all zeros."""
    return {**conditions, "body_shape": torch.zeros_like(conditions["body_shape"]),
            "full_pose": torch.zeros_like(conditions["full_pose"])}


class ConditionalGANLoss(GANLoss):
    """GANLoss for the SMPL-conditional generator (ConditionalOrthoPlanesGenerator) and discriminator
    (DualDiscriminatorWithWarping). Extra arguments: prior_weight, eikonal_weight and curriculum_kimg (see the
    module docstring); accumulate_gradients takes the chunk's real_conditions."""

    def __init__(self, G, D, augment_pipe=None, prior_weight: float = PRIOR_WEIGHT,
                 eikonal_weight: float = EIKONAL_WEIGHT, curriculum_kimg: Sequence[float] = CURRICULUM_KIMG,
                 **loss_kwargs):
        super().__init__(G, D, augment_pipe=augment_pipe, **loss_kwargs)
        if prior_weight < 0 or eikonal_weight < 0:
            raise ValueError(f"prior_weight and eikonal_weight must be >= 0, got {prior_weight}, {eikonal_weight}")
        check_curriculum(curriculum_kimg)
        self.prior_weight = prior_weight
        self.eikonal_weight = eikonal_weight
        self.curriculum_kimg = tuple(float(t) for t in curriculum_kimg)
        self._g_conditions = None  # set for the duration of one accumulate_gradients call
        self._d_conditions = None

    @contextlib.contextmanager
    def _conditioned(self, g_conditions: dict, d_conditions: dict):
        self._g_conditions, self._d_conditions = g_conditions, d_conditions
        try:
            yield
        finally:
            self._g_conditions = self._d_conditions = None

    # --- hooks of GANLoss ---------------------------------------------------------------------------------------
    def _synthesis(self, ws, c, resolution, update_emas, renderer_draws: RendererDraws | None) -> dict:
        return self.G.synthesis(ws, c, self._g_conditions, neural_rendering_resolution=resolution,
                                update_emas=update_emas, noise_mode=self.noise_mode, renderer_draws=renderer_draws)

    def _sample_mixed(self, coordinates, directions, ws) -> torch.Tensor:
        return self.G.sample_mixed(coordinates, directions, ws, self._g_conditions, update_emas=False,
                                   noise_mode=self.noise_mode)["sigma"]

    def _discriminate(self, images: dict, c, update_emas: bool) -> torch.Tensor:
        return self.D(images, c, self._d_conditions, update_emas=update_emas)

    def _generator_extra_loss(self, fake: dict) -> tuple[torch.Tensor | None, dict]:
        """prior_weight * mean((sdf - sdf_zero)^2) + eikonal_weight * mean((g^2 - 1)^2)."""
        sdf = fake["sdf"]
        prior = (sdf["sdf"] - sdf["sdf_zero"]).square().mean() * self.prior_weight
        stats = {"Loss/G/prior": prior.detach()}
        total = prior
        if sdf["eik_grad"] is not None:
            eikonal = (sdf["eik_grad"].square() - 1).square().mean() * self.eikonal_weight
            stats["Loss/G/eikonal"] = eikonal.detach()
            total = total + eikonal
        elif self.eikonal_weight > 0:
            raise RuntimeError("the eikonal term needs the generator's eik_grad, which it computes only in "
                               "training mode with autograd enabled (G.train())")
        return total, stats

    # --- entry point ------------------------------------------------------------------------------------------
    def accumulate_gradients(self, phase: str, real_img: torch.Tensor, real_c: torch.Tensor, gen_z: torch.Tensor,
                             gen_c: torch.Tensor, gain: float, cur_nimg: int,
                             draws: LossDraws | Sequence[torch.Tensor] | Mapping[str, torch.Tensor] | None = None,
                             real_conditions: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """GANLoss.accumulate_gradients with the chunk's real pose conditions (required; batch of real_img and
        gen_z alike). The fakes' camera is gen_c or real_c as the curriculum says."""
        if real_conditions is None:
            raise TypeError("ConditionalGANLoss.accumulate_gradients: real_conditions (the real images' batched "
                            "pose conditions) are required")
        for key, value in real_conditions.items():
            if isinstance(value, torch.Tensor) and value.shape[0] != gen_z.shape[0]:
                raise ValueError(f"real_conditions[{key!r}] has batch {value.shape[0]}, gen_z {gen_z.shape[0]}: "
                                 "every fake takes the pose of the real image in the same position")
        use_conditions, real_camera = conditioning_stage(cur_nimg, self.curriculum_kimg)
        fake_c = real_c if real_camera else gen_c
        d_conditions = dict(real_conditions) if use_conditions else zeroed_conditions(real_conditions)
        with self._conditioned(dict(real_conditions), d_conditions):
            stats = super().accumulate_gradients(phase, real_img, real_c, gen_z, fake_c, gain, cur_nimg, draws)
        stats["Progress/cond/real_conditions"] = torch.tensor(float(use_conditions))
        stats["Progress/cond/real_camera"] = torch.tensor(float(real_camera))
        return stats
