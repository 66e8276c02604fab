"""Per-latent accumulators: transfer ridge R², Latent Scaling against brute force, top contexts, histograms."""

from __future__ import annotations

import numpy as np
import torch

from crossdiff_core.analysis.scores import other_over_own
from crossdiff_core.analysis.stats import MIN_TEST_FIRES, ActivationStats, LatentScaling, TransferRidge


def test_ridge_r2_is_high_for_a_linear_latent_and_low_for_noise():
    gen = torch.Generator().manual_seed(0)
    x_ND = torch.randn(2000, 16, generator=gen)
    linear_N = (x_ND @ torch.randn(16, generator=gen)).relu()
    noise_N = torch.rand(2000, generator=gen)
    f_NF = torch.stack([linear_N, noise_N], 1)
    test_N = torch.arange(2000) % 4 == 3
    ridge = TransferRidge(16, 2)
    for chunk in range(0, 2000, 500):  # chunking must not matter
        ridge.add(x_ND[chunk : chunk + 500], f_NF[chunk : chunk + 500], test_N[chunk : chunk + 500])
    r2 = ridge.r2(alpha=1e-3)
    assert r2[0] > 0.6, r2
    assert r2[1] < 0.05, r2


def test_ridge_r2_is_nan_without_test_variance():
    ridge = TransferRidge(4, 1)
    ridge.add(torch.randn(40, 4), torch.zeros(40, 1), torch.arange(40) % 4 == 3)
    assert torch.isnan(ridge.r2(0.1)).all()


def test_ridge_r2_is_nan_for_a_latent_that_fired_on_too_few_test_rows():
    """A latent linear in x still gets no R² when the test split saw it fire only twice."""
    gen = torch.Generator().manual_seed(3)
    x_ND = torch.randn(400, 8, generator=gen)
    test_N = torch.arange(400) % 4 == 3
    linear_N = (x_ND @ torch.randn(8, generator=gen) + 10).clamp_min(0.1)
    f_NF = torch.zeros(400, 2)
    for latent, n_test_fires in ((0, 2), (1, MIN_TEST_FIRES)):
        fires_N = ~test_N
        fires_N[torch.nonzero(test_N).squeeze(1)[:n_test_fires]] = True
        f_NF[:, latent] = torch.where(fires_N, linear_N, 0.0)
    ridge = TransferRidge(8, 2)
    ridge.add(x_ND, f_NF, test_N)
    r2 = ridge.r2(alpha=1e-3)
    assert torch.isnan(r2[0]) and torch.isfinite(r2[1])
    assert torch.isfinite(ridge.r2(alpha=1e-3, min_test_fires=2)[0])


def test_latent_scaling_matches_brute_force_least_squares():
    gen = torch.Generator().manual_seed(1)
    n, d, F = 300, 8, 3
    W_dec_LD = torch.randn(F, d, generator=gen)
    f_NF = torch.rand(n, F, generator=gen) * (torch.rand(n, F, generator=gen) > 0.5)
    x_ND = torch.randn(n, d, generator=gen)
    x_hat_ND = f_NF @ W_dec_LD + 0.1 * torch.randn(n, d, generator=gen)
    b_dec_D = 0.1 * torch.randn(d, generator=gen)
    scaling = LatentScaling(W_dec_LD, slice(0, F), F)
    scaling.add(x_ND[:100], x_hat_ND[:100], b_dec_D, f_NF[:100])
    scaling.add(x_ND[100:], x_hat_ND[100:], b_dec_D, f_NF[100:])
    s_error, s_recon = scaling.scales()
    for j in range(F):
        u_D = W_dec_LD[j] / W_dec_LD[j].norm()
        f_N = f_NF[:, j]
        for target_ND, got in (
            (x_ND - x_hat_ND + f_N[:, None] * W_dec_LD[j], s_error[j]),
            (x_hat_ND - b_dec_D, s_recon[j]),
        ):
            basis_ND = f_N[:, None] * u_D  # argmin_s Σ‖t − s f u‖²
            expected = (basis_ND * target_ND).sum() / (basis_ND * basis_ND).sum()
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_latent_scaling_flags_shrinkage_in_the_other_model():
    """A latent whose B decoder was shrunk while B's activations still carry its direction gets a high ν^ε."""
    gen = torch.Generator().manual_seed(2)
    n, d = 500, 6
    f_N = torch.rand(n, generator=gen) * 3
    d_a, u_b = torch.randn(d, generator=gen), torch.nn.functional.normalize(torch.randn(d, generator=gen), dim=0)
    d_b_shrunk = 0.01 * u_b
    x_a = f_N[:, None] * d_a
    x_b = f_N[:, None] * (0.8 * d_a.norm()) * u_b  # B holds the concept at 80% strength
    scales = []
    for W, x in ((d_a[None], x_a), (d_b_shrunk[None], x_b)):
        s = LatentScaling(W, slice(0, 1), 1)
        s.add(x, f_N[:, None] * W, torch.zeros(d), f_N[:, None])
        scales.append(s.scales()[0].numpy())
    nu = other_over_own(scales[0], scales[1], np.zeros(1, dtype=np.int8))
    assert 0.7 < nu[0] < 0.9
    assert float(d_b_shrunk.norm() / d_a.norm()) < 0.01  # the decoder norms alone would call it exclusive


def test_activation_stats_keep_one_peak_per_window_and_sparse_values():
    stats = ActivationStats(n_latents=2, top_n=2)
    f = torch.tensor([[0.0, 1.0], [3.0, 0.0], [1.0, 0.0], [2.0, 5.0], [0.5, 0.0]])
    windows = torch.tensor([0, 0, 1, 1, 2])
    stats.add(f[:3], windows[:3])
    stats.add(f[3:], windows[3:])
    assert stats.count_F.tolist() == [4, 2]
    assert stats.top_act_NF[:, 0].tolist() == [3.0, 2.0] and stats.top_window_NF[:, 0].tolist() == [0, 1]
    assert stats.top_row_NF[:, 0].tolist() == [1, 3]
    assert stats.top_window_NF[:, 1].tolist() == [1, 0]
    rows, latents, values = stats.sparse()
    assert latents.tolist() == [0, 0, 0, 0, 1, 1] and rows.tolist() == [1, 2, 3, 4, 0, 3]
    assert values.tolist() == [3.0, 1.0, 2.0, 0.5, 1.0, 5.0]
    assert stats.window_count_F.tolist() == [3, 2]  # window 1 spans both chunks and counts once
    # latent 0 (max 3): 3 → last bin, 2 → [2, 3), 1 → [1, 2), 0.5 → [0, 1); latent 1 (max 5): 1 → [0, 5/3), 5 → last
    assert stats.histogram(3).tolist() == [[1, 1, 2], [1, 0, 1]]
    assert stats.histogram(3).sum(1).tolist() == stats.count_F.tolist()
