"""Every launch config in recipes/accelerate/ loads with accelerate's own config loader and says what it claims."""

from __future__ import annotations

import pytest
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.utils import DistributedType

from helpers import ROOT

CONFIGS = ROOT / "recipes" / "accelerate"

# file -> (distributed_type, num_machines, num_processes, mixed_precision)
EXPECTED = {
    "single_gpu.yaml": (DistributedType.NO, 1, 1, "bf16"),
    "multi_gpu.yaml": (DistributedType.MULTI_GPU, 1, 8, "bf16"),
    "cpu_2proc.yaml": (DistributedType.MULTI_GPU, 1, 2, "no"),  # real DDP on CPU with ACCELERATE_USE_CPU=1
    "fsdp.yaml": (DistributedType.FSDP, 1, 8, "bf16"),
    "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, 1, 8, "bf16"),
    "deepspeed_zero3.yaml": (DistributedType.DEEPSPEED, 1, 8, "bf16"),
    "multi_node.yaml": (DistributedType.MULTI_GPU, 2, 16, "bf16"),
}


def test_every_config_is_covered():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_and_is_headed_by_its_launch_command(name):
    path = CONFIGS / name
    config = ClusterConfig.from_yaml_file(path)  # raises on keys accelerate does not know
    distributed_type, machines, processes, precision = EXPECTED[name]
    assert config.distributed_type == distributed_type
    assert (config.num_machines, config.num_processes, config.mixed_precision) == (machines, processes, precision)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "accelerate launch --config_file recipes/accelerate/" + name in first, first


def test_fsdp_shards_everything_and_wraps_transformer_blocks():
    fsdp = ClusterConfig.from_yaml_file(CONFIGS / "fsdp.yaml").fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_reshard_after_forward"] is True  # FSDP2, FULL_SHARD
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # one loadable file at the end, not shards


@pytest.mark.parametrize("name, stage", [("deepspeed_zero2.yaml", 2), ("deepspeed_zero3.yaml", 3)])
def test_deepspeed_stage(name, stage):
    ds = ClusterConfig.from_yaml_file(CONFIGS / name).deepspeed_config
    assert ds["zero_stage"] == stage and ds["offload_optimizer_device"] == ds["offload_param_device"] == "none"
    if stage == 3:
        # gathered 16-bit weights at the end; the base model loaded whole (the recipes evaluate it before training)
        assert ds["zero3_save_16bit_model"] is True and ds["zero3_init_flag"] is False


def test_multi_node_names_what_each_node_sets():
    path = CONFIGS / "multi_node.yaml"
    config = ClusterConfig.from_yaml_file(path)
    assert config.machine_rank == 0 and config.main_process_ip and config.main_process_port
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    commands = [line for line in header if "accelerate launch" in line]
    assert any("--machine_rank 0" in c for c in commands) and any("--machine_rank 1" in c for c in commands)
    for variable in ("machine_rank", "main_process_ip", "main_process_port", "num_machines", "num_processes"):
        assert any(line.lstrip("# ").startswith(variable) for line in header), variable
