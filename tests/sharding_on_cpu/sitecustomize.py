"""Test-only: lets `accelerate launch` run FSDP2 and DeepSpeed on CPU processes, so the sharded paths run in CI.

Python loads this at start-up when the folder is on PYTHONPATH (tests/test_sharded_training.py puts it there).
Nothing in hf_medai imports it. accelerate enables FSDP and DeepSpeed only on accelerator devices, while the
sharding itself runs on CPU: PyTorch's FSDP2 (`fully_shard`: DTensor shards, all-gather forward, reduce-scatter
backward) over gloo, and DeepSpeed's CPU accelerator, which uses gloo too. Two switches:

- HF_MEDAI_FSDP_ON_CPU=1 (with ACCELERATE_USE_CPU=1): accelerate starts a MULTI_CPU run and ignores the configured
  FSDP plugin; this sets its state to FSDP, so `Accelerator.prepare` shards with `fully_shard` and `get_state_dict`
  gathers, as on GPUs.
- HF_MEDAI_DEEPSPEED_ON_CPU=1 (without ACCELERATE_USE_CPU): accelerate finds no device backend and counts one process
  although DeepSpeed has joined all of them; this names gloo, so the process count is the real one. It also keeps
  DeepSpeed from compiling its optional shared-memory all-reduce for CPU (a C++ build at start-up; gloo does the same
  work), so the tests need no compiler.
"""

import os

if "1" in (os.environ.get("HF_MEDAI_FSDP_ON_CPU"), os.environ.get("HF_MEDAI_DEEPSPEED_ON_CPU")):
    import accelerate.state as _state
    from accelerate.utils import DistributedType

if os.environ.get("HF_MEDAI_FSDP_ON_CPU") == "1":
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

if os.environ.get("HF_MEDAI_DEEPSPEED_ON_CPU") == "1":
    _original_prepare_backend = _state.PartialState._prepare_backend

    def _prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        found_backend, found_type = _original_prepare_backend(self, cpu, sagemaker_dp, backend)
        if found_type == DistributedType.NO and int(os.environ.get("LOCAL_RANK", -1)) != -1:
            return "gloo", DistributedType.MULTI_CPU  # DeepSpeed's CPU accelerator joined the processes over gloo
        return found_backend, found_type

    _state.PartialState._prepare_backend = _prepare_backend

    import importlib

    # (not `import deepspeed.comm.torch as ...`: the package's attribute `torch` is PyTorch itself)
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
