"""Class balancing and fine-tuning torchvision backbones, trained for real on tiny data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from automl.data import Split
from automl.pipeline import run_search
from automl.search.settings import SearchSettings
from automl.training.augment import Augment
from automl.training.backbones import BackboneNet, describe_weights, weights_file
from automl.training.config import AugConfig, OptimConfig, TrainConfig
from automl.training.loop import Normalizer, Setup, _Loop, fit, make_optimizer
from tests.conftest import mlflow_client

CPU = torch.device("cpu")


def imbalanced(n_major=90, n_minor=10) -> Split:
    labels = torch.tensor([0] * n_major + [1] * n_minor)
    return Split(torch.randint(0, 256, (len(labels), 1, 8, 8), dtype=torch.uint8), labels)


def test_balanced_sampling_draws_classes_equally():
    split = imbalanced()
    loop = _Loop(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2)),
        split,
        optim=OptimConfig(),
        schedule=TrainConfig(balance="balanced_sampling"),
        device=CPU,
        seed=0,
    )
    drawn = torch.cat([split.labels[loop.order()] for _ in range(50)])
    share = float((drawn == 1).float().mean())
    assert 0.45 < share < 0.55  # 10 % of the data, half of what is drawn


def test_weighted_loss_uses_inverse_class_frequency():
    loop = _Loop(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2)),
        imbalanced(),
        optim=OptimConfig(),
        schedule=TrainConfig(balance="weighted_loss"),
        device=CPU,
        seed=0,
    )
    torch.testing.assert_close(loop.class_weight, torch.tensor([100 / 180, 100 / 20]))
    plain = _Loop(
        torch.nn.Linear(1, 1), imbalanced(), optim=OptimConfig(), schedule=TrainConfig(),
        device=CPU, seed=0,
    )  # fmt: skip
    assert plain.class_weight is None and plain.sample_weight is None


def test_backbone_head_and_learning_rates():
    net = BackboneNet("resnet18", in_channels=1, num_classes=7)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    optimizer = make_optimizer(net, OptimConfig(lr=0.1, backbone_lr=0.01))
    rates = sorted({round(g["lr"], 6) for g in optimizer.param_groups})
    assert rates == [0.001, 0.1]
    head = {id(p) for p in net.head_parameters()}
    assert head == {id(p) for p in net.net.fc.parameters()}


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0"])
def test_other_backbones_build_and_export(name):
    net = BackboneNet(name, in_channels=3, num_classes=4).eval()
    x = torch.randn(2, 3, 32, 32)
    assert net(x).shape == (2, 4)
    program = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("b", min=1)},))
    torch.testing.assert_close(program.module()(x), net(x))


def test_frozen_backbone_learns_only_its_head(digits):
    small = Split(digits.train.images[:64], digits.train.labels[:64])
    torch.manual_seed(0)
    net = BackboneNet("resnet18", in_channels=1, num_classes=10)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    setup = Setup(
        optim=OptimConfig(name="sgd", lr=0.05),
        schedule=TrainConfig(batch_size=32, epochs=1, freeze_epochs=1),
        augment=Augment(AugConfig()), norm=Normalizer(digits.mean, digits.std), device=CPU, seed=0,
    )  # fmt: skip
    fit(net, small, Split(digits.val.images[:32], digits.val.labels[:32]), setup)
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"net.fc.weight", "net.fc.bias"}  # BatchNorm statistics untouched too


def test_pretrained_file_in_weights_dir_is_used(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    filename = torchvision.models.get_model_weights("resnet18").DEFAULT.url.rsplit("/", 1)[-1]
    torch.save(reference.state_dict(), tmp_path / filename)
    assert weights_file("resnet18", tmp_path) == tmp_path / filename
    assert describe_weights("resnet18", tmp_path).startswith("imagenet (")
    net = BackboneNet("resnet18", 3, 5, weights_dir=tmp_path)
    torch.testing.assert_close(net.net.conv1.weight, reference.conv1.weight)
    assert describe_weights("resnet18", tmp_path / "empty").startswith("random (no pretrained file")


@pytest.mark.slow
def test_real_fine_tuning_trial_with_random_resnet18(tmp_path):
    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for label, base in (("dark", 40), ("light", 200)):
        (root / label).mkdir(parents=True)
        for i in range(12):
            array = np.clip(rng.normal(base, 20, size=(24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(array).save(root / label / f"{i}.png")
    space = tmp_path / "ft.yaml"
    space.write_text(
        "architecture: {backbone: resnet18}\n"
        "optimizer: {name: adamw, lr: 0.003, backbone_lr: 0.1}\n"
        "training: {epochs: 2, batch_size: 8, freeze_epochs: 1}\n"
    )
    settings = SearchSettings(
        trials=1, space=space, dataset=f"imagefolder:{root}", data_dir=tmp_path / "data",
        storage=f"sqlite:///{tmp_path / 'automl.db'}",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        max_epochs=2, device="cpu", weights_dir=tmp_path / "no-weights",
    )  # fmt: skip
    notes = []
    from automl.search.hooks import Hooks

    outcome = run_search(settings, hooks=Hooks(on_note=notes.append))
    (trial,) = outcome.study.trials
    assert trial.state.name == "COMPLETE" and len(trial.intermediate_values) == 2
    assert trial.user_attrs["weights"].startswith("random (no pretrained file in")
    assert any(n.startswith("resnet18 starts from random weights") for n in notes)
    client = mlflow_client(settings.tracking_uri)
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.data.tags["weights"].startswith("random")
    version = client.get_model_version_by_alias(outcome.settings.registered_model, "candidate")
    assert version.tags["weights"].startswith("random")
    assert outcome.registration.reloaded_test_acc == pytest.approx(outcome.registration.test_acc)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.inputs.dataset_inputs[0].dataset.name == "imagefolder:folder"
    report = Path(
        client.download_artifacts(outcome.parent_run_id, "data_report.json", str(tmp_path))
    )
    assert '"kept": 24' in report.read_text()
