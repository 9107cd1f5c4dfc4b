"""Build scenarios/data/wordnet_glosses.tsv.gz from the WordNet 3.0 database files of Debian's `wordnet-base`.

    apt-get install wordnet-base        # /usr/share/wordnet/data.{noun,verb,adj,adv}
    python scripts/build_wordnet_table.py [--wordnet-dir /usr/share/wordnet] [--out scenarios/data/...]

One row per synset whose definition text is not already taken by an earlier synset (WordNet repeats a few
definitions; a text must have one label and sit in one pool), at most `--max-per-class` (default 1500) per
supersense to keep the shipped file small: the large classes keep the synsets with the smallest crc32 of
"<pos><offset>", a fixed pseudo-random sample (the tasks draw a few hundred per class).

Columns: synset offset, part of speech (n, v, a, s, r), supersense (lexicographer file name, lexnames(5WN)), first
lemma, definition (the gloss up to its first quoted example, without the trailing semicolon). The file starts with
WordNet's licence notice as `#` lines, which must stay with every copy (the licence's condition). The output is
byte-for-byte reproducible (gzip mtime 0).

Data format: wndb(5WN): `offset lex_filenum ss_type w_cnt word lex_id ... p_cnt ptrs ... | gloss`.
"""

from __future__ import annotations

import argparse
import gzip
import io
import re
import sys
import zlib
from pathlib import Path

LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition", "verb.consumption",
    "verb.contact", "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession",
    "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip
"""Lexicographer file names by number 00-44, from lexnames(5WN) of WordNet 3.0."""

NOTICE = """\
WordNet 3.0 glosses and supersenses, extracted by scripts/build_wordnet_table.py from Debian's wordnet-base.
This software and database is being provided to you, the LICENSEE, by Princeton University under the following
license. By obtaining, using and/or copying this software and database, you agree that you have read,
understood, and will comply with these terms and conditions.:
Permission to use, copy, modify and distribute this software and database and its documentation for any purpose
and without fee or royalty is hereby granted, provided that you agree to comply with the following copyright
notice and statements, including the disclaimer, and that the same appear on ALL copies of the software, database
and documentation, including modifications that you make for internal use or for distribution.
WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.
THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES,
EXPRESS OR IMPLIED. BY WAY OF EXAMPLE, BUT NOT LIMITATION, PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR
WARRANTIES OF MERCHANT- ABILITY OR FITNESS FOR ANY PARTICULAR PURPOSE OR THAT THE USE OF THE LICENSED SOFTWARE,
DATABASE OR DOCUMENTATION WILL NOT INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS, TRADEMARKS OR OTHER RIGHTS.
The name of Princeton University or Princeton may not be used in advertising or publicity pertaining to
distribution of the software and/or database. Title to copyright in this software, database and any associated
documentation shall at all times remain with Princeton University and LICENSEE agrees to preserve same.
"""
COLUMNS = ("offset", "pos", "supersense", "lemma", "definition")


def definition_of(gloss: str) -> str:
    """The gloss up to its first quoted example, whitespace collapsed, without a trailing ';'."""
    text = gloss.split('"', 1)[0]
    return re.sub(r"\s+", " ", text).strip().rstrip(";").strip()


def read_synsets(wordnet_dir: Path) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for part in ("noun", "verb", "adj", "adv"):
        path = wordnet_dir / f"data.{part}"
        if not path.is_file():
            raise SystemExit(f"{path}: not found; install Debian's wordnet-base or pass --wordnet-dir")
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:  # licence header lines start with two spaces
                continue
            fields, gloss = line.split("|", 1)
            parts = fields.split()
            offset, lex_filenum, pos = parts[0], int(parts[1]), parts[2]
            lemma = parts[4].replace("_", " ")
            lemma = re.sub(r"\((a|p|ip)\)$", "", lemma)  # adjective syntax markers, wndb(5WN)
            definition = definition_of(gloss)
            if definition:
                rows.append((offset, pos, LEXNAMES[lex_filenum], lemma, definition))
    return rows


def build(wordnet_dir: Path, max_per_class: int) -> tuple[bytes, dict[str, int]]:
    rows = read_synsets(wordnet_dir)
    seen: set[str] = set()
    unique = []
    for row in rows:
        key = row[4].lower()
        if key in seen:
            continue
        seen.add(key)
        unique.append(row)
    by_class: dict[str, list[tuple[str, str, str, str, str]]] = {}
    for row in unique:
        by_class.setdefault(row[2], []).append(row)
    chosen: set[tuple[str, str]] = set()
    for members in by_class.values():
        ranked = sorted(members, key=lambda r: (zlib.crc32(f"{r[1]}{r[0]}".encode()), r[1], r[0]))
        chosen.update((r[1], r[0]) for r in ranked[:max_per_class])
    kept = [row for row in unique if (row[1], row[0]) in chosen]
    text = io.StringIO()
    for line in NOTICE.splitlines():
        text.write(f"# {line}\n")
    text.write("\t".join(COLUMNS) + "\n")
    for row in kept:
        text.write("\t".join(field.replace("\t", " ") for field in row) + "\n")
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0, filename="") as handle:
        handle.write(text.getvalue().encode("utf-8"))
    return buffer.getvalue(), {"synsets": len(rows), "unique": len(unique), "kept": len(kept)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    default_out = Path(__file__).resolve().parent.parent / "scenarios" / "data" / "wordnet_glosses.tsv.gz"
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--max-per-class", type=int, default=1500)
    args = parser.parse_args(argv)
    data, counts = build(args.wordnet_dir, args.max_per_class)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    sys.stdout.write(
        f"{args.out}: {counts['kept']} of {counts['synsets']} synsets ({counts['unique']} distinct definitions), "
        f"{len(data) / 1e6:.2f} MB\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
