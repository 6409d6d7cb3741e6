"""Data-parallel training with ``python -m paddle.distributed.launch`` on the CPU (2 processes): the sharded
batches equal the one-process batches, a 2-process step equals the 1-process step with the same global batch
(for a network without BatchNorm: Paddle's CPU build has no sync_batch_norm kernel), and RD4AD trains with only
the first process writing."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from common.data.loader import Loader
from common.data.synthetic import make_dataset
from common.training.distributed import ShardedBatches
from conftest import REPO_ROOT
from method_harness import folder, tiny_config

LAUNCH = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2"]


def test_sharded_batches_split_the_one_process_batches():
    class Items:
        def __len__(self):
            return 22

        def __getitem__(self, index):
            return (np.int64(index),)

    np.random.seed(5)
    single = [batch[0].numpy().tolist() for batch in Loader(Items(), 8, shuffle=True)]
    shards = []
    for rank in (0, 1):
        np.random.seed(5)  # every process seeds the same global permutation
        shards.append(list(ShardedBatches(22, 8, rank, 2, shuffle=True)))
    assert len(shards[0]) == len(single) == 3
    for one, first, second in zip(single, *shards):
        assert sorted(first + second) == sorted(one) and first == one[0::2] and second == one[1::2]


STEP_SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np
    import paddle
    import common
    from common.training import distributed
    from common.data.loader import Loader

    rank, world = distributed.init()
    np.random.seed(0)
    paddle.seed(0)

    class Data:
        def __len__(self):
            return 16

        def __getitem__(self, i):
            rng = np.random.default_rng(i)
            return (rng.standard_normal((3, 8, 8)).astype("float32"),)

    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.ReLU(), paddle.nn.Flatten(),
                               paddle.nn.Linear(144, 1))
    model = distributed.data_parallel(net)
    optimizer = paddle.optimizer.Adam(learning_rate=0.01, parameters=net.parameters())
    sampler = distributed.ShardedBatches(16, 8, rank, world) if world > 1 else None
    loader = Loader(Data(), 8, shuffle=True) if sampler is None else Loader(Data(), batch_sampler=sampler)
    for epoch in range(2):
        for (x,) in loader:
            loss = (model(x) ** 2).mean()
            optimizer.clear_grad()
            loss.backward()
            optimizer.step()
    if distributed.is_main_process():
        np.savez(sys.argv[1], **{k: v.numpy() for k, v in net.state_dict().items()})
''')


def _env():
    return dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.mark.slow
def test_two_processes_take_the_same_steps_as_one(tmp_path):
    script = tmp_path / "step.py"
    script.write_text(STEP_SCRIPT)
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "one.npz")], capture_output=True,
                            text=True, timeout=300, env=_env())
    assert single.returncode == 0, single.stderr[-3000:]
    launched = subprocess.run(LAUNCH + ["--log_dir", str(tmp_path / "logs"), str(script), str(tmp_path / "two.npz")],
                              capture_output=True, text=True, timeout=300, env=_env(), cwd=str(tmp_path))
    if launched.returncode and "init_parallel_env" in launched.stdout + launched.stderr:
        pytest.skip("Paddle's CPU collective backend did not start here")
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    for name in one.files:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_rd4ad_trains_with_two_processes_and_one_writer(tmp_path):
    data = tmp_path / "data"
    make_dataset(str(data), ("bottle",), size=64, n_train=12, n_test_good=2, n_test_defect=1)
    out = tmp_path / "out"
    run = subprocess.run(LAUNCH + ["--log_dir", str(tmp_path / "logs"), "main.py", "--mode", "train", "--cls",
                                   "bottle", "--data_dir", str(data), "--output_dir", str(out), "--config",
                                   tiny_config("rd4ad"), "--threads", "1"],
                         cwd=folder("rd4ad"), capture_output=True, text=True, timeout=600, env=_env())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(out / "bottle" / "train_log.jsonl", encoding="utf-8") as handle:
        log = [json.loads(line) for line in handle]
    assert [r["epoch"] for r in log] == [1, 2] and all(np.isfinite(r["loss"]) for r in log)  # one writer
    assert (out / "bottle" / "rd4ad.pdparams").is_file() and (out / "bottle" / "thresholds.json").is_file()
    worker_logs = "".join(p.read_text() for p in (tmp_path / "logs").iterdir() if p.is_file())
    assert "2 processes" in worker_logs


@pytest.mark.slow
def test_efficientad_teacher_distillation_takes_the_same_steps_with_two_processes(tmp_path):
    """The PDN has no BatchNorm: the 2-process teacher equals the 1-process teacher of the same global batch."""
    import paddle

    make_dataset(str(tmp_path / "images"), ("bottle",), size=64, n_train=8, n_test_good=1, n_test_defect=1)
    args = ["pretrain_teacher.py", "--image_dir", str(tmp_path / "images" / "bottle" / "train"), "--out_channels", "8",
            "--width_divisor", "16", "--backbone", "resnet18", "--backbone_weights", "random", "--steps", "3",
            "--batch_size", "4", "--norm_images", "4", "--threads", "1"]
    single = subprocess.run([sys.executable, *args, "--output", str(tmp_path / "one.pdparams")],
                            cwd=folder("efficientad"), capture_output=True, text=True, timeout=600, env=_env())
    assert single.returncode == 0, single.stderr[-3000:]
    launched = subprocess.run(LAUNCH + ["--log_dir", str(tmp_path / "logs"), *args, "--output",
                                        str(tmp_path / "two.pdparams")],
                              cwd=folder("efficientad"), capture_output=True, text=True, timeout=600, env=_env())
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    one, two = paddle.load(str(tmp_path / "one.pdparams")), paddle.load(str(tmp_path / "two.pdparams"))
    assert set(one) == set(two)
    for name in one:
        np.testing.assert_allclose(np.asarray(two[name]), np.asarray(one[name]), rtol=1e-5, atol=1e-6, err_msg=name)
