"""gknet: image harmonization with GKNet (Global-aware Kernel Network, ICCV 2023)."""

from gknet.errors import GknetError

__version__ = "0.1.0"
__all__ = ["GknetError", "__version__"]
