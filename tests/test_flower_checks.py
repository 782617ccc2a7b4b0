"""Fast runs of LedgerStrategy's lineage checks through Flower's own `Strategy.start`.

A loopback Grid delivers each Message (pickled both ways, as a transport would) to a real
ClientApp in this process, so Flower's strategy loop, Messages, mods and Contexts are the
real ones without Ray's start-up cost. The scenarios the issue asks for run on the real
simulation engine in test_flower_sim.py / test_flower_compose.py; these cover the other
reason codes and policy options.
"""

from __future__ import annotations

import dataclasses
import pickle
import random
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import (
    Array,
    ArrayRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    MultiKrum,
    Strategy,
)

try:
    from flwr.supercore.run import Run  # flwr >= 1.32
except ImportError:  # flwr 1.22-1.31
    from flwr.common.typing import Run  # type: ignore[no-redef]
try:
    from flwr.supercore.task_identity import TaskIdentity  # flwr >= 1.38
except ImportError:  # before 1.38 a Grid stamps run_id and src_node_id when it pushes
    TaskIdentity = None  # type: ignore[assignment,misc]

from flchain_plugin import entries as E
from flchain_plugin.datasets import dataset_commitment, new_salt
from flchain_plugin.flower import LedgerStrategy, Policy, client_key, signing_mod
from flchain_plugin.flower.arrays import arrayrecord_digest
from flchain_plugin.flower.protocol import STATEMENT_RECORD, read_statement, statement_record
from flchain_plugin.ledger import Ledger
from flchain_plugin.lineage import lineage

RUN_ID = 2**63 + 12345  # beyond 2^53, like Flower's


class LoopbackGrid(Grid):
    """Delivers messages to a ClientApp in-process; a raising ClientApp yields an error
    reply (code 2), as Flower's runtimes do."""

    def __init__(self, app: ClientApp, nodes: int):
        rng = random.Random(nodes)
        self.app = app
        self.ids = [rng.randrange(2**62, 2**64) for _ in range(nodes)]
        self.partition = {str(n): i for i, n in enumerate(self.ids)}
        self.contexts = {
            n: Context(RUN_ID, n, {"partition-id": i, "num-partitions": nodes}, RecordDict(), {})
            for i, n in enumerate(self.ids)
        }

    def set_run(self, run: Any) -> None:  # pragma: no cover - not used
        pass

    @property
    def run(self) -> Run:
        return Run.create_empty(RUN_ID)

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # pragma: no cover
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # pragma: no cover
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # pragma: no cover
        raise NotImplementedError

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        out = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            got = pickle.loads(pickle.dumps(m))
            try:
                reply = self.app(got, self.contexts[got.metadata.dst_node_id])
            except Exception as e:
                reply = Message(Error(2, f"{type(e).__name__}: {e}"), reply_to=got)
            out.append(pickle.loads(pickle.dumps(reply)))
        return out


@pytest.fixture(autouse=True)
def server_identity():
    """Flower stamps instructions with the process's task identity (the ServerApp's)."""
    if TaskIdentity is None:
        yield
        return
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 0, RUN_ID, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


INITIAL = {"w": np.zeros((4, 3), np.float32), "b": np.zeros(3, np.float32)}


def record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


def initial() -> ArrayRecord:
    return record(INITIAL)


Behaviour = Callable[[int, int, Message, Context, Any], Message]


def make_app(keys: Path, behaviour: Behaviour | None = None, **mod_kwargs: Any) -> ClientApp:
    """Clients nudge the model; `behaviour(pid, round, msg, ctx, signed_call)` may misbehave."""
    signer = signing_mod(keys, **mod_kwargs)

    def mod(msg: Message, ctx: Context, call_next: Any) -> Message:
        if behaviour is None or msg.metadata.message_type != "train":
            return signer(msg, ctx, call_next)
        pid = int(ctx.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        return behaviour(pid, rnd, msg, ctx, lambda m, c: signer(m, c, call_next))

    app = ClientApp(mods=[mod])

    @app.train()
    def fit(msg: Message, ctx: Context) -> Message:
        pid = int(ctx.node_config["partition-id"])
        rng = np.random.default_rng()
        arrays = {k: v.numpy() + rng.normal(0, 0.01, v.shape).astype(np.float32)
                  for k, v in msg.content["arrays"].items()}
        return Message(RecordDict({"arrays": record(arrays), "metrics": MetricRecord(
            {"loss": 1.0 / (pid + 1), "num-examples": 10 + pid})}), reply_to=msg)

    @app.evaluate()
    def ev(msg: Message, ctx: Context) -> Message:
        return Message(RecordDict({"metrics": MetricRecord({"acc": 0.5, "num-examples": 5})}),
                       reply_to=msg)

    return app


def run(tmp: Path, app: ClientApp, nodes: int, rounds: int = 1, inner: Strategy | None = None,
        **kwargs: Any) -> tuple[LedgerStrategy, LoopbackGrid, Any]:
    grid = LoopbackGrid(app, nodes)
    strategy = LedgerStrategy(
        inner or FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=nodes),
        ledger=tmp / "ledger.db", **kwargs)
    result = strategy.start(grid, initial(), num_rounds=rounds)
    return strategy, grid, result


def outcome(led: Ledger, grid: LoopbackGrid) -> tuple[dict, dict]:
    acc: dict[tuple[int, int], str] = {}
    ref: dict[tuple[int, int], str] = {}
    for le in led.iter_entries():
        e = le.entry
        if isinstance(e, E.Update):
            acc[(e.round, grid.partition[e.node])] = e.update
        elif isinstance(e, E.Rejected):
            ref[(e.round, grid.partition[e.node])] = e.reason
    return acc, ref


def resign(reply: Message, key: Any, **changes: Any) -> Message:
    rc = reply.content
    st = dataclasses.replace(read_statement(rc).statement, **changes)
    rc[STATEMENT_RECORD] = statement_record(st.sign(key))
    return reply


def test_policy_reason_codes(tmp_path: Path):
    keys = tmp_path / "keys"

    def behaviour(pid: int, rnd: int, msg: Message, ctx: Context, call: Any) -> Message:
        if pid == 1:  # boosted update, honestly signed
            def boosted(m: Message, c: Context) -> Message:
                arrays = {k: v.numpy() + 5.0 for k, v in m.content["arrays"].items()}
                return Message(RecordDict({"arrays": record(arrays), "metrics":
                                           MetricRecord({"num-examples": 10})}), reply_to=m)
            return signing_mod(keys)(msg, ctx, boosted)
        reply = call(msg, ctx)
        if pid == 2:
            return resign(reply, client_key(keys, 2), run="another-run")
        if pid == 3:  # claims a huge weight, and signs it
            reply.content["metrics"]["num-examples"] = 10**7
            return resign(reply, client_key(keys, 3), num_examples=10**7,
                          metrics={"loss": 0.25, "num-examples": 10**7})
        return reply

    allowed = [client_key(keys, p).verifier_key for p in range(4)]  # node 4 is unknown
    strategy, grid, result = run(
        tmp_path, make_app(keys, behaviour), 5,
        policy=Policy(allowed_keys=frozenset(allowed), max_update_norm=1.0, max_examples=1000))
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        acc, ref = outcome(led, grid)
        assert ref == {(1, 1): "out_of_bounds", (1, 2): "wrong_run", (1, 3): "out_of_bounds",
                       (1, 4): "unknown_client"}
        assert set(acc) == {(1, 0)}
        members = [le.entry for le in led.iter_entries(type="member")]
        assert [(m.via, grid.partition[m.node]) for m in members] == [("allowlist", 0)]
        run_entry = next(led.iter_entries(type="run")).entry
        assert run_entry.run == str(RUN_ID) and run_entry.policy["max_update_norm"] == 1.0
        assert sorted(run_entry.policy["keys"]) == sorted(allowed)
        # one accepted reply: FedAvg returns it unchanged, bit for bit
        assert strategy.global_model == acc[(1, 0)] == arrayrecord_digest(result.arrays)
        assert led.verify().ok


def test_all_refused_round_keeps_the_model_and_says_so(tmp_path: Path):
    keys = tmp_path / "keys"

    def behaviour(pid: int, rnd: int, msg: Message, ctx: Context, call: Any) -> Message:
        reply = call(msg, ctx)
        if rnd == 1:  # nobody signs in round 1
            del reply.content[STATEMENT_RECORD]
        return reply

    strategy, grid, _result = run(tmp_path, make_app(keys, behaviour), 3, rounds=2)
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        acc, ref = outcome(led, grid)
        assert ref == {(1, p): "unsigned" for p in range(3)}
        assert {k[0] for k in acc} == {2}
        models = [le.entry for le in led.iter_entries(type="model")]
        start = next(led.iter_entries(type="run")).entry.model
        assert models[0].model == models[0].parent == start and models[0].inputs == []
        assert models[0].metrics == {"kept": "no reply passed verification"}
        assert models[1].parent == start and len(models[1].inputs) == 3
        lin = lineage(led, strategy.global_model)
        assert lin.ok and [v.source for v in lin.versions] == ["model", "run"]
        kept = [r for r in lin.versions[1].rounds if r.kept]
        assert len(kept) == 1 and {x.reason for x in kept[0].rejected} == {"unsigned"}


def test_inconsistent_metrics_are_refused_instead_of_crashing_fedavg(tmp_path: Path):
    keys = tmp_path / "keys"

    def behaviour(pid: int, rnd: int, msg: Message, ctx: Context, call: Any) -> Message:
        if pid != 0:
            return call(msg, ctx)

        def extra(m: Message, c: Context) -> Message:
            arrays = {k: v.numpy() + 0.01 for k, v in m.content["arrays"].items()}
            return Message(RecordDict({"arrays": record(arrays), "metrics": MetricRecord(
                {"num-examples": 10, "surprise": 1.0})}), reply_to=m)
        return signing_mod(keys)(msg, ctx, extra)

    _strategy, grid, _ = run(tmp_path, make_app(keys, behaviour), 4)
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        acc, ref = outcome(led, grid)
        assert ref == {(1, 0): "malformed"} and len(acc) == 3
        (rej,) = [le.entry for le in led.iter_entries(type="rejected")]
        assert "MetricRecord keys differ" in rej.detail


def test_dataset_commitments_are_signed_recorded_and_required(tmp_path: Path):
    keys = tmp_path / "keys"
    commitments = {p: dataset_commitment([bytes([p]) * 8, b"row"], new_salt()) for p in range(3)}

    def dataset(ctx: Context) -> str | None:
        p = int(ctx.node_config["partition-id"])
        return commitments.get(p) if p < 2 else None

    strategy, grid, _ = run(tmp_path, make_app(keys, dataset=dataset), 3, rounds=2,
                            policy=Policy(require_dataset=True))
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        _acc, ref = outcome(led, grid)
        assert ref == {(1, 2): "malformed", (2, 2): "malformed"}
        ds = [le.entry for le in led.iter_entries(type="dataset")]
        assert sorted(d.dataset for d in ds) == sorted([commitments[0], commitments[1]])
        assert all(d.scheme == "flchain-dataset/v1" for d in ds)
        lin = lineage(led, strategy.global_model)
        assert {d["dataset"] for d in lin.datasets} == {commitments[0], commitments[1]}
        assert all(d["entries"] for d in lin.datasets)


def test_unsigned_updates_when_the_policy_allows_them(tmp_path: Path):
    app = ClientApp()

    @app.train()
    def fit(msg: Message, ctx: Context) -> Message:
        arrays = {k: v.numpy() + 0.5 for k, v in msg.content["arrays"].items()}
        return Message(RecordDict({"arrays": record(arrays),
                                   "metrics": MetricRecord({"num-examples": 3})}), reply_to=msg)

    strategy, grid, _ = run(tmp_path, app, 2, policy=Policy(require_signatures=False))
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        acc, ref = outcome(led, grid)
        # both send the same update: the second one is a replay
        assert len(acc) == 1 and list(ref.values()) == ["replay"]
        ups = [le.entry for le in led.iter_entries(type="update")]
        assert ups[0].key is None and ups[0].signature is None and ups[0].nonce == ""
        lin = lineage(led, strategy.global_model)
        assert lin.accepted_updates()[0].signature is None


def test_clients_refuse_a_server_key_they_do_not_trust(tmp_path: Path):
    from flchain_plugin.notes import generate_key

    other = generate_key("flchain.local/someone-else").verifier_key
    _strategy, grid, _ = run(tmp_path, make_app(tmp_path / "keys", server_key=other), 3)
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        _, ref = outcome(led, grid)
        assert set(ref.values()) == {"client_error"}
        for le in led.iter_entries(type="rejected"):
            assert "checkpoint does not verify" in le.entry.detail
        (model,) = [le.entry for le in led.iter_entries(type="model")]
        assert model.inputs == [] and model.model == model.parent


def test_clients_pin_the_server_key_on_first_use(tmp_path: Path):
    keys = tmp_path / "keys"
    app = make_app(keys)
    grid = LoopbackGrid(app, 2)
    opts = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_available_nodes": 2}
    LedgerStrategy(FedAvg(**opts), ledger=tmp_path / "a.db").start(grid, initial(), num_rounds=1)
    # the same clients (same contexts) now meet a server with another key
    LedgerStrategy(FedAvg(**opts), ledger=tmp_path / "b.db").start(grid, initial(), num_rounds=1)
    with Ledger(tmp_path / "b.db", create=False) as led:
        rej = [le.entry for le in led.iter_entries(type="rejected")]
        assert len(rej) == 2 and all("server key changed" in r.detail for r in rej)


def test_an_inner_strategy_error_is_recorded_then_raised(tmp_path: Path):
    class Broken(FedAvg):
        def aggregate_train(self, server_round: int, replies: Any) -> Any:
            raise RuntimeError("aggregator bug")

    with pytest.raises(RuntimeError, match="aggregator bug"):
        run(tmp_path, make_app(tmp_path / "keys"), 2,
            inner=Broken(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=2))
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        (model,) = [le.entry for le in led.iter_entries(type="model")]
        assert model.inputs == [] and "aggregator bug" in model.metrics["kept"]
        assert len(list(led.iter_entries(type="update"))) == 2
        assert led.verify().ok


def test_evaluations_and_checkpoints_are_recorded(tmp_path: Path):
    keys = tmp_path / "keys"
    strategy, _grid, _ = run(
        tmp_path, make_app(keys), 3, rounds=2,
        inner=FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_available_nodes=3))
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        evals = [le.entry for le in led.iter_entries(type="evaluation")]
        models = [le.entry for le in led.iter_entries(type="model")]
        assert [(e.round, e.model, e.source) for e in evals] == [
            (1, models[0].model, "federated"), (2, models[1].model, "federated")]
        from flchain_plugin.checkpoint import verify_checkpoint
        from flchain_plugin.notes import Verifier

        cp = verify_checkpoint(led.latest_checkpoint(), Verifier.parse(strategy.verifier_key))
        assert cp.size == led.size and cp.root_hash == led.head().root


def test_invalid_arguments_name_the_argument(tmp_path: Path):
    from flchain_plugin.notes import generate_key

    led = tmp_path / "l.db"
    with pytest.raises(ValueError, match="strategy"):
        LedgerStrategy(object(), ledger=led)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already a LedgerStrategy"):
        LedgerStrategy(LedgerStrategy(FedAvg(), ledger=led), ledger=led)
    with pytest.raises(ValueError, match="ledger"):
        LedgerStrategy(FedAvg(), ledger=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="policy"):
        LedgerStrategy(FedAvg(), ledger=led, policy={"x": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="signer"):
        LedgerStrategy(FedAvg(), ledger=led, signer=generate_key("wrong-name"))
    with pytest.raises(ValueError, match="resume_from"):
        LedgerStrategy(FedAvg(), ledger=led, resume_from="sha256:" + "ab" * 32)
    with pytest.raises(ValueError, match="resume_from"):
        LedgerStrategy(FedAvg(), ledger=led, resume_from="latest")
    with pytest.raises(ValueError, match="blobs"):
        LedgerStrategy(FedAvg(), ledger=led, blobs=3.5)  # type: ignore[arg-type]
    for kwargs, name in [({"allowed_keys": ["nope"]}, "allowed_keys"),
                         ({"allowed_keys": []}, "allowed_keys"),
                         ({"max_update_norm": -1.0}, "max_update_norm"),
                         ({"max_update_norm": float("nan")}, "max_update_norm"),
                         ({"max_examples": 0}, "max_examples"),
                         ({"max_update_bytes": 1.5}, "max_update_bytes"),
                         ({"weight_key": ""}, "weight_key")]:
        with pytest.raises(ValueError, match=name):
            Policy(**kwargs)
    with pytest.raises(ValueError, match="key"):
        signing_mod(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="server_key"):
        signing_mod(tmp_path, server_key="not a key")


class CopyingGrid(LoopbackGrid):
    """Also keeps a copy of every train reply as it arrived, before any strategy."""

    def __init__(self, app: ClientApp, nodes: int):
        super().__init__(app, nodes)
        self.copies: list[Message] = []

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        replies = list(super().send_and_receive(messages, timeout=timeout))
        self.copies += [pickle.loads(pickle.dumps(r)) for r in replies
                        if r.metadata.message_type == "train"]
        return replies


@pytest.mark.parametrize("cls, kwargs", [
    (FedProx, {"proximal_mu": 0.1}),
    (FedMedian, {}),
    (FedTrimmedAvg, {"beta": 0.2}),
    (MultiKrum, {"num_malicious_nodes": 1, "num_nodes_to_select": 3}),
    (Bulyan, {"num_malicious_nodes": 0}),
])
def test_wrapping_flower_strategies_changes_nothing_they_compute(tmp_path: Path, cls, kwargs):
    """Strategies that pop or convert reply arrays in place (FedMedian, FedTrimmedAvg,
    Bulyan): the ledger holds what clients sent, and the model is bit for bit what the
    strategy alone makes of the accepted replies."""
    opts = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_available_nodes": 5}
    grid = CopyingGrid(make_app(tmp_path / "keys"), 5)
    strategy = LedgerStrategy(cls(**kwargs, **opts), ledger=tmp_path / "ledger.db")
    result = strategy.start(grid, initial(), num_rounds=1)
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        ups = sorted(le.entry.update for le in led.iter_entries(type="update"))
        (model,) = [le.entry for le in led.iter_entries(type="model")]
        assert next(led.iter_entries(type="run")).entry.strategy == cls.__name__
    sent = sorted(arrayrecord_digest(c.content["arrays"]) for c in grid.copies)
    assert ups == sent and len(model.inputs) == 5
    alone, _ = cls(**kwargs, **opts).aggregate_train(1, grid.copies)
    assert model.model == arrayrecord_digest(alone) == arrayrecord_digest(result.arrays)


def test_clients_refuse_a_log_that_was_rolled_back(tmp_path: Path):
    import shutil

    keys = tmp_path / "keys"
    grid = LoopbackGrid(make_app(keys), 2)
    opts = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_available_nodes": 2}
    led = Ledger(tmp_path / "a.db")
    s1 = LedgerStrategy(FedAvg(**opts), ledger=led)
    s1.start(grid, initial(), num_rounds=1)
    led.close()
    for suffix in ("", ".key"):  # a snapshot of the log, and the same server key
        shutil.copy(tmp_path / f"a.db{suffix}", tmp_path / f"old.db{suffix}")
    led = Ledger(tmp_path / "a.db")
    LedgerStrategy(FedAvg(**opts), ledger=led).start(grid, initial(), num_rounds=2)
    led.close()
    # the server restarts from the old snapshot: its tree is smaller than what clients saw
    LedgerStrategy(FedAvg(**opts), ledger=tmp_path / "old.db").start(grid, initial(),
                                                                      num_rounds=1)
    with Ledger(tmp_path / "old.db", create=False) as old:
        rej = [le.entry for le in old.iter_entries(type="rejected")]
        assert len(rej) == 2 and all("the log was rolled back" in r.detail for r in rej)


class SharedLedgerFedAvg(FedAvg):
    """FedAvg that lets another writer append to the shared ledger mid-aggregation, which
    is exactly between LedgerStrategy computing its model entry's leaf indices and
    appending the round."""

    def __init__(self, path: Path, **kwargs: Any):
        super().__init__(**kwargs)
        self.path = path

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> Any:
        with Ledger(self.path, create=False) as other:
            other.append([E.Erasure(blob="sha256:" + f"{server_round:064x}", reason="other")])
        return super().aggregate_train(server_round, replies)


def test_model_inputs_stay_right_when_another_writer_appends_mid_round(tmp_path: Path):
    keys = tmp_path / "keys"
    inner = SharedLedgerFedAvg(tmp_path / "ledger.db", fraction_train=1.0,
                               fraction_evaluate=0.0, min_available_nodes=3)
    strategy, _grid, _ = run(tmp_path, make_app(keys), 3, rounds=2, inner=inner)
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        assert led.verify().ok
        assert len(list(led.iter_entries(type="erasure"))) == 2
        for le in led.iter_entries(type="model"):
            named = [led.get(i).entry for i in le.entry.inputs]
            assert len(named) == 3
            assert all(isinstance(u, E.Update) and u.round == le.entry.round for u in named)
        assert lineage(led, strategy.global_model).ok


def _npy_with_negative_shape() -> bytes:
    """A .npy blob whose header claims shape (-1, -2): 2 elements by count, so the byte
    count matches, but no array has that shape."""
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, -2), }"
    pad = (64 - (10 + len(hdr) + 1) % 64) % 64
    hdr += " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr.encode() + b"\0" * 8


def test_a_negative_shape_is_refused_not_a_crash(tmp_path: Path):
    keys = tmp_path / "keys"

    def behaviour(pid: int, rnd: int, msg: Message, ctx: Context, call: Any) -> Message:
        reply = call(msg, ctx)
        if pid == 0:
            arrays = next(iter(reply.content.array_records.values()))
            arrays["b"] = Array(dtype="float32", shape=(2,), stype="numpy.ndarray",
                                data=_npy_with_negative_shape())
        return reply

    run(tmp_path, make_app(keys, behaviour), 3)
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        acc, ref = outcome(led, LoopbackGrid(make_app(keys), 3))
        assert ref == {(1, 0): "malformed"} and set(acc) == {(1, 1), (1, 2)}
        assert led.verify().ok


def test_a_registered_node_cannot_drop_its_signature(tmp_path: Path):
    """With signatures optional, a node whose key is registered must still sign."""
    keys = tmp_path / "keys"

    def behaviour(pid: int, rnd: int, msg: Message, ctx: Context, call: Any) -> Message:
        reply = call(msg, ctx)
        if pid == 0 and rnd == 2:
            del reply.content[STATEMENT_RECORD]
        return reply

    run(tmp_path, make_app(keys, behaviour), 3, rounds=2,
        policy=Policy(require_signatures=False))
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        acc, ref = outcome(led, LoopbackGrid(make_app(keys), 3))
        assert ref == {(2, 0): "unsigned"} and (1, 0) in acc


def test_unchanged_models_from_several_clients_are_not_replays(tmp_path: Path):
    """Two honest clients that return the global model unchanged send the same digest."""
    keys = tmp_path / "keys"
    signer = signing_mod(keys)
    app = ClientApp(mods=[signer])

    @app.train()
    def fit(msg: Message, ctx: Context) -> Message:
        return Message(RecordDict({"arrays": msg.content["arrays"], "metrics": MetricRecord(
            {"loss": 1.0, "num-examples": 10})}), reply_to=msg)

    @app.evaluate()
    def ev(msg: Message, ctx: Context) -> Message:  # pragma: no cover - not sent
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)

    run(tmp_path, app, 3, rounds=2)
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        acc, ref = outcome(led, LoopbackGrid(app, 3))
        assert ref == {} and len(acc) == 6


def test_signed_num_examples_is_the_weight_the_server_uses(tmp_path: Path):
    """Clients sign the metric the policy weights by (announced to them), and a statement
    whose num_examples differs from it is refused."""
    keys = tmp_path / "keys"

    def lie(msg: Message, ctx: Context, call_next: Any) -> Message:  # outside signing_mod
        reply = call_next(msg, ctx)
        if int(ctx.node_config["partition-id"]) == 0:
            return resign(reply, client_key(keys, 0), num_examples=1)
        return reply

    app = ClientApp(mods=[lie, signing_mod(keys)])

    @app.train()
    def fit(msg: Message, ctx: Context) -> Message:
        pid = int(ctx.node_config["partition-id"])
        return Message(RecordDict({"arrays": msg.content["arrays"], "metrics": MetricRecord(
            {"n": 20 + pid, "num-examples": 1})}), reply_to=msg)

    run(tmp_path, app, 3, policy=Policy(weight_key="n"))
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        acc, ref = outcome(led, LoopbackGrid(app, 3))
        assert ref == {(1, 0): "malformed"} and set(acc) == {(1, 1), (1, 2)}
        nums = sorted(le.entry.num_examples for le in led.iter_entries(type="update"))
        assert nums == [21, 22]


class ForkingGrid(LoopbackGrid):
    """Shows clients, from round 2 on, a consistency proof that does not link the log they
    pinned to the one announced now: what a server presenting a forked log must send."""

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        from flchain_plugin.flower.protocol import CONSISTENCY

        messages = list(messages)
        for m in messages:
            for cfg in m.content.config_records.values():
                if cfg.get(CONSISTENCY):
                    cfg[CONSISTENCY] = [bytes([p[0] ^ 1]) + p[1:] for p in cfg[CONSISTENCY]]
        return super().send_and_receive(messages, timeout=timeout)


def test_clients_prove_each_new_log_extends_the_one_they_saw(tmp_path: Path):
    keys = tmp_path / "keys"
    run(tmp_path / "honest", make_app(keys), 3, rounds=3)
    with Ledger(tmp_path / "honest" / "ledger.db", create=False) as led:
        assert not [e for e in led.iter_entries(type="rejected")]

    app = make_app(keys)
    grid = ForkingGrid(app, 3)
    strategy = LedgerStrategy(
        FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=3),
        ledger=tmp_path / "ledger.db")
    strategy.start(grid, initial(), num_rounds=3)
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        refused = [le.entry for le in led.iter_entries(type="rejected")]
        assert {r.round for r in refused} == {2, 3} and len(refused) == 6
        assert all(r.reason == "client_error" and "forked log" in r.detail for r in refused)


class OmittingGrid(LoopbackGrid):
    """Sends no consistency proofs: a server hiding that its log forked would."""

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        from flchain_plugin.flower.protocol import CONSISTENCY, CONSISTENCY_FROM

        messages = list(messages)
        for m in messages:
            for cfg in m.content.config_records.values():
                for k in (CONSISTENCY, CONSISTENCY_FROM):
                    if k in cfg:
                        del cfg[k]
        return super().send_and_receive(messages, timeout=timeout)


@pytest.mark.parametrize("required", [True, False])
def test_clients_refuse_a_bigger_log_sent_without_a_consistency_proof(tmp_path: Path,
                                                                       required: bool):
    app = make_app(tmp_path / "keys", require_consistency=required)
    strategy = LedgerStrategy(
        FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=3),
        ledger=tmp_path / "ledger.db")
    strategy.start(OmittingGrid(app, 3), initial(), num_rounds=3)
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        refused = [le.entry for le in led.iter_entries(type="rejected")]
        if required:
            assert {r.round for r in refused} == {2, 3} and len(refused) == 6
            assert all("no consistency proof from the checkpoint of size" in r.detail
                       for r in refused)
        else:
            assert refused == []


class LossyGrid(LoopbackGrid):
    """Loses node 0's round-1 reply after its client handled the instruction, and node 1's
    handler raises in round 1 after its mod accepted the model: both clients pinned the
    round-1 checkpoint although the server never heard them confirm it."""

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        messages = list(messages)
        replies = list(super().send_and_receive(messages, timeout=timeout))
        first = bool(messages) and int(messages[0].content["config"]["server-round"]) == 1
        lost = self.ids[0]
        return [r for r in replies if not (first and r.metadata.src_node_id == lost)]


def test_a_client_whose_reply_was_lost_still_gets_a_proof_from_what_it_pinned(tmp_path: Path):
    def behaviour(pid: int, rnd: int, msg: Message, ctx: Context, signed: Any) -> Message:
        if pid == 1 and rnd == 1:
            def boom(m: Message, c: Context) -> Message:
                raise RuntimeError("the handler failed after the mod pinned the checkpoint")
            return signing_mod(tmp_path / "keys")(msg, ctx, boom)
        return signed(msg, ctx)

    app = make_app(tmp_path / "keys", behaviour)
    grid = LossyGrid(app, 3)
    strategy = LedgerStrategy(
        FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=3,
               min_train_nodes=2),
        ledger=tmp_path / "ledger.db")
    strategy.start(grid, initial(), num_rounds=3)
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        acc, ref = outcome(led, grid)
        assert ref == {(1, 0): "client_error", (1, 1): "client_error"}  # lost, raised
        lost = [le.entry for le in led.iter_entries(type="rejected")
                if le.entry.node == str(grid.ids[0])]
        assert len(lost) == 1 and lost[0].detail.startswith(
            f"no_error: no reply from node {grid.ids[0]} to train instruction ")
        assert set(acc) == {(1, 2)} | {(r, p) for r in (2, 3) for p in range(3)}


def test_a_restarted_server_proves_its_log_extends_what_clients_pinned(tmp_path: Path):
    """Same run, same clients (their ctx.state keeps the pins), a new LedgerStrategy on the
    same ledger: it announces proofs from its latest checkpoints, and clients go on."""
    grid = LoopbackGrid(make_app(tmp_path / "keys"), 3)
    opts = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_available_nodes": 3}
    for _ in range(2):
        LedgerStrategy(FedAvg(**opts), ledger=tmp_path / "ledger.db").start(
            grid, initial(), num_rounds=2)
    with Ledger(tmp_path / "ledger.db", create=False) as led:
        assert [le.entry for le in led.iter_entries(type="rejected")] == []
        assert len(list(led.iter_entries(type="update"))) == 12
