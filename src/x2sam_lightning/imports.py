"""Optional and heavy third-party imports, resolved lazily in one place.

Importing ``x2sam_lightning`` must not import decord, pycocotools or pycocoevalcap: each is loaded when
first needed, and a missing one raises an error that says what to install.
"""

from __future__ import annotations

import importlib
import shutil
from types import ModuleType

_INSTALL_HINTS = {
    "decord": "pip install decord  (mp4 decoding in data.shards)",
    "pycocotools": "pip install pycocotools  (RLE masks, COCO / YT-VIS AP)",
    "pycocoevalcap": "pip install 'x2sam-lightning[caption]'  (METEOR and CIDEr for GCG)",
    "av": "pip install av  (writing mp4 clips in data.synthetic)",
    "scipy": "pip install scipy  (Hungarian matching)",
    "deepspeed": "pip install 'x2sam-lightning[deepspeed]'  (the trainer=deepspeed preset)",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:  # pragma: no cover - depends on the environment
        top = module.split(".")[0]
        hint = _INSTALL_HINTS.get(top, f"pip install {top}")
        raise ImportError(f"x2sam_lightning needs '{module}' here: {hint}") from error


def java_available() -> bool:
    """METEOR (pycocoevalcap) runs a Java program: True if ``java`` is on PATH."""
    return shutil.which("java") is not None
