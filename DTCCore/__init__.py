"""DTCCore: the dual-task-consistency (DTC) segmentation engine.

Implements *Semi-supervised Medical Image Segmentation through Dual-task Consistency* (Luo et al.,
AAAI 2021): a dual-task VNet, the level-set transform, the DTC losses, a trainer, sliding-window
inference, metrics and the ``dtc`` command line. It never imports slicer, qt or vtk.
"""

__version__ = "0.1.0"

from .errors import DTCError  # noqa: E402  (cheap; torch-free)

__all__ = ["DTCError", "__version__"]
