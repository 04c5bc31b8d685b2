"""Unit tests of the pure placement engine: filters, policies, tie-breaking."""

from __future__ import annotations

import random

import pytest

from pai_scheduler.domain.placement import (
    BestFit,
    Placer,
    make_policy,
)
from pai_scheduler.domain.resources import (
    PlacementError,
    PodRequest,
    card_choices,
)

from .builders import node, pod

# ---- filters -------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["bestfit", "fgd", "frag"])
def test_sharing_pod_needs_one_card_with_enough_free_milli(policy: str) -> None:
    n = node("n", gpus=2)
    n.gpu_free = [300, 300]  # 600 free in total, but no card has 500
    placer = Placer([n], make_policy(policy, [pod(gpus=1, milli=500)]))
    assert placer.place(pod("big", gpus=1, milli=500)) is None
    assert n.gpu_free == [300, 300]
    placed = placer.place(pod("small", gpus=1, milli=300))
    assert placed is not None and n.gpu_free.count(0) == 1


def test_an_0_8_pod_never_lands_on_a_card_with_0_3_free() -> None:
    a, b = node("a"), node("b")
    a.gpu_free = [300]
    placer = Placer([a, b], BestFit())
    placed = placer.place(pod("x", gpus=1, milli=800))
    assert placed is not None and placed.node == "b" and a.gpu_free == [300]


def test_ten_tenth_gpu_pods_share_one_card() -> None:
    placer = Placer([node("a", gpus=1), node("b", gpus=1)], BestFit())
    nodes = {placer.place(pod(f"p{i}", cpu=100, gpus=1, milli=100)).node for i in range(10)}  # type: ignore[union-attr]
    assert len(nodes) == 1
    assert sorted(sum(n.gpu_free) for n in placer.nodes) == [0, 1000]


@pytest.mark.parametrize("policy", ["bestfit", "fgd", "frag"])
def test_k_gpu_pod_needs_k_free_cards_on_one_node(policy: str) -> None:
    a, b = node("a", gpus=2), node("b", gpus=2)
    a.gpu_free = [1000, 900]
    b.gpu_free = [100, 1000]
    placer = Placer([a, b], make_policy(policy, [pod(gpus=2, milli=1000)]))
    # three whole cards are free across the cluster, but no node has two
    assert placer.place(pod("two", gpus=2, milli=1000)) is None
    assert (a.gpu_free, b.gpu_free) == ([1000, 900], [100, 1000])
    c = node("c", gpus=4)
    placer = Placer([a, b, c], make_policy(policy, [pod(gpus=2, milli=1000)]))
    placed = placer.place(pod("two", gpus=2, milli=1000))
    assert placed is not None and placed.node == "c" and len(placed.gpu_ids) == 2
    assert sorted(c.gpu_free) == [0, 0, 1000, 1000]


@pytest.mark.parametrize("policy", ["bestfit", "fgd", "frag"])
def test_gpu_model_constraint(policy: str) -> None:
    t4, v100 = node("t4", model="T4"), node("v100", model="V100")
    placer = Placer([t4, v100], make_policy(policy, [pod(gpus=1, milli=1000)]), seed=1)
    for i in range(3):
        placed = placer.place(pod(f"p{i}", gpus=1, milli=200, models="V100|A100"))
        assert placed is not None and placed.node == "v100"
    assert t4.gpu_free == [1000]
    assert Placer([t4], BestFit()).place(pod(gpus=1, milli=200, models="A100")) is None


@pytest.mark.parametrize("policy", ["bestfit", "fgd", "frag"])
def test_cpu_and_memory_must_fit(policy: str) -> None:
    n = node("n", gpus=1, cpu=4000, mem=8192)
    placer = Placer([n], make_policy(policy, [pod()]))
    assert placer.place(pod("cpu", cpu=5000)) is None
    assert placer.place(pod("mem", mem=9000, gpus=1, milli=100)) is None
    assert placer.place(pod("ok", cpu=4000, mem=8192)) is not None
    assert placer.place(pod("none-left", cpu=1, mem=1)) is None
    assert (n.cpu_free, n.memory_free, n.gpu_free) == (0, 0, [1000])


def test_node_allocate_is_all_or_nothing() -> None:
    n = node("n", gpus=2)
    n.gpu_free = [1000, 200]
    with pytest.raises(PlacementError):
        n.allocate(pod("two", gpus=2, milli=1000), (0, 1))  # card 1 cannot take it
    assert (n.cpu_free, n.memory_free, n.gpu_free) == (16000, 65536, [1000, 200])


def test_pod_request_validation() -> None:
    with pytest.raises(PlacementError):
        PodRequest("x", 1000, 1, 2, 500)  # multi-GPU pods take whole cards
    with pytest.raises(PlacementError):
        PodRequest("x", 1000, 1, 0, 500)


def test_release_frees_resources() -> None:
    placer = Placer([node("n")], BestFit())
    p = pod(gpus=1, milli=600)
    placed = placer.place(p)
    assert placed is not None
    assert placer.place(pod("q", gpus=1, milli=600)) is None
    placer.release(p, placed)
    assert placer.place(pod("q", gpus=1, milli=600)) is not None


def test_card_choices_are_distinct_per_free_amount() -> None:
    n = node("n", gpus=3)
    n.gpu_free = [1000, 400, 1000]
    state = n.state()  # cards sorted: (T4, 400), (T4, 1000), (T4, 1000)
    assert card_choices(state, pod(gpus=1, milli=300).shape) == [(0,), (1,)]
    assert card_choices(state, pod(gpus=2, milli=1000).shape) == [(1, 2)]
    assert card_choices(state, pod(gpus=3, milli=1000).shape) == []


# ---- tie-breaking ----------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["bestfit", "fgd", "frag"])
def test_ties_go_to_the_first_node_of_the_seeded_permutation(policy: str) -> None:
    names = [f"n{i:02d}" for i in range(20)]
    for seed in (42, 43, 7):
        nodes = [node(n) for n in reversed(names)]  # input order must not matter
        order = sorted(names)
        random.Random(seed).shuffle(order)
        placer = Placer(nodes, make_policy(policy, [pod(gpus=1, milli=1000)]), seed=seed)
        placed = placer.place(pod(gpus=1, milli=1000))
        assert placed is not None and placed.node == order[0]
        again = Placer([node(n) for n in names], make_policy(policy, [pod(gpus=1, milli=1000)]), seed=seed)
        assert again.place(pod(gpus=1, milli=1000)) == placed


def test_unknown_policy() -> None:
    with pytest.raises(PlacementError):
        make_policy("random")
