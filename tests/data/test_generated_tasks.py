"""Generated tasks (qlam.data.generated): each generator against hand-computed cases and
independent recomputations, seeding, chance levels and bad options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qlam.data import generated, get_task, listops, recall, state_tracking
from qlam.data.recall import IGNORE_INDEX


class Scripted:
    """A stand-in for np.random.Generator that returns the given arrays in order."""

    def __init__(self, *arrays):
        self.arrays = list(arrays)

    def _next(self, size, dtype=None):
        return np.asarray(self.arrays.pop(0), dtype=dtype).reshape(size)

    def integers(self, low, high, size=None, dtype=np.int64):
        return self._next(size, dtype)

    def random(self, size=None, dtype=np.float64):
        return self._next(size, dtype)


# ---- state tracking ------------------------------------------------------------------------
def test_parity_hand_case():
    bits = [[1, 0, 1, 1], [0, 0, 0, 0]]
    x, y = state_tracking.parity(Scripted(bits), 2, 4)
    assert x.tolist() == bits and y.tolist() == [1, 0]
    _, running = state_tracking.parity(Scripted(bits), 2, 4, running=True)
    assert running.tolist() == [[1, 1, 0, 1], [0, 0, 0, 0]]


def test_parity_matches_a_python_count():
    x, y = state_tracking.parity(np.random.default_rng(1), 50, 33)
    assert y.tolist() == [sum(row) % 2 for row in x.tolist()]


def test_s5_word_hand_case():
    """(0 1) then (1 2): 0 -> 1 -> 2, 1 -> 0 -> 0, 2 -> 2 -> 1, i.e. [2, 0, 1, 3, 4].
    Lexicographic indices: [1,0,2,3,4] = 1 * 4! = 24, [0,2,1,3,4] = 1 * 3! = 6,
    [2,0,1,3,4] = 2 * 4! = 48."""
    e = state_tracking.group_elements("s5")
    assert e.shape == (120, 5) and e[0].tolist() == [0, 1, 2, 3, 4]
    assert e[24].tolist() == [1, 0, 2, 3, 4] and e[6].tolist() == [0, 2, 1, 3, 4]
    assert e[48].tolist() == [2, 0, 1, 3, 4]
    x, y = state_tracking.word_problem(Scripted([[24, 6]]), 1, 2, "s5")
    assert y.tolist() == [48]
    _, running = state_tracking.word_problem(Scripted([[24, 6, 24]]), 1, 3, "s5", running=True)
    # then (0 1) again: [2,0,1,3,4] -> 0 -> 2, 1 -> 1, 2 -> 0: [2, 1, 0, 3, 4] = 2 * 24 + 1 * 6
    assert running.tolist() == [[24, 48, 54]]
    assert e[54].tolist() == [2, 1, 0, 3, 4]


def test_a5_three_cycle_cubes_to_the_identity():
    e = state_tracking.group_elements("a5")
    assert len(e) == 60 and all(state_tracking.permutation_sign(p) == 1 for p in e.tolist())
    c = [row.tolist() for row in e].index([1, 2, 0, 3, 4])
    c2 = [row.tolist() for row in e].index([2, 0, 1, 3, 4])
    _, running = state_tracking.word_problem(Scripted([[c, c, c]]), 1, 3, "a5", running=True)
    assert running.tolist() == [[c, c2, 0]]


def test_s3_transpositions_do_not_commute():
    """S3 in lexicographic order: 0 = id, 1 = (1 2) [0,2,1], 2 = (0 1) [1,0,2], 3 = [1,2,0],
    4 = [2,0,1], 5 = [2,1,0]. (0 1) then (1 2): 0 -> 1 -> 2, 1 -> 0, 2 -> 2 -> 1: [2, 0, 1];
    the other order: 0 -> 0 -> 1, 1 -> 2, 2 -> 1 -> 0: [1, 2, 0]."""
    e = state_tracking.group_elements("s3")
    assert e.tolist() == [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]]
    _, y = state_tracking.word_problem(Scripted([[2, 1], [1, 2]]), 2, 2, "s3", running=True)
    assert y.tolist() == [[2, 4], [1, 3]]


def test_groups_are_non_abelian_groups():
    for group, size in (("s3", 6), ("s5", 120), ("a5", 60)):
        table = state_tracking.multiplication_table(state_tracking.group_elements(group))
        assert table.shape == (size, size)
        assert all(sorted(row) == list(range(size)) for row in table.tolist())  # Latin square
        assert (table[0] == np.arange(size)).all()  # identity first
        assert (table != table.T).any()  # non-abelian


def test_word_problem_matches_composing_permutations():
    x, y = state_tracking.word_problem(np.random.default_rng(0), 20, 17, "s5")
    e = state_tracking.group_elements("s5")
    for word, label in zip(x, y):
        p = np.arange(5)
        for a in word:
            p = e[a][p]
        assert e[label].tolist() == p.tolist()


# ---- memory reach --------------------------------------------------------------------------
def test_adding_hand_case():
    values = [[0.5, 0.1, 0.2, 0.3]]
    x, y = recall.adding(Scripted(values, [0], [1]), 1, 4)  # markers at 0 and 2 + 1 = 3
    assert x[0, :, 1].tolist() == [1, 0, 0, 1]
    assert y[0] == pytest.approx(0.8)


def test_adding_one_marker_per_half():
    x, y = recall.adding(np.random.default_rng(0), 200, 11)
    m = x[..., 1]
    assert (m[:, :5].sum(1) == 1).all() and (m[:, 5:].sum(1) == 1).all()
    assert np.allclose(y, (x[..., 0] * m).sum(1))


def test_copy_layout_hand_case():
    x, y = recall.copy_layout(np.array([[3, 1, 2]]), np.array([[0, 4, 5]]), 9, 4)
    assert x.tolist() == [[3, 0, 0, 0, 1, 2, 4, 4, 4]]
    assert y.tolist() == [[IGNORE_INDEX] * 6 + [3, 1, 2]]


def test_ignored_targets_are_what_torch_cross_entropy_ignores():
    """-100, the default of torch's cross-entropy: per-token targets can be given to it as they
    are (qlam.objectives masks them itself)."""
    assert IGNORE_INDEX == torch.nn.CrossEntropyLoss().ignore_index


def test_copying_puts_the_data_first_unless_selective():
    """Plain copying (the default): the m data tokens, the blank delay, then m markers."""
    x, y = recall.copying(np.random.default_rng(0), 4, 20, vocab=6, m=5)
    assert (x[:, :5] == y[:, 15:]).all() and (x[:, 5:15] == 0).all() and (x[:, 15:] == 5).all()


@pytest.mark.parametrize("selective", [False, True])
def test_copying_targets_are_the_data_tokens_in_order(selective):
    x, y = recall.copying(np.random.default_rng(0), 30, 40, vocab=6, m=5, selective=selective)
    for xi, yi in zip(x, y):
        data = [t for t in xi[:35].tolist() if t != 0]
        assert len(data) == 5 and all(1 <= t <= 4 for t in data)
        assert yi[35:].tolist() == data and (yi[:35] == IGNORE_INDEX).all()
        assert (xi[35:] == 5).all()
        if not selective:
            assert xi[:5].tolist() == data


def test_mqar_labels_are_the_values_of_the_queried_keys():
    vocab, length, pairs = 100, 64, 4
    x, y = recall.mqar(np.random.default_rng(0), 40, length, vocab, pairs)
    for xi, yi in zip(x.tolist(), y.tolist()):
        keys, values = xi[0:8:2], xi[1:8:2]
        assert len(set(keys)) == 4 and all(1 <= k < 50 for k in keys)
        assert all(50 <= v < 100 for v in values)
        value_of = dict(zip(keys, values))
        queried = [t for t, label in enumerate(yi) if label != IGNORE_INDEX]
        assert len(queried) == pairs and all(t >= 8 and (t - 8) % 2 == 0 for t in queried)
        assert sorted(xi[t] for t in queried) == sorted(keys)
        assert all(yi[t] == value_of[xi[t]] for t in queried)


def test_mqar_gaps_favour_short_distances():
    """Zoology's power law (a = 0.01) puts most queries near the context."""
    _, y = recall.mqar(np.random.default_rng(0), 400, 256, 8192, 16)
    pos = np.nonzero(y != IGNORE_INDEX)[1]
    gaps = (pos - 32) // 2
    assert np.mean(gaps < 112 / 2) > 0.55


# ---- ListOps -------------------------------------------------------------------------------
def ids(text: str) -> list[int]:
    return [listops.TOKEN[w] if w in listops.TOKEN else int(w) + 1 for w in text.split()]


@pytest.mark.parametrize("text,value", [
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[SM 3 [MED 1 5 2 8 ] 9 ]", 5),  # MED -> int(3.5) = 3; 3 + 3 + 9 = 15
    ("[MED 1 2 ]", 1),
    ("[MIN [MAX 3 8 ] [SM 9 9 ] 6 ]", 6),  # min(8, 8, 6)
    ("7", 7),
])
def test_listops_hand_cases(text, value):
    assert listops.evaluate([0, 0] + ids(text)) == value


@pytest.mark.parametrize("bad", ["[MAX 2", "2 3", "[MAX ]", "]"])
def test_listops_rejects_malformed(bad):
    with pytest.raises(ValueError):
        listops.evaluate(ids(bad))


def test_listops_generator_follows_the_rules():
    x, y = listops.listops(np.random.default_rng(0), 40, 120, 30)
    for xi, label in zip(x.tolist(), y.tolist()):
        tokens = [t for t in xi if t != listops.PAD]
        assert 30 < len(tokens) < 120
        assert xi[-len(tokens):] == tokens  # left-padded
        assert listops.evaluate(xi) == label
        depth = best = 0
        for t in tokens:
            depth += (listops.VOCAB[t] in listops.OPERATORS) - (t == listops.TOKEN["]"])
            best = max(best, depth)
        assert best <= listops.MAX_DEPTH - 1  # operators only above depth 10
    assert len(set(y.tolist())) > 3
    # every operator takes 2 .. MAX_ARGS arguments, each count drawn
    counts = []
    for xi in x.tolist():
        stack = []
        for t in xi:
            if t == listops.PAD:
                continue
            if t == listops.TOKEN["]"]:
                counts.append(stack.pop())
                continue
            if stack:
                stack[-1] += 1
            if listops.VOCAB[t] in listops.OPERATORS:
                stack.append(0)
    assert set(counts) == set(range(2, listops.MAX_ARGS + 1))


# ---- tasks ---------------------------------------------------------------------------------
def test_task_api_shapes_and_chance():
    cases = {"parity": (2, 2, 0.5), "s5-running": (120, 120, 1 / 120), "a5": (60, 60, 1 / 60),
             "adding": (2, 1, 0.0784), "copying": (10, 10, 1 / 8),
             "selective-copying": (16, 16, 1 / 14), "mqar": (8192, 8192, 1 / 4096),
             "listops": (16, 10, 0.1)}
    lengths = {"copying": 30, "selective-copying": 40, "mqar": 64, "listops": 40}
    for name, (features, classes, chance) in cases.items():
        t = get_task(name, length=lengths.get(name, 12), limit_train=20, limit_test=6)
        assert (t.n_features, t.n_classes) == (features, classes), name
        assert t.chance == pytest.approx(chance), name
        assert len(t.train) == 20 and len(t.val) == 2 and len(t.test) == 6
        assert t.discrete == (name != "adding")
        x, y = t.train.tensors
        assert x.shape[:2] == (20, t.seq_len) and x.dtype == (torch.float32 if name == "adding"
                                                               else torch.int64)
        if t.target == "tokens":
            assert y.shape == (20, t.seq_len)
        assert t.describe()["chance"] == t.chance


def test_seeds_and_fixed_test_sets():
    a = get_task("s5", length=10, seed=0, limit_train=30, limit_test=5, test_lengths=[20])
    b = get_task("s5", length=10, seed=0, limit_train=30, limit_test=5)
    c = get_task("s5", length=10, seed=1, limit_train=30, limit_test=5)
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    assert torch.equal(a.test.x, c.test.x)  # the same test set for every training seed
    long = a.test_at(20)
    assert long.x.shape == (5, 20) and torch.equal(long.x, c.test_at(20).x)
    assert a.test_lengths == (20,)
    only_test = get_task("s5", length=10, limit_test=5, splits=("test",))
    assert len(only_test.train) == 0 and torch.equal(only_test.test.x, a.test.x)


def test_mqar_keeps_the_training_pairs_at_test_lengths():
    t = get_task("mqar", length=64, limit_train=4, limit_test=3, test_lengths="128")
    y = t.test_at(128).y
    assert ((y != IGNORE_INDEX).sum(1) == 4).all()


@pytest.mark.parametrize("name,kwargs,match", [
    ("parity", dict(length=0), "length must be in"),
    ("parity", dict(length=2.5), "length must be an int"),
    ("copying", dict(length=20), "length must be >= 21"),
    ("mqar", dict(length=65), "even"),
    ("mqar", dict(length=64, vocab=50), "vocab"),
    ("listops", dict(length=4), "listops: length"),
    ("parity", dict(vocab=5), "fixed vocabulary"),
    ("copying", dict(length=30, vocab=2), "vocab must be"),
    ("parity", dict(test_lengths="64,abc"), "bad test length"),
    ("parity", dict(test_lengths=[0]), "positive"),
    ("copying", dict(length=30, test_lengths=[10]), "length must be >= 21"),
    ("parity", dict(limit_train=0), "limit_train"),
    ("smnist", dict(length=100), "applies to the generated tasks"),
    ("smnist", dict(test_lengths="100"), "applies to the generated tasks"),
    # each had been accepted: ignored and recorded in config.json as applied, or a hang
    ("parity", dict(tokenize="patch"), "tokenize applies to the image tasks, not to 'parity'"),
    ("mqar", dict(grayscale=True, patch=7), "patch, grayscale applies to the image tasks"),
    ("parity", dict(val_fraction=0.5), r"parity: the validation set has a fixed size \(1,000 "
                                       r"examples\); val_fraction applies with limit_train"),
    ("listops", dict(length=8193), r"listops: length must be in 8..8192 .* take hours"),
    ("listops", dict(test_lengths="32000"), r"listops: length must be in 8..8192"),
    ("parity", dict(splits="train"), "splits must be a collection of train, val and test"),
    ("parity", dict(seed=-1), r"seed must be an int in 0..2\^32 - 1, got -1"),  # numpy's words
    ("smnist", dict(seed=2**32), r"seed must be an int in 0..2\^32 - 1"),
])
def test_bad_options_are_named(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_task(name, **kwargs)


def test_generated_task_names():
    assert generated.GENERATED_TASKS[0] == "parity"
    with pytest.raises(ValueError, match="unknown generated task"):
        generated.spec("smnist")


def test_the_task_table_has_its_header_and_hand_checked_rows(capsys):
    from qlam.cli import main

    assert main(["data", "tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["task", "target", "outputs", "chance", "length",
                                "train/val/test", "input", "about"]
    rows = {line.split()[0]: line.split() for line in lines[1:] if line.strip()}
    assert rows["parity"][:6] == ["parity", "class", "2", "0.5", "64", "10000/1000/1000"]
    assert rows["s3-running"][:5] == ["s3-running", "tokens", "6", "0.1667", "64"]
    assert set(generated.SPECS) <= set(rows)


def test_val_fraction_zero_with_limit_train_holds_out_nothing():
    """It had still held out one example (max(1, ...)) although none was asked for."""
    sizes = {vf: len(get_task("parity", limit_train=40, val_fraction=vf, splits=("val",)).val)
             for vf in (0.0, 0.01, 0.25)}
    assert sizes == {0.0: 0, 0.01: 1, 0.25: 10}


def test_seen_in_train_counts_the_test_inputs_that_occur_in_training():
    """Generated splits are drawn independently: at length 8 parity's 256 sequences are
    nearly all in a 1,000-example training set (the audit: 100 % of its test set)."""
    from qlam.data.overlap import seen_in_train

    task = get_task("parity", length=8, limit_train=1000, limit_test=200)
    train_rows = {tuple(r.tolist()) for r in task.train.x}
    truth = sum(tuple(r.tolist()) in train_rows for r in task.test.x) / len(task.test)
    assert truth > 0.9 and seen_in_train(task.train.x, {"test": task.test.x}) == {"test": truth}
    long = get_task("parity", length=64, limit_train=1000, limit_test=200)
    assert seen_in_train(long.train.x, {"test": long.test.x}) == {"test": 0.0}
    assert seen_in_train(task.train.x, {"none": task.test.x[:0]}) == {"none": 0.0}


def test_numpy_integers_are_lengths():
    """length=np.int64(32) had been refused as 'not an int'."""
    task = get_task("parity", length=np.int64(32), test_lengths=[np.int64(128)], splits=())
    assert (task.seq_len, task.test_lengths) == (32, (128,))
    assert type(task.seq_len) is int and type(task.test_lengths[0]) is int
