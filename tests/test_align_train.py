"""``iqalens align`` on a small mini model (64 px crops) and a tiny benchmark: freezing, objectives,
resume, LoRA, torchrun, and checkpoints every command loads."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from align_bench import SMALL_MINI, build_align_bench
from iqalens.align.base import AlignableModel
from iqalens.align.config import AlignConfig
from iqalens.align.mini import MiniAlignable
from iqalens.align.train import align
from iqalens.images import load_rgb
from iqalens.models.loading import load_model
from iqalens.models.mini import MiniVLM
from iqalens.taxonomy import CLASSES
from tolerances import MINI_VLM_DEPTH, float32_atol


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_align_bench(tmp_path_factory.mktemp("align") / "bench")


@pytest.fixture(scope="module")
def template() -> MiniVLM:
    return MiniVLM(SMALL_MINI, model_id="mini-test")


def fresh(template: MiniVLM) -> MiniAlignable:
    return MiniAlignable(copy.deepcopy(template))


def tiny(**kw: object) -> AlignConfig:
    base: dict[str, object] = {
        "max_steps": 4,
        "batch_size": 4,
        "eval_every": 2,
        "checkpoint_every": 2,
        "lr": 3e-3,
        "progress": False,
        "max_val_images": 4,
    }
    return AlignConfig(**(base | kw))  # type: ignore[arg-type]


def _images(manifest: Path, n: int = 3) -> list[np.ndarray]:
    folder = manifest.parent / "images"
    return [load_rgb(p) for p in sorted(folder.glob("*.png"))[:n]]


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_mini_wrapper_scores_are_the_forced_choice_scores(template: MiniVLM, bench: Path) -> None:
    """The template loss trains what ``perceive`` scores, from pixels and from cached encoder outputs."""
    model = fresh(template)
    assert isinstance(model, AlignableModel)
    images = _images(bench)
    labels = torch.tensor([0, 1, 2])
    expected = template.class_log_scores(images, list(CLASSES))
    inputs = model.prepare(images)
    assert inputs["pixels"].dtype == torch.uint8
    with torch.no_grad():
        direct = model.forward_align(inputs, labels, CLASSES)
        cached = model.forward_align(model.encode_frozen(inputs), labels, CLASSES)
    # The training forward (and the one from cached encoder outputs) is another code path: the mini
    # VLM's float32 bound on cosine scores (tests/tolerances.py: 2.2e-4).
    tol = float32_atol(MINI_VLM_DEPTH, expected)
    np.testing.assert_allclose(direct.class_scores.numpy(), expected, rtol=0, atol=tol)
    np.testing.assert_allclose(cached.class_scores.numpy(), expected, rtol=0, atol=tol)
    assert direct.visual.shape == (3, 384) and direct.encoder_features.shape == (3, 1280)
    np.testing.assert_allclose(
        model.class_word_embeddings(CLASSES).detach().numpy(), template.word_embeddings(CLASSES), atol=1e-6
    )


def test_frozen_components_stay_bit_identical(template: MiniVLM, bench: Path, tmp_path: Path) -> None:
    model = fresh(template)
    cfg = tiny(train=("vision_encoder", "language_model"), max_steps=2)
    metrics = align(model, bench, tmp_path / "run", cfg)
    assert metrics["frozen_unchanged"] == {"projector": True}
    assert _same(model.model.projector, template.projector)
    assert not _same(model.model.encoder, template.encoder)
    assert not _same(model.model.lm, template.lm)
    # BatchNorm statistics are buffers of a frozen computation: training never updates them.
    torch.testing.assert_close(
        model.model.encoder._bn1.running_mean, template.encoder._bn1.running_mean, rtol=0, atol=0
    )
    saved = json.loads((tmp_path / "run" / "model" / "mini.json").read_text())
    assert saved["components"] == ["projector", "vision_encoder", "language_model"]
    assert saved["align"]["train"] == ["vision_encoder", "language_model"] and saved["model_id"].endswith(
        "[V+L]"
    )
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert log[0].split(",") == [
        "step",
        "lr",
        "loss",
        "template",
        "align",
        "constraint",
        "val_accuracy",
        "val_loss",
    ]
    first = dict(zip(log[0].split(","), log[2].split(","), strict=True))
    # the feature-drift constraint is zero before the first update (same encoder, same images)
    assert first["step"] == "1" and float(first["constraint"]) < 1e-6
    last = dict(zip(log[0].split(","), log[-1].split(","), strict=True))
    assert float(last["constraint"]) > 0


def test_projector_run_uses_cached_encoder_outputs_and_loads_everywhere(
    template: MiniVLM, bench: Path, tmp_path: Path
) -> None:
    model = fresh(template)
    run = tmp_path / "run"
    metrics = align(
        model, bench, run, tiny(train=("projector",)), checkpoint_id="t", cache_dir=tmp_path / "cache"
    )
    assert metrics["data"]["inputs"] == "encoded" and Path(metrics["data"]["inputs_file"]).is_file()
    assert metrics["frozen_unchanged"] == {"vision_encoder": True, "language_model": True}
    assert not _same(model.model.projector, template.projector)
    assert not (run / "state" / "inputs-encoded.pt").exists()  # kept in the cache, not the run
    images = _images(bench, 2)
    expected = model.model.class_log_scores(images, list(CLASSES))
    ids = set()
    for spec in (str(run), str(run / "model"), f"mini:{run}", f"mini:{run / 'model'}"):
        loaded, ckpt_id = load_model(spec)
        ids.add(ckpt_id)
        assert loaded.model_id == "mini-test+align[P]"
        np.testing.assert_allclose(loaded.class_log_scores(images, list(CLASSES)), expected, atol=1e-6)
    assert len(ids) == 1


def test_interrupted_run_resumes_to_the_same_weights(template: MiniVLM, bench: Path, tmp_path: Path) -> None:
    cfg = tiny(train=("vision_encoder", "projector"), max_steps=4, eval_every=2, checkpoint_every=2)
    align(fresh(template), bench, tmp_path / "straight", cfg)

    class Crash(RuntimeError):
        pass

    def crash_at_3(step: int, terms: dict[str, float]) -> None:
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        align(fresh(template), bench, tmp_path / "resumed", cfg, on_step=crash_at_3)
    state = torch.load(tmp_path / "resumed" / "state" / "state.pt", weights_only=False)
    assert state["progress"]["step"] == 2 and not (tmp_path / "resumed" / "model").exists()
    metrics = align(fresh(template), bench, tmp_path / "resumed", cfg)
    assert metrics["steps_run"] == 4
    a = load_file(tmp_path / "straight" / "model" / "mini.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "mini.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    config = json.loads((tmp_path / "resumed" / "config.json").read_text())
    assert config["config"]["resumed_from_step"] == 2
    # finished: the state is a small record, and running again trains no further
    assert (tmp_path / "resumed" / "state" / "state.pt").stat().st_size < 100_000
    assert align(fresh(template), bench, tmp_path / "resumed", cfg)["steps_run"] == 4
    with pytest.raises(ValueError, match="other settings"):
        align(fresh(template), bench, tmp_path / "resumed", tiny(train=("projector",)))
    # a run written before a setting existed reads it as the default (the old behaviour) ...
    path = tmp_path / "resumed" / "state" / "state.pt"
    old_state = torch.load(path, weights_only=False)
    for added in ("balance_classes", "projector_tap_pool"):
        del old_state["config"][added]
    torch.save(old_state, path)
    assert align(fresh(template), bench, tmp_path / "resumed", cfg)["steps_run"] == 4
    # ... and a run that sets it otherwise is still refused
    balanced = AlignConfig(**{**cfg.to_dict(), "balance_classes": True})
    with pytest.raises(ValueError, match="other settings"):
        align(fresh(template), bench, tmp_path / "resumed", balanced)


def test_lora_trains_adapters_only_and_the_merged_checkpoint_reproduces_them(
    template: MiniVLM, bench: Path, tmp_path: Path
) -> None:
    model = fresh(template)
    images = _images(bench, 3)
    seen: dict[str, np.ndarray] = {}

    def record(step: int, terms: dict[str, float]) -> None:
        if step == 3:  # the last step, adapters still separate (best = last: one evaluation)
            seen["scores"] = model.model.class_log_scores(images, list(CLASSES))
            seen["trainable"] = np.array(
                [".lora_" in n for n, p in model.model.named_parameters() if p.requires_grad]
            )

    cfg = tiny(
        train=("vision_encoder", "projector"),
        lora=("vision_encoder",),
        lora_rank=4,
        max_steps=3,
        eval_every=50,
        lr=1e-2,
    )
    metrics = align(model, bench, tmp_path / "run", cfg, on_step=record)
    assert metrics["frozen_unchanged"] == {"language_model": True, "vision_encoder (base under LoRA)": True}
    # trainable: the encoder's adapters and the projector's full weights, nothing else
    n_lora = int(seen["trainable"].sum())
    assert n_lora > 0 and len(seen["trainable"]) - n_lora == len(list(template.projector.parameters()))
    assert not _same(model.model.encoder, template.encoder)  # merged
    saved = json.loads((tmp_path / "run" / "model" / "mini.json").read_text())
    assert saved["align"]["lora"] == ["vision_encoder"] and saved["align"]["lora_settings"]["rank"] == 4
    loaded = MiniVLM.load(tmp_path / "run" / "model")
    assert not any("lora" in k for k in loaded.state_dict())
    after = loaded.class_log_scores(images, list(CLASSES))
    # merged (W + s B A rounded once, one product instead of two): the mini VLM's float32 bound on
    # cosine scores (tests/tolerances.py: 2.2e-4); training moved them by far more
    tol = float32_atol(MINI_VLM_DEPTH, after)
    assert np.abs(after - template.class_log_scores(images, list(CLASSES))).max() > 10 * tol
    np.testing.assert_allclose(after, seen["scores"], rtol=0, atol=tol)


def test_weight_constraint_and_early_stopping(template: MiniVLM, bench: Path, tmp_path: Path) -> None:
    # lr 0: nothing changes, the first evaluation is the best, the next does not improve -> stop
    cfg = tiny(
        train=("vision_encoder",), constraint="weights", lr=0.0, max_steps=20, eval_every=1, patience=1
    )
    metrics = align(fresh(template), bench, tmp_path / "run", cfg)
    assert metrics["stopped_early"] and metrics["steps_run"] == 2 and metrics["best_step"] == 1
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()[2:]
    assert all(float(line.split(",")[5]) == 0.0 for line in log)  # L2-SP of unchanged weights


def test_logit_constraint_reads_the_frozen_classifier_and_keeps_predictions(
    template: MiniVLM, bench: Path, tmp_path: Path
) -> None:
    # the KL term is 0 at step 1 (the encoder is unchanged), positive once the encoder moves, and the
    # classifier it reads never trains (a trainable one could flatten itself to lower the KL)
    cfg = tiny(train=("vision_encoder", "projector"), constraint="logits", w_constraint=1.0, max_steps=4)
    model = fresh(template)
    metrics = align(model, bench, tmp_path / "run", cfg, cache_dir=tmp_path / "cache")
    log = [line.split(",") for line in (tmp_path / "run" / "train_log.csv").read_text().splitlines()[2:]]
    drift = [float(row[5]) for row in log]
    assert drift[0] == pytest.approx(0.0, abs=1e-6) and max(drift) > 0.0
    # an Adam step moves a trained weight by about lr (3e-3); the classifier stays within 1e-5 (the
    # same sub-1e-6 drift as in a features-constrained run, measured: it is not trained by the KL)
    fc, fc0 = model.model.encoder._fc, template.encoder._fc
    assert (fc.weight - fc0.weight).abs().max() < 1e-5 and (fc.bias - fc0.bias).abs().max() < 1e-5
    assert not torch.equal(model.model.encoder._conv_head.weight, template.encoder._conv_head.weight)
    assert metrics["steps_run"] == 4


class _NoClassifier(MiniAlignable):
    """A model whose encoder has no classifier of its own (as an HF vision tower)."""

    @property
    def encoder_classifier(self) -> None:  # type: ignore[override]
        raise AttributeError("no classifier")


def test_logit_constraint_needs_an_encoder_classifier(template: MiniVLM, bench: Path, tmp_path: Path) -> None:
    model = _NoClassifier(copy.deepcopy(template))
    cfg = tiny(train=("vision_encoder",), constraint="logits", w_constraint=1.0)
    with pytest.raises(ValueError, match="needs an encoder with its own classifier"):
        align(model, bench, tmp_path / "run", cfg)


_DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from iqalens.align.config import AlignConfig
    from iqalens.align.mini import MiniAlignable
    from iqalens.align.train import align
    from iqalens.models.mini import MiniConfig, MiniVLM
    cfg = AlignConfig.from_dict(json.loads(sys.argv[2]))
    model = MiniVLM(MiniConfig.from_dict(json.loads(sys.argv[3])), model_id="mini-test")
    align(MiniAlignable(model), sys.argv[1], sys.argv[4], cfg)
    """
)


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(template: MiniVLM, bench: Path, tmp_path: Path) -> None:
    """2 CPU processes (gloo), each half of every batch, averaged gradients -> the one-process weights."""
    cfg = tiny(train=("projector", "language_model"), max_steps=3, eval_every=3)
    align(fresh(template), bench, tmp_path / "single", cfg)
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    from dataclasses import asdict

    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
    ]
    cmd += [str(bench), json.dumps(cfg.to_dict()), json.dumps(asdict(SMALL_MINI)), str(tmp_path / "ddp")]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["config"]["world_size"] == 2
    a = load_file(tmp_path / "single" / "model" / "mini.safetensors")
    b = load_file(tmp_path / "ddp" / "model" / "mini.safetensors")
    # Adam turns float-summation noise in (theoretically) zero gradients, e.g. of attention key
    # biases, into tiny steps; 3 steps at lr 3e-3 move trained weights by up to ~1e-2.
    # Not derivable from the float32 bound (tests/tolerances.py): Adam's division by sqrt(v) + 1e-8
    # amplifies the rounding of a near-zero gradient by up to lr / 1e-8. Measured on 2026-12-04:
    # <= 4e-5 (projector weights), 5 times below this tolerance (docs/testing.md).
    moved = 0.0
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-4), k
        moved = max(moved, float((a[k] - load_file_base(template, k)).abs().max()))
    assert moved > 2e-3


def load_file_base(template: MiniVLM, key: str) -> torch.Tensor:
    comp, _, name = key.partition(".")
    return template.component(comp).state_dict()[name]


def test_mixed_precision_autocast_path(template: MiniVLM, bench: Path, tmp_path: Path) -> None:
    """bf16 autocast (the CUDA default; opt-in on CPU) trains and saves float32 weights."""
    model = fresh(template)
    metrics = align(model, bench, tmp_path / "run", tiny(train=("projector",), max_steps=2, precision="bf16"))
    assert metrics["precision"] == "bfloat16"
    weights = load_file(tmp_path / "run" / "model" / "mini.safetensors")
    assert all(v.dtype == torch.float32 for v in weights.values())
    assert not _same(model.model.projector, template.projector)


def test_encoder_trunk_continues_exactly_where_the_full_encoder_would() -> None:
    """``encode_trunk`` + ``encode_from`` at every split site == one full ``encode`` pass."""
    model = MiniVLM(SMALL_MINI, model_id="mini-test")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled, head = model.encode(x)
        for sites in range(1, model.vision_sites):
            rest, head2 = model.encode_from(model.encode_trunk(x, sites), sites)
            assert len(rest) == model.vision_sites - sites
            torch.testing.assert_close(head2, head, rtol=0, atol=1e-5)
            for a, b in zip(pooled[sites:], rest, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="sites must be in"):
        model.encode_trunk(x, model.vision_sites)


def test_partly_frozen_encoder_trains_on_cached_trunks_and_keeps_its_first_sites(
    template: MiniVLM, bench: Path, tmp_path: Path
) -> None:
    model = fresh(template)
    cfg = tiny(train=("vision_encoder", "projector"), encoder_frozen_sites=5, w_constraint=1.0)
    metrics = align(model, bench, tmp_path / "run", cfg, checkpoint_id="t", cache_dir=tmp_path / "cache")
    assert metrics["data"]["inputs"] == "trunk" and "trunk5" in metrics["data"]["inputs_file"]
    assert metrics["frozen_unchanged"] == {"language_model": True, "vision_encoder (first 5 sites)": True}
    stem = model.model.encoder._conv_stem.weight
    assert torch.equal(stem, template.encoder._conv_stem.weight)
    assert not torch.equal(model.model.encoder._conv_head.weight, template.encoder._conv_head.weight)
    # the saved checkpoint is a whole model: it reads pixels like any other
    images = _images(bench, 2)
    loaded, _ = load_model(str(tmp_path / "run"))
    np.testing.assert_allclose(
        loaded.class_log_scores(images, list(CLASSES)),
        model.model.class_log_scores(images, list(CLASSES)),
        atol=1e-5,
    )


def test_encoder_frozen_sites_needs_the_encoder_trained() -> None:
    with pytest.raises(ValueError, match="vision encoder"):
        tiny(train=("projector",), encoder_frozen_sites=3)
    with pytest.raises(ValueError, match="LoRA"):
        tiny(train=("vision_encoder",), lora=("vision_encoder",), encoder_frozen_sites=3)


def test_quality_target_trains_on_mos_levels_not_distortion_classes(
    template: MiniVLM, bench: Path, tmp_path: Path
) -> None:
    """``target="quality"``: labels are the MOS cut into five levels, answered with quality words."""
    from iqalens.align.data import QUALITY_WORDS, label_of, select_rows
    from iqalens.datasets.manifest import ManifestRow, MosScale

    scale = MosScale(1.0, 5.0)
    assert [label_of(ManifestRow("a", "r", "s", mos=m, mos_scale=scale), "quality") for m in (1, 2.7, 5)] == [
        0,
        2,
        4,
    ]
    assert label_of(ManifestRow("a", "r", "s", perception_class="noise"), "quality") is None  # no MOS
    train, _ = select_rows(bench, target="quality")
    assert train.names == QUALITY_WORDS and set(train.labels.tolist()) <= set(range(5))
    metrics = align(
        fresh(template), bench, tmp_path / "run", tiny(train=("language_model",), target="quality")
    )
    assert list(metrics["data"]["train_classes"]) == list(QUALITY_WORDS)
    with pytest.raises(ValueError, match="target"):
        tiny(target="mood")
