"""MMLU correctness (paper, section 5): greedy answers to MMLU test questions with one of four
prompt types (base, instruct, thinking, humble); entropy profiles and the label `correct`
(letter extracted from the generated text only) saved to results/{model}_mmlu_{prompt_type}.pkl.

Example:
  python3 run_experiments.py "gemma-2-2b-it" mmlu --update_steps 1000 --max_len 8 --prompt_type base
  python3 run_experiments.py smollm2-135m-instruct mmlu --n_questions 300 \\
      --data_file ../shared/data/mmlu_test.jsonl
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..errors import UserError
from ..options import Integer, ListOf, OneOf, Option, Text
from ..readers import AnswerIndex, Choices, DataError, DataSource, HubSource, Record, load_rows
from ..readers import Text as TextField
from .base import Experiment, Sample, model_label, register_experiment

__all__ = ["MMLU_PROMPT_TYPES", "MAX_MMLU_QUESTION_CHARS", "mmlu_prompt", "mmlu_samples", "extract_letter",
           "load_mmlu", "select_questions", "MMLU"]

MAX_MMLU_QUESTION_CHARS = 1000
QUESTION = Record({"question": TextField(), "subject": TextField(), "choices": Choices(), "answer": AnswerIndex()})
HUB = HubSource("cais/mmlu", "all", "test")

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
                                 "answer": "ABCD"[int(r["answer"])], "question_index": r.get("index", i)},
                          info={"choices": list(r["choices"])}))
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


#: indexes of :data:`_LETTER_PATTERNS` that read a letter opening a line (an echoed option list looks like them)
_LINE_PATTERNS = (2, 3)
#: a line that opens like an option: "A. text", "(B) text", "C) text"
_OPTION_LINE = re.compile(r"^\s*\(?([A-D])[.)]\s*(.*?)\s*$")


def _norm(s: str) -> str:
    return " ".join(str(s).lower().split())


def echoed_options(text: str, choices=None) -> str | None:
    """Why ``text`` lists the question's ``choices`` rather than answering (``None`` when it does not, or without
    the choices): two option lines with consecutive letters ("A. I only" then "B. ..."), or an option line whose
    text is another option's ("A. Rogers's" where "Rogers's" is option B)."""
    if not choices:
        return None
    opts = [(m.group(1), _norm(m.group(2))) for m in map(_OPTION_LINE.match, text.splitlines()) if m]
    for (a, _), (b, _) in zip(opts, opts[1:]):
        if ord(b) == ord(a) + 1:
            return f"an echoed option list ({a}. then {b}.)"
    for letter, body in opts:  # a short text must match whole; a longer one may be cut (8 tokens) or run on
        same = [lt for lt, c in zip("ABCD", choices) if body and (_norm(c) == body or len(body) >= 3 and (
            _norm(c).startswith(body) or body.startswith(_norm(c))))]
        if same and letter not in same:
            return f"letter {letter} with option {same[0]}'s text"
    return None


def extract_letter(text: str, choices=None) -> str | None:
    """The answer letter (A-D, upper case) in a model's *generated* text, or ``None``.

    With the question's ``choices``, a line that opens like an option is not read as an answer when the text echoes
    the option list (:func:`echoed_options`): "A. I only" followed by "B." is the list, not answer A; "A. Rogers's"
    where "Rogers's" is option B names no answer. An explicit "Answer: C" still counts.

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
    echo = echoed_options(text, choices)
    for i, pat in enumerate(_LETTER_PATTERNS):
        if echo and i in _LINE_PATTERNS:
            continue
        m = pat.search(text)
        if m:
            return next(g for g in m.groups() if g).upper()
    return None



def select_questions(rows: list[dict], subjects=None, n_questions: int | None = None, seed: int = 0) -> list[dict]:
    """MMLU rows of ``subjects`` (all by default); ``n_questions`` draws a reproducible subsample (by ``seed``)
    that keeps the dataset's order."""
    import numpy as np

    out = [{**r, "choices": list(r["choices"])} for r in rows]
    if subjects:
        known = sorted({r["subject"] for r in out})
        unknown = [s for s in subjects if s not in known]
        if unknown:
            raise DataError(f"unknown subject(s) {', '.join(unknown)}; known: {', '.join(known[:8])}, ... "
                            f"({len(known)} in all)")
        out = [r for r in out if r["subject"] in set(subjects)]
    if n_questions is not None:
        if n_questions < 1:
            raise DataError(f"--n_questions must be a positive integer (got {n_questions})")
        if n_questions < len(out):
            pick = np.sort(np.random.default_rng(seed).choice(len(out), n_questions, replace=False))
            out = [out[i] for i in pick]
    return out


def load_mmlu(data_file: str | None = None, subjects=None, n_questions: int | None = None, seed: int = 0, *,
              skip_bad_rows: bool = False, stats: dict | None = None) -> list[dict]:
    """MMLU test rows (``question``, ``subject``, ``choices``, ``answer`` 0-3, ``index``), all subjects
    unless ``subjects``; ``n_questions`` draws a reproducible subsample (by ``seed``) that keeps
    the dataset's order. ``stats["n_bad_rows"]`` receives the number of rows skipped."""
    rows = load_rows(QUESTION, data_file=data_file, hub=HUB, skip_bad_rows=skip_bad_rows, stats=stats)
    return select_questions(rows, subjects, n_questions, seed)


@register_experiment
class MMLU(Experiment):
    name = "mmlu"
    options = (
        Option("prompt_type", "base", "prompt wording", OneOf(MMLU_PROMPT_TYPES), group="mmlu", identity=True),
        Option("n_questions", None, "reproducible random subsample of N questions (by --seed), in dataset order",
               Integer(min=1, none=True), group="mmlu", identity=True),
        Option("subjects", None, "only these subjects, e.g. abstract_algebra anatomy", ListOf(Text(), none=True),
               group="mmlu", identity=True, nargs="+"),
        Option("grading", "generate", "how 'correct' is graded: generate = the letter read from the generated text "
               "(the paper's); loglik = the most likely of the four answer letters right after the prompt (their "
               "log-likelihood; meaningful for small models that rarely write a letter); both are kept",
               OneOf(("generate", "loglik")), group="mmlu", identity=True),
    )
    source = DataSource(QUESTION, HUB, "local MMLU (jsonl/json/parquet/csv: question, subject, choices, answer) "
                        "instead of the hub")
    command, script = "profile-mmlu", "run_experiments.py"
    columns = {"subject": "the MMLU subject", "answer": "the right letter (A-D)",
               "predicted": "the letter read from the generation ('' for none)", "correct": "1 if predicted == answer",
               "question_index": "the question's row in the data", "task": "mmlu", "prompt": "the prompt type"}
    evaluation = {"label": "correct", "k": 29, "folds": 10}

    def rows(self, args, stats):
        return select_questions(super().rows(args, stats), args.subjects, args.n_questions, args.seed)

    def samples(self, rows, args):
        samples, skipped = mmlu_samples(rows, args.prompt_type)
        return samples, {"n_skipped": skipped}

    def describe(self, samples, rows, counts):
        return f"{len(samples)} questions; {counts['n_skipped']} over {MAX_MMLU_QUESTION_CHARS} characters skipped"

    def grade(self, sample, fields):
        predicted = extract_letter(fields["text"], sample.info.get("choices"))
        return {"predicted": predicted or "", "correct": int(predicted == sample.labels["answer"])}

    def identity_extra(self, args):
        extra = {"prompt_type": args.prompt_type, "n_questions": args.n_questions,
                 "subjects": list(args.subjects) if args.subjects else None}
        if args.grading != "generate":  # files of the paper's grading keep the identity they always had
            extra["grading"] = args.grading
        return extra

    def grade_batch(self, args):
        if args.grading != "loglik":
            return None
        return grade_by_loglik

    def metadata(self, args):
        return {"grading": args.grading}

    def output(self, args):
        return Path(args.results_dir) / f"{model_label(args.model)}_mmlu_{args.prompt_type}{sample_suffix(args)}.pkl"

    def report(self, state, out, seconds):
        acc = sum(state["correct"]) / max(1, len(state["correct"]))
        return f"wrote {out} ({len(state['correct'])} samples, accuracy {acc:.3f}, {seconds:.1f} s)"


def grade_by_loglik(mi, samples, profile) -> list[dict]:
    """Labels of a batch graded by the log-likelihood of the four answer letters right after each prompt (the
    letter form the tokenizer uses, see :func:`model_inspector.skipping.letter_form`): ``predicted`` / ``correct``
    from the most likely letter, ``letter_logprobs`` float32 ``[4]`` (nats, over the whole vocabulary),
    ``letter_mass`` (their total probability), and the paper's generated-letter grade as ``predicted_generated`` /
    ``correct_generated``."""
    import numpy as np

    from ..skipping import letter_logprobs

    scores = letter_logprobs(mi, [s.text for s in samples], [()], batch_size=len(samples))
    out = []
    for s, lp, text in zip(samples, scores.logprob[:, 0], profile.texts):
        gen = extract_letter(text, s.info.get("choices")) or ""
        best = "ABCD"[int(np.argmax(lp))]
        out.append({"predicted": best, "correct": int(best == s.labels["answer"]),
                    "letter_logprobs": lp.astype(np.float32), "letter_mass": float(np.exp(lp).sum()),
                    "letter_form": scores.form.text, "predicted_generated": gen,
                    "correct_generated": int(gen == s.labels["answer"])})
    return out


def sample_suffix(args) -> str:
    """What narrows the question set, in the file name: ``_n20``, ``_anatomy+virology`` (``_subjects-HASH``
    when long); empty for the full test split, so the paper's name is unchanged."""
    out = ""
    if args.subjects:
        joined = "+".join(sorted(args.subjects))
        out += f"_{joined}" if len(joined) <= 60 else f"_subjects-{hashlib.sha1(joined.encode()).hexdigest()[:8]}"
    if args.n_questions:
        out += f"_n{args.n_questions}"
    if getattr(args, "grading", "generate") != "generate":
        out += f"_{args.grading}"
    return out
