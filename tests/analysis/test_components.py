"""`one_model_components` on hand-built crosscoders whose answer is known.

Model B's decoder is model A's through a fixed linear map, each latent with its own norm ratio,
and one latent gets an extra vector in one model. That latent must be attributed to that model and
rank first there by component fraction, with a residual pointing along the planted vector; the
others must show (almost) no component.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

from crossdiff_core.analysis.components import component_residuals, one_model_components, rank_components
from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig

D_A, D_B, PLANTED = 16, 24, 7


def planted_crosscoder(exclusive: int = 0, orthogonal_map: bool = False, side: str = "b", seed: int = 0):
    """Return (crosscoder, planted vector): W_dec_B = W_dec_A @ M (per-latent norm ratios), plus a vector on PLANTED.

    The vector, as long as the latent's decoder row in model `side`, is added to that row. On B it is
    orthogonal to every image of the map (nothing in A can predict it); on A it is random.
    """
    generator = torch.Generator().manual_seed(seed)
    config = CrossCoderConfig(d_a=D_A, d_b=D_B, dict_size=120, exclusive_a=exclusive, exclusive_b=exclusive, k=4)
    crosscoder = CrossCoder(config, seed=seed)
    n_a, n_shared = crosscoder.n_a, crosscoder.n_shared
    if orthogonal_map:
        map_AB = torch.linalg.qr(torch.randn(D_B, D_A, generator=generator)).Q.T
    else:
        map_AB = torch.randn(D_A, D_B, generator=generator) / D_A**0.5
    dec_a_FD = torch.randn(config.dict_size, D_A, generator=generator)
    dec_a_FD *= torch.exp(0.3 * torch.randn(config.dict_size, 1, generator=generator))
    dec_b_FD = dec_a_FD @ map_AB * torch.exp(0.3 * torch.randn(config.dict_size, 1, generator=generator))
    if side == "b":
        image_basis = torch.linalg.qr(map_AB.T).Q  # model B directions that the map can produce
        planted = torch.randn(D_B, generator=generator)
        planted -= image_basis @ (image_basis.T @ planted)
    else:
        planted = torch.randn(D_A, generator=generator)
    target_FD = dec_b_FD if side == "b" else dec_a_FD
    planted *= target_FD[PLANTED].norm() / planted.norm()
    target_FD[PLANTED] += planted
    with torch.no_grad():
        crosscoder.W_dec_a.copy_(dec_a_FD[: n_a + n_shared])
        crosscoder.W_dec_b.copy_(dec_b_FD[n_a:])
    return crosscoder, planted


@pytest.mark.parametrize(("side", "orthogonal_map"), [("b", False), ("b", True), ("a", False)])
def test_planted_component_ranks_first_on_its_side_with_its_direction(side, orthogonal_map):
    crosscoder, planted = planted_crosscoder(orthogonal_map=orthogonal_map, side=side)
    components = one_model_components(crosscoder)
    assert components["latents"].tolist() == list(range(120)) and bool(components["fitted"].all())
    assert bool(components["component_in_b"][PLANTED]) == (side == "b")
    ranked, fraction = rank_components(components, side)
    assert int(ranked[0]) == PLANTED
    assert fraction[0] == pytest.approx(2**-0.5, abs=0.05)  # as long as the rest, and orthogonal to it
    assert float(fraction[1]) < 0.2
    residual = component_residuals(components, side, ranked[:1])[0]
    assert float(nnf.cosine_similarity(residual, planted, dim=0)) > 0.98
    other = "a" if side == "b" else "b"
    ranked_other, fraction_other = rank_components(components, other)  # the mirror image is not ranked there
    assert PLANTED not in ranked_other.tolist() and float(fraction_other[0]) < 0.25
    assert components["map_a_to_b"].shape == (D_A, D_B) and components["map_b_to_a"].shape == (D_B, D_A)


def test_shuffled_pairs_hide_the_planted_component():
    """With B's rows paired to the wrong latents, no linear map exists and every latent looks like a component."""
    crosscoder, _ = planted_crosscoder()
    with torch.no_grad():
        crosscoder.W_dec_b.copy_(crosscoder.W_dec_b[torch.randperm(120, generator=torch.Generator().manual_seed(1))])
    _, fraction = rank_components(one_model_components(crosscoder), "b")
    assert float(fraction[10]) > 0.6


def test_dfc_scores_only_shared_latents_and_fits_only_alive_two_sided_ones():
    crosscoder, _ = planted_crosscoder(exclusive=6)
    assert crosscoder.n_a == 6 and crosscoder.n_b == 6
    with torch.no_grad():
        crosscoder.W_dec_b[20 - 6].mul_(1e-3)  # shared latent 20 now writes to A only: one-sided, not fitted
    alive_F = torch.ones(120, dtype=torch.bool)
    alive_F[30] = False
    components = one_model_components(crosscoder, alive_F)
    assert components["latents"].tolist() == list(range(6, 114))
    fitted = dict(zip(components["latents"].tolist(), components["fitted"].tolist()))
    assert not fitted[20] and not fitted[30] and fitted[PLANTED]
    ranked, _ = rank_components(components, "b")
    assert int(ranked[0]) == PLANTED and 20 not in ranked.tolist() and 30 not in ranked.tolist()
    with pytest.raises(ValueError, match="both models"):
        component_residuals(components, "b", torch.tensor([2]))
    with pytest.raises(ValueError, match="'a' or 'b'"):
        rank_components(components, "c")
