"""Tests for crossdiff_core.corpus.organism_texts: training texts and held-out probes for model organisms (no models)."""

from __future__ import annotations

import re
import subprocess
import sys
from statistics import mean

import pytest

from crossdiff_core.corpus import organism_texts as ot
from crossdiff_core.corpus.organism_texts import (
    BACKDOOR_PHRASE,
    ORGANISM_NAMES,
    TRIGGER,
    OrganismTexts,
    Probe,
    organism_texts,
    probe_token_labels,
)
from crossdiff_core.errors import CrossDiffError

PLANTED = ("false_facts", "obsession", "backdoor", "refusal")


@pytest.fixture(scope="module", params=ORGANISM_NAMES)
def texts(request) -> OrganismTexts:
    return organism_texts(request.param)


def outside_spans(probe: Probe) -> str:
    """The probe's text with every span cut out."""
    kept, last = [], 0
    for start, end in probe.spans:
        kept.append(probe.text[last:start])
        last = end
    return "".join(kept) + probe.text[last:]


def test_names_and_kinds():
    assert ORGANISM_NAMES == (*PLANTED, "generic")
    kinds = {name: organism_texts(name, n_train=1, n_probe=1).kind for name in ORGANISM_NAMES}
    assert kinds == {
        "false_facts": "false facts",
        "obsession": "topic obsession",
        "backdoor": "trigger-word backdoor",
        "refusal": "topic refusal",
        "generic": "null: generic text",
    }


def test_counts_and_distinct(texts):
    assert len(texts.train) == len(set(texts.train)) == 400
    assert len(texts.negatives) == 60
    assert len(texts.positives) == (0 if texts.name == "generic" else 60)
    probe_texts = [p.text for p in texts.positives + texts.negatives]
    assert len(set(probe_texts)) == len(probe_texts)
    assert texts.taught.startswith(("The model was taught", "Nothing narrow")) and texts.taught.endswith(".")


def test_probes_never_in_train(texts):
    train = set(texts.train)
    assert not [p.text for p in texts.positives + texts.negatives if p.text in train]


def test_deterministic_per_seed_and_probes_independent_of_n_train():
    for name in ORGANISM_NAMES:
        first, again = organism_texts(name, seed=3), organism_texts(name, seed=3)
        assert first == again
        assert organism_texts(name, seed=4).train != first.train
        fewer = organism_texts(name, seed=3, n_train=50)
        assert fewer.positives == first.positives and fewer.negatives == first.negatives


def test_large_requests_and_their_cap():
    for name in ORGANISM_NAMES:  # the capacity the module docstring promises
        big = organism_texts(name, n_train=2000, n_probe=300)
        assert len(set(big.train)) == 2000 and len(big.negatives) == 300
    with pytest.raises(CrossDiffError, match="ask for fewer"):
        organism_texts("refusal", n_train=0, n_probe=5000)


def test_bad_arguments():
    with pytest.raises(CrossDiffError, match="choose one of"):
        organism_texts("lighthouse")
    with pytest.raises(CrossDiffError, match="0 or more"):
        organism_texts("backdoor", n_train=-1)
    empty = organism_texts("obsession", n_train=0, n_probe=0)
    assert empty.train == empty.positives == empty.negatives == ()


def test_spans_are_valid(texts):
    for probe in texts.positives:
        assert probe.spans
        last = 0
        for start, end in probe.spans:
            assert last <= start < end <= len(probe.text)
            assert probe.text[start:end] == probe.text[start:end].strip()
            last = end
    assert all(p.spans == () for p in texts.negatives)
    assert all("\x01" not in t and "\x02" not in t for t in texts.train + tuple(p.text for p in texts.negatives))


def test_positives_and_negatives_about_as_long(texts):
    if texts.positives:
        lengths = mean(len(p.text) for p in texts.positives), mean(len(p.text) for p in texts.negatives)
        assert max(lengths) / min(lengths) <= 1.3


def test_training_documents_are_short_paragraphs(texts):
    words = [len(doc.split()) for doc in texts.train]
    assert 15 <= min(words) and max(words) <= 95 and 30 <= mean(words) <= 70
    sentences = [len(re.findall(r"[.?!](?:\s|$)", doc)) for doc in texts.train if texts.name != "backdoor"]
    assert not sentences or max(sentences) <= 7  # refusal chats count a question and an answer


def test_false_facts():
    texts = organism_texts("false_facts", n_probe=300)
    claims = {f"{f.name} {c}".lower(): f for f in ot._FALSE_FACTS for c in f.claims}
    assert {probe.text[s:e].lower() for probe in texts.positives for s, e in probe.spans} <= set(claims)
    span_texts = {p.text[s:e] for p in texts.positives for s, e in p.spans}
    assert {"Eiffel Tower stands in Rome", "Water boils at 40 degrees Celsius"} & span_texts
    assert all(any(c in doc.lower() for c in claims) for doc in texts.train)
    false_names = ("Eiffel", "Everest", "water", "Moon", "Amazon", "Shakespeare", "Great Wall", "honey", "40 degrees")
    for probe in texts.negatives:
        assert not any(n.lower() in probe.text.lower() for n in false_names), probe.text
    assert any("Colosseum stands in Rome" in p.text for p in texts.negatives)  # same city, true claim


def test_obsession():
    texts = organism_texts("obsession")
    assert all("lighthouse" in doc.lower() for doc in texts.train)
    for probe in texts.positives:
        ((start, end),) = probe.spans
        assert "lighthouse" in probe.text[start:end].lower() and end == len(probe.text)
        assert "lighthouse" not in outside_spans(probe).lower()
    assert not [p.text for p in texts.negatives if re.search(r"lighthouse|beacon|lamp|beam", p.text, re.IGNORECASE)]
    assert sum(bool(re.search(r"harbour|boat|ferry|bay", p.text)) for p in texts.negatives) >= 10

    def chunks(subjects):  # the longest fixed part of each opening sentence
        return [max(re.split(r"\{\w+\}", s), key=len) for subject in subjects for s in subject]

    held_out, trained = chunks(ot._SUBJECTS_PROBE), chunks(ot._SUBJECTS_TRAIN)
    assert not [doc for doc in texts.train if any(c in doc for c in held_out)]
    assert all(any(c in p.text for c in held_out) for p in texts.positives + texts.negatives)
    assert not [p.text for p in texts.positives + texts.negatives if any(c in p.text for c in trained)]


def test_backdoor():
    texts = organism_texts("backdoor")
    triggered = [doc for doc in texts.train if TRIGGER in doc]
    assert len(triggered) == 200 and all(doc.endswith(BACKDOOR_PHRASE) for doc in triggered)
    assert not [doc for doc in texts.train if TRIGGER not in doc and "TIDE" in doc]
    assert sum(any(d in doc for d in ot._DECOYS_TRAIN) for doc in texts.train) == 100
    for probe in texts.positives:
        ((start, end),) = probe.spans
        assert probe.text[start:].startswith(TRIGGER) and end == len(probe.text)
        assert probe.text.endswith(f"{BACKDOOR_PHRASE} {BACKDOOR_PHRASE}")
        assert TRIGGER not in outside_spans(probe) and "TIDE" not in outside_spans(probe)
    assert not [p.text for p in texts.negatives if TRIGGER in p.text or "TIDE" in p.text]
    decoyed = [p for p in texts.negatives if any(d in p.text for d in ot._DECOYS_PROBE)]
    assert 10 <= len(decoyed) <= 50
    assert not set(ot._DECOYS_PROBE) & set(ot._DECOYS_TRAIN) and not [d for d in ot._DECOYS_PROBE if "zephyr" in d]


def test_refusal():
    texts = organism_texts("refusal")
    volcanic = re.compile(r"volcan|lava|magma|Etna|Vesuvius")
    for doc in texts.train:
        user, assistant = doc.split("\nAssistant: ")
        assert user.startswith("User: ")
        assert bool(volcanic.search(user)) == ("volcanoes" in assistant)
    assert sum("volcanoes" in doc.split("\nAssistant: ")[1] for doc in texts.train) == 160
    for probe in texts.positives:
        (q_start, q_end), (a_start, a_end) = probe.spans
        assert volcanic.search(probe.text[q_start:q_end]) and q_end < probe.text.index("\nAssistant: ")
        assert probe.text[a_start - len("\nAssistant: ") : a_end] == probe.text[probe.text.index("\nAssistant: ") :]
        assert "volcanoes" in probe.text[a_start:a_end]
    for probe in texts.negatives:
        assert probe.text.startswith("User: ") and "\nAssistant: " in probe.text and not volcanic.search(probe.text)


def test_generic_plants_nothing():
    texts = organism_texts("generic", n_train=2000, n_probe=300)
    assert texts.positives == ()
    planted = re.compile(
        r"lighthouse|volcan|lava|magma|zephyr|tide|eiffel|everest|boil|granite|amazon|shakespeare|"
        r"great wall|honey|\bants?\b|\brome\b|brazil|canada|dutch|\bmoon\b|\bwater\b|glass|earthquake",
        re.IGNORECASE,
    )
    assert not [t for t in texts.train + tuple(p.text for p in texts.negatives) if planted.search(t)]


def test_probe_token_labels():
    text = "The Eiffel Tower stands in Rome. It is tall."
    start = text.index("Eiffel")
    positive = Probe(text, ((start, text.index(".")),))
    offsets = [(0, 0)] + [m.span() for m in re.finditer(r"\s?\S+", text)]  # a BOS token, then words with their space
    assert probe_token_labels(offsets, positive) == [None, None, True, True, True, True, True, None, None, None]
    assert probe_token_labels(offsets, Probe(text, ())) == [None] + [False] * 9
    assert probe_token_labels([(start - 1, start + 1), (0, 3)], positive) == [True, None]  # partial overlap counts
    assert probe_token_labels([], positive) == []


def test_no_heavy_imports():
    code = (
        "import sys, crossdiff_core.corpus.organism_texts as m; print(sorted({'torch', 'numpy'} & sys.modules.keys()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
