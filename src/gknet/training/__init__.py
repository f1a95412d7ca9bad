"""The training recipe: loop (single process or DDP), resumable state, datasets, run log.

``loop`` holds the trainer, ``distributed`` the DDP plumbing, ``validation`` the scoring of
checkpoints, ``state`` the resumable ``torch.save``'d checkpoints, ``data`` the datasets of a
``DataConfig``, ``ema`` the weight average, ``log`` the ``log.jsonl`` records and their plot.
Checkpoints become release weights in :mod:`gknet.inference.checkpoints`.
"""

__all__ = ["Trainer", "epoch_batches", "lr_factor", "train", "validate"]
_HOMES = {"epoch_batches": "distributed", "validate": "validation"}


def __getattr__(name: str):
    # Lazy: `gknet plot-log` imports gknet.training.log and should not pay for importing torch.
    if name in __all__:
        from importlib import import_module

        return getattr(import_module(f"gknet.training.{_HOMES.get(name, 'loop')}"), name)
    raise AttributeError(f"module 'gknet.training' has no attribute {name!r}")
