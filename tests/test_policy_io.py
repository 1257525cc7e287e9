import pytest
import torch

from grpokit.policy import BetaHead, CategoricalHead, DirichletHead, GaussianSoftmaxHead, MLPTorso, Policy
from grpokit.policy.io import load_policy, save_policy


@pytest.mark.parametrize(
    "head",
    [CategoricalHead(4), DirichletHead(3, concentration=5.0), BetaHead(0.5, 1.5), GaussianSoftmaxHead(3)],
)
def test_round_trip(tmp_path, head):
    torch.manual_seed(0)
    policy = Policy(MLPTorso(5, [16, 8], "relu", n_groups=3, group_embedding_dim=2), head)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p))
    path = save_policy(policy, tmp_path / "p.pt", {"feature_names": list("abcde")})
    loaded, meta = load_policy(path)
    obs, group = torch.randn(7, 5), torch.randint(0, 3, (7,))
    assert torch.allclose(policy.act(obs, group), loaded.act(obs, group))
    assert meta == {"feature_names": list("abcde")}


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a grpokit policy file"):
        load_policy(tmp_path / "junk.pt")
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a grpokit policy file"):
        load_policy(tmp_path / "other.pt")
