"""What the Next case section says about a ranking: each scan's disagreement score, and why the top one.

``dtc rank`` scores a scan by its mean dual-task disagreement, mean |p_segmentation - p_level set| over
the scan (0 to 1): where the model's two heads disagree it is unsure, so a correction there teaches it
the most. The panel shows the score beside each scan (:func:`score_text`), says after a ranking which
scan comes next and how far above the others it stands (:func:`ranked_note`), and after "Load the
top-ranked volume" which scan was loaded and why (:func:`loaded_note`).
"""

from __future__ import annotations

import statistics
from pathlib import Path

# Significant digits of a score. Mean disagreements are small fractions (most voxels lie far from any
# boundary, where both heads agree): the bundled model gives 0.0208 on the bundled sample scan (dtc rank,
# our measurement), and a better model's scores fall below 0.01, where the former fixed 4 decimals kept
# 2 digits (0.0012 for both 0.00123 and 0.00118).
SCORE_DIGITS = 3
SCORE_TOOLTIP = ("Mean disagreement between the segmentation and the level-set heads over the scan (0 to 1). "
                 "Higher: the model is less sure of this scan, so correcting it teaches the model more.")


# Scans to correct before the next fine-tune: the annotation-loop study's k (bench/studies/annotation_loop.py, issue 24;
# bench/RESULTS.md, "The annotation loop"), where each round of 2 corrections and a short fine-tune gained.
SUGGESTED_PER_ROUND = 2


def score_text(score: float) -> str:
    """A disagreement score as shown in the table: :data:`SCORE_DIGITS` significant digits."""
    return f"{float(score):.{SCORE_DIGITS}g}"


def ranked_note(ranking: list, seconds: float) -> str:
    """The status after a ranking (``ranking``: [(path, score)] highest first): the next case and its score."""
    text = f"Ranked {len(ranking)} volumes in {seconds:.1f} s."
    if ranking:
        path, score = ranking[0]
        text += f" Next case: {Path(path).name}, mean disagreement {score_text(score)}"
        if len(ranking) > 1:
            median = statistics.median(s for _, s in ranking)
            text += f" (median of the {len(ranking)}: {score_text(median)})"
        text += "."
    if len(ranking) > 1:
        text += (f" Correct the top {min(SUGGESTED_PER_ROUND, len(ranking))}, add each as a labeled example, "
                 "then fine-tune and rank again.")
    return text


def still_unlabeled(ranking: list, unlabeled: list) -> list:
    """The ranking ([(path, score)] highest first) without the scans no longer in ``unlabeled`` (paths)."""
    keep = {Path(p).resolve() for p in unlabeled}
    return [(path, score) for path, score in ranking if Path(path).resolve() in keep]


def pruned_note(ranking: list, labeled_since_rank: int) -> str:
    """The status after a ranked scan was added as labeled: what comes next (``ranking``: what is left)."""
    text = f"{labeled_since_rank} ranked scan{'s' if labeled_since_rank != 1 else ''} labeled since the ranking."
    if labeled_since_rank >= SUGGESTED_PER_ROUND or not ranking:
        return text + " Fine-tune now, then rank again: the model has not learned from them yet."
    path, score = ranking[0]
    return text + f" Next case: {Path(path).name}, mean disagreement {score_text(score)}."


def loaded_note(ranking: list) -> str:
    """The status after loading the top-ranked scan: which one and why it was suggested."""
    path, score = ranking[0]
    return (f"Loaded {Path(path).name}: mean disagreement {score_text(score)}, the highest of the "
            f"{len(ranking)} ranked and still unlabeled. Segment it, correct it, then add it as a labeled example.")
