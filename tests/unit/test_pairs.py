"""The pair sampler (balance, no same-person "different" pairs, determinism) and hard-negative mining."""
import numpy as np
import torch

from training.pairs import PairSampler, hardest_negatives, scan_identity_folders, with_hard_negatives

# 10 people with 1 to 6 images each; person 0 has a single image (only ever in different pairs).
LABELS = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 6, 2, 3, 4, 5])


def test_batches_are_balanced():
    s = PairSampler(LABELS, batch_pairs=64, same_fraction=0.5, seed=1)
    for i in range(20):
        _, _, same = s.batch(i)
        assert len(same) == 64 and same.sum() == 32


def test_other_fractions_are_respected_within_one_pair():
    _, _, same = PairSampler(LABELS, batch_pairs=33, same_fraction=0.3, seed=0).batch(0)
    assert abs(same.sum() - 0.3 * 33) <= 0.5


def test_same_pairs_share_a_person_and_different_pairs_never_do():
    s = PairSampler(LABELS, batch_pairs=128, seed=2)
    for i in range(10):
        a, b, same = s.batch(i)
        assert (LABELS[a[same]] == LABELS[b[same]]).all()
        assert (a[same] != b[same]).all()  # two distinct images, not one image twice
        assert (LABELS[a[~same]] != LABELS[b[~same]]).all()


def test_a_seed_fixes_the_pairs_and_another_seed_changes_them():
    one, two, other = (PairSampler(LABELS, 32, seed=s).batch(5) for s in (7, 7, 8))
    assert all(np.array_equal(x, y) for x, y in zip(one, two))
    assert not np.array_equal(one[0], other[0])


def test_resuming_at_a_step_gives_the_same_batches():
    s = PairSampler(LABELS, 16, seed=3)
    straight = [b for _, b in zip(range(6), s.batches())]
    resumed = [b for _, b in zip(range(3), s.batches(start=3))]
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(straight[3:], resumed))


def test_people_with_one_image_are_never_in_same_pairs():
    a, _, same = PairSampler(LABELS, 256, seed=0).batch(0)
    assert not (LABELS[a[same]] == 0).any()


def test_hardest_negative_is_the_closest_other_person():
    # rows 0, 1: person 0; row 2: person 1, right beside row 0; row 3: person 2, far off; row 4: person 1
    emb = torch.tensor([[1.0, 0.0], [0.8, 0.2], [0.95, 0.05], [-1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 2, 1])
    hard = hardest_negatives(emb, labels, normalize=False)
    # row 2's own person (row 4) is ignored although no nearer than row 0; row 4's nearest stranger is row 1
    assert hard.tolist() == [2, 2, 0, 4, 1]


def test_no_negative_available_gives_minus_one():
    assert hardest_negatives(torch.randn(3, 4), torch.tensor([5, 5, 5])).tolist() == [-1, -1, -1]


def test_mining_replaces_only_the_partners_of_different_pairs():
    ea = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    eb = torch.tensor([[0.9, 0.1], [-1.0, 0.0]])   # pair 0 same person, pair 1 different (far apart)
    la, lb = torch.tensor([0, 1]), torch.tensor([0, 2])
    out = with_hard_negatives(ea, eb, la, lb, torch.tensor([True, False]), normalize=False)
    assert torch.equal(out[0], eb[0])
    # closest to ea[1] = (0, 1) among other people: ea[0] (1, 0), eb[0] (0.9, 0.1), eb[1] (-1, 0) -> eb[0]
    assert torch.equal(out[1], eb[0])


def test_identity_folders_are_read_in_sorted_order(tmp_path):
    for person, n in (("bob", 2), ("alice", 1)):
        (tmp_path / person).mkdir()
        for i in range(n):
            (tmp_path / person / f"{i}.jpg").write_bytes(b"x")
    (tmp_path / "alice" / "notes.txt").write_text("not an image")
    ids = scan_identity_folders(tmp_path)
    assert ids.names == ["alice", "bob"]
    assert ids.labels.tolist() == [0, 1, 1]
    assert [p.name for p in ids.paths] == ["0.jpg", "0.jpg", "1.jpg"]


def test_people_batches_hold_several_images_of_each_person():
    from training.pairs import PeopleSampler

    rows = PeopleSampler(LABELS, people=4, per_person=3, seed=0).batch(0)
    people, counts = np.unique(LABELS[rows], return_counts=True)
    assert len(people) == 4 and 0 not in people  # person 0 has one image: no same pair possible
    assert len(set(rows.tolist())) == len(rows)  # no image twice
    # everyone gets min(3, their image count)
    assert all(c == min(3, (LABELS == p).sum()) for p, c in zip(people, counts))
    assert np.array_equal(rows, PeopleSampler(LABELS, 4, 3, seed=0).batch(0))


def test_all_pairs_lists_each_unordered_pair_once():
    from training.pairs import all_pairs

    i, j, same = all_pairs(torch.tensor([7, 7, 3, 7]))
    assert list(zip(i.tolist(), j.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert same.tolist() == [True, False, True, False, True, False]
