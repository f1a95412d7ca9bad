"""gknet: image harmonization with GKNet (Global-aware Kernel Network, ICCV 2023)."""

from gknet.errors import GknetError

__version__ = "0.1.0"
__all__ = ["GknetError", "Harmonizer", "__version__"]


def __getattr__(name: str):
    # Lazy: `import gknet` (and `gknet --help`) should not pay for importing torch.
    if name == "Harmonizer":
        from gknet.inference.harmonizer import Harmonizer

        return Harmonizer
    raise AttributeError(f"module 'gknet' has no attribute {name!r}")
