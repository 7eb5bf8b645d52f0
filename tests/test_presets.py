"""Every preset value against the method spec's tables (sections 5 and 8), typed in by hand."""

from __future__ import annotations

import json

import pytest

from keras_gdkd import presets

# Spec section 5, CIFAR-100 table, copied row by row:
# preset | teacher | student | lr | w1 | w2 | DKD beta
CIFAR_TABLE = """
res56_res20     | resnet56       | resnet20     | 0.05 | 1 | 1 | 2
res110_res32    | resnet110      | resnet32     | 0.05 | 1 | 1 | 2
res32x4_res8x4  | resnet32x4     | resnet8x4    | 0.05 | 2 | 8 | 8
wrn40_2_wrn16_2 | wrn_40_2       | wrn_16_2     | 0.05 | 2 | 6 | 6
wrn40_2_wrn40_1 | wrn_40_2       | wrn_40_1     | 0.05 | 2 | 6 | 6
vgg13_vgg8      | vgg13          | vgg8         | 0.05 | 1 | 6 | 6
res32x4_shuv1   | resnet32x4     | shufflenetv1 | 0.01 | 1 | 8 | 8
res32x4_shuv2   | resnet32x4     | shufflenetv2 | 0.01 | 1 | 8 | 8
wrn40_2_shuv1   | wrn_40_2       | shufflenetv1 | 0.01 | 2 | 6 | 8
vgg13_mv2       | vgg13          | mobilenetv2  | 0.01 | 1 | 6 | 6
res50_mv2       | resnet50_cifar | mobilenetv2  | 0.01 | 1 | 8 | 8
"""

# Spec section 8: KD / DKD top-1 per CIFAR pair, and teacher top-1 per teacher.
CIFAR_KD_DKD = {
    "res56_res20": (70.66, 71.97),
    "res110_res32": (73.08, 74.11),
    "res32x4_res8x4": (73.33, 76.32),
    "wrn40_2_wrn16_2": (74.92, 76.24),
    "wrn40_2_wrn40_1": (73.54, 74.81),
    "vgg13_vgg8": (72.98, 74.68),
    "res32x4_shuv1": (74.07, 76.45),
    "res32x4_shuv2": (74.45, 77.07),
    "wrn40_2_shuv1": (74.83, 76.70),
    "vgg13_mv2": (67.37, 69.71),
    "res50_mv2": (67.35, 70.35),
}
CIFAR_TEACHER_TOP1 = {
    "resnet56": 72.34,
    "resnet110": 74.31,
    "resnet32x4": 79.42,
    "wrn_40_2": 75.61,
    "vgg13": 74.64,
    "resnet50_cifar": 79.34,
}

# Spec section 5 / 8, ImageNet.
IMAGENET = {
    "res34_res18": dict(
        teacher="resnet34", student="resnet18", w=1.0, beta=0.5, ref=(73.31, 69.76, 71.03, 71.70)
    ),
    "res50_mv1": dict(
        teacher="resnet50", student="mobilenetv1", w=2.0, beta=2.0, ref=(76.16, 70.13, 70.50, 72.05)
    ),
}

CIFAR_OPTIM = dict(
    dataset="cifar100",
    num_classes=100,
    lr_decay_epochs=(150, 180, 210),
    lr_decay_factor=0.1,
    epochs=240,
    batch_size=64,
    weight_decay=5e-4,
    momentum=0.9,
)
IMAGENET_OPTIM = dict(
    dataset="imagenet",
    num_classes=1000,
    learning_rate=0.2,
    lr_decay_epochs=(30, 60, 90),
    lr_decay_factor=0.1,
    epochs=100,
    batch_size=512,
    weight_decay=1e-4,
    momentum=0.9,
)

METHODS = ("gdkd", "gdkd3", "dkd", "kd")


def _cifar_rows():
    for line in CIFAR_TABLE.strip().splitlines():
        name, teacher, student, lr, w1, w2, beta = (c.strip() for c in line.split("|"))
        yield name, teacher, student, float(lr), float(w1), float(w2), float(beta)


def _expected():
    """(name, method) -> dict of every expected field."""
    out = {}
    for name, teacher, student, lr, w1, w2, beta in _cifar_rows():
        kd_top1, dkd_top1 = CIFAR_KD_DKD[name]
        base = dict(
            CIFAR_OPTIM,
            name=name,
            teacher=teacher,
            student=student,
            learning_rate=lr,
            ref=(CIFAR_TEACHER_TOP1[teacher], None, kd_top1, dkd_top1),
        )
        gd = dict(ce_weight=1.0, distill_weight=1.0, warmup_epochs=20)
        out[name, "gdkd"] = dict(base, **gd, loss=dict(k=5, w0=1.0, w1=w1, w2=w2, temperature=4.0))
        out[name, "gdkd3"] = dict(base, **gd, loss=dict(k=4, w0=1.0, w1=w1, w2=w2, temperature=4.0))
        out[name, "dkd"] = dict(base, **gd, loss=dict(alpha=1.0, beta=beta, temperature=4.0))
        out[name, "kd"] = dict(
            base, ce_weight=0.1, distill_weight=0.9, warmup_epochs=0, loss=dict(temperature=4.0)
        )
    for name, row in IMAGENET.items():
        base = dict(
            IMAGENET_OPTIM,
            name=name,
            teacher=row["teacher"],
            student=row["student"],
            ref=row["ref"],
        )
        gd = dict(ce_weight=1.0, distill_weight=1.0, warmup_epochs=1)
        w = row["w"]
        out[name, "gdkd"] = dict(base, **gd, loss=dict(k=5, w0=0.5, w1=w, w2=w, temperature=1.0))
        # GDKD3 on ImageNet is not in the spec: GDKD's values with k = 4 (documented extrapolation).
        out[name, "gdkd3"] = dict(base, **gd, loss=dict(k=4, w0=0.5, w1=w, w2=w, temperature=1.0))
        out[name, "dkd"] = dict(base, **gd, loss=dict(alpha=1.0, beta=row["beta"], temperature=1.0))
        out[name, "kd"] = dict(
            base, ce_weight=0.5, distill_weight=0.5, warmup_epochs=0, loss=dict(temperature=1.0)
        )
    return out


EXPECTED = _expected()


def test_available_lists_all_pairs_in_order():
    names = [row[0] for row in _cifar_rows()] + list(IMAGENET)
    assert presets.available() == names
    assert presets.available("cifar100") == names[:11]
    assert presets.available("imagenet") == ["res34_res18", "res50_mv1"]
    assert len(EXPECTED) == 13 * 4


FIELDS = (
    "dataset",
    "num_classes",
    "teacher",
    "student",
    "learning_rate",
    "ce_weight",
    "distill_weight",
    "warmup_epochs",
    "lr_decay_epochs",
    "lr_decay_factor",
    "epochs",
    "batch_size",
    "weight_decay",
    "momentum",
)


def test_every_value():
    # One test over all 52 presets (not parametrized): the per-test Keras teardown in conftest
    # costs more than the checks. Mismatches are collected so a failure lists all of them.
    wrong = []
    for (name, method), exp in EXPECTED.items():
        p = presets.get(name, method)
        assert isinstance(p, presets.Preset)
        got = {field: getattr(p, field) for field in FIELDS}
        got.update(name=p.name, method=p.method, loss=p.loss_kwargs())
        ref = p.reference
        got["ref"] = (ref.teacher_top1, ref.student_top1, ref.kd_top1, ref.dkd_top1)
        want = {field: exp[field] for field in FIELDS}
        # Exact key set for loss: these are the functional losses' keyword arguments.
        want.update(name=name, method=method, loss=exp["loss"], ref=exp["ref"])
        for key in want:
            if got[key] != want[key]:
                wrong.append(f"{name}/{method}.{key}: got {got[key]!r}, want {want[key]!r}")
    assert not wrong, "\n".join(wrong)


def test_loss_kwargs_names_match_loss_signatures():
    assert set(presets.get("vgg13_vgg8", "gdkd").loss_kwargs()) == {
        "k",
        "w0",
        "w1",
        "w2",
        "temperature",
    }
    assert set(presets.get("vgg13_vgg8", "gdkd3").loss_kwargs()) == {
        "k",
        "w0",
        "w1",
        "w2",
        "temperature",
    }
    assert set(presets.get("vgg13_vgg8", "dkd").loss_kwargs()) == {"alpha", "beta", "temperature"}
    assert set(presets.get("vgg13_vgg8", "kd").loss_kwargs()) == {"temperature"}
    kwargs = presets.get("vgg13_vgg8").loss_kwargs()
    kwargs["k"] = 99  # a fresh dict each call
    assert presets.get("vgg13_vgg8").loss.k == 5


def test_default_method_is_gdkd_and_lookup_is_case_insensitive():
    assert presets.get("res56_res20") is presets.get("res56_res20", "gdkd")
    assert presets.get(" RES56_res20 ", "DKD") is presets.get("res56_res20", "dkd")


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="res32x4_res8x4") as info:
        presets.get("resnet1000_resnet1")
    assert "res50_mv1" in str(info.value)


def test_unknown_method_lists_methods():
    with pytest.raises(ValueError, match="gdkd3") as info:
        presets.get("res56_res20", "crd")
    assert "kd" in str(info.value)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="cifar100"):
        presets.available("mnist")


def test_presets_are_frozen():
    p = presets.get("res56_res20")
    with pytest.raises(AttributeError):
        p.learning_rate = 1.0
    with pytest.raises(TypeError):
        p.loss_config["w2"] = 3.0
    q = p.replace(learning_rate=0.1)
    assert q.learning_rate == 0.1 and p.learning_rate == 0.05
    hash(p)  # usable as a dict key


def test_str_is_a_readable_table():
    text = str(presets.get("res32x4_res8x4", "gdkd"))
    lines = text.splitlines()
    assert len(lines) > 10
    assert "res32x4_res8x4" in lines[0]
    for needle in ("resnet32x4", "resnet8x4", "w2=8.0", "k=5", "temperature=4.0", "150, 180, 210"):
        assert needle in text
    assert "extrapolat" not in text.lower()
    assert "notes" in str(presets.get("res34_res18", "gdkd3"))


@pytest.mark.parametrize(
    "key", [("res32x4_res8x4", "gdkd"), ("res50_mv1", "kd"), ("res34_res18", "dkd")]
)
def test_to_dict_json_round_trip(key):
    p = presets.get(*key)
    d = p.to_dict()
    text = json.dumps(d)
    back = json.loads(text)
    assert back["loss"] == p.loss_kwargs()
    assert back["lr_decay_epochs"] == list(p.lr_decay_epochs)
    assert back["reference"]["dkd_top1"] == p.reference.dkd_top1
    assert presets.Preset.from_dict(back) == p


def test_every_pair_has_every_method_and_its_loss_object():
    for name in presets.available():
        gdkd = presets.get(name, "gdkd")
        for method in presets.METHODS:
            p = presets.get(name, method)
            assert p.method == method and p.loss.name == method
            assert p.loss.get_config() == {**p.loss.get_config(), **p.loss_config}
            p.loss.check_num_classes(p.num_classes)
        w1, w2 = gdkd.loss_config["w1"], gdkd.loss_config["w2"]
        assert presets.get(name, "gdkd_v1").loss_config["m1"] == w1
        assert presets.get(name, "gdkd_v2").loss_config["m2"] == w2
        assert presets.get(name, "gdkd_v3").loss_config["w2"] == w2
        assert "not in the authors' configs" in presets.get(name, "gdkd_v1").notes


def test_dist_presets_follow_the_reference_settings_and_name_the_imagenet_quirk():
    for name in presets.available("cifar100"):
        p = presets.get(name, "dist")
        assert dict(p.loss_config) == {"beta": 2.0, "gamma": 2.0, "temperature": 4.0}
        assert (p.ce_weight, p.distill_weight) == (1.0, 1.0)
    for name in presets.available("imagenet"):
        p = presets.get(name, "dist")
        assert p.loss_config["temperature"] == 4.0 and "GDKD.T: 1.0" in p.notes


def test_a_loss_override_is_validated_by_the_preset():
    p = presets.get("res56_res20", "gdkd")
    q = p.replace(loss_config={**p.loss_config, "temperature": 1.0})
    assert q.loss_config["temperature"] == 1.0 and p.loss_config["temperature"] == 4.0
    with pytest.raises(ValueError, match="gdkd has no hyper-parameter alpha"):
        p.replace(loss_config={**p.loss_config, "alpha": 1.0})
    with pytest.raises(ValueError, match=r"lie in \[1, 99\]"):
        p.replace(loss_config={**p.loss_config, "k": 100})
    assert p.replace(loss=p.loss.replace(w2=3.0)).loss_config["w2"] == 3.0
