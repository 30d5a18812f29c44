"""Generation and selection models on a tiny config: shapes, batch/hypothesis bookkeeping, conventions."""

import copy
from dataclasses import fields, replace

import pytest
import torch

from hmh import geometry
from hmh.config import load_config
from hmh.models.backbone import Backbone
from hmh.models.generator import Generator, GeneratorOutput
from hmh.models.mht import MultiHypothesisTransformer
from hmh.models.regressor import Regressor, ancestors, virtual_camera
from hmh.models.selector import Selector, final_prediction, select_top_n
from hmh.models.unfolder import sample_joint_features, soft_argmax_2d
from hmh.train.losses import generation_loss

S, E = 64, 32


def tiny_cfg(k: int = 3, msf: bool = True):
    return load_config(None, [
        "model.backbone=resnet18", f"model.image_size={S}", f"model.embed_dim={E}", "model.num_heads=4",
        "model.mht_blocks=1", f"model.num_hypotheses={k}", "selection.top_n=1", "selection.decoder_blocks=1",
        f"selection.msf={'true' if msf else 'false'}",
    ])


@pytest.fixture(scope="module")
def mano():
    from hmh.mano.model import Mano, model_path

    return Mano(model_path("", "right"), side="right")


@pytest.fixture(scope="module")
def generator(mano):
    torch.manual_seed(0)
    return Generator(tiny_cfg().model, mano).eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 3, S, S, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def gen_out(generator, images):
    with torch.no_grad():
        return generator(images)


def _assert_permuted(a: GeneratorOutput, b: GeneratorOutput, perm: torch.Tensor) -> None:
    for f in fields(a):
        assert torch.allclose(getattr(a, f.name)[perm], getattr(b, f.name), atol=1e-4, rtol=1e-4), f.name


def test_backbone_channels_and_strides():
    feats = Backbone("resnet18")(torch.rand(2, 3, S, S))
    assert feats.pooled.shape == (2, 512)
    assert feats.stride4.shape == (2, 64, 16, 16) and feats.stride8.shape == (2, 128, 8, 8)
    assert feats.stride16.shape == (2, 256, 4, 4)
    assert feats.stride32.shape == (2, 512, 2, 2)
    assert Backbone("resnet50").channels == (512, 1024, 2048) and Backbone("resnet50").stride4_channels == 256
    with pytest.raises(ValueError, match="model.backbone"):
        Backbone("vgg16")


def test_soft_argmax_and_joint_sampling_share_the_pixel_convention():
    heatmaps = torch.full((1, 2, 8, 8), -1e4)
    heatmaps[0, 0, 3, 5] = 0.0  # joint 0 at cell (x=5, y=3)
    heatmaps[0, 1, 7, 0] = 0.0
    cells = soft_argmax_2d(heatmaps)
    assert torch.allclose(cells, torch.tensor([[[5.0, 3.0], [0.0, 7.0]]]))
    feature_map = torch.randn(1, 4, 8, 8)
    pixels = (cells + 0.5) * 8  # cell centres in crop pixels
    sampled = sample_joint_features(feature_map, pixels, 8)  # (1, 2, 4)
    assert torch.allclose(sampled[0, 0], feature_map[0, :, 3, 5], atol=1e-5)
    assert torch.allclose(sampled[0, 1], feature_map[0, :, 7, 0], atol=1e-5)


@pytest.mark.parametrize("k", [1, 3])
def test_generator_output_shapes(mano, k):
    model = Generator(tiny_cfg(k).model, mano)
    out = model(torch.rand(2, 3, S, S))
    expected = {
        "pose": (2, k, 3, 48), "shape": (2, 3, 10), "camera": (2, 3, 3), "joints": (2, k, 3, 21, 3),
        "vertices": (2, k, 3, 778, 3), "joints_2d": (2, k, 3, 21, 2), "unfolder_joints_2d": (2, 3, 21, 2),
        "features": (2, k, 3, 21, E), "image_features": (2, 3, 21, E),
    }
    assert {f.name: tuple(getattr(out, f.name).shape) for f in fields(out)} == expected
    assert float(out.joints[:, :, :, 0].detach().abs().max()) == 0.0  # wrist-relative
    assert bool((out.camera[..., 2] > 0).all())
    assert bool(((out.unfolder_joints_2d >= 0) & (out.unfolder_joints_2d <= S)).all())
    with pytest.raises(ValueError, match="image"):
        model(torch.rand(2, 3, S + 32, S + 32))


def test_single_hypothesis_model_trains_like_blurhandnet(mano):
    model = Generator(tiny_cfg(1).model, mano)
    out = model(torch.rand(2, 3, S, S))
    batch = {
        "image": torch.rand(2, 3, S, S), "joints_3d": torch.randn(2, 3, 21, 3) * 0.05,
        "joints_2d": torch.rand(2, 3, 21, 2) * S, "joint_valid": torch.ones(2, 3, 21),
        "mano_pose": torch.randn(2, 3, 48) * 0.2, "mano_shape": torch.randn(2, 3, 10), "mano_valid": torch.ones(2, 3),
    }
    losses = generation_loss(out, batch, tiny_cfg(1).loss)
    assert float(losses["diversity"].detach()) == 0.0
    plain = (out.joints[:, 0] - batch["joints_3d"]).abs().mean((-1, -2)).sum(1).mean()
    assert torch.allclose(losses["joint_3d"], plain)
    losses["total"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert float(model.backbone.stem[0].weight.grad.abs().sum()) > 0


def test_permuting_the_batch_permutes_every_generator_output(generator, images, gen_out):
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        _assert_permuted(gen_out, generator(images[perm]), perm)


def test_hypotheses_differ_exactly_when_their_embeddings_differ(generator, images, gen_out):
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert not torch.allclose(gen_out.pose[:, a], gen_out.pose[:, b], atol=1e-4)
        assert not torch.allclose(gen_out.features[:, a], gen_out.features[:, b], atol=1e-4)
    same = copy.deepcopy(generator)
    with torch.no_grad():
        same.mht.he_k.copy_(same.mht.he_k[:1].expand_as(same.mht.he_k))
        out = same(images)
    for k in (1, 2):
        assert torch.allclose(out.features[:, k], out.features[:, 0], atol=1e-5)
        assert torch.allclose(out.joints[:, k], out.joints[:, 0], atol=1e-6)


def test_mht_treats_each_hypothesis_as_an_independent_sequence():
    torch.manual_seed(0)
    many = MultiHypothesisTransformer(E, 3, num_blocks=2, num_heads=4).eval()
    one = MultiHypothesisTransformer(E, 1, num_blocks=2, num_heads=4).eval()
    feats = torch.randn(2, 3, 21, E)
    with torch.no_grad():
        joint = many(feats)  # (B, K, T, J, E)
        for k in range(3):
            state = {**many.state_dict(), "he_k": many.he_k[k:k + 1]}
            one.load_state_dict(state)
            assert torch.allclose(one(feats)[:, 0], joint[:, k], atol=1e-5)


def test_regressor_starts_at_the_mean_pose_and_follows_the_tree():
    assert ancestors()[:4] == [[], [0], [0, 1], [0, 1, 2]] and ancestors()[15] == [0, 13, 14]
    reg = Regressor(E, 512, S)
    out = reg(torch.randn(2, 3, 3, 21, E), torch.rand(2, 3, 21, 2) * S, torch.rand(2, 512))
    assert out.pose.shape == (2, 3, 3, 48) and float(out.pose.detach().abs().max()) < 0.2
    focal, princpt = virtual_camera(S)
    assert focal == 5000.0 * S / 256 and princpt == S / 2
    assert torch.allclose(out.translation, torch.tensor([0.0, 0.0, focal * 0.4 / S / 2]).expand(2, 3, 3))


def test_projection_uses_the_virtual_camera(gen_out):
    focal, princpt = virtual_camera(S)
    cam = gen_out.joints.float() + gen_out.camera[:, None, :, None, :]
    manual = cam[..., :2] / cam[..., 2:] * focal + princpt
    assert torch.allclose(gen_out.joints_2d, manual, atol=1e-3)
    wrist = geometry.project(gen_out.camera[:, None], torch.tensor([focal, focal]), torch.tensor([princpt] * 2))
    assert torch.allclose(gen_out.joints_2d[:, 0, :, 0], wrist[:, 0], atol=1e-3)


@pytest.fixture(scope="module")
def selector():
    torch.manual_seed(1)
    return Selector(tiny_cfg().model, tiny_cfg().selection).eval()


def test_selector_outputs(selector, images, gen_out):
    with torch.no_grad():
        out = selector(images, gen_out)
    assert out.logits.shape == (4, 3, 2) and out.reward.shape == (4, 3)
    assert out.unfolder_joints_2d.shape == (4, 3, 21, 2)
    assert torch.allclose(out.reward, torch.sigmoid(out.logits[..., 1] - out.logits[..., 0]))
    assert not torch.allclose(out.reward[:, 0], out.reward[:, 1])


def _subset(out: GeneratorOutput, index) -> GeneratorOutput:
    return GeneratorOutput(**{f.name: getattr(out, f.name)[index] for f in fields(out)})


def test_permuting_the_batch_permutes_rewards(selector, images, gen_out):
    perm = torch.tensor([3, 1, 0, 2])
    with torch.no_grad():
        ref = selector(images, gen_out)
        got = selector(images[perm], _subset(gen_out, perm))
    assert torch.allclose(ref.logits[perm], got.logits, atol=1e-5)


def test_permuting_hypotheses_permutes_rewards(selector, images, gen_out):
    perm = torch.tensor([2, 0, 1])
    shuffled = GeneratorOutput(**{
        f.name: getattr(gen_out, f.name)[:, perm] if getattr(gen_out, f.name).dim() >= 4 and f.name not in (
            "unfolder_joints_2d", "image_features") else getattr(gen_out, f.name) for f in fields(gen_out)
    })
    with torch.no_grad():
        assert torch.allclose(selector(images, gen_out).logits[:, perm], selector(images, shuffled).logits, atol=1e-5)


def test_selector_never_mixes_images(selector, images, gen_out):
    changed_images = images.clone()
    changed_images[2] = torch.rand(3, S, S)
    other = GeneratorOutput(**{f.name: getattr(gen_out, f.name).clone() for f in fields(gen_out)})
    other.pose[1] += 0.3
    with torch.no_grad():
        ref = selector(images, gen_out).logits
        by_image = selector(changed_images, gen_out).logits
        by_hypotheses = selector(images, other).logits
    for got, changed in ((by_image, 2), (by_hypotheses, 1)):
        for b in range(4):
            same = torch.allclose(ref[b], got[b], atol=1e-6)
            assert same == (b != changed), (changed, b)


def test_msf_switch(images, gen_out):
    with_msf = Selector(tiny_cfg(msf=True).model, tiny_cfg(msf=True).selection).eval()
    without = Selector(tiny_cfg(msf=False).model, tiny_cfg(msf=False).selection).eval()
    assert with_msf.query_input_dim == 48 + E and without.query_input_dim == 48
    assert without.feature_query is None
    other = GeneratorOutput(**{f.name: getattr(gen_out, f.name) for f in fields(gen_out)})
    other.features = gen_out.features + torch.randn_like(gen_out.features)
    with torch.no_grad():
        assert not torch.allclose(with_msf(images, gen_out).logits, with_msf(images, other).logits)
        assert torch.allclose(without(images, gen_out).logits, without(images, other).logits)


def test_selector_embedding_std_scales_its_position_embeddings():
    cfg = tiny_cfg()
    torch.manual_seed(0)
    wide = Selector(cfg.model, cfg.selection)
    torch.manual_seed(0)
    narrow = Selector(cfg.model, replace(cfg.selection, embedding_std=0.02))
    assert float(wide.pe_t.std()) == pytest.approx(1.0, abs=0.2)
    assert torch.allclose(narrow.pe_t, 0.02 * wide.pe_t) and torch.allclose(narrow.pe_j, 0.02 * wide.pe_j)


def test_init_from_generator_copies_backbone_and_unfolder(generator):
    sel = Selector(tiny_cfg().model, tiny_cfg().selection)
    copied = sel.init_from_generator(generator)
    expected = len(generator.backbone.state_dict()) + len(generator.unfolder.state_dict())
    assert copied == expected
    for name in ("backbone", "unfolder"):
        theirs = getattr(generator, name).state_dict()
        for key, value in getattr(sel, name).state_dict().items():
            assert torch.equal(value, theirs[key]), f"{name}.{key}"
    assert sel.backbone.stem[0].weight.data_ptr() != generator.backbone.stem[0].weight.data_ptr()


def test_top_n_selection_and_final_prediction(gen_out):
    reward = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.7, 0.2], [0.0, 0.1, 0.2], [0.3, 0.2, 0.1]])
    assert select_top_n(reward, 2).tolist() == [[1, 2], [0, 1], [2, 1], [0, 1]]
    with pytest.raises(ValueError, match="top_n"):
        select_top_n(reward, 4)
    final = final_prediction(gen_out, reward, 1)
    assert torch.equal(final.indices[:, 0], torch.tensor([1, 0, 2, 0]))
    assert torch.allclose(final.joints[0], gen_out.joints[0, 1])
    assert final.verts.shape == (4, 3, 778, 3)
