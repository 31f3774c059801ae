"""The paper's prompts and labels: TinyStories task identification, MMLU, output formats.

Every string here is the paper's (see ``shared/paper/README.md``); the format topics live in
``model_inspector/data/format_prompts.json``.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from importlib import resources

from .errors import UserError

__all__ = [
    "Sample",
    "TS_TASKS",
    "TS_VARIANTS",
    "tinystories_samples",
    "scramble_words",
    "MMLU_PROMPT_TYPES",
    "mmlu_prompt",
    "mmlu_samples",
    "extract_letter",
    "load_format_prompts",
    "format_samples",
    "MAX_TS_PROMPT_CHARS",
    "MAX_MMLU_QUESTION_CHARS",
]

MAX_TS_PROMPT_CHARS = 1500
MAX_MMLU_QUESTION_CHARS = 1000


@dataclass
class Sample:
    """One prompt to profile, with the labels saved beside its profile."""

    text: str
    labels: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- TinyStories
#: label -> task prompt, in the paper's order; the class is the label's first word.
TS_TASKS = {
    "continuation_prompt_1": "How can the story be continued?",
    "continuation_prompt_2": "Which could be a continuation of the story?",
    "counting_prompt_1": "How many words are in the story?",
    "counting_prompt_2": "Count the number of words in the story.",
    "semantic_prompt_1": "What is the main idea of the story?",
    "semantic_prompt_2": "Who is the subject of the story?",
}
#: variant suffix -> (story first?, scrambled?)
TS_VARIANTS = {"base": (True, False), "rev": (False, False), "scramble": (True, True), "scramble_rev": (False, True)}


def scramble_words(story: str, seed: int, index: int) -> str:
    """The story's space-separated words in a shuffled order (seeded by ``seed`` and the story's
    index). Returns a new string: the story itself is not modified (the original code overwrote it,
    so that later prompts of the same story saw an already scrambled story)."""
    words = story.split(" ")
    rng = random.Random(f"{seed}:{index}")
    shuffled = list(words)
    rng.shuffle(shuffled)
    return " ".join(shuffled)


def tinystories_samples(stories, seed: int = 0, max_chars: int = MAX_TS_PROMPT_CHARS) -> tuple[list[Sample], int]:
    """All prompts for ``stories``: per story, per task (6), the variants base, rev, scramble,
    scramble_rev. Prompts over ``max_chars`` characters are skipped. Returns ``(samples, n_skipped)``."""
    out, skipped = [], 0
    for i, story in enumerate(stories):
        scrambled = scramble_words(story, seed, i)
        for label, task in TS_TASKS.items():
            for variant, (story_first, scr) in TS_VARIANTS.items():
                s = scrambled if scr else story
                text = f"{s}\n\n{task}\n\n" if story_first else f"{task}\n\n{s}\n\n"
                if len(text) > max_chars:
                    skipped += 1
                    continue
                out.append(Sample(text, {"task": label.split("_")[0], "prompt": f"{label}_{variant}",
                                         "variant": variant, "story_index": i}))
    return out, skipped


# ----------------------------------------------------------------------------- MMLU
_MC_HEAD = "The following is a multiple choice question about {subject}. "
MMLU_PROMPT_TYPES = ("base", "instruct", "thinking", "humble")


def _lettered(choices) -> str:
    return "".join(f"{letter}. {c}\n" for letter, c in zip("ABCD", choices))


def mmlu_prompt(question: str, choices, subject: str, prompt_type: str = "base") -> str:
    """The paper's MMLU prompt of ``prompt_type`` (base, instruct, thinking, humble)."""
    body = f"Question: {question}\n\nChoices:\n{_lettered(choices)}"
    if prompt_type == "base":
        return f"Subject: {subject}.\n\n{body}\nAnswer: "
    if prompt_type == "instruct":
        return _MC_HEAD.format(subject=subject) + "Reply only with the correct option.\n\n" + body + "\nAnswer: "
    if prompt_type == "thinking":
        return (_MC_HEAD.format(subject=subject)
                + "Reply with a short 1 phrase explaination THEN the correct option.\n\n" + body + "Explaination: ")
    if prompt_type == "humble":
        return (_MC_HEAD.format(subject=subject) + "Reply only with the correct option, if you are unsure about the "
                "answer, reply with a completly random option.\n\n" + body + "\nAnswer: ")
    raise UserError(f"unknown prompt type {prompt_type!r}; choose one of {', '.join(MMLU_PROMPT_TYPES)}")


def mmlu_samples(rows, prompt_type: str = "base", max_chars: int = MAX_MMLU_QUESTION_CHARS) -> tuple[list[Sample], int]:
    """Prompts for MMLU rows (``question``, ``subject``, ``choices``, ``answer`` 0-3). Questions over
    ``max_chars`` characters are skipped. Returns ``(samples, n_skipped)``."""
    if prompt_type not in MMLU_PROMPT_TYPES:
        raise UserError(f"unknown prompt type {prompt_type!r}; choose one of {', '.join(MMLU_PROMPT_TYPES)}")
    out, skipped = [], 0
    for i, r in enumerate(rows):
        if len(r["question"]) > max_chars:
            skipped += 1
            continue
        text = mmlu_prompt(r["question"], r["choices"], r["subject"], prompt_type)
        out.append(Sample(text, {"task": "mmlu", "prompt": prompt_type, "subject": r["subject"],
                                 "answer": "ABCD"[int(r["answer"])], "question_index": r.get("index", i)}))
    return out, skipped


_L = r"[A-D]"
# A letter that stands alone: not part of a word ("Dog"), an abbreviation ("A.D.", "U.S.") or a
# hyphenated name ("B-cell"), and not an elision ("A's").
_ALONE = r"(?![\w'’\-])(?!\.\w)"
#: Mentions that name a letter as *not* the answer; removed before the search.
_NEGATED = re.compile(
    r"\b(?:not|isn't|is\s+not|neither|nor|except|rather\s+than|instead\s+of)\s+(?:option\s+|choice\s+)?"
    r"[\(\[]?[A-Da-d][\)\]]?" + _ALONE, re.IGNORECASE)
#: "not A but C" names C (searched before the negated mentions are removed).
_NOT_BUT = re.compile(r"\bnot\s+(?:option\s+|choice\s+)?[\(\[]?[A-Da-d][\)\]]?\s*,?\s+but\s+(?:option\s+|choice\s+)?"
                      r"[\(\[]?(" + _L + r")" + _ALONE)
#: The patterns, most explicit first; the first that matches gives the letter.
_LETTER_PATTERNS = [
    # "Answer: C", "the correct answer is D", "Option (b)", "choice: A."; a lower-case letter only
    # bracketed or closed by ) . : or the end ("the answer is a good one" is an article)
    re.compile(r"\b(?i:answer|option|choice)s?\b\s*(?:is|would\s+be|should\s+be|must\s+be|=)?\s*:?\s*"
               r"(?:[\(\[]\s*([A-Da-d])\s*[\)\]]|(" + _L + r")" + _ALONE + r"|([a-d])(?=\s*(?:[):\]]|\.(?!\w)|$)))"),
    # a letter in brackets: "(B)", "[c]"
    re.compile(r"[\(\[]\s*([A-Da-d])\s*[\)\]]"),
    # a letter opening a line (after list numbering "1. " if any), closed by . ) : , or the line's
    # end: "B", "B. 4", "a) 2", "C: yes", "1. C. Social policies"
    re.compile(r"^\s*(?:\d+[.)]\s+)?(" + _L + r")(?=\s*(?:[):,]|\.(?!\w)|$))", re.MULTILINE),
    re.compile(r"^\s*(?:\d+[.)]\s+)?([a-d])(?=\s*(?:[):]|\.(?!\w)|$))", re.MULTILINE),
    # a verb of choosing and a letter: "I think it is b", "I would choose C", "pick option D because"
    re.compile(r"\b(?:is|be|it's|choose|chose|pick|select|go\s+with)\s+(?i:option\s+|choice\s+)?"
               r"(?:(" + _L + r")" + _ALONE + r"|([a-d])(?=\s*(?:[!,;:)]|\.(?!\w)|$)))"),
    # a capital letter called right: "B is correct", "C is the answer"
    re.compile(r"\b(" + _L + r")\s+(?:is|was|would\s+be)\s+(?:the\s+)?(?:correct|right|true|best|answer)\b"),
]


def extract_letter(text: str) -> str | None:
    """The answer letter (A-D, upper case) in a model's *generated* text, or ``None``.

    The patterns, in order (markdown ``*`` removed first, negated mentions such as "not A" or
    "neither A nor B" ignored): an answer/option/choice phrase followed by a standalone letter; a
    bracketed letter ``(B)``; a letter opening a line (after list numbering such as
    ``1.``) and closed by ``.``, ``)``, ``:``, ``,`` or
    the line's end; a verb of choosing followed by a letter ("it is b", "choose C"); "X is
    correct". Never an article ("a good one", "A group of..."), a letter inside a word or an
    abbreviation ("Vitamin D deficiency", "1 A.D.")."""
    if not text:
        return None
    text = text.replace("*", "")
    m = _NOT_BUT.search(text)
    if m:
        return m.group(1)
    text = _NEGATED.sub(" ", text)
    for pat in _LETTER_PATTERNS:
        m = pat.search(text)
        if m:
            return next(g for g in m.groups() if g).upper()
    return None


# ----------------------------------------------------------------------------- formats
def load_format_prompts() -> dict:
    """``{"formats": [3 prefixes], "topics": [182 topics]}`` (the paper's, in order)."""
    with resources.files("model_inspector").joinpath("data/format_prompts.json").open() as fh:
        return json.load(fh)


FORMAT_NAMES = {"Simulate a chat log about ": "chat", "Write a poem about ": "poem",
                "Write a scientific piece about ": "scientific"}


def format_samples(n_topics: int | None = None) -> list[Sample]:
    """prefix + topic for every format and the first ``n_topics`` topics (all 182 by default),
    topic-major order. Labels: ``format`` (chat, poem, scientific), ``topic``."""
    fp = load_format_prompts()
    topics = fp["topics"] if n_topics is None else fp["topics"][:n_topics]
    return [Sample(prefix + topic, {"format": FORMAT_NAMES.get(prefix, prefix.strip()), "topic": topic})
            for topic in topics for prefix in fp["formats"]]
