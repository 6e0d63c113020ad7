"""CSV uploads whose inferred schema, statistics and anomalies are pinned in
`golden/inference.json`: the bundled tabular samples and a messy file (padding, missing
value tokens, text and infinities in numeric columns, quoted commas and newlines, CRLF
line ends, a byte order mark, blank lines, negative zero, labels with spaces or none)."""

from __future__ import annotations

import random

from services.data.samples import sample_file


def _messy() -> bytes:
    rng = random.Random(5)
    colors = ["red", " blue", "green ", '"dark, red"', '"two\nlines"', "NA", ""]
    lines = ["\ufeffid, width ,color,count,ratio,label"]
    for i in range(600):
        width = rng.choice([f"{rng.uniform(-5, 5):.6f}", f" {rng.uniform(0, 9):.3f} ", "-0", "1e3"])
        if i % 97 == 5:
            width = rng.choice(["NaN", "n/a", "inf", "-Infinity", "x1", "null", "None"])
        count = str(rng.randint(-3, 40)) if i % 53 else rng.choice(["", "4.5", "many"])
        ratio = f"{rng.random():.17g}"
        label = rng.choice(["cat", " dog", "bird ", "cat"]) if i % 71 else rng.choice(["", "NULL"])
        lines.append(",".join([str(i), width, rng.choice(colors), count, ratio, label]))
        if i % 150 == 7:
            lines.append("")
    return ("\r\n".join(lines) + "\r\n").encode()


def fixtures() -> dict[str, tuple[bytes, str]]:
    """Each fixture's content and label column."""
    found = {"messy": (_messy(), "label")}
    for name in ("iris", "wine", "breast_cancer"):
        sample = sample_file(name)
        found[name] = (sample.content, sample.label_column)
    return found
