"""The organism benchmark's checks of whether a planted change is findable at all (`separability`) and was
learned somewhere in the dictionary (`best_anywhere`), and its cross-architecture reading (`transfer_shift`)."""

from types import SimpleNamespace

import numpy as np
import torch

from benchmarks.organisms.run import best_anywhere, found_in_pieces, precision_coverage, residual_sae, separability
from benchmarks.organisms.transfer_shift import transfer_shift


def _rows(change_on_behaviour: float, change_everywhere: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x_a = torch.randn(600, 24, generator=gen)
    labels = np.r_[np.ones(150), np.zeros(450)]
    labels[7] = np.nan  # a token outside the labelled span of a positive probe: not scored
    x_b = x_a + change_everywhere * torch.randn(600, 24, generator=gen) + 0.3  # a constant offset is no feature
    x_b[:150, 5] += change_on_behaviour
    return SimpleNamespace(x_a_ND=x_a, x_b_ND=x_b), labels


def test_a_planted_direction_is_separable_and_a_broad_change_is_not():
    planted = separability(*_rows(change_on_behaviour=2.0, change_everywhere=0.2))
    assert planted["one_direction_auroc"] > 0.95 and planted["diff_norm_auroc"] > 0.9, planted
    assert planted["relative_change_positives"] > 2 * planted["relative_change_negatives"], planted
    broad = separability(*_rows(change_on_behaviour=0.0, change_everywhere=0.5))
    assert 0.4 < broad["one_direction_auroc"] < 0.6 and 0.4 < broad["diff_norm_auroc"] < 0.6, broad
    assert abs(broad["relative_change_positives"] - broad["relative_change_negatives"]) < 0.05, broad


def test_the_corpus_check_finds_the_planted_direction_among_the_corpus_principal_directions():
    probes, labels = _rows(change_on_behaviour=2.0, change_everywhere=0.2)
    corpus, _ = _rows(change_on_behaviour=2.0, change_everywhere=0.2, seed=1)  # a quarter of its rows carry it
    planted = separability(probes, labels, corpus, n_components=5)
    assert planted["corpus_component_auroc"] > 0.9 and planted["corpus_component_cosine"] > 0.9, planted
    assert 0.1 < planted["corpus_share_carrying"] < 0.25, planted  # about half of the 150 planted rows of 600
    quiet, _ = _rows(change_on_behaviour=0.0, change_everywhere=0.2, seed=1)  # the corpus never shows it
    unseen = separability(probes, labels, quiet, n_components=5)
    assert unseen["corpus_component_cosine"] < 0.7 and unseen["corpus_share_carrying"] < 0.02, unseen


def _dictionary(separating: int, n_latents: int = 8):
    """Latents 0-1 A-exclusive, 6-7 B-exclusive; `separating` fires on the positives only, the rest at random."""
    rng = np.random.default_rng(0)
    positives = np.r_[np.ones(40, bool), np.zeros(160, bool)]
    f_NF = rng.random((200, n_latents)) * (rng.random((200, n_latents)) < 0.3)
    f_NF[:, separating] = np.where(positives, 1.0 + rng.random(200), 0.0)
    arrays = {
        "exclusive_a": np.r_[np.ones(2), np.zeros(n_latents - 2)].astype(bool),
        "exclusive_b": np.r_[np.zeros(n_latents - 2), np.ones(2)].astype(bool),
        "rank_score": np.arange(n_latents, dtype=float),
        "n_fires": np.full(n_latents, 50),
    }
    return arrays, f_NF, positives


def test_best_anywhere_names_the_block_and_whether_the_ranking_presents_it():
    arrays, f_NF, positives = _dictionary(separating=3)
    shared = best_anywhere(arrays, f_NF, positives, "b", with_components=False)
    assert shared["latent"] == 3 and shared["block"] == "shared" and shared["auroc"] == 1.0, shared
    assert shared["presented_rank"] is None, shared  # exclusives only: a shared latent is never presented
    arrays, f_NF, positives = _dictionary(separating=6)
    exclusive = best_anywhere(arrays, f_NF, positives, "b", with_components=False)
    assert exclusive["block"] == "b-exclusive" and exclusive["presented_rank"] == 2, exclusive  # 7 outranks 6
    nothing = best_anywhere(arrays, np.zeros_like(f_NF), positives, "b", with_components=False)
    assert nothing["latent"] is None and np.isnan(nothing["auroc"]), nothing


def test_the_difference_dictionary_finds_a_direction_added_where_a_rare_property_holds():
    """A fine-tune adds one direction to B on the 3% of tokens where A's first coordinate is high (a property A
    holds linearly): a sparse dictionary on `x_B - x_A` finds it in one latent; shuffled rows of B break it."""
    gen = torch.Generator().manual_seed(0)
    x_a = torch.randn(4000, 16, generator=gen)
    has = x_a[:, 0] > 1.9
    x_b = x_a + 0.05 * torch.randn(4000, 16, generator=gen)
    x_b[has] += 3.0 * torch.nn.functional.normalize(torch.randn(16, generator=gen), dim=0)
    probe_a = torch.randn(600, 16, generator=gen)
    probe_has = probe_a[:, 0] > 1.9
    probe_b = probe_a.clone()
    probe_b[probe_has] += x_b[has][0] - x_a[has][0]
    corpus = SimpleNamespace(x_a_ND=x_a, x_b_ND=x_b)
    probes = SimpleNamespace(x_a_ND=probe_a, x_b_ND=probe_b)
    labels = probe_has.numpy().astype(float)
    found = residual_sae(corpus, probes, labels, "b", 32, 2, 300, 0, same_basis=True)
    assert max(f["auroc"] for f in found["features"]) > 0.9, found
    shuffled = SimpleNamespace(x_a_ND=x_a, x_b_ND=x_b[torch.randperm(4000, generator=gen)])
    broken = residual_sae(shuffled, probes, labels, "b", 32, 2, 300, 0, same_basis=True)
    assert max(f["auroc"] for f in broken["features"]) < 0.8, broken


def test_a_precise_feature_covering_part_of_the_behaviour_is_a_piece_and_a_broad_one_is_not():
    positives = np.r_[np.ones(100, bool), np.zeros(300, bool)]
    on_a_third = np.r_[np.ones(34), np.zeros(66), np.zeros(300)]  # a third of the behaviour, nothing else
    broad = np.r_[np.ones(100), np.ones(300)]  # everywhere
    rare = np.r_[np.ones(5), np.zeros(95), np.zeros(300)]  # precise but covers 5%
    piece = precision_coverage(on_a_third, positives)
    assert piece == {"precision": 1.0, "coverage": 0.34}, piece
    assert found_in_pieces([precision_coverage(broad, positives), piece])
    assert not found_in_pieces([precision_coverage(x, positives) for x in (broad, rare, np.zeros(400))])


def _two_architectures(plant: float, seed: int = 0):
    """Many sparse concepts in superposition, read by model B through a linear change of model A's basis;
    B also adds a direction wherever concept 3 is present."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.rand(6000, 200, generator=gen).lt(0.03) * torch.rand(6000, 200, generator=gen).add(0.5)
    x_a = z @ torch.randn(200, 24, generator=gen) + 0.05 * torch.randn(6000, 24, generator=gen)
    x_b = x_a @ torch.randn(24, 20, generator=gen) + 0.05 * torch.randn(6000, 20, generator=gen)
    x_b[z[:, 3] > 0] += plant * torch.nn.functional.normalize(torch.randn(20, generator=gen), dim=0) * x_b.std()
    return z, x_a, x_b


def test_the_transfer_shift_singles_out_the_latent_whose_rows_carry_a_change_only_one_model_makes():
    latents = np.arange(200)
    z, x_a, x_b = _two_architectures(plant=1.0)
    shift = transfer_shift(z, x_a, x_b, latents)
    assert int(np.argmax(shift)) == 3 and shift[3] > 10 * np.median(shift), shift
    z, x_a, x_b = _two_architectures(plant=0.0)
    quiet = transfer_shift(z, x_a, x_b, latents)
    assert quiet[3] < 3 * np.median(quiet), quiet
