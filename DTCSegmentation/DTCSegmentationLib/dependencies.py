"""Python packages the engine needs inside Slicer, installed on first use (never at import time).

PyTorch is installed by light-the-torch, the installer the PyTorch extension (``PyTorchUtils``) uses,
which picks the CUDA build that matches the GPU driver (the CPU build without one). It runs as a child
process (``PythonSlicer -m light_the_torch install torch``) polled as a job (:mod:`.jobs.installjob`: its
output in the status line, Cancel), so the GUI never waits on the download and torch is never imported
into Slicer's own process; only torch is installed (``installTorch`` of the extension imports torch and
installs torchvision too). Installs go through ``slicer.packaging.pip_ensure`` where it exists (Slicer >= 5.12),
else ``slicer.util.pip_install``, once the user has agreed. The other packages (SimpleITK, scipy ...
already in most Slicer builds) follow the same path.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from DTCCore.errors import DTCError
from DTCCore.protocol import JobState

from .jobs.installjob import TorchInstallJob, offline_message

# import name -> pip requirement (ranges as in pyproject.toml)
ENGINE_PACKAGES = {"SimpleITK": "SimpleITK>=2.2,<3", "scipy": "scipy>=1.10,<2", "tqdm": "tqdm>=4.60,<5"}
TORCH_REQUIREMENT = "torch>=2.2,<3"
MINIMUM_TORCH = (2, 2)
TORCH_INSTALLER = "light-the-torch>=0.5"  # what PyTorchUtils installs to install torch (SlicerPyTorch, 2024-04)
TORCH_INSTALLER_MODULE = "light_the_torch"
TORCH_INSTALL_TIMEOUT_S = 3 * 3600.0  # console installs only (the panel polls and never waits): a slow download


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
    """PyTorch in a child process (never imported here), blocking (console use); DTCError on failure."""
    job = start_torch_install()
    job.wait(TORCH_INSTALL_TIMEOUT_S)
    if job.state != JobState.DONE:
        job.cancel()
        raise DTCError(job.error or "installing PyTorch did not finish; install it from the PyTorch extension's panel")


def start_torch_install(action: str = "the button") -> TorchInstallJob:
    """The torch install as a started, polled job (:mod:`.jobs.installjob`); light-the-torch first when missing
    (a small package, through Slicer's pip). ``action``: the button the user clicks again afterwards."""
    if importlib.util.find_spec(TORCH_INSTALLER_MODULE) is None:
        try:
            _pip([TORCH_INSTALLER])
        except Exception as exc:  # no network on first use fails here first
            raise DTCError(offline_message(action, str(exc).strip().splitlines()[-1] if str(exc).strip() else ""))
    job = TorchInstallJob(torch_install_command(), action)
    job.start()
    return job


def torch_too_old() -> bool:
    """An installed torch older than the engine needs (read from its metadata: torch is not imported)."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return False
    major, minor = (int("".join(c for c in part if c.isdigit()) or 0) for part in version.split(".")[:2])
    return (major, minor) < MINIMUM_TORCH


def start_install(confirm: Callable[[str], bool], action: str = "the button") -> TorchInstallJob | None:
    """What the engine needs, after asking ``confirm(message)``: None when nothing is missing (the small
    packages, if any were missing, are installed here through Slicer's pip); else the started PyTorch install
    job, for the caller to poll. DTCError when the user declines or an install fails (offline: says what to do)."""
    need = missing(ENGINE_PACKAGES)
    has_torch = importlib.util.find_spec("torch") is not None and not torch_too_old()
    if has_torch and not need:
        return None
    what = ", ".join((["PyTorch"] if not has_torch else []) + need)
    if not confirm(f"DTCSegmentation needs {what}. Install now? This downloads up to a few GB and can take minutes; "
                   "the progress is shown in the panel, and Cancel stops it."):
        raise DTCError(f"{what} is required; install it (click {action} again and accept) "
                       "or install the PyTorch extension")
    if need:
        try:
            _pip(need)
        except Exception as exc:
            raise DTCError(f"installing {', '.join(need)} failed ({exc}); check the internet connection or "
                           "proxy, or install the PyTorch extension") from None
        importlib.invalidate_caches()
    return start_torch_install(action) if not has_torch else None


def ensure_torch(confirm: Callable[[str], bool]) -> None:
    """Make PyTorch importable, asking ``confirm(message)`` before installing anything; blocks (console use).

    Raises DTCError when the user declines or the installation fails (offline: says so).
    """
    job = start_install(confirm)
    if job is not None:
        job.wait(TORCH_INSTALL_TIMEOUT_S)
        if job.state != JobState.DONE:
            job.cancel()
            raise DTCError(job.error or "installing PyTorch did not finish; install it from the PyTorch extension")
    check_installed()


def check_installed() -> None:
    """DTCError when torch is still not importable after an install (Slicer caches the import paths)."""
    importlib.invalidate_caches()
    if importlib.util.find_spec("torch") is None:
        raise DTCError("PyTorch is still not importable after installation; restart Slicer and try again")
