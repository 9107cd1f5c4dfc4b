"""LoRA modules, attaching them by name, training one, and LoRA banks on disk (round trip and malformed files)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_fusion_support import ToyNet, random_bank

from fusion import (
    LoRABank,
    LoRALinear,
    attach_lora,
    build_bank,
    detach_lora,
    extract_lora,
    find_linear_layers,
    lora_layers,
    train_lora,
)
from fusion.bank import MANIFEST_FILE, TENSORS_FILE


def test_target_matching_by_last_name_component() -> None:
    model = ToyNet(n_blocks=2)
    assert find_linear_layers(model, ["q", "v"]) == ["blocks.0.q", "blocks.0.v", "blocks.1.q", "blocks.1.v"]
    assert find_linear_layers(model, "all") == ["embed", "blocks.0.q", "blocks.0.v", "blocks.1.q", "blocks.1.v"]
    assert "head" in find_linear_layers(model, ["all"], exclude=())
    with pytest.raises(ValueError, match="match no linear layer"):
        find_linear_layers(model, ["k"])
    with pytest.raises(ValueError, match="cannot be combined"):
        find_linear_layers(model, ["all", "q"])


def test_lora_starts_as_its_base_and_follows_the_formula() -> None:
    model = ToyNet()
    x = torch.randn(5, 12)
    before = model(x)
    layers = attach_lora(model, ["q", "v"], rank=2, alpha=8, seed=3)
    assert set(layers) == {"blocks.0.q", "blocks.0.v", "blocks.1.q", "blocks.1.v"}
    torch.testing.assert_close(model(x), before)  # B = 0 at init (peft)
    layer = layers["blocks.0.q"]
    assert layer.scale == 4.0
    assert not layer.base.weight.requires_grad
    bound = 1 / math.sqrt(layer.in_features)  # kaiming_uniform_(a=sqrt(5)) bound = 1 / sqrt(fan_in)
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.std() > bound / 4
    with torch.no_grad():
        layer.lora_B.normal_()
    h = torch.randn(3, 16)
    expected = layer.base(h) + 4.0 * h @ layer.lora_A.T @ layer.lora_B.T
    torch.testing.assert_close(layer(h), expected)
    again = attach_lora(ToyNet(), ["q", "v"], rank=2, alpha=8, seed=3)
    torch.testing.assert_close(again["blocks.1.v"].lora_A, layers["blocks.1.v"].lora_A)
    with pytest.raises(ValueError, match="already wrapped"):
        attach_lora(model, ["q"], rank=2, alpha=8)
    detach_lora(model)
    assert not lora_layers(model)


def test_train_lora_lowers_the_loss_and_leaves_the_base_alone() -> None:
    model = ToyNet()
    base_weights = {k: v.clone() for k, v in model.state_dict().items()}
    attach_lora(model, ["q", "v"], rank=2, alpha=4, seed=0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 12, generator=generator)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    losses = train_lora(model, x, y, epochs=15, batch_size=16, lr=1e-2, seed=0, progress=False)
    assert len(losses) == 15 * 4
    assert sum(losses[-4:]) < 0.8 * sum(losses[:4])
    detach_lora(model)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, base_weights[key])


def test_build_bank_trains_one_lora_per_task_without_touching_the_model() -> None:
    model = ToyNet()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20, 12, generator=generator)
    tasks = {"even": (x, (x[:, 0] > 0).long()), "odd": (x, (x[:, 1] > 0).long())}
    bank = build_bank(model, tasks, rank=2, alpha=4, epochs=2, batch_size=10, lr=1e-2, progress=False)
    assert bank.source_tasks == ["even", "odd"] and bank.rank == 2
    assert bank.layer_names == ["blocks.0.q", "blocks.0.v", "blocks.1.q", "blocks.1.v"]
    a_even, a_odd = bank.entries["even"]["blocks.0.q"][0], bank.entries["odd"]["blocks.0.q"][0]
    assert not torch.equal(a_even, a_odd)  # per-task seeds
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not lora_layers(model)


def test_save_load_round_trip(tmp_path) -> None:
    bank = random_bank(ToyNet(), n_entries=3, rank=2, alpha=5.0)
    bank.save(tmp_path / "bank")
    manifest = json.loads((tmp_path / "bank" / MANIFEST_FILE).read_text())
    assert manifest["source_tasks"] == ["src0", "src1", "src2"]
    assert manifest["rank"] == 2 and manifest["alpha"] == 5.0 and manifest["format_version"] == 1
    assert manifest["layers"]["blocks.0.q"] == {"d_in": 16, "d_out": 16}
    assert "src1/blocks.1.v/B" in load_file(tmp_path / "bank" / TENSORS_FILE)
    loaded = LoRABank.load(tmp_path / "bank")
    assert loaded.source_tasks == bank.source_tasks and loaded.target_modules == ("q", "v")
    assert loaded.layer_names == bank.layer_names
    for task in bank.source_tasks:
        for layer in bank.layer_names:
            for i in range(2):
                assert torch.equal(loaded.entries[task][layer][i], bank.entries[task][layer][i])
    a, b = loaded.stacked("blocks.1.q")
    assert a.shape == (6, 16) and b.shape == (16, 6)
    torch.testing.assert_close(a[2:4], bank.entries["src1"]["blocks.1.q"][0])
    assert loaded.select(["src2", "src0"]).source_tasks == ["src2", "src0"]


def _saved(tmp_path):
    directory = tmp_path / "bank"
    random_bank(ToyNet(), n_entries=2).save(directory)
    return directory, json.loads((directory / MANIFEST_FILE).read_text())


def _write_manifest(directory, manifest) -> None:
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("rank"), "rank: missing"),
        (lambda m: m.update(rank=0), "rank: expected a positive integer"),
        (lambda m: m.update(alpha=-1), "alpha: expected a number > 0"),
        (lambda m: m.update(format_version=99), "format_version: version 99 is not supported"),
        (lambda m: m.update(format="other"), "format: expected"),
        (lambda m: m.update(source_tasks=["src0", "src0"]), "source_tasks: names repeat"),
        (lambda m: m.update(source_tasks=["src0", "src1", "src9"]), "missing, e.g. 'src9/"),
        (lambda m: m.update(source_tasks=["src0"]), "not in the manifest, e.g. 'src1/"),
        (lambda m: m["layers"].update({"blocks.0.q": {"d_in": 8, "d_out": 16}}), "has shape .* the manifest says"),
        (lambda m: m["layers"].update({"blocks.0.q": {"d_in": "16"}}), r"layers.blocks.0.q: expected"),
        (lambda m: m.update(rank=3), "has shape"),
    ],
)
def test_malformed_manifest_errors_name_the_problem(tmp_path, change, message) -> None:
    directory, manifest = _saved(tmp_path)
    change(manifest)
    _write_manifest(directory, manifest)
    with pytest.raises(ValueError, match=message):
        LoRABank.load(directory)


def test_malformed_files_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="no manifest.json"):
        LoRABank.load(tmp_path)
    directory, _ = _saved(tmp_path)
    (directory / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        LoRABank.load(directory)
    directory, manifest = _saved(tmp_path / "second")
    (directory / TENSORS_FILE).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        LoRABank.load(directory)
    directory, _ = _saved(tmp_path / "third")
    tensors = load_file(directory / TENSORS_FILE)
    tensors["src0/blocks.0.q/A"] = torch.full_like(tensors["src0/blocks.0.q/A"], float("nan"))
    save_file(tensors, directory / TENSORS_FILE)
    with pytest.raises(ValueError, match="must be finite"):
        LoRABank.load(directory)
    (directory / TENSORS_FILE).unlink()
    with pytest.raises(ValueError, match="bank.safetensors is missing"):
        LoRABank.load(directory)


def test_bank_rejects_inconsistent_entries() -> None:
    bank = LoRABank(2, 4.0, ["q"])
    bank.add("a", {"l": (torch.zeros(2, 8), torch.zeros(6, 2))})
    with pytest.raises(ValueError, match="already has an entry"):
        bank.add("a", {"l": (torch.zeros(2, 8), torch.zeros(6, 2))})
    with pytest.raises(ValueError, match="different layers"):
        bank.add("b", {"m": (torch.zeros(2, 8), torch.zeros(6, 2))})
    with pytest.raises(ValueError, match="other entries have"):
        bank.add("b", {"l": (torch.zeros(2, 9), torch.zeros(6, 2))})
    with pytest.raises(ValueError, match=r"A must be \(2, d_in\)"):
        bank.add("b", {"l": (torch.zeros(3, 8), torch.zeros(6, 3))})
    with pytest.raises(ValueError, match="without '/'"):
        bank.add("b/c", {"l": (torch.zeros(2, 8), torch.zeros(6, 2))})
    with pytest.raises(ValueError, match="rank"):
        LoRABank(0, 1.0, ["q"])
    with pytest.raises(ValueError, match="no LoRA layers"):
        extract_lora(ToyNet())
    with pytest.raises(ValueError, match="rank 99 exceeds"):
        LoRALinear(torch.nn.Linear(4, 4), 99, 1.0)
