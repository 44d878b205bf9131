"""Python packages the engine needs inside Slicer, installed on first use (never at import time).

PyTorch comes from the PyTorch extension's ``PyTorchUtils`` when it is installed (it picks the CUDA
build that matches the driver); otherwise, after the user agrees, from pip through
``slicer.packaging.pip_ensure`` (Slicer >= 5.12) or ``slicer.util.pip_install``. The other packages
(SimpleITK, scipy ... already in most Slicer builds) follow the same path.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from DTCCore.errors import DTCError

# import name -> pip requirement (ranges as in pyproject.toml)
ENGINE_PACKAGES = {"SimpleITK": "SimpleITK>=2.2,<3", "scipy": "scipy>=1.10,<2", "tqdm": "tqdm>=4.60,<5"}
TORCH_REQUIREMENT = "torch>=2.2,<3"


def missing(packages: dict[str, str]) -> list[str]:
    return [req for name, req in packages.items() if importlib.util.find_spec(name) is None]


def _pip(requirements: list[str]) -> None:
    import slicer

    packaging = getattr(slicer, "packaging", None)
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(requirements)
    else:
        slicer.util.pip_install(" ".join(f'"{r}"' for r in requirements))


def ensure_torch(confirm: Callable[[str], bool]) -> None:
    """Make ``import torch`` work, asking ``confirm(message)`` before installing anything.

    Raises DTCError when the user declines or the installation fails (offline: says so).
    """
    need = missing(ENGINE_PACKAGES)
    has_torch = importlib.util.find_spec("torch") is not None
    if has_torch and not need:
        return
    what = ", ".join((["PyTorch"] if not has_torch else []) + need)
    if not confirm(f"DTCSegmentation needs {what}. Install now? This downloads up to a few GB and can take minutes."):
        raise DTCError(f"{what} is required; install it (click Segment again and accept) or install the PyTorch extension")
    try:
        if need:
            _pip(need)
        if not has_torch:
            try:
                import PyTorchUtils  # the PyTorch extension's module

                torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)
                if torch is None:
                    raise DTCError("the PyTorch extension could not install PyTorch; see its module panel")
            except ImportError:
                _pip([TORCH_REQUIREMENT])
    except DTCError:
        raise
    except Exception as exc:
        raise DTCError(
            f"installing {what} failed ({exc}); check the internet connection or proxy, or install the PyTorch extension"
        ) from None
    importlib.invalidate_caches()
    if importlib.util.find_spec("torch") is None:
        raise DTCError("PyTorch is still not importable after installation; restart Slicer and try again")
