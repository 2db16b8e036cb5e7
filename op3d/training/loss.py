"""The GAN training objective of OP3D / EG3D (the official live loss class `StyleGAN2Loss`, spec section 5.2):
for one training phase, run the forward passes, the losses and their backward pass (scaled by the phase gain), and
return the statistics the official loss reports.

Phases: 'Gmain' (non-saturating G loss), 'Greg' (density regularisation), 'Dmain' (D loss on fakes and reals),
'Dreg' (R1 on the real image and the real raw image); 'Gboth' / 'Dboth' run main and regularisation in one call
(what the official loop does when a regularisation interval is None).

Shapes: real_img [B, 3, H, W] float in [-1, 1]; real_c, gen_c [B, 25] (16 cam2world + 9 normalized intrinsics);
gen_z [B, z_dim]. Statistics: 'Loss/scores/*', 'Loss/signs/*', 'Loss/G/loss', 'Loss/D/loss' [B, 1];
'Loss/r1_penalty', 'Loss/D/reg' [B]; op3d's own 'Loss/G/density_reg' (and 'Loss/G/density_monotonic') [].

Random numbers: every draw goes through `LossDraws`, which either takes recorded tensors in call order (parity
replays) or draws from torch's global RNG with the official calls, order and shapes, so that
`torch.manual_seed(s)` before a phase reproduces the official numbers.

Official behaviour kept (checkpoints and parity depend on it):
* R1 is the gradient with respect to the images D actually sees: the real image after the blur (and the
  augmentation), because the official code overwrites its input dict before taking the gradient.
* The real raw target is blurred; the fake raw image never is. Style mixing in the G forward pass maps the fresh z
  with the camera label, not with the (swapped or zeroed) conditioning label.
* Dmain updates the mapping's w_avg (update_emas=True on the fake pass).
Official defects fixed or refused:
* The Greg style-mixing branch refers to undefined names (NameError whenever style_mixing_prob > 0); here it mixes
  exactly like the G forward pass.
* reg_type 'l1-alt' / 'total-variation' are accepted officially but implemented nowhere; here they are a
  ValueError at construction. Likewise r1_gamma_init / r1_gamma_fade_kimg, stored and never used officially.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from op3d.networks.discriminator import filtered_resizing
from op3d.networks.ops import setup_filter
from op3d.training.draws import LossDraws
from op3d.training.schedules import (blur_images, blur_kernel, blur_sigma_at, neural_rendering_resolution_at,
                                     swap_probability_at)

__all__ = ["FILTER_MODES", "PHASES", "REG_TYPES", "GANLoss", "LossDraws", "blur_images", "blur_kernel", "blur_sigma_at",
           "check_reg_type", "neural_rendering_resolution_at", "swap_probability_at"]

PHASES = ("Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth")
FILTER_MODES = ("antialiased", "none", "classic")
# reg_type values the official CLI accepts; the last two reach no code there (Greg would silently do nothing).
REG_TYPES = ("l1", "monotonic-detach", "monotonic-fixed")
NO_OP_REG_TYPES = ("l1-alt", "total-variation")
DENSITY_REG_POINTS = 1000
MONOTONIC_POINTS = 2000
MONOTONIC_WEIGHT = 10.0
# The monotonic regularisers compare density at a point and 1/256 box side behind it (-z), and perturb the l1 pairs
# by the same distance (instead of density_reg_p_dist).
MONOTONIC_STEP = 1 / 256


def check_reg_type(reg_type: str) -> None:
    """Reject density-regularisation types that do not exist, including the two the official CLI accepts but
    implements nowhere (training would silently run without density regularisation)."""
    if reg_type in NO_OP_REG_TYPES:
        raise ValueError(f"reg_type {reg_type!r} is accepted by the official train script but implemented nowhere "
                         f"(no density regularisation would happen); use one of {REG_TYPES}, or density_reg=0 to "
                         "disable it")
    if reg_type not in REG_TYPES:
        raise ValueError(f"reg_type must be one of {REG_TYPES}, got {reg_type!r}")


# --- the loss ---------------------------------------------------------------------------------------------------------

class GANLoss:
    """The EG3D / OP3D GAN objective (official `StyleGAN2Loss`), with the official loss_kwargs names, so that
    `GANLoss(G, D, **loss_kwargs)` works with the train script's dict minus its 'class_name'.

    G: a PlaneGenerator (density_reg, density_reg_p_dist, reg_type and box_warp come from G.settings);
    D: a DualDiscriminator. augment_pipe: a module mapping images [B, C, H, W] -> [B, C, H, W], called on the
    6-channel [image, raw image resized to the image size]. noise_mode (op3d addition): the backbone noise mode of
    G's forward passes; the official loss uses the default 'random', the parity fixtures 'const'.
    r1_gamma_init / r1_gamma_fade_kimg are official arguments that the official loss stores and never uses: only
    their defaults are accepted, so a requested R1 schedule is not silently ignored.

    The caller (the training loop) sets requires_grad on the phase's module only, as the official loop does;
    Dmain renders its fakes without autograd, so it never produces G gradients."""

    def __init__(self, G, D, augment_pipe=None, r1_gamma: float = 10, style_mixing_prob: float = 0,
                 blur_init_sigma: float = 0, blur_fade_kimg: float = 0, filter_mode: str = "antialiased",
                 gpc_reg_prob: float | None = None, gpc_reg_fade_kimg: float = 1000, dual_discrimination: bool = False,
                 neural_rendering_resolution_initial: int = 64, neural_rendering_resolution_final: int | None = None,
                 neural_rendering_resolution_fade_kimg: float = 0, r1_gamma_init: float = 0,
                 r1_gamma_fade_kimg: float = 0, noise_mode: str = "random", **unknown):
        if unknown:
            raise TypeError(f"GANLoss: unknown loss argument(s) {sorted(unknown)} (drop 'class_name' from the "
                            "official loss_kwargs before passing them)")
        if filter_mode not in FILTER_MODES:
            raise ValueError(f"filter_mode must be one of {FILTER_MODES}, got {filter_mode!r}")
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        if r1_gamma_init != 0 or r1_gamma_fade_kimg != 0:
            raise ValueError("r1_gamma_init / r1_gamma_fade_kimg are ignored by the official loss (no R1 schedule "
                             f"exists); got {r1_gamma_init} / {r1_gamma_fade_kimg}, expected 0 / 0")
        if not 0 <= style_mixing_prob <= 1:
            raise ValueError(f"style_mixing_prob must be in [0, 1], got {style_mixing_prob}")
        if G.settings.density_reg > 0:
            check_reg_type(G.settings.reg_type)
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = r1_gamma
        self.style_mixing_prob = style_mixing_prob
        self.blur_init_sigma = blur_init_sigma
        self.blur_fade_kimg = blur_fade_kimg
        self.filter_mode = filter_mode
        self.gpc_reg_prob = gpc_reg_prob
        self.gpc_reg_fade_kimg = gpc_reg_fade_kimg
        self.dual_discrimination = dual_discrimination
        self.neural_rendering_resolution_initial = neural_rendering_resolution_initial
        self.neural_rendering_resolution_final = neural_rendering_resolution_final
        self.neural_rendering_resolution_fade_kimg = neural_rendering_resolution_fade_kimg
        self.noise_mode = noise_mode
        self.resample_filter = setup_filter([1, 3, 3, 1])

    # --- G side ----------------------------------------------------------------------------------------------
    def _conditioning_label(self, c: torch.Tensor, swap_prob: float | None, per_sample: bool,
                            draws: LossDraws) -> torch.Tensor:
        """G's mapping label: with probability swap_prob the previous sample's label (roll by one), decided per
        sample (per_sample) or once for the batch; all zeros when swap_prob is None."""
        if swap_prob is None:
            return torch.zeros_like(c)
        shape = [c.shape[0], 1] if per_sample else []
        swap = draws.uniform(shape, c.device, "label-swap draw") < swap_prob
        return torch.where(swap, torch.roll(c, 1, 0), c)

    def _style_mix(self, ws: torch.Tensor, z: torch.Tensor, c: torch.Tensor, draws: LossDraws) -> torch.Tensor:
        """With probability style_mixing_prob, replace ws[:, cutoff:] (cutoff uniform in 1 .. num_ws - 1) by the
        ws of a fresh z [B, z_dim] mapped with the camera label c [B, 25] (officially not the conditioning label).
        The three draws happen whenever style_mixing_prob > 0, as officially."""
        if self.style_mixing_prob <= 0:
            return ws
        num_ws = ws.shape[1]
        cutoff = draws.integer(1, num_ws, ws.device, "style-mixing cutoff")
        if not draws.uniform([], ws.device, "style-mixing apply draw") < self.style_mixing_prob:
            cutoff = num_ws
        z_mix = draws.normal(list(z.shape), z.device, "style-mixing z")
        if cutoff == num_ws:
            return ws
        mixed = self.G.mapping(z_mix, c, update_emas=False)
        keep = (torch.arange(num_ws, device=ws.device) < cutoff).reshape(1, -1, 1)
        return torch.where(keep, ws, mixed)

    def _generate(self, z: torch.Tensor, c: torch.Tensor, swap_prob: float | None, resolution: int,
                  draws: LossDraws, update_emas: bool = False) -> dict:
        """Fake images for latents z [B, z_dim] rendered from cameras c [B, 25] (the official run_G)."""
        label = self._conditioning_label(c, swap_prob, per_sample=True, draws=draws)
        ws = self.G.mapping(z, label, update_emas=update_emas)
        ws = self._style_mix(ws, z, c, draws)
        renderer_draws = draws.renderer(z.shape[0], resolution ** 2, self.G.settings, z.device)
        return self._synthesis(ws, c, resolution, update_emas, renderer_draws)

    def _synthesis(self, ws: torch.Tensor, c: torch.Tensor, resolution: int, update_emas: bool,
                   renderer_draws: RendererDraws | None) -> dict:
        """G.synthesis of ws [B, num_ws, w_dim] from cameras c [B, 25] (the conditional loss adds the pose)."""
        return self.G.synthesis(ws, c, neural_rendering_resolution=resolution, update_emas=update_emas,
                                noise_mode=self.noise_mode, renderer_draws=renderer_draws)

    def _regularisation_ws(self, z: torch.Tensor, c: torch.Tensor, swap_prob: float | None,
                           draws: LossDraws) -> torch.Tensor:
        """ws for density regularisation: one label-swap decision for the whole batch, then style mixing.

        Fix: the official Greg style-mixing branch uses the undefined names `z` and `c` (NameError whenever
        style_mixing_prob > 0); they are taken to be the generator latents and camera labels, as in the G forward
        pass (same draws: cutoff, apply draw, fresh z)."""
        label = self._conditioning_label(c, swap_prob, per_sample=False, draws=draws)
        ws = self.G.mapping(z, label, update_emas=False)
        return self._style_mix(ws, z, c, draws)

    def _density_pairs(self, points: torch.Tensor, others: torch.Tensor, ws: torch.Tensor,
                       draws: LossDraws) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw densities [B, n, 1] at points [B, n, 3] and at others [B, n, 3], from one sample_mixed call."""
        coordinates = torch.cat([points, others], dim=1)
        # Random directions are drawn as officially, although the decoder ignores them.
        directions = draws.normal(list(coordinates.shape), coordinates.device, "density-reg directions")
        sigma = self._sample_mixed(coordinates, directions, ws)
        return sigma[:, :points.shape[1]], sigma[:, points.shape[1]:]

    def _sample_mixed(self, coordinates: torch.Tensor, directions: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        """G.sample_mixed's 'sigma' [B, N, 1] at coordinates [B, N, 3] (the conditional loss adds the pose)."""
        return self.G.sample_mixed(coordinates, directions, ws, update_emas=False, noise_mode=self.noise_mode)["sigma"]

    def _uniform_points(self, n_batch: int, n_points: int, device, draws: LossDraws) -> torch.Tensor:
        """Points uniform in [-1, 1]^3 (world units, whatever box_warp is): [B, n, 3]."""
        return draws.uniform([n_batch, n_points, 3], device, "density-reg points") * 2 - 1

    def _density_regularization(self, z: torch.Tensor, c: torch.Tensor, swap_prob: float | None, gain: float,
                                draws: LossDraws) -> dict:
        """Greg: backward of the density regulariser times gain. 'l1': density_reg * mean |sigma(x) -
        sigma(x + N(0, p_dist^2))|. 'monotonic-detach' / 'monotonic-fixed' first add 10 * mean relu(sigma(x) -
        sigma(x - box_warp/256 * e_z)) over 2000 points (sigma(x) detached in the '-detach' variant: only the
        point behind is pushed up), with its own label draw and mapping, then the l1 term with p_dist =
        box_warp/256."""
        settings = self.G.settings
        check_reg_type(settings.reg_type)
        n = z.shape[0]
        stats = {}
        p_dist = settings.density_reg_p_dist
        if settings.reg_type.startswith("monotonic"):
            ws = self._regularisation_ws(z, c, swap_prob, draws)
            front = self._uniform_points(n, MONOTONIC_POINTS, z.device, draws)
            step = torch.tensor([0.0, 0.0, -1.0], device=z.device) * (MONOTONIC_STEP * settings.box_warp)
            sigma_front, sigma_behind = self._density_pairs(front, front + step, ws, draws)
            if settings.reg_type == "monotonic-detach":
                sigma_front = sigma_front.detach()
            monotonic = torch.relu(sigma_front - sigma_behind).mean() * MONOTONIC_WEIGHT
            monotonic.mul(gain).backward()
            stats["Loss/G/density_monotonic"] = monotonic.detach()
            p_dist = MONOTONIC_STEP * settings.box_warp
        ws = self._regularisation_ws(z, c, swap_prob, draws)
        points = self._uniform_points(n, DENSITY_REG_POINTS, z.device, draws)
        perturbed = points + draws.normal(list(points.shape), z.device, "density-reg perturbation") * p_dist
        sigma_a, sigma_b = self._density_pairs(points, perturbed, ws, draws)
        loss = F.l1_loss(sigma_a, sigma_b) * settings.density_reg
        loss.mul(gain).backward()
        stats["Loss/G/density_reg"] = loss.detach()
        return stats

    def _generator_extra_loss(self, fake: dict) -> tuple[torch.Tensor | None, dict]:
        """Terms added to the Gmain loss from G's output dict (scalar or None, statistics); none here, the
        conditional loss adds its SDF terms."""
        return None, {}

    # --- D side ----------------------------------------------------------------------------------------------
    def _run_D(self, image: torch.Tensor, image_raw: torch.Tensor, c: torch.Tensor, blur_sigma: float,
               update_emas: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Blur the final image, augment [image, raw image] jointly, judge: -> (logits [B, 1], the image and raw
        image D saw). The official code overwrites its input dict with the blurred / augmented tensors, so R1
        is taken with respect to what D saw; returning them keeps that behaviour."""
        image = blur_images(image, blur_sigma)
        if self.augment_pipe is not None:
            size = image.shape[-2:]
            raw_up = F.interpolate(image_raw, size=size, mode="bilinear", align_corners=False, antialias=True)
            both = self.augment_pipe(torch.cat([image, raw_up], dim=1))
            channels = image.shape[1]
            image = both[:, :channels]
            image_raw = F.interpolate(both[:, channels:], size=image_raw.shape[-2:], mode="bilinear",
                                      align_corners=False, antialias=True)
        logits = self._discriminate({"image": image, "image_raw": image_raw}, c, update_emas)
        return logits, image, image_raw

    def _discriminate(self, images: dict, c: torch.Tensor, update_emas: bool) -> torch.Tensor:
        """D(images, c) -> logits [B, 1] (the conditional loss adds the pose)."""
        return self.D(images, c, update_emas=update_emas)

    def _real_raw_image(self, real_img: torch.Tensor, resolution: int, blur_sigma: float) -> torch.Tensor:
        """D's real raw target: the real image resized to the neural rendering resolution, then blurred."""
        raw = filtered_resizing(real_img, size=resolution, f=self.resample_filter.to(real_img.device),
                                filter_mode=self.filter_mode)
        return blur_images(raw, blur_sigma)

    # --- entry point -----------------------------------------------------------------------------------------
    def accumulate_gradients(self, phase: str, real_img: torch.Tensor, real_c: torch.Tensor, gen_z: torch.Tensor,
                             gen_c: torch.Tensor, gain: float, cur_nimg: int,
                             draws: LossDraws | Sequence[torch.Tensor] | Mapping[str, torch.Tensor] | None = None
                             ) -> dict[str, torch.Tensor]:
        """Forward and backward (loss * gain) of one phase; gradients accumulate in the modules' .grad.

        real_img [B, 3, H, W] in [-1, 1]; real_c, gen_c [B, 25]; gen_z [B, z_dim]; cur_nimg: images shown so
        far (drives the schedules). draws: recorded random draws for this call (see LossDraws).
        Returns the reported statistics, detached. A regularisation phase whose weight is 0 (density_reg, r1_gamma)
        does nothing, as officially."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if real_img.ndim != 4 or not real_img.is_floating_point():
            raise ValueError(f"real_img: expected a float tensor [B, C, H, W] in [-1, 1], got {real_img.dtype} "
                             f"{list(real_img.shape)}")
        if real_img.shape[0] != real_c.shape[0] or gen_z.shape[0] != gen_c.shape[0]:
            raise ValueError(f"batch sizes differ: real_img {real_img.shape[0]}, real_c {real_c.shape[0]} / "
                             f"gen_z {gen_z.shape[0]}, gen_c {gen_c.shape[0]}")
        if self.G.settings.density_reg == 0:
            phase = {"Greg": "none", "Gboth": "Gmain"}.get(phase, phase)
        if self.r1_gamma == 0:
            phase = {"Dreg": "none", "Dboth": "Dmain"}.get(phase, phase)
        draws = draws if isinstance(draws, LossDraws) else LossDraws(draws)
        blur_sigma = blur_sigma_at(cur_nimg, self.blur_init_sigma, self.blur_fade_kimg)
        swap_prob = swap_probability_at(cur_nimg, self.gpc_reg_prob, self.gpc_reg_fade_kimg)
        resolution = neural_rendering_resolution_at(cur_nimg, self.neural_rendering_resolution_initial,
                                                    self.neural_rendering_resolution_final,
                                                    self.neural_rendering_resolution_fade_kimg)
        stats = {}

        if phase in ("Gmain", "Gboth"):
            fake = self._generate(gen_z, gen_c, swap_prob, resolution, draws)
            logits, _, _ = self._run_D(fake["image"], fake["image_raw"], gen_c, blur_sigma)
            loss = F.softplus(-logits)
            stats.update({"Loss/scores/fake": logits, "Loss/signs/fake": logits.sign(), "Loss/G/loss": loss})
            extra, extra_stats = self._generator_extra_loss(fake)
            stats.update(extra_stats)
            total = loss.mean() if extra is None else loss.mean() + extra
            total.mul(gain).backward()

        if phase in ("Greg", "Gboth"):
            stats.update(self._density_regularization(gen_z, gen_c, swap_prob, gain, draws))

        main, r1 = phase in ("Dmain", "Dboth"), phase in ("Dreg", "Dboth")
        if main:
            with torch.no_grad():
                fake = self._generate(gen_z, gen_c, swap_prob, resolution, draws, update_emas=True)
            logits, _, _ = self._run_D(fake["image"], fake["image_raw"], gen_c, blur_sigma, update_emas=True)
            loss_fake = F.softplus(logits)
            stats.update({"Loss/scores/fake": logits, "Loss/signs/fake": logits.sign()})
            loss_fake.mean().mul(gain).backward()

        if main or r1:
            image = real_img.detach().requires_grad_(r1)
            image_raw = self._real_raw_image(real_img, resolution, blur_sigma).detach().requires_grad_(r1)
            logits, seen_image, seen_raw = self._run_D(image, image_raw, real_c, blur_sigma)
            stats.update({"Loss/scores/real": logits, "Loss/signs/real": logits.sign()})
            total = 0
            if main:
                loss_real = F.softplus(-logits)
                stats["Loss/D/loss"] = loss_fake + loss_real
                total = loss_real.mean()
            if r1:
                inputs = [seen_image, seen_raw] if self.dual_discrimination else [seen_image]
                grads = torch.autograd.grad(outputs=[logits.sum()], inputs=inputs, create_graph=True)
                penalty = sum(g.square().sum([1, 2, 3]) for g in grads)
                loss_r1 = penalty * (self.r1_gamma / 2)
                stats.update({"Loss/r1_penalty": penalty, "Loss/D/reg": loss_r1})
                total = total + loss_r1.mean()
            total.mul(gain).backward()

        draws.check_consumed()
        return {name: value.detach() for name, value in stats.items()}
