"""Per-latent statistics accumulated over a stream of paired activations (one chunk at a time).

Three accumulators feed the feature index; each takes chunks of rows and returns arrays of length F:

- `ActivationStats`: firing counts (tokens and distinct windows), mean and max activation, each
  latent's top contexts (one per window: the window's peak), every non-zero activation in sparse form
  (for highlighting) and a histogram of each latent's activations.
- `TransferRidge`: how well a linear map from one model's activations predicts each latent
  (ridge regression, fitted on the train rows, R² on the test rows; not measured for a latent that
  fired on fewer than `MIN_TEST_FIRES` test rows).
- `LatentScaling`: the Latent Scaling scalars of Minder et al. (2025), adapted to two models of
  different widths (formulas in `LatentScaling` and in SCORES.md).

All sums run in float64 in a fixed order, so the same chunks give bit-identical results.
"""

from __future__ import annotations

import torch

MIN_TEST_FIRES = 3
"""Transfer R² is reported as NaN for a latent that fired on fewer test rows than this (too few to measure)."""


class ActivationStats:
    """Firing counts, mean/max activation, top contexts per latent, and the sparse activations of all rows."""

    def __init__(self, n_latents: int, top_n: int):
        self.n_rows = 0
        self.count_F = torch.zeros(n_latents, dtype=torch.int64)
        self.window_count_F = torch.zeros(n_latents, dtype=torch.int64)  # distinct windows where it fired
        self._last_window_F = torch.full((n_latents,), -1, dtype=torch.int64)
        self.sum_F = torch.zeros(n_latents, dtype=torch.float64)
        self.max_F = torch.zeros(n_latents, dtype=torch.float32)
        self.top_act_NF = torch.zeros(top_n, n_latents, dtype=torch.float32)
        self.top_window_NF = torch.full((top_n, n_latents), -1, dtype=torch.int64)
        self.top_row_NF = torch.full((top_n, n_latents), -1, dtype=torch.int64)
        self._sparse_rows: list[torch.Tensor] = []
        self._sparse_latents: list[torch.Tensor] = []
        self._sparse_values: list[torch.Tensor] = []

    def add(self, f_NF: torch.Tensor, window_N: torch.Tensor) -> None:
        """Add latent activations `[N, F]` of rows from windows `window_N` (non-decreasing); returns None."""
        f_NF = f_NF.float().cpu()
        self.count_F += (f_NF > 0).sum(0)
        self.sum_F += f_NF.double().sum(0)
        if len(f_NF):
            self.max_F = torch.maximum(self.max_F, f_NF.max(0).values)
        rows_N, latents_N = torch.nonzero(f_NF, as_tuple=True)
        self._sparse_rows.append(rows_N + self.n_rows)
        self._sparse_latents.append(latents_N)
        self._sparse_values.append(f_NF[rows_N, latents_N])
        windows = torch.unique_consecutive(window_N)
        peaks, windows_out, rows_out = [], [], []
        for window in windows.tolist():
            rows = torch.nonzero(window_N == window).squeeze(1)
            values_F, arg_F = f_NF[rows].max(0)
            new_F = (values_F > 0) & (self._last_window_F != window)  # a window may continue from the last chunk
            self.window_count_F += new_F
            self._last_window_F[new_F] = window
            peaks.append(values_F)
            windows_out.append(torch.full_like(arg_F, window))
            rows_out.append(rows[arg_F] + self.n_rows)
        if peaks:
            self._merge_top(torch.stack(peaks), torch.stack(windows_out), torch.stack(rows_out))
        self.n_rows += len(f_NF)

    def _merge_top(self, act_WF: torch.Tensor, window_WF: torch.Tensor, row_WF: torch.Tensor) -> None:
        """Keep the `top_n` strongest window peaks per latent (earlier windows win ties)."""
        act = torch.cat([self.top_act_NF, act_WF])
        window = torch.cat([self.top_window_NF, window_WF])
        row = torch.cat([self.top_row_NF, row_WF])
        act = torch.where(window >= 0, act, torch.full_like(act, -1.0))
        order = torch.argsort(-act, dim=0, stable=True)[: self.top_act_NF.shape[0]]
        self.top_act_NF = act.gather(0, order).clamp_min(0)
        self.top_window_NF = window.gather(0, order)
        self.top_row_NF = row.gather(0, order)
        fired = self.top_act_NF > 0
        self.top_window_NF = torch.where(fired, self.top_window_NF, -1)
        self.top_row_NF = torch.where(fired, self.top_row_NF, -1)

    def frequency(self) -> torch.Tensor:
        """Return the fraction of rows on which each latent fired `[F]`."""
        return self.count_F.double() / max(self.n_rows, 1)

    def mean_when_active(self) -> torch.Tensor:
        """Return each latent's mean activation over the rows where it fired (0 if it never did) `[F]`."""
        return torch.where(self.count_F > 0, self.sum_F / self.count_F.clamp_min(1), 0.0)

    def sparse(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return all non-zero activations as `(rows, latents, values)`, sorted by latent then row."""
        rows = torch.cat(self._sparse_rows) if self._sparse_rows else torch.zeros(0, dtype=torch.int64)
        latents = torch.cat(self._sparse_latents) if self._sparse_latents else torch.zeros(0, dtype=torch.int64)
        values = torch.cat(self._sparse_values) if self._sparse_values else torch.zeros(0)
        order = torch.argsort(latents * max(self.n_rows, 1) + rows, stable=True)
        return rows[order], latents[order], values[order]

    def histogram(self, n_bins: int) -> torch.Tensor:
        """Return int64 `[F, n_bins]`: each latent's positive activations counted in `n_bins` equal bins of (0, max].

        Bin `b` holds activations in `[b, b + 1) · max_activation / n_bins` (the maximum goes in the last bin),
        so a latent's counts sum to `count_F`, and a dead latent's are all 0.
        """
        n_latents = len(self.count_F)
        latents = torch.cat(self._sparse_latents) if self._sparse_latents else torch.zeros(0, dtype=torch.int64)
        values = torch.cat(self._sparse_values) if self._sparse_values else torch.zeros(0)
        fired = values > 0
        latents, values = latents[fired], values[fired].double()
        scaled = values / self.max_F.double()[latents] * n_bins
        bins = scaled.floor().long().clamp(0, n_bins - 1)
        counts = torch.bincount(latents * n_bins + bins, minlength=n_latents * n_bins)
        return counts.reshape(n_latents, n_bins)


class TransferRidge:
    """Ridge regression from one model's activations to every latent's activation, with a held-out test split.

    Train and test rows are accumulated separately as sufficient statistics (`Σx xᵀ`, `Σx fᵀ`, `Σx`, `Σf`,
    `Σf²`), so memory is `O(d² + d·F)` whatever the number of rows.
    """

    def __init__(self, d: int, n_latents: int):
        self._parts = {split: _RegressionSums(d, n_latents) for split in ("train", "test")}

    def add(self, x_ND: torch.Tensor, f_NF: torch.Tensor, test_N: torch.Tensor) -> None:
        """Add rows (normalized activations `x_ND`, latents `f_NF`), `test_N` marking the test rows; returns None."""
        x_ND, f_NF = x_ND.double().cpu(), f_NF.double().cpu()
        self._parts["train"].add(x_ND[~test_N], f_NF[~test_N])
        self._parts["test"].add(x_ND[test_N], f_NF[test_N])

    def r2(self, alpha: float, min_test_fires: int = MIN_TEST_FIRES) -> torch.Tensor:
        """Return the test-split R² of each latent `[F]`, NaN where it cannot be measured.

        The fit is `f ≈ x W + b` on centred train rows with penalty `λ = alpha · tr(Cov(x)) / d`. NaN where
        the test rows have no variance, or the latent fired on fewer than `min_test_fires` of them: an R²
        from one or two firing rows says nothing, yet would read as "no linear trace in the other model".
        """
        train, test = self._parts["train"], self._parts["test"]
        if train.n < 2 or test.n < 2:
            return torch.full((train.xf.shape[1],), float("nan"))
        mean_x = train.x / train.n
        mean_f = train.f / train.n
        cov_xx = train.xx / train.n - torch.outer(mean_x, mean_x)
        cov_xf = train.xf / train.n - torch.outer(mean_x, mean_f)
        d = cov_xx.shape[0]
        penalty = alpha * torch.trace(cov_xx).clamp_min(1e-12) / d
        W_DF = torch.linalg.solve(cov_xx + penalty * torch.eye(d, dtype=cov_xx.dtype), cov_xf)
        b_F = mean_f - mean_x @ W_DF
        # Σ_test (f − xW − b)² from the test sums.
        fit_sq_F = (W_DF * (test.xx @ W_DF)).sum(0) + 2 * b_F * (test.x @ W_DF) + test.n * b_F**2
        cross_F = (W_DF * test.xf).sum(0) + b_F * test.f
        sse_F = test.ff - 2 * cross_F + fit_sq_F
        sst_F = test.ff - test.f**2 / test.n
        ok_F = (sst_F > 1e-12 * test.n) & (test.fires >= min_test_fires)
        return torch.where(ok_F, 1 - sse_F / sst_F.clamp_min(1e-300), float("nan")).float()


class _RegressionSums:
    """Sufficient statistics of one split for a multi-output linear regression."""

    def __init__(self, d: int, n_latents: int):
        self.n = 0
        self.xx = torch.zeros(d, d, dtype=torch.float64)
        self.xf = torch.zeros(d, n_latents, dtype=torch.float64)
        self.x = torch.zeros(d, dtype=torch.float64)
        self.f = torch.zeros(n_latents, dtype=torch.float64)
        self.ff = torch.zeros(n_latents, dtype=torch.float64)
        self.fires = torch.zeros(n_latents, dtype=torch.int64)

    def add(self, x_ND: torch.Tensor, f_NF: torch.Tensor) -> None:
        """Add rows to the sums; returns None."""
        self.n += len(x_ND)
        self.xx += x_ND.T @ x_ND
        self.xf += x_ND.T @ f_NF
        self.x += x_ND.sum(0)
        self.f += f_NF.sum(0)
        self.ff += (f_NF**2).sum(0)
        self.fires += (f_NF > 0).sum(0)


class LatentScaling:
    """Latent Scaling (Minder et al. 2025) for one model, adapted to per-model decoder directions.

    For latent j with decoder row `d_j` in this model (normalized space) and unit direction `u_j = d_j/‖d_j‖`,
    the least-squares scale of `f_j u_j` explaining a target `t` over all rows is
    `s_j(t) = Σ_n f_j(n) ⟨u_j, t(n)⟩ / Σ_n f_j(n)²` (Minder's β times ‖d_j‖). Two targets:

    - error target `ε_j(n) = x(n) − x̂(n) + f_j(n) d_j` (what the crosscoder misses, with the latent's own
      term put back), giving `s_j^ε = ⟨u_j, Σ f_j e⟩ / Σ f_j² + ‖d_j‖`;
    - reconstruction target `ρ(n) = x̂(n) − b_dec` (everything the latents write, this one included),
      giving `s_j^ρ = ⟨u_j, Σ f_j ρ⟩ / Σ f_j²`.
    """

    def __init__(self, W_dec_LD: torch.Tensor, latents: slice, n_latents: int):
        self.latents = latents
        self.n_latents = n_latents
        self.W_dec_LD = W_dec_LD.detach().double().cpu()
        d = W_dec_LD.shape[1]
        self.error_DL = torch.zeros(d, W_dec_LD.shape[0], dtype=torch.float64)
        self.recon_DL = torch.zeros(d, W_dec_LD.shape[0], dtype=torch.float64)
        self.ff_L = torch.zeros(W_dec_LD.shape[0], dtype=torch.float64)

    def add(self, x_ND: torch.Tensor, x_hat_ND: torch.Tensor, b_dec_D: torch.Tensor, f_NF: torch.Tensor) -> None:
        """Add rows: normalized activations, their reconstructions, the decoder bias and the latents; returns None."""
        f_NL = f_NF[:, self.latents].double().cpu()
        x_ND, x_hat_ND = x_ND.double().cpu(), x_hat_ND.double().cpu()
        self.error_DL += (x_ND - x_hat_ND).T @ f_NL
        self.recon_DL += (x_hat_ND - b_dec_D.double().cpu()).T @ f_NL
        self.ff_L += (f_NL**2).sum(0)

    def scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return `(s_error_F, s_recon_F)`: the scales above per latent (NaN: no decoder row, or never fired)."""
        norm_L = self.W_dec_LD.norm(dim=1)
        u_LD = self.W_dec_LD / norm_L.clamp_min(1e-30)[:, None]
        ok_L = (self.ff_L > 0) & (norm_L > 0)
        ff_L = self.ff_L.clamp_min(1e-300)
        s_error_L = (u_LD * self.error_DL.T).sum(1) / ff_L + norm_L
        s_recon_L = (u_LD * self.recon_DL.T).sum(1) / ff_L
        out = []
        for s_L in (s_error_L, s_recon_L):
            full_F = torch.full((self.n_latents,), float("nan"), dtype=torch.float64)
            full_F[self.latents] = torch.where(ok_L, s_L, float("nan"))
            out.append(full_F.float())
        return out[0], out[1]
