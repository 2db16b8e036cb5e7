"""CPU unit tests of op3d.networks: numerical ops, equalized layers, mapping, (multiplane) synthesis,
superresolution, dual discriminator and the two 3D generators.

Expectations come from plain-PyTorch reference formulas written here from the definitions (zero-insertion FIR
resampling, explicitly modulated/demodulated weights, the mapping MLP, the minibatch-std statistic), from analytic
identities (constants stay constant, identical ws rows make the two style paths agree) and from the reference
specification; never from outputs of the code under test. All networks are tiny so the file runs in seconds.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from op3d import fast_paths
from op3d.networks.discriminator import DualDiscriminator, MinibatchStdLayer, filtered_resizing
from op3d.networks.generator import OrthoPlanesGenerator, TriPlaneGenerator
from op3d.networks.layers import Conv2dLayer, FullyConnectedLayer, MappingNetwork
from op3d.networks.multiplane import MultiplaneBackbone, MultiplaneSynthesisNetwork, plane_positions, \
    positional_encoding
from op3d.networks.ops import (bias_act, conv2d_resample, downsample2d, filter2d, modulated_conv2d,
                               normalize_2nd_moment, setup_filter, upfirdn2d, upsample2d)
from op3d.networks.superresolution import VARIANTS, Superresolution, variant_for_resolution
from op3d.networks.synthesis import SynthesisLayer, ToRGBLayer
from op3d.rendering.rays import sample_rays
from op3d.rendering.renderer import RendererDraws, render_rays

SQRT2 = math.sqrt(2)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=gen(seed))


def assert_close(actual, expected, rtol=1e-5, atol=1e-5):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def lrelu_ref(x):
    return torch.where(x >= 0, x, 0.2 * x)


# ----------------------------------------------------------------------------------------------------------------
# Independent references for FIR resampling (written from the definitions)
# ----------------------------------------------------------------------------------------------------------------

TAPS = torch.tensor([1.0, 3.0, 3.0, 1.0])


def fir_kernel(gain=1.0):
    """The 4x4 low-pass: outer product of [1, 3, 3, 1], normalised to sum `gain`."""
    k = torch.outer(TAPS, TAPS)
    return k / k.sum() * gain


def depthwise(x, k):
    c = x.shape[1]
    return F.conv2d(x, k.to(x.dtype).expand(c, 1, *k.shape), groups=c)


def zero_insert(x):
    """x2 zero-insertion: x[i, j] lands at (2i, 2j) of a 2H x 2W grid, everything else 0 (done with a 1x1
    transposed convolution of stride 2 plus a trailing zero row/column)."""
    c = x.shape[1]
    u = F.conv_transpose2d(x, torch.ones(c, 1, 1, 1, dtype=x.dtype), stride=2, groups=c)
    return F.pad(u, [0, 1, 0, 1])


def ref_upsample(x, pad_before=2, pad_after=1):
    """Zero-insertion x2, pad, convolve with the [1,3,3,1] filter times 4 (symmetric, so conv == correlation).
    The default padding (2 before, 1 after) gives exactly 2H x 2W; more padding extends the result beyond it."""
    u = F.pad(zero_insert(x), [pad_before, pad_after, pad_before, pad_after])
    return depthwise(u, fir_kernel(4.0))


def ref_downsample(x):
    """Low-pass with the [1,3,3,1] filter (pad 1 on each side), keep every second sample: H/2 x W/2."""
    return depthwise(F.pad(x, [1, 1, 1, 1]), fir_kernel())[:, :, ::2, ::2]


def ref_up_conv(x, w, padding=1):
    """Upsampling convolution on the infinite grid: zero-insert x2, FIR (x4), then the k x k correlation with w,
    cropped to the 2H x 2W window with `padding` extra samples on each side (so there is no artificial zero border
    between the FIR and the conv)."""
    return F.conv2d(ref_upsample(x, 2 + padding, 1 + padding), w)


def ref_down_conv(x, w):
    """FIR low-pass then a stride-2 3x3 correlation (padding 1). Blurred sample p is the filter centred at p + 1/2
    (as in ref_downsample); the conv reads blurred samples 2m - 1 .. 2m + 1, which needs 2 zeros of input padding
    on each side."""
    return F.conv2d(depthwise(F.pad(x, [2, 2, 2, 2]), fir_kernel()), w, stride=2)


# ----------------------------------------------------------------------------------------------------------------
# 1. ops
# ----------------------------------------------------------------------------------------------------------------


def test_bias_act_linear_adds_bias_along_dim():
    x, b = randn(2, 3, 4, 5), randn(3, seed=1)
    assert_close(bias_act(x, b), x + b.view(1, 3, 1, 1))
    b2 = randn(4, seed=2)
    assert_close(bias_act(x, b2, dim=2), x + b2.view(1, 1, 4, 1))
    assert_close(bias_act(x, None, gain=0.5), 0.5 * x)
    assert_close(bias_act(x), x)


def test_bias_act_lrelu_default_gain_and_clamp():
    x, b = randn(2, 3, 4, 5) * 3, randn(3, seed=1)
    pre = x + b.view(1, 3, 1, 1)
    assert_close(bias_act(x, b, act="lrelu"), lrelu_ref(pre) * SQRT2)
    assert_close(bias_act(x, b, act="lrelu", gain=1), lrelu_ref(pre))
    # The clamp applies after the gain.
    y = bias_act(x, b, act="lrelu", gain=3.0, clamp=2.5)
    assert_close(y, (lrelu_ref(pre) * 3.0).clamp(-2.5, 2.5))
    assert (y.abs() == 2.5).any() and y.abs().max() <= 2.5
    assert_close(bias_act(x, b, act="relu"), F.relu(pre) * SQRT2)


def test_setup_filter_is_normalized_outer_product():
    f = setup_filter()
    expected = torch.tensor([[1, 3, 3, 1], [3, 9, 9, 3], [3, 9, 9, 3], [1, 3, 3, 1]], dtype=torch.float32) / 64
    assert f.dtype == torch.float32 and f.shape == (4, 4)
    assert_close(f, expected, rtol=0, atol=0)


def test_upfirdn2d_is_a_true_convolution_with_padding_order():
    x = randn(1, 2, 6, 7)
    f = randn(3, 2, seed=1)  # asymmetric, non-square: orientation and axis order matter
    pad = [1, 2, 0, 1]  # [x0, x1, y0, y1]
    padded = F.pad(x, pad)  # F.pad also takes [left, right, top, bottom]
    assert_close(upfirdn2d(x, f, padding=pad), depthwise(padded, f.flip([0, 1])))
    assert_close(upfirdn2d(x, f, padding=pad, flip_filter=True), depthwise(padded, f))
    assert_close(upfirdn2d(x, f, padding=pad, gain=3.0), 3.0 * depthwise(padded, f.flip([0, 1])))
    # Decimation keeps samples 0, 2, 4, ...; negative padding crops.
    assert_close(upfirdn2d(x, f, padding=pad, down=2), depthwise(padded, f.flip([0, 1]))[:, :, ::2, ::2])
    assert_close(upfirdn2d(x, None, padding=[-1, -2, -1, 0]), x[:, :, 1:, 1:-2])


def test_upsample2d_of_constant_is_constant_inside():
    x = torch.full([1, 2, 6, 6], 1.7)
    y = upsample2d(x, setup_filter())
    assert y.shape == (1, 2, 12, 12)
    assert_close(y[:, :, 2:-2, 2:-2], torch.full_like(y[:, :, 2:-2, 2:-2], 1.7))
    assert y[0, 0, 0, 0] < 1.7  # zero padding outside the image


def test_upsample_downsample_match_references():
    x = randn(2, 3, 5, 6)
    f = setup_filter()
    assert_close(upsample2d(x, f), ref_upsample(x))
    assert downsample2d(x[:, :, :4], f).shape == (2, 3, 2, 3)
    assert_close(downsample2d(x[:, :, :4], f), ref_downsample(x[:, :, :4]))
    assert_close(downsample2d(upsample2d(x, f), f), ref_downsample(ref_upsample(x)))
    # Same-size filtering with the 4-tap filter (half-sample shift: pad 2 before, 1 after).
    assert_close(filter2d(x, f), depthwise(F.pad(x, [2, 1, 2, 1]), fir_kernel()))


@pytest.mark.parametrize("flip_weight", [True, False])
def test_conv2d_resample_up_matches_insert_filter_conv(flip_weight):
    x, w = randn(2, 3, 5, 5), randn(4, 3, 3, 3, seed=1)
    y = conv2d_resample(x, w, setup_filter(), up=2, padding=1, flip_weight=flip_weight)
    # flip_weight=True: correlation with w (F.conv2d); False: a true convolution (w flipped).
    expected = ref_up_conv(x, w if flip_weight else w.flip([2, 3]))
    assert y.shape == (2, 4, 10, 10)
    assert_close(y, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_conv2d_resample_down_matches_filter_then_strided_conv():
    x, w = randn(2, 3, 8, 8), randn(4, 3, 3, 3, seed=1)
    y = conv2d_resample(x, w, setup_filter(), down=2, padding=1)
    assert y.shape == (2, 4, 4, 4)
    assert_close(y, ref_down_conv(x, w))


def test_conv2d_resample_plain_and_flip():
    x, w = randn(2, 3, 6, 6), randn(4, 3, 3, 3, seed=1)
    assert_close(conv2d_resample(x, w, padding=1), F.conv2d(x, w, padding=1))
    assert_close(conv2d_resample(x, w, padding=1, flip_weight=False), F.conv2d(x, w.flip([2, 3]), padding=1))


@pytest.mark.parametrize("mode", ["down", "up"])
def test_conv2d_resample_1x1_fast_path_equals_general_path(mode):
    """A 1x1 kernel takes a dedicated path; the same kernel embedded in a 3x3 zero kernel with padding 1 takes the
    general path and must give the same result."""
    x, w1 = randn(2, 3, 8, 8), randn(4, 3, 1, 1, seed=1)
    w3 = torch.zeros(4, 3, 3, 3)
    w3[:, :, 1, 1] = w1[:, :, 0, 0]
    kw = dict(down=2) if mode == "down" else dict(up=2)
    fast = conv2d_resample(x, w1, setup_filter(), **kw)
    general = conv2d_resample(x, w3, setup_filter(), padding=1, **kw)
    assert_close(fast, general)
    # And both match the references (1x1 conv commutes with the FIR).
    ref = ref_downsample(x) if mode == "down" else ref_upsample(x)
    assert_close(fast, F.conv2d(ref, w1))


# ----------------------------------------------------------------------------------------------------------------
# 2. modulated_conv2d
# ----------------------------------------------------------------------------------------------------------------


def ref_modulated_conv(x, weight, styles, demodulate, up=1, noise=None, flip_weight=True):
    """Per sample: scale the weight's input channels by the styles, optionally divide each output filter by its
    L2 norm (eps 1e-8 inside the sqrt), then an ordinary (upsampling) convolution with padding 1."""
    outs = []
    for i in range(x.shape[0]):
        w = weight * styles[i].view(1, -1, 1, 1)
        if demodulate:
            w = w / torch.sqrt(w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        if not flip_weight:
            w = w.flip([2, 3])
        xi = x[i:i + 1]
        outs.append(ref_up_conv(xi, w) if up == 2 else F.conv2d(xi, w, padding=1))
    y = torch.cat(outs)
    return y + noise if noise is not None else y


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("with_noise", [True, False])
def test_modulated_conv2d_fused_equals_unfused_and_reference(up, demodulate, with_noise):
    x, weight = randn(3, 4, 5, 5), randn(6, 4, 3, 3, seed=1)
    styles = randn(3, 4, seed=2) + 1
    res = 5 * up
    noise = randn(3, 1, res, res, seed=3) * 0.3 if with_noise else None
    flip = up == 1  # as SynthesisLayer uses it
    kw = dict(noise=noise, up=up, padding=1, resample_filter=setup_filter(), demodulate=demodulate, flip_weight=flip)
    fused = modulated_conv2d(x, weight, styles, fused_modconv=True, **kw)
    unfused = modulated_conv2d(x, weight, styles, fused_modconv=False, **kw)
    assert fused.shape == (3, 6, res, res)
    scale = fused.abs().max().item()
    assert_close(fused, unfused, rtol=1e-5, atol=1e-5 * scale)
    expected = ref_modulated_conv(x, weight, styles, demodulate, up=up, noise=noise, flip_weight=flip)
    assert_close(fused, expected, rtol=1e-5, atol=1e-5 * scale)


def test_demodulated_filters_have_unit_norm():
    """With demodulation every output channel is a unit-norm filter applied to the input: a delta input reads the
    filter back."""
    weight, styles = randn(5, 3, 3, 3), randn(1, 3, seed=1)
    x = torch.zeros(1, 3, 7, 7)
    x[0, 1, 3, 3] = 1.0  # delta in channel 1
    y = modulated_conv2d(x, weight, styles, padding=1)
    w = weight * styles.view(1, 3, 1, 1)
    w = w / w.square().sum(dim=[1, 2, 3], keepdim=True).sqrt()
    # Correlation: output (3 + a, 3 + b) sees the delta through tap (1 - a, 1 - b).
    assert_close(y[0, :, 2:5, 2:5], w[:, 1].flip([1, 2]))


# ----------------------------------------------------------------------------------------------------------------
# Layers and mapping network
# ----------------------------------------------------------------------------------------------------------------


def test_fully_connected_layer_equalized_lr():
    torch.manual_seed(0)
    fc = FullyConnectedLayer(6, 4, lr_multiplier=0.5, bias_init=0.3)
    x = randn(3, 6)
    w = fc.weight * 0.5 / math.sqrt(6)
    assert_close(fc(x), x @ w.t() + 0.3 * 0.5)
    fc_act = FullyConnectedLayer(6, 4, activation="lrelu", lr_multiplier=0.5, bias_init=0.3)
    w = fc_act.weight * 0.5 / math.sqrt(6)
    assert_close(fc_act(x), lrelu_ref(x @ w.t() + 0.15) * SQRT2)


def test_conv2d_layer_down_reference_and_frozen():
    torch.manual_seed(0)
    layer = Conv2dLayer(3, 4, kernel_size=3, activation="lrelu", down=2, conv_clamp=0.5)
    with torch.no_grad():
        layer.bias.copy_(randn(4, seed=5))
    x = randn(2, 3, 8, 8)
    w = layer.weight / math.sqrt(3 * 9)
    pre = ref_down_conv(x, w) + layer.bias.view(1, 4, 1, 1)
    expected = (lrelu_ref(pre) * SQRT2 * 0.7).clamp(-0.5 * 0.7, 0.5 * 0.7)
    assert_close(layer(x, gain=0.7), expected)
    frozen = Conv2dLayer(3, 4, kernel_size=3, trainable=False)
    assert len(list(frozen.parameters())) == 0
    assert {"weight", "bias"} <= set(dict(frozen.named_buffers()))


def ref_mapping(m, z, c):
    """normalize(z) ++ normalize(embed(c)), then lrelu FCs with lr multiplier 0.01 (spec 2.7)."""
    def rms_norm(v):
        return v / torch.sqrt(v.square().mean(dim=1, keepdim=True) + 1e-8)

    x = rms_norm(z)
    if c is not None:
        e = c @ (m.embed.weight / math.sqrt(m.c_dim)).t() + m.embed.bias
        x = torch.cat([x, rms_norm(e)], dim=1)
    for i in range(m.num_layers):
        fc = getattr(m, f"fc{i}")
        x = lrelu_ref(x @ (fc.weight * 0.01 / math.sqrt(fc.weight.shape[1])).t() + fc.bias * 0.01) * SQRT2
    return x


def make_mapping(c_dim=5, num_ws=4):
    torch.manual_seed(0)
    m = MappingNetwork(z_dim=8, c_dim=c_dim, w_dim=6, num_ws=num_ws, num_layers=2)
    with torch.no_grad():  # non-trivial biases so the reference exercises them
        for i in range(2):
            getattr(m, f"fc{i}").bias.copy_(randn(6, seed=10 + i) * 50)
        if c_dim:
            m.embed.bias.copy_(randn(6, seed=20))
        m.w_avg.copy_(randn(6, seed=30))
    return m


def test_mapping_network_matches_reference_and_broadcasts():
    m = make_mapping()
    z, c = randn(3, 8, seed=1), randn(3, 5, seed=2)
    ws = m(z, c)
    assert ws.shape == (3, 4, 6)
    expected = ref_mapping(m, z, c)
    for i in range(4):
        assert_close(ws[:, i], expected)


def test_mapping_network_truncation():
    m = make_mapping()
    z, c = randn(3, 8, seed=1), randn(3, 5, seed=2)
    w = ref_mapping(m, z, c)
    w_avg = m.w_avg.clone()
    ws = m(z, c, truncation_psi=0.3, truncation_cutoff=2)
    assert_close(ws[:, :2], (w_avg + 0.3 * (w - w_avg)).unsqueeze(1).expand(-1, 2, -1))
    assert_close(ws[:, 2:], w.unsqueeze(1).expand(-1, 2, -1))
    assert_close(m(z, c, truncation_psi=0.3), (w_avg + 0.3 * (w - w_avg)).unsqueeze(1).expand(-1, 4, -1))
    assert_close(m(z, c, truncation_psi=0), w_avg.expand(3, 4, -1))


def test_mapping_network_update_emas():
    m = make_mapping()
    z, c = randn(3, 8, seed=1), randn(3, 5, seed=2)
    old = m.w_avg.clone()
    m(z, c)
    assert torch.equal(m.w_avg, old)
    batch_mean = ref_mapping(m, z, c).mean(dim=0)
    m(z, c, update_emas=True)
    assert_close(m.w_avg - old, (1 - 0.998) * (batch_mean - old))


def test_mapping_network_without_label():
    m = make_mapping(c_dim=0)
    assert not hasattr(m, "embed")
    z = randn(2, 8, seed=1)
    ws = m(z, None)
    assert ws.shape == (2, 4, 6)
    assert_close(ws[:, 0], ref_mapping(m, z, None))


def test_normalize_2nd_moment_unit_rms():
    x = randn(4, 7) * 5 + 2
    y = normalize_2nd_moment(x)
    assert_close(y.square().mean(dim=1), torch.ones(4))
    assert_close(y * x.square().mean(dim=1, keepdim=True).sqrt(), x)
    y2 = normalize_2nd_moment(x, dim=0)
    assert_close(y2.square().mean(dim=0), torch.ones(7))


# ----------------------------------------------------------------------------------------------------------------
# 4. Positional code and plane positions
# ----------------------------------------------------------------------------------------------------------------


def ref_pe(t, n_freqs):
    out = [t]
    for i in range(n_freqs):
        out += [math.cos(2 ** i * math.pi * t), math.sin(2 ** i * math.pi * t)]
    return out


@pytest.mark.parametrize("n_freqs", [0, 1, 3])
def test_positional_encoding_values(n_freqs):
    ts = [-1.0, 0.0, 0.5, 1.0]
    pe = positional_encoding(torch.tensor(ts), n_freqs)
    assert pe.shape == (4, 1 + 2 * n_freqs)
    expected = torch.tensor([ref_pe(t, n_freqs) for t in ts])
    assert_close(pe, expected, rtol=0, atol=1e-6)
    # batch dims are kept
    assert positional_encoding(torch.zeros(2, 3), n_freqs).shape == (2, 3, 1 + 2 * n_freqs)


def test_positional_encoding_literals():
    # t = 0.5, L = 3: [t, cos(pi/2), sin(pi/2), cos(pi), sin(pi), cos(2 pi), sin(2 pi)] (cosine first).
    pe = positional_encoding(torch.tensor([0.5]), 3)[0]
    assert_close(pe, torch.tensor([0.5, 0.0, 1.0, -1.0, 0.0, 1.0, 0.0]), rtol=0, atol=1e-6)
    assert_close(positional_encoding(torch.tensor([-1.0]), 1)[0], torch.tensor([-1.0, -1.0, 0.0]), rtol=0, atol=1e-6)


def test_plane_positions_span_closed_interval():
    assert_close(plane_positions(2), torch.tensor([-1.0, 1.0]), rtol=0, atol=0)
    assert_close(plane_positions(5), torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]), rtol=0, atol=1e-7)
    assert_close(plane_positions(8), torch.linspace(-1, 1, 8), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# 5. Multiplane synthesis network
# ----------------------------------------------------------------------------------------------------------------

W_DIM = 16
L_TEST = 2


def make_multiplane(img_resolution=32, img_channels=6, seed=0):
    torch.manual_seed(seed)
    net = MultiplaneSynthesisNetwork(w_dim=W_DIM, img_resolution=img_resolution, img_channels=img_channels,
                                     fourier_L=L_TEST, channel_base=256, channel_max=8, num_fp16_res=0,
                                     conv_clamp=None)
    with torch.no_grad():  # nonzero biases / noise strengths so nothing is trivially zero
        for name, p in net.named_parameters():
            if name.endswith("bias") and "affine" not in name:
                p.copy_(torch.randn_like(p) * 0.1)
            if name.endswith("noise_strength"):
                p.fill_(0.2)
    return net.eval()


def first_w_index(net):
    """Spec 1.2: block b uses ws[j_b] for its plane styles, j = index of the block's first conv w:
    0 for b4 (1 conv), then 1, 3, 5, ... (2 convs per block)."""
    return {res: (0 if res == 4 else 2 * i - 1) for i, res in enumerate(net.block_resolutions)}


class _ReferencePlaneStyles:
    """Keeps the per-plane reference path (plane_gemm off, so the layer's forward runs) until removed."""

    def __init__(self):
        self.context = fast_paths.configured(plane_gemm=False)
        self.context.__enter__()

    def remove(self):
        self.context.__exit__(None, None, None)


def capture_to_depth_feature(net):
    """Record each block's to_depth_feature inputs and output, per plane (the reference path, which calls the
    layer; removing the handles restores the fast path)."""
    records, handles = {}, [_ReferencePlaneStyles()]
    for res in net.block_resolutions:
        def hook(module, inputs, output, res=res):
            records[res] = (inputs[0].detach(), inputs[1].detach(), output.detach())
        handles.append(getattr(net, f"b{res}").to_depth_feature.register_forward_hook(hook))
    return records, handles


def ref_to_rgb(layer, x, v):
    """1x1 modulated conv without demodulation: style = affine(v) / sqrt(C_in); y = sum_c W[o, c] s[c] x[c] + b."""
    a = layer.affine
    s = (v @ (a.weight / math.sqrt(a.weight.shape[1])).t() + a.bias) / math.sqrt(x.shape[1])
    return torch.einsum("oc,nc,nchw->nohw", layer.weight[:, :, 0, 0], s, x) + layer.bias.view(1, -1, 1, 1)


def test_multiplane_num_ws_and_output_shape_at_256():
    net = make_multiplane(img_resolution=256, img_channels=6)
    assert net.num_ws == 13
    with torch.no_grad():
        out = net(randn(2, 13, W_DIM), 3, noise_mode="const")
    assert out.shape == (6, 6, 256, 256)
    backbone = MultiplaneBackbone(8, 25, W_DIM, img_resolution=256, img_channels=96, channel_base=256,
                                  channel_max=8, fourier_L=L_TEST)
    assert backbone.num_ws == 13 and backbone.mapping.num_ws == 13
    # to_depth_feature style input = w_dim + 2L + 1
    assert backbone.synthesis.b256.to_depth_feature.affine.weight.shape == (1, W_DIM + 2 * L_TEST + 1)


def test_multiplane_per_plane_styles_and_skip_sum_match_reference():
    """Every block's to_depth_feature sees the block features repeated per plane (row n*K + k) and the style
    [ws[n, j_b], PE(t_k)]; its output is the 1x1 modulated conv; the planes are the FIR-upsampled skip sum.
    (The reference path, which calls the layer per plane; the fast path computes the same planes.)"""
    net = make_multiplane()
    k, n = 3, 2
    ws = randn(n, net.num_ws, W_DIM)
    with torch.no_grad():
        fast = net(ws, k, noise_mode="const")
    records, handles = capture_to_depth_feature(net)
    try:
        with torch.no_grad():
            out = net(ws, k, noise_mode="const")
    finally:
        for h in handles:
            h.remove()
    code = torch.tensor([ref_pe(t, L_TEST) for t in torch.linspace(-1, 1, k).tolist()])
    img = None
    for res, j in first_w_index(net).items():
        x, v, y = records[res]
        assert x.shape[0] == n * k and v.shape == (n * k, W_DIM + 2 * L_TEST + 1)
        for b in range(n):
            for p in range(k):
                row = b * k + p
                assert_close(x[row], x[b * k])
                assert_close(v[row], torch.cat([ws[b, j], code[p]]))
        with torch.no_grad():
            assert_close(y, ref_to_rgb(getattr(net, f"b{res}").to_depth_feature, x, v))
        img = y if img is None else ref_upsample(img) + y
    assert out.shape == (n * k, 6, 32, 32)
    assert_close(out, img, rtol=1e-4, atol=1e-5)
    assert_close(fast, out, rtol=1e-4, atol=1e-5)


def test_multiplane_rows_are_sample_major():
    net = make_multiplane()
    ws = randn(2, net.num_ws, W_DIM)
    with torch.no_grad():
        both = net(ws, 3, noise_mode="const")
        first = net(ws[:1], 3, noise_mode="const")
        second = net(ws[1:], 3, noise_mode="const")
    assert_close(both[:3], first, rtol=1e-4, atol=1e-5)
    assert_close(both[3:], second, rtol=1e-4, atol=1e-5)


def test_multiplane_planes_differ_only_through_the_code_in_the_style():
    # float64, so that "identical" is not blurred by float32 kernels that round batch rows differently.
    net = make_multiplane().double()
    ws = randn(1, net.num_ws, W_DIM).double()
    with torch.no_grad():
        out = net(ws, 4, noise_mode="const")
        for p in range(1, 4):
            assert (out[p] - out[0]).abs().max() > 1e-3
        # Cut the code out of every plane style: the K planes become identical.
        for res in net.block_resolutions:
            getattr(net, f"b{res}").to_depth_feature.affine.weight[:, W_DIM:] = 0
        out = net(ws, 4, noise_mode="const")
    for p in range(1, 4):
        assert_close(out[p], out[0], rtol=0, atol=1e-12)


def test_multiplane_shared_path_uses_last_w_and_agrees_with_identical_rows():
    net = make_multiplane()
    k = 3
    ws = randn(2, net.num_ws, W_DIM)
    records, handles = capture_to_depth_feature(net)
    try:
        with torch.no_grad():
            shared = net(ws, k, shared_w=ws[:, -1], noise_mode="const")
            code = torch.tensor([ref_pe(t, L_TEST) for t in torch.linspace(-1, 1, k).tolist()])
            for res in net.block_resolutions:
                v = records[res][1]
                for b in range(2):
                    for p in range(k):
                        assert_close(v[b * k + p], torch.cat([ws[b, -1], code[p]]))
            per_block = net(ws, k, noise_mode="const")
            # Distinct ws rows: the two paths differ (so the equality below is not vacuous).
            assert (shared - per_block).abs().max() > 1e-3
            # Identical rows: both paths give the same planes (official fact, spec 1.2).
            same = ws[:, :1].expand(-1, net.num_ws, -1).contiguous()
            assert_close(net(same, k, noise_mode="const"), net(same, k, shared_w=same[:, -1], noise_mode="const"),
                         rtol=0, atol=1e-6)
    finally:
        for h in handles:
            h.remove()


def test_multiplane_per_block_ws_are_used():
    """Changing only w row 1 changes the planes; in the shared path row 1 still drives b8's first conv (it is only
    the plane style that is shared), so the shared planes change too, but b8's plane style does not."""
    net = make_multiplane()
    ws = randn(1, net.num_ws, W_DIM)
    ws2 = ws.clone()
    ws2[:, 1] = randn(W_DIM, seed=9)
    with torch.no_grad():
        assert (net(ws, 2, noise_mode="const") - net(ws2, 2, noise_mode="const")).abs().max() > 1e-3
        records, handles = capture_to_depth_feature(net)
        try:
            net(ws, 2, shared_w=ws[:, -1], noise_mode="const")
            v1 = records[8][1].clone()
            net(ws2, 2, shared_w=ws2[:, -1], noise_mode="const")
            v2 = records[8][1]
        finally:
            for h in handles:
                h.remove()
    assert torch.equal(v1, v2)


# ----------------------------------------------------------------------------------------------------------------
# 6. Superresolution
# ----------------------------------------------------------------------------------------------------------------

SR_WS = 13


def sr_output_resolution(name):
    return VARIANTS[name].img_resolution or 64  # 0: op3d's any-size variant, tested at 64


def make_sr(name, **kw):
    torch.manual_seed(0)
    return Superresolution(name, channels=32, img_resolution=sr_output_resolution(name), **kw).eval()


def sr_inputs(res, seed=0):
    return randn(1, 3, res, res, seed=seed), randn(1, 32, res, res, seed=seed + 1), randn(1, SR_WS, 512, seed=7)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_superresolution_variants_build_and_run(name):
    sr = make_sr(name)
    out_res = sr_output_resolution(name)
    rgb, x, ws = sr_inputs(64)
    with torch.no_grad():
        y = sr(rgb, x, ws, noise_mode="none")
    assert y.shape == (1, 3, out_res, out_res) and y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_small_superresolution_doubles_any_size():
    for out_res in (32, 64):
        sr = Superresolution("SuperresolutionSmall2X", channels=32, img_resolution=out_res).eval()
        assert sr.input_resolution == out_res // 2
        rgb, x, ws = sr_inputs(out_res // 2)
        with torch.no_grad():
            y = sr(rgb, x, ws, noise_mode="none")
        assert y.shape == (1, 3, out_res, out_res) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["SuperresolutionHybrid2X", "SuperresolutionHybrid4X",
                                  "SuperresolutionHybridDeepfp32"])
def test_superresolution_resize_path_and_last_w(name):
    """A 32x32 input is resized (bilinear, align_corners=False, antialias as configured) to the module's input
    resolution; only the last w is used."""
    sr = make_sr(name)
    spec = VARIANTS[name]
    rgb, x, ws = sr_inputs(32)
    size = (spec.input_resolution,) * 2
    antialias = spec.antialias_option
    rgb_r = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=antialias)
    x_r = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)
    ws_other = ws.clone()
    ws_other[:, :-1] = randn(1, SR_WS - 1, 512, seed=99)
    with torch.no_grad():
        y = sr(rgb, x, ws, noise_mode="none")
        y_resized = sr(rgb_r, x_r, ws, noise_mode="none")
        y_other = sr(rgb, x, ws_other, noise_mode="none")
    assert y.shape == (1, 3, spec.img_resolution, spec.img_resolution)
    assert_close(y, y_resized, rtol=1e-4, atol=1e-4)
    assert_close(y, y_other, rtol=0, atol=0)


def test_superresolution_downsizes_larger_input_with_antialias():
    sr = make_sr("SuperresolutionHybrid2X")  # resizes whenever the input is not 64
    rgb, x, ws = sr_inputs(128)
    with torch.no_grad():
        y = sr(rgb, x, ws, noise_mode="none")
        aa = [F.interpolate(t, size=(64, 64), mode="bilinear", align_corners=False, antialias=True) for t in (rgb, x)]
        plain = [F.interpolate(t, size=(64, 64), mode="bilinear", align_corners=False) for t in (rgb, x)]
        assert_close(y, sr(*aa, ws, noise_mode="none"), rtol=1e-4, atol=1e-4)
        assert (y - sr(*plain, ws, noise_mode="none")).abs().max() > 1e-3


@pytest.mark.parametrize("fp16_res", [0, 4])
def test_superresolution_fp16_sets_conv_clamp(fp16_res):
    sr = make_sr("SuperresolutionHybrid2X", sr_num_fp16_res=fp16_res)
    layers = [m for m in sr.modules() if isinstance(m, (SynthesisLayer, ToRGBLayer))]
    assert len(layers) == 6
    expected = 256 if fp16_res > 0 else None
    assert all(m.conv_clamp == expected for m in layers)
    assert sr.block0.use_fp16 == sr.block1.use_fp16 == (fp16_res > 0)
    rgb, x, ws = sr_inputs(64)
    with torch.no_grad():
        assert sr(rgb, x, ws, noise_mode="none").dtype == torch.float32  # fp16 only on CUDA


def test_superresolution_rejects_bad_configs():
    with pytest.raises(ValueError):
        Superresolution("SuperresolutionHybrid3X", channels=32, img_resolution=128)
    with pytest.raises(ValueError):
        Superresolution("SuperresolutionHybrid2X", channels=32, img_resolution=256)
    assert variant_for_resolution(512) == "SuperresolutionHybrid8XDC"
    assert variant_for_resolution(256) == "SuperresolutionHybrid4X"
    assert variant_for_resolution(128) == "SuperresolutionHybrid2X"
    with pytest.raises(ValueError):
        variant_for_resolution(64)


# Variants whose first block keeps the input resolution, fed at that resolution (no resize).
NO_RESIZE_NO_UP = [("SuperresolutionHybrid2X", 64), ("SuperresolutionHybrid4X", 128)]
@pytest.mark.parametrize("name,res", NO_RESIZE_NO_UP)
def test_superresolution_does_not_modify_its_inputs(name, res):
    sr = make_sr(name)
    rgb, x, ws = sr_inputs(res)
    rgb0, x0 = rgb.clone(), x.clone()
    with torch.no_grad():
        sr(rgb, x, ws, noise_mode="none")
    assert torch.equal(x, x0)
    assert torch.equal(rgb, rgb0)


def test_superresolution_backward_when_rgb_is_a_view_of_features():
    """As the generator calls it: rgb = features[:, :3] (a view), training mode (non-fused modconv)."""
    sr = make_sr("SuperresolutionHybrid2X").train()
    _, x, ws = sr_inputs(64)
    x = x.requires_grad_()
    features = x * 1.0
    sr(features[:, :3], features, ws, noise_mode="none").sum().backward()
    assert torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------------------------------------------
# 7. Dual discriminator
# ----------------------------------------------------------------------------------------------------------------


def make_disc(c_dim=25, **kw):
    torch.manual_seed(0)
    return DualDiscriminator(c_dim=c_dim, img_resolution=32, img_channels=3, channel_base=256, channel_max=16, **kw)


def disc_inputs(n=2, raw_res=32):
    return {"image": randn(n, 3, 32, 32), "image_raw": randn(n, 3, raw_res, raw_res, seed=1)}, randn(n, 25, seed=2)


def test_discriminator_logits_shape_and_label_dependence():
    d = make_disc()
    img, c = disc_inputs()
    logits = d(img, c)
    assert logits.shape == (2, 1) and torch.isfinite(logits).all()
    assert (d(img, c + 1) - logits).abs().max() > 1e-6


@pytest.mark.parametrize("raw_res", [16, 64])
def test_discriminator_resizes_image_raw(raw_res):
    """image_raw is resized to the image size, bilinear with antialiasing (which matters when shrinking)."""
    d = make_disc()
    img, c = disc_inputs(raw_res=raw_res)
    resized = F.interpolate(img["image_raw"], size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    assert_close(filtered_resizing(img["image_raw"], 32, d.resample_filter), resized)
    with torch.no_grad():
        logits = d(img, c)
        assert_close(logits, d({"image": img["image"], "image_raw": resized}, c))
        if raw_res > 32:
            plain = F.interpolate(img["image_raw"], size=(32, 32), mode="bilinear", align_corners=False)
            assert (d({"image": img["image"], "image_raw": plain}, c) - logits).abs().max() > 1e-6


def test_discriminator_without_label():
    d = make_disc(c_dim=0)
    assert not hasattr(d, "mapping")
    img, _ = disc_inputs()
    assert d(img, None).shape == (2, 1)


def ref_minibatch_std(x, group_size, num_channels):
    """Sample i is grouped with the samples j, j = i (mod N / G) (the StyleGAN reshape(G, -1, ...) grouping); per
    channel group f: the population std over the group, per feature and pixel, averaged -> one extra channel."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    m = n // g
    extra = torch.empty(n, num_channels, h, w)
    for i in range(n):
        members = x[[j for j in range(n) if j % m == i % m]]
        for f in range(num_channels):
            chunk = members[:, f * c // num_channels:(f + 1) * c // num_channels]
            std = torch.sqrt(chunk.var(dim=0, unbiased=False) + 1e-8)
            extra[i, f] = std.mean()
    return torch.cat([x, extra], dim=1)


@pytest.mark.parametrize("group_size,num_channels", [(2, 1), (4, 2), (8, 1)])
def test_minibatch_std_layer_matches_reference(group_size, num_channels):
    x = randn(4, 6, 3, 3) * 2
    y = MinibatchStdLayer(group_size, num_channels)(x)
    assert y.shape == (4, 6 + num_channels, 3, 3)
    assert_close(y, ref_minibatch_std(x, group_size, num_channels))


def test_discriminator_freeze_layers():
    """Layers are counted from the input: b32 fromrgb, conv0, conv1, skip (0-3), b16 conv0 (4), conv1 (5), ..."""
    d = make_disc(block_kwargs={"freeze_layers": 5})
    frozen = [d.b32.fromrgb, d.b32.conv0, d.b32.conv1, d.b32.skip, d.b16.conv0]
    trainable = [d.b16.conv1, d.b16.skip, d.b8.conv0, d.b8.conv1, d.b8.skip, d.b4.conv]
    for layer in frozen:
        assert len(list(layer.parameters())) == 0
        assert "weight" in dict(layer.named_buffers())
    for layer in trainable:
        assert layer.weight.requires_grad and isinstance(layer.weight, torch.nn.Parameter)
    assert "b32.conv0.weight" in d.state_dict()
    # Freezing changes only what is trainable, not the function (same seed, same initial weights).
    img, c = disc_inputs()
    with torch.no_grad():
        assert_close(d(img, c), make_disc()(img, c), rtol=0, atol=0)


def test_discriminator_rejects_unknown_architecture():
    with pytest.raises(ValueError):
        make_disc(architecture="skip")


# ----------------------------------------------------------------------------------------------------------------
# 8. Generators
# ----------------------------------------------------------------------------------------------------------------

NRR = 8
RENDERING = {
    "image_resolution": 128,
    "superresolution_module": "training.superresolution.SuperresolutionHybrid2X",
    "depth_resolution": 4,
    "depth_resolution_importance": 4,
    "ray_start": 2.25,
    "ray_end": 3.3,
    "box_warp": 1,
    "c_scale": 1.0,
    "c_gen_conditioning_zero": False,
    "superresolution_noise_mode": "none",
    "disparity_space_sampling": False,
    "clamp_mode": "softplus",
    "sr_antialias": True,
    "decoder_lr_mul": 1,
    "avg_camera_radius": 2.7,
    "avg_camera_pivot": [0, 0, 0.2],
}


def make_orthoplanes(k=4, seed=0, **rendering):
    torch.manual_seed(seed)
    return OrthoPlanesGenerator(z_dim=8, c_dim=25, w_dim=512, img_resolution=128, img_channels=3,
                                channel_base=256, channel_max=8, mapping_kwargs={"num_layers": 2},
                                per_dir_plane_number=k, fourier_L=2, sr_num_fp16_res=0, num_fp16_res=0,
                                conv_clamp=None, rendering_kwargs={**RENDERING, **rendering}).eval()


def make_triplanes(seed=0):
    torch.manual_seed(seed)
    return TriPlaneGenerator(z_dim=8, c_dim=25, w_dim=512, img_resolution=128, img_channels=3, channel_base=256,
                             channel_max=8, mapping_kwargs={"num_layers": 2}, sr_num_fp16_res=0, num_fp16_res=0,
                             conv_clamp=None, rendering_kwargs=RENDERING).eval()


def camera_label(batch=1, radius=2.7, focal=4.2647):
    """Camera on +z looking at the origin (OpenCV: +z forward, +y down), normalized intrinsics."""
    cam2world = torch.tensor([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, radius], [0, 0, 0, 1]])
    intrinsics = torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1.0]])
    return torch.cat([cam2world.flatten(), intrinsics.flatten()]).repeat(batch, 1)


def draws(seed, batch=1, nrr=NRR, s=4, n_imp=4):
    g = gen(seed)
    m = nrr * nrr
    return RendererDraws(stratified=torch.rand(batch, m, s, 1, generator=g),
                         importance=torch.rand(batch * m, n_imp, generator=g))


def points_in_box(n=64, seed=3):
    return (torch.rand(1, n, 3, generator=gen(seed)) - 0.5), F.normalize(randn(1, n, 3, seed=seed + 1), dim=-1)


@pytest.fixture(scope="module")
def ortho():
    """A tiny OrthoPlanes generator (moved with .to('cpu', float32)), one forward pass with cached planes."""
    G = make_orthoplanes().to("cpu", torch.float32)
    z, c = randn(1, 8, seed=11), camera_label()
    d0 = draws(0)
    with torch.no_grad():
        out = G(z, c, neural_rendering_resolution=NRR, cache_backbone=True, return_planes=True, renderer_draws=d0,
                noise_mode="const")
        ws = G.mapping(z, c)
    return {"G": G, "z": z, "c": c, "ws": ws, "out": out, "draws": d0, "stored_nrr": G.neural_rendering_resolution}


def test_generator_forward_shapes(ortho):
    G, out = ortho["G"], ortho["out"]
    assert G.backbone.num_ws == 13 and ortho["ws"].shape == (1, 13, 512)
    assert out["image"].shape == (1, 3, 128, 128)
    assert out["image_raw"].shape == (1, 3, NRR, NRR)
    assert out["image_depth"].shape == (1, 1, NRR, NRR)
    assert out["planes"].shape == (1, 4, 96, 256, 256)
    assert ortho["stored_nrr"] == NRR  # an explicit resolution is remembered (official behaviour)
    for v in out.values():
        assert torch.isfinite(v).all()
    # Rendered features are composited colours in [-0.001, 1.001] mapped to [-1, 1] (black background).
    assert out["image_raw"].abs().max() <= 1.002 + 1e-6
    # Depth lies within the sampled depths: [ray_start, ray_end + one stratified spacing).
    spacing = (3.3 - 2.25) / 3
    assert out["image_depth"].min() >= 2.25 - 1e-5 and out["image_depth"].max() <= 3.3 + spacing + 1e-5


def expected_raw_image(G, planes, c, nrr, renderer_draws):
    """First three rendered feature channels as an image: render the rays of c through the field, pixels in
    row-major order."""
    origins, directions = sample_rays(c[:, :16].view(-1, 4, 4), c[:, 16:].view(-1, 3, 3), nrr)
    features, _, _ = render_rays(lambda x, d: G.run_field(planes, x, d), origins, directions, G.settings,
                                 renderer_draws)
    return features[..., :3].reshape(c.shape[0], nrr, nrr, 3).permute(0, 3, 1, 2)


@pytest.mark.parametrize("nrr", [
    NRR,
    64,
])
def test_generator_image_raw_is_the_rendered_rgb(ortho, nrr):
    """image_raw = channels 0..2 of the rendered feature image (spec 2.6), also when the superresolution input
    needs no resize (64 for SuperresolutionHybrid2X)."""
    G = ortho["G"]
    d = draws(4, nrr=nrr)
    with torch.no_grad():
        out = G.synthesis(ortho["ws"], ortho["c"], neural_rendering_resolution=nrr, use_cached_backbone=True,
                          renderer_draws=d, noise_mode="const")
        expected = expected_raw_image(G, ortho["out"]["planes"], ortho["c"], nrr, d)
    assert out["image_raw"].shape == (1, 3, nrr, nrr)
    assert_close(out["image_raw"], expected, rtol=1e-5, atol=1e-6)


def test_generator_tensors_are_cpu_float32(ortho):
    for t in list(ortho["G"].parameters()) + list(ortho["G"].buffers()):
        assert t.device.type == "cpu" and t.dtype == torch.float32


def test_generator_forward_is_mapping_then_synthesis(ortho):
    G = ortho["G"]
    with torch.no_grad():
        out = G.synthesis(ortho["ws"], ortho["c"], neural_rendering_resolution=NRR, use_cached_backbone=True,
                          renderer_draws=ortho["draws"], noise_mode="const")
    for key in ("image", "image_raw", "image_depth"):
        assert_close(out[key], ortho["out"][key], rtol=0, atol=1e-6)
    assert "planes" not in out and "ff" not in out


def test_generator_feature_flag_returns_planes(ortho):
    G = ortho["G"]
    with torch.no_grad():
        out = G.synthesis(ortho["ws"], ortho["c"], neural_rendering_resolution=NRR, use_cached_backbone=True,
                          feature=True)
    assert out["ff"].shape == (1, 4, 96, 256, 256)
    assert torch.equal(out["ff"], ortho["out"]["planes"])


def test_generator_renderer_draws_are_replayed(ortho):
    G, ws, c = ortho["G"], ortho["ws"], ortho["c"]
    kw = dict(neural_rendering_resolution=NRR, use_cached_backbone=True)
    with torch.no_grad():
        a = G.synthesis(ws, c, renderer_draws=draws(5), **kw)
        b = G.synthesis(ws, c, renderer_draws=draws(5), **kw)
        other = draws(5)
        other.stratified = torch.rand(other.stratified.shape, generator=gen(6))
        d = G.synthesis(ws, c, renderer_draws=other, **kw)
        r1 = G.synthesis(ws, c, **kw)
        r2 = G.synthesis(ws, c, **kw)
    for key in ("image", "image_raw", "image_depth"):
        assert torch.equal(a[key], b[key])
    assert (a["image_raw"] - d["image_raw"]).abs().max() > 1e-5
    assert (a["image_depth"] - d["image_depth"]).abs().max() > 1e-5
    assert (r1["image_depth"] - r2["image_depth"]).abs().max() > 1e-5  # without draws: fresh random numbers


def test_generator_cached_backbone_is_reused():
    G = make_orthoplanes()
    c = camera_label()
    ws1 = G.mapping(randn(1, 8, seed=1), c)
    ws2 = G.mapping(randn(1, 8, seed=2), c)
    kw = dict(neural_rendering_resolution=NRR, return_planes=True, noise_mode="const")
    with torch.no_grad():
        first = G.synthesis(ws1, c, cache_backbone=True, renderer_draws=draws(1), **kw)
        cached = G.synthesis(ws2, c, use_cached_backbone=True, renderer_draws=draws(1), **kw)
        fresh = G.synthesis(ws2, c, renderer_draws=draws(1), **kw)
    assert torch.equal(cached["planes"], first["planes"])
    assert torch.equal(cached["image_raw"], first["image_raw"])
    assert torch.equal(cached["image_depth"], first["image_depth"])
    assert (fresh["planes"] - first["planes"]).abs().max() > 1e-4
    assert (fresh["image_raw"] - cached["image_raw"]).abs().max() > 1e-5


def test_generator_sample_equals_sample_mixed_for_identical_rows(ortho):
    G, ws = ortho["G"], ortho["ws"]
    assert torch.equal(ws, ws[:, :1].expand_as(ws))  # the mapping broadcasts one w to all 13 rows
    coords, dirs = points_in_box()
    with torch.no_grad():
        s = G.sample(coords, dirs, ws, ortho["c"], noise_mode="const")
        m = G.sample_mixed(coords, dirs, ws, noise_mode="const")
        from_planes = G.run_field(ortho["out"]["planes"], coords, dirs)
    assert s["sigma"].shape == (1, 64, 1) and s["rgb"].shape == (1, 64, 32)
    assert_close(s["sigma"], m["sigma"], rtol=1e-5, atol=1e-5)
    assert_close(s["rgb"], m["rgb"], rtol=1e-5, atol=1e-5)
    assert_close(s["sigma"], from_planes["sigma"], rtol=1e-5, atol=1e-5)


def test_generator_sample_mixed_styles_planes_with_last_w(ortho):
    """sample_mixed styles every block's planes with [ws[:, -1], PE(t_k)], whatever the other rows hold."""
    G = ortho["G"]
    ws = ortho["ws"].clone()
    ws[:, :-1] += randn(1, 12, 512, seed=4)
    records, handles = capture_to_depth_feature(G.backbone.synthesis)
    try:
        with torch.no_grad():
            G.sample_mixed(*points_in_box(n=4), ws, noise_mode="const")
    finally:
        for h in handles:
            h.remove()
    code = torch.tensor([ref_pe(t, 2) for t in torch.linspace(-1, 1, 4).tolist()])
    expected = torch.cat([ws[0, -1].expand(4, -1), code], dim=1)
    assert len(records) == 7
    for _, v, _ in records.values():
        assert_close(v, expected, rtol=0, atol=1e-6)


def test_generator_label_conditioning():
    z, c1 = randn(2, 8, seed=1), camera_label(2)
    c2 = c1 + randn(2, 25, seed=2)
    for zero in (False, True):
        G = make_orthoplanes(c_gen_conditioning_zero=zero, c_scale=2.0)
        with torch.no_grad():
            G.backbone.mapping.embed.bias.copy_(randn(512, seed=3))  # makes the label scale observable
            w1, w2 = G.mapping(z, c1), G.mapping(z, c2)
            expected1 = G.backbone.mapping(z, torch.zeros_like(c1) if zero else 2.0 * c1)
        assert_close(w1, expected1, rtol=0, atol=1e-6)
        if zero:
            assert torch.equal(w1, w2)
        else:
            assert (w1 - w2).abs().max() > 1e-4
    # c_scale absent from rendering_kwargs means 0 (official): the label is ignored.
    rk = {k: v for k, v in RENDERING.items() if k != "c_scale"}
    torch.manual_seed(0)
    G = OrthoPlanesGenerator(8, 25, 512, 128, 3, channel_base=256, channel_max=8, mapping_kwargs={"num_layers": 2},
                             per_dir_plane_number=4, fourier_L=2, rendering_kwargs=rk)
    assert torch.equal(G.mapping(z, c1), G.mapping(z, c2))


def test_generator_training_backward():
    G = make_orthoplanes(k=2).train()
    z, c = randn(1, 8, seed=1), camera_label()
    out = G(z, c, neural_rendering_resolution=NRR, renderer_draws=draws(2))
    out["image"].sum().backward()
    names = ["backbone.mapping.fc0.weight", "backbone.mapping.embed.weight", "backbone.synthesis.b4.const",
             "backbone.synthesis.b256.conv1.weight", "backbone.synthesis.b256.to_depth_feature.weight",
             "backbone.synthesis.b8.to_depth_feature.affine.weight", "decoder.net.0.weight", "decoder.net.2.weight",
             "superresolution.block0.conv0.weight", "superresolution.block1.torgb.weight"]
    params = dict(G.named_parameters())
    for name in names:
        grad = params[name].grad
        assert grad is not None, name
        assert torch.isfinite(grad).all(), name
        assert grad.abs().max() > 0, name


def test_generator_rendering_kwargs_view(ortho):
    G = ortho["G"]
    assert G.rendering_kwargs["box_warp"] == 1 and G.rendering_kwargs["depth_resolution"] == 4
    counts = []
    handle = G.decoder.register_forward_hook(lambda mod, inp, out: counts.append(inp[0].shape[2]))
    try:
        G.rendering_kwargs["depth_resolution"] = 6
        assert G.settings.depth_resolution == 6
        with torch.no_grad():
            G.synthesis(ortho["ws"], ortho["c"], neural_rendering_resolution=NRR, use_cached_backbone=True)
        assert counts == [NRR * NRR * 6, NRR * NRR * 4]  # coarse pass with 6 samples, fine pass with 4
        with pytest.raises(KeyError):
            G.rendering_kwargs["not_a_setting"] = 1
        with pytest.raises(ValueError):
            G.rendering_kwargs["depth_resolution"] = 1
        assert G.rendering_kwargs["depth_resolution"] == 6
    finally:
        handle.remove()
        G.rendering_kwargs["depth_resolution"] = 4
    with pytest.raises(ValueError):
        make_orthoplanes(not_a_setting=3)


def test_generator_plane_projection(ortho):
    planes = ortho["out"]["planes"]
    coords, dirs = points_in_box(seed=8)
    with torch.no_grad():
        for box_warp, should_differ in ((1, True), (2, False)):
            compat = make_orthoplanes(box_warp=box_warp).run_field(planes, coords * box_warp, dirs)
            consistent = make_orthoplanes(box_warp=box_warp, plane_projection="consistent").run_field(
                planes, coords * box_warp, dirs)
            diff = (compat["sigma"] - consistent["sigma"]).abs().max()
            assert (diff > 1e-4) if should_differ else (diff == 0)
        # End to end through the renderer too (box_warp 1).
        G = make_orthoplanes(plane_projection="consistent")
        G._last_planes = planes
        out = G.synthesis(ortho["ws"], ortho["c"], neural_rendering_resolution=NRR, use_cached_backbone=True,
                          renderer_draws=ortho["draws"], noise_mode="const")
    assert (out["image_raw"] - ortho["out"]["image_raw"]).abs().max() > 1e-5


def test_generator_rejects_bad_label_shape(ortho):
    with pytest.raises(ValueError):
        ortho["G"].synthesis(ortho["ws"], torch.zeros(1, 16), use_cached_backbone=True)


def test_triplane_generator():
    G = make_triplanes().to("cpu", torch.float32)
    assert G.backbone.num_ws == 14
    z, c = randn(1, 8, seed=1), camera_label()
    coords, dirs = points_in_box()
    with torch.no_grad():
        out = G(z, c, neural_rendering_resolution=NRR, return_planes=True, renderer_draws=draws(0),
                noise_mode="const")
        s = G.sample(coords, dirs, z, c, noise_mode="const")
        ref = G.run_field(out["planes"], coords, dirs)
    assert out["planes"].shape == (1, 3, 32, 256, 256)
    assert out["image"].shape == (1, 3, 128, 128) and out["image_raw"].shape == (1, 3, NRR, NRR)
    assert s["sigma"].shape == (1, 64, 1) and s["rgb"].shape == (1, 64, 32)
    assert_close(s["sigma"], ref["sigma"], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# 9. Devices
# ----------------------------------------------------------------------------------------------------------------


def test_modules_move_with_to_cpu_float32():
    """Every network moves with .to('cpu', torch.float32) (keeping the float32 buffers) and still runs."""
    torch.manual_seed(0)
    cases = [
        (FullyConnectedLayer(4, 3), lambda m: m(randn(2, 4))),
        (Conv2dLayer(3, 4, 3, down=2), lambda m: m(randn(1, 3, 8, 8))),
        (make_mapping(), lambda m: m(randn(2, 8), randn(2, 5))),
        (make_multiplane(img_resolution=16), lambda m: m(randn(1, m.num_ws, W_DIM), 2, noise_mode="const")),
        (make_sr("SuperresolutionHybrid2X"), lambda m: m(*sr_inputs(32), noise_mode="none")),
        (make_disc(), lambda m: m(*disc_inputs())),
    ]
    for module, run in cases:
        moved = module.to("cpu", torch.float32)
        assert moved is module
        for t in list(module.parameters()) + list(module.buffers()):
            assert t.device.type == "cpu" and t.dtype == torch.float32
        with torch.no_grad():
            out = run(module)
        assert torch.isfinite(out).all()


def _accelerator_available(device):
    if device == "cuda":
        return torch.cuda.is_available()
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_generator_on_accelerator_matches_cpu(device, ortho):
    if not _accelerator_available(device):
        pytest.skip(f"{device} not available")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        G = copy.deepcopy(ortho["G"]).to(device)
        G._last_planes = None
        d = ortho["draws"]
        d_dev = RendererDraws(stratified=d.stratified.to(device), importance=d.importance.to(device))
        with torch.no_grad():
            out = G(ortho["z"].to(device), ortho["c"].to(device), neural_rendering_resolution=NRR,
                    return_planes=True, renderer_draws=d_dev, noise_mode="const")
            coords, dirs = points_in_box()
            s_dev = G.sample(coords.to(device), dirs.to(device), ortho["ws"].to(device), noise_mode="const")
            s_cpu = ortho["G"].run_field(ortho["out"]["planes"], coords, dirs)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    for key in ("planes", "image_raw", "image_depth", "image"):
        assert out[key].device.type == device
        assert_close(out[key].cpu(), ortho["out"][key], rtol=1e-3, atol=1e-3)
    assert_close(s_dev["sigma"].cpu(), s_cpu["sigma"], rtol=1e-3, atol=1e-3)


def test_fp16_blocks_compute_in_half_precision_on_an_fp16_device(monkeypatch):
    """The mixed precision CUDA runs (blocks built with use_fp16 compute in float16 with conv_clamp; mapping,
    planes lookup, renderer and outputs stay float32), exercised on the CPU by declaring it an fp16 device type.
    G's and D's fp16 blocks then output float16, the image stays within fp16 rounding of the float32 run, and
    every training phase yields finite float32 gradients. (CPU kernels, like CUDA's, refuse mixed dtypes.)"""
    from op3d.cameras import orbit_camera
    from op3d.networks import ops
    from test_loss_parity import NRR, TINY_RENDERING, phase_grads, tiny_loss

    torch.manual_seed(0)
    G = OrthoPlanesGenerator(z_dim=8, c_dim=25, w_dim=512, img_resolution=128, img_channels=3, channel_base=128,
                             channel_max=8, mapping_kwargs={"num_layers": 2}, per_dir_plane_number=2, fourier_L=2,
                             sr_num_fp16_res=4, num_fp16_res=2, conv_clamp=256, plane_resolution=16,
                             rendering_kwargs=dict(TINY_RENDERING))
    G.neural_rendering_resolution = NRR
    D = DualDiscriminator(c_dim=25, img_resolution=128, img_channels=3, channel_base=128, channel_max=8,
                          num_fp16_res=2, conv_clamp=256, mapping_kwargs={"num_layers": 2})
    fp16_blocks = [m for m in list(G.modules()) + list(D.modules()) if getattr(m, "use_fp16", False)]
    assert {id(m) for m in fp16_blocks} & {id(m) for m in G.backbone.modules()}
    assert {id(m) for m in fp16_blocks} & {id(m) for m in G.superresolution.modules()}
    assert {id(m) for m in fp16_blocks} & {id(m) for m in D.modules()}
    dtypes = {}
    for block in fp16_blocks:
        block.register_forward_hook(lambda m, args, out: dtypes.setdefault(id(m), set()).add(out[0].dtype))
    z, c = torch.randn(2, 8), torch.cat([orbit_camera(1.4, 1.6, focal=4.2647), orbit_camera(1.8, 1.5, focal=4.2647)])
    draws = RendererDraws(torch.rand(2, NRR * NRR, 6, 1), torch.rand(2 * NRR * NRR, 6))

    def images():
        with torch.no_grad():
            out = G(z, c, noise_mode="const", renderer_draws=draws)
            return out, D(out, c)

    full, logits_full = images()
    assert dtypes and all(seen == {torch.float32} for seen in dtypes.values())  # the CPU is not an fp16 device
    dtypes.clear()
    monkeypatch.setattr(ops, "FP16_DEVICE_TYPES", frozenset({"cuda", "cpu"}))
    half, logits_half = images()
    assert len(dtypes) == len(fp16_blocks) and all(seen == {torch.float16} for seen in dtypes.values())
    for key in ("image", "image_raw", "image_depth"):
        assert half[key].dtype == torch.float32 and torch.isfinite(half[key]).all()
    for key in ("image", "image_raw"):
        assert_close(half[key], full[key], rtol=0, atol=2e-2)
    assert_close(logits_half, logits_full, rtol=0, atol=2e-2)
    loss = tiny_loss(G, D)
    for phase in ("Gmain", "Greg", "Dmain", "Dreg"):
        grads = phase_grads(G, D, loss, phase, gain=1.0)
        assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads.values()), phase
