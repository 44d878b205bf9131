"""Bidirectional copy-paste (BCP, Bai et al., CVPR 2023): the paste box, the mixed images, the pseudo-labels.

Source: the authors' code, github.com/DeepMed-Lab-ECNU/BCP: ``code/LA_BCP_train.py`` (3-D, left atrium),
``code/ACDC_BCP_train.py`` (2-D, cardiac MRI) and ``code/utils/BCP_utils.py``. Arrays are (N, C, X, Y, Z)
images and (N, X, Y, Z) label maps, as everywhere in the trainer; one box per training step, shared by every
item of the step (the reference draws one ``img_mask`` per step).

Stage 1 (labeled only): the first half of the labeled crops (A) with the box of the second half (B) pasted in:
image ``A`` outside the box, ``B`` inside; target the labels the same way (LA_BCP_train.py ``pre_train``:
``img_a * img_mask + img_b * (1 - img_mask)``, where ``img_mask`` is 0 in the box).

Stage 2 (self-training), both directions with the same box (LA_BCP_train.py ``self_train``):

- an unlabeled crop's box into a labeled crop: ``A`` outside, unlabeled ``U`` inside; target: A's ground truth
  outside, the teacher's pseudo-label of U inside (``mixl_img``, ``mixl_lab``);
- a labeled crop's box into an unlabeled crop: unlabeled ``V`` outside, ``B`` inside; target: the pseudo-label
  of V outside, B's ground truth inside (``mixu_img``, ``mixu_lab``).

The pseudo-labels come from the teacher on the unmixed unlabeled crops (``ema_model(unimg_a)``). Which pixels
came from a labeled crop is returned as ``from_labeled`` (the reference's ``loss_mask`` and its complement):
the loss weighs them 1.0 and pseudo-labelled pixels ``PSEUDO_WEIGHT`` (copypaste_loss.py).
"""

from __future__ import annotations

import numpy as np
import torch

# BCP: the box's sides are 2/3 of the crop's (LA_BCP_train.py --mask_ratio 2/3; ACDC_BCP_train.py generate_mask:
# int(img_x * 2 / 3)). We compute int(2 p / 3) exactly: LA's float product p * (2/3) truncates one less at
# multiples of 3 (48 * 0.666... = 31.99... -> 31).
BOX_NUMERATOR, BOX_DENOMINATOR = 2, 3
# BCP: "weight of unlabeled pixels" (LA and ACDC --u_weight 0.5); pixels from a labeled crop weigh 1.0
# (BCP_utils.mix_loss l_weight=1.0).
LABELED_WEIGHT, PSEUDO_WEIGHT = 1.0, 0.5
# BCP LA_BCP_train.py get_cut_mask: foreground where the teacher's probability >= 0.5.
PSEUDO_THRESHOLD = 0.5


def box_side(size: int) -> int:
    """The box's side along an axis of ``size`` voxels: int(2 size / 3), at least 1."""
    return max(1, BOX_NUMERATOR * int(size) // BOX_DENOMINATOR)


def draw_box(patch: tuple[int, int, int], dims: int, rng: np.random.Generator) -> tuple[slice, slice, slice]:
    """The paste box of one step in a crop of ``patch`` (X, Y, Z) voxels: slices along x, y, z.

    Each side is :func:`box_side` of the crop's; its start is uniform in ``0 .. size - side - 1`` (the reference's
    ``np.random.randint(0, 112 - patch_pixel_x)``, whose upper end is exclusive, so the box never touches the far
    face; 0 when the box fills the axis). One draw per axis, x then y then z.

    A 2-D network (``dims == 2``) gets the box in the plane only and through every slice of the crop: the
    reference's 2-D box (ACDC_BCP_train.py ``generate_mask``) is shared by all the slices of a step's batch, and
    a 2-D network sees a crop's slices as such a batch of separate images. A box over 2/3 of the slices would
    instead leave whole slices unmixed, a different recipe.
    """
    out = []
    for axis, size in enumerate(int(p) for p in patch):
        if dims == 2 and axis == 2:
            out.append(slice(0, size))
            continue
        side = box_side(size)
        start = int(rng.integers(0, size - side)) if size > side else 0
        out.append(slice(start, start + side))
    return tuple(out)  # type: ignore[return-value]


def box_mask(shape: tuple[int, int, int], box: tuple[slice, slice, slice], device=None) -> torch.Tensor:
    """Bool (X, Y, Z): True inside ``box``."""
    mask = torch.zeros(tuple(int(s) for s in shape), dtype=torch.bool, device=device)
    mask[box] = True
    return mask


def paste(base: torch.Tensor, pasted: torch.Tensor, box: tuple[slice, slice, slice]) -> torch.Tensor:
    """``base`` with the ``box`` of ``pasted`` in it (same shapes, spatial axes last): a new tensor."""
    if base.shape != pasted.shape:
        raise ValueError(f"paste: base {tuple(base.shape)} and pasted {tuple(pasted.shape)} differ")
    out = base.clone()
    window = (Ellipsis,) + tuple(box)
    out[window] = pasted[window]
    return out


def stage1_mix(image: torch.Tensor, label: torch.Tensor, box) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1: image (2h, 1, X, Y, Z) and label (2h, X, Y, Z) of the labeled crops -> the h mixed images and
    labels: crop i outside the box, crop h + i inside (reference ``img_a``, ``img_b``)."""
    h = _half(image.shape[0])
    return paste(image[:h], image[h:], box), paste(label[:h], label[h:], box)


def stage2_mix(image_l: torch.Tensor, label_l: torch.Tensor, image_u: torch.Tensor, pseudo_u: torch.Tensor,
               box) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 2, both directions: labeled image (2h, 1, X, Y, Z) and label (2h, X, Y, Z), unlabeled image
    (2h, 1, X, Y, Z) and its pseudo-label (2h, X, Y, Z) -> (images (2h, 1, X, Y, Z), targets (2h, X, Y, Z),
    from_labeled bool (2h, X, Y, Z)).

    Items 0..h-1: labeled crop i outside, unlabeled crop i inside the box; items h..2h-1: unlabeled crop h + i
    outside, labeled crop h + i inside. ``from_labeled`` is True where the pixel (and its target, ground truth)
    came from a labeled crop, False where the target is the teacher's pseudo-label.
    """
    h = _half(image_l.shape[0])
    if image_u.shape != image_l.shape or pseudo_u.shape != label_l.shape:
        raise ValueError(f"stage2_mix: labeled {tuple(image_l.shape)} / {tuple(label_l.shape)}, unlabeled "
                         f"{tuple(image_u.shape)} / {tuple(pseudo_u.shape)}")
    inside = box_mask(tuple(label_l.shape[-3:]), box, label_l.device)  # type: ignore[arg-type]
    images = torch.cat([paste(image_l[:h], image_u[:h], box), paste(image_u[h:], image_l[h:], box)])
    targets = torch.cat([paste(label_l[:h], pseudo_u[:h], box), paste(pseudo_u[h:], label_l[h:], box)])
    from_labeled = torch.cat([(~inside).expand(h, *inside.shape), inside.expand(h, *inside.shape)])
    return images, targets, from_labeled


def pixel_weights(from_labeled: torch.Tensor) -> torch.Tensor:
    """Float weight per pixel: ``LABELED_WEIGHT`` where ``from_labeled``, else ``PSEUDO_WEIGHT``."""
    return torch.where(from_labeled, LABELED_WEIGHT, PSEUDO_WEIGHT).float()


def _half(n: int) -> int:
    if n < 2 or n % 2:
        raise ValueError(f"copy-paste needs an even number of crops (2, 4, ...), not {n}")
    return n // 2


def pseudo_label(seg_logits: torch.Tensor, dims: int) -> torch.Tensor:
    """The teacher's pseudo-label: seg_logits (N, Cs, X, Y, Z) -> int64 (N, X, Y, Z) in 0..C, on the CPU.

    One class (Cs == 1, a sigmoid head): foreground where sigmoid >= ``PSEUDO_THRESHOLD`` (LA_BCP_train.py
    ``get_cut_mask``: softmax[:, 1] >= 0.5 of its 2-channel head, the same rule), then only its largest
    connected component (``LargestCC_pancreas``). C classes: the argmax of the softmax, then each class's
    largest component (ACDC_BCP_train.py ``get_ACDC_masks(nms=1)``). No confidence mask (the reference has none).
    Components: :func:`largest_component`, per crop (3-D) or per slice (2-D).
    """
    logits = seg_logits.detach().float().cpu()
    if logits.shape[1] == 1:
        hard = (torch.sigmoid(logits[:, 0]) >= PSEUDO_THRESHOLD).numpy().astype(np.int64)
    else:
        hard = torch.argmax(torch.softmax(logits, dim=1), dim=1).numpy().astype(np.int64)
    classes = max(1, logits.shape[1] - 1)
    out = np.zeros_like(hard)
    for n in range(hard.shape[0]):
        for c in range(1, classes + 1):
            out[n][largest_component(hard[n] == c, dims)] = c
    return torch.from_numpy(out)


def largest_component(mask: np.ndarray, dims: int) -> np.ndarray:
    """Bool (X, Y, Z): the largest connected component of ``mask`` (3-D, 26-connected), or of each z-slice
    (``dims == 2``, 8-connected in the slice); an empty mask stays empty. Ties: the component met first in
    C order (the reference's ``np.argmax(np.bincount(labels.flat)[1:]) + 1``).

    Connectivity is the reference's: ``skimage.measure.label`` with its default full connectivity (26 in 3-D,
    8 in 2-D); the 2-D reference labels each slice on its own (``get_ACDC_2DLargestCC``). One slice as a
    1-slice volume has exactly the 8 in-plane neighbours under 26-connectivity.
    """
    from ..inference.postprocess import largest_component as largest_3d

    mask = np.asarray(mask, dtype=bool)
    if dims == 2:
        return np.concatenate([largest_3d(mask[:, :, k:k + 1]) for k in range(mask.shape[2])], axis=2)
    return largest_3d(mask)
