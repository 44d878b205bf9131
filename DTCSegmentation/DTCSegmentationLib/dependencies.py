"""Python packages the engine needs inside Slicer, installed on first use (never at import time).

PyTorch is installed by light-the-torch, the installer the PyTorch extension (``PyTorchUtils``) uses,
which picks the CUDA build that matches the GPU driver (the CPU build without one). It runs as a child
process (``PythonSlicer -m light_the_torch install torch``), so torch is never imported into Slicer's
own process, and only torch is installed (``installTorch`` of the extension imports torch and installs
torchvision too). Installs go through ``slicer.packaging.pip_ensure`` where it exists (Slicer >= 5.12),
else ``slicer.util.pip_install``, once the user has agreed. The other packages (SimpleITK, scipy ...
already in most Slicer builds) follow the same path.
"""

from __future__ import annotations

import importlib.util
import subprocess
from collections.abc import Callable

from DTCCore.errors import DTCError

# import name -> pip requirement (ranges as in pyproject.toml)
ENGINE_PACKAGES = {"SimpleITK": "SimpleITK>=2.2,<3", "scipy": "scipy>=1.10,<2", "tqdm": "tqdm>=4.60,<5"}
TORCH_REQUIREMENT = "torch>=2.2,<3"
MINIMUM_TORCH = (2, 2)
TORCH_INSTALLER = "light-the-torch>=0.5"  # what PyTorchUtils installs to install torch (SlicerPyTorch, 2024-04)
TORCH_INSTALLER_MODULE = "light_the_torch"
INSTALLER_OUTPUT_LINES = 5  # lines of the installer's output quoted when it fails


def missing(packages: dict[str, str]) -> list[str]:
    return [req for name, req in packages.items() if importlib.util.find_spec(name) is None]


def _pip(requirements: list[str]) -> None:
    import slicer

    packaging = getattr(slicer, "packaging", None)
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        # the user has already agreed (ensure_torch asks once, naming everything): no second dialog
        packaging.pip_ensure(requirements, prompt_install=False, requester="DTCSegmentation")
    else:
        slicer.util.pip_install(" ".join(f'"{r}"' for r in requirements))


def torch_install_command() -> list[str]:
    """``PythonSlicer -m light_the_torch install "torch>=2.2,<3"``: the build for this GPU driver, torch alone."""
    from .jobs.enginejob import python_executable

    return [python_executable(), "-m", TORCH_INSTALLER_MODULE, "install", TORCH_REQUIREMENT]


def _install_torch() -> None:
    """PyTorch in a child process (never imported here); DTCError with the installer's last lines on failure."""
    from .jobs.enginejob import popen_options

    if importlib.util.find_spec(TORCH_INSTALLER_MODULE) is None:
        _pip([TORCH_INSTALLER])
    done = subprocess.run(torch_install_command(), capture_output=True, text=True, encoding="utf-8",
                          errors="replace", stdin=subprocess.DEVNULL, check=False, **popen_options())
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-INSTALLER_OUTPUT_LINES:])
        raise DTCError(f"installing PyTorch failed ({tail or f'exit code {done.returncode}'}); check the internet "
                       "connection or proxy, or install PyTorch from the PyTorch extension's panel")


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
