"""Helpers of the DTCSegmentation Slicer module, one concept per file.

- :mod:`.sceneio`: volume node <-> (x, y, z) array + DTCCore geometry (RAS <-> LPS), ROI -> slices
- :mod:`.results`: result nodes (segmentation, level-set and disagreement volumes) with the input's geometry
- :mod:`.dataset`: the dataset folder (labeled pairs, unlabeled volumes, manifest, labels.json) written atomically
- :mod:`.labelexport`: a segmentation as a label with a model's label values (segments matched by name/terminology)
- :mod:`.jobs`: the engine jobs, one ``PythonSlicer -m DTCCore`` subprocess each: :mod:`.jobs.enginejob` (the
  runner: reader threads -> queue -> poll, cancel file, process group), :mod:`.jobs.segmentjob` (``dtc segment``
  and its result files), :mod:`.jobs.rankjob` (``dtc rank``), :mod:`.jobs.infojob` (``dtc info``),
  :mod:`.jobs.trainjob` (``dtc train``), :mod:`.jobs.installjob` (the PyTorch install, polled)
- :mod:`.logic`: the parameter node and the Logic, the one way in for the panel and for headless use
- :mod:`.panel`: the module panel (the widget): set-up, parameter node, enabled buttons, job polling;
  its sections :mod:`.panel_model`, :mod:`.panel_segment`, :mod:`.panel_data`, :mod:`.panel_finetune`,
  :mod:`.panel_nextcase`
- :mod:`.nextcase`: what Next case says about a ranking (each scan's disagreement score, why the top one)
- :mod:`.models`: the model registry (bundled default + models trained here)
- :mod:`.curves`: the loss-curve table and plot nodes
- :mod:`.dependencies`: PyTorch installation on first use (never at import)
- :mod:`.lifecycle`: every engine process the Logic started, stopped in bounded time on quit and Reload;
  Reload's fresh import of this package
- :mod:`.cores`: how the panel shares the CPU cores between the jobs it runs at once
- :mod:`.roihint`: the note on a scan much larger than the model's training scans, and the ROI box it offers

Nothing here imports torch: all torch work runs in ``PythonSlicer -m DTCCore`` subprocesses.
"""
