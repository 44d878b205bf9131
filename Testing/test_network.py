"""Tests of DTCCore.model.network: the reference dual-task VNet (architecture, heads, dropout, shapes)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import nn

from DTCCore.config import NetworkConfig
from DTCCore.errors import DTCError
from DTCCore.model.network import DualTaskVNet, build_network, count_parameters
from DTCCore.planning.pools import stage_strides


def _conv(cin: int, cout: int, k: int | tuple[int, int, int]) -> int:
    kernel = k**3 if isinstance(k, int) else k[0] * k[1] * k[2]
    return cin * cout * kernel + cout  # weight + bias (Conv3d and ConvTranspose3d alike)


REFERENCE_STRIDES = ((2, 2, 2),) * 4


def _expected_parameters(cin: int, nf: int, n_seg: int, n_lsf: int,
                         strides: Sequence[tuple[int, int, int]] = REFERENCE_STRIDES) -> int:
    """Hand count of the reference VNet_sdf (``networks/vnet_sdf.py`` of github.com/HiLab-git/DTC), independent
    of the module code; ``strides``: the kernel (= stride) of each down/up-sampling stage (2x2x2 in the
    reference, anisotropic with ``NetworkConfig.pools``)."""

    def block(n: int, c_in: int, c_out: int) -> int:
        return sum(_conv(c_in if i == 0 else c_out, c_out, 3) + 2 * c_out for i in range(n))

    def resample(c_in: int, c_out: int, k: tuple[int, int, int]) -> int:  # strided (transposed) conv + BN
        return _conv(c_in, c_out, k) + 2 * c_out

    s1, s2, s3, s4 = strides
    enc = (block(1, cin, nf) + resample(nf, 2 * nf, s1) + block(2, 2 * nf, 2 * nf) + resample(2 * nf, 4 * nf, s2)
           + block(3, 4 * nf, 4 * nf) + resample(4 * nf, 8 * nf, s3) + block(3, 8 * nf, 8 * nf)
           + resample(8 * nf, 16 * nf, s4) + block(3, 16 * nf, 16 * nf))
    dec = (resample(16 * nf, 8 * nf, s4) + block(3, 8 * nf, 8 * nf) + resample(8 * nf, 4 * nf, s3)
           + block(3, 4 * nf, 4 * nf) + resample(4 * nf, 2 * nf, s2) + block(2, 2 * nf, 2 * nf)
           + resample(2 * nf, nf, s1) + block(1, nf, nf))
    return enc + dec + _conv(nf, n_seg, 1) + _conv(nf, n_lsf, 1)


def test_default_parameter_count_is_the_papers() -> None:
    model = DualTaskVNet()
    assert count_parameters(model) == 9_448_866  # the paper: 9.44 M
    assert count_parameters(model) == _expected_parameters(1, 16, 1, 1)


@pytest.mark.parametrize("cin,classes,nf", [(1, 3, 4), (2, 1, 3), (1, 2, 2)])
def test_parameter_count_matches_hand_count(cin: int, classes: int, nf: int) -> None:
    n_seg, n_lsf = (1, 1) if classes == 1 else (classes + 1, classes)
    model = DualTaskVNet(in_channels=cin, num_classes=classes, base_filters=nf)
    assert count_parameters(model) == _expected_parameters(cin, nf, n_seg, n_lsf)


@pytest.mark.parametrize("pools", [(4, 4, 2), (3, 4, 0)])
def test_thick_slice_parameter_count_matches_hand_count(pools: tuple[int, int, int]) -> None:
    model = DualTaskVNet(num_classes=3, base_filters=2, pools=pools)
    assert count_parameters(model) == _expected_parameters(1, 2, 4, 3, stage_strides(pools))


def test_skips_are_added_not_concatenated() -> None:
    model = DualTaskVNet(base_filters=4)
    assert model.block_six[0].in_channels == 32  # 8 nf: the up-sampled x5 plus x4, summed
    assert model.block_nine[0].in_channels == 4
    assert isinstance(model.block_one_dw[0], nn.Conv3d) and model.block_one_dw[0].stride == (2, 2, 2)
    assert isinstance(model.block_five_up[0], nn.ConvTranspose3d)


@pytest.mark.parametrize("classes,n_seg,n_lsf", [(1, 1, 1), (3, 4, 3)])
def test_output_shapes_and_lsf_range(classes: int, n_seg: int, n_lsf: int) -> None:
    torch.manual_seed(0)
    model = DualTaskVNet(num_classes=classes, base_filters=2).eval()
    x = torch.randn(2, 1, 16, 32, 16)
    with torch.no_grad():
        seg, lsf = model(x)
    assert seg.shape == (2, n_seg, 16, 32, 16)
    assert lsf.shape == (2, n_lsf, 16, 32, 16)
    assert lsf.abs().max() <= 1.0  # tanh head
    assert torch.isfinite(seg).all()


def test_dropout_only_in_training_mode() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 1, 16, 16, 16)
    model = DualTaskVNet(base_filters=2, dropout=True)
    model.train()
    a, b = model(x), model(x)
    assert not torch.allclose(a[0], b[0]), "Dropout3d must make two training passes differ"
    model.eval()
    with torch.no_grad():
        c, d = model(x), model(x)
    assert torch.equal(c[0], d[0]) and torch.equal(c[1], d[1])

    no_drop = DualTaskVNet(base_filters=2, dropout=False).train()
    e, f = no_drop(x), no_drop(x)
    assert torch.allclose(e[0], f[0]) and torch.allclose(e[1], f[1])
    assert not any(isinstance(m, nn.Dropout3d) for m in no_drop.modules())
    assert sum(isinstance(m, nn.Dropout3d) for m in model.modules()) == 1  # one module, used on x5 and x9


def test_dropout_is_channelwise_p_half_on_bottleneck_and_last_features() -> None:
    torch.manual_seed(2)
    model = DualTaskVNet(base_filters=2).train()
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    model.dropout.register_forward_hook(lambda m, inp, out: calls.append((inp[0].detach(), out.detach())))
    model(torch.randn(2, 1, 16, 16, 16))
    assert [tuple(i.shape) for i, _ in calls] == [(2, 32, 1, 1, 1), (2, 2, 16, 16, 16)]  # x5, then x9
    dropped_any = False
    for inp, out in calls:
        for n in range(inp.shape[0]):
            for c in range(inp.shape[1]):
                if torch.equal(out[n, c], torch.zeros_like(out[n, c])) and inp[n, c].abs().sum() > 0:
                    dropped_any = True
                else:  # a kept channel is scaled by 1 / (1 - p) = 2
                    assert torch.allclose(out[n, c], 2.0 * inp[n, c])
    assert dropped_any


def test_bad_input_sizes_raise_dtcerror() -> None:
    model = DualTaskVNet(base_filters=2).eval()
    with pytest.raises(DTCError, match="multiple of 16"):
        model(torch.zeros(1, 1, 16, 24, 16))
    with pytest.raises(DTCError, match="channels"):
        model(torch.zeros(1, 2, 16, 16, 16))
    with pytest.raises(DTCError):
        DualTaskVNet(num_classes=0)


def test_build_network_and_channels_last() -> None:
    cfg = NetworkConfig(in_channels=1, num_classes=2, base_filters=2, dropout=False)
    torch.manual_seed(3)
    model = build_network(cfg).eval()
    assert isinstance(model, DualTaskVNet)
    assert model.out_conv.out_channels == 3 and model.out_conv2.out_channels == 2
    x = torch.randn(1, 1, 16, 16, 32)
    with torch.no_grad():
        seg, lsf = model(x)
        model_cl = model.to(memory_format=torch.channels_last_3d)
        seg_cl, lsf_cl = model_cl(x.to(memory_format=torch.channels_last_3d))
    assert torch.allclose(seg, seg_cl, atol=1e-5) and torch.allclose(lsf, lsf_cl, atol=1e-5)


def test_traces_as_one_graph_for_torch_compile() -> None:
    """No Python-side shape branching: dynamo captures forward whole (eager backend keeps it quick)."""
    torch.manual_seed(4)
    model = DualTaskVNet(base_filters=2).eval()
    x = torch.randn(1, 1, 16, 16, 32)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        seg_c, lsf_c = compiled(x)
        seg, lsf = model(x)
    assert torch.allclose(seg, seg_c, atol=1e-6) and torch.allclose(lsf, lsf_c, atol=1e-6)
