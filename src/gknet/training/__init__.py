"""The training recipe: loop (single process or DDP), resumable state, datasets, run log.

``loop`` holds the public functions, re-exported here; ``state`` the resumable
``torch.save``'d checkpoints, ``data`` the datasets of a ``DataConfig``, ``log`` the
``log.jsonl`` records and their plot.
"""

__all__ = [
    "checkpoint_model",
    "config_from_checkpoint",
    "epoch_batches",
    "export_checkpoint",
    "lr_factor",
    "train",
    "validate",
]


def __getattr__(name: str):
    # Lazy: `gknet plot-log` imports gknet.training.log and should not pay for importing torch.
    if name in __all__:
        from gknet.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'gknet.training' has no attribute {name!r}")
