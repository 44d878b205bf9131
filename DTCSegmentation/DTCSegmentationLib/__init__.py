"""Helpers of the DTCSegmentation Slicer module, one concept per file.

- :mod:`.sceneio`: volume node <-> (x, y, z) array + DTCCore geometry (RAS <-> LPS), ROI -> slices
- :mod:`.results`: result nodes (segmentation, level-set and disagreement volumes) with the input's geometry
- :mod:`.dataset`: the dataset folder (labeled pairs, unlabeled volumes, manifest) written atomically
- :mod:`.jobs`: the process runner (reader thread -> queue -> poll) and the fine-tune job
- :mod:`.worker`: a background thread with a cancel flag for in-process inference
- :mod:`.models`: the model registry (bundled default + models trained here)
- :mod:`.curves`: the loss-curve table and plot nodes
- :mod:`.dependencies`: PyTorch installation on first use (never at import)

Nothing here imports torch at import time; DTCCore modules that need it are imported inside functions.
"""
