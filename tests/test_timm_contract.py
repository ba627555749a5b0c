"""timm's model contract, for every registered ShuffleNet name: what timm's own ``tests/test_models.py`` checks
(forward, backward, default cfg / head API, features, forward_intermediates, grad checkpointing, TorchScript,
FX), written here so that CI checks it without timm's test file.

Per name (everything that depends on a name's widths, groups or cfg) with small inputs, one 224x224 pass for
the cfg's pool size; TorchScript and FX are checked once per distinct code path (no shuffle as with g=1 or
``_noshuffle``, shuffle, SE): scripting and tracing compile the module *types* and their control flow, which a
name does not change, only the widths it fills in (seconds each, so once per path keeps the file within its
time budget).
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
from timm.models import FeatureInfo, group_parameters
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import shufflenet

NAMES = shufflenet.list_models("shufflenet_v1_*")
TAGGED = timm.list_models("shufflenet_v1_*", pretrained=True, include_tags=True)
CODE_PATHS = ["shufflenet_v1_x0_25_g1", "shufflenet_v1_x0_25_g3", "shufflenet_v1_x2_0_g3_se"]


def test_every_name_is_registered_with_a_cfg():
    assert len(NAMES) >= 33 and TAGGED == ["shufflenet_v1_x1_0_g3.mmpretrain_in1k"]
    assert set(NAMES) <= set(timm.list_models("shufflenet_v1_*", name_matches_cfg=True))
    assert set(CODE_PATHS) <= set(NAMES) | set(TAGGED)


@pytest.mark.parametrize("name", NAMES + TAGGED)
def test_forward_head_and_default_cfg(name):
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    cfg = model.default_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["pool_size"] == (7, 7)
    assert model.num_classes == 1000 and model.num_features > 0 and model.head_hidden_size == model.num_features
    sd = model.state_dict()
    assert f"{cfg['classifier']}.weight" in sd and f"{cfg['first_conv']}.weight" in sd
    assert model.get_classifier() is model.fc
    x = torch.randn(1, *cfg["input_size"])
    small = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (1, model.num_features, *cfg["pool_size"])
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (1, model.head_hidden_size)
        logits = model(small)
        assert logits.shape == (1, 1000) and not torch.isnan(logits).any()
        assert torch.equal(model.forward_head(model.forward_features(small)), logits)
        model.set_grad_checkpointing()  # recomputation does the same arithmetic: the same output, bit for bit
        assert torch.equal(model(small), logits)
        model.reset_classifier(0)
        assert model.num_classes == 0 and torch.equal(model.forward_head(feats), pre)
        assert model(small).shape == (1, model.head_hidden_size)
        model.reset_classifier(0, "")
        assert model.forward_head(feats).shape == feats.shape
        bare = timm.create_model(name, num_classes=0, global_pool="").eval()
        assert bare(small).shape == (1, model.num_features, 2, 2)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name):
    model = timm.create_model(name, num_classes=42).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 42)
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:3]}"


@pytest.mark.parametrize("name", NAMES)
def test_features_and_intermediates_agree_with_feature_info(name):
    model = timm.create_model(name).eval()
    info = FeatureInfo(model.feature_info, len(model.feature_info))
    assert info.reduction() == [4, 8, 16, 32] and len(info.channels()) == 4
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert [t.shape[1] for t in inter] == info.channels()
        for t, r in zip(inter, info.reduction()):
            assert t.shape[2] <= math.ceil(64 / r) + 1 and t.shape[3] <= math.ceil(64 / r) + 1
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(last_two, inter[2:])) and len(last_two) == 2
        model.set_grad_checkpointing()
        assert torch.equal(model.forward_intermediates(x)[0], final)
        for feature_cls in (None, "getter"):  # timm's FeatureListNet (hooks on feature_info) and FeatureGetterNet
            kwargs = {"feature_cls": feature_cls} if feature_cls else {}
            feats = timm.create_model(name, features_only=True, **kwargs).eval()
            outs = feats(x)
            assert [o.shape[1] for o in outs] == feats.feature_info.channels() == info.channels()[1:]
    groups = group_parameters(model, model.group_matcher())
    grouped = [p for names in groups.values() for p in names]
    assert sorted(grouped) == sorted(n for n, _ in model.named_parameters())


@pytest.mark.parametrize("name", CODE_PATHS)
def test_torchscript_and_fx_give_the_eager_output(name):
    with timm.set_scriptable(True):
        model = timm.create_model(name).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
        assert torch.equal(torch.jit.script(model)(x), want)
        _, eval_nodes = get_graph_node_names(model)
        fx = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])
        assert torch.equal(next(iter(fx(x).values())), want)
    train = timm.create_model(name, num_classes=42).train()  # FX backward, as timm's test_model_backward_fx
    train_nodes, _ = get_graph_node_names(train)
    fx_train = create_feature_extractor(
        train, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[train_nodes[-1]]
    )
    out = next(iter(fx_train(torch.randn(2, 3, 64, 64)).values()))
    out.mean().backward()
    assert out.shape == (2, 42) and all(p.grad is not None for p in fx_train.parameters())
