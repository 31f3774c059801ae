"""The paper's prompts, labels and the answer-letter extractor."""

import pytest

from model_inspector.experiments.formats import format_samples, load_format_prompts
from model_inspector.experiments.mmlu import extract_letter, mmlu_prompt, mmlu_samples
from model_inspector.experiments.tinystories import TS_TASKS, scramble_words, tinystories_samples


def test_tinystories_prompts_and_labels():
    stories = ["Tom had a red ball. He liked it.", "Sue saw a cat."]
    samples, skipped = tinystories_samples(stories, seed=0)
    assert skipped == 0 and len(samples) == 2 * 6 * 4
    first = samples[:4]
    assert [s.labels["prompt"] for s in first] == [
        "continuation_prompt_1_base", "continuation_prompt_1_rev",
        "continuation_prompt_1_scramble", "continuation_prompt_1_scramble_rev"]
    assert first[0].text == "Tom had a red ball. He liked it.\n\nHow can the story be continued?\n\n"
    assert first[1].text == "How can the story be continued?\n\nTom had a red ball. He liked it.\n\n"
    scr = scramble_words(stories[0], 0, 0)
    assert first[2].text == f"{scr}\n\nHow can the story be continued?\n\n"
    assert first[3].text == f"How can the story be continued?\n\n{scr}\n\n"
    assert sorted(scr.split(" ")) == sorted(stories[0].split(" ")) and scr != stories[0]
    assert {s.labels["task"] for s in samples} == {"continuation", "counting", "semantic"}
    for s in samples:
        assert s.labels["prompt"].split("_")[0] == s.labels["task"]
    # the story is not overwritten: every base prompt of story 0 holds the original story
    assert all(s.text.startswith(stories[0]) for s in samples if s.labels["prompt"].endswith("_base")
               and s.labels["story_index"] == 0)
    assert list(TS_TASKS.values())[3] == "Count the number of words in the story."


def test_tinystories_long_prompts_skipped():
    samples, skipped = tinystories_samples(["word " * 400], seed=0)  # 2000 characters
    assert samples == [] and skipped == 24


def test_scramble_is_seeded():
    s = "a b c d e f g h i j"
    assert scramble_words(s, 1, 0) == scramble_words(s, 1, 0)
    assert scramble_words(s, 1, 0) != scramble_words(s, 2, 0)


def test_mmlu_prompts_are_the_papers():
    q, ch = "What is 2+2?", ["1", "2", "3", "4"]
    assert mmlu_prompt(q, ch, "elementary_mathematics", "base") == (
        "Subject: elementary_mathematics.\n\nQuestion: What is 2+2?\n\nChoices:\nA. 1\nB. 2\nC. 3\nD. 4\n\nAnswer: ")
    assert mmlu_prompt(q, ch, "x", "instruct") == (
        "The following is a multiple choice question about x. Reply only with the correct option.\n\n"
        "Question: What is 2+2?\n\nChoices:\nA. 1\nB. 2\nC. 3\nD. 4\n\nAnswer: ")
    assert mmlu_prompt(q, ch, "x", "thinking").endswith("D. 4\nExplaination: ")
    assert "explaination THEN the correct option.\n\n" in mmlu_prompt(q, ch, "x", "thinking")
    assert "reply with a completly random option.\n\nQuestion:" in mmlu_prompt(q, ch, "x", "humble")
    with pytest.raises(ValueError, match="unknown prompt type"):
        mmlu_prompt(q, ch, "x", "nope")


def test_mmlu_samples_skip_long_questions():
    rows = [{"question": "q" * 1001, "subject": "s", "choices": list("abcd"), "answer": 0},
            {"question": "short", "subject": "s", "choices": list("abcd"), "answer": 2}]
    samples, skipped = mmlu_samples(rows)
    assert skipped == 1 and len(samples) == 1 and samples[0].labels["answer"] == "C"


#: (generated text, expected letter or None): the extractor's contract, one phrasing a row.
LETTER_CASES = [
    # the earlier cases
    ("B", "B"), (" B", "B"), ("Answer: C", "C"), ("The correct answer is D", "D"), ("(A)", "A"),
    ("**B**", "B"), ("**B. 4**", "B"), ("b", "B"), ("the answer is c.", "C"), ("C. 3\nD. 4", "C"),
    ("I think it's (d) because", "D"), ("Option A is right", "A"), ("answer: (b)", "B"), ("A) 1", "A"),
    ("The answer is: B. 2", "B"), ("\n\nD", "D"), ("", None), ("I do not know", None), ("maybe", None),
    ("Because of the anatomy", None),
    # false positives of the first extractor (issue 13)
    ("The answer is a good one", None), ("A group of order 4 is cyclic", None), ("Vitamin D deficiency", None),
    ("The answer is not A but C", "C"), ("Neither A nor B", None), ("In 1 A.D. the empire fell", None),
    # misses of the first extractor
    ("a) 2", "A"), ("I think it is b", "B"),
    # explicit answer phrases
    ("Answer: A", "A"), ("answer: d", "D"), ("ANSWER: C", "C"), ("The answer is B.", "B"),
    ("The correct option is (C).", "C"), ("Correct choice: D", "D"), ("The answer would be A", "A"),
    ("My answer is [b]", "B"), ("The right answer is option B", "B"), ("Answer = C", "C"),
    ("So the answer is D, since 4 is even", "D"), ("The answer is A. 2", "A"), ("answer is b)", "B"),
    # letters opening a line
    ("C", "C"), ("D.", "D"), ("A: 12", "A"), ("B, because it is even", "B"), ("c. 5", "C"), ("d)", "D"),
    ("  A.", "A"), ("Explanation first.\nB. 4", "B"), ("\nC) the cell wall", "C"),
    # bracketed and bold
    ("It must be (B).", "B"), ("[D]", "D"), ("**C**: 7", "C"), ("I pick **(a)**", "A"),
    # verbs of choosing
    ("I would choose C", "C"), ("I choose option D because it fits", "D"), ("Let's go with B.", "B"),
    ("It is a.", "A"), ("B is correct", "B"), ("C is the answer.", "C"), ("I pick A", "A"),
    # negations
    ("Not B. The answer is D", "D"), ("The answer is not C", None), ("It is D rather than A", "D"),
    # articles, words and abbreviations are not answers
    ("A cat sat on the mat", None), ("a dog", None), ("The U.S.A. is large", None), ("Dogs bark", None),
    ("It is a long story", None), ("Call me at 5 p.m.", None), ("B-cells make antibodies", None),
    ("A's are good grades", None), ("He got a B in the course", None), ("Apple", None),
    ("Vitamin C is water soluble", None), ("The mean is 5.2", None), ("Type A blood", None),
    ("1. 2\n2. 3", None), ("The option you choose matters", None),
    # numbered lists, as SmolLM2 answers
    ("1. C. Social policies, Social", "C"), ("1. A.\n\nThe answer", "A"), ("1. A decline in investment.", None),
    ("2) b) the cell", "B"),
]


@pytest.mark.parametrize("text, want", LETTER_CASES)
def test_extract_letter(text, want):
    assert extract_letter(text) == want


def test_format_prompts():
    fp = load_format_prompts()
    assert len(fp["topics"]) == 182 and len(fp["formats"]) == 3
    s = format_samples(2)
    assert len(s) == 6
    assert s[0].text == "Simulate a chat log about a drug"
    assert [x.labels["format"] for x in s[:3]] == ["chat", "poem", "scientific"]
    assert len(format_samples()) == 546


@pytest.mark.parametrize("text, choices, want, echo", [
    ("\nA. I only\nB.", ["I only", "II only", "I and II", "neither"], None, True),        # the option list, echoed
    ("\nA. Rogers's\n\n", ["Ross's", "Rogers's", "Roberts's", "Rich's"], None, True),      # letter A, option B's text
    ("\nA. Ross's\n\n", ["Ross's", "Rogers's", "Roberts's", "Rich's"], "A", False),        # letter and text agree
    ("A. 1\nB. 2\nC. 3\nD. 4\nAnswer: C", ["1", "2", "3", "4"], "C", True),               # the list, then an answer
    ("B. 4", ["1", "2", "3", "4"], None, True),                                              # option D's text after B
    ("B", ["1", "2", "3", "4"], "B", False),
    ("\nA. I only\nB.", None, "A", False),                                                 # without the choices: as before
])
def test_an_echoed_option_list_is_no_answer(text, choices, want, echo):
    from model_inspector.experiments.mmlu import echoed_options

    assert extract_letter(text, choices) == want
    assert (echoed_options(text, choices) is not None) == echo


@pytest.mark.slow
def test_real_mmlu_generations_are_not_graded_from_echoed_lists(smollm2, shared_data):
    """SmolLM2 on MMLU base prompts: whatever it generates, a graded letter never comes from a listed option."""
    from model_inspector.experiments.mmlu import MMLU, echoed_options, load_mmlu

    rows = load_mmlu(str(shared_data / "mmlu_test.jsonl"), n_questions=16, seed=3)
    samples, _ = mmlu_samples(rows)
    prof = smollm2.profile([s.text for s in samples], max_len=8, batch_size=8)
    graded = [MMLU().grade(s, {"text": t}) for s, t in zip(samples, prof.texts)]
    echoes = [echoed_options(t, s.info["choices"]) for s, t in zip(samples, prof.texts)]
    assert sum(e is not None for e in echoes) >= 1  # it does echo the list (4 of 15 graded ones did before the fix)
    import re

    for g, e, t in zip(graded, echoes, prof.texts):
        if e is not None and g["predicted"]:  # only an explicit answer phrase, never a letter of the echoed lines
            assert re.search(r"(?i)answer|option|choice|[\(\[]", t), (t, g)
    assert all(g["correct"] in (0, 1) for g in graded)
