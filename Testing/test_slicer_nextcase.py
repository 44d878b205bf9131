"""What the Next case section says as the annotation loop goes on (DTCSegmentationLib/nextcase.py, issue 24)."""

from __future__ import annotations

from slicer_harness.fixtures import slicer_scene  # noqa: F401  (puts the module's folder on sys.path)


def test_next_case_says_when_to_fine_tune(tmp_path):
    """After each ranked scan is labeled the status names the next one, until SUGGESTED_PER_ROUND (the
    annotation-loop study's k) are labeled or none is left: then it says to fine-tune and rank again."""
    from DTCSegmentationLib import nextcase

    paths = [tmp_path / f"s{i}.nrrd" for i in range(3)]
    for path in paths:
        path.touch()
    ranking = [(str(p), 0.05 - 0.01 * i) for i, p in enumerate(paths)]
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    kept = nextcase.still_unlabeled(ranking, [link / "s1.nrrd", paths[2]])  # matched on resolved paths
    assert kept == ranking[1:]
    assert nextcase.pruned_note(kept, 1) == "1 ranked scan labeled since the ranking. Next case: s1.nrrd, " \
                                            "mean disagreement 0.04."
    assert nextcase.SUGGESTED_PER_ROUND == 2
    after_k = nextcase.pruned_note(ranking[2:], 2)
    assert after_k.startswith("2 ranked scans labeled since the ranking. Fine-tune now, then rank again")
    assert nextcase.pruned_note([], 1).startswith("1 ranked scan labeled since the ranking. Fine-tune now")
    assert "Correct the top" not in nextcase.ranked_note(ranking[:1], 1.0)  # one scan: nothing to choose from
