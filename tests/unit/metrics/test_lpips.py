import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from diffcast.metrics import Evaluator, LPIPSAlex, load_lpips

# torchvision AlexNet features: conv layers at these indices, (out, in, k)
CONVS = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}
CHANNELS = (64, 192, 384, 256, 256)


def random_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for idx, (o, i, k) in CONVS.items():
        state[f"features.{idx}.weight"] = torch.randn(o, i, k, k, generator=g) * (2.0 / (i * k * k)) ** 0.5
        state[f"features.{idx}.bias"] = torch.randn(o, generator=g) * 0.01
    for j, c in enumerate(CHANNELS):
        state[f"lin{j}.model.1.weight"] = torch.rand(1, c, 1, 1, generator=g) * 0.1
    return state


def reference_lpips(state, x, y):
    """LPIPS v0.1 (alex) written out with torch.nn.functional, independent of LPIPSAlex."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(z):
        z = (z.expand(-1, 3, -1, -1) - shift) / scale
        out = []
        z = F.relu(F.conv2d(z, state["features.0.weight"], state["features.0.bias"], stride=4, padding=2))
        out.append(z)
        z = F.max_pool2d(z, 3, 2)
        z = F.relu(F.conv2d(z, state["features.3.weight"], state["features.3.bias"], padding=2))
        out.append(z)
        z = F.max_pool2d(z, 3, 2)
        for idx in (6, 8, 10):
            z = F.relu(F.conv2d(z, state[f"features.{idx}.weight"], state[f"features.{idx}.bias"], padding=1))
            out.append(z)
        return out

    total = 0
    for j, (a, b) in enumerate(zip(feats(x), feats(y))):
        na = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + ((na - nb) ** 2 * state[f"lin{j}.model.1.weight"]).sum(1).mean((1, 2))
    return total


@pytest.fixture
def weights(tmp_path):
    state = random_state()
    path = tmp_path / "alex.safetensors"
    save_file(state, str(path))
    return path, state


def test_lpips_matches_functional_reference(weights):
    path, state = weights
    net = load_lpips(path)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 48, 40, generator=g) * 2 - 1
    y = torch.rand(2, 1, 48, 40, generator=g) * 2 - 1
    got = net(x, y)
    torch.testing.assert_close(got, reference_lpips(state, x, y), rtol=1e-5, atol=1e-7)
    assert torch.all(got > 0)
    torch.testing.assert_close(net(x, x), torch.zeros(2), atol=1e-7, rtol=0)
    torch.testing.assert_close(net(x, y), net(y, x))


def test_lpips_torch_file_with_lpips_names(tmp_path, weights):
    _, state = weights
    renamed = {}
    slice_of = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
    for k, v in state.items():
        if k.startswith("features."):
            idx = int(k.split(".")[1])
            k = f"net.slice{slice_of[idx]}.{idx}.{k.split('.')[2]}"
        renamed[k] = v
    path = tmp_path / "full.pth"
    torch.save(renamed, path)
    net = load_lpips(path)
    x = torch.rand(2, 3, 40, 40) * 2 - 1
    y = torch.rand(2, 3, 40, 40) * 2 - 1
    torch.testing.assert_close(net(x, y), reference_lpips(state, x, y), rtol=1e-5, atol=1e-7)


def test_lpips_errors(tmp_path, weights):
    with pytest.raises(FileNotFoundError):
        load_lpips(tmp_path / "missing.safetensors")
    _, state = weights
    partial = {k: v for k, v in state.items() if not k.startswith("lin4")}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match="lacks LPIPS parameters"):
        load_lpips(tmp_path / "partial.safetensors")
    with pytest.raises(ValueError, match="at least 32x32"):
        LPIPSAlex()(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16))


def test_evaluator_reports_lpips_or_why_not(weights):
    path, state = weights
    net = load_lpips(path)
    rng = np.random.default_rng(2)
    y = rng.random((2, 2, 1, 40, 40)).astype(np.float32)
    p = np.clip(y + 0.2 * rng.standard_normal(y.shape), 0, 1).astype(np.float32)
    ev = Evaluator((16.0,), lpips=net, lpips_batch=3)
    ev.update(y, p)
    r = ev.compute()
    ref = reference_lpips(state, torch.from_numpy(p).view(-1, 1, 40, 40) * 2 - 1, torch.from_numpy(y).view(-1, 1, 40, 40) * 2 - 1)
    np.testing.assert_allclose(r["lpips_by_lead"], ref.view(2, 2).mean(0).numpy(), rtol=1e-5)
    assert "lpips" not in r["skipped"]
    small = Evaluator((16.0,), lpips=net)
    small.update(y[..., :20, :20], p[..., :20, :20])
    rs = small.compute()
    assert "lpips" not in rs or rs.get("lpips") is None
    assert "32x32" in rs["skipped"]["lpips"]
    none = Evaluator((16.0,), lpips_skipped="weights file not found")
    none.update(y, p)
    assert none.compute()["skipped"]["lpips"] == "weights file not found"
