"""The panel's Next case section: rank the unlabeled volumes by the model's dual-task disagreement
(``dtc rank`` in the background), show each score and why, load the top one. A mixin of
:class:`.panel.DTCSegmentationWidget`; the wording is :mod:`.nextcase`'s, the job the Logic's."""

from __future__ import annotations

from pathlib import Path

import qt
import slicer

from DTCCore.errors import DTCError

from . import nextcase
from .cores import job_threads


class NextCaseSection:
    def onRank(self):
        if "rank" in self._jobs:
            self._jobs["rank"].cancel()
            return
        if self._installing(self.ui.rankButton, self.ui.rankStatusLabel):
            return
        with slicer.util.tryWithErrorDisplay("Ranking failed to start.", waitCursor=True):
            if not self._ensureEngine(self.ui.rankButton, self.ui.rankStatusLabel):
                return  # PyTorch is being installed first
            p = self._parameterNode
            job = self.logic.startRanking(p.datasetFolder, p.modelPath, p.device, job_threads("rank", self._jobs))
            self.ui.rankStatusLabel.text = "Ranking..."
            self._startJob("rank", job, self.ui.rankButton, onProgress=self._rankProgress, onEnd=self._endRank)

    def _rankProgress(self, job, event):
        self.ui.rankStatusLabel.text = (f"Ranking: {event['done']}/{event['total']} volumes, "
                                        f"{job.elapsed_s:.0f} s elapsed")

    def _endRank(self, job, event):
        label = self.ui.rankStatusLabel
        if self._succeeded(job, event, label, "Ranking"):
            self._ranking, self._rankedCount = list(job.ranking), len(job.ranking)
            self._showRanking()
            label.text = nextcase.ranked_note(job.ranking, job.elapsed_s)

    def _showRanking(self):
        self.ui.rankingTable.setRowCount(len(self._ranking))
        for row, (path, score) in enumerate(self._ranking):
            name, value = qt.QTableWidgetItem(Path(path).name), qt.QTableWidgetItem(nextcase.score_text(score))
            name.setToolTip(str(path))
            value.setToolTip(nextcase.SCORE_TOOLTIP)
            self.ui.rankingTable.setItem(row, 0, name)
            self.ui.rankingTable.setItem(row, 1, value)

    def _pruneRanking(self, unlabeled):
        """Drop ranked scans no longer unlabeled (added as labeled examples): the next one moves to the top."""
        kept = nextcase.still_unlabeled(self._ranking, unlabeled)
        if len(kept) != len(self._ranking):
            self._ranking = kept
            self._showRanking()
            self.ui.rankStatusLabel.text = nextcase.pruned_note(kept, self._rankedCount - len(kept))

    def onLoadTop(self):
        with slicer.util.tryWithErrorDisplay("Could not load the volume."):
            if not self._ranking:
                raise DTCError("nothing is ranked (or every ranked scan is labeled now); click 'Rank unlabeled "
                               "volumes' first")
            node = slicer.util.loadVolume(self._ranking[0][0])
            self._rankedSource[node.GetID()] = self._ranking[0][0]  # adding it as labeled moves this entry
            self._parameterNode.inputVolume = node
            self.ui.rankStatusLabel.text = nextcase.loaded_note(self._ranking)
