"""Reading annotation pickles (REFER's ``refs(unc).p``) without executing code.

``pickle.load`` can run any callable a file names; an annotation file needs none. This unpickler admits
the opcodes of plain containers and scalars and refuses every global, except ``set`` / ``frozenset``
(pickled by reference to the builtin in protocols below 4) and ``OrderedDict``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

_ALLOWED = {
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
    ("collections", "OrderedDict"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds plain data only; any other global raises ``pickle.UnpicklingError``."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name}: annotation pickles hold plain data only"
        )


def load_plain_pickle(path: str | Path) -> Any:
    """Load a pickle of plain containers and scalars (Python 2 ``str`` read as latin-1 text).

    Raises:
        pickle.UnpicklingError: the file names a global other than set / frozenset / OrderedDict, or is
            not a pickle.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise pickle.UnpicklingError(f"{path}: {error}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError) as error:
        raise pickle.UnpicklingError(f"{path}: not a readable pickle ({error})") from None
