"""The package declares what it uses: the attributes read from a method, one schedules module, no import cycles."""
from __future__ import annotations

import ast
import math
from pathlib import Path

from sslbook.data.base import DataInfo
from sslbook.methods import Method, get_method, list_methods
from sslbook.models import build_backbone
from sslbook.optim import build_optimizer, param_groups

PKG = Path(__file__).resolve().parents[1] / "sslbook"
READERS = ["trainer.py", "optim.py", "distributed.py"]  # the code that reads attributes from a method
FIVE = {"needs_indices", "adamw_betas", "lr_scale", "fixed_lr", "keep_local_bn"}


def _read_attributes(path: Path) -> tuple[set[str], set[str]]:
    """(names read with getattr(x, "name", ...), names read as method.name / s.method.name / model.name)."""
    tree = ast.parse(path.read_text())
    by_getattr, plain = set(), set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            by_getattr.add(node.args[1].value)
        if isinstance(node, ast.Attribute):
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else owner.id if isinstance(owner, ast.Name) else None
            if name in ("method", "model") and isinstance(node.ctx, ast.Load):
                plain.add(node.attr)
    return by_getattr, plain


def test_every_attribute_the_trainer_optimiser_and_distributed_code_read_from_a_method_is_declared_on_method():
    by_getattr, plain = set(), set()
    for f in READERS:
        g, p = _read_attributes(PKG / f)
        by_getattr |= g
        plain |= p
    by_getattr -= {"subset"}  # hasattr(dataset, "subset"): a data set's, not a method's
    assert FIVE <= by_getattr | plain, "the scan must see the five attributes (or the reading code changed)"
    declared = set(Method.__annotations__) | {"backbone", "info", "image_size"}  # the last three: set in __init__
    missing = {n for n in by_getattr if n not in declared}
    assert not missing, f"read with getattr but not declared on Method: {sorted(missing)}"
    # plain reads: declared on Method, or nn.Module's / Method's own methods
    missing = {n for n in plain if n not in declared and not hasattr(Method, n)}
    assert not missing, f"read from a method but not declared on Method: {sorted(missing)}"
    for n in FIVE:  # each with a default on the class itself
        assert n in vars(Method) and n in Method.__annotations__


INFO = DataInfo("toy", [str(i) for i in range(4)], 32)


def _make(name, **kw):
    backbone = "vit_tiny" if name == "mae" else "convnet_small"
    return get_method(name)(build_backbone(backbone, INFO), INFO, 32, **kw)


def test_methods_that_set_the_attributes_are_picked_up():
    mae, sup = _make("mae"), _make("supervised")
    assert build_optimizer("adamw", mae, 1e-3, 0.05).defaults["betas"] == (0.9, 0.95)
    assert build_optimizer("adamw", sup, 1e-3, 0.05).defaults["betas"] == Method.adamw_betas == (0.9, 0.999)
    assert build_optimizer("adamw", mae, 1e-3, 0.05, betas=(0.5, 0.6)).defaults["betas"] == (0.5, 0.6)
    assert {n for n in list_methods() if get_method(n).needs_indices} == {"instdisc", "pirl"}
    assert _make("moco_v1").encoder_k.keep_local_bn and not _make("moco_v1").keep_local_bn
    groups = param_groups(_make("simsiam", predictor_lr_scale=10.0), 1e-4)
    assert {(g["lr_scale"], g["fixed_lr"]) for g in groups} == {(1.0, False), (10.0, True)}
    assert {(g["lr_scale"], g["fixed_lr"]) for g in param_groups(sup, 1e-4)} == {(Method.lr_scale, Method.fixed_lr)}


# ---------------------------------------------------------------- one home for the schedules

def _old_cosine_momentum(step, total_steps, base):  # sslbook.methods.momentum's before the move
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / max(total_steps, 1)) + 1) / 2


def _old_teacher_temperature(step, warmup_steps, start, end):  # sslbook.methods.dino's before the move
    if warmup_steps <= 0 or step >= warmup_steps:
        return float(end)
    return float(start + (end - start) * step / warmup_steps)


def test_the_schedules_moved_to_sslbook_schedules_with_the_very_same_values():
    from sslbook import schedules
    from sslbook.methods import dino, momentum

    assert momentum.cosine_momentum is schedules.cosine_momentum  # the old import paths still work
    assert dino.teacher_temperature is schedules.teacher_temperature
    assert not hasattr(schedules, "linear_schedule")  # the unused one is gone
    for total in (1, 7, 100, 1953, 100_000):
        for base in (0.0, 0.9, 0.99, 0.996, 0.9999, 1.0):
            steps = sorted({0, 1, total // 3, total // 2, total - 1, total} | set(range(0, total + 1, max(1, total // 50))))
            for s in steps:
                assert schedules.cosine_momentum(s, total, base) == _old_cosine_momentum(s, total, base)  # bit-equal
                assert schedules.teacher_temperature(s, total // 3, 0.04, base) == _old_teacher_temperature(s, total // 3, 0.04, base)
    # the evaluation protocols' decays: lr * 0.5 * (1 + cos(π s / T)) and 0.5 * (1 + cos(π min(s, T) / T)), bit-equal
    for total in (1, 10, 391, 5000):
        for s in range(0, total + 1, max(1, total // 40)):
            for lr in (0.1, 0.03, 1.0, 3e-4):
                assert schedules.cosine_at(s, total, lr, 0.0) == lr * 0.5 * (1 + math.cos(math.pi * s / total))
            assert schedules.cosine_at(min(s, total), total, 1.0, 0.0) == 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
