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
MINIMUM_TORCH = (2, 2)
TORCH_VERSION_SPEC = ">=2.2"  # PyTorchUtils' torchVersionRequirement: an older installed torch is replaced


def missing(packages: dict[str, str]) -> list[str]:
    return [req for name, req in packages.items() if importlib.util.find_spec(name) is None]


def _pip(requirements: list[str]) -> None:
    import slicer

    packaging = getattr(slicer, "packaging", None)
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(requirements)
    else:
        slicer.util.pip_install(" ".join(f'"{r}"' for r in requirements))


def _install_torch() -> None:
    """PyTorch through the PyTorch extension (CUDA build for the driver) when present, else pip."""
    try:
        import PyTorchUtils  # the PyTorch extension's module
    except ImportError:  # only a missing extension falls back on pip, never an error inside installTorch
        _pip([TORCH_REQUIREMENT])
        return
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                          torchVersionRequirement=TORCH_VERSION_SPEC)
    if torch is None:
        raise DTCError("the PyTorch extension could not install PyTorch; see its module panel")


def torch_too_old() -> bool:
    """An installed torch older than the engine needs (read from its metadata: torch is not imported)."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return False
    major, minor = (int("".join(c for c in part if c.isdigit()) or 0) for part in version.split(".")[:2])
    return (major, minor) < MINIMUM_TORCH


def ensure_torch(confirm: Callable[[str], bool]) -> None:
    """Make PyTorch importable, asking ``confirm(message)`` before installing anything.

    Raises DTCError when the user declines or the installation fails (offline: says so).
    """
    need = missing(ENGINE_PACKAGES)
    has_torch = importlib.util.find_spec("torch") is not None and not torch_too_old()
    if has_torch and not need:
        return
    what = ", ".join((["PyTorch"] if not has_torch else []) + need)
    if not confirm(f"DTCSegmentation needs {what}. Install now? This downloads up to a few GB and can take minutes."):
        raise DTCError(f"{what} is required; install it (click Segment again and accept) "
                       "or install the PyTorch extension")
    try:
        if need:
            _pip(need)
        if not has_torch:
            _install_torch()
    except DTCError:
        raise
    except Exception as exc:
        raise DTCError(
            f"installing {what} failed ({exc}); check the internet connection or proxy, "
            "or install the PyTorch extension"
        ) from None
    importlib.invalidate_caches()
    if importlib.util.find_spec("torch") is None:
        raise DTCError("PyTorch is still not importable after installation; restart Slicer and try again")
