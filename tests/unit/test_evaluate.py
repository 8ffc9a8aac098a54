"""The verification protocol on synthetic scores small enough to check by hand, and the pair-file readers."""

import numpy as np
import pytest

from shared.vision import crop_cache
from training import eval_protocol, lfw, pair_metrics


def _pair(fold, same, a, b):
    return lfw.Pair(fold, same, f"{a}/{a}_0001.jpg", f"{b}/{b}_0002.jpg", a, b)


def _aligned(paths, value):
    n = len(paths)
    return crop_cache.AlignedSet(list(paths), np.full((n, 4, 4, 3), value, np.uint8), np.ones(n, bool),
                          np.ones(n, np.int32), np.zeros((n, 4), np.float32), np.ones(n, np.float32),
                          np.zeros((n, 5, 2), np.float32))


def test_best_threshold_separable():
    t, acc = pair_metrics.best_threshold([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1])
    assert acc == 1.0 and t == pytest.approx(0.25)  # the midpoint between 0.2 and 0.3


def test_best_threshold_with_one_unavoidable_error():
    # same: 0.9, 0.5; different: 0.6, 0.1. Candidates -0.9, 0.3, 0.55, 0.75, 1.9 get accuracies
    # 0.5, 0.75, 0.5, 0.75, 0.5; of the two best (0.3 and 0.75) the tie-break takes index len // 2 = 0.75.
    scores, same = [0.9, 0.5, 0.6, 0.1], [1, 1, 0, 0]
    t, acc = pair_metrics.best_threshold(scores, same)
    assert acc == 0.75 and t == pytest.approx(0.75)
    assert pair_metrics.accuracy_at(scores, same, t) == 0.75


def test_accuracy_at_counts_ties_as_same():
    assert pair_metrics.accuracy_at([0.5, 0.5], [1, 0], 0.5) == 0.5


def test_kfold_threshold_comes_from_the_other_folds():
    """Each fold is cut where the other two folds are best separated, not where it would be best itself.
    fold 0 (same 0.6, diff 0.3): folds 1-2 separate at 0.65 -> its same pair falls below: 1/2.
    fold 1 (same 0.7, diff 0.6): folds 0 and 2 separate at 0.55 -> its diff pair passes: 1/2.
    fold 2 (same 0.8, diff 0.5): folds 0-1 are 3/4 right at 0.45 and at 0.65 (tie-break: 0.65) -> 2/2."""
    scores = np.array([0.6, 0.3,    0.7, 0.6,    0.8, 0.5])
    same = np.array([1, 0,          1, 0,        1, 0], bool)
    folds = np.array([0, 0,         1, 1,        2, 2])
    res = pair_metrics.kfold_accuracy(scores, same, folds)
    assert [r.fold for r in res] == [0, 1, 2]
    assert [r.threshold for r in res] == pytest.approx([0.65, 0.55, 0.65])
    assert [r.accuracy for r in res] == [0.5, 0.5, 1.0]
    assert [r.n_pairs for r in res] == [2, 2, 2]
    only = pair_metrics.kfold_accuracy(scores, same, folds, test_folds=[1])
    assert [(r.fold, r.accuracy) for r in only] == [(1, 0.5)]


def test_auc_by_hand():
    # same: 0.35, 0.8; different: 0.1, 0.4 -> of 4 (same, different) orderings, 3 are right
    assert pair_metrics.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert pair_metrics.roc_auc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5  # all ties: chance
    assert pair_metrics.roc_auc([0, 1], [0, 1]) == 1.0


def test_threshold_at_far_allows_floor_far_n_false_accepts():
    neg = np.arange(10) / 10  # 0.0 .. 0.9
    scores = np.concatenate([neg, [0.95, 0.85, 0.5]])
    same = np.array([False] * 10 + [True] * 3)
    t, tar, far = pair_metrics.threshold_at_far(scores, same, 0.1)  # one of ten may pass: 0.9 only
    assert 0.8 < t <= 0.8 + 1e-12 and far == 0.1 and tar == pytest.approx(2 / 3)
    t, tar, far = pair_metrics.threshold_at_far(scores, same, 0.01)  # none may pass
    assert 0.9 < t <= 0.9 + 1e-12 and far == 0.0 and tar == pytest.approx(1 / 3)


def test_roc_curve_runs_from_strict_to_loose():
    far, tar, th = pair_metrics.roc_curve([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert list(th) == [0.8, 0.4, 0.35, 0.1]
    assert list(tar) == [0.5, 0.5, 1.0, 1.0] and list(far) == [0.0, 0.5, 0.5, 1.0]


def test_summarize_reports_mean_and_std_over_folds():
    scores = np.array([0.6, 0.3, 0.7, 0.6, 0.8, 0.5])
    same = np.array([1, 0, 1, 0, 1, 0], bool)
    folds = np.array([0, 0, 1, 1, 2, 2])
    s = eval_protocol.summarize(scores, same, folds, None, far=0.5)
    assert s["accuracy_mean"] == pytest.approx(2 / 3)  # folds 0.5, 0.5, 1.0 (see the test above)
    assert s["accuracy_std"] == pytest.approx(np.sqrt(((1 / 6) ** 2 * 2 + (1 / 3) ** 2) / 3))  # ddof=0
    assert s["n_pairs_scored"] == 6 and s["tar_at_far"]["n_different_pairs"] == 3
    # FAR 0.5 of 3 different pairs allows 1 (the 0.6): the cut sits just above 0.5, every same pair passes
    assert s["tar_at_far"]["tar"] == 1.0 and s["tar_at_far"]["far_achieved"] == pytest.approx(1 / 3)
    assert s["auc"] == pytest.approx(8.5 / 9)  # 9 (same, different) orderings: 8 right, 0.6 vs 0.6 a tie


def test_a_single_fold_set_says_its_threshold_is_optimistic():
    s = eval_protocol.summarize(np.array([0.9, 0.5, 0.6, 0.1]), np.array([1, 1, 0, 0], bool), np.zeros(4, int),
                           None, far=0.5)
    assert s["accuracy_mean"] == 0.75 and s["accuracy_std"] == 0.0 and "optimistic" in s["threshold_from"]


def test_pairs_of_trained_people_are_left_out_and_named():
    pairs = [_pair(0, True, "Ann", "Ann"), _pair(0, False, "Ann", "Bob"), _pair(1, False, "Cy", "Dee")]
    keep, folds, note = eval_protocol.disjoint_filter(pairs, {"Bob", "Zed"}, None, is_view2=True)
    assert keep.tolist() == [True, False, True]
    assert folds is None and note["excluded_pairs"] == 1 and note["excluded_people"] == ["Bob"]


def test_a_model_held_out_on_one_fold_is_scored_on_that_fold_only():
    """Trained on folds 0 and 2 (Ann, Bob, Eve), held out on fold 1: fold 1 is scored; the other folds'
    pairs stay to choose the threshold but are never scored."""
    pairs = [_pair(0, True, "Ann", "Ann"), _pair(0, False, "Ann", "Bob"), _pair(1, False, "Cy", "Dee"),
             _pair(2, True, "Eve", "Eve")]
    keep, folds, note = eval_protocol.disjoint_filter(pairs, {"Ann", "Bob", "Eve"}, 1, is_view2=True)
    assert keep.tolist() == [True, True, True, True] and folds == [1]
    assert note["excluded_pairs"] == 0 and note["threshold_only_pairs"] == 3 and note["scored_folds"] == [1]
    # On any other pair set the fold means nothing: every pair of a trained person is dropped.
    keep, folds, _ = eval_protocol.disjoint_filter(pairs, {"Ann", "Bob", "Eve"}, 1, is_view2=False)
    assert keep.tolist() == [False, False, True, False] and folds is None


def test_pairs_without_a_face_score_as_different():
    emb = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    index = {"a": 0, "b": 1, "c": 2}
    pairs = [lfw.Pair(0, True, "a", "b", "x", "x"), lfw.Pair(0, False, "a", "c", "x", "y")]
    s = eval_protocol.pair_scores(emb, np.array([True, True, False]), index, pairs)
    assert s[0] == pytest.approx(0.6) and s[1] == eval_protocol.NO_FACE_SCORE


def test_read_lfw_pairs_view2_and_view1(tmp_path):
    p = tmp_path / "pairs.txt"
    p.write_text("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t3\nCy\t2\t4\nDee\t1\tEve\t1\n")
    pairs = lfw.read_lfw_pairs(p)
    assert [(x.fold, x.same) for x in pairs] == [(0, True), (0, False), (1, True), (1, False)]
    assert pairs[1].path2 == "Bob/Bob_0003.jpg" and pairs[1].person2 == "Bob"
    p.write_text("1\nAnn\t1\t2\nAnn\t1\tBob\t3\n")  # View 1 style: one count
    assert [(x.fold, x.same) for x in lfw.read_lfw_pairs(p)] == [(0, True), (0, False)]
    p.write_text("2\t1\nAnn\t1\t2\n")
    with pytest.raises(ValueError):
        lfw.read_lfw_pairs(p)


def test_read_tsv_pairs(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("# fold same path1 path2\n\n0\t1\tann/1.jpg\tann/2.jpg\n1\t0\tann/1.jpg\tbob/x.png\n")
    pairs = lfw.read_tsv_pairs(p)
    assert pairs[0] == lfw.Pair(0, True, "ann/1.jpg", "ann/2.jpg", "ann", "ann")
    assert pairs[1].fold == 1 and not pairs[1].same and pairs[1].person2 == "bob"
    p.write_text("0\tyes\ta\tb\n")
    with pytest.raises(ValueError):
        lfw.read_tsv_pairs(p)


def test_read_people_folds(tmp_path):
    p = tmp_path / "people.txt"
    p.write_text("2\n2\nAnn\t3\nBob\t1\n1\nCy\t2\n")
    assert lfw.read_people_folds(p) == [[("Ann", 3), ("Bob", 1)], [("Cy", 2)]]
    assert lfw.people_outside_fold(p, 1) == ["Ann", "Bob"]
    p.write_text("2\nAnn\t3\nBob\t1\n")  # peopleDev*.txt: one count of names
    assert lfw.read_people_folds(p) == [[("Ann", 3), ("Bob", 1)]]


def test_cache_saves_keep_what_another_process_added(tmp_path):
    d = tmp_path / "cache"
    crop_cache._save_merged(d, _aligned(["a", "b"], 1), {})   # process 1 saves a, b
    got = crop_cache._save_merged(d, _aligned(["c"], 2), {})  # process 2 had loaded nothing, adds c
    assert got.paths == ["c", "a", "b"]
    disk = crop_cache._load_cache(d)
    assert disk.paths == ["c", "a", "b"] and disk.crops[0].max() == 2 and disk.crops[2].max() == 1


def test_eval_and_bench_settings_keep_their_flags_and_refuse_what_cannot_work():
    from shared.config import ConfigError
    from training import bench_accuracy, evaluate

    cfg = evaluate.config(["--model", "m.pt", "--cv", "out/f{k}/ckpt.pt", "--no-flip", "--calibrate-far", "1e-3",
                           "--write-threshold", "--record-calibration", "--limit-folds", "2", "--format", "lfw"], {})
    assert (str(cfg.model), cfg.flip, cfg.calibrate_far, cfg.limit_folds, cfg.format) == ("m.pt", False, 1e-3, 2, "lfw")
    for argv, message in [(["--write-threshold"], "needs --calibrate-far"),
                          (["--calibrate-far", "0.1", "--record-calibration"], "needs --write-threshold"),
                          (["--cv", "p{k}", "--calibrate-far", "0.1", "--write-threshold"], "needs --model"),
                          (["--format", "csv"], "must be one of tsv, lfw"), (["--far", "2"], "must be <= 1")]:
        with pytest.raises(ConfigError, match=message):
            evaluate.config(argv, {})
    # FACESTREAM_MODEL is the default model's variable, read by the default itself: not a --model given
    assert evaluate.config([], {"FACESTREAM_MODEL": "x.pt"}).model is None
    b = bench_accuracy.config(["--model", "a.pt", "--model", "b.pt", "--cv", "p{k}", "--both-flips"],
                              {"FACESTREAM_MODEL": "x.pt"})
    assert [str(m) for m in b.model] == ["a.pt", "b.pt"] and b.cv == ["p{k}"] and b.both_flips
    assert bench_accuracy.config([], {"FACESTREAM_MODEL": "x.pt"}).model == []
