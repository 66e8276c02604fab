"""Tests for `export-dl`: CrossDiff crosscoders written as dictionary_learning checkpoints with identical outputs.

The exported `model_final.pt` is loaded as dfc_learning's `from_pretrained` loads it (`torch.load(weights_only=True)`)
and run by `dl_reference`, the line-for-line reimplementation of their inference, on the same raw activations
CrossDiff encodes; `import-dl` brings it back.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from dl_reference import ReferenceCrossCoder, dfc_state_dict

from crossdiff_core import cli
from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
from crossdiff_core.errors import CrossCoderError
from crossdiff_core.files import file_sha256
from crossdiff_core.hub.exporters.dictionary_learning import (
    _exclusive_pct,
    dictionary_learning_checkpoint,
    export_dictionary_learning,
)
from crossdiff_core.hub.importers.dictionary_learning import import_dictionary_learning, source_latent_order

D, F, K, BATCH = 16, 48, 4, 64
EXACT = 1e-5
"""Largest absolute difference allowed between CrossDiff and the reference on the same raw activations."""


def crosscoder(exclusive=(6, 3), sparsity="batchtopk", scales=(0.37, 2.9), seed=0) -> CrossCoder:
    """Return a crosscoder with random, trained-looking weights and a BatchTopK threshold in a wide gap of its scores."""
    config = CrossCoderConfig(d_a=D, d_b=D, dict_size=F, exclusive_a=exclusive[0], exclusive_b=exclusive[1], k=K,
                              sparsity=sparsity, scale_a=scales[0], scale_b=scales[1], model_a="org/base",
                              model_b="org/chat", layer_a=13, layer_b=13)  # fmt: skip
    model = CrossCoder(config, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in (model.W_enc_a, model.W_enc_b, model.b_enc, model.b_dec_a, model.b_dec_b):
            param.copy_(torch.randn(param.shape, generator=gen) * 0.4)
        norm_a_F, norm_b_F = model.decoder_norms()
        scores = (model.pre_activations(*model.normalize(*raw_inputs(model))).relu() * (norm_a_F + norm_b_F)).flatten()
        values = scores[scores > 0].sort().values
        window = values[len(values) // 2 - 20 : len(values) // 2 + 20]
        gap = int((window[1:] - window[:-1]).argmax())
        model.threshold.fill_(float(window[gap] + window[gap + 1]) / 2)  # float32 rounding cannot flip a selection
    return model


def raw_inputs(model: CrossCoder, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Return raw activations of both models: about unit size once CrossDiff scales them."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(BATCH, D, generator=gen) / model.scale_a, torch.randn(BATCH, D, generator=gen) / model.scale_b)


def max_diffs(model: CrossCoder, state_dict: dict) -> tuple[float, float]:
    """Return the largest |difference| of latents and of reconstructions, CrossDiff vs the reference on `state_dict`."""
    x_a, x_b = raw_inputs(model)
    with torch.no_grad():
        f_BF = model.encode(x_a, x_b)
        x_hat_a, x_hat_b = model.decode(f_BF)
    ref = ReferenceCrossCoder(state_dict)
    f_ref_BF = ref.encode(torch.stack([x_a, x_b], dim=1))
    x_hat_ref_BLD = ref.decode(f_ref_BF)
    f_ref_BF = f_ref_BF[:, source_latent_order(model.n_a, model.n_b, F)]  # in CrossDiff's order
    assert 0 < int((f_BF > 0).sum()) < BATCH * F
    assert torch.equal(f_BF > 0, f_ref_BF > 0), "the same latents must be active"
    recon = max((x_hat_a - x_hat_ref_BLD[:, 0]).abs().max(), (x_hat_b - x_hat_ref_BLD[:, 1]).abs().max())
    return float((f_BF - f_ref_BF).abs().max()), float(recon)


def export(tmp_path, model: CrossCoder, name: str = "out"):
    """Save `model` as a CrossDiff folder, export it; return (export result, the state dict their loader reads)."""
    model.save_pretrained(tmp_path / "crossdiff")
    result = export_dictionary_learning(tmp_path / "crossdiff", tmp_path / name)
    return result, torch.load(result.weights_file, map_location="cpu", weights_only=True)


VARIANTS = {
    "dfc-batchtopk-scaled": dict(exclusive=(6, 3), sparsity="batchtopk", scales=(0.37, 2.9)),
    "standard-l1-unscaled": dict(exclusive=(0, 0), sparsity="l1", scales=(1.0, 1.0)),
    "dfc-a-only-l1-one-scaled": dict(exclusive=(5, 0), sparsity="l1", scales=(1.0, 0.6)),
    "standard-batchtopk-small-scales": dict(exclusive=(0, 0), sparsity="batchtopk", scales=(0.05, 0.12)),
}
CLASSES = {"dfc-batchtopk-scaled": "DedicatedFeatureBatchTopKCrossCoder", "standard-l1-unscaled": "CrossCoder",
           "dfc-a-only-l1-one-scaled": "DedicatedFeatureCrossCoder",
           "standard-batchtopk-small-scales": "BatchTopKCrossCoder"}  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_reference_inference_on_the_export_equals_crossdiff(tmp_path, variant):
    model = crosscoder(**VARIANTS[variant])
    result, sd = export(tmp_path, model)
    assert result.dict_class == CLASSES[variant]
    latents, recon = max_diffs(model, sd)
    assert latents < EXACT and recon < EXACT, (latents, recon)

    # their names, shapes and dtypes, as their state_dict() writes them
    partition = sd.get("_partition_config")
    expected = dfc_state_dict(
        torch.zeros(2, D, F), torch.zeros(F), torch.zeros(2, F, D), torch.zeros(2, D),
        activation_mean=torch.zeros(2, D), activation_std=torch.ones(2, D),
        k=K if "batchtopk" in variant else None, partition=partition,
    )  # fmt: skip
    tensors = {key: (tuple(value.shape), value.dtype) for key, value in sd.items() if key != "_partition_config"}
    assert tensors == {key: (tuple(v.shape), v.dtype) for key, v in expected.items() if key != "_partition_config"}
    if model.n_a + model.n_b:
        assert set(partition) == {"dict_size", "model_a_exclusive_pct", "model_b_exclusive_pct"}
        sizes = (int(F * partition["model_a_exclusive_pct"]), int(F * partition["model_b_exclusive_pct"]))
        assert sizes == (model.n_a, model.n_b)  # as their FeaturePartition.from_percentages computes them
    else:
        assert partition is None
    if result.normalization == "relative-variance":  # what they divide reconstructions by is CrossDiff's scale
        assert torch.equal(sd["activation_global_scale"] + 1e-8, torch.stack([model.scale_a, model.scale_b]))
        g = sd["target_rms"] / torch.sqrt((sd["activation_std"] ** 2).sum(dim=-1) + 1e-8)
        torch.testing.assert_close(g, sd["activation_global_scale"])  # the statistics agree with the scale
    else:
        assert torch.isnan(sd["activation_mean"]).all() and torch.isnan(sd["activation_std"]).all()
    if variant == "standard-batchtopk-small-scales":
        assert not torch.equal(sd["activation_global_scale"], torch.stack([model.scale_a, model.scale_b]))


@pytest.mark.parametrize("variant", ["dfc-batchtopk-scaled", "standard-batchtopk-small-scales"])
def test_import_dl_of_the_export_gives_the_crosscoder_back(tmp_path, variant):
    model = crosscoder(**VARIANTS[variant])
    result, _ = export(tmp_path, model)
    back = import_dictionary_learning(result.folder)
    fields = ("d_a", "d_b", "dict_size", "n_exclusive_a", "n_exclusive_b", "sparsity", "k")
    assert {key: getattr(back.config, key) for key in fields} == {key: getattr(model.config, key) for key in fields}
    assert all(torch.equal(getattr(back, name), getattr(model, name)) for name in ("scale_a", "scale_b", "threshold"))
    x_a, x_b = raw_inputs(model)
    with torch.no_grad():
        f_BF, back_f_BF = model.encode(x_a, x_b), back.encode(x_a, x_b)
        recon, back_recon = model.decode(f_BF), back.decode(back_f_BF)
    if variant == "dfc-batchtopk-scaled":  # scales above 0.2 are their own global scale: nothing is rounded
        assert all(torch.equal(tensor, back.state_dict()[name]) for name, tensor in model.state_dict().items())
        assert torch.equal(f_BF, back_f_BF) and all(map(torch.equal, recon, back_recon))
    else:  # the encoder was multiplied by s / g and back by g / s
        torch.testing.assert_close(back_f_BF, f_BF, rtol=1e-6, atol=1e-6)
        for ours, theirs in zip(recon, back_recon):
            torch.testing.assert_close(theirs, ours, rtol=1e-6, atol=1e-5)


def test_exclusive_fractions_give_the_block_sizes_for_every_size():
    for size in range(1, 260):
        for n in range(size + 1):
            assert int(size * _exclusive_pct(n, size)) == n, (n, size)


def run(capsys, *argv) -> tuple[int, str, str]:
    """Return (exit code, stdout, stderr) of one CLI call."""
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_export_dl_command_writes_the_checkpoint_and_its_provenance(tmp_path, capsys):
    model = crosscoder()
    folder, out = tmp_path / "dfc", tmp_path / "exported"
    model.save_pretrained(folder)
    code, stdout, err = run(capsys, "export-dl", str(folder), str(out))
    assert code == 0, err
    assert stdout.strip() == str(out / "model_final.pt")
    assert "as a DedicatedFeatureBatchTopKCrossCoder (6 A-exclusive, 39 shared, 3 B-exclusive latents" in err
    assert "CrossDiff shared latent i is their latent i + 3, CrossDiff B-exclusive latent i is i - 39" in err
    assert sorted(path.name for path in out.iterdir()) == [
        "config.json", "export.json", "latent_mapping.json", "model_final.pt"
    ]  # fmt: skip

    record = json.loads((out / "export.json").read_text())
    assert record["source_weights_sha256"] == file_sha256(folder / "model.safetensors")
    assert record["sha256"] == file_sha256(out / "model_final.pt") and record["source"] == str(folder)
    assert (record["dict_class"], record["k"], record["normalization"]) == (
        "DedicatedFeatureBatchTopKCrossCoder", K, "relative-variance"
    )  # fmt: skip
    assert (record["model_a"], record["model_b"], record["layer_a"]) == ("org/base", "org/chat", 13)
    mapping = json.loads((out / "latent_mapping.json").read_text())
    assert mapping["crossdiff_to_source"] == source_latent_order(6, 3, F)
    trainer = json.loads((out / "config.json").read_text())["trainer"]
    assert trainer["dict_class"] == "DedicatedFeatureBatchTopKCrossCoder" and trainer["activation_dim"] == D

    # import-dl reads the exported folder back (config.json says which class it is)
    code, _, err = run(capsys, "import-dl", str(out), str(tmp_path / "back"))
    assert code == 0, err
    back = CrossCoder.from_pretrained(str(tmp_path / "back"))
    x_a, x_b = raw_inputs(model)
    with torch.no_grad():
        assert torch.equal(back.encode(x_a, x_b), model.encode(x_a, x_b))


def test_bad_inputs_say_what_to_do(tmp_path, capsys):
    folder = tmp_path / "dfc"
    crosscoder().save_pretrained(folder)
    (tmp_path / "taken.txt").write_text("x")
    code, _, err = run(capsys, "export-dl", str(folder), str(tmp_path / "taken.txt"))
    assert code == 2 and "taken.txt already exists and is a file: pick a new folder or delete it first" in err
    code, _, err = run(capsys, "export-dl", str(folder), str(folder))
    assert code == 2 and "already exists and is a folder that is not empty" in err
    (tmp_path / "not-a-crosscoder").mkdir()
    (tmp_path / "not-a-crosscoder" / "notes.txt").write_text("x")
    code, _, err = run(capsys, "export-dl", str(tmp_path / "not-a-crosscoder"), str(tmp_path / "out"))
    assert code == 2 and "is not a CrossDiff crosscoder: it has no config.json" in err
    assert not (tmp_path / "out").exists(), "nothing is written for a refused export"

    wide = CrossCoder(CrossCoderConfig(d_a=D, d_b=D + 4, dict_size=F, k=K), seed=0)
    with pytest.raises(CrossCoderError, match=r"width 16 and model B with width 20; .* cannot be exported"):
        dictionary_learning_checkpoint(wide)
    tiny = crosscoder(scales=(1e-9, 1.0))
    with pytest.raises(CrossCoderError, match=r"scale_a = 1e-09; dictionary_learning divides .* by \(global scale"):
        dictionary_learning_checkpoint(tiny)
    broken = crosscoder()
    with torch.no_grad():
        broken.W_dec_b[0, 0] = math.nan
    with pytest.raises(CrossCoderError, match="NaN or infinite values in W_dec_b; the crosscoder is broken"):
        dictionary_learning_checkpoint(broken)
