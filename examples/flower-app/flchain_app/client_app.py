"""The ClientApp: trains the task's model on this node's data; `signing_mod` checks the
global model against the signed log before any training and signs what leaves the node.

Keys: a SuperNode names its own key file with `--node-config 'flchain-key="/path/n0.key"'`
(and pins the server's key with `flchain-server-key="..."`). In simulation, where
node_config holds only the partition id, the key is `client-<partition-id>.key` in the
run config's `keys-dir` (created on first use) and the server key is pinned on first use.
"""

from __future__ import annotations

from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flchain_plugin.flower import signing_mod

from .task import data_path, dataset, evaluate, model, train


def keys_dir(ctx: Context) -> Path:
    """The simulation fallback for this node's key (node_config `flchain-key` wins)."""
    return data_path(ctx.run_config["keys-dir"], ctx.run_config["data-dir"])


app = ClientApp(mods=[signing_mod(keys_dir)])


def _local(msg: Message, ctx: Context) -> tuple[torch.nn.Module, object, object]:
    torch.set_num_threads(1)
    net = model()
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = dataset(int(ctx.node_config["partition-id"]),
                   int(ctx.run_config["examples-per-client"]))
    return net, x, y


@app.train()
def fit(msg: Message, ctx: Context) -> Message:
    net, x, y = _local(msg, ctx)
    loss = train(net, x, y, int(ctx.run_config["local-steps"]), float(ctx.run_config["lr"]))
    return Message(RecordDict({"arrays": ArrayRecord(net.state_dict()),
                               "metrics": MetricRecord({"train_loss": loss,
                                                        "num-examples": len(x)})}),
                   reply_to=msg)


@app.evaluate()
def check(msg: Message, ctx: Context) -> Message:
    net, x, y = _local(msg, ctx)
    loss, acc = evaluate(net, x, y)
    return Message(RecordDict({"metrics": MetricRecord({"eval_loss": loss, "eval_acc": acc,
                                                        "num-examples": len(x)})}),
                   reply_to=msg)
