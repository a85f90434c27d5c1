"""A small CNN on the digits' 1x8x8 images: the model a user brings, in plain torch.

zkpot task create --torch-model examples/digits-cnn/model.py:model turns it into the task's
architecture (seq:1x8x8-conv4k3-relu-avgpool2-flatten-linear10) and starts the task from its
weights; only layers the circuit supports are accepted (zkpot/zkp/arch.py, docs/models.md).
"""

from torch import nn


def model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, kernel_size=3),  # 4 x 6 x 6
        nn.ReLU(),
        nn.AvgPool2d(2),                 # 4 x 3 x 3
        nn.Flatten(),
        nn.Linear(36, 10),               # the 10 classes' logits
    )
