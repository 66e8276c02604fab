"""The loss of one training step on normalized activations, BatchTopK (sparse kernels) or L1 (dense):

    loss = Σ_m mean_tokens ‖x̂_m − x_m‖²  (normalized space)
           + auxk_coeff · (d_a + d_b) · auxk loss              (BatchTopK)
           or + l1_coeff · mean_tokens Σ_j f_j (‖d_a,j‖ + ‖d_b,j‖)   (L1)

The auxk loss is relative (residual error over residual variance); the reconstruction term is in
units where model m's variance is d_m, so the auxk term is scaled by d_a + d_b to keep
`auxk_coeff` the weight it has against a normalized reconstruction loss (Gao et al. 2024).
BatchTopK steps use the sparse kernels of `crossdiff_core.crosscoder.sparse_ops`; the L1 baseline
is dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as nnf

from crossdiff_core.crosscoder.batchtopk import LatentSelection, default_k_aux, select_batch_topk, select_dead_topk
from crossdiff_core.crosscoder.model import CrossCoder, EncoderWorkspace
from crossdiff_core.crosscoder.sparse_ops import SPARSE, LatentOps
from crossdiff_core.distributed import Dist
from crossdiff_core.training.config import TrainConfig


@dataclass
class StepOutput:
    """The loss of one training step and what the step needs besides the gradient."""

    loss: torch.Tensor
    """Scalar loss to backpropagate."""

    stats: dict[str, torch.Tensor]
    """Detached scalar statistics: mse, fvu_a, fvu_b, l0, and auxk_loss or l1_loss."""

    fired_F: torch.Tensor
    """Boolean [F]: which latents fired on this batch."""

    selection: LatentSelection | None = None
    """The BatchTopK selection (None for L1), used to update the inference threshold."""


def training_loss(
    model: CrossCoder,
    x_a_BD: torch.Tensor,
    x_b_BD: torch.Tensor,
    dead_F: torch.Tensor,
    train_config: TrainConfig,
    ops: LatentOps = SPARSE,
    group: Dist | None = None,
    workspace: EncoderWorkspace | None = None,
) -> StepOutput:
    """Return the loss and statistics of one step on NORMALIZED activations.

    `dead_F` marks dead latents (for auxk). `ops` chooses the BatchTopK kernels: the sparse fast
    path, or `sparse_ops.DENSE_REFERENCE` to check it. With a data-parallel `group` the batch is
    this rank's part of the global batch; the selection and the auxk normalization are global, and
    the loss is scaled so that DDP's gradient average is the gradient of the global batch's loss. A training
    run passes the same `workspace` to every step (buffers of the encoder matmul kept between steps).
    """
    if model.config.sparsity == "l1":
        return _l1_loss(model, x_a_BD, x_b_BD)
    batch = x_a_BD.shape[0]
    with torch.no_grad():
        pre_BF = model.encoder_products(x_a_BD, x_b_BD, workspace)  # without b_enc: selection and gather add it
        norm_a_F, norm_b_F = model.decoder_norms()
    selection = select_batch_topk(pre_BF, norm_a_F + norm_b_F, model.config.k, group, bias_F=model.b_enc.detach())
    values_N = _gather(ops, model, pre_BF, selection, x_a_BD, x_b_BD)
    x_hat_a_BD, x_hat_b_BD = _decode_active(ops, model, selection, values_N, batch)
    err_a_BD = x_hat_a_BD + model.b_dec_a - x_a_BD
    err_b_BD = x_hat_b_BD + model.b_dec_b - x_b_BD
    mse = err_a_BD.pow(2).sum(1).mean() + err_b_BD.pow(2).sum(1).mean()
    auxk = _auxk_loss(model, dead_F, train_config, x_a_BD, x_b_BD, err_a_BD.detach(), err_b_BD.detach(), group)
    fired_F = torch.zeros(model.dict_size, dtype=torch.bool, device=x_a_BD.device)
    fired_F[selection.latents_N] = True
    stats = _reconstruction_stats(mse, err_a_BD, err_b_BD, x_a_BD, x_b_BD)
    stats["auxk_loss"] = auxk.detach()
    stats["l0"] = torch.tensor(selection.latents_N.numel() / batch)
    auxk_weight = train_config.auxk_coeff * (model.config.d_a + model.config.d_b)
    return StepOutput(loss=mse + auxk_weight * auxk, stats=stats, fired_F=fired_F, selection=selection)


def _l1_loss(model: CrossCoder, x_a_BD: torch.Tensor, x_b_BD: torch.Tensor) -> StepOutput:
    """Return the dense L1-crosscoder step: reconstruction + decoder-norm-weighted L1 of the latents."""
    f_BF = model.pre_activations(x_a_BD, x_b_BD).relu()
    x_hat_a_BD, x_hat_b_BD = model.decode_normalized(f_BF)
    err_a_BD, err_b_BD = x_hat_a_BD - x_a_BD, x_hat_b_BD - x_b_BD
    mse = err_a_BD.pow(2).sum(1).mean() + err_b_BD.pow(2).sum(1).mean()
    norm_a_F, norm_b_F = model.decoder_norms()
    l1 = (f_BF * (norm_a_F + norm_b_F)).sum(1).mean()
    active_BF = f_BF.detach() > 0
    stats = _reconstruction_stats(mse, err_a_BD, err_b_BD, x_a_BD, x_b_BD)
    stats["l1_loss"] = l1.detach()
    stats["l0"] = active_BF.sum(1).float().mean()
    return StepOutput(loss=mse + model.config.l1_coeff * l1, stats=stats, fired_F=active_BF.any(0))


def _gather(ops, model, pre_BF, selection: LatentSelection, x_a_BD, x_b_BD) -> torch.Tensor:
    """Return the selected pre-activations, differentiable w.r.t. the encoders."""
    return ops.gather_preacts(
        pre_BF, selection.rows_N, selection.latents_N, x_a_BD, model.W_enc_a, x_b_BD, model.W_enc_b, model.b_enc
    )


def _decode_active(ops, model: CrossCoder, selection: LatentSelection, values_N: torch.Tensor, batch: int):
    """Return (x̂_a, x̂_b) without decoder biases from active values; each model decodes only its own latents."""
    in_a = selection.latents_N < model.slice_a.stop
    in_b = selection.latents_N >= model.slice_b.start
    x_hat_a_BD = ops.decode(selection.rows_N[in_a], selection.latents_N[in_a], values_N[in_a], model.W_dec_a, batch)
    x_hat_b_BD = ops.decode(
        selection.rows_N[in_b], selection.latents_N[in_b] - model.slice_b.start, values_N[in_b], model.W_dec_b, batch
    )
    return x_hat_a_BD, x_hat_b_BD


def _auxk_loss(model: CrossCoder, dead_F, train_config, x_a_BD, x_b_BD, err_a_BD, err_b_BD, group=None) -> torch.Tensor:
    """Return the auxk loss: how well the top dead latents reconstruct the residual, relative to its variance.

    Zero when no latent is dead or `auxk_coeff` is 0. With `auxk_exclusive` off, dead exclusive
    latents are left out: one model's residual is mostly shared content not learned yet, so auxk
    can turn them into copies of one side of shared features; they are then filled by relocation
    only (see `relocate_one_sided`). Each token uses its `k_aux` largest dead pre-activations. With
    k_aux = d/2 the [B, n_dead] activation matrix is dense in practice, so it is computed with dense
    matmuls over the dead latents only (never over all F). With a data-parallel `group` the
    residual variance is the global batch's, and the loss is this rank's error times the world size
    over it (DDP averages gradients over ranks).
    """
    zero = x_a_BD.new_zeros(())
    if train_config.auxk_exclusive:
        dead_K = dead_F.nonzero().squeeze(1)
    else:
        dead_K = dead_F[model.slice_shared].nonzero().squeeze(1) + model.slice_shared.start
    if train_config.auxk_coeff == 0 or dead_K.numel() == 0:
        return zero
    # Sorted dead latents: the first n_in_a belong to model A, those from b_start on to model B.
    n_in_a = int((dead_K < model.slice_a.stop).sum())
    b_start = int((dead_K < model.slice_b.start).sum())
    dead_a_K, dead_b_K = dead_K[:n_in_a], dead_K[b_start:] - model.slice_b.start
    n_dead = dead_K.numel()
    pre_BK = (
        model.b_enc[dead_K]
        + nnf.pad(x_a_BD @ _rows(model.W_enc_a, dead_a_K).T, (0, n_dead - n_in_a))
        + nnf.pad(x_b_BD @ _rows(model.W_enc_b, dead_b_K).T, (b_start, 0))
    )
    k_aux = train_config.k_aux or default_k_aux(model.config.d_a, model.config.d_b)
    f_BK = pre_BK.relu() * select_dead_topk(pre_BK.detach(), k_aux)
    residual_a_BD, residual_b_BD = -err_a_BD, -err_b_BD
    e_hat_a_BD = f_BK[:, :n_in_a] @ _rows(model.W_dec_a, dead_a_K)
    e_hat_b_BD = f_BK[:, b_start:] @ _rows(model.W_dec_b, dead_b_K)
    error = (e_hat_a_BD - residual_a_BD).pow(2).sum() + (e_hat_b_BD - residual_b_BD).pow(2).sum()
    if group is None:
        variance = (residual_a_BD - residual_a_BD.mean(0)).pow(2).sum()
        variance = variance + (residual_b_BD - residual_b_BD.mean(0)).pow(2).sum()
    else:
        n_global = residual_a_BD.shape[0] * group.world
        mean_a_D = group.sum(residual_a_BD.sum(0)) / n_global
        mean_b_D = group.sum(residual_b_BD.sum(0)) / n_global
        variance = (residual_a_BD - mean_a_D).pow(2).sum() + (residual_b_BD - mean_b_D).pow(2).sum()
        variance = group.sum(variance) / group.world
    return error / variance.clamp_min(torch.finfo(variance.dtype).tiny)


def _rows(weight_LD: torch.Tensor, rows_K: torch.Tensor) -> torch.Tensor:
    """Return `weight_LD[rows_K]` with a sparse gradient: added into the weight's dense gradient row by row,
    where plain indexing would build and add a full-size zero-filled gradient."""
    return nnf.embedding(rows_K, weight_LD, sparse=True)


def _reconstruction_stats(mse, err_a_BD, err_b_BD, x_a_BD, x_b_BD) -> dict[str, torch.Tensor]:
    """Return detached mse and per-model fraction of variance unexplained on this batch."""
    with torch.no_grad():
        var_a = (x_a_BD - x_a_BD.mean(0)).pow(2).sum().clamp_min(1e-12)
        var_b = (x_b_BD - x_b_BD.mean(0)).pow(2).sum().clamp_min(1e-12)
        return {"mse": mse.detach(), "fvu_a": err_a_BD.pow(2).sum() / var_a, "fvu_b": err_b_BD.pow(2).sum() / var_b}
