"""The forward FLOPs of one image through a run's model (backbone and method's logits), as
torch.utils.flop_counter.FlopCounterMode counts them: a multiply-add is two FLOPs, and only
the operations it knows (convolutions, matrix products, attention) count, so normalisation and
activations are left out. RIDE's claim is accuracy at lower compute; the result row records
this figure for every run so that methods can be compared on it."""

import torch
from torch.utils.flop_counter import FlopCounterMode

from ltbench.data.pipeline import eval_batches


@torch.no_grad()
def forward_flops(backbone, method, image: torch.Tensor) -> int:
    """FLOPs of `method.logits(backbone(image))` for a batch of one image, in eval mode (so a
    method's evaluation path is what counts: all experts, no training-only branch)."""
    modes = [(module, module.training) for module in (backbone, method)]
    for module, _ in modes:
        module.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            method.logits(backbone(image))
    finally:
        for module, mode in modes:
            module.train(mode)
    return int(counter.get_total_flops())


def run_forward_flops(trainer) -> int:
    """forward_flops of a trainer's model on its first test image, prepared as evaluation
    prepares it (normalised, at the run's image size), in fp32 and uncompiled."""
    data = trainer.data
    images, _ = next(iter(eval_batches(data, data.test_x[:1], data.test_y[:1], trainer.device, 1, trainer.params)))
    backbone = getattr(trainer.backbone, "_orig_mod", trainer.backbone)  # torch.compile's wrapper
    return forward_flops(backbone, trainer.method, images.float())
