"""A run's dataset, networks, augmentation and loss, built from the training spec's official class names."""

from __future__ import annotations

import torch

from op3d.networks.conditional import ConditionalOrthoPlanesGenerator
from op3d.networks.discriminator import DualDiscriminator, DualDiscriminatorWithWarping
from op3d.networks.generator import OrthoPlanesGenerator, TriPlaneGenerator

# The spec's class names (official module paths) -> op3d classes. The conditional entries serve train_conditional.py.
GENERATOR_CLASSES = {"training.orthoplanes.TriMultiPlaneGenerator": OrthoPlanesGenerator,
                     "training.triplane.TriPlaneGenerator": TriPlaneGenerator,
                     "training.kaolin_version.TriMultiPlaneGenerator": ConditionalOrthoPlanesGenerator}
DISCRIMINATOR_CLASSES = {"training.dual_discriminator.DualDiscriminator": DualDiscriminator,
                         "training.dual_discriminator.DualDiscriminatorWithWarping": DualDiscriminatorWithWarping}
ADA_INTERVAL = 4


def _without_class_name(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k != "class_name"}


def open_dataset(spec: dict):
    """The training set of spec['training_set_kwargs']: images and camera labels, plus pose conditions for the
    conditional dataset class."""
    from op3d.datasets import ImageFolderDataset
    from op3d.datasets.conditional import ConditionalImageDataset

    classes = {"training.dataset.ImageFolderDataset": ImageFolderDataset,
               "training.dataset_cond.ImageFolderDataset": ConditionalImageDataset}
    kwargs = dict(spec["training_set_kwargs"])
    return classes[kwargs.pop("class_name", "training.dataset.ImageFolderDataset")](**kwargs, label_dim=25)


def build_networks(spec: dict, dataset, device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Fresh G and D from the training spec's G_kwargs / D_kwargs and the dataset's label size and images. The
    conditional generator also gets the body mesh faces of the spec's SMPL model ('smpl_model')."""
    common = dict(c_dim=dataset.label_dim, img_resolution=dataset.resolution, img_channels=dataset.num_channels)
    g_kwargs = _without_class_name(spec["G_kwargs"])
    d_kwargs = _without_class_name(spec["D_kwargs"])
    G_class = GENERATOR_CLASSES[spec["G_kwargs"]["class_name"]]
    if G_class is ConditionalOrthoPlanesGenerator:
        from op3d.smpl.body_model import load_smpl_model
        g_kwargs["faces"] = load_smpl_model(spec["smpl_model"]).faces
    G = G_class(**g_kwargs, **common)
    D = DISCRIMINATOR_CLASSES[spec["D_kwargs"]["class_name"]](**d_kwargs, **common)
    G.neural_rendering_resolution = spec["loss_kwargs"]["neural_rendering_resolution_initial"]
    G.dataset_label_std = torch.from_numpy(dataset.get_label_std())
    return G.train().requires_grad_(False).to(device), D.train().requires_grad_(False).to(device)


def build_augmentation(spec: dict, device: torch.device):
    """(augment pipe with p = spec['augment_p'], or None without 'augment_kwargs'; the adaptive controller of p, or
    None without 'ada_target')."""
    from op3d.augmentation import AugmentPipe
    from op3d.training.augment import AdaptiveAugment

    if "augment_kwargs" not in spec:
        return None, None
    augment_pipe = AugmentPipe(**_without_class_name(spec["augment_kwargs"]))
    augment_pipe = augment_pipe.train().requires_grad_(False).to(device)
    augment_pipe.p.copy_(torch.as_tensor(spec.get("augment_p", 0.0)))
    ada = None
    if "ada_target" in spec:
        ada = AdaptiveAugment(target=spec["ada_target"], interval=ADA_INTERVAL, kimg=spec.get("ada_kimg", 500),
                              device=device)
    return augment_pipe, ada


def build_loss(spec: dict, G, D, augment_pipe):
    """The loss of spec['loss_kwargs']: GANLoss, or ConditionalGANLoss for the warping-SDF loss class."""
    from op3d.training.loss import GANLoss
    from op3d.training.loss_cond import ConditionalGANLoss

    loss_class = {"training.loss.StyleGAN2Loss": GANLoss,
                  "training.loss.StyleGAN2LossWithWarpingSDF": ConditionalGANLoss}[spec["loss_kwargs"]["class_name"]]
    return loss_class(G, D, augment_pipe=augment_pipe, **_without_class_name(spec["loss_kwargs"]))
