"""The one training loop shared by `distill` and `finetune` (see `loop.fit`)."""

from clipdistill.train.config import TrainConfig
from clipdistill.train.distributed import DistInfo, init_distributed, shutdown
from clipdistill.train.loop import NonFiniteLoss, Task, fit

__all__ = ["DistInfo", "NonFiniteLoss", "Task", "TrainConfig", "fit", "init_distributed", "shutdown"]
