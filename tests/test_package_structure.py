"""The package declares what it uses: the attributes read from a method, one schedules module, no import cycles."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

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
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
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
            steps = sorted(
                {0, 1, total // 3, total // 2, total - 1, total} | set(range(0, total + 1, max(1, total // 50)))
            )
            for s in steps:
                assert schedules.cosine_momentum(s, total, base) == _old_cosine_momentum(s, total, base)  # bit-equal
                assert schedules.teacher_temperature(s, total // 3, 0.04, base) == _old_teacher_temperature(
                    s, total // 3, 0.04, base
                )
    # the evaluation protocols' decays: lr * 0.5 * (1 + cos(π s / T)) and 0.5 * (1 + cos(π min(s, T) / T)), bit-equal
    for total in (1, 10, 391, 5000):
        for s in range(0, total + 1, max(1, total // 40)):
            for lr in (0.1, 0.03, 1.0, 3e-4):
                assert schedules.cosine_at(s, total, lr, 0.0) == lr * 0.5 * (1 + math.cos(math.pi * s / total))
            assert schedules.cosine_at(min(s, total), total, 1.0, 0.0) == 0.5 * (
                1 + math.cos(math.pi * min(s, total) / total)
            )


# ---------------------------------------------------------------- helpers written once


@pytest.mark.parametrize("name", ["simclr", "byol", "simsiam", "barlow_twins", "moco_v1", "moco_v3", "dino"])
def test_every_two_view_method_checks_its_pair_with_check_pair(name):
    m = _make(name)
    a, b = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 24, 24)
    what = "global crops" if name == "dino" else "views"
    with pytest.raises(ValueError, match=f"^{name} needs two {what} of the same shape"):
        m([a, b], torch.zeros(4, dtype=torch.long))
    if name != "dino":  # dino takes 2 + n_local crops
        with pytest.raises(ValueError, match=f"^{name} needs two views \\(a list"):
            m([a], torch.zeros(4, dtype=torch.long))


def test_simclr_views_are_those_of_its_former_own_view_maker():
    from sslbook.augment import color_jitter, gaussian_blur, random_grayscale, random_resized_crop

    kw = dict(
        crop_scale=(0.2, 0.9),
        crop_ratio=(0.5, 2.0),
        flip_p=0.3,
        jitter_strength=0.7,
        jitter_p=0.6,
        gray_p=0.4,
        blur_p=0.5,
    )
    m = _make("simclr", **kw)

    def old_augment(x):  # SimCLR.augment before it became a ViewRecipe
        s = kw["jitter_strength"]
        x = random_resized_crop(x, 32, kw["crop_scale"], kw["crop_ratio"], flip_p=kw["flip_p"])
        x = color_jitter(x, 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=kw["jitter_p"])
        x = random_grayscale(x, kw["gray_p"])
        return gaussian_blur(x, p=kw["blur_p"])

    x = torch.rand(8, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    new = m.make_views(x, None)
    torch.manual_seed(3)
    old = [old_augment(x), old_augment(x)]
    assert all(torch.equal(a, b) for a, b in zip(new, old))
    assert not torch.equal(new[0], new[1])


def test_the_robustness_blur_is_the_augmentation_blur_and_matches_the_former_one():
    import torch.nn.functional as F

    from sslbook.augment import blur, gaussian_blur
    from sslbook.evaluation import corrupt

    def old_blur(x, sigma):  # evaluation._gaussian_blur before it used sslbook.augment.blur
        c, h, w = x.shape[1:]
        radius = max(1, min(math.ceil(3 * sigma), h - 1, w - 1))
        t = torch.arange(-radius, radius + 1, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (t / sigma) ** 2)
        kernel = kernel / kernel.sum()
        x = F.pad(x, (radius,) * 4, mode="reflect")
        x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for severity, sigma in zip(range(1, 6), (0.4, 0.6, 0.7, 0.8, 1.0)):
        # the same blur up to float32 rounding (the kernel is written t²/2σ² instead of (t/σ)²/2)
        torch.testing.assert_close(
            corrupt(x, "gaussian_blur", severity), old_blur(x, sigma).clamp(0, 1), rtol=0, atol=1e-6
        )
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    sigma = torch.rand(3, generator=g2) * 1.9 + 0.1  # what gaussian_blur draws first
    blurred = blur(x, sigma, radius=1)
    coin = torch.rand(3, generator=g2) < 0.5
    assert torch.equal(gaussian_blur(x, p=0.5, generator=g1), torch.where(coin.view(-1, 1, 1, 1), blurred, x))


# ---------------------------------------------------------------- sslbook.evaluation, split by concern


def test_every_evaluation_name_the_book_tests_and_package_use_is_importable_from_sslbook_evaluation():
    import json
    import re

    import sslbook.evaluation as ev

    root = PKG.parent
    texts = [p.read_text() for d in ("sslbook", "tests", "benchmarks") for p in (root / d).rglob("*.py")]
    for nb in (root / "chapters").glob("*.ipynb"):
        texts += ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    used = set()
    for t in texts:
        used |= set(re.findall(r"\bev\.([A-Za-z]\w*)", t)) if "evaluation as ev" in t else set()
        used |= set(re.findall(r"\bevaluation\.([A-Za-z]\w*)", t)) if "import evaluation" in t else set()
        for names in re.findall(r"from sslbook\.evaluation import (?:\(([\w,\s]+)\)|([\w, ]+))", t):
            names = names[0] or names[1]
            used |= {n.strip() for n in names.split(",") if n.strip()}
    used -= {"stdout", "stderr", "returncode"}  # a subprocess result also called ev in a test
    assert {"extract_features", "knn_accuracy", "finetune", "corrupt", "measure_throughput", "pareto_front"} <= used
    assert not [n for n in sorted(used) if not hasattr(ev, n)]
    assert all(hasattr(ev, n) for n in ev.__all__)
    assert (
        ev.finetune.__module__ == "sslbook.evaluation.finetune"
        and ev.corrupt.__module__ == "sslbook.evaluation.robustness"
    )
    assert (
        ev.measure_throughput.__module__ == "sslbook.cost"
        and ev.rank_correlation.__module__ == "sslbook.evaluation.stats"
    )


# ---------------------------------------------------------------- no import cycles


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports() -> dict[str, set[str]]:
    """sslbook module → the sslbook modules it imports when it is imported (top-level statements, not the
    imports inside functions or under ``if TYPE_CHECKING``)."""
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:  # `from sslbook import distributed`: the submodule itself
                    deps.add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_no_module_of_the_package_is_part_of_an_import_cycle():
    graph = _module_level_imports()
    assert "sslbook.models.vit" in graph["sslbook.models.backbones"]  # the scan sees module-level imports

    def reaches(start, goal, seen):
        for d in graph[start]:
            if d == goal or (d not in seen and (seen.add(d) or reaches(d, goal, seen))):
                return True
        return False

    cycles = sorted(m for m in graph if reaches(m, m, set()))
    assert not cycles, f"modules on an import cycle: {cycles}"
    assert (
        "sslbook" not in graph["sslbook.trainer"]
    )  # the version comes from sslbook._version, not the package's __init__
    assert "sslbook.models.backbones" not in graph["sslbook.models.vit"]


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    """Each sslbook module imported first, with no other sslbook module loaded before it (torch stays loaded)."""
    import subprocess
    import sys

    names = sorted(set(_module_level_imports()) - {"sslbook.__main__"})  # __main__ runs the CLI
    code = (
        "import importlib, sys, torch\n"
        f"for name in {names!r}:\n"
        "    for m in [m for m in sys.modules if m == 'sslbook' or m.startswith('sslbook.')]:\n"
        "        del sys.modules[m]\n"
        "    importlib.import_module(name)\n"
        "print('ok', len(sys.argv))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-2000:]


def test_one_version_read_by_the_package_and_pyproject():
    import re

    import sslbook
    from sslbook import _version, trainer

    assert sslbook.__version__ == trainer.__version__ == _version.__version__
    text = (PKG.parent / "pyproject.toml").read_text()  # (tomllib is Python ≥ 3.11 only)
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    assert not re.search(r"^version\s*=", project, re.M) and re.search(r'^dynamic = \["version"\]', project, re.M)
    assert re.search(
        r'^\[tool\.setuptools\.dynamic\]\nversion = \{ attr = "sslbook\._version\.__version__" \}', text, re.M
    )
