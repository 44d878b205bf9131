"""Render the real module panel after a Segment of the bundled sample to a PNG (docs/screenshot.png).

    QT_QPA_PLATFORM=offscreen python Testing/slicer_harness/render_panel.py docs/screenshot.png

The panel is DTCSegmentationWidget on the harness (PySide6 offscreen); Segment runs the bundled model in
an engine subprocess on the bundled left-atrium MRI case, exactly as the widget tests do.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slicer_harness import pythonqt, scene, scripted_module  # noqa: E402
from slicer_harness.fixtures import MODULE_FILE, REPO  # noqa: E402

# The home folder the picture shows (Model > Models folder is <home>/DTCSegmentation/models): a user's, not a
# temporary folder. Nothing is written there: the panel only names the folder, Segment works in a temporary one.
DISPLAY_HOME = Path("/home/clinician")


def render(target: Path, width: int = 520, height: int = 900) -> Path:
    existed = (DISPLAY_HOME / "DTCSegmentation").exists()
    os.environ["HOME"] = str(DISPLAY_HOME)
    import slicer

    scene.new_scene()
    module = scene.import_module_file(MODULE_FILE)
    volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "DTCLeftAtriumMRI")
    storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(REPO / "DTCCore" / "sample" / "la_sample_image.nrrd"))
    if not storage.ReadData(volume):
        raise RuntimeError("cannot read the sample")
    parent = scripted_module.make_widget_parent()
    widget = module.DTCSegmentationWidget(parent)
    widget.setup()
    widget.ui.inputVolumeSelector.setCurrentNode(volume)
    widget.ui.deviceComboBox.currentIndex = 2  # cpu
    deadline = time.monotonic() + 120
    while widget._jobs and time.monotonic() < deadline:
        pythonqt.process_events(0.1)
    widget.ui.segmentButton.click()
    deadline = time.monotonic() + 900
    while "segment" in widget._jobs and time.monotonic() < deadline:
        pythonqt.process_events(0.1)
    while widget._jobs and time.monotonic() < deadline:
        pythonqt.process_events(0.1)
    widget.ui.advancedCollapsibleButton.collapsed = True
    qwidget = pythonqt.unwrap(parent)
    qwidget.resize(width, height)
    qwidget.show()
    pythonqt.process_events(0.3)
    # the panel's own height (no empty space below), with wrapped labels given the lines they need at this width
    qwidget.resize(width, max(qwidget.sizeHint().height(), qwidget.heightForWidth(width)))
    pythonqt.process_events(0.3)
    pixmap = qwidget.grab()
    target.parent.mkdir(parents=True, exist_ok=True)
    if not pixmap.save(str(target)):
        raise RuntimeError(f"cannot write {target}")
    print(widget.ui.segmentStatusLabel.text)
    if not existed and (DISPLAY_HOME / "DTCSegmentation").exists():
        raise RuntimeError(f"rendering wrote into {DISPLAY_HOME}; it must only name that folder")
    return target


if __name__ == "__main__":
    print(render(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot.png")))
