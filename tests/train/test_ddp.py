"""Two gloo processes on CPU: same result as one process with the same global batch; a dead peer makes the
survivor exit with a clear error instead of hanging."""

import torch
from toy import ToyTask, ddp_worker, make_factory, weights

from clipdistill.train import TrainConfig, fit
from ddp_helpers import spawn_ranks


def test_two_process_ddp_equals_one_process_with_same_global_batch(tmp_path):
    spawn_ranks(ddp_worker, str(tmp_path))
    assert (tmp_path / "outcome0.txt").read_text() == "ok"
    assert (tmp_path / "outcome1.txt").read_text() == "ok"
    single = ToyTask()
    fit(single, make_factory(16), TrainConfig(lr=0.05, epochs=2, progress=False, tensorboard=False,
                                               save_every=100), tmp_path / "single")
    ddp = torch.load(tmp_path / "ddp_weights.pt", weights_only=True)
    for k, v in weights(single).items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-6)


def test_dead_peer_makes_survivor_exit_with_user_error(tmp_path):
    spawn_ranks(ddp_worker, str(tmp_path), 3)  # rank 1 dies at its 3rd step
    assert not (tmp_path / "outcome1.txt").exists()  # rank 1 died
    msg = (tmp_path / "outcome0.txt").read_text()
    assert msg.startswith("UserError") and "collective" in msg and "--resume latest" in msg
