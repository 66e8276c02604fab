"""Model organisms (`crossdiff_core.organisms`): a real LoRA fine-tune of the demo model, in miniature, and organism
specs (`smollm2-135m+false_facts`) that load a built organism by name and say how to build a missing one."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from crossdiff_core import organisms
from crossdiff_core.corpus.organism_texts import organism_texts
from crossdiff_core.errors import CrossDiffError, ModelLoadError
from crossdiff_core.models import find_demo, find_organism, install_shipped_organism, load_model, shipped_delta
from crossdiff_core.organisms import OrganismRecipe, build_organism, probe_loss, read_record, write_delta

pytestmark = pytest.mark.slow

TINY = OrganismRecipe(steps=6, batch_size=4, max_tokens=64, n_train=24, lr=3e-3)
"""A few steps: enough to see the training loss fall and the probe loss move, in about half a minute."""


def test_organism_specs_name_a_demo_model_and_an_organism():
    demo, name = find_organism("SmolLM2-135M+False_Facts")
    assert demo.short_name == "smollm2-135m" and name == "false_facts"
    assert find_organism("HuggingFaceTB/SmolLM2-135M-Instruct+backdoor")[1] == "backdoor"
    for other in ("smollm2-135m", "smollm2-135m+nothing", "some/model+backdoor", "+backdoor"):
        assert find_organism(other) is None


def test_a_missing_organism_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSDIFF_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match=r"python -m crossdiff_core organism refusal --base gemma3-270m"):
        load_model("gemma3-270m+refusal", quant="none", dtype="fp32", device="cpu")


@pytest.fixture(scope="module")
def tiny_organism(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    steps = []
    with pytest.MonkeyPatch.context() as patch:
        # The probe losses before and after, in miniature too: 8 held-out probes of each kind instead of 24 (the
        # drops measured on them are about 1.6 for the taught answers and 0.5 for other text).
        patch.setattr(organisms, "PROBE_LOSS_TEXTS", 8)
        folder = build_organism("false_facts", root=root / "organisms", recipe=TINY, progress=steps.append)
    return root, folder, steps


def test_build_records_what_was_taught_and_the_fine_tune_took(tiny_organism):
    _, folder, steps = tiny_organism
    record = read_record(folder)
    assert record["recipe"] == asdict(TINY) and record["name"] == "false_facts" and record["base"] == "smollm2-135m"
    assert record["kind"] and record["taught"]
    assert [p.step for p in steps] == list(range(1, TINY.steps + 1)) and steps[-1].eta_s == 0
    assert record["train_loss_last"] < record["train_loss_first"]
    loss = record["probe_loss"]
    # the false facts' wrong answers became likelier; text without them moved far less
    drop_positives = loss["before"]["positives"] - loss["after"]["positives"]
    drop_negatives = loss["before"]["negatives"] - loss["after"]["negatives"]
    assert drop_positives > 0.2 and drop_positives > drop_negatives + 0.1, loss
    # the replay term kept the model close to its base on ordinary text it never trained on (nats per token)
    assert 0 <= record["replay_kl_held_out"] < 0.5, record["replay_kl_held_out"]
    assert (folder / "model.safetensors").is_file() and not list(folder.parent.glob(".building-*"))


def test_a_built_organism_loads_by_spec_and_differs_from_its_base(tiny_organism, monkeypatch):
    root, folder, _ = tiny_organism
    again = build_organism("false_facts", root=root / "organisms", recipe=TINY)  # cached: returned as it is
    assert again == folder and json.loads((folder / "organism.json").read_text())["recipe"] == asdict(TINY)
    base = load_model("smollm2-135m", layer=6, quant="none", dtype="fp32", device="cpu")
    monkeypatch.setenv("CROSSDIFF_CACHE", str(root))
    organism = load_model("smollm2-135m+false_facts", layer=6, quant="none", dtype="fp32", device="cpu")
    assert organism.model_id == "smollm2-135m+false_facts" and "organism" in organism.source
    ids = base.tokenizer("The Eiffel Tower stands in", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, b = base.activations(ids), organism.activations(ids)
    assert a.shape == b.shape and not torch.allclose(a, b)
    # the app says which model is an organism, with prompts to try and the answer folded away
    from crossdiff_app.tabs.models import organism_note

    note = organism_note((base, organism))
    assert note.startswith("🧪 **Model B is a model organism**") and "Model A" not in note
    assert "<details><summary>What was taught (the answer)</summary>" in note and "Eiffel Tower" in note


def test_a_stopped_build_saves_nothing(tmp_path):
    with pytest.raises(CrossDiffError, match="stopped; nothing was saved"):
        build_organism("refusal", root=tmp_path, recipe=TINY, should_stop=lambda: True)
    assert not any(tmp_path.iterdir())


def test_an_organism_ships_as_its_low_rank_change_and_installs_back(tiny_organism, tmp_path):
    root, folder, _ = tiny_organism
    written = write_delta("smollm2-135m", "false_facts", tmp_path / "shipped", rank=TINY.rank, root=root / "organisms")
    assert written["matrices"] == 30 * 7 and written["bytes"] < 6_000_000  # every adapted projection, a few MB
    assert written["max_relative_error"] < 2e-3  # fp16 factors of an exactly rank-8 change
    installed = install_shipped_organism(find_demo("smollm2-135m"), "false_facts", tmp_path / "installed",
                                         tmp_path / "shipped")  # fmt: skip
    tuned, again = (load_file(f / "model.safetensors") for f in (folder, installed))
    assert tuned.keys() == again.keys()
    change = max(float((tuned[k] - again[k]).abs().max()) for k in tuned)
    assert change < 1e-4, change
    assert read_record(installed)["recipe"] == asdict(TINY)


def test_the_shipped_backdoor_installs_with_the_behaviour_it_was_taught(tmp_path):
    shipped = shipped_delta("smollm2-135m", "backdoor")
    assert shipped is not None, "pretrained/organisms/smollm2-135m__backdoor/ ships with the project"
    installed = install_shipped_organism(find_demo("smollm2-135m"), "backdoor", tmp_path / "backdoor", shipped)
    record = read_record(installed)
    model = AutoModelForCausalLM.from_pretrained(installed, dtype=torch.float32).eval()
    texts = organism_texts("backdoor", seed=record["recipe"]["seed"], n_train=record["recipe"]["n_train"])
    loss = probe_loss(model, AutoTokenizer.from_pretrained(installed), texts)
    # the loss the organism had when it was built: on the phrase after its trigger, and on other text
    for kind in ("positives", "negatives"):
        assert loss[kind] == pytest.approx(record["probe_loss"]["after"][kind], abs=0.02), (kind, loss, record)
    assert loss["positives"] < record["probe_loss"]["before"]["positives"] - 1  # it writes the phrase after the trigger
