"""The synthetic chart generator: chart specs, their questions and gold answers, and the rendered images.

``synthetic_examples(n, seed, split)`` draws bar, line and pie charts from small vocabularies, each with
one question answerable from the chart (``QUESTION_KINDS``: lookup, max, min, difference, total, count,
and two kinds a very small model can partly learn: "which has the higher value, X or Y?" with both labels
named, and the chart's type), its gold answer, data table and rationale; ``render_chart`` draws a spec as
an ``IMAGE_SIZE`` square RGB image with matplotlib.  Needs no files; deterministic per seed.  A chart's
split is a hash of its data, so train and test never share a chart, whatever the seeds.

``chartrl_colab.data.loading`` turns these specs into rows of the common data-set schema.
"""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import PIL.Image

from chartrl_colab.errors import check_split

__all__ = ["SPLITS", "QUESTION_KINDS", "CHART_TYPES", "IMAGE_SIZE", "make_synthetic_example", "with_question",
           "draw_question", "synthetic_examples", "render_chart", "answer_question"]

SPLITS = ("train", "test")
IMAGE_SIZE = 224
_DPI = 100
CHART_TYPES = ("bar", "line", "pie")
QUESTION_KINDS = ("value", "max", "min", "diff", "sum", "count", "compare", "type")
# make_synthetic_example draws among the first six only (its RNG stream, and so every seed's charts, predate
# the last two); synthetic_examples swaps in one of the later kinds with this probability, from its own stream.
_FIRST_KINDS = QUESTION_KINDS[:6]
_LATER_KINDS = QUESTION_KINDS[6:]
_LATER_SHARE = 0.25  # 8 kinds, each about 1/8 of the questions

# (category column name, value column name, labels). Short labels keep tick text legible at 224 px.
_CATEGORICAL_VOCABS = (
    ("Fruit", "Sales", ("Apples", "Bananas", "Cherries", "Grapes", "Mangoes", "Oranges", "Pears", "Plums", "Kiwis",
                        "Lemons")),
    ("Country", "Visitors", ("France", "Germany", "Italy", "Spain", "Japan", "Brazil", "Canada", "India", "Mexico",
                             "Peru")),
    ("Product", "Units", ("Laptops", "Phones", "Tablets", "Cameras", "Monitors", "Speakers", "Printers", "Watches")),
    ("Sport", "Players", ("Soccer", "Tennis", "Golf", "Hockey", "Rugby", "Cricket", "Boxing", "Rowing")),
)
# Ordered vocabularies for line charts, which read as a trend over time.
_ORDERED_VOCABS = (
    ("Month", "Revenue", ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")),
    ("Year", "Orders", tuple(str(y) for y in range(2012, 2025))),
)
_PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
_SERIES_NOUN = {"bar": "The bars show", "line": "The line points show", "pie": "The pie slices show"}
# One chart in this many goes to the test split; see _split_of.
_TEST_BUCKETS = 5


def answer_question(labels, values, kind: str, args=(), chart_type: str | None = None) -> str:
    """Gold answer of a synthetic question, computed from the chart's data (and type, for ``type``).

    ``kind`` is one of ``QUESTION_KINDS``; ``args`` holds the labels the question
    names (one for ``value``, two for ``diff`` and ``compare``, none otherwise).
    """
    labels = [str(x) for x in labels]
    values = [int(v) for v in values]
    if len(labels) != len(values) or not labels:
        raise ValueError(f"need as many values as labels (got {len(labels)} labels, {len(values)} values)")
    args = list(args or ())
    if kind == "value":
        return str(values[labels.index(args[0])])
    if kind == "max":
        return labels[values.index(max(values))]
    if kind == "min":
        return labels[values.index(min(values))]
    if kind == "diff":
        return str(abs(values[labels.index(args[0])] - values[labels.index(args[1])]))
    if kind == "sum":
        return str(sum(values))
    if kind == "count":
        return str(len(labels))
    if kind == "compare":
        return max(args[:2], key=lambda lab: values[labels.index(lab)])
    if kind == "type":
        if chart_type not in CHART_TYPES:
            raise ValueError(f"kind 'type' needs the chart_type, one of {', '.join(CHART_TYPES)}; got {chart_type!r}")
        return chart_type
    raise ValueError(f"unknown question kind {kind!r}; valid kinds: {', '.join(QUESTION_KINDS)}")


# Question and rationale wording per kind; {0}, {1}: the labels the question names.
_QUESTIONS = {
    "value": "What is the value of {0}?", "max": "Which {category} has the highest value?",
    "min": "Which {category} has the lowest value?", "diff": "What is the difference between {0} and {1}?",
    "sum": "What is the total of all values?", "count": "How many categories are shown?",
    "compare": "Which has the higher value, {0} or {1}?", "type": "What type of chart is this?",
}
_TAILS = {
    "value": "so the value of {0} is {answer}.", "max": "so the highest is {answer}.",
    "min": "so the lowest is {answer}.", "type": "so this is a {answer} chart.",
    "count": "so there are {answer} categories.",
}


def _rationale(chart_type: str, labels, values, kind: str, args, answer: str) -> str:
    pairs = ", ".join(f"{lab}={val}" for lab, val in zip(labels, values))
    lookup = dict(zip(labels, values))
    if kind == "diff":
        hi, lo = sorted((lookup[args[0]], lookup[args[1]]), reverse=True)
        tail = f"so the difference between {args[0]} and {args[1]} is {hi} - {lo} = {answer}."
    elif kind == "sum":
        tail = f"so the total is {' + '.join(str(v) for v in values)} = {answer}."
    elif kind == "compare":
        loser = args[1] if answer == args[0] else args[0]
        tail = f"so {answer} ({lookup[answer]}) is higher than {loser} ({lookup[loser]})."
    else:
        tail = _TAILS[kind].format(*args, answer=answer)
    return f"{_SERIES_NOUN[chart_type]} {pairs}, {tail}"


def make_synthetic_example(rng: random.Random) -> dict:
    """Draw one chart spec and question from ``rng`` (a ``random.Random``).

    Returns a dict with ``chart_type``, ``title``, ``category``, ``value_name``, ``labels``, ``values``, ``colors``,
    ``kind``, ``args``, ``question``, ``answer``, ``table`` (JSON string of exactly the drawn data) and
    ``reasoning``. Values are distinct integers so max/min are unambiguous.
    """
    chart_type = rng.choice(CHART_TYPES)
    if chart_type == "line":
        category, value_name, vocab = rng.choice(_ORDERED_VOCABS)
        n = rng.randint(4, 7)
        start = rng.randint(0, len(vocab) - n)
        labels = list(vocab[start : start + n])  # consecutive, so the x axis reads in order
        values = rng.sample(range(5, 100), n)
    else:
        category, value_name, vocab = rng.choice(_CATEGORICAL_VOCABS)
        n = rng.randint(3, 5) if chart_type == "pie" else rng.randint(3, 6)
        labels = rng.sample(vocab, n)
        # pie: no sliver too thin to label
        values = rng.sample(range(8, 60) if chart_type == "pie" else range(1, 100), n)
    colors = rng.sample(_PALETTE, n) if chart_type == "pie" else [rng.choice(_PALETTE)] * n

    kind = rng.choice(_FIRST_KINDS)
    table = json.dumps({"columns": [category, value_name], "rows": [[lab, val] for lab, val in zip(labels, values)]})
    chart = {"chart_type": chart_type, "title": f"{value_name} by {category.lower()}", "category": category,
             "value_name": value_name, "labels": labels, "values": values, "colors": colors, "table": table}
    return draw_question(chart, kind, rng)


def draw_question(chart: dict, kind: str, rng: random.Random) -> dict:
    """``with_question(chart, kind, args)`` with the labels a ``kind`` question names drawn from ``rng``."""
    labels = chart["labels"]
    args = [rng.choice(labels)] if kind == "value" else rng.sample(labels, 2) if kind in ("diff", "compare") else []
    return with_question(chart, kind, args)


def with_question(chart: dict, kind: str, args=()) -> dict:
    """A copy of the chart spec ``chart`` asking question ``kind`` about ``args`` (labels of the chart), with its
    ``kind``, ``args``, ``question``, ``answer`` and ``reasoning`` (the keys of ``make_synthetic_example``)."""
    labels, values, args = chart["labels"], chart["values"], list(args)
    answer = answer_question(labels, values, kind, args, chart["chart_type"])
    return {**chart, "kind": kind, "args": args,
            "question": _QUESTIONS[kind].format(*args, category=chart["category"].lower()), "answer": answer,
            "reasoning": _rationale(chart["chart_type"], labels, values, kind, args, answer)}


def render_chart(chart: dict, size: int = IMAGE_SIZE) -> PIL.Image.Image:
    """Render a chart spec (from ``make_synthetic_example``) to a ``size``x``size`` RGB image.

    Uses ``Figure`` + ``FigureCanvasAgg`` directly instead of pyplot, so no global backend is switched and an
    interactive session is left alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels, values = chart["labels"], chart["values"]
    colors = chart.get("colors") or [_PALETTE[0]] * len(labels)
    fig = Figure(figsize=(size / _DPI, size / _DPI), dpi=_DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    kind = chart["chart_type"]
    if kind == "pie":
        ax = fig.add_axes((0.2, 0.06, 0.6, 0.74))  # margin for the names outside the slices
        # Value inside each slice (matplotlib calls autopct once per wedge, in order: the exact values, not
        # values recomputed from percentages), name outside: both readable from the image.
        shown = iter(values)
        ax.pie(values, labels=labels, colors=colors, startangle=90, counterclock=False, labeldistance=1.12,
               autopct=lambda _pct: str(next(shown)), pctdistance=0.65, textprops={"fontsize": 6},
               wedgeprops={"linewidth": 0.6, "edgecolor": "white"})
        ax.set_aspect("equal")
    else:
        ax = fig.add_axes((0.14, 0.2, 0.82, 0.66))
        x = np.arange(len(labels))
        top = max(values) * 1.18
        if kind == "bar":
            bars = ax.bar(x, values, color=colors, width=0.65)
            ax.bar_label(bars, labels=[str(v) for v in values], fontsize=6, padding=1)
        elif kind == "line":
            ax.plot(x, values, color=colors[0], marker="o", markersize=3, linewidth=1.2)
            for xi, v in zip(x, values):
                ax.annotate(str(v), (xi, v), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=6)
        else:
            raise ValueError(f"unknown chart type {kind!r}; valid types: {', '.join(CHART_TYPES)}")
        ax.set_ylim(0, top)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=6, rotation=35, ha="right", rotation_mode="anchor")
        ax.tick_params(axis="y", labelsize=5.5, length=2)
        ax.tick_params(axis="x", length=2)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(chart.get("title", ""), fontsize=7.5, y=0.97)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    img = PIL.Image.fromarray(rgba[..., :3].copy(), mode="RGB")
    if img.size != (size, size):  # float rounding of figsize*dpi; keep the stated size exact
        img = img.resize((size, size), PIL.Image.BICUBIC)
    return img


def _split_of(chart: dict) -> str:
    """Deterministic split of a chart from its data alone.

    Hashing the drawn data (not the RNG stream) keeps train and test disjoint for every pair of seeds, not only
    within one seed.
    """
    key = json.dumps([chart["chart_type"], chart["labels"], chart["values"]])
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % _TEST_BUCKETS
    return "test" if bucket == 0 else "train"


def synthetic_examples(n: int, seed: int | str = 0, split: str = "train") -> list[dict]:
    """The first ``n`` synthetic chart specs for ``(seed, split)``, in dataset order (``seed``: an int, or a
    string naming a stream of its own).

    Specs are drawn one after another from one RNG, so the first ``k`` specs do not depend on ``n``. Charts hashed
    to the other split, and repeated charts, are rejected.
    """
    check_split("synthetic", split, SPLITS)
    rng = random.Random(f"chartrl-synthetic:{seed}:{split}")  # str seeds hash stably (sha512)
    # The later kinds come from a stream of their own, so the charts and the other questions stay as they were.
    later = random.Random(f"chartrl-synthetic-later-kinds:{seed}:{split}")
    specs: list[dict] = []
    seen: set[str] = set()
    while len(specs) < n:
        spec = make_synthetic_example(rng)
        sig = json.dumps([spec["chart_type"], spec["labels"], spec["values"]])
        if _split_of(spec) != split or sig in seen:
            continue
        seen.add(sig)
        if later.random() < _LATER_SHARE:
            kind = later.choice(_LATER_KINDS)
            spec = draw_question(spec, kind, later)
        specs.append(spec)
    return specs
