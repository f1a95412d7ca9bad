"""One rank of a training run under torchrun (started by tests/test_ddp.py): trains, then saves
this rank's final weights to DUMPS/rank<R>.pt so the test can compare the ranks."""

import sys
from pathlib import Path

import torch

from gknet.config import load_config
from gknet.training import Trainer

if __name__ == "__main__":
    config, out, dumps = sys.argv[1:4]
    trainer = Trainer(load_config(config), Path(out), device="cpu")
    trainer.run()
    torch.save(trainer.model.state_dict(), Path(dumps) / f"rank{trainer.dist.rank}.pt")
