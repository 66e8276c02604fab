"""Tests for `import_dictionary_learning`: exact conversion of dictionary_learning crosscoders, and refusals.

The source format is produced here by a small reference implementation written from the format's
description (state dict names, DFC latent order, normalization and the BatchTopK inference rule), in
float64; the converted CrossDiff crosscoder runs in its own float32.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch
from dl_reference import ReferenceCrossCoder, dfc_state_dict
from huggingface_hub import constants as hub_constants
from safetensors.torch import save_file

from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
from crossdiff_core.errors import CrossCoderError
from crossdiff_core.hub.importers import import_dictionary_learning, source_latent_order

D, F, K = 16, 48, 4
PCT_A, PCT_B = 0.125, 0.0625  # int(48 · pct) = 6 A-exclusive, 3 B-exclusive latents
N_A, N_B = 6, 3
PARTITION = {"_partition_config": {"dict_size": F, "model_a_exclusive_pct": PCT_A, "model_b_exclusive_pct": PCT_B}}
"""How dfc_learning records a DFC's partition (embedded in the .pt file here)."""
BATCH = 64


# ---------------------------------------------------------------------------------------------- reference


@dataclass
class Variant:
    """One way a dictionary_learning crosscoder can come: file format, DFC or not, normalization, sparsity."""

    fmt: str  # "pt" (state dict, partition embedded) or "safetensors" (PyTorchModelHubMixin files)
    dfc: bool
    normalized: bool
    batchtopk: bool = True
    global_scale_buffer: bool = True  # False: their global scale must be derived from target_rms
    dtype: torch.dtype = torch.float32

    @property
    def id(self) -> str:
        parts = [self.fmt, "dfc" if self.dfc else "standard", "normalized" if self.normalized else "raw"]
        parts += [] if self.batchtopk else ["l1"]
        parts += [] if self.global_scale_buffer or not self.normalized else ["from-target-rms"]
        parts += [] if self.dtype == torch.float32 else [str(self.dtype).removeprefix("torch.")]
        return "-".join(parts)


def random_source(seed: int, variant: Variant) -> dict[str, torch.Tensor]:
    """Return a state dict in the dictionary_learning layout with random, trained-looking values.

    A normalized one has one global scale over both models, as dictionary_learning wrote it in late June
    2025 (`normalized_source` below builds today's per-model scale).
    """
    gen = torch.Generator().manual_seed(seed)
    enc = torch.randn(2, D, F, generator=gen) * 0.4
    dec = torch.randn(2, F, D, generator=gen) * 0.4
    if variant.dfc:  # A-exclusive [0, 6), B-exclusive [6, 9), shared [9, 48); forbidden weights are zeros
        enc[0][:, N_A : N_A + N_B] = 0
        enc[1][:, :N_A] = 0
        dec[0][N_A : N_A + N_B] = 0
        dec[1][:N_A] = 0
    sd = {
        "encoder.weight": enc,
        "encoder.bias": torch.randn(F, generator=gen) * 0.2,
        "decoder.weight": dec,
        "decoder.bias": torch.randn(2, D, generator=gen) * 0.2,
        "code_normalization_id": torch.tensor(1),
    }
    if variant.normalized:
        std = torch.rand(2, D, generator=gen) + 0.5
        sd |= {"activation_mean": torch.randn(2, D, generator=gen) * 3, "activation_std": std,
               "target_rms": torch.tensor(1.3)}  # fmt: skip
        if variant.global_scale_buffer:
            sd["activation_global_scale"] = torch.tensor(1.3 / math.sqrt(float((std**2).sum()) + 1e-8))
    elif variant.fmt == "pt":  # their buffers exist but hold NaN when no normalizer was fitted
        sd |= {"activation_mean": torch.full((2, D), math.nan), "activation_std": torch.full((2, D), math.nan),
               "target_rms": torch.tensor(1.0), "activation_global_scale": torch.tensor(1.0)}  # fmt: skip
    return {key: value.to(variant.dtype) if value.is_floating_point() else value for key, value in sd.items()}


def _global_scale(sd: dict) -> torch.Tensor | None:
    """Return the reference's input scale g as [2, 1] (or [] for one scale over both models), None without normalizer."""
    mean, std = sd.get("activation_mean"), sd.get("activation_std")
    if mean is None or std is None or torch.isnan(mean).any() or torch.isnan(std).any():
        return None
    if "activation_global_scale" in sd:
        return sd["activation_global_scale"].double()
    return float(sd["target_rms"]) / torch.sqrt((std.double() ** 2).sum(dim=-1, keepdim=True) + 1e-8)


def ref_scores(sd: dict, x_BLD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (f_BF after ReLU, f · Σ_m ‖d^m‖) of the reference, in float64."""
    sd = {key: value.double() for key, value in sd.items()}
    g = _global_scale(sd)
    x_BLD = x_BLD.double() if g is None else (x_BLD.double() - sd["activation_mean"]) * g
    f_BF = torch.relu(torch.einsum("bld,ldf->bf", x_BLD, sd["encoder.weight"]) + sd["encoder.bias"])
    return f_BF, f_BF * sd["decoder.weight"].norm(dim=2).sum(dim=0)


def ref_encode(sd: dict, x_BLD: torch.Tensor) -> torch.Tensor:
    """Return the reference latents at inference (BatchTopK: keep f where f · Σ‖d‖ > threshold)."""
    f_BF, scaled_BF = ref_scores(sd, x_BLD)
    if "threshold" in sd:
        f_BF = f_BF * (scaled_BF > float(sd["threshold"]))
    return f_BF


def ref_decode(sd: dict, f_BF: torch.Tensor) -> torch.Tensor:
    """Return the reference reconstruction [B, 2, d] in raw activation space."""
    sd = {key: value.double() for key, value in sd.items()}
    x_BLD = torch.einsum("bf,lfd->bld", f_BF.double(), sd["decoder.weight"]) + sd["decoder.bias"]
    g = _global_scale(sd)
    return x_BLD if g is None else x_BLD / (g + 1e-8) + sd["activation_mean"]


def inputs(sd: dict, seed: int = 7) -> torch.Tensor:
    """Return raw activations [B, 2, d] around the source's mean (or around 0), with a realistic spread."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(BATCH, 2, D, generator=gen)
    mean = sd.get("activation_mean")
    if mean is None or torch.isnan(mean).any():
        return noise * 2
    return mean + noise * sd["activation_std"]


def set_threshold(sd: dict, x_BLD: torch.Tensor) -> None:
    """Give `sd` a BatchTopK threshold in a wide gap between scores, so float32 rounding cannot flip a selection."""
    _, scaled_BF = ref_scores(sd, x_BLD)
    values = scaled_BF[scaled_BF > 0].sort().values
    middle = len(values) // 2
    window = values[middle - 20 : middle + 20]
    gap = int((window[1:] - window[:-1]).argmax())
    threshold_T = torch.tensor(float(window[gap] + window[gap + 1]) / 2).to(sd["encoder.weight"].dtype)
    threshold = float(threshold_T)
    assert (scaled_BF - threshold).abs().min() > 1e-4 * threshold
    sd["k"], sd["threshold"] = torch.tensor(K, dtype=torch.int32), threshold_T


def write_source(tmp_path, sd: dict, variant: Variant):
    """Write `sd` as the variant's files; return the path to pass to the importer."""
    if variant.fmt == "pt":
        payload = dict(sd)
        if variant.dfc:
            payload |= PARTITION
        torch.save(payload, tmp_path / "ae.pt")
        return tmp_path / "ae.pt"
    hub_config = {"activation_dim": D, "dict_size": F, "num_layers": 2, "code_normalization": "CROSSCODER"}
    if variant.batchtopk:
        hub_config["k"] = K
    if variant.dfc:
        hub_config |= {"model_a_exclusive_pct": PCT_A, "model_b_exclusive_pct": PCT_B}
    (tmp_path / "config.json").write_text(json.dumps(hub_config))
    save_file({key: value.contiguous() for key, value in sd.items()}, str(tmp_path / "model.safetensors"))
    return tmp_path


def source_for(tmp_path, variant: Variant, seed: int = 0) -> tuple[dict, torch.Tensor, object]:
    """Return (state dict, test inputs, path) of a freshly written source crosscoder."""
    sd = random_source(seed, variant)
    x_BLD = inputs(sd)
    if variant.batchtopk:
        set_threshold(sd, x_BLD)
    return sd, x_BLD, write_source(tmp_path, sd, variant)


# ---------------------------------------------------------------------------------------------- equivalence

VARIANTS = [
    Variant(fmt, dfc, normalized)
    for fmt in ("pt", "safetensors")
    for dfc in (True, False)
    for normalized in (True, False)
] + [
    Variant("pt", dfc=False, normalized=False, batchtopk=False),
    Variant("safetensors", dfc=True, normalized=True, batchtopk=False),
    Variant("pt", dfc=True, normalized=True, global_scale_buffer=False),
    Variant("safetensors", dfc=True, normalized=True, dtype=torch.bfloat16),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.id)
def test_converted_crosscoder_has_identical_outputs(tmp_path, variant):
    sd, x_BLD, path = source_for(tmp_path, variant)
    cc = import_dictionary_learning(path, model_a="org/base", model_b="org/chat", layer_a=13, layer_b=13)

    n_a, n_b = (N_A, N_B) if variant.dfc else (0, 0)
    assert (cc.n_a, cc.n_shared, cc.n_b) == (n_a, F - n_a - n_b, n_b)
    assert cc.config.sparsity == ("batchtopk" if variant.batchtopk else "l1")
    recorded = (cc.config.model_a, cc.config.model_b, cc.config.layer_a, cc.config.layer_b)
    assert recorded == ("org/base", "org/chat", 13, 13)
    order = source_latent_order(n_a, n_b, F)

    f_ref_BF = ref_encode(sd, x_BLD)[:, order]
    with torch.no_grad():
        f_BF = cc.encode(x_BLD[:, 0].float(), x_BLD[:, 1].float()).double()
        x_hat_a, x_hat_b = cc.decode(f_BF.float())
        x_hat_a_fwd, x_hat_b_fwd, f_fwd_BF = cc(x_BLD[:, 0].float(), x_BLD[:, 1].float())
    assert torch.equal(f_BF > 0, f_ref_BF > 0), "the same latents must be active"
    assert 0 < (f_BF > 0).sum() < f_BF.numel()
    torch.testing.assert_close(f_BF, f_ref_BF, atol=1e-4, rtol=1e-4)
    x_hat_ref_BLD = ref_decode(sd, ref_encode(sd, x_BLD))
    torch.testing.assert_close(x_hat_a.double(), x_hat_ref_BLD[:, 0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x_hat_b.double(), x_hat_ref_BLD[:, 1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(f_fwd_BF.double(), f_ref_BF, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x_hat_a_fwd, x_hat_a)
    torch.testing.assert_close(x_hat_b_fwd, x_hat_b)


def test_dfc_latent_blocks_keep_their_meaning(tmp_path):
    variant = Variant("pt", dfc=True, normalized=True)
    _sd, x_BLD, path = source_for(tmp_path, variant)
    cc = import_dictionary_learning(path)
    order = source_latent_order(N_A, N_B, F)
    assert order[:N_A] == list(range(N_A)) and order[-N_B:] == list(range(N_A, N_A + N_B))
    names = cc.block_names()
    assert [names[i] for i in range(F) if order[i] < N_A] == ["A-exclusive"] * N_A
    assert [names[i] for i in range(F) if N_A <= order[i] < N_A + N_B] == ["B-exclusive"] * N_B
    # model B's input cannot move an A-exclusive latent, and A-exclusive latents do not write to model B
    x_a = x_BLD[:, 0].float()
    with torch.no_grad():
        pre_1 = cc.pre_activations(*cc.normalize(x_a, x_BLD[:, 1].float()))
        pre_2 = cc.pre_activations(*cc.normalize(x_a, torch.randn(BATCH, D) * 10))
    torch.testing.assert_close(pre_1[:, cc.slice_a_exclusive], pre_2[:, cc.slice_a_exclusive])


def test_converted_crosscoder_saves_and_reloads(tmp_path):
    (tmp_path / "src").mkdir()
    _, _, path = source_for(tmp_path / "src", Variant("pt", dfc=True, normalized=True))
    cc = import_dictionary_learning(path, model_a="org/base", model_b="org/chat")
    cc.save_pretrained(tmp_path / "out")
    again = CrossCoder.from_pretrained(str(tmp_path / "out"))
    assert again.config == cc.config
    for name, tensor in cc.state_dict().items():
        assert not tensor.is_meta
        torch.testing.assert_close(again.state_dict()[name], tensor)


def test_state_dict_from_a_compiled_module_and_a_trainer_config_folder(tmp_path):
    variant = Variant("pt", dfc=True, normalized=False)
    sd = random_source(3, variant)
    x_BLD = inputs(sd)
    set_threshold(sd, x_BLD)
    compiled = {f"_orig_mod.{key}": value for key, value in sd.items()}
    kwargs = {"model_a_exclusive_pct": PCT_A, "model_b_exclusive_pct": PCT_B}
    trainer_config = {"trainer": {"dict_class": "DedicatedFeatureBatchTopKCrossCoder", "dict_class_kwargs": kwargs}}
    (tmp_path / "config.json").write_text(json.dumps(trainer_config))
    torch.save(compiled, tmp_path / "ae.pt")
    cc = import_dictionary_learning(tmp_path)  # the folder's only .pt file, partition from the trainer config
    assert (cc.n_a, cc.n_b) == (N_A, N_B)
    with torch.no_grad():
        f_BF = cc.encode(x_BLD[:, 0].float(), x_BLD[:, 1].float()).double()
    torch.testing.assert_close(f_BF, ref_encode(sd, x_BLD)[:, source_latent_order(N_A, N_B, F)], atol=1e-4, rtol=1e-4)


def test_l1_crosscoder_with_sae_code_normalization_is_accepted(tmp_path):
    """Code normalization only changes an L1 crosscoder's training penalty, not its encode/decode."""
    variant = Variant("pt", dfc=False, normalized=False, batchtopk=False)
    sd = random_source(4, variant) | {"code_normalization_id": torch.tensor(2)}
    path = write_source(tmp_path, sd, variant)
    x_BLD = inputs(sd)
    cc = import_dictionary_learning(path)
    with torch.no_grad():
        f_BF = cc.encode(x_BLD[:, 0].float(), x_BLD[:, 1].float()).double()
    torch.testing.assert_close(f_BF, ref_encode(sd, x_BLD), atol=1e-4, rtol=1e-4)


def test_source_latent_order():
    assert source_latent_order(2, 1, 6) == [0, 1, 3, 4, 5, 2]
    assert source_latent_order(0, 0, 4) == [0, 1, 2, 3]


# ---------------------------------------------------------------------------------------------- refusals


def _pt(tmp_path, sd: dict, **extra) -> object:
    torch.save({**sd, **extra}, tmp_path / "ae.pt")
    return tmp_path / "ae.pt"


def _batchtopk(seed: int = 0, dfc: bool = True) -> dict:
    variant = Variant("pt", dfc=dfc, normalized=False)
    sd = random_source(seed, variant)
    set_threshold(sd, inputs(sd))
    return sd


def test_missing_code_normalization_is_assumed_crosscoder_with_a_warning(tmp_path):
    sd = {key: value for key, value in _batchtopk().items() if key != "code_normalization_id"}
    with pytest.warns(UserWarning, match="does not record its code normalization; assuming CROSSCODER"):
        cc = import_dictionary_learning(_pt(tmp_path, sd, **PARTITION))
    assert cc.config.sparsity == "batchtopk"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda sd: (
                sd
                | {
                    "encoder.weight": torch.randn(3, D, F),
                    "decoder.weight": torch.randn(3, F, D),
                    "decoder.bias": torch.randn(3, D),
                }
            ),
            "crosscoder over 3 layers",
        ),
        (lambda sd: sd | {"encoder.weight": torch.randn(D, F)}, "sparse autoencoder"),
        (
            lambda sd: {
                "W_enc": torch.randn(D, F),
                "W_dec": torch.randn(F, D),
                "b_enc": torch.zeros(F),
                "b_dec": torch.zeros(D),
                "threshold": torch.rand(F),
            },
            "JumpReLU",
        ),
        (lambda sd: sd | {"threshold": torch.tensor([0.1, 0.2])}, "per-layer thresholds"),
        (
            lambda sd: (
                {k: v for k, v in sd.items() if k not in ("k", "threshold")}
                | {"code_normalization_id": torch.tensor(5)}
            ),
            "decoupled code normalization",
        ),
        (lambda sd: sd | {"code_normalization_id": torch.tensor(9)}, "code_normalization_id=9"),
        (lambda sd: sd | {"code_normalization_id": torch.tensor(2)}, "SAE code normalization"),
        (lambda sd: sd | {"threshold": torch.tensor(-1.0)}, "threshold was never estimated"),
        (lambda sd: {k: v for k, v in sd.items() if k != "k"}, "only one of k and threshold"),
        (lambda sd: sd | {"decoder.weight": torch.randn(2, F + 1, D)}, "inconsistent shapes"),
        (lambda sd: sd | {"encoder.bias": torch.full((F,), math.nan)}, "NaN or infinite"),
        (
            lambda sd: (
                {k: v for k, v in sd.items() if k not in ("target_rms", "activation_global_scale")}
                | {"activation_mean": torch.zeros(2, D), "activation_std": torch.ones(2, D)}
            ),
            r"normalizes its inputs per dimension \(\(x − mean\) / \(std \+ 1e-8\): it has activation_mean/std but no",
        ),
    ],
    ids=[
        "3-layers",
        "sae",
        "jumprelu",
        "per-layer-threshold",
        "decoupled",
        "unknown-code-id",
        "sae-code-norm",
        "no-threshold",
        "k-without-threshold",
        "shapes",
        "nan",
        "normalizer-without-scale",
    ],
)
def test_unsupported_variants_are_refused(tmp_path, change, message):
    with pytest.raises(CrossCoderError, match=message):
        import_dictionary_learning(_pt(tmp_path, change(_batchtopk()), **PARTITION))


def test_nonzero_forbidden_weights_are_refused(tmp_path):
    sd = _batchtopk()
    sd["decoder.weight"][1, 2, 5] = 1e-3  # model B writes from an A-exclusive latent
    message = r"model B's decoder weights for A-exclusive latents \(largest \|w\| = 0.001\) are not zero"
    with pytest.raises(CrossCoderError, match=message):
        import_dictionary_learning(_pt(tmp_path, sd, **PARTITION))


def test_wrong_partition_is_refused(tmp_path):
    """A partition that does not match where the zeros are shows up as non-zero forbidden weights."""
    partition = {"_partition_config": {"dict_size": F, "model_a_exclusive_size": 8, "model_b_exclusive_size": 3}}
    with pytest.raises(CrossCoderError, match="not a valid DFC for a partition of 8 A-exclusive and 3 B-exclusive"):
        import_dictionary_learning(_pt(tmp_path, _batchtopk(), **partition))
    partition = {"_partition_config": PARTITION["_partition_config"] | {"dict_size": 2 * F}}
    with pytest.raises(CrossCoderError, match="partition is for dict_size=96 but the weights have 48 latents"):
        import_dictionary_learning(_pt(tmp_path, _batchtopk(), **partition))


def test_dfc_without_partition_and_foreign_classes_are_refused(tmp_path):
    config = {"trainer": {"dict_class": "DedicatedFeatureBatchTopKCrossCoder"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CrossCoderError, match="Dedicated Feature Crosscoder without its partition"):
        import_dictionary_learning(_pt(tmp_path, _batchtopk()))
    (tmp_path / "config.json").write_text(json.dumps({"trainer": {"dict_class": "JumpReluAutoEncoder"}}))
    with pytest.raises(CrossCoderError, match="holds a JumpReluAutoEncoder, not a crosscoder"):
        import_dictionary_learning(tmp_path / "ae.pt")
    (tmp_path / "config.json").write_text(json.dumps({"decoder_type": "embedding_bag"}))
    with pytest.raises(CrossCoderError, match="decoder_type='embedding_bag'"):
        import_dictionary_learning(tmp_path / "ae.pt")


class _RunsCodeWhenUnpickled:
    """A pickle payload: unpickling it calls `open(marker, "w")`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_in_pt_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "payload-ran"
    torch.save({**_batchtopk(), "evil": _RunsCodeWhenUnpickled(marker)}, tmp_path / "ae.pt")
    refusal = r"\(Unsupported global: GLOBAL \S*open\)\. CrossDiff loads .pt files with torch.load\(weights_only=True\)"
    with pytest.raises(CrossCoderError, match=refusal):
        import_dictionary_learning(tmp_path / "ae.pt")
    assert not marker.exists()


def test_bad_paths_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    torch.save(_batchtopk(), tmp_path / "a.pt")
    torch.save(_batchtopk(), tmp_path / "b.pt")
    with pytest.raises(CrossCoderError, match=r"several checkpoints \(a.pt, b.pt\); pass the one to import"):
        import_dictionary_learning(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CrossCoderError, match="holds neither model.safetensors nor a .pt file"):
        import_dictionary_learning(tmp_path / "empty")
    with pytest.raises(CrossCoderError, match="missing.pt does not exist; check the path"):
        import_dictionary_learning(tmp_path / "missing.pt")
    with pytest.raises(CrossCoderError, match="org/missing is not a local file or folder, and as a Hub repo: offline"):
        import_dictionary_learning("org/missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CrossCoderError, match="neither a .safetensors nor a .pt file"):
        import_dictionary_learning(tmp_path / "notes.txt")
    (tmp_path / "broken.pt").write_bytes(b"not a zip")
    with pytest.raises(CrossCoderError, match="corrupt or not a PyTorch file"):
        import_dictionary_learning(tmp_path / "broken.pt")


def test_crossdiff_folder_is_pointed_to_load_crosscoder(tmp_path):
    CrossCoder(CrossCoderConfig(d_a=4, d_b=4, dict_size=8, k=2), seed=0).save_pretrained(tmp_path)
    with pytest.raises(CrossCoderError, match="already a CrossDiff crosscoder; load it with crossdiff_core.hub.repo"):
        import_dictionary_learning(tmp_path)


# ---------------------------------------------------------------------------------------------- normalized, as dfc_learning writes them

EXACT = 1e-5
"""Largest absolute difference allowed between CrossDiff and the faithful float32 reference (`dl_reference`)."""


def normalized_source(seed: int, keep_relative_variance: bool = True, batchtopk: bool = True, dfc: bool = True):
    """Return (state dict, raw inputs [B, 2, d]) of a normalized crosscoder built as dfc_learning builds one.

    The two models' activations differ in offset and spread (model B's are about 4 times wider), so one
    scale per model matters: collapsing it to one number moves the latents.
    """
    gen = torch.Generator().manual_seed(seed)
    mean = torch.stack([torch.randn(D, generator=gen) * 2, torch.randn(D, generator=gen) * 2 - 4])
    std = torch.stack([torch.rand(D, generator=gen) + 0.3, (torch.rand(D, generator=gen) + 0.3) * 4])
    x_BLD = mean + torch.randn(BATCH, 2, D, generator=gen) * std
    enc = torch.randn(2, D, F, generator=gen) * 0.4
    dec = torch.randn(2, F, D, generator=gen) * 0.1  # reconstructions of about the inputs' size, as when trained
    if dfc:  # what DedicatedFeatureCrossCoderEncoder/Decoder._initialize_masked_weights leave at zero
        enc[0][:, N_A : N_A + N_B], enc[1][:, :N_A], dec[0][N_A : N_A + N_B], dec[1][:N_A] = 0, 0, 0, 0
    sd = dfc_state_dict(
        enc, torch.randn(F, generator=gen) * 0.2, dec, torch.randn(2, D, generator=gen) * 0.2,
        activation_mean=mean, activation_std=std, keep_relative_variance=keep_relative_variance, target_rms=1.0,
        k=K if batchtopk else None, partition=PARTITION["_partition_config"] if dfc else None,
    )  # fmt: skip
    if batchtopk:  # a threshold in a wide gap between scores, as `set_threshold` picks it
        tensors = {key: v.double() for key, v in sd.items() if isinstance(v, torch.Tensor) and key != "threshold"}
        ref = ReferenceCrossCoder(tensors, keep_relative_variance)
        scores = (ref.encode(x_BLD.double()) * ref.get_code_normalization()).flatten()
        values = scores[scores > 0].sort().values
        window = values[len(values) // 2 - 20 : len(values) // 2 + 20]
        gap = int((window[1:] - window[:-1]).argmax())
        sd["threshold"] = torch.tensor(float(window[gap] + window[gap + 1]) / 2, dtype=torch.float32)
    return sd, x_BLD


def max_diffs(cc: CrossCoder, ref: ReferenceCrossCoder, x_BLD: torch.Tensor, order: list[int]) -> tuple[float, float]:
    """Return the largest |difference| of the latents and of the reconstructions (both models), CrossDiff vs reference."""
    with torch.no_grad():
        f_BF = cc.encode(x_BLD[:, 0], x_BLD[:, 1])
        x_hat_a, x_hat_b = cc.decode(f_BF)
    f_ref_BF = ref.encode(x_BLD)
    x_hat_ref_BLD = ref.decode(f_ref_BF)
    assert torch.equal(f_BF > 0, f_ref_BF[:, order] > 0), "the same latents must be active"
    latents = float((f_BF - f_ref_BF[:, order]).abs().max())
    recon = float(max((x_hat_a - x_hat_ref_BLD[:, 0]).abs().max(), (x_hat_b - x_hat_ref_BLD[:, 1]).abs().max()))
    return latents, recon


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_per_model_global_scale_is_folded_exactly(tmp_path, fmt):
    """dfc_learning's default: activation_global_scale [2], one scale per model (keep_relative_variance=True)."""
    sd, x_BLD = normalized_source(11)
    g = sd["activation_global_scale"]
    assert g.shape == (2,) and float(g[0] / g[1]) > 3  # the two models are scaled very differently
    if fmt == "pt":
        torch.save(sd, tmp_path / "ae.pt")
        path = tmp_path / "ae.pt"
    else:
        tensors = {key: value for key, value in sd.items() if isinstance(value, torch.Tensor)}
        save_file(tensors, str(tmp_path / "model.safetensors"))
        (tmp_path / "config.json").write_text(json.dumps(sd["_partition_config"] | {"k": K}))
        path = tmp_path
    cc = import_dictionary_learning(path)
    assert (cc.config.scale_a, cc.config.scale_b) == tuple((g + 1e-8).tolist())  # what they divide by on decode
    order = source_latent_order(N_A, N_B, F)
    latents, recon = max_diffs(cc, ReferenceCrossCoder(sd), x_BLD, order)
    assert 0 < int((cc.encode(x_BLD[:, 0], x_BLD[:, 1]) > 0).sum()) < BATCH * F
    assert latents < EXACT and recon < EXACT, (latents, recon)

    collapsed = ReferenceCrossCoder(sd | {"activation_global_scale": g.mean()})  # what a scalar scale would give
    collapsed.sd["activation_global_scale"] = g.mean().expand(2)
    off = float((collapsed.encode(x_BLD)[:, order] - ReferenceCrossCoder(sd).encode(x_BLD)[:, order]).abs().max())
    assert off > 100 * EXACT  # the test would catch the collapsed scale


def test_per_dimension_normalization_needs_to_be_named_and_is_exact_for_l1(tmp_path):
    """keep_relative_variance=False stores ones as the global scale; the state dict does not record the flag."""
    sd, x_BLD = normalized_source(14, keep_relative_variance=False, batchtopk=False)
    assert torch.equal(sd["activation_global_scale"], torch.ones(2))
    torch.save(sd, tmp_path / "ae.pt")
    ambiguous = r"global_scale is 1 for both models although target_rms.*--normalization"
    with pytest.raises(CrossCoderError, match=ambiguous):
        import_dictionary_learning(tmp_path / "ae.pt")
    order = source_latent_order(N_A, N_B, F)
    cc = import_dictionary_learning(tmp_path / "ae.pt", normalization="per-dimension")
    latents, recon = max_diffs(cc, ReferenceCrossCoder(sd, keep_relative_variance=False), x_BLD, order)
    assert latents < EXACT and recon < EXACT, (latents, recon)
    # what their from_pretrained evaluates (the class default keep_relative_variance=True, stored scale 1)
    cc = import_dictionary_learning(tmp_path / "ae.pt", normalization="relative-variance")
    latents, recon = max_diffs(cc, ReferenceCrossCoder(sd, keep_relative_variance=True), x_BLD, order)
    assert latents < EXACT and recon < EXACT, (latents, recon)

    relative, _ = normalized_source(14)  # a relative-variance checkpoint cannot be read per dimension
    torch.save(relative, tmp_path / "relative.pt")
    with pytest.raises(CrossCoderError, match="not the ones keep_relative_variance=False writes"):
        import_dictionary_learning(tmp_path / "relative.pt", normalization="per-dimension")


def test_per_dimension_batchtopk_is_refused_and_old_format_is_read_per_dimension(tmp_path):
    sd, _ = normalized_source(13, keep_relative_variance=False)
    torch.save(sd, tmp_path / "ae.pt")
    with pytest.raises(CrossCoderError, match=r"normalizes its inputs per dimension .* cannot be imported exactly"):
        import_dictionary_learning(tmp_path / "ae.pt", normalization="per-dimension")
    # dictionary_learning of June 2025 (before target_rms): mean/std only, always per dimension
    old, x_BLD = normalized_source(14, keep_relative_variance=False, batchtopk=False, dfc=False)
    old = {key: value for key, value in old.items() if key not in ("target_rms", "activation_global_scale")}
    torch.save(old, tmp_path / "old.pt")
    cc = import_dictionary_learning(tmp_path / "old.pt")
    # their June 2025 normalize was (x − mean) / (std + 1e-8): today's per-dimension branch, without the shape check
    june = ReferenceCrossCoder(old | {"activation_global_scale": torch.ones(2)}, keep_relative_variance=False)
    latents, recon = max_diffs(cc, june, x_BLD, list(range(F)))
    assert latents < EXACT and recon < EXACT, (latents, recon)
