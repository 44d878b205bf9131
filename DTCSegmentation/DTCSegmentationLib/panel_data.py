"""The panel's Training data section: the dataset folder's labeled pairs and unlabeled volumes, and adding
to them from the scene or from files (written at once). A mixin of :class:`.panel.DTCSegmentationWidget`;
the dataset is read and written by its Logic."""

from __future__ import annotations

import qt
import slicer

from DTCCore.errors import DTCError

VOLUME_FILTER = "Volumes (*.nrrd *.nii *.nii.gz *.mha)"


class DataSection:
    def refreshDataset(self, *args):
        """Show the dataset folder's manifest; returns it (None when unreadable: the status says why)."""
        try:
            m = self.logic.loadDataset(self._parameterNode.datasetFolder)
        except DTCError as exc:
            self.ui.datasetStatusLabel.text = str(exc)
            return None
        self.ui.labeledTable.setRowCount(len(m.labeled))
        for row, pair in enumerate(m.labeled):
            self.ui.labeledTable.setItem(row, 0, qt.QTableWidgetItem(pair.image.name))
            self.ui.labeledTable.setItem(row, 1, qt.QTableWidgetItem(pair.label.name))
        self.ui.unlabeledList.clear()
        for path in m.unlabeled:
            self.ui.unlabeledList.addItem(path.name)
        self.ui.datasetStatusLabel.text = f"{len(m.labeled)} labeled, {len(m.unlabeled)} unlabeled"
        self._showModeChoice()  # auto's pick depends on the labeled and unlabeled scans
        return m

    def onAddLabeled(self):
        with slicer.util.tryWithErrorDisplay("Could not add the labeled example.", waitCursor=True):
            p = self._parameterNode
            # fine-tuning the current model: the label holds its label values; from scratch the dataset's own
            table = self._labelTable(p.modelPath) if p.startFrom == "current model" else None
            loaded = self._rankedSource.get(p.inputVolume.GetID()) if p.inputVolume is not None else None
            image, _ = self.logic.addLabeledExample(p.datasetFolder, p.inputVolume, p.segmentation, table, loaded)
            m = self.refreshDataset()
            self.ui.datasetStatusLabel.text += f" (saved {image.name})"
            if m is not None:
                self._pruneRanking(m.unlabeled)  # a ranked scan, now labeled, leaves the ranking

    def onAddLabeledFiles(self):
        image = qt.QFileDialog.getOpenFileName(None, "Image", "", VOLUME_FILTER)
        label = image and qt.QFileDialog.getOpenFileName(None, "Label of " + image, "", VOLUME_FILTER)
        if image and label:
            with slicer.util.tryWithErrorDisplay("Could not add the labeled pair."):
                self.logic.addLabeledFiles(self._parameterNode.datasetFolder, image, label)
                self.refreshDataset()

    def onAddUnlabeled(self):
        with slicer.util.tryWithErrorDisplay("Could not add the unlabeled volumes.", waitCursor=True):
            volumes = self.ui.unlabeledVolumesSelector.checkedNodes()
            if not volumes:
                raise DTCError("no volume is checked; tick volumes in 'Unlabeled volumes' first")
            self.logic.addUnlabeledVolumes(self._parameterNode.datasetFolder, volumes)
            self.refreshDataset()

    def onAddUnlabeledFiles(self):
        files = qt.QFileDialog.getOpenFileNames(None, "Unlabeled volumes", "", VOLUME_FILTER)
        with slicer.util.tryWithErrorDisplay("Could not add the unlabeled files."):
            self.logic.addUnlabeledFiles(self._parameterNode.datasetFolder, files)
            self.refreshDataset()
