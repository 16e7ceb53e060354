"""resolve_device: what --device means for each process, with the GPUs and torchrun's variables faked."""
import pytest
import torch

from classification.distributed import resolve_device
from classification.errors import UserInputError


@pytest.fixture
def gpus(monkeypatch):
    """``fake(count, local_rank=None, local_world=None)``: torch sees ``count`` GPUs, torchrun's variables set;
    returns the list of devices made current."""
    current = []

    def fake(count: int, local_rank: int | None = None, local_world: int | None = None) -> list:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", current.append)
        for name in ("LOCAL_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE", "RANK"):
            monkeypatch.delenv(name, raising=False)
        if local_rank is not None:
            monkeypatch.setenv("LOCAL_RANK", str(local_rank))
            monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
            monkeypatch.setenv("WORLD_SIZE", str(local_world))
            monkeypatch.setenv("RANK", str(local_rank))
        return current
    return fake


def test_default_is_the_cpu_without_gpus(gpus):
    gpus(0)
    assert resolve_device(None) == torch.device("cpu")


def test_default_and_bare_cuda_are_this_ranks_gpu(gpus):
    current = gpus(8, local_rank=3, local_world=8)
    assert resolve_device(None) == torch.device("cuda", 3)
    assert resolve_device("cuda") == torch.device("cuda", 3)
    assert current == [torch.device("cuda", 3)] * 2  # set_device always gets an indexed device


def test_a_plain_process_gets_gpu_0_and_keeps_an_explicit_index(gpus):
    current = gpus(2)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert current == [torch.device("cuda", 0), torch.device("cuda", 1)]


def test_an_explicit_index_under_several_processes_is_refused(gpus):
    gpus(8, local_rank=1, local_world=2)
    with pytest.raises(UserInputError, match=r"--device cuda:0 would put all 2 torchrun processes"):
        resolve_device("cuda:0")


def test_an_explicit_index_under_one_torchrun_process_is_kept(gpus):
    gpus(4, local_rank=0, local_world=1)
    assert resolve_device("cuda:2") == torch.device("cuda", 2)


@pytest.mark.parametrize("requested, count, local, message", [
    ("cuda", 0, None, "torch sees no GPU"),
    ("cuda:3", 2, None, "torch sees 2 GPU"),
    ("cuda", 2, (2, 4), "torchrun started 4 processes on this node but torch sees 2 GPU"),
    ("gpu", 1, None, "is not a device"),
])
def test_impossible_requests_are_one_sentence(gpus, requested, count, local, message):
    gpus(count, *(local or ()))
    with pytest.raises(UserInputError, match=message) as err:
        resolve_device(requested)
    assert "\n" not in str(err.value)


def test_cpu_is_never_touched_by_torchrun_variables(gpus):
    current = gpus(8, local_rank=5, local_world=8)
    assert resolve_device("cpu") == torch.device("cpu")
    assert current == []
