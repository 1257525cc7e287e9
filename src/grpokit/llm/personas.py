"""The seven-persona task: a tiny language, personas with checkable styles, users with feedback history.

Prompts read ``"<persona tag> <topic> :"`` (e.g. ``"p4 t2 :"``), the persona's description in a
word, as in the paper's persona set-up. Completions are short word sequences from a generated
grammar (:func:`sample_completion`): an optional ``yo`` opener, 1-7 topic words, sometimes
``-`` bullets, a ``please``, a number word, a closing ``!``. Every style occurs in the corpus
regardless of the prompt, so after a supervised stage the model samples every style for every
persona, and alignment must learn which persona wants which.

Each persona passes a completion on one checkable rule (``PERSONAS``); the sparse reward is 1 for a
pass, 0 for a fail. Shares are unequal (40/20/15/10/8/5/2 %). Users (:func:`make_users`) belong to
one persona and carry a feedback history: their liked/not-liked verdicts (10 % flipped) on a fixed
set of probe responses, from which grpokit's cohort discovery recovers groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "Persona",
    "PERSONAS",
    "WORDS",
    "TOPICS",
    "sample_completion",
    "make_corpus",
    "make_users",
    "persona_reward",
    "prompt_for",
]

TOPICS = [f"t{i}" for i in range(6)]
TOPIC_WORDS = {t: [f"w{i}{j}" for j in range(4)] for i, t in enumerate(TOPICS)}
NUMBERS = ["one", "two", "three"]
MARKERS = ["yo", "please", "-", "!", ":"]
_ALL_TOPIC_WORDS = [w for ws in TOPIC_WORDS.values() for w in ws]


@dataclass(frozen=True)
class Persona:
    """A persona: its prompt tag, its share of users and its pass rule on the completion's words."""

    name: str
    tag: str
    share: float
    rule: str
    passes: Callable[[list[str]], bool]


PERSONAS: tuple[Persona, ...] = (
    Persona("brief", "p0", 0.40, "at most 3 words", lambda w: 0 < len(w) <= 3),
    Persona("detailed", "p1", 0.20, "at least 8 words", lambda w: len(w) >= 8),
    Persona("polite", "p2", 0.15, "says 'please'", lambda w: "please" in w),
    Persona("casual", "p3", 0.10, "opens with 'yo'", lambda w: bool(w) and w[0] == "yo"),
    Persona("excited", "p4", 0.08, "ends with '!'", lambda w: bool(w) and w[-1] == "!"),
    Persona("listy", "p5", 0.05, "two or more '-' bullets", lambda w: w.count("-") >= 2),
    Persona("numeric", "p6", 0.02, "names a number", lambda w: any(x in NUMBERS for x in w)),
)
_BY_NAME = {p.name: p for p in PERSONAS}

WORDS: list[str] = [p.tag for p in PERSONAS] + TOPICS + _ALL_TOPIC_WORDS + NUMBERS + MARKERS


def prompt_for(persona: str, topic: str) -> str:
    return f"{_BY_NAME[persona].tag} {topic} :"


def sample_completion(rng: np.random.Generator, topic: str) -> str:
    """One completion of the grammar (independent of the persona): every style has a 15-30 % chance."""
    n = int(rng.integers(1, 8))
    own = TOPIC_WORDS[topic]
    body = [own[int(rng.integers(4))] if rng.random() < 0.8 else _ALL_TOPIC_WORDS[int(rng.integers(24))] for _ in range(n)]
    if rng.random() < 0.25:
        body[int(rng.integers(n))] = NUMBERS[int(rng.integers(3))]
    if rng.random() < 0.2 and n >= 2:  # bullets: "- w - w ..."
        body = [x for w in body[: min(n, 4)] for x in ("-", w)]
    if rng.random() < 0.25:
        body.insert(int(rng.integers(len(body) + 1)), "please")
    if rng.random() < 0.2:
        body.insert(0, "yo")
    if rng.random() < 0.25:
        body.append("!")
    return " ".join(body)


def make_corpus(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (prompt, completion) pairs: uniform persona tag and topic, completion from the grammar."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        persona = PERSONAS[int(rng.integers(len(PERSONAS)))].name
        topic = TOPICS[int(rng.integers(len(TOPICS)))]
        out.append((prompt_for(persona, topic), sample_completion(rng, topic)))
    return out


def passes(persona: str, completion: str) -> bool:
    if persona not in _BY_NAME:
        raise ValueError(f"unknown persona {persona!r}; choose one of {list(_BY_NAME)}")
    return bool(_BY_NAME[persona].passes(completion.split()))


def persona_reward(completions: Sequence[str], persona: Sequence[str], **kwargs) -> list[float]:
    """TRL reward function: 1.0 where the completion passes its prompt's persona rule, else 0.0.

    ``persona`` is the dataset column of the same name (one entry per completion).
    """
    if len(persona) != len(completions):
        raise ValueError(f"got {len(completions)} completions but {len(persona)} persona labels")
    return [float(passes(p, c)) for p, c in zip(persona, completions)]


def make_users(n_users: int, seed: int, n_probes: int = 32, flip: float = 0.1) -> dict:
    """Users with a persona (shares as ``PERSONAS``, at least one each) and a feedback history.

    Returns ``persona`` [n] (names), ``history`` [n, n_probes] (0/1 liked verdicts on the same
    probe responses, each flipped with probability ``flip``) and ``probes`` (the responses).
    """
    if n_users < len(PERSONAS):
        raise ValueError(f"n_users must be >= {len(PERSONAS)} (one per persona), got {n_users}")
    rng = np.random.default_rng(seed)
    counts = np.maximum(1, np.round([p.share * n_users for p in PERSONAS]).astype(int))
    counts[0] += n_users - counts.sum()
    personas = np.repeat([p.name for p in PERSONAS], counts)
    rng.shuffle(personas)
    probes = [sample_completion(rng, TOPICS[int(rng.integers(len(TOPICS)))]) for _ in range(n_probes)]
    liked = np.array([[passes(p, c) for c in probes] for p in personas], dtype=float)
    noise = rng.random(liked.shape) < flip
    history = np.where(noise, 1.0 - liked, liked)
    return {"persona": personas.tolist(), "history": history, "probes": probes}
