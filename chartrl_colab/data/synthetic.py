"""The synthetic chart generator: bar, line and pie chart specs, their questions, gold answers and images.

``synthetic_examples(n, seed, split)`` draws charts from small vocabularies, each with one question answerable from
the chart (``QUESTION_KINDS``), its gold answer, data table and rationale; ``render_chart`` draws a spec as an
``IMAGE_SIZE`` square RGB image with matplotlib. Deterministic per seed; a chart's split is a hash of its data,
so train and test never share a chart, whatever the seeds.
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
# The last two are kinds a very small model can partly learn; every seed's charts predate them, so they come from
# a stream of their own (synthetic_examples), with this share of the questions: 8 kinds, each about 1/8.
QUESTION_KINDS = ("value", "max", "min", "diff", "sum", "count", "compare", "type")
_LATER_SHARE = 0.25

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
    """Gold answer of a ``kind`` question (one of ``QUESTION_KINDS``) about ``args``, the labels it names (one for
    ``value``, two for ``diff`` and ``compare``), computed from the chart's data (and type, for ``type``)."""
    labels = [str(x) for x in labels]
    values = [int(v) for v in values]
    if len(labels) != len(values) or not labels:
        raise ValueError(f"need as many values as labels (got {len(labels)} labels, {len(values)} values)")
    args = list(args or ())
    if kind == "type" and chart_type not in CHART_TYPES:
        raise ValueError(f"kind 'type' needs the chart_type, one of {', '.join(CHART_TYPES)}; got {chart_type!r}")
    answers = {
        "value": lambda: str(values[labels.index(args[0])]),
        "max": lambda: labels[values.index(max(values))],
        "min": lambda: labels[values.index(min(values))],
        "diff": lambda: str(abs(values[labels.index(args[0])] - values[labels.index(args[1])])),
        "sum": lambda: str(sum(values)),
        "count": lambda: str(len(labels)),
        "compare": lambda: max(args[:2], key=lambda lab: values[labels.index(lab)]),
        "type": lambda: chart_type,
    }
    if kind not in answers:
        raise ValueError(f"unknown question kind {kind!r}; valid kinds: {', '.join(QUESTION_KINDS)}")
    return answers[kind]()


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
    """One chart spec and question drawn from ``rng``: a dict with ``chart_type``, ``title``, ``category``,
    ``value_name``, ``labels``, ``values`` (distinct integers, so max/min are unambiguous), ``colors``, ``table``
    (JSON of exactly the drawn data) and :func:`with_question`'s keys."""
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

    kind = rng.choice(QUESTION_KINDS[:6])
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
    """A copy of ``chart`` asking question ``kind`` about ``args`` (labels of the chart): with its ``kind``,
    ``args``, ``question``, ``answer`` and ``reasoning``."""
    labels, values, args = chart["labels"], chart["values"], list(args)
    answer = answer_question(labels, values, kind, args, chart["chart_type"])
    return {**chart, "kind": kind, "args": args,
            "question": _QUESTIONS[kind].format(*args, category=chart["category"].lower()), "answer": answer,
            "reasoning": _rationale(chart["chart_type"], labels, values, kind, args, answer)}


def render_chart(chart: dict, size: int = IMAGE_SIZE) -> PIL.Image.Image:
    """A chart spec drawn as a ``size`` x ``size`` RGB image."""
    # Figure + FigureCanvasAgg, not pyplot: no global backend is switched under an interactive session.
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
        if kind == "bar":
            bars = ax.bar(x, values, color=colors, width=0.65)
            ax.bar_label(bars, labels=[str(v) for v in values], fontsize=6, padding=1)
        elif kind == "line":
            ax.plot(x, values, color=colors[0], marker="o", markersize=3, linewidth=1.2)
            for xi, v in zip(x, values):
                ax.annotate(str(v), (xi, v), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=6)
        else:
            raise ValueError(f"unknown chart type {kind!r}; valid types: {', '.join(CHART_TYPES)}")
        ax.set_ylim(0, max(values) * 1.18)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_xticks(x, labels, fontsize=6, rotation=35, ha="right", rotation_mode="anchor")
        ax.tick_params(axis="y", labelsize=5.5, length=2)
        ax.tick_params(axis="x", length=2)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(chart.get("title", ""), fontsize=7.5, y=0.97)
    canvas.draw()
    img = PIL.Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy(), mode="RGB")
    if img.size != (size, size):  # float rounding of figsize*dpi; keep the stated size exact
        img = img.resize((size, size), PIL.Image.BICUBIC)
    return img


def _split_of(chart: dict) -> str:
    """A chart's split from its data alone (not the RNG stream): train and test are disjoint for any seeds."""
    key = json.dumps([chart["chart_type"], chart["labels"], chart["values"]])
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % _TEST_BUCKETS
    return "test" if bucket == 0 else "train"


def synthetic_examples(n: int, seed: int | str = 0, split: str = "train") -> list[dict]:
    """The first ``n`` chart specs for ``(seed, split)`` (``seed``: an int, or a string naming a stream of its own);
    the first ``k`` do not depend on ``n``. Charts of the other split, and repeats, are skipped."""
    check_split("synthetic", split, SPLITS)
    rng = random.Random(f"chartrl-synthetic:{seed}:{split}")  # str seeds hash stably (sha512)
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
            spec = draw_question(spec, later.choice(QUESTION_KINDS[6:]), later)
        specs.append(spec)
    return specs
