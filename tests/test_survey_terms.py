"""The survey's loss terms (DKD, DIST, logit-standardised KD, AT, PKT, SP, RKD, FSP) against the papers' formulas
written out by hand, plus identities, gradients, errors, and their experiments running a training step."""

import math
import statistics

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from kd_lightning.distill import (
    DIST, DKD, FSP, PKT, RKD, AttentionTransfer, Outputs, SimilarityPreserving, SoftTargetKD, StandardizedKD,
)
from kd_lightning.errors import ConfigError, FeatureShapeError
from kd_lightning.models import DeepNN
from kd_lightning.train import train

# ---------------------------------------------------------------- fixed small tensors and plain-python helpers

S_LOGITS = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.5, 1.5, 0.0, -0.5], [-1.0, 0.3, 2.2, 0.1]])
T_LOGITS = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, -2.0, 1.0], [0.5, -0.5, 3.0, 0.0]])
TARGET = torch.tensor([0, 1, 3])  # the third sample's label is not the teacher's top class: a non-trivial case

# (batch 3) feature vectors for the relational terms: student 4-d, teacher 3-d (sizes may differ)
S_VEC = torch.tensor([[1.0, 0.0, 2.0, -1.0], [0.5, 1.0, 0.0, 0.0], [-1.0, 2.0, 1.0, 0.5]])
T_VEC = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, -1.0, 2.0]])


def softmax(row, t=1.0):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def norm(a):
    return math.sqrt(dot(a, a))


def huber(x):  # smooth L1 with delta 1
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def logits(s, t=None):
    return Outputs(s), Outputs(T_LOGITS if t is None else t)


def feats(s, t, s_layer="s", t_layer="t"):
    return Outputs(S_LOGITS, {s_layer: s}), Outputs(T_LOGITS, {t_layer: t})


# ---------------------------------------------------------------- DKD


def dkd_by_hand(s_rows, t_rows, targets, alpha, beta, temp):
    total = 0.0
    for s, t, g in zip(s_rows, t_rows, targets):
        p_s, p_t = softmax(s, temp), softmax(t, temp)
        tckd = kl([p_t[g], 1 - p_t[g]], [p_s[g], 1 - p_s[g]])
        q_s = [p / (1 - p_s[g]) for k, p in enumerate(p_s) if k != g]
        q_t = [p / (1 - p_t[g]) for k, p in enumerate(p_t) if k != g]
        total += alpha * tckd + beta * kl(q_t, q_s)
    return total / len(targets) * temp**2


def test_dkd_is_alpha_tckd_plus_beta_nckd_times_t_squared():
    expected = dkd_by_hand(S_LOGITS.tolist(), T_LOGITS.tolist(), TARGET.tolist(), alpha=1.0, beta=8.0, temp=4.0)
    got = DKD(alpha=1.0, beta=8.0, temperature=4.0)(*logits(S_LOGITS), TARGET)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_dkd_reproduces_kd_with_beta_one_minus_teacher_target_probability():
    """The paper's eq. 4 for one sample: KD = TCKD + (1 - p_t[target]) NCKD."""
    s, t, y = S_LOGITS[2:], T_LOGITS[2:], TARGET[2:]
    beta = 1 - softmax(t[0].tolist(), 2.0)[y.item()]
    kd = SoftTargetKD(temperature=2.0)(*logits(s, t), y)
    assert DKD(alpha=1.0, beta=beta, temperature=2.0)(*logits(s, t), y).item() == pytest.approx(kd.item(), rel=1e-5)


def test_dkd_warms_up_linearly_with_its_own_count_of_training_calls():
    term = DKD(temperature=4.0, warmup_steps=4)
    full = dkd_by_hand(S_LOGITS.tolist(), T_LOGITS.tolist(), TARGET.tolist(), 1.0, 8.0, 4.0)
    term.eval()
    assert term(*logits(S_LOGITS), TARGET).item() == 0.0  # no training step yet, and eval calls do not count
    term.train()
    got = [term(*logits(S_LOGITS), TARGET).item() / full for _ in range(6)]
    assert got == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0], rel=1e-5)
    assert term.state_dict()["calls"].item() == 6  # checkpointed: a resumed run continues the ramp


# ---------------------------------------------------------------- DIST


def pearson(a, b):
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    a, b = [x - ma for x in a], [x - mb for x in b]
    return dot(a, b) / (norm(a) * norm(b))


def test_dist_is_inter_plus_intra_pearson_relation():
    temp, beta, gamma = 2.0, 1.5, 0.5
    y_s = [softmax(row, temp) for row in S_LOGITS.tolist()]
    y_t = [softmax(row, temp) for row in T_LOGITS.tolist()]
    inter = 1 - statistics.fmean(pearson(a, b) for a, b in zip(y_s, y_t))
    columns = range(len(y_s[0]))
    intra = 1 - statistics.fmean(pearson([r[c] for r in y_s], [r[c] for r in y_t]) for c in columns)
    expected = temp**2 * (beta * inter + gamma * intra)
    got = DIST(beta=beta, gamma=gamma, temperature=temp)(*logits(S_LOGITS), TARGET)
    assert got.item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- logit-standardised KD


def test_standardized_kd_is_kd_of_z_scored_logits_times_t_squared():
    temp = 2.0
    expected = 0.0
    for s, t in zip(S_LOGITS.tolist(), T_LOGITS.tolist()):
        z_s = [(v - statistics.fmean(s)) / statistics.stdev(s) for v in s]
        z_t = [(v - statistics.fmean(t)) / statistics.stdev(t) for v in t]
        expected += kl(softmax(z_t, temp), softmax(z_s, temp))
    expected = expected / 3 * temp**2
    got = StandardizedKD(temperature=temp)(*logits(S_LOGITS), TARGET)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_standardized_kd_ignores_the_scale_and_shift_of_the_student_logits():
    shifted = 3.0 * T_LOGITS + 7.0
    assert StandardizedKD()(*logits(shifted), TARGET).item() == pytest.approx(0.0, abs=1e-6)
    assert SoftTargetKD()(*logits(shifted), TARGET).item() > 0.1  # plain KD does not


# ---------------------------------------------------------------- attention transfer

AT_S = torch.tensor([[[[1.0, -2.0], [0.0, 1.0]], [[0.5, 0.0], [1.0, -1.0]]],
                     [[[2.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [-1.0, 3.0]]]])  # (2, 2, 2, 2)
AT_T = torch.tensor([[[[1.0, 0.0], [2.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]], [[0.0, 2.0], [1.0, 1.0]]],
                     [[[3.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [2.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]]])  # (2, 3, 2, 2)


def attention_by_hand(f):  # f: [channels][h][w] -> normalised list over positions
    c = len(f)
    q = [sum(f[k][i][j] ** 2 for k in range(c)) / c for i in range(len(f[0])) for j in range(len(f[0][0]))]
    return [v / norm(q) for v in q]


def test_attention_transfer_is_mean_squared_difference_of_normalised_attention_maps():
    diffs = []
    for s, t in zip(AT_S.tolist(), AT_T.tolist()):
        diffs += [(a - b) ** 2 for a, b in zip(attention_by_hand(s), attention_by_hand(t))]
    expected = sum(diffs) / len(diffs)  # batch 2 x 4 positions
    got = AttentionTransfer("s", "t")(*feats(AT_S, AT_T), TARGET)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_attention_transfer_pools_the_larger_map_to_the_smaller():
    big = torch.arange(32.0).view(1, 2, 4, 4) / 10 - 1
    # average of each 2x2 block, per channel
    pooled = [[[statistics.fmean(big[0, c, 2 * i + a, 2 * j + b].item() for a in (0, 1) for b in (0, 1))
                for j in (0, 1)] for i in (0, 1)] for c in (0, 1)]
    expected = statistics.fmean((a - b) ** 2 for a, b in zip(attention_by_hand(AT_S[0].tolist()),
                                                              attention_by_hand(pooled)))
    got = AttentionTransfer("s", "t")(*feats(AT_S[:1], big), TARGET)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    swapped = AttentionTransfer("s", "t")(*feats(big, AT_S[:1]), TARGET)  # either side may be the larger
    assert swapped.item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- PKT


def pkt_probabilities(rows):
    unit = [[v / norm(r) for v in r] for r in rows]
    k = [[(dot(a, b) + 1) / 2 for b in unit] for a in unit]
    return [[v / sum(row) for v in row] for row in k]


def test_pkt_is_kl_between_cosine_kernel_probabilities_averaged_over_all_pairs():
    p_s, p_t = pkt_probabilities(S_VEC.tolist()), pkt_probabilities(T_VEC.tolist())
    expected = statistics.fmean(pt * math.log(pt / ps) for rs, rt in zip(p_s, p_t) for ps, pt in zip(rs, rt))
    got = PKT("s", "t")(*feats(S_VEC, T_VEC), TARGET)
    assert got.item() == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------- similarity preserving


def test_similarity_preserving_is_squared_frobenius_of_row_normalised_grams_over_b_squared():
    s_maps, t_maps = S_VEC.view(3, 1, 2, 2), T_VEC.view(3, 3, 1, 1)  # flattened by the term

    def gram(rows):
        g = [[dot(a, b) for b in rows] for a in rows]
        return [[v / norm(r) for v in r] for r in g]

    g_s, g_t = gram(S_VEC.tolist()), gram(T_VEC.tolist())
    expected = sum((a - b) ** 2 for rs, rt in zip(g_s, g_t) for a, b in zip(rs, rt)) / 3**2
    got = SimilarityPreserving("s", "t")(*feats(s_maps, t_maps), TARGET)
    assert got.item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- RKD


def rkd_by_hand(s_rows, t_rows, w_d, w_a):
    b = len(s_rows)

    def distances(rows):
        d = [[norm([x - y for x, y in zip(rows[i], rows[j])]) for j in range(b)] for i in range(b)]
        mu = sum(map(sum, d)) / (b * (b - 1))
        return [v / mu for row in d for v in row]

    def angles(rows):
        out = []
        for i in range(b):
            for j in range(b):
                for k in range(b):
                    u = [x - y for x, y in zip(rows[j], rows[i])]
                    v = [x - y for x, y in zip(rows[k], rows[i])]
                    out.append(0.0 if i in (j, k) else dot(u, v) / (norm(u) * norm(v)))
        return out

    l_d = statistics.fmean(huber(a - c) for a, c in zip(distances(s_rows), distances(t_rows)))
    l_a = statistics.fmean(huber(a - c) for a, c in zip(angles(s_rows), angles(t_rows)))
    return w_d * l_d + w_a * l_a


def test_rkd_is_weighted_smooth_l1_on_normalised_distances_and_angles():
    s_rows = (S_VEC * 3).tolist()  # large enough distances that some Huber terms are in the linear part
    expected = rkd_by_hand(s_rows, T_VEC.tolist(), 25.0, 50.0)
    got = RKD("s", "t")(*feats(S_VEC * 3, T_VEC), TARGET)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    only_angles = RKD("s", "t", distance_weight=0.0, angle_weight=1.0)(*feats(S_VEC * 3, T_VEC), TARGET)
    assert only_angles.item() == pytest.approx(rkd_by_hand(s_rows, T_VEC.tolist(), 0.0, 1.0), rel=1e-5)


def test_rkd_distance_part_is_scale_invariant_and_a_batch_of_one_gives_zero():
    term = RKD("s", "t", distance_weight=1.0, angle_weight=1.0)
    assert term(*feats(5.0 * T_VEC + 1.0, T_VEC), TARGET).item() == pytest.approx(0.0, abs=1e-6)
    assert term(*feats(S_VEC[:1], T_VEC[:1]), TARGET).item() == 0.0


# ---------------------------------------------------------------- FSP


def fsp_by_hand(a, b):  # a: [m][h][w], b: [n][h][w] -> m x n
    hw = len(a[0]) * len(a[0][0])
    return [[sum(x * y for ra, rb in zip(fa, fb) for x, y in zip(ra, rb)) / hw for fb in b] for fa in a]


def test_fsp_is_batch_mean_of_squared_frobenius_between_flow_matrices():
    torch.manual_seed(0)
    s_a, s_b = torch.randn(2, 2, 3, 3), torch.randn(2, 3, 3, 3)
    t_a, t_b = torch.randn(2, 2, 3, 3), torch.randn(2, 3, 3, 3)
    expected = 0.0
    for i in range(2):
        g_s, g_t = fsp_by_hand(s_a[i].tolist(), s_b[i].tolist()), fsp_by_hand(t_a[i].tolist(), t_b[i].tolist())
        expected += sum((x - y) ** 2 for rs, rt in zip(g_s, g_t) for x, y in zip(rs, rt))
    expected /= 2
    term = FSP([["a", "b"]], [["x", "y"]])
    assert term.student_layers == ("a", "b") and term.teacher_layers == ("x", "y")
    got = term(Outputs(S_LOGITS, {"a": s_a, "b": s_b}), Outputs(T_LOGITS, {"x": t_a, "y": t_b}), TARGET)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_fsp_adapters_map_student_channels_and_pool_the_larger_map_of_a_pair():
    torch.manual_seed(1)
    s_a, s_b = torch.randn(1, 1, 4, 4), torch.randn(1, 2, 2, 2)  # first map is 4x4: pooled to 2x2
    t_a, t_b = torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2)
    term = FSP([["a", "b"]], [["x", "y"]], student_channels=[[1, 2]], teacher_channels=[[2, 2]])
    adapter = term.adapters[0][0]
    assert isinstance(adapter, nn.Conv2d) and isinstance(term.adapters[0][1], nn.Identity)
    with torch.no_grad():
        adapter.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
        adapter.bias.copy_(torch.tensor([0.5, 0.0]))
    pooled = [[statistics.fmean(s_a[0, 0, 2 * i + a, 2 * j + b].item() for a in (0, 1) for b in (0, 1))
               for j in (0, 1)] for i in (0, 1)]  # a 1x1 conv commutes with average pooling
    adapted = [[[2 * v + 0.5 for v in row] for row in pooled], [[-v for v in row] for row in pooled]]
    g_s, g_t = fsp_by_hand(adapted, s_b[0].tolist()), fsp_by_hand(t_a[0].tolist(), t_b[0].tolist())
    expected = sum((x - y) ** 2 for rs, rt in zip(g_s, g_t) for x, y in zip(rs, rt))
    s_a.requires_grad_(True)
    got = term(Outputs(S_LOGITS, {"a": s_a, "b": s_b}), Outputs(T_LOGITS, {"x": t_a, "y": t_b}), TARGET)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    got.backward()
    assert adapter.weight.grad.abs().sum() > 0 and adapter.bias.grad.abs().sum() > 0 and s_a.grad.abs().sum() > 0


# ---------------------------------------------------------------- identities, gradients, errors, for every term

LOGIT_TERMS = {"dkd": lambda: DKD(), "dist": lambda: DIST(temperature=4.0), "standardized_kd": lambda: StandardizedKD()}
FEATURE_TERMS = {  # (term, student feature shape, teacher feature shape)
    "at": (lambda: AttentionTransfer("s", "t"), (4, 3, 4, 4), (4, 5, 2, 2)),
    "pkt": (lambda: PKT("s", "t"), (4, 6), (4, 3, 2, 2)),
    "sp": (lambda: SimilarityPreserving("s", "t"), (4, 2, 2, 2), (4, 5)),
    "rkd": (lambda: RKD("s", "t"), (4, 6), (4, 9)),
}


def fsp_outputs(student_maps, teacher_maps):
    return (Outputs(S_LOGITS, dict(zip("ab", student_maps))), Outputs(T_LOGITS, dict(zip("xy", teacher_maps))))


@pytest.mark.parametrize("name", LOGIT_TERMS)
def test_logit_terms_are_zero_for_identical_logits(name):
    # DIST: up to the official code's eps=1e-8 in the Pearson denominator (T=4 flattens the probabilities)
    assert LOGIT_TERMS[name]()(*logits(T_LOGITS), TARGET).item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("name", FEATURE_TERMS)
def test_feature_terms_are_zero_for_identical_features(name):
    make, shape, _ = FEATURE_TERMS[name]
    f = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    assert make()(*feats(f, f.clone()), TARGET).item() == pytest.approx(0.0, abs=1e-6)


def test_fsp_is_zero_for_identical_features():
    maps = [torch.randn(2, 2, 3, 3), torch.randn(2, 3, 3, 3)]
    assert FSP([["a", "b"]], [["x", "y"]])(*fsp_outputs(maps, maps), TARGET).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", LOGIT_TERMS)
def test_logit_terms_send_gradients_to_the_student_only(name):
    s = S_LOGITS.clone().requires_grad_(True)
    value = LOGIT_TERMS[name]()(*logits(s), TARGET)
    value.backward()
    assert not T_LOGITS.requires_grad and s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


@pytest.mark.parametrize("name", FEATURE_TERMS)
def test_feature_terms_send_gradients_to_the_student_only(name):
    make, s_shape, t_shape = FEATURE_TERMS[name]
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(s_shape, generator=g).requires_grad_(True), torch.randn(t_shape, generator=g)
    make()(*feats(s, t), TARGET).backward()
    assert not t.requires_grad and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: DKD(temperature=0), r"DKD: temperature must be > 0, got 0"),
        (lambda: DKD(beta=-1.0), r"DKD: beta must be >= 0, got -1.0"),
        (lambda: DKD(warmup_steps=-3), r"warmup_steps must be an integer >= 0.*got -3"),
        (lambda: DKD(warmup_steps=2.5), r"warmup_steps must be an integer >= 0.*got 2.5"),
        (lambda: DIST(temperature=-1.0), r"DIST: temperature must be > 0, got -1.0"),
        (lambda: DIST(gamma=-0.5), r"DIST: gamma must be >= 0, got -0.5"),
        (lambda: StandardizedKD(temperature=0.0), r"StandardizedKD: temperature must be > 0, got 0.0"),
        (lambda: AttentionTransfer("s", "t", p=0), r"p must be > 0 \(the paper uses 2\), got 0"),
        (lambda: PKT("s", "t", eps=0.0), r"PKT: eps must be > 0, got 0.0"),
        (lambda: RKD("s", "t", distance_weight=0, angle_weight=0), r"not both 0, got 0 and 0"),
        (lambda: RKD("s", "t", distance_weight=-1.0), r"must be >= 0.*got -1.0 and 50.0"),
        (lambda: FSP("features", [["x", "y"]]),
         r"student_layers must be a non-empty list of \[first, second\] pairs, got 'features'"),
        (lambda: FSP([["a", "b", "c"]], [["x", "y"]]), r"student_layers must be .*pairs, got \[\['a', 'b', 'c'\]\]"),
        (lambda: FSP([["a", "b"]], [["x", "y"], ["z", "w"]]), r"1 student layer pairs but 2 teacher layer pairs"),
        (lambda: FSP([["a", "b"]], [["x", "y"]], student_channels=[[1, 2]]),
         r"give both student_channels and teacher_channels"),
        (lambda: FSP([["a", "b"]], [["x", "y"]], student_channels=[[1, 2]], teacher_channels=[[2, 2], [3, 3]]),
         r"one \[C_first, C_second\] entry per layer pair \(1 pairs\)"),
        (lambda: FSP([["a", "b"]], [["x", "y"]], student_channels=[[0, 2]], teacher_channels=[[2, 2]]),
         r"channel counts must be positive integers, got 0 and 2"),
    ],
)
def test_bad_config_values_raise_config_error_naming_the_value(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


@pytest.mark.parametrize("make", [DKD, DIST, StandardizedKD])
def test_logit_terms_refuse_different_class_counts(make):
    with pytest.raises(FeatureShapeError, match=r"student logits \(3, 4\) do not match teacher logits \(3, 5\)"):
        make()(*logits(S_LOGITS, torch.zeros(3, 5)), TARGET)


@pytest.mark.parametrize(
    "make, s_shape, t_shape, match",
    [
        (lambda: AttentionTransfer("features", "classifier.1"), (2, 3, 4, 4), (2, 512),
         r"\(2, 3, 4, 4\).*'features'.*\(2, 512\).*'classifier.1'"),
        (lambda: AttentionTransfer("s", "t"), (2, 3, 4, 4), (3, 3, 4, 4), r"\(2, 3, 4, 4\).*'s'.*\(3, 3, 4, 4\).*'t'"),
        (lambda: PKT("s", "t"), (2, 6), (3, 6), r"\(2, 6\).*'s'.*\(3, 6\).*'t'.*batch sizes differ"),
        (lambda: SimilarityPreserving("s", "t"), (2, 6), (4, 6), r"\(2, 6\).*\(4, 6\).*batch sizes differ"),
        (lambda: RKD("s", "t"), (4, 6), (2, 6), r"\(4, 6\).*\(2, 6\).*batch sizes differ"),
    ],
)
def test_feature_shape_errors_name_both_layers_and_shapes(make, s_shape, t_shape, match):
    s_layer, t_layer = make().student_layer, make().teacher_layer
    with pytest.raises(FeatureShapeError, match=match):
        make()(*feats(torch.zeros(s_shape), torch.zeros(t_shape), s_layer, t_layer), TARGET)


def test_fsp_without_adapters_refuses_different_channel_counts_naming_layers_and_shapes():
    student, teacher = [torch.zeros(2, 16, 4, 4)] * 2, [torch.zeros(2, 64, 4, 4), torch.zeros(2, 32, 4, 4)]
    match = r"\(2, 16, 16\).*\['a', 'b'\].*\(2, 64, 32\).*\['x', 'y'\].*student_channels"
    with pytest.raises(FeatureShapeError, match=match):
        FSP([["a", "b"]], [["x", "y"]])(*fsp_outputs(student, teacher), TARGET)
    with pytest.raises(FeatureShapeError, match=r"'a': \(2, 16\)"):
        FSP([["a", "b"]], [["x", "y"]])(*fsp_outputs([torch.zeros(2, 16), student[1]], teacher), TARGET)


# ---------------------------------------------------------------- the experiments

NEW_EXPERIMENTS = ["dkd", "dist", "standardized_kd", "at", "pkt", "sp", "rkd", "fsp"]


@pytest.mark.parametrize("name", NEW_EXPERIMENTS)
def test_new_experiment_composes_and_trains_a_step_with_a_finite_loss(name, make_config, teacher_state):
    cfg = make_config(f"+experiment=cifar10_{name}", f"teacher.checkpoint={teacher_state(DeepNN())}",
                      "trainer.fast_dev_run=true")
    assert cfg.run_name == f"cifar10_{name}"
    summary = train(cfg)  # one training step; a non-finite loss would raise NonFiniteLossError
    assert summary["status"] == "done"

    module = instantiate(cfg.distill, net=instantiate(cfg.model), optimizer=instantiate(cfg.optimizer))
    x, y = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 10
    total, values = module.losses(x, y, torch.arange(16))[:2]  # values: {"loss", <term>..., "#correct", "#count"}
    values = torch.stack([v.float() for v in values.values()])
    assert torch.isfinite(values).all() and (values >= 0).all()
    total.backward()
    trainable = [p for p in module.terms.parameters()]  # adapters (FSP) must get gradients too
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in [*module.net.parameters(), *trainable])
