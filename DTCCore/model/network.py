"""The dual-task VNet of DTC: one encoder-decoder, a segmentation head and a level-set head.

This reproduces the reference code's ``VNet_sdf`` (github.com/HiLab-git/DTC, ``networks/vnet_sdf.py``,
``normalization='batchnorm'``, ``has_dropout=True``) layer for layer:

- ``ConvBlock(n, in, out)``: ``n`` x [Conv3d 3x3x3 (padding 1) + BatchNorm3d + ReLU];
- down: Conv3d 2x2x2 stride 2 + BatchNorm3d + ReLU; up: ConvTranspose3d 2x2x2 stride 2 + BN + ReLU;
- encoder blocks of 1/2/3/3/3 convolutions at nf, 2nf, 4nf, 8nf, 16nf channels (nf = ``base_filters``);
- decoder blocks of 3/3/2/1 convolutions; skip connections are *added* (not concatenated);
- Dropout3d(p=0.5) on the bottleneck and on the last feature map, in training mode only;
- two 1x1x1 heads on the last features: ``out_conv`` (segmentation logits) and ``out_conv2`` followed by
  tanh (level set, in [-1, 1]). The reference names them the other way round (its ``out_conv`` is the
  level-set head); only the state-dict names differ.

With 1 input channel, 1 class and 16 base filters it has 9,448,866 parameters (paper: 9.44 M).

Thick slices (our extension, ``NetworkConfig.pools``): ``pools = (px, py, pz)`` says how many of the four
downsamplings halve each axis; an axis with fewer than 4 is halved only in the *last* ones (its stride and
kernel are 1 in the first ``4 - p``), as nnU-Net plans anisotropic data: a thick-slice axis waits until
the in-plane resolution has coarsened to its level. ``(4, 4, 4)`` is the reference network.

2-D (our extension, ``NetworkConfig.dims == 2``, planning/dims.py): the same layers in 2-D (Conv2d 3x3, 2x2 stride-2
resampling in x and y, BatchNorm2d, Dropout2d), pools ``(px, py, 0)``. It still takes and returns 5-D
tensors: the Z slices of each item are run as one batch of 2-D images, so a slice's outputs depend on that
slice alone, and the sliding window, the losses and test-time augmentation are the same as in 3-D.

Shapes: input ``(N, in_channels, X, Y, Z)`` with each size a multiple of ``2**p`` of its axis (16 for the
reference's four 2x downsamplings);
outputs ``seg_logits (N, n_seg, X, Y, Z)`` and ``lsf (N, n_lsf, X, Y, Z)``. With ``num_classes == 1``
``n_seg = n_lsf = 1`` (sigmoid seg head, as in the reference); with ``C > 1`` foreground classes
``n_seg = C + 1`` (softmax over background + classes) and ``n_lsf = C`` (one level set per class).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import NetworkConfig
from ..errors import DTCError
from ..planning.dims import check_dims
from ..planning.pools import REFERENCE_POOLS, SIZE_MULTIPLE, describe_multiples, size_multiples, stage_strides

DROPOUT_P = 0.5  # reference: nn.Dropout3d(p=0.5) on x5 and x9


# The layers of a 3-D network and of a 2-D one (planning/dims.py): convolution, transposed convolution,
# BatchNorm, dropout.
LAYERS: dict[int, tuple[type[nn.Module], type[nn.Module], type[nn.Module], type[nn.Module]]] = {
    3: (nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d, nn.Dropout3d),
    2: (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.Dropout2d),
}


class ConvBlock(nn.Sequential):
    """``n_stages`` x [Conv 3x3x3 (dims 2: 3x3) pad 1 + BatchNorm + ReLU]; (N, c_in, ...) -> (N, c_out, ...)."""

    def __init__(self, n_stages: int, c_in: int, c_out: int, dims: int = 3) -> None:
        conv, _, norm, _ = LAYERS[dims]
        layers: list[nn.Module] = []
        for i in range(n_stages):
            layers += [
                conv(c_in if i == 0 else c_out, c_out, kernel_size=3, padding=1),
                norm(c_out),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class ResampleBlock(nn.Sequential):
    """Strided conv + BN + ReLU, kernel = stride (reference: 2x2x2 stride 2, Downsampling/
    UpsamplingDeconvBlock). ``up=False``: Conv3d, (N, c_in, X, Y, Z) -> (N, c_out, X/sx, Y/sy, Z/sz);
    ``up=True``: ConvTranspose3d, -> (N, c_out, sx X, sy Y, sz Z). ``dims=2``: the 2-D layers with the
    stride's (sx, sy), on (N, c, X, Y)."""

    def __init__(self, c_in: int, c_out: int, up: bool = False, stride: tuple[int, int, int] = (2, 2, 2),
                 dims: int = 3) -> None:
        down, transposed, norm, _ = LAYERS[dims]
        conv = transposed if up else down
        kernel = tuple(stride[:dims])
        super().__init__(
            conv(c_in, c_out, kernel_size=kernel, stride=kernel, padding=0),
            norm(c_out),
            nn.ReLU(inplace=True),
        )


def head_channels(num_classes: int) -> tuple[int, int]:
    """(segmentation channels, level-set channels) for ``num_classes`` foreground classes."""
    if num_classes < 1:
        raise DTCError(f"num_classes {num_classes} must be >= 1 (number of foreground classes)")
    if num_classes == 1:
        return 1, 1  # reference: one sigmoid channel and one level set
    return num_classes + 1, num_classes  # softmax over background + C classes; one level set per class


def seg_probability(seg_logits: torch.Tensor) -> torch.Tensor:
    """The segmentation head's activation, written once: (N, Cs, ...) logits -> (N, Cs, ...) probabilities.

    Sigmoid for one channel (the reference's binary head), else softmax over the channels (background and
    C classes, model/network.py). Training (:func:`foreground_probability`) and inference
    (:class:`DTCCore.inference.predict.ProbabilityOutputs`) both use it; it lives with the network so
    inference needs no loss code.
    """
    if seg_logits.shape[1] == 1:
        return torch.sigmoid(seg_logits)
    return torch.softmax(seg_logits, dim=1)


def foreground_probability(seg_logits: torch.Tensor) -> torch.Tensor:
    """(N, Cs, ...) logits -> (N, C, ...) foreground probabilities (sigmoid if Cs == 1, else softmax[:, 1:])."""
    prob = seg_probability(seg_logits)
    return prob if prob.shape[1] == 1 else prob[:, 1:]


def check_input_shape(shape: tuple[int, ...] | torch.Size, in_channels: int,
                      multiples: tuple[int, int, int] = (SIZE_MULTIPLE,) * 3) -> None:
    """Raise DTCError unless ``shape`` is (N, in_channels, X, Y, Z) with X, Y, Z multiples of ``multiples``."""
    if len(shape) != 5 or shape[1] != in_channels:
        raise DTCError(
            f"network input has shape {tuple(shape)}; expected (N, {in_channels}, X, Y, Z) — "
            "pass a 5-D batch with the configured number of input channels"
        )
    sizes = tuple(int(s) for s in shape[2:])
    if any(s % m or s < m for s, m in zip(sizes, multiples)):
        want = describe_multiples(multiples)
        raise DTCError(
            f"network input size {sizes} is not a multiple of {want}; "
            f"pad or crop each spatial size to a multiple of {want}"
        )


class DualTaskVNet(nn.Module):
    """The reference DTC VNet with a segmentation head and a tanh level-set head (see module doc)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 1, base_filters: int = 16,
                 dropout: bool = True, pools: tuple[int, int, int] = REFERENCE_POOLS, dims: int = 3) -> None:
        super().__init__()
        if in_channels < 1 or base_filters < 1:
            raise DTCError("in_channels and base_filters must be >= 1")
        self.dims = check_dims(dims)
        if self.dims == 2 and int(pools[2]) != 0:
            raise DTCError(f"pools {tuple(pools)}: a 2-D network does not pool the slice axis; use PX PY 0")
        conv, _, _, drop = LAYERS[self.dims]
        nf = base_filters
        n_seg, n_lsf = head_channels(num_classes)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.base_filters = base_filters
        self.has_dropout = dropout
        self.pools = tuple(int(p) for p in pools)
        self.size_multiples = size_multiples(self.pools)
        s1, s2, s3, s4 = stage_strides(self.pools)

        self.block_one = ConvBlock(1, in_channels, nf, dims=self.dims)
        self.block_one_dw = ResampleBlock(nf, 2 * nf, stride=s1, dims=self.dims)
        self.block_two = ConvBlock(2, 2 * nf, 2 * nf, dims=self.dims)
        self.block_two_dw = ResampleBlock(2 * nf, 4 * nf, stride=s2, dims=self.dims)
        self.block_three = ConvBlock(3, 4 * nf, 4 * nf, dims=self.dims)
        self.block_three_dw = ResampleBlock(4 * nf, 8 * nf, stride=s3, dims=self.dims)
        self.block_four = ConvBlock(3, 8 * nf, 8 * nf, dims=self.dims)
        self.block_four_dw = ResampleBlock(8 * nf, 16 * nf, stride=s4, dims=self.dims)
        self.block_five = ConvBlock(3, 16 * nf, 16 * nf, dims=self.dims)

        self.block_five_up = ResampleBlock(16 * nf, 8 * nf, up=True, stride=s4, dims=self.dims)
        self.block_six = ConvBlock(3, 8 * nf, 8 * nf, dims=self.dims)
        self.block_six_up = ResampleBlock(8 * nf, 4 * nf, up=True, stride=s3, dims=self.dims)
        self.block_seven = ConvBlock(3, 4 * nf, 4 * nf, dims=self.dims)
        self.block_seven_up = ResampleBlock(4 * nf, 2 * nf, up=True, stride=s2, dims=self.dims)
        self.block_eight = ConvBlock(2, 2 * nf, 2 * nf, dims=self.dims)
        self.block_eight_up = ResampleBlock(2 * nf, nf, up=True, stride=s1, dims=self.dims)
        self.block_nine = ConvBlock(1, nf, nf, dims=self.dims)

        # Identity when dropout is off keeps forward free of Python branches (torch.compile friendly).
        self.dropout: nn.Module = drop(p=DROPOUT_P) if dropout else nn.Identity()
        self.out_conv = conv(nf, n_seg, kernel_size=1)  # segmentation logits
        self.out_conv2 = conv(nf, n_lsf, kernel_size=1)  # level set (before tanh)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, in_channels, X, Y, Z) -> (seg_logits (N, n_seg, X, Y, Z), lsf (N, n_lsf, X, Y, Z)).
        A 2-D network runs the N x Z slices (N Z, in_channels, X, Y) as one batch and stacks them back."""
        if not torch.compiler.is_compiling():
            check_input_shape(x.shape, self.in_channels, self.size_multiples)
        if self.dims == 2:
            n, _, sx, sy, sz = x.shape
            slices = x.permute(0, 4, 1, 2, 3).reshape(n * sz, x.shape[1], sx, sy)
            seg, lsf = self._forward(slices)
            return tuple(o.reshape(n, sz, o.shape[1], sx, sy).permute(0, 2, 3, 4, 1)  # type: ignore[return-value]
                         for o in (seg, lsf))
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VNet on (N, C, X, Y, Z) (dims 3) or (N, C, X, Y) (dims 2)."""
        x1 = self.block_one(x)
        x2 = self.block_two(self.block_one_dw(x1))
        x3 = self.block_three(self.block_two_dw(x2))
        x4 = self.block_four(self.block_three_dw(x3))
        x5 = self.dropout(self.block_five(self.block_four_dw(x4)))  # Dropout3d is a no-op in eval mode

        x6 = self.block_six(self.block_five_up(x5) + x4)
        x7 = self.block_seven(self.block_six_up(x6) + x3)
        x8 = self.block_eight(self.block_seven_up(x7) + x2)
        x9 = self.dropout(self.block_nine(self.block_eight_up(x8) + x1))
        return self.out_conv(x9), torch.tanh(self.out_conv2(x9))


def build_network(cfg: NetworkConfig) -> DualTaskVNet:
    """The network described by ``cfg`` (in_channels, num_classes, base_filters, dropout, pools, dims)."""
    return DualTaskVNet(
        in_channels=int(cfg.in_channels),
        num_classes=int(cfg.num_classes),
        base_filters=int(cfg.base_filters),
        dropout=bool(cfg.dropout),
        pools=tuple(int(p) for p in cfg.pools),  # type: ignore[arg-type]
        dims=int(cfg.dims),
    )


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model`` (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
