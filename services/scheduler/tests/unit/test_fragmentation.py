"""Unit tests of the placement policies' scores: FGD's fragmentation, ours, best fit, typical shapes."""

from __future__ import annotations

import pytest

from pai_scheduler.domain.fragmentation import (
    FillingFragmentation,
    Fragmentation,
    TypicalShape,
    fgd_integer_score,
    filled_shape_fragmentation,
    shape_fragmentation,
    typical_shapes,
)
from pai_scheduler.domain.placement import (
    FILL_WEIGHT,
    BestFit,
    Decision,
    Fgd,
    FragmentationAware,
    Placer,
    best_fit_integer_score,
    fill_weight_for,
)
from pai_scheduler.domain.resources import (
    NodeState,
    PodShape,
)

from .builders import ANY, node, pod

# ---- scores on hand-computed examples ---------------------------------------------------------------

HALF = TypicalShape(cpu_milli=1000, num_gpu=1, gpu_milli=500, gpu_models=ANY, weight=0.5)
WHOLE = TypicalShape(cpu_milli=1000, num_gpu=1, gpu_milli=1000, gpu_models=ANY, weight=0.5)


def test_shape_fragmentation_cases() -> None:
    cards = (("T4", 300), ("T4", 1000))
    assert shape_fragmentation(8000, cards, HALF) == 300  # fits: the 300 card is a fragment
    assert shape_fragmentation(500, cards, HALF) == 1300  # lacks CPU: everything is a fragment
    v100 = TypicalShape(1000, 1, 500, frozenset({"V100"}), 1.0)
    assert shape_fragmentation(8000, cards, v100) == 1300  # no accessible card
    cpu_only = TypicalShape(1000, 0, 0, ANY, 1.0)
    assert shape_fragmentation(8000, cards, cpu_only) == 1300
    two = TypicalShape(1000, 2, 1000, ANY, 1.0)
    assert shape_fragmentation(8000, cards, two) == 1300  # only one whole card


def test_fragmentation_score_on_a_tiny_example() -> None:
    frag = Fragmentation((HALF, WHOLE))
    # cards 1000 + 300: HALF sees 300, WHOLE sees 300 -> 0.5*300 + 0.5*300
    assert frag(8000, (("T4", 300), ("T4", 1000))) == pytest.approx(300)
    # a 200-milli pod on the 300 card leaves (100, 1000): 0.5*100 + 0.5*100 = 100, delta -200
    # on the 1000 card it leaves (300, 800): HALF sees 300, WHOLE sees 1100 -> 700, delta +400
    assert frag(7000, (("T4", 100), ("T4", 1000))) == pytest.approx(100)
    assert frag(7000, (("T4", 300), ("T4", 800))) == pytest.approx(700)
    assert fgd_integer_score(300, 100) == 54  # int(100 * sigmoid(0.2))
    assert fgd_integer_score(300, 700) == 40  # int(100 * sigmoid(-0.4))

    n = node("n", gpus=2, cpu=8000)
    n.gpu_free = [1000, 300]
    for policy in (FragmentationAware((HALF, WHOLE)), Fgd((HALF, WHOLE))):
        decision = policy.score(n.state(), pod(cpu=1000, gpus=1, milli=200).shape)
        assert decision is not None and decision[1] == ((0,),)  # the (T4, 300) card
    placed = Placer([n], FragmentationAware((HALF, WHOLE))).place(pod(cpu=1000, gpus=1, milli=200))
    assert placed is not None and placed.gpu_ids == (1,) and n.gpu_free == [1000, 100]


def test_fgd_puts_a_sharing_pod_on_the_lowest_card_among_tied_scores() -> None:
    # Only WHOLE is typical: a 100-milli pod on the 1000 card makes all 2300 free milli fragments
    # (+900: score int(100 * sigmoid(-0.9)) = 28); on the 600 or 800 card (fragments already) it takes
    # 100 fragmented milli (-100: int(100 * sigmoid(0.1)) = 52). The 600 and 800 cards tie, so the pod
    # goes to the lower card id, not to the fuller card.
    policy = Fgd((TypicalShape(1000, 1, 1000, ANY, 1.0),))
    for free, expected in (([1000, 800, 600], 1), ([1000, 600, 800], 1), ([800, 1000, 600], 0)):
        n = node("n", gpus=3)
        n.gpu_free = list(free)
        decision = policy.score(n.state(), pod(gpus=1, milli=100).shape)
        # the state is the sorted cards (600, 800, 1000): both tied positions, whatever the ids
        assert decision is not None and decision == (-52.0, ((0,), (1,)))
        placed = Placer([n], policy).place(pod(gpus=1, milli=100))
        assert placed is not None and placed.gpu_ids == (expected,)


def test_fgd_decisions_are_shared_by_nodes_in_the_same_state() -> None:
    calls = 0

    class Counting(Fgd):
        def score(self, state: NodeState, shape: PodShape) -> Decision | None:
            nonlocal calls
            calls += 1
            return super().score(state, shape)

    a, b = node("a", gpus=2), node("b", gpus=2)
    a.gpu_free, b.gpu_free = [600, 800], [800, 600]  # the same multiset of cards, other ids
    placer = Placer([a, b], Counting((TypicalShape(1000, 1, 1000, ANY, 1.0),)), seed=0)
    placed = placer.place(pod(gpus=1, milli=100))
    assert calls == 1  # one state, scored once
    assert placed is not None and placed.gpu_ids == (0,)


def test_fragmentation_aware_prefers_the_node_whose_fragmentation_grows_least() -> None:
    # a: one whole card; b: one card with 600 free. A 500 pod on a leaves 500 (WHOLE can no longer
    # fit: +0.5*500 fragmented), on b leaves 100 (already unusable for WHOLE: 600 -> 100, HALF: 0 -> 100)
    a, b = node("a", cpu=8000), node("b", cpu=8000)
    b.gpu_free = [600]
    frag = Fragmentation((HALF, WHOLE))
    assert frag(8000, (("T4", 1000),)) == 0
    assert frag(8000, (("T4", 600),)) == pytest.approx(0.5 * 600)
    assert frag(7000, (("T4", 500),)) == pytest.approx(0.5 * 500)
    assert frag(7000, (("T4", 100),)) == pytest.approx(100)
    for seed in range(5):  # +250 on a, -200 on b: always b, whatever the node order
        a, b = node("a", cpu=8000), node("b", cpu=8000)
        b.gpu_free = [600]
        placed = Placer([a, b], FragmentationAware((HALF, WHOLE)), seed=seed).place(pod(gpus=1, milli=500))
        assert placed is not None and placed.node == "b"


def test_filled_shape_fragmentation_cases() -> None:
    cards = (("T4", 700), ("T4", 1000), ("T4", 1000))
    third = TypicalShape(1000, 1, 300, ANY, 1.0)
    # CPU for every copy: 2 + 3 + 3 copies, the remainders 100 + 100 + 100 are fragments (FGD: none)
    assert filled_shape_fragmentation(8000, cards, third) == 300
    assert shape_fragmentation(8000, cards, third) == 0
    # CPU for two copies only: 600 used, 2100 stranded (FGD: one copy fits, so still none)
    assert filled_shape_fragmentation(2500, cards, third) == 2100
    assert shape_fragmentation(2500, cards, third) == 0
    # not even one copy: everything, as in FGD
    assert filled_shape_fragmentation(500, cards, third) == 2700 == shape_fragmentation(500, cards, third)
    two = TypicalShape(1000, 2, 1000, ANY, 1.0)
    three_whole = (("T4", 1000),) * 3
    assert filled_shape_fragmentation(8000, three_whole, two) == 1000  # one pair, one card left over
    assert shape_fragmentation(8000, three_whole, two) == 0
    assert filled_shape_fragmentation(8000, cards, two) == 700 == shape_fragmentation(8000, cards, two)
    v100 = TypicalShape(1000, 1, 500, frozenset({"V100"}), 1.0)
    assert filled_shape_fragmentation(8000, cards, v100) == 2700  # no accessible card
    assert filled_shape_fragmentation(8000, cards, TypicalShape(1000, 0, 0, ANY, 1.0)) == 2700


def test_filling_fragmentation_blends_fgd_and_filled() -> None:
    cards = (("T4", 700), ("T4", 1000), ("T4", 1000))
    shapes = (HALF, WHOLE)
    # CPU 2500 feeds two copies: HALF filled 2700 - 1000 = 1700 (FGD 0), WHOLE filled 2700 - 2000 = 700
    # (FGD 700: the 700 card)
    assert FillingFragmentation(shapes, 0.0)(2500, cards) == pytest.approx(Fragmentation(shapes)(2500, cards))
    assert FillingFragmentation(shapes, 1.0)(2500, cards) == pytest.approx(0.5 * 1700 + 0.5 * 700)
    assert FillingFragmentation(shapes, 0.25)(2500, cards) == pytest.approx(0.5 * 0.25 * 1700 + 0.5 * 700)
    with pytest.raises(ValueError):
        FillingFragmentation(shapes, 1.5)


def test_frag_keeps_free_cpu_where_gpus_need_it() -> None:
    # The typical shape needs 4 cores per GPU. Node a has exactly the CPU for its 4 GPUs, b plenty. A
    # CPU-only pod leaves one copy fitting on either, so FGD sees no change and takes the first node in
    # the order; ours sees that on a it would strand a GPU (Δ = 0.05 * 1000: score 48 against 50).
    shapes = (TypicalShape(4000, 1, 1000, ANY, 1.0),)
    fgd_nodes = set()
    for seed in range(8):
        a, b = node("a", gpus=4, cpu=16000), node("b", gpus=4, cpu=64000)
        placed = Placer([a, b], FragmentationAware(shapes, fill_weight=0.05), seed=seed).place(pod(cpu=4000))
        assert placed is not None and placed.node == "b"
        a, b = node("a", gpus=4, cpu=16000), node("b", gpus=4, cpu=64000)
        by_fgd = Placer([a, b], Fgd(shapes), seed=seed).place(pod(cpu=4000))
        assert by_fgd is not None
        fgd_nodes.add(by_fgd.node)
    assert fgd_nodes == {"a", "b"}


def test_the_filled_share_shrinks_as_pods_are_limited_to_gpu_models() -> None:
    # No GPU shape names a model: the full share. CPU-only shapes do not count either way.
    cpu_only = TypicalShape(8000, 0, 0, ANY, 0.4)
    assert fill_weight_for((HALF, WHOLE)) == FILL_WEIGHT
    assert fill_weight_for((cpu_only, TypicalShape(1000, 1, 1000, ANY, 0.6))) == FILL_WEIGHT
    # a quarter of the GPU shapes' weight is limited to T4: 1 - 2 * 0.25 = half the share
    t4 = TypicalShape(1000, 1, 1000, frozenset({"T4"}), 0.15)
    shapes = (cpu_only, TypicalShape(1000, 1, 500, ANY, 0.45), t4)
    assert fill_weight_for(shapes) == pytest.approx(FILL_WEIGHT * 0.5)
    assert FragmentationAware(shapes).fill_weight == pytest.approx(FILL_WEIGHT * 0.5)
    # half or more limited: FGD's measure alone (and never a negative share)
    assert (
        fill_weight_for(
            (TypicalShape(1000, 1, 500, ANY, 0.5), TypicalShape(1000, 1, 1000, frozenset({"T4"}), 0.6))
        )
        == 0.0
    )
    assert fill_weight_for(()) == FILL_WEIGHT
    assert FragmentationAware(shapes, fill_weight=0.05).fill_weight == 0.05  # an explicit share wins


def test_frag_scores_are_fgd_integers_so_near_ties_go_to_the_node_order() -> None:
    # On b (CPU for two HALF copies) a whole-GPU pod lowers the filled fragmentation a little
    # (HALF: 1000 -> 500 stranded; Δ = 0.05 * 0.5 * -500 = -12.5), on a it changes nothing: both score
    # int(100 * sigmoid(Δ / 1000)) = 50, so the node order decides (first fit), not the exact change.
    policy = FragmentationAware((HALF, WHOLE), fill_weight=0.05)
    chosen = set()
    for seed in range(8):
        a, b = node("a", gpus=2, cpu=8000), node("b", gpus=2, cpu=2500)
        decision = policy.score(b.state(), pod(gpus=1, milli=1000).shape)
        assert decision is not None and decision[0] == -50.0
        placed = Placer([a, b], policy, seed=seed).place(pod(gpus=1, milli=1000))
        assert placed is not None
        chosen.add(placed.node)
    assert chosen == {"a", "b"}


def test_best_fit_on_a_hand_computed_example() -> None:
    # score = int(100 * (1 - (0.5 * cpu left after / 128000 + 0.5 * gpu milli left after / 8000)))
    a = node("a", gpus=1, cpu=8000)  # 0.5 * 4000/128000 + 0.5 * 700/8000 = 0.059375 -> 94
    b = node("b", gpus=2, cpu=16000)  # 0.5 * 12000/128000 + 0.5 * 1100/8000 = 0.115625 -> 88
    b.gpu_free = [1000, 400]
    policy = BestFit()
    p = pod(cpu=4000, gpus=1, milli=300)
    assert best_fit_integer_score(a.state(), p.shape) == 94
    assert best_fit_integer_score(b.state(), p.shape) == 88
    score_a, score_b = policy.score(a.state(), p.shape), policy.score(b.state(), p.shape)
    assert score_a is not None and score_a[0] == -94 and score_a[1] == ((0,),)
    assert score_b is not None and score_b[0] == -88 and score_b[1] == ((0,),)  # the 400 card
    placer = Placer([a, b], policy, seed=3)
    assert placer.place(p) is not None and a.gpu_free == [700]
    placed = placer.place(pod("q", cpu=4000, gpus=1, milli=300))
    # a: 0.5 * 0 + 0.5 * 400/8000 = 0.025 -> 97; b: 88 -> a again
    assert placed is not None and placed.node == "a" and a.gpu_free == [400]
    placed = placer.place(pod("r", cpu=4000, gpus=1, milli=300))  # a is out of CPU; on b, the 400 card
    assert placed is not None and placed.node == "b" and placed.gpu_ids == (1,) and b.gpu_free == [1000, 100]


def test_best_fit_uses_absolute_leftover_and_integer_scores() -> None:
    # Both nodes keep 15 free cores and no free GPU: the same absolute leftover, so the same integer
    # score (94), and the tie goes to the node order, although 15 cores are a smaller share of the big
    # node (a capacity-relative best fit would always pick "big").
    winners = set()
    for seed in range(8):
        small = node("small", gpus=1, cpu=16000)
        big = node("big", gpus=1, cpu=64000)
        big.cpu_free = 16000
        p = pod(cpu=1000, gpus=1, milli=1000)
        assert (
            best_fit_integer_score(small.state(), p.shape)
            == best_fit_integer_score(big.state(), p.shape)
            == 94
        )
        placer = Placer([small, big], BestFit(), seed=seed)
        placed = placer.place(p)
        assert placed is not None and placed.node == placer.nodes[0].name
        winners.add(placed.node)
    assert winners == {"small", "big"}


def test_typical_shapes_cover_95_percent() -> None:
    pods = [pod(f"a{i}", gpus=1, milli=500) for i in range(90)]
    pods += [pod(f"b{i}", gpus=1, milli=1000) for i in range(6)]
    pods += [pod(f"c{i}", gpus=2, milli=1000) for i in range(4)]
    shapes = typical_shapes(pods)
    # 90 + 6 pods of 100 reach 95 %; the weights are renormalised over the 96 chosen pods
    assert [(s.num_gpu, s.gpu_milli) for s in shapes] == [(1, 500), (1, 1000)]
    assert [s.weight for s in shapes] == pytest.approx([90 / 96, 6 / 96])
    assert sum(s.weight for s in shapes) == pytest.approx(1.0)


def test_typical_shapes_break_count_ties_by_the_larger_shape() -> None:
    pods = [pod(f"a{i}", cpu=1000, gpus=1, milli=500) for i in range(90)]
    pods += [pod(f"y{i}", cpu=2000, gpus=1, milli=500) for i in range(5)]
    pods += [pod(f"z{i}", cpu=1000, gpus=1, milli=1000) for i in range(5)]
    shapes = typical_shapes(pods)
    # y and z are tied at 5 pods; the simulator takes the larger (cpu first) one, and then 95 % is covered
    assert [(s.cpu_milli, s.gpu_milli) for s in shapes] == [(1000, 500), (2000, 500)]
    assert [s.weight for s in shapes] == pytest.approx([90 / 95, 5 / 95])


def test_typical_shapes_include_cpu_only_pods_and_models() -> None:
    pods = [pod(f"g{i}", cpu=1000, gpus=1, milli=1000, models="V100M32|V100M16") for i in range(60)]
    pods += [pod(f"c{i}", cpu=4000) for i in range(40)]
    shapes = typical_shapes(pods)
    assert [(s.cpu_milli, s.num_gpu, s.gpu_models) for s in shapes] == [
        (1000, 1, frozenset({"V100M16", "V100M32"})),
        (4000, 0, ANY),
    ]
    assert [s.weight for s in shapes] == pytest.approx([0.6, 0.4])
