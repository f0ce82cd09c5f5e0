"""Test-only: lets `accelerate launch` run FSDP2 on CPU processes (gloo), so the sharded paths run in CI.

Loaded by Python at start-up when this folder is on PYTHONPATH (tests/test_sharded_training.py puts it there) and
HF_MEDAI_FSDP_ON_CPU=1. accelerate turns FSDP on only for accelerator devices: with ACCELERATE_USE_CPU=1 it starts a
plain MULTI_CPU run and ignores the FSDP plugin. PyTorch's FSDP2 (`fully_shard`) itself runs on CPU with gloo: each
process holds DTensor shards, the forward all-gathers, the backward reduce-scatters. This switches accelerate's state
to FSDP when an FSDP plugin was configured, so `Accelerator.prepare` shards the model with `fully_shard` and
`get_state_dict` gathers it, exactly as on GPUs. Nothing in hf_medai imports it.
"""

import os

if os.environ.get("HF_MEDAI_FSDP_ON_CPU") == "1":
    import accelerate.state as _state
    from accelerate.utils import DistributedType

    _original_init = _state.AcceleratorState.__init__

    def _init(self, *args, **kwargs):
        _original_init(self, *args, **kwargs)
        plugin = kwargs.get("fsdp_plugin")
        if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            # PartialState's shared state too: a later AcceleratorState() copies it back over this one.
            _state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = plugin

    _state.AcceleratorState.__init__ = _init
