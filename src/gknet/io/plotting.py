"""matplotlib is an optional extra (``gknet[plot]``): the commands that draw check for it first."""

from __future__ import annotations

from gknet.errors import GknetError


def require_matplotlib(what: str) -> None:
    """GknetError with the install command when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise GknetError(f"{what} needs matplotlib: pip install 'gknet[plot]'") from None
