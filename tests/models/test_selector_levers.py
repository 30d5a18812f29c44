"""Selection levers (``selection.evidence``, ``selection.rule``, ``selection.reprojection_align``,
``selection.unfolder_stride``, ``loss.selection_target``): their options, the
selector's shapes and bookkeeping with evidence, the RankNet term, the training-free reprojection rule, and one tiny
selection run per lever through ``hmh train`` on a given generator.

There is no slot-shuffling option: the selector is permutation-equivariant and its loss permutation-invariant
(tested here), so shuffling the hypotheses during training cannot change what it learns.
"""

import json
from dataclasses import fields, replace

import pytest
import torch
from tiny import TINY_MODEL

from hmh.cli import main
from hmh.config import ConfigError, flatten, from_dict, load_config, to_dict
from hmh.models.backbone import Backbone
from hmh.models.build import build_models
from hmh.models.checkpoint import load_checkpoint
from hmh.models.generator import GeneratorOutput
from hmh.models.selector import (
    REPROJECTION_FEATURES,
    Selector,
    SelectorOutput,
    aligned_to_evidence,
    reprojection_errors,
    reprojection_features,
    reprojection_reward,
)
from hmh.models.unfolder import STRIDE4_STAGE, FrameDecoder
from hmh.train.engine import selection_skipped
from hmh.train.loop import evaluate, infer, seed_everything
from hmh.train.losses import ranknet_loss, selection_loss
from hmh.train.runner import build_datasets, data_root, make_loader

S, E, B, K, T, J = 64, 32, 2, 3, 3, 21
CPU = torch.device("cpu")
K_FIELDS = ("pose", "joints", "vertices", "joints_2d", "features")  # GeneratorOutput's per-hypothesis tensors


def tiny_cfg(*overrides: str):
    return load_config(None, [
        "model.backbone=resnet18", f"model.image_size={S}", f"model.embed_dim={E}", "model.num_heads=4",
        "model.mht_blocks=1", f"model.num_hypotheses={K}", "selection.top_n=1", "selection.decoder_blocks=1",
        "train.device=cpu", *overrides,
    ])


@pytest.fixture(scope="module")
def generator():
    seed_everything(0)
    return build_models(tiny_cfg())[0].eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(B, 3, S, S, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def gen_out(generator, images):
    with torch.no_grad():
        return generator(images)


def _batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(B, 3, S, S, generator=g), "joints_3d": torch.randn(B, T, J, 3, generator=g) * 0.05,
            "joints_2d": torch.rand(B, T, J, 2, generator=g) * S, "joint_valid": torch.ones(B, T, J)}


def _permuted(out: GeneratorOutput, perm: torch.Tensor) -> GeneratorOutput:
    """``out`` with its hypotheses in the order ``perm (B, K)`` (one permutation per sample)."""
    def take(name: str, value: torch.Tensor) -> torch.Tensor:
        if name not in K_FIELDS:
            return value
        index = perm.reshape(*perm.shape, *([1] * (value.dim() - 2))).expand_as(value)
        return value.gather(1, index)

    return GeneratorOutput(**{f.name: take(f.name, getattr(out, f.name)) for f in fields(out)})


def _selector(evidence: str, seed: int = 1) -> Selector:
    cfg = tiny_cfg(f"selection.evidence={evidence}")
    torch.manual_seed(seed)
    return Selector(cfg.model, cfg.selection).eval()


# --- options ------------------------------------------------------------------------------------------------------

def test_defaults_are_the_published_method():
    cfg = tiny_cfg()
    assert (cfg.selection.evidence, cfg.selection.rule, cfg.selection.init_from_generator) == ("none", "learned", True)
    assert (cfg.selection.reprojection_align, cfg.selection.unfolder_stride, cfg.selection.set_blocks) == ("none", 8, 0)
    assert (cfg.loss.selection_target, cfg.loss.rank_weight) == ("jrc", 0.0)
    assert selection_skipped(cfg) == ""


@pytest.mark.parametrize(("override", "message"), [
    ("selection.evidence=pixels", "selection.evidence='pixels' is invalid: expected one of none, reprojection, "
                                  "sampled, both"),
    ("selection.rule=oracle", "selection.rule='oracle' is invalid: expected one of learned, reprojection, combined"),
    ("selection.reprojection_align=affine", "selection.reprojection_align='affine' is invalid: expected one of none, "
                                            "similarity"),
    ("selection.unfolder_stride=2", "selection.unfolder_stride=2 is invalid: expected one of 8, 4"),
    ("selection.set_blocks=-1", "selection.set_blocks=-1 is invalid: expected >= 0"),
    ("loss.selection_target=listwise", "loss.selection_target='listwise' is invalid: expected one of jrc, "
                                       "jrc_graded"),
    ("loss.rank_weight=0.5", "loss.rank_weight=0.5 is invalid: expected 0 unless loss.selection_target=jrc_graded"),
])
def test_a_bad_lever_value_is_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as raised:
        tiny_cfg(override)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_negative_rank_weight_is_refused_with_jrc_graded():
    with pytest.raises(ConfigError, match="loss.rank_weight=-1.0 is invalid: expected a loss weight >= 0"):
        tiny_cfg("loss.selection_target=jrc_graded", "loss.rank_weight=-1")


def test_a_config_stored_before_the_levers_reads_their_defaults():
    stored = to_dict(tiny_cfg())
    for section, key in (("selection", "evidence"), ("selection", "rule"), ("selection", "reprojection_align"),
                         ("selection", "unfolder_stride"), ("selection", "set_blocks"), ("loss", "selection_target"),
                         ("loss", "rank_weight")):
        del stored[section][key]
    assert from_dict(stored) == tiny_cfg()


def test_the_default_selector_has_no_evidence_weights_so_older_checkpoints_load():
    plain = _selector("none")
    assert plain.reprojection_evidence is None and plain.sampled_evidence is None and plain.set_norm is None
    assert not any("evidence" in key or key.startswith("set_") for key in plain.state_dict())
    _selector("none", seed=2).load_state_dict(plain.state_dict())  # strict: the same keys as before the levers


# --- evidence -----------------------------------------------------------------------------------------------------

def test_reprojection_features_shapes_and_values():
    joints = torch.zeros(1, 2, T, J, 2)
    evidence = torch.zeros(1, T, J, 2)
    evidence[0, 0] = torch.tensor([6.4, 0.0])  # past frame's evidence 6.4 px to the right: 0.1 crop sides
    got = reprojection_features(joints, evidence, S)
    assert got.shape == (1, 2, T, J, REPROJECTION_FEATURES)
    assert torch.allclose(got[0, :, 0, :, :3], torch.tensor([-0.1, 0.0, 0.1]).expand(2, J, 3))
    assert torch.allclose(got[0, :, 2, :, 3], torch.full((2, J), 0.1))  # the future frame against the past's
    far = reprojection_features(joints + 1000.0, evidence, S)
    assert float(far[..., :2].abs().max()) == 1.0


@pytest.mark.parametrize("evidence", ["reprojection", "sampled", "both"])
def test_selector_with_evidence_shapes_and_shared_weights(evidence, images, gen_out):
    sel, plain = _selector(evidence), _selector("none")
    assert (sel.reprojection_evidence is not None) == (evidence in ("reprojection", "both"))
    assert (sel.sampled_evidence is not None) == (evidence in ("sampled", "both"))
    for key, value in plain.state_dict().items():  # built last: the method's weights start as without evidence
        assert torch.equal(value, sel.state_dict()[key]), key
    with torch.no_grad():
        out = sel(images, gen_out)
    assert out.logits.shape == (B, K, 2) and out.reward.shape == (B, K)
    assert out.unfolder_joints_2d.shape == (B, T, J, 2)


@pytest.mark.parametrize("evidence", ["none", "reprojection", "sampled", "both"])
def test_evidence_makes_the_reward_see_where_a_hypothesis_projects(evidence, images, gen_out):
    sel = _selector(evidence)
    moved = GeneratorOutput(**{f.name: getattr(gen_out, f.name).clone() for f in fields(gen_out)})
    moved.joints_2d[:, 1] += 9.0  # hypothesis 1 projects elsewhere; nothing else changes
    with torch.no_grad():
        ref, got = sel(images, gen_out).logits, sel(images, moved).logits
    assert torch.allclose(ref[:, [0, 2]], got[:, [0, 2]], atol=1e-6)  # other hypotheses untouched
    assert torch.allclose(ref[:, 1], got[:, 1], atol=1e-6) == (evidence == "none")


@pytest.mark.parametrize("evidence", ["none", "reprojection", "sampled", "both"])
def test_permuting_hypotheses_per_sample_permutes_rewards(evidence, images, gen_out):
    sel = _selector(evidence)
    perm = torch.tensor([[2, 0, 1], [1, 2, 0]])
    with torch.no_grad():
        ref = sel(images, gen_out).reward
        got = sel(images, _permuted(gen_out, perm)).reward
    assert torch.allclose(ref.gather(1, perm), got, atol=1e-5)


# --- comparing the hypotheses ----------------------------------------------------------------------------------

def _set_selector(blocks: int, seed: int = 1) -> Selector:
    cfg = tiny_cfg("selection.evidence=both", f"selection.set_blocks={blocks}")
    torch.manual_seed(seed)
    return Selector(cfg.model, cfg.selection).eval()


@pytest.mark.parametrize("blocks", [0, 1, 2])
def test_set_blocks_let_each_reward_see_the_other_hypotheses_of_its_image_alone(blocks, images, gen_out):
    sel = _set_selector(blocks)
    moved = GeneratorOutput(**{f.name: getattr(gen_out, f.name).clone() for f in fields(gen_out)})
    moved.joints_2d[1, 1] += 9.0  # image 1's hypothesis 1 projects elsewhere; nothing else changes
    with torch.no_grad():
        ref, got = sel(images, gen_out).logits, sel(images, moved).logits
    assert torch.allclose(ref[0], got[0], atol=1e-6)  # never another image's
    assert not torch.allclose(ref[1, 1], got[1, 1], atol=1e-6)
    assert torch.allclose(ref[1, [0, 2]], got[1, [0, 2]], atol=1e-6) == (blocks == 0)  # the others see it
    perm = torch.tensor([[2, 0, 1], [1, 2, 0]])  # and slot order still carries nothing
    with torch.no_grad():
        assert torch.allclose(sel(images, gen_out).reward.gather(1, perm),
                              sel(images, _permuted(gen_out, perm)).reward, atol=1e-5)


def test_set_blocks_are_built_last_so_the_other_weights_start_as_without_them():
    plain, compared = _set_selector(0).state_dict(), _set_selector(1).state_dict()
    extra = set(compared) - set(plain)
    assert extra and all(key.startswith(("set_blocks.", "set_norm.")) for key in extra)
    assert all(torch.equal(plain[key], compared[key]) for key in plain)


@pytest.mark.parametrize("target", ["jrc", "jrc_graded"])
def test_the_selection_loss_ignores_slot_order(target, images, gen_out):
    """Why there is no slot-shuffling option: shuffled hypotheses (and, with them, their labels and errors) give
    the same loss and the same gradients."""
    cfg = tiny_cfg("selection.evidence=both", f"loss.selection_target={target}",
                   f"loss.rank_weight={1.0 if target == 'jrc_graded' else 0.0}")
    batch = _batch()
    batch["image"] = images
    perm = torch.tensor([[2, 0, 1], [1, 2, 0]])
    results = []
    for out in (gen_out, _permuted(gen_out, perm)):
        sel = _selector("both")
        losses = selection_loss(sel(images, out), out, batch, cfg.loss, top_n=1)
        losses["total"].backward()
        results.append((losses, {n: p.grad.clone() for n, p in sel.named_parameters() if p.grad is not None}))
    (ref, ref_grads), (got, got_grads) = results
    for name in ref:
        assert torch.allclose(ref[name], got[name], atol=1e-6), name
    assert ref_grads.keys() == got_grads.keys()
    for name, grad in ref_grads.items():
        assert torch.allclose(grad, got_grads[name], atol=1e-5, rtol=1e-4), name


# --- graded target ------------------------------------------------------------------------------------------------

def test_ranknet_matches_hand_computed_pairs_with_ties_and_masking():
    logits = torch.zeros(2, 3, 2)
    logits[0, :, 1] = torch.tensor([2.0, 0.0, -1.0])  # s = f1 - f0
    logits[1, :, 1] = torch.tensor([5.0, -5.0, 0.0])
    err = torch.tensor([[1.0, 2.0, 2.0], [3.0, 1.0, 2.0]])  # image 0: 0 < 1 = 2 (a tie makes no pair)
    sp = torch.nn.functional.softplus
    pairs = [sp(torch.tensor(-(2.0 - 0.0))), sp(torch.tensor(-(2.0 + 1.0)))]
    assert torch.allclose(ranknet_loss(logits, err, torch.tensor([True, False])), sum(pairs) / 2)
    both = ranknet_loss(logits, err)
    second = (sp(torch.tensor(-(-5.0 - 5.0))) + sp(torch.tensor(-(-5.0 - 0.0))) + sp(torch.tensor(-(0.0 - 5.0)))) / 3
    assert torch.allclose(both, (sum(pairs) / 2 + second) / 2)
    none = ranknet_loss(logits.requires_grad_(), err, torch.tensor([False, False]))
    none.backward()
    assert float(none.detach()) == 0.0 and float(logits.grad.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="ranknet_loss"):
        ranknet_loss(logits, err[:, :2])


def test_a_better_ordering_has_a_lower_ranknet_loss():
    err = torch.tensor([[1.0, 2.0, 3.0]])
    right = torch.stack([torch.zeros(3), torch.tensor([3.0, 2.0, 1.0])], dim=-1)[None]
    wrong = torch.stack([torch.zeros(3), torch.tensor([1.0, 2.0, 3.0])], dim=-1)[None]
    assert float(ranknet_loss(right, err)) < float(ranknet_loss(wrong, err))


def _selection_losses(cfg, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    out = GeneratorOutput(
        pose=torch.randn(B, K, T, 48, generator=g), shape=torch.randn(B, T, 10, generator=g),
        camera=torch.randn(B, T, 3, generator=g), joints=torch.randn(B, K, T, J, 3, generator=g) * 0.05,
        vertices=torch.randn(B, K, T, 778, 3, generator=g), joints_2d=torch.rand(B, K, T, J, 2, generator=g) * S,
        unfolder_joints_2d=torch.rand(B, T, J, 2, generator=g) * S, features=torch.randn(B, K, T, J, E, generator=g),
        image_features=torch.randn(B, T, J, E, generator=g))
    logits = torch.randn(B, K, 2, generator=g).requires_grad_()
    unfolder = torch.rand(B, T, J, 2, generator=g).mul(S).requires_grad_()
    sel = SelectorOutput(logits, torch.sigmoid(logits[..., 1] - logits[..., 0]), unfolder)
    losses = selection_loss(sel, out, _batch(), cfg.loss, top_n=1)
    losses["total"].backward()
    return losses, logits.grad, unfolder.grad


def test_graded_target_with_zero_weight_is_jrc_exactly():
    jrc, jrc_grad, jrc_aux_grad = _selection_losses(tiny_cfg())
    graded, graded_grad, graded_aux_grad = _selection_losses(tiny_cfg("loss.selection_target=jrc_graded"))
    assert set(jrc) == {"total", "jrc", "aux"} and set(graded) == {"total", "jrc", "aux", "rank"}
    assert float(graded["rank"].detach()) > 0
    for name in jrc:
        assert torch.equal(jrc[name], graded[name]), name
    assert torch.equal(jrc_grad, graded_grad) and torch.equal(jrc_aux_grad, graded_aux_grad)


def test_graded_target_adds_its_weighted_rank_term():
    jrc, jrc_grad, _ = _selection_losses(tiny_cfg())
    graded, graded_grad, _ = _selection_losses(tiny_cfg("loss.selection_target=jrc_graded", "loss.rank_weight=2"))
    assert torch.allclose(graded["total"], jrc["total"] + 2.0 * graded["rank"])
    assert not torch.allclose(jrc_grad, graded_grad)


# --- the reprojection rule ----------------------------------------------------------------------------------------

def _hand_built(offsets_px: list[float], exchanged: int | None = None) -> GeneratorOutput:
    """One image: Unfolder joints on a line, hypothesis k shifted right by ``offsets_px[k]``; hypothesis
    ``exchanged`` has its past and future frames the other way round (no shift)."""
    k = len(offsets_px)
    evidence = torch.stack([torch.linspace(10, 50, J), torch.full((J,), 20.0)], dim=-1)  # (J, 2)
    evidence = torch.stack([evidence, evidence + 4.0, evidence + 8.0])[None]  # (1, T, J, 2): frames differ
    hyp = evidence[:, None].repeat(1, k, 1, 1, 1)  # (1, K, T, J, 2)
    hyp[..., 0] += torch.tensor(offsets_px)[None, :, None, None]
    if exchanged is not None:
        hyp[0, exchanged] = evidence[0].flip(0)
    zeros = torch.zeros
    return GeneratorOutput(pose=zeros(1, k, T, 48), shape=zeros(1, T, 10), camera=zeros(1, T, 3),
                           joints=zeros(1, k, T, J, 3), vertices=zeros(1, k, T, 778, 3), joints_2d=hyp,
                           unfolder_joints_2d=evidence, features=zeros(1, k, T, J, E),
                           image_features=zeros(1, T, J, E))


def test_reprojection_rule_picks_the_hypothesis_nearest_the_2d_evidence():
    out = _hand_built([5.0, 1.0, 3.0, 8.0])
    errors = reprojection_errors(out.joints_2d, out.unfolder_joints_2d, S)
    assert torch.allclose(errors, torch.tensor([[5.0, 1.0, 3.0, 8.0]]) / S)
    reward = reprojection_reward(out, S)
    assert reward.argmax().item() == 1 and reward.argsort(descending=True).tolist() == [[1, 2, 0, 3]]
    assert torch.allclose(reward, 1.0 / (1.0 + 32.0 * errors))
    assert bool(((reward > 0) & (reward <= 1)).all())


def test_reprojection_rule_matches_past_and_future_as_the_labels_do():
    out = _hand_built([2.0, 1.0, 3.0], exchanged=0)  # hypothesis 0 is the evidence played backwards
    assert reprojection_errors(out.joints_2d, out.unfolder_joints_2d, S)[0, 0] == 0.0
    assert reprojection_reward(out, S).argmax().item() == 0


def test_reprojection_rule_ranks_in_infer_and_evaluate_without_a_selector(generator, images):
    rule = tiny_cfg("selection.rule=reprojection")
    assert "selection.rule = reprojection" in selection_skipped(rule)
    out, reward = infer(generator, None, {"image": images}, rule, CPU)
    assert torch.allclose(reward, reprojection_reward(out, S))
    _, learned = infer(generator, None, {"image": images}, tiny_cfg(), CPU)
    assert learned is None
    selector = _selector("none")
    _, ignored = infer(generator, selector, {"image": images}, rule, CPU)  # the rule decides, not the selector
    assert torch.equal(ignored, reward)
    data_cfg = replace(rule, data=replace(rule.data, synthetic_train=8, synthetic_test=4, synthetic_size=S,
                                          synthetic_subframes=3))
    test = build_datasets(data_cfg, data_root(data_cfg, progress=False))["test"]
    metrics = evaluate(generator, None, make_loader(test, data_cfg, train=False, device=CPU), data_cfg, CPU)
    assert "final/mpjpe_current" in metrics and "selection/precision" in metrics


def _resized(out: GeneratorOutput, k: int, scale: float, shift: float) -> GeneratorOutput:
    """``out`` with hypothesis ``k``'s 2D joints scaled about the image origin and shifted: the same 2D shape."""
    joints_2d = out.joints_2d.clone()
    joints_2d[:, k] = joints_2d[:, k] * scale + shift
    return replace(out, joints_2d=joints_2d)


def test_similarity_alignment_compares_the_2d_shape_alone():
    out = _resized(_hand_built([0.0, 1.0, 3.0]), 0, scale=1.5, shift=7.0)  # 0: the evidence's shape, moved and larger
    aligned = aligned_to_evidence(out.joints_2d, out.unfolder_joints_2d, "similarity")
    assert torch.allclose(aligned[:, 0], out.unfolder_joints_2d, atol=1e-4)
    assert torch.equal(aligned_to_evidence(out.joints_2d, out.unfolder_joints_2d, "none"), out.joints_2d)
    plain = reprojection_errors(out.joints_2d, out.unfolder_joints_2d, S)
    shape = reprojection_errors(out.joints_2d, out.unfolder_joints_2d, S, "similarity")
    assert plain[0].argmin().item() == 1 and shape[0].argmin().item() == 0
    assert shape[0, 0] < 1e-5 and shape[0, 1] < 1e-5 and shape[0, 2] < 1e-5  # 1 and 2 are only shifted
    assert torch.allclose(reprojection_reward(out, S, "similarity"), 1.0 / (1.0 + 32.0 * shape))
    features = reprojection_features(out.joints_2d, out.unfolder_joints_2d, S, "similarity")
    assert float(features[0, :, :, :, :3].abs().max()) < 1e-5  # every hypothesis has the evidence's shape
    with pytest.raises(ValueError, match="selection.reprojection_align: expected none or similarity, got 'affine'"):
        aligned_to_evidence(out.joints_2d, out.unfolder_joints_2d, "affine")


def test_similarity_alignment_still_matches_past_and_future():
    evidence = _hand_built([0.0]).unfolder_joints_2d * torch.tensor([1.0, 1.2, 1.4])[None, :, None, None]  # frames
    # differ in shape; hypothesis 0: the evidence played backwards, halved and moved; 1: the evidence, moved
    joints_2d = torch.stack([evidence.flip(1) * 0.5 - 3.0, evidence + 5.0], dim=1)  # (1, 2, T, J, 2)
    errors = reprojection_errors(joints_2d, evidence, S, "similarity")
    assert float(errors.max()) < 1e-5
    assert float(reprojection_errors(joints_2d[:, :1], evidence, S, "none")) > 0.05  # unaligned: far


def test_the_rules_use_the_configured_alignment(generator, images):
    for rule in ("reprojection", "combined"):
        cfg = tiny_cfg(f"selection.rule={rule}", "selection.reprojection_align=similarity")
        selector = _selector("none")
        out, reward = infer(generator, selector, {"image": images}, cfg, CPU)
        learned = selector(images, out).reward if rule == "combined" else 1.0
        assert torch.allclose(reward, learned * reprojection_reward(out, S, "similarity"))
        assert not torch.allclose(reward, learned * reprojection_reward(out, S))


def test_the_selectors_reprojection_evidence_uses_the_configured_alignment(images, gen_out):
    cfg = tiny_cfg("selection.evidence=reprojection", "selection.reprojection_align=similarity")
    torch.manual_seed(1)
    aligned = Selector(cfg.model, cfg.selection).eval()
    plain = _selector("reprojection")
    plain.load_state_dict(aligned.state_dict())  # the same weights: the alignment is no weight
    with torch.no_grad():
        assert not torch.allclose(aligned(images, gen_out).reward, plain(images, gen_out).reward)


def test_the_combined_rule_multiplies_the_selectors_reward_by_the_reprojection_one(generator, images):
    combined = tiny_cfg("selection.rule=combined")
    assert selection_skipped(combined) == ""  # it needs a trained selector
    selector = _selector("none")
    out, reward = infer(generator, selector, {"image": images}, combined, CPU)
    _, learned = infer(generator, selector, {"image": images}, tiny_cfg(), CPU)
    assert torch.allclose(reward, learned * reprojection_reward(out, S))
    assert infer(generator, None, {"image": images}, combined, CPU)[1] is None  # no selector, no ranking


# --- a finer Unfolder for the selector -----------------------------------------------------------------------------

def test_the_stride_4_stage_starts_as_the_stride_8_decoder_upsampled(images):
    torch.manual_seed(0)
    backbone = Backbone("resnet18").eval()
    coarse = FrameDecoder(backbone.channels, E, J).eval()
    fine = FrameDecoder(backbone.channels, E, J, stride=4, stride4_channels=backbone.stride4_channels).eval()
    fine.load_state_dict(coarse.state_dict(), strict=False)  # what init_from_generator copies
    with torch.no_grad():
        feats = backbone(images)
        coarse_map, coarse_heatmaps = coarse(feats)
        fine_map, fine_heatmaps = fine(feats)
    assert coarse_heatmaps.shape == (B, J, S // 8, S // 8) and fine_heatmaps.shape == (B, J, S // 4, S // 4)
    upsampled = torch.nn.functional.interpolate(coarse_map, scale_factor=2.0, mode="bilinear", align_corners=False)
    assert torch.allclose(fine_map, upsampled, atol=1e-5)
    with pytest.raises(ValueError, match="stride must be one of"):
        FrameDecoder(backbone.channels, E, J, stride=2)


def test_a_stride_4_selector_starts_from_the_generator_and_keeps_its_own_stage(generator, images, gen_out):
    cfg = tiny_cfg("selection.unfolder_stride=4")
    selector = Selector(cfg.model, cfg.selection)
    theirs = generator.unfolder.state_dict()
    own = {key for key in selector.unfolder.state_dict() if key.split(".")[2] in STRIDE4_STAGE}
    assert own and own.isdisjoint(theirs)
    before = {key: value.clone() for key, value in selector.unfolder.state_dict().items() if key in own}
    copied = selector.init_from_generator(generator)
    assert copied == len(generator.backbone.state_dict()) + len(theirs)
    mine = selector.unfolder.state_dict()
    assert all(torch.equal(mine[key], value) for key, value in theirs.items())
    assert all(torch.equal(mine[key], value) for key, value in before.items())
    with torch.no_grad():
        out = selector.eval()(images, gen_out)
    assert out.reward.shape == (B, K) and out.unfolder_joints_2d.shape == (B, T, J, 2)
    assert bool(((out.unfolder_joints_2d >= 0) & (out.unfolder_joints_2d <= S)).all())
    with pytest.raises(ValueError, match="unfolder layouts differ"):
        _selector("none").init_from_generator(selector)  # a stride-8 selector cannot take a stride-4 Unfolder


# --- one tiny selection run per lever through hmh train -----------------------------------------------------------

TINY_RUN = [
    *TINY_MODEL,
    "data.synthetic_train=16", "data.synthetic_test=8", "data.synthetic_size=64", "data.synthetic_subframes=3",
    "data.val_fraction=0.25", "train.batch_size=4", "train.eval_batch_size=8", "train.device=cpu",
    "train.generation_epochs=1", "train.selection_epochs=1",
]


def _train(out, *overrides: str) -> int:
    return main(["train", "--config", "cpu", "--out", str(out), "--no-progress",
                 *(a for item in (*TINY_RUN, *overrides) for a in ("--set", item))])


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory):
    out = tmp_path_factory.mktemp("generator")
    assert _train(out, "train.selection_epochs=0") == 0
    return out / "checkpoints" / "generation_best.pt"


@pytest.mark.parametrize("levers", [
    {"selection.evidence": "reprojection", "selection.unfolder_stride": 4},
    {"selection.evidence": "sampled"},
    {"selection.evidence": "both"},
    {"loss.selection_target": "jrc_graded", "loss.rank_weight": 1.0},
])
def test_one_selection_epoch_per_lever(tiny_generator, tmp_path, levers):
    assert _train(tmp_path, f"train.generator={tiny_generator}", *(f"{k}={v}" for k, v in levers.items())) == 0
    kept = load_checkpoint(tmp_path / "checkpoints" / "selection_best.pt")
    stored = flatten(from_dict(kept["config"]))
    assert {key: stored[key] for key in levers} == levers
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert "final/mpjpe_current" in report["metrics"]
    (epoch,) = report["history"]["selection"]
    assert ("train/loss/rank" in epoch) == ("loss.selection_target" in levers)
    assert any("evidence" in key for key in kept["model"]["selector"]) == ("selection.evidence" in levers)


def test_the_reprojection_rule_trains_nothing_and_evaluates_from_the_generator(tiny_generator, tmp_path, capsys):
    run, again = tmp_path / "run", tmp_path / "evaluate"
    assert _train(run, f"train.generator={tiny_generator}", "selection.rule=reprojection") == 0
    assert "selection stage skipped: selection.rule = reprojection" in capsys.readouterr().out
    assert not (run / "checkpoints" / "selection_best.pt").exists()
    report = json.loads((run / "metrics.json").read_text())
    assert "final/mpjpe_current" in report["metrics"] and "selection/gain" in report["metrics"]
    assert report["checkpoint"].endswith("generation_best.pt")
    code = main(["evaluate", "--checkpoint", str(run / "checkpoints" / "generation_best.pt"), "--out", str(again),
                 "--split", "test", "--no-progress"])
    assert code == 0
    metrics = json.loads((again / "metrics.json").read_text())["metrics"]
    assert metrics["final/mpjpe_current"] == pytest.approx(report["metrics"]["final/mpjpe_current"])
