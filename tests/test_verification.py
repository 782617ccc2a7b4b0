"""Every verification rule, driven without Flower: facts in, verdicts out.

Each case starts from an honest reply that passes every check and breaks one rule; the
verdict must name that rule's check and its reason code. The default norm bound is
checked against boosted (model-replacement) updates, small rounds and zero updates.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flchain_plugin import entries as E
from flchain_plugin import verification as V
from flchain_plugin.notes import generate_key, generate_ml_dsa_key
from flchain_plugin.statement import SignedStatement, Statement
from flchain_plugin.verification import (
    CHECKS,
    History,
    MedianNormBound,
    Policy,
    Reason,
    ReplyFacts,
    Round,
    verify_round,
)

KEY = generate_key("client-5")
OTHER = generate_key("client-6")
PQ = generate_ml_dsa_key("client-5")
PQ_OTHER = generate_ml_dsa_key("client-5")
PARENT = "sha256:" + "a" * 64
UPDATE = "sha256:" + "b" * 64
ELSE = "sha256:" + "c" * 64
DATASET = "sha256:" + "d" * 64
EXPECTED = {"b": ("<f4", (3,)), "w": ("<f4", (4, 3))}
METRICS = {"loss": 0.5, "num-examples": 10}
KEYS = (("metrics", ("loss", "num-examples")),)


def signed(key: Any = KEY, pq: Any = None, **changes: Any) -> SignedStatement:
    base: dict[str, Any] = dict(run="run-1", round=3, node="5", parent=PARENT, update=UPDATE,
                                num_examples=10, metrics=dict(METRICS), dataset=DATASET)
    base.update(changes)
    return Statement(**base).sign(key, pq)


def forged_pq() -> SignedStatement:
    good = signed(pq=PQ)
    return dataclasses.replace(good, pq_signature=bytes(2420))


def honest(node: str = "5", update: str = UPDATE, norm: float = 1.0, **changes: Any
           ) -> ReplyFacts:
    facts = ReplyFacts(node=node, parent=PARENT, expected=EXPECTED,
                       statement=signed(node=node, update=update), nbytes=64, update=update,
                       tensors=dict(EXPECTED), norm=norm, metrics=dict(METRICS),
                       metric_keys=KEYS)
    return dataclasses.replace(facts, **changes)


def round_of(policy: Policy | None = None, history: History | None = None) -> Round:
    return Round("run-1", 3, policy or Policy(), history or History())


def verdict(facts: ReplyFacts, r: Round) -> V.Verdict:
    (v,) = verify_round([facts], r)
    return v


def forged() -> SignedStatement:
    good = signed()
    return SignedStatement(good.statement, good.data, good.key, bytes(64))


# (case, facts, policy, history, reason, check)
CASES: list[tuple[str, ReplyFacts, Policy | None, History | None, Reason, str]] = [
    ("client error", honest(error="error code 2: boom"), None, None,
     Reason.CLIENT_ERROR, "no_error"),
    ("statement unreadable", honest(statement=None, statement_error="not JSON"), None, None,
     Reason.BAD_SIGNATURE, "statement_readable"),
    ("no statement", honest(statement=None), None, None, Reason.UNSIGNED, "signed"),
    ("a member drops its signature", honest(statement=None),
     Policy(require_signatures=False), History(members={"5": KEY.verifier_key}),
     Reason.UNSIGNED, "signed"),
    ("key not allow-listed", honest(), Policy(allowed_keys=frozenset({OTHER.verifier_key})),
     None, Reason.UNKNOWN_CLIENT, "key_allowed"),
    ("another key than registered", honest(), None,
     History(members={"5": OTHER.verifier_key}), Reason.BAD_SIGNATURE, "key_registered"),
    ("forged signature", honest(statement=forged()), None, None, Reason.BAD_SIGNATURE,
     "signature_valid"),
    ("forged ML-DSA-44 signature beside Ed25519", honest(statement=forged_pq()), None, None,
     Reason.BAD_SIGNATURE, "signature_valid"),
    ("Ed25519 only where ML-DSA-44 is required", honest(), Policy(require_post_quantum=True),
     None, Reason.NOT_POST_QUANTUM, "post_quantum"),
    ("no statement where ML-DSA-44 is required", honest(statement=None),
     Policy(require_signatures=False, require_post_quantum=True), None,
     Reason.NOT_POST_QUANTUM, "post_quantum"),
    ("second ML-DSA-44 key not allow-listed", honest(statement=signed(pq=PQ)),
     Policy(allowed_keys=frozenset({KEY.verifier_key}), require_post_quantum=True), None,
     Reason.NOT_POST_QUANTUM, "post_quantum"),
    ("second ML-DSA-44 key changed", honest(statement=signed(pq=PQ)),
     Policy(require_post_quantum=True), History(pq_members={"5": PQ_OTHER.verifier_key}),
     Reason.NOT_POST_QUANTUM, "post_quantum"),
    ("signed for another node", honest(statement=signed(node="6")), None, None,
     Reason.BAD_SIGNATURE, "signed_for_node"),
    ("another run", honest(statement=signed(run="run-0")), None, None, Reason.WRONG_RUN,
     "same_run"),
    ("another round", honest(statement=signed(round=2)), None, None, Reason.WRONG_ROUND,
     "same_round"),
    ("stale parent", honest(statement=signed(parent=ELSE)), None, None,
     Reason.STALE_PARENT, "parent_sent"),
    ("two ArrayRecords", honest(array_records=2), None, None, Reason.MALFORMED,
     "one_array_record"),
    ("too many bytes", honest(), Policy(max_update_bytes=63), None, Reason.OUT_OF_BOUNDS,
     "size_bound"),
    ("unreadable arrays", dataclasses.replace(
        honest(), arrays_error="array 'w': not .npy bytes", update=None, tensors=None,
        norm=None), None, None,
     Reason.MALFORMED, "arrays_readable"),
    ("arrays altered after signing", honest(update=ELSE, statement=signed(update=UPDATE)),
     None, None, Reason.DIGEST_MISMATCH, "arrays_signed"),
    ("metrics altered after signing", honest(metrics={"loss": 0.1, "num-examples": 10}),
     None, None, Reason.DIGEST_MISMATCH, "metrics_signed"),
    ("a metric the policy does not record", honest(), Policy(metric_keys=frozenset()), None,
     Reason.METRIC_NOT_ALLOWED, "metrics_allowed"),
    ("nonce reused", honest(), None, None, Reason.REPLAY, "nonce_fresh"),  # history below
    ("update resent", honest(), None, History(updates={UPDATE}), Reason.REPLAY,
     "update_fresh"),
    ("tensor names", honest(tensors={"w": ("<f4", (4, 3)), "x": ("<f4", (3,))}), None, None,
     Reason.MALFORMED, "tensor_names"),
    ("tensor dtype", honest(tensors={"w": ("<f8", (4, 3)), "b": ("<f4", (3,))}), None, None,
     Reason.MALFORMED, "tensor_types"),
    ("tensor shape", honest(tensors={"w": ("<f4", (3, 4)), "b": ("<f4", (3,))}), None, None,
     Reason.MALFORMED, "tensor_types"),
    ("NaN", honest(non_finite="w"), None, None, Reason.NON_FINITE, "finite"),
    ("negative weight", honest(metrics={"loss": 0.5, "num-examples": -3},
                               statement=signed(metrics={"loss": 0.5, "num-examples": -3})),
     None, None, Reason.MALFORMED, "weight_valid"),
    ("weight missing", honest(metrics={"loss": 0.5}, statement=signed(metrics={"loss": 0.5})),
     None, None, Reason.MALFORMED, "weight_valid"),
    ("signed weight differs", honest(statement=signed(num_examples=11)), None, None,
     Reason.MALFORMED, "weight_signed"),
    ("weight a fraction above the signed one",
     honest(metrics={**METRICS, "num-examples": 10.9},
            statement=signed(metrics={**METRICS, "num-examples": 10.9})), None, None,
     Reason.MALFORMED, "weight_signed"),
    ("no dataset commitment", honest(statement=signed(dataset=None)),
     Policy(require_dataset=True), None, Reason.MALFORMED, "dataset_committed"),
    ("weight too large", honest(), Policy(max_examples=9), None, Reason.OUT_OF_BOUNDS,
     "examples_bound"),
    ("norm above a fixed bound", honest(norm=2.5), Policy(max_update_norm=2.0), None,
     Reason.OUT_OF_BOUNDS, "norm_bound"),
]


@pytest.mark.parametrize("case,facts,policy,history,reason,check", CASES,
                         ids=[c[0] for c in CASES])
def test_each_rule_refuses_with_its_code_and_names_its_check(case, facts, policy, history,
                                                             reason, check):
    if check == "nonce_fresh":
        history = History(nonces={facts.statement.statement.nonce})
    v = verdict(facts, round_of(policy, history))
    assert not v.accepted
    assert v.refusal.reason is reason
    assert v.refusal.detail.startswith(f"{check}: "), v.refusal.detail
    # What the wrapper logs: the refusal as a `rejected` entry, which decodes back to it.
    logged = E.decode(E.Rejected(run="r", round=1, node="n", reason=v.refusal.reason.value,
                                 detail=v.refusal.detail[:2000]).encode())
    assert (logged.reason, logged.detail) == (reason.value, v.refusal.detail[:2000])


def test_every_check_is_driven_and_the_order_is_the_documented_one():
    driven = {c[5] for c in CASES}  # metric_keys_agree, a round check, has its own test
    names = [c.__name__ for c in CHECKS]
    assert set(names) | {"norm_bound"} == driven
    # ARCHITECTURE.md's order: error, signature, run/round, parent, digest, replay, shapes
    # and finiteness, bounds (the byte bound is checked before reading the arrays).
    order = ["no_error", "signature_valid", "same_run", "same_round", "parent_sent",
             "arrays_signed", "nonce_fresh", "update_fresh", "tensor_names", "finite",
             "examples_bound"]
    assert [n for n in names if n in order] == order
    assert [c.__name__ for c in V.ROUND_CHECKS] == ["within_norm_bound", "metric_keys_agree"]


def test_an_honest_reply_passes_and_is_remembered():
    h = History()
    v = verdict(honest(), round_of(history=h))
    assert v.accepted and v.refusal is None
    assert h.updates == {UPDATE} and h.nonces == {v.facts.statement.statement.nonce}


def test_an_unsigned_reply_passes_where_the_policy_allows_it():
    v = verdict(honest(statement=None), round_of(Policy(require_signatures=False)))
    assert v.accepted


def test_a_refused_reply_burns_nothing_and_a_round_cannot_replay_itself():
    h = History()
    first, again = honest(), honest(node="6", statement=signed(node="6", key=OTHER))
    bad = honest(non_finite="w", update=ELSE, statement=signed(update=ELSE))
    verdicts = verify_round([bad, first, again], round_of(history=h))
    assert [v.refusal.reason if v.refusal else None for v in verdicts] == [
        Reason.NON_FINITE, None, Reason.REPLAY]
    assert verdicts[2].refusal.detail.startswith("update_fresh: ")
    assert h.updates == {UPDATE}  # the refused NaN update may be sent again, fixed


def test_an_unchanged_model_from_several_clients_is_no_replay():
    same = [honest(node=str(n), update=PARENT, norm=0.0,
                   statement=signed(node=str(n), update=PARENT)) for n in range(4)]
    assert all(v.accepted for v in verify_round(same, round_of()))


def test_metric_keys_unlike_the_majority_are_refused():
    replies = [honest(node=str(n), update=f"sha256:{n:064x}",
                      statement=signed(node=str(n), update=f"sha256:{n:064x}"))
               for n in range(3)]
    replies[1] = dataclasses.replace(replies[1], metric_keys=(("metrics", ("x",)),))
    verdicts = verify_round(replies, round_of())
    assert [v.accepted for v in verdicts] == [True, False, True]
    assert verdicts[1].refusal.reason is Reason.MALFORMED
    assert verdicts[1].refusal.detail.startswith("metric_keys_agree: MetricRecord keys differ")


# -- the default norm bound -----------------------------------------------------------------


def cohort(norms: list[float], first: int = 1) -> list[ReplyFacts]:
    out = []
    for n, norm in enumerate(norms):
        d = f"sha256:{first + n:064x}"
        out.append(honest(node=str(n), update=d, norm=norm, statement=signed(node=str(n),
                                                                             update=d)))
    return out


def refused(verdicts: list[V.Verdict]) -> list[int]:
    return [i for i, v in enumerate(verdicts) if not v.accepted]


def test_a_boosted_update_is_refused_by_default():
    norms = [1.0, 0.8, 1.3, 0.6, 1.9, 1.1, 0.9, 1.2, 0.7, 1.0]
    norms[3] *= 10  # model replacement: client 3 scales its update by 10
    verdicts = verify_round(cohort(norms), round_of())
    assert refused(verdicts) == [3]
    detail = verdicts[3].refusal.detail
    assert verdicts[3].refusal.reason is Reason.OUT_OF_BOUNDS
    assert detail.startswith("norm_bound: update norm 6 exceeds 5.25 (5 x the median of this "
                             "round's 10 non-zero update norms)"), detail


def test_the_default_bound_is_recorded_in_the_policy():
    doc = Policy().to_json()["max_update_norm"]
    assert doc == {"rule": "factor x median of the round's non-zero update norms",
                   "factor": 5.0, "min_updates": 3}
    json.dumps(Policy().to_json())  # fits a run entry
    assert Policy(max_update_norm=None).to_json()["max_update_norm"] is None
    assert Policy(max_update_norm=2.5).to_json()["max_update_norm"] == 2.5


def test_small_rounds_take_the_last_derived_bound_or_none():
    h = History()
    verify_round(cohort([1.0, 1.0, 1.0]), round_of(history=h))
    assert h.norm_bound == 5.0
    (ok, boosted) = verify_round(cohort([1.0, 10.0], first=100), round_of(history=h))
    assert ok.accepted and not boosted.accepted
    assert "the bound of the last round with at least 3" in boosted.refusal.detail
    fresh = verify_round(cohort([1.0, 10.0]), round_of())  # no earlier round: no bound
    assert all(v.accepted for v in fresh)


def test_zero_norms_do_not_lower_the_bound():
    verdicts = verify_round(cohort([0.0, 0.0, 0.0, 0.0, 1.0, 1.2, 0.9]), round_of())
    assert refused(verdicts) == []


def test_no_bound_when_the_policy_sets_none():
    assert refused(verify_round(cohort([1.0, 1.0, 100.0]), round_of(
        Policy(max_update_norm=None)))) == []


@settings(max_examples=200, deadline=None)
@given(honest_norms=st.lists(st.floats(0.6, 1.0), min_size=3, max_size=20),
       attacker=st.data())
def test_the_default_bound_refuses_every_boost_of_a_close_cohort(honest_norms, attacker):
    """Honest norms within 1/0.6 of each other: none refused; any one of them boosted 10x
    (now above 5 x any median of the others): refused."""
    i = attacker.draw(st.integers(0, len(honest_norms) - 1))
    assert refused(verify_round(cohort(honest_norms), round_of())) == []
    boosted = list(honest_norms)
    boosted[i] *= 10
    assert refused(verify_round(cohort(boosted), round_of())) == [i]


@pytest.mark.parametrize("kwargs,match", [
    ({"max_update_norm": 0}, "max_update_norm"),
    ({"max_update_norm": math.nan}, "max_update_norm"),
    ({"max_update_norm": True}, "max_update_norm"),
    ({"max_update_norm": "auto"}, "max_update_norm"),
    ({"max_examples": 0}, "max_examples"),
    ({"max_update_bytes": 1.5}, "max_update_bytes"),
    ({"allowed_keys": "k"}, "allowed_keys"),
    ({"allowed_keys": frozenset()}, "allowed_keys"),
    ({"allowed_keys": frozenset({"nope"})}, "allowed_keys"),
    ({"weight_key": ""}, "weight_key"),
    ({"require_signatures": 1}, "require_signatures"),
    ({"require_dataset": "yes"}, "require_dataset"),
    ({"metric_keys": "loss"}, "metric_keys"),
    ({"metric_keys": frozenset({""})}, "metric_keys"),
])
def test_bad_policies_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Policy(**kwargs)


@pytest.mark.parametrize("kwargs", [{"factor": 1}, {"factor": math.inf}, {"min_updates": 0},
                                    {"min_updates": 2.0}])
def test_bad_median_bounds_name_the_argument(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        MedianNormBound(**kwargs)


# -- measuring, the codes, the layer ------------------------------------------------------


def test_update_norm_is_the_l2_norm_of_the_change_over_floating_tensors():
    parent = {"w": np.zeros((2, 2), np.float32), "n": np.zeros(3, np.int64)}
    update = {"w": np.full((2, 2), 1.5, np.float32), "n": np.full(3, 100, np.int64)}
    assert V.update_norm(update, parent) == pytest.approx(3.0)
    assert V.all_finite(update["w"]) and V.all_finite(update["n"])
    assert not V.all_finite(np.array([1.0, np.inf], np.float32))
    assert not V.all_finite(np.array([1.0, np.nan], np.float16))
    assert V.all_finite(np.array([3e38, 3e38], np.float32))  # squares overflow, values finite


def test_the_reason_codes_are_one_enumeration_and_old_codes_stay_valid():
    old = {"client_error", "unsigned", "bad_signature", "unknown_client", "wrong_run",
           "wrong_round", "stale_parent", "digest_mismatch", "replay", "malformed",
           "non_finite", "out_of_bounds"}
    assert old <= {r.value for r in Reason}
    for r in Reason:  # every code of the enumeration is one a `rejected` entry holds
        entry = E.Rejected(run="r", round=1, node="n", reason=r.value, detail="d")
        assert E.decode(entry.encode()).reason == r.value
    for code in old:
        E.Rejected(run="r", round=1, node="n", reason=code, detail="d")
    with pytest.raises(E.EntryError, match=r"rejected\.reason"):
        E.Rejected(run="r", round=1, node="n", reason="boosted", detail="d")


def test_metric_keys_name_what_the_ledger_records():
    """The weight always passes; a listed metric passes; the policy records the list."""
    assert verdict(honest(), round_of(Policy(metric_keys=frozenset({"loss"})))).accepted
    assert verdict(honest(), round_of(Policy(metric_keys=["loss", "acc"]))).accepted
    refused = verdict(honest(), round_of(Policy(metric_keys=frozenset({"acc"}))))
    assert refused.refusal.reason is Reason.METRIC_NOT_ALLOWED
    assert "'loss'" in refused.refusal.detail and "0.5" not in refused.refusal.detail
    assert Policy(metric_keys={"b", "a"}).to_json()["metric_keys"] == ["a", "b"]
    assert "metric_keys" not in Policy().to_json()  # old runs record their policy as before


def test_the_rules_import_no_framework():
    code = ("import sys, flchain_plugin.verification, flchain_plugin.flower.policy as p;"
            "print(sorted(m for m in ('flwr','torch','mlflow','lightning','ray') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_readme_lists_the_checks_in_their_order():
    """The README's Flower table is the document a reader compares CHECKS with."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| [0-9–]+ \| (.+?) \| `([a-z_]+)`(?:, `([a-z_]+)`)? \|", readme,
                      re.MULTILINE)
    listed = [n for names, *_ in rows for n in re.findall(r"`([a-z_]+)`", names)]
    assert listed == [c.__name__ for c in CHECKS] + ["norm_bound", "metric_keys_agree"]
    codes = {}
    for names, first, second in rows:
        checks = re.findall(r"`([a-z_]+)`", names)
        for check, code in zip(checks, [first, second or first], strict=False):
            codes[check] = code
    driven = {c[5]: c[4].value for c in CASES} | {"metric_keys_agree": "malformed"}
    assert codes == driven


def test_the_flower_policy_is_the_rules_policy():
    from flchain_plugin.flower import MedianNormBound as FlowerBound
    from flchain_plugin.flower import Policy as FlowerPolicy

    assert FlowerPolicy is Policy and FlowerBound is MedianNormBound


@pytest.mark.parametrize("statement, policy", [
    (lambda: signed(PQ), Policy(require_post_quantum=True)),
    (lambda: signed(PQ), Policy(allowed_keys=frozenset({PQ.verifier_key}),
                                require_post_quantum=True)),
    (lambda: signed(pq=PQ), Policy(require_post_quantum=True)),
    (lambda: signed(pq=PQ), Policy(allowed_keys=frozenset({KEY.verifier_key, PQ.verifier_key}),
                                   require_post_quantum=True)),
], ids=["ml-dsa alone, tofu", "ml-dsa alone, allow-list", "hybrid, tofu", "hybrid, allow-list"])
def test_post_quantum_statements_pass_the_policy_that_requires_them(statement, policy):
    st = statement()
    assert verdict(honest(statement=st), round_of(policy)).accepted
    assert policy.to_json()["require_post_quantum"] is True
    assert "require_post_quantum" not in Policy().to_json()  # old runs record as before


def test_require_post_quantum_is_validated():
    with pytest.raises(ValueError, match="require_post_quantum must be True or False"):
        Policy(require_post_quantum="yes")
