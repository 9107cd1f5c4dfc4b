"""PEFT LoRA adapters made with peft itself on tiny T5 / GPT-2 / BERT models: imported into a bank, fused on an
ideal-preset analog model (one-hot coefficients == peft's merged model), exported and loaded back with peft
(== the fused model), and every refusal a bank needs, each a one-line ValueError."""

from __future__ import annotations

import copy
import json
import shutil
import warnings

import pytest
import torch
from test_hf_support import KINDS, TARGETS, build, close, make_adapter, outputs, tokens

from crossbar import convert_to_analog, device_preset, program
from fusion import attach_fusion, detach_fusion, program_bank
from fusion.peft_export import export_fused_peft, save_peft_adapter
from fusion.peft_io import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, bank_from_peft, load_peft_adapter

IDEAL = device_preset("ideal")
N_ADAPTERS = 3


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """Per model kind, built once: the base model, three peft adapter directories, each adapter's merged-model
    outputs on a fixed batch, and that batch."""
    cache: dict[str, tuple] = {}

    def get(kind: str):
        if kind not in cache:
            base = build(kind, seed=10)
            root = tmp_path_factory.mktemp(f"peft_{kind}")
            x = tokens(seed=20)
            dirs, merged = {}, {}
            for k in range(N_ADAPTERS):
                name = f"task{k}"
                dirs[name] = root / name
                merged[name] = outputs(kind, make_adapter(base, dirs[name], TARGETS[kind], seed=100 + k), x)
            cache[kind] = (base, dirs, merged, x)
        return cache[kind]

    return get


def _analog(base: torch.nn.Module) -> torch.nn.Module:
    analog = convert_to_analog(base, IDEAL, seed=1)
    program(analog)
    return analog


def _peft_outputs(kind: str, base: torch.nn.Module, directory, x: torch.Tensor) -> torch.Tensor:
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(copy.deepcopy(base), str(directory)).eval()
    return outputs(kind, model, x)


# --- import ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_one_hot_fusion_equals_peft_merged_model(kind, adapters):
    base, dirs, merged, x = adapters(kind)
    analog = _analog(base)
    bank = bank_from_peft(dirs, analog)
    assert bank.source_tasks == list(dirs) and bank.rank == 4 and bank.alpha == 8.0
    programmed = program_bank(analog, bank, IDEAL, seed=2)
    plain = outputs(kind, base, x)
    for k, task in enumerate(dirs):
        # the adapter changes the model noticeably, so equality below is not the base model's
        assert float((merged[task] - plain).norm() / plain.norm()) > 0.05
        for form in ("lorahub", "linear"):
            one_hot = torch.zeros(N_ADAPTERS, len(bank.layer_names))
            one_hot[k] = 1.0
            attach_fusion(analog, programmed, form=form, coefficient_init=one_hot)
            close(outputs(kind, analog, x), merged[task])
            detach_fusion(analog)


def test_load_peft_adapter_reads_factors_onto_the_model_names(adapters):
    base, dirs, _, _ = adapters("t5")
    lora = load_peft_adapter(dirs["task0"], base)
    from safetensors.torch import load_file

    saved = load_file(str(dirs["task0"] / ADAPTER_WEIGHTS_FILE))
    expected_names = [n for n, _ in base.named_modules() if n.endswith(("SelfAttention.q", "SelfAttention.v"))]
    expected_names += [n for n, _ in base.named_modules() if n.endswith(("EncDecAttention.q", "EncDecAttention.v"))]
    assert sorted(lora.layers) == sorted(expected_names) and len(lora.layers) == 12
    assert (lora.rank, lora.alpha, lora.scale, lora.target_modules) == (4, 8.0, 2.0, ["q", "v"])
    name = "decoder.block.1.layer.1.EncDecAttention.v"
    a, b = lora.layers[name]
    assert torch.equal(a, saved[f"base_model.model.{name}.lora_A.weight"])
    assert torch.equal(b, saved[f"base_model.model.{name}.lora_B.weight"])
    assert lora.adapter_names[name] == name and lora.ignored == []


def test_gpt2_conv1d_adapter_factors_keep_peft_orientation(adapters):
    """peft's fan_in_fan_out only transposes the merged delta of a Conv1D; lora_A is (r, in), lora_B (out, r)."""
    base, dirs, _, _ = adapters("gpt2")
    config = json.loads((dirs["task0"] / ADAPTER_CONFIG_FILE).read_text())
    assert config["fan_in_fan_out"] is True
    lora = load_peft_adapter(dirs["task0"], base)
    a, b = lora.layers["transformer.h.0.attn.c_attn"]
    assert tuple(a.shape) == (4, 32) and tuple(b.shape) == (96, 4)
    a, b = lora.layers["transformer.h.1.mlp.c_proj"]
    assert tuple(a.shape) == (4, 128) and tuple(b.shape) == (32, 4)


def test_adapter_names_map_across_a_model_prefix(tmp_path):
    """An adapter saved on BertForSequenceClassification (`bert.encoder...`) imports onto BertModel (`encoder...`)
    and the reverse."""
    classifier, bare = build("bert", seed=3), build("bert_base", seed=3)
    make_adapter(classifier, tmp_path / "cls", ["query", "value"], seed=1)
    make_adapter(bare, tmp_path / "bare", ["query", "value"], seed=2)
    onto_bare = load_peft_adapter(tmp_path / "cls", bare)
    assert "encoder.layer.0.attention.self.query" in onto_bare.layers
    query = "encoder.layer.0.attention.self.query"
    assert onto_bare.adapter_names[query] == f"bert.{query}"
    onto_classifier = load_peft_adapter(tmp_path / "bare", _analog(classifier))
    assert sorted(onto_classifier.layers) == sorted(f"bert.{n}" for n in onto_bare.layers)


def test_rslora_scale_is_folded_into_alpha(tmp_path):
    base = build("t5", seed=4)
    x = tokens(seed=5)
    merged = outputs("t5", make_adapter(base, tmp_path / "rs", ["q", "v"], seed=6, use_rslora=True), x)
    lora = load_peft_adapter(tmp_path / "rs", base)
    assert lora.alpha == pytest.approx(8.0 * 2.0)  # alpha / sqrt(4) == (alpha * 2) / 4
    bank = bank_from_peft({"rs": tmp_path / "rs"}, base)
    attach_fusion(base, program_bank(base, bank, None), coefficient_init=torch.ones(1, len(bank.layer_names)))
    close(outputs("t5", base, x), merged)


def test_bank_from_a_list_of_directories_names_entries_after_them(adapters, tmp_path):
    base, dirs, _, _ = adapters("t5")
    bank = bank_from_peft([dirs["task2"], dirs["task0"]], base)
    assert bank.source_tasks == ["task2", "task0"]
    twin = tmp_path / "other" / "task0"
    shutil.copytree(dirs["task0"], twin)
    with pytest.raises(ValueError, match="share the names"):
        bank_from_peft([dirs["task0"], twin], base)
    with pytest.raises(ValueError, match="not one path"):
        bank_from_peft(str(dirs["task0"]), base)


# --- export ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["lorahub", "linear"])
@pytest.mark.parametrize("kind", KINDS)
def test_exported_fusion_loads_in_peft_and_equals_the_fused_model(kind, form, adapters, tmp_path):
    base, dirs, _, x = adapters(kind)
    analog = _analog(base)
    bank = bank_from_peft(dirs, analog)
    fused = attach_fusion(analog, program_bank(analog, bank, IDEAL), form=form, seed=7)
    generator = torch.Generator().manual_seed(8)
    with torch.no_grad():  # as if trained: magnitudes away from their init, so DoRA matters
        for magnitude in fused.magnitudes():
            magnitude.mul_(1 + 0.2 * torch.randn(magnitude.shape, generator=generator))
    expected = outputs(kind, analog, x)
    export_fused_peft(fused, bank, tmp_path / "fused", fan_in_fan_out=kind == "gpt2")
    config = json.loads((tmp_path / "fused" / ADAPTER_CONFIG_FILE).read_text())
    rank = 4 if form == "lorahub" else 4 * N_ADAPTERS
    assert (config["r"], config["lora_alpha"], config["use_dora"]) == (rank, 2 * rank, True)
    assert sorted(config["target_modules"]) == sorted(bank.layer_names)
    close(_peft_outputs(kind, base, tmp_path / "fused", x), expected)
    assert float((expected - outputs(kind, base, x)).norm()) > 0  # the fusion does something
    # the same from the model holding the fused layers
    export_fused_peft(analog, bank, tmp_path / "from_model", fan_in_fan_out=kind == "gpt2")
    for file in (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE):
        assert (tmp_path / "from_model" / file).read_bytes() == (tmp_path / "fused" / file).read_bytes()


def test_plain_lora_export_without_magnitudes_and_refusal_of_trained_ones(adapters, tmp_path):
    base, dirs, _, x = adapters("t5")
    analog = _analog(base)
    bank = bank_from_peft(dirs, analog)
    programmed = program_bank(analog, bank, IDEAL)
    fused = attach_fusion(analog, programmed, seed=9)  # magnitudes at their init: the layer is W0 + dW
    expected = outputs("t5", analog, x)
    export_fused_peft(fused, bank, tmp_path / "plain", dora=False)
    config = json.loads((tmp_path / "plain" / ADAPTER_CONFIG_FILE).read_text())
    assert config["use_dora"] is False and config["r"] == 4
    close(_peft_outputs("t5", base, tmp_path / "plain", x), expected)
    # the coefficient mapping gives the same adapter
    coefficients = {name: layer.coefficients.detach() for name, layer in fused.layers.items()}
    export_fused_peft(coefficients, programmed, tmp_path / "mapping")
    for file in (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE):
        assert (tmp_path / "mapping" / file).read_bytes() == (tmp_path / "plain" / file).read_bytes()
    with torch.no_grad():
        next(iter(fused.magnitudes())).mul_(1.1)
    with pytest.raises(ValueError, match="magnitude was trained"):
        export_fused_peft(fused, bank, tmp_path / "refused", dora=False)
    with pytest.raises(ValueError, match="needs a DoRA magnitude"):
        export_fused_peft(coefficients, bank, tmp_path / "refused", dora=True)
    with pytest.raises(ValueError, match="form='linear' but"):
        export_fused_peft(fused, bank, tmp_path / "refused", form="linear")
    detach_fusion(analog)
    with pytest.raises(ValueError, match="no FusedLinear layers"):
        export_fused_peft(analog, bank, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_save_peft_adapter_round_trips_an_imported_adapter(adapters, tmp_path):
    base, dirs, merged, x = adapters("gpt2")
    lora = load_peft_adapter(dirs["task1"], base)
    save_peft_adapter(lora.layers, lora.rank, lora.alpha, tmp_path / "again", fan_in_fan_out=True)
    again = load_peft_adapter(tmp_path / "again", base)
    assert list(again.layers) == list(lora.layers) and (again.rank, again.alpha) == (lora.rank, lora.alpha)
    for name, (a, b) in lora.layers.items():
        assert torch.equal(again.layers[name][0], a) and torch.equal(again.layers[name][1], b)
    close(_peft_outputs("gpt2", base, tmp_path / "again", x), merged["task1"])
    with pytest.raises(ValueError, match="A must be"):
        save_peft_adapter(lora.layers, 3, 8.0, tmp_path / "bad")


# --- refusals ---------------------------------------------------------------------------------------------------------


def _edited(source, target, **changes):
    shutil.copytree(source, target)
    path = target / ADAPTER_CONFIG_FILE
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))
    return target


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"peft_type": "IA3"}, "peft_type 'IA3' is not supported"),
        ({"use_dora": True}, "use_dora=True is not supported"),
        ({"rank_pattern": {"q": 8}}, "rank_pattern"),
        ({"alpha_pattern": {"v": 4}}, "alpha_pattern"),
        ({"bias": "all"}, "bias='all' is not supported"),
        ({"lora_bias": True}, "lora_bias"),
        ({"init_lora_weights": "pissa_niter_4"}, "changes the base weights"),
        ({"r": 0}, "r must be a positive integer"),
        ({"lora_alpha": "x"}, "lora_alpha must be"),
        ({"r": 8}, r"needs lora_A \(8, 32\)"),
    ],
)
def test_unsupported_or_inconsistent_configs_are_refused(adapters, tmp_path, changes, message):
    base, dirs, _, _ = adapters("t5")
    directory = _edited(dirs["task0"], tmp_path / "edited", **changes)
    with pytest.raises(ValueError, match=message) as error:
        load_peft_adapter(directory, base)
    assert "\n" not in str(error.value) and str(directory) in str(error.value)


def test_real_peft_adapters_a_bank_cannot_hold(tmp_path):
    from peft import IA3Config, get_peft_model

    t5 = build("t5", seed=11)
    make_adapter(t5, tmp_path / "dora", ["q", "v"], seed=1, use_dora=True)
    with pytest.raises(ValueError, match="use_dora=True is not supported"):
        load_peft_adapter(tmp_path / "dora", t5)
    make_adapter(t5, tmp_path / "embedding", ["shared", "q"], seed=1)
    with pytest.raises(ValueError, match="embedding layer is not supported"):
        load_peft_adapter(tmp_path / "embedding", t5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ia3 = get_peft_model(copy.deepcopy(t5), IA3Config(target_modules=["k", "v", "wo"], feedforward_modules=["wo"]))
    ia3.save_pretrained(str(tmp_path / "ia3"))
    with pytest.raises(ValueError, match="peft_type 'IA3'"):
        load_peft_adapter(tmp_path / "ia3", t5)
    # a sequence-classification adapter saves its trained head (modules_to_save)
    bert = build("bert", seed=12)
    make_adapter(bert, tmp_path / "seq_cls", ["query", "value"], seed=2, task_type="SEQ_CLS")
    with pytest.raises(ValueError, match="ignore_modules_to_save=True"):
        load_peft_adapter(tmp_path / "seq_cls", bert)
    lora = load_peft_adapter(tmp_path / "seq_cls", bert, ignore_modules_to_save=True)
    assert lora.ignored and all("classifier" in key for key in lora.ignored) and len(lora.layers) == 4


def test_adapter_that_does_not_fit_the_model(adapters, tmp_path):
    base, dirs, _, _ = adapters("t5")
    with pytest.raises(ValueError, match="is not a linear layer of the model"):
        load_peft_adapter(dirs["task0"], build("gpt2"))
    with pytest.raises(ValueError, match=r"needs lora_A \(4, 48\)"):
        load_peft_adapter(dirs["task0"], build("t5", d_model=48))
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        load_peft_adapter(dirs["task0"], "t5")


def test_missing_or_broken_files(adapters, tmp_path):
    base, dirs, _, _ = adapters("t5")
    with pytest.raises(ValueError, match="does not exist"):
        load_peft_adapter(tmp_path / "nowhere", base)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no adapter_config.json"):
        load_peft_adapter(tmp_path / "empty", base)
    no_weights = tmp_path / "no_weights"
    shutil.copytree(dirs["task0"], no_weights)
    (no_weights / ADAPTER_WEIGHTS_FILE).unlink()
    with pytest.raises(ValueError, match="no adapter_model.safetensors"):
        load_peft_adapter(no_weights, base)
    (no_weights / ADAPTER_WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_peft_adapter(no_weights, base)
    (no_weights / ADAPTER_CONFIG_FILE).write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_peft_adapter(no_weights, base)


def test_adapters_of_one_bank_must_match(adapters, tmp_path):
    base, dirs, _, _ = adapters("t5")
    make_adapter(base, tmp_path / "rank2", ["q", "v"], seed=1, rank=2, alpha=8)
    make_adapter(base, tmp_path / "alpha16", ["q", "v"], seed=1, alpha=16)
    make_adapter(base, tmp_path / "q_only", ["q"], seed=1)
    for other, message in (("rank2", "rank 2 vs 4"), ("alpha16", "alpha 16 vs 8"), ("q_only", "layers differ")):
        with pytest.raises(ValueError, match=message) as error:
            bank_from_peft({"task0": dirs["task0"], other: tmp_path / other}, base)
        assert f"adapter {other!r}" in str(error.value) and "\n" not in str(error.value)
