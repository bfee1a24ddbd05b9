"""Config errors are caught before anything is built, with a message that names the fix."""

import pytest

from dora_bench.errors import ConfigError
from dora_bench.run.checks import check_config, resolve_lr
from support import compose

BASE = ["task=demo", "backbone=tiny", "method=lora"]


@pytest.mark.parametrize(
    "override, words",
    [
        ("budget=0", "budget=0 must be a whole number >= 1"),
        ("trainer.lr=-1e-3", "trainer.lr=-0.001 must be > 0"),
        ("trainer.epochs=0", "trainer.epochs=0"),
        ("trainer.batch_size=0", "trainer.batch_size=0"),
        ("trainer.precision=fp8", "trainer.precision='fp8' is not known"),
        ("logger=tensorboard", "logger='tensorboard' is not known"),
        ("variant=a/b", "variant='a/b'"),
        ("resume=no", "resume='no' must be true or false"),
        ("trainer.log_every=0", "trainer.log_every=0"),
    ],
)
def test_bad_values_give_one_line_errors(override, words):
    with pytest.raises(ConfigError) as err:
        check_config(compose([*BASE, override]))
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_data_path_is_named():
    with pytest.raises(ConfigError, match="task.data_dir=/no/such/dir does not exist"):
        check_config(compose(["task=rte", "backbone=tiny", "task.data_dir=/no/such/dir"]))


def test_default_config_passes():
    check_config(compose(BASE))


def test_lr_precedence_cli_then_method_task_then_method_then_task():
    assert resolve_lr(compose([*BASE, "trainer.lr=0.5"])) == (0.5, "trainer.lr")
    cfg = compose(["task=rte", "backbone=tiny", "method=lora"])
    lr, source = resolve_lr(cfg)
    assert source == "method.lr_by_task.rte" and lr == pytest.approx(5e-4)  # LoRA paper, RTE
    cfg = compose(["task=rte", "backbone=tiny", "method=dora"])
    assert resolve_lr(cfg) == (pytest.approx(2e-3), "task.lr")


def test_a_merged_export_is_refused_under_fsdp():
    """Merging needs the whole backbone in one process; FSDP splits it (the adapter export still works)."""
    dora = ["task=demo", "backbone=tiny", "method=dora", "trainer.fsdp=true"]
    with pytest.raises(ConfigError, match="method.export_merged=true needs the whole backbone"):
        check_config(compose([*dora, "method.export_merged=true"]))
    check_config(compose(dora))


def test_a_control_arm_needs_its_own_records():
    dora = ["task=demo", "backbone=tiny", "method=dora"]
    with pytest.raises(ConfigError, match=r"add \+experiment/ablation=random"):
        check_config(compose([*dora, "method.allocation=random"]))
    for arm in ("random", "inverse", "no_pruning"):
        cfg = compose([*dora, f"+experiment/ablation={arm}"])
        check_config(cfg)
        assert cfg.variant == arm
    flat = compose([*dora, "budget=8", "+experiment/ablation=no_pruning"])
    assert (flat.method.init_budget, flat.method.default_scale) == (8, True)
