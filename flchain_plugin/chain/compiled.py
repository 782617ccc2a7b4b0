"""The compiled contracts shipped as package data, and the one way they are compiled.

`compiled.json` holds each contract's ABI and deployment bytecode, as `compile_sources`
produced them from the `.vy` files beside it, so running flchain needs no compiler.
A test recompiles the sources and compares; after editing a contract, regenerate with
`python -m flchain_plugin.chain.compiled` (needs the `vyper` package).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

CONTRACTS = ("anchor_log", "credit_token", "update_record")
"""The contracts, by source file name: the anchors, the credit token, and the
one-transaction-per-update baseline that bench/bench_gas.py measures against."""

COMPILED = "compiled.json"


@dataclass(frozen=True)
class Artifact:
    """What deploying and calling a contract needs."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str


def source_path(name: str) -> Path:
    return Path(str(resources.files(__package__).joinpath(f"{name}.vy")))


@cache
def _shipped() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        resources.files(__package__).joinpath(COMPILED).read_text(encoding="utf-8"))
    return data


def artifact(name: str) -> Artifact:
    """The shipped ABI and bytecode of contract `name` (one of CONTRACTS)."""
    if name not in CONTRACTS:
        raise ValueError(f"no contract {name!r}: want one of {', '.join(CONTRACTS)}")
    entry = _shipped()["contracts"][name]
    return Artifact(name, entry["abi"], entry["bytecode"])


def compile_sources() -> dict[str, Any]:
    """Compile every source with the installed vyper: the document `compiled.json` holds."""
    import vyper  # the compiler is a test/development dependency only

    contracts = {}
    for name in CONTRACTS:
        out = vyper.compile_code(source_path(name).read_text(encoding="utf-8"),
                                 output_formats=["abi", "bytecode"])
        contracts[name] = {"abi": out["abi"], "bytecode": out["bytecode"]}
    return {"compiler": f"vyper {vyper.__version__}", "contracts": contracts}


def main() -> None:
    """Regenerate compiled.json beside the sources."""
    target = source_path(CONTRACTS[0]).with_name(COMPILED)
    target.write_text(json.dumps(compile_sources(), indent=1, sort_keys=True) + "\n",
                      encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
